package hsm_test

import (
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hsmgate/hsmgate/hsm"
)

// metricValue returns the value of the series name{labels} gathered from
// reg (a counter's or gauge's value, a histogram's sample count) and whether
// it exists.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
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
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// TestMetrics: the Module's collector counts an injected CKR by function and
// code, times calls by function, and shows the pool and the login.
func TestMetrics(t *testing.T) {
	f, fc, _ := faulty(t, nil)
	reg := prometheus.NewRegistry()
	if err := reg.Register(f.m.Collector()); err != nil {
		t.Fatal(err)
	}
	t.Run("logged in", func(t *testing.T) {
		if v, ok := metricValue(t, reg, "hsmgate_hsm_logged_in", nil); !ok || v != 1 {
			t.Errorf("hsmgate_hsm_logged_in: got %v (present %v), want 1", v, ok)
		}
	})
	t.Run("injected CKR counted", func(t *testing.T) {
		fc.FailN(pkcs11.CKR_FUNCTION_FAILED, 1, "GenerateRandom")
		if _, err := f.m.Random(ctx, 16); err == nil {
			t.Fatal("Random with an injected CKR_FUNCTION_FAILED: got no error")
		}
		lb := map[string]string{"function": "C_GenerateRandom", "code": "CKR_FUNCTION_FAILED"}
		if v, _ := metricValue(t, reg, "hsmgate_hsm_call_errors_total", lb); v != 1 {
			t.Errorf("errors %v: got %v, want 1", lb, v)
		}
		if _, err := f.m.Random(ctx, 16); err != nil {
			t.Fatal(err)
		}
		if v, _ := metricValue(t, reg, "hsmgate_hsm_call_duration_seconds", map[string]string{"function": "C_GenerateRandom"}); v != 2 {
			t.Errorf("C_GenerateRandom latency samples: got %v, want 2", v)
		}
	})
	t.Run("sessions in use", func(t *testing.T) {
		release, err := hsm.Hold(ctx, f.m)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := metricValue(t, reg, "hsmgate_hsm_sessions", map[string]string{"state": "in_use"})
		release()
		if v != 1 {
			t.Errorf("sessions in use while one is held: got %v, want 1", v)
		}
		if v, _ := metricValue(t, reg, "hsmgate_hsm_sessions", map[string]string{"state": "in_use"}); v != 0 {
			t.Errorf("sessions in use after release: got %v, want 0", v)
		}
	})
	t.Run("login lost", func(t *testing.T) {
		fc.Fail(pkcs11.CKR_PIN_INCORRECT, "Login")
		fc.Fail(pkcs11.CKR_USER_NOT_LOGGED_IN, "GenerateRandom")
		defer fc.Heal()
		_, _ = f.m.Random(ctx, 16)
		if v, _ := metricValue(t, reg, "hsmgate_hsm_logged_in", nil); v != 0 {
			t.Errorf("hsmgate_hsm_logged_in after a failed login: got %v, want 0", v)
		}
		lb := map[string]string{"function": "C_Login", "code": "CKR_PIN_INCORRECT"}
		if v, _ := metricValue(t, reg, "hsmgate_hsm_call_errors_total", lb); v < 1 {
			t.Errorf("errors %v: got %v, want >= 1", lb, v)
		}
	})
	t.Run("bounded labels", func(t *testing.T) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "code" && !strings.HasPrefix(l.GetValue(), "CKR_") {
						t.Errorf("code label %q, want a CKR_ name", l.GetValue())
					}
				}
			}
		}
	})
}
