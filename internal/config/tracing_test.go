package config

import "testing"

func TestTracingEnabled(t *testing.T) {
	tests := []struct {
		name string
		file bool
		env  map[string]string
		want bool
	}{
		{"off by default", false, nil, false},
		{"file on", true, nil, true},
		{"OTEL_TRACES_EXPORTER=otlp", false, map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"OTEL_TRACES_EXPORTER=none wins", true, map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{"OTEL_SDK_DISABLED wins", true, map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		{"other exporter: the file decides", false, map[string]string{"OTEL_TRACES_EXPORTER": "console"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := TracingEnabled(tc.file, func(k string) string { return tc.env[k] })
			if got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTracingSection(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_SDK_DISABLED", "")
	for _, tc := range []struct {
		name, extra string
		want        bool
	}{
		{"absent", "", false},
		{"enabled", "tracing:\n  enabled: true\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, fixture(t), valid+tc.extra)
			if err != nil {
				t.Fatal(err)
			}
			if c.Tracing.Enabled != tc.want {
				t.Errorf("got Tracing.Enabled %v, want %v", c.Tracing.Enabled, tc.want)
			}
		})
	}
	if _, err := load(t, fixture(t), valid+"tracing:\n  enabeld: true\n"); err == nil {
		t.Error("misspelt tracing field: got no error, want one")
	}
}
