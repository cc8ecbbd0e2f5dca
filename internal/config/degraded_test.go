package config

import (
	"strings"
	"testing"
	"time"
)

// TestDegradedGrace: store.degraded_grace defaults to a few minutes, 0
// turns degraded service off, a negative value is refused.
func TestDegradedGrace(t *testing.T) {
	cases := []struct {
		name, line string
		want       time.Duration
		wantErr    bool
	}{
		{"default", "", DefaultDegradedGrace, false},
		{"off", "  degraded_grace: 0s\n", 0, false},
		{"set", "  degraded_grace: 45s\n", 45 * time.Second, false},
		{"negative", "  degraded_grace: -1s\n", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.Replace(valid, "  path: data/hsmgate.db\n", "  path: data/hsmgate.db\n"+tc.line, 1)
			c, err := load(t, fixture(t), body)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "store.degraded_grace") {
					t.Fatalf("got %v, want an error naming store.degraded_grace", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Store.DegradedGrace; got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}
