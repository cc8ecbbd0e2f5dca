package config

import (
	"strings"
	"testing"
	"time"
)

func TestReplicaSection(t *testing.T) {
	t.Setenv("HSMGATE_TEST_POD", "hsmgate-2")
	for _, tc := range []struct {
		name, extra string
		id          string // "" : the default (hostname-pid)
		ttl         time.Duration
	}{
		{"absent", "", "", DefaultElectionTTL},
		{"id and ttl", "replica:\n  id: hsmgate-0\n  election_ttl: 3s\n", "hsmgate-0", 3 * time.Second},
		{"id from the environment", "replica:\n  id_env: HSMGATE_TEST_POD\n", "hsmgate-2", DefaultElectionTTL},
		{"id wins over id_env", "replica:\n  id: a\n  id_env: HSMGATE_TEST_POD\n", "a", DefaultElectionTTL},
		{"empty variable: the default", "replica:\n  id_env: HSMGATE_TEST_UNSET\n", "", DefaultElectionTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, fixture(t), valid+tc.extra)
			if err != nil {
				t.Fatal(err)
			}
			if tc.id != "" && c.Replica.ID != tc.id {
				t.Errorf("got Replica.ID %q, want %q", c.Replica.ID, tc.id)
			}
			if tc.id == "" && !strings.Contains(c.Replica.ID, "-") {
				t.Errorf("got default Replica.ID %q, want hostname-pid", c.Replica.ID)
			}
			if c.Replica.ElectionTTL != tc.ttl {
				t.Errorf("got ElectionTTL %s, want %s", c.Replica.ElectionTTL, tc.ttl)
			}
		})
	}
	for _, tc := range []struct{ name, extra, field string }{
		{"slash in id", "replica:\n  id: a/b\n", "replica.id"},
		{"ttl too short", "replica:\n  election_ttl: 100ms\n", "replica.election_ttl"},
		{"ttl too long", "replica:\n  election_ttl: 1h\n", "replica.election_ttl"},
		{"unknown field", "replica:\n  ttl: 3s\n", "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, fixture(t), valid+tc.extra)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
