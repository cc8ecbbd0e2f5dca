package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// downStore is a real bbolt store whose Ping fails while down is set (the
// store's answer to a lost backend), to see status name the dependency.
type downStore struct {
	keystore.Store
	down atomic.Bool
}

func (s *downStore) Ping(ctx context.Context) error {
	if s.down.Load() {
		return keystore.ErrUnavailable
	}
	return s.Store.Ping(ctx)
}

// TestStatusWithoutToken: `hsmgate status` without credentials answers the
// public part only (version, state, each dependency up or down), rate
// limited per address; a token with read on sys/status gets everything; a
// token without it, or a bad token, is refused.
func TestStatusWithoutToken(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var st *downStore
	d, files, root := handDeps(t, func(c *config.Config) {
		// Three anonymous calls, then (refill: one per ~17 minutes) refused.
		c.Auth.RateLimits.Anonymous = auth.Limit{Rate: 0.001, Burst: 3}
	}, func(s keystore.Store) keystore.Store { st = &downStore{Store: s}; return st })
	defer d.close()
	srv := d.Server
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	d.Jobs = testJobs(t, d) // jobs_wire_test.go
	hsmgatev1RegisterSystem(srv, d)
	if err := d.AddRules(server.SystemRules()); err != nil {
		t.Fatal(err)
	}
	// Audit and auth as wireServices builds them, with no engine.
	al, err := newAuditLog(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAuth(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := installInterceptor(d, a, al); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	dial := func(token string) *grpc.ClientConn {
		t.Helper()
		cc, err := client.Dial(client.Options{Addr: srv.GRPCAddr(), CACert: files.CACert, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	statusOf := func(cc *grpc.ClientConn) (*hsmgatev1.GetStatusResponse, error) {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		return hsmgatev1.NewSystemServiceClient(cc).GetStatus(cctx, &hsmgatev1.GetStatusRequest{})
	}
	rootCC := dial(root)
	authc := hsmgatev1.NewAuthServiceClient(rootCC)
	if _, err := authc.WritePolicy(ctx, &hsmgatev1.WritePolicyRequest{Policy: &hsmgatev1.Policy{Name: "status-reader",
		Rules: []*hsmgatev1.PolicyRule{{Resource: "sys/status", Capabilities: []string{"read"}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := authc.WritePolicy(ctx, &hsmgatev1.WritePolicyRequest{Policy: &hsmgatev1.Policy{Name: "other",
		Rules: []*hsmgatev1.PolicyRule{{Resource: "transit/keys/x", Capabilities: []string{"read"}}}}}); err != nil {
		t.Fatal(err)
	}
	token := func(policy string) string {
		r, err := authc.CreateToken(ctx, &hsmgatev1.CreateTokenRequest{Policies: []string{policy}, Ttl: nil})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetToken()
	}
	reader, other := dial(token("status-reader")), dial(token("other"))
	anon := dial("")

	st.down.Store(true)
	t.Run("no token, store down: public part only", func(t *testing.T) {
		r, err := statusOf(anon)
		if err != nil {
			t.Fatalf("GetStatus without a token: %v", err)
		}
		if !r.GetPublicView() || r.GetState() != hsmgatev1.GetStatusResponse_STATE_DEGRADED ||
			!r.GetHsm().GetReachable() || r.GetStore().GetReachable() || r.GetVersion() == "" {
			t.Errorf("got %v, want public view, degraded, HSM up, store down, a version", r)
		}
		public := map[protoreflect.Name]bool{"version": true, "state": true, "public_view": true, "hsm": true, "store": true}
		r.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if !public[fd.Name()] {
				t.Errorf("field %s is set (%v) in the public view", fd.Name(), v)
			}
			if fd.Kind() == protoreflect.MessageKind {
				v.Message().Range(func(sub protoreflect.FieldDescriptor, sv protoreflect.Value) bool {
					if sub.Name() != "reachable" {
						t.Errorf("field %s.%s is set (%v) in the public view", fd.Name(), sub.Name(), sv)
					}
					return true
				})
			}
			return true
		})
	})
	t.Run("read on sys/status: everything", func(t *testing.T) {
		for name, cc := range map[string]*grpc.ClientConn{"root": rootCC, "status-reader": reader} {
			r, err := statusOf(cc)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if r.GetPublicView() || r.GetState() != hsmgatev1.GetStatusResponse_STATE_DEGRADED ||
				r.GetStore().GetName() != "bbolt" || r.GetStore().GetError() == "" || r.GetStore().GetReachable() ||
				r.GetHsm().GetName() == "" || r.GetUptime() == nil || r.GetStartTime() == nil {
				t.Errorf("%s: got %v, want the full status with the store down", name, r)
			}
		}
	})
	st.down.Store(false)
	t.Run("store back", func(t *testing.T) {
		r, err := statusOf(anon)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetState() != hsmgatev1.GetStatusResponse_STATE_SERVING || !r.GetStore().GetReachable() {
			t.Errorf("got %v, want serving, store reachable", r)
		}
	})
	t.Run("refused", func(t *testing.T) {
		if _, err := statusOf(other); status.Code(err) != codes.PermissionDenied {
			t.Errorf("a token without read on sys/status: got %v, want PermissionDenied", err)
		}
		if _, err := statusOf(dial("hgs.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")); status.Code(err) != codes.Unauthenticated {
			t.Errorf("a bad token: got %v, want Unauthenticated (never downgraded to the public view)", err)
		}
	})
	t.Run("anonymous calls are rate limited", func(t *testing.T) {
		// Two anonymous calls were made above; the burst is three.
		if _, err := statusOf(anon); err != nil {
			t.Fatalf("third anonymous call: %v", err)
		}
		if _, err := statusOf(anon); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("fourth anonymous call: got %v, want ResourceExhausted", err)
		}
		if _, err := statusOf(reader); err != nil {
			t.Errorf("with a token after the anonymous limit: %v, want the full status", err)
		}
	})
}
