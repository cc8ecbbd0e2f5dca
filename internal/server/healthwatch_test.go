package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	kbolt "github.com/hsmgate/hsmgate/keystore/bbolt"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestHealthAgreesWithReadyz: gRPC health (of "" and of each service) and
// /readyz give one verdict, NOT_SERVING/503 while the store (a real bbolt
// store, closed) or the HSM is down, and SERVING again once the HSM is back.
func TestHealthAgreesWithReadyz(t *testing.T) {
	st, err := kbolt.Open(filepath.Join(t.TempDir(), "store.db"), kbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	var hsmDown, storeChecked atomic.Bool
	h := start(t, newPKI(t), func(c *Config) { c.HealthInterval = 10 * time.Millisecond }, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(context.Context) (*hsmgatev1.GetStatusResponse, error) {
			return &hsmgatev1.GetStatusResponse{}, nil
		}})
		s.AddReadyCheck("store", func(ctx context.Context) error { storeChecked.Store(true); return st.Ping(ctx) })
		s.AddReadyCheck("hsm", func(context.Context) error {
			if hsmDown.Load() {
				return errors.New("hsm: token gone")
			}
			return nil
		})
	})
	cc := h.dial(t, nil)
	hc := h.httpClient()
	readyz := func(t *testing.T) (int, string) {
		t.Helper()
		resp, err := hc.Get("https://" + h.srv.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	services := []string{"", "hsmgate.v1.SystemService"}
	// waitHealth waits (a hang guard, not a timing assertion) until every
	// service reports want.
	waitHealth := func(t *testing.T, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for _, svc := range services {
			for {
				got := healthOf(t, cc, svc)
				if got == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("health of %q: got %v, want %v", svc, got, want)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}

	waitHealth(t, healthpb.HealthCheckResponse_SERVING)
	if code, body := readyz(t); code != http.StatusOK {
		t.Errorf("/readyz with everything up: got %d %q, want 200", code, body)
	}
	if !storeChecked.Load() {
		t.Error("store check never ran")
	}

	t.Run("hsm down then back", func(t *testing.T) {
		hsmDown.Store(true)
		waitHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
		if code, body := readyz(t); code != http.StatusServiceUnavailable || !strings.Contains(body, "hsm: ") {
			t.Errorf("/readyz with the HSM down: got %d %q, want 503 naming hsm", code, body)
		}
		hsmDown.Store(false)
		waitHealth(t, healthpb.HealthCheckResponse_SERVING)
		if code, body := readyz(t); code != http.StatusOK {
			t.Errorf("/readyz with the HSM back: got %d %q, want 200", code, body)
		}
	})
	t.Run("store closed", func(t *testing.T) {
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		waitHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
		if code, body := readyz(t); code != http.StatusServiceUnavailable || !strings.Contains(body, "store: ") {
			t.Errorf("/readyz with the store closed: got %d %q, want 503 naming store", code, body)
		}
		// Other RPCs still answer (health is advice to balancers).
		if _, err := callStatus(cc); err != nil {
			t.Errorf("GetStatus while not ready: %v", err)
		}
	})
}

func healthOf(t *testing.T, cc *grpc.ClientConn, svc string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		t.Fatalf("health of %q: %v", svc, err)
	}
	return resp.GetStatus()
}
