package pki

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestMetrics: issued and refused by role and reason (a name outside the
// role, a lint error, an unknown role that adds no series of its name),
// CA expiry and CRL age per issuer.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	if err := reg.Register(e.svc.Collector()); err != nil {
		t.Fatal(err)
	}
	root := e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	server := webRole("server")
	server.ClientFlag, server.AllowedKeyTypes, server.LintProfile = false, []string{KeyEd25519}, ProfilePublic
	e.role(t, server)

	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "evil.org"}); err == nil {
		t.Fatal("Issue evil.org under web: got no error")
	}
	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "server", CommonName: "a.example.com", KeyType: KeyEd25519}); err == nil {
		t.Fatal("Issue Ed25519 under BR lints: got no error")
	}
	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "no-such-role-name", CommonName: "a.example.com"}); err == nil {
		t.Fatal("Issue under a missing role: got no error")
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"hsmgate_pki_issued_total", map[string]string{"role": "web"}, 1},
		{"hsmgate_pki_refused_total", map[string]string{"role": "web", "reason": "not_allowed"}, 1},
		{"hsmgate_pki_refused_total", map[string]string{"role": "server", "reason": "lint"}, 1},
		{"hsmgate_pki_refused_total", map[string]string{"role": "", "reason": "role_not_found"}, 1},
	} {
		if got, _ := gathered(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v: got %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := gathered(t, reg, "hsmgate_pki_refused_total", map[string]string{"role": "no-such-role-name"}); ok {
		t.Error("got a series labelled with a role that does not exist, want none")
	}

	t.Run("CA expiry", func(t *testing.T) {
		got, ok := gathered(t, reg, "hsmgate_pki_ca_expiry_seconds", map[string]string{"issuer": "root"})
		want := root.GetNotAfter().AsTime().Sub(e.clock.Now()).Seconds()
		if !ok || got != want {
			t.Errorf("ca expiry: got %v (present %v), want %v", got, ok, want)
		}
	})
	t.Run("CRL age", func(t *testing.T) {
		if _, err := e.svc.CRL(ctx, "root", false); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour)
		if got, ok := gathered(t, reg, "hsmgate_pki_crl_age_seconds", map[string]string{"issuer": "root"}); !ok || got != 3600 {
			t.Errorf("crl age an hour after signing: got %v (present %v), want 3600", got, ok)
		}
	})
}
