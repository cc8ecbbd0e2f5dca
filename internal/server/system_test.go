package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

type fakeHSM struct{ err error }

func (f fakeHSM) Ping(context.Context) error { return f.err }
func (f fakeHSM) TokenLabel() string         { return "tok" }

type fakeStore struct{ err error }

func (f fakeStore) Ping(context.Context) error { return f.err }
func (f fakeStore) Backend() string            { return "bbolt" }

func TestGetStatus(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := start.Add(90 * time.Minute)
	tests := []struct {
		name      string
		hsm       HSMPinger
		store     StorePinger
		wantHSM   *hsmgatev1.ComponentStatus
		wantStore *hsmgatev1.ComponentStatus
	}{
		{
			name:      "both reachable",
			hsm:       fakeHSM{},
			store:     fakeStore{},
			wantHSM:   &hsmgatev1.ComponentStatus{Reachable: true, Name: "tok"},
			wantStore: &hsmgatev1.ComponentStatus{Reachable: true, Name: "bbolt"},
		},
		{
			name:      "store down, internal error hidden",
			hsm:       fakeHSM{err: fmt.Errorf("pkcs11: 0x3 at /dev/secret")},
			store:     fakeStore{err: fmt.Errorf("dial: %w", keystore.ErrUnavailable)},
			wantHSM:   &hsmgatev1.ComponentStatus{Name: "tok", Error: "internal error"},
			wantStore: &hsmgatev1.ComponentStatus{Name: "bbolt", Error: "keystore: unavailable"},
		},
		{
			name:      "not configured",
			wantHSM:   &hsmgatev1.ComponentStatus{Error: "not configured"},
			wantStore: &hsmgatev1.ComponentStatus{Error: "not configured"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := NewSystemService(SystemConfig{
				Version: "v9", HSM: tc.hsm, Store: tc.store, Start: start,
				Now: func() time.Time { return now },
			})
			resp, err := svc.GetStatus(context.Background(), &hsmgatev1.GetStatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Version != "v9" {
				t.Errorf("version: got %q, want v9", resp.Version)
			}
			if got := resp.Uptime.AsDuration(); got != 90*time.Minute {
				t.Errorf("uptime: got %v, want 1h30m", got)
			}
			if got := resp.StartTime.AsTime(); !got.Equal(start) {
				t.Errorf("start time: got %v, want %v", got, start)
			}
			check := func(what string, got, want *hsmgatev1.ComponentStatus) {
				if got.Reachable != want.Reachable || got.Name != want.Name || got.Error != want.Error {
					t.Errorf("%s: got {%v %q %q}, want {%v %q %q}", what,
						got.Reachable, got.Name, got.Error, want.Reachable, want.Name, want.Error)
				}
			}
			check("hsm", resp.Hsm, tc.wantHSM)
			check("store", resp.Store, tc.wantStore)
		})
	}
}

func TestSystemRulesCoverServices(t *testing.T) {
	rules := SystemRules()
	for _, m := range []string{
		hsmgatev1.SystemService_GetStatus_FullMethodName,
		"/grpc.health.v1.Health/Check",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	} {
		if _, ok := rules[m]; !ok {
			t.Errorf("no rule for %s", m)
		}
	}
	if r := rules[hsmgatev1.SystemService_GetStatus_FullMethodName]; r.Public || r.Path != "sys/status" {
		t.Errorf("GetStatus rule %+v: want read on sys/status, not public", r)
	}
}

func TestSystemRulesCoverEveryMethod(t *testing.T) {
	p := newPKI(t)
	s, err := New(Config{GRPCAddr: "127.0.0.1:0", CertFile: p.files.Cert, KeyFile: p.files.Key})
	if err != nil {
		t.Fatal(err)
	}
	hsmgatev1.RegisterSystemServiceServer(s, NewSystemService(SystemConfig{}))
	info := s.GetServiceInfo()
	for _, svc := range []string{"hsmgate.v1.SystemService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if _, ok := info[svc]; !ok {
			t.Errorf("GetServiceInfo lacks %s", svc)
		}
	}
	if err := auth.CheckTableCovers(s, SystemRules()); err != nil {
		t.Error(err)
	}
}
