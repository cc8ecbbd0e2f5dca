package sshca

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// gathered returns the value of name{labels} from reg, and whether it exists.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics: signed and refused by role and reason, per item; a missing
// role adds no series of its name; KRL age follows the revocation record.
func TestMetrics(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	if err := reg.Register(env.e.Collector()); err != nil {
		t.Fatal(err)
	}
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", CertType: userCT, AllowedPrincipals: []string{"alice"}})
	_, key := ed25519Key(t)
	res, err := env.e.Sign(ctx, userCT, "eng", []*pb.SSHSignItem{
		{PublicKey: key, Principals: []string{"alice"}},
		{PublicKey: key, Principals: []string{"root"}},
		{PublicKey: "not a key", Principals: []string{"alice"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].GetError() != nil || res[1].GetError() == nil || res[2].GetError() == nil {
		t.Fatalf("got results %v, want the first signed and the others refused", res)
	}
	if _, err := env.e.Sign(ctx, userCT, "no-such-role-name", []*pb.SSHSignItem{{PublicKey: key, Principals: []string{"alice"}}}); err == nil {
		t.Fatal("Sign under a missing role: got no error")
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"hsmgate_ssh_signed_total", map[string]string{"role": "eng", "type": "user"}, 1},
		{"hsmgate_ssh_refused_total", map[string]string{"role": "eng", "type": "user", "reason": "not_allowed"}, 1},
		{"hsmgate_ssh_refused_total", map[string]string{"role": "eng", "type": "user", "reason": "invalid"}, 1},
		{"hsmgate_ssh_refused_total", map[string]string{"role": "", "type": "user", "reason": "role_not_found"}, 1},
	} {
		if got, _ := gathered(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v: got %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := gathered(t, reg, "hsmgate_ssh_refused_total", map[string]string{"role": "no-such-role-name"}); ok {
		t.Error("got a series labelled with a role that does not exist, want none")
	}
	t.Run("KRL age", func(t *testing.T) {
		l := &pb.SSHRevocationList{}
		if _, err := env.e.getProto(ctx, keyKRL, l); err != nil {
			t.Fatal(err)
		}
		env.clock.Set(l.GetUpdateTime().AsTime().Add(90 * time.Second))
		if got, ok := gathered(t, reg, "hsmgate_ssh_krl_age_seconds", nil); !ok || got != 90 {
			t.Errorf("KRL age: got %v (present %v), want 90", got, ok)
		}
	})
}
