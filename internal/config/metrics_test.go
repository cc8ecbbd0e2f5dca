package config

import "testing"

// TestMetricsSection: per-key labels are off unless metrics.per_key_labels
// says so; an unknown field of the section is an error.
func TestMetricsSection(t *testing.T) {
	for _, c := range []struct {
		name    string
		section string
		want    bool
		wantErr bool
	}{
		{"absent", "", false, false},
		{"off", "metrics:\n  per_key_labels: false\n", false, false},
		{"on", "metrics:\n  per_key_labels: true\n", true, false},
		{"unknown field", "metrics:\n  per_key: true\n", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := load(t, fixture(t), valid+c.section)
			if c.wantErr {
				if err == nil {
					t.Fatal("got no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Metrics.PerKeyLabels; got != c.want {
				t.Errorf("PerKeyLabels: got %v, want %v", got, c.want)
			}
		})
	}
}
