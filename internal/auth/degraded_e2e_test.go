package auth_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/etcd"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
)

// TestDegradedWhileStoreDown runs the transit service behind the
// interceptor on a replica whose etcd goes silent (a frozen member: a
// network cut, or a cluster without quorum, looks the same to it):
//   - within the grace period, Encrypt and Decrypt with a cached key and a
//     cached token go on, and their audit lines say "degraded";
//   - RotateKey, which needs a write, fails with Unavailable (within the
//     store's request timeout, not the caller's 60 s deadline);
//   - a token revoked before the outage stays refused;
//   - after the grace period, Encrypt fails with Unavailable;
//   - once etcd answers again, service resumes, no longer degraded.
//
// The outage is a frozen member (then thawed), and a cluster of three that
// loses two members (for good).
func TestDegradedWhileStoreDown(t *testing.T) {
	t.Run("frozen member", func(t *testing.T) {
		sa, _, freezer, _ := outageStores(t)
		testDegraded(t, sa, freezer.Freeze, freezer.Thaw)
	})
	t.Run("quorum lost", func(t *testing.T) {
		c := etcdtest.Start(t, 3)
		sa, err := etcd.New(context.Background(), etcd.Config{Endpoints: c.Endpoints, Prefix: "/q/", RequestTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sa.Close() })
		// Two of three members stop: the one left has no quorum.
		testDegraded(t, sa, func() { c.StopFollower(); c.StopFollower() }, nil)
	})
}

// testDegraded runs the scenario on store sa; cut starts the outage,
// restore (if not nil) ends it.
func testDegraded(t *testing.T, sa keystore.Store, cut, restore func()) {
	ctx := context.Background()
	mod := hsmtest.Module(t)
	kek, _, err := mod.EnsureKEK(ctx, "kek")
	if err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	const grace = 2 * time.Minute
	opts := keystore.CacheOptions{Grace: grace, Now: clock.Now, ProbeInterval: 50 * time.Millisecond, RetryInterval: 50 * time.Millisecond}
	eng, err := transit.New(transit.Config{Store: sa, KEK: kek, Cache: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	a, err := auth.New(actx, auth.Config{Cache: opts}, sa)
	if err != nil {
		t.Fatal(err)
	}
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	alog, err := audit.Open(audit.Config{Path: auditPath}, bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close()
	srv, cc, ic := serveTransit(t, eng, a, alog)
	defer srv.Stop()
	defer cc.Close()
	tc := pb.NewTransitServiceClient(cc)

	pol, err := auth.ParsePolicyDocument("payments", []byte("rules:\n  - resource: transit/keys/payments-*\n    capabilities: [create, read, encrypt, decrypt, rotate]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Policies.Put(ctx, pol); err != nil {
		t.Fatal(err)
	}
	root := &auth.Identity{Name: "root", Kind: auth.KindRoot}
	live, _, err := a.Tokens.Create(ctx, root, auth.TokenRequest{DisplayName: "payments-api", Policies: []string{"payments"}})
	if err != nil {
		t.Fatal(err)
	}
	gone, goneInfo, err := a.Tokens.Create(ctx, root, auth.TokenRequest{DisplayName: "old-api", Policies: []string{"payments"}})
	if err != nil {
		t.Fatal(err)
	}
	with := func(token string) context.Context {
		c, cancel := context.WithTimeout(ctx, 60*time.Second)
		t.Cleanup(cancel)
		return metadata.AppendToOutgoingContext(c, "authorization", "Bearer "+token)
	}
	const name = "payments-k"
	if _, err := tc.CreateKey(with(live), &pb.CreateKeyRequest{Name: name, Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	encrypt := func(token string) ([]byte, error) {
		r, err := tc.Encrypt(with(token), &pb.EncryptRequest{Name: name, Items: []*pb.EncryptItem{{Plaintext: []byte("pay 10")}}})
		if err != nil {
			return nil, err
		}
		if e := r.GetResults()[0].GetError(); e != nil {
			t.Fatalf("Encrypt item: %v", e)
		}
		return r.GetResults()[0].GetCiphertext(), nil
	}
	// Warm the caches (token, policy, key); a load that a change event
	// overtakes is not kept, so use them a few times.
	var ct []byte
	for range 20 {
		if ct, err = encrypt(live); err != nil {
			t.Fatalf("Encrypt before the outage: %v", err)
		}
		if _, err := encrypt(gone); err != nil {
			t.Fatalf("Encrypt with the second token before the outage: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Tokens.Revoke(ctx, goneInfo.GetAccessor()); err != nil {
		t.Fatal(err)
	}
	if _, err := encrypt(gone); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked token before the outage: got %v, want Unauthenticated", err)
	}

	cut()
	eventually(t, "the outage noticed by every cache", func() bool {
		return a.Tokens.CacheStats().Down && a.Policies.CacheStats().Down && eng.CacheStats().Down
	})
	t.Run("within grace", func(t *testing.T) {
		if _, err := encrypt(live); err != nil {
			t.Fatalf("Encrypt: got %v, want OK (degraded)", err)
		}
		d, err := tc.Decrypt(with(live), &pb.DecryptRequest{Name: name, Items: []*pb.DecryptItem{{Ciphertext: ct}}})
		if err != nil || string(d.GetResults()[0].GetPlaintext()) != "pay 10" {
			t.Fatalf("Decrypt: got %v %v, want OK (degraded)", d, err)
		}
		if n := degradedLines(t, auditPath, "/hsmgate.v1.TransitService/Encrypt"); n < 1 {
			t.Errorf("audit: got %d degraded Encrypt lines, want at least 1", n)
		}
		if n := counterValue(t, ic, "hsmgate_degraded_requests_total"); n < 2 {
			t.Errorf("hsmgate_degraded_requests_total: got %v, want at least 2 (encrypt, decrypt)", n)
		}
		start := time.Now()
		_, err = tc.RotateKey(with(live), &pb.RotateKeyRequest{Name: name})
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("RotateKey: got %v (%v), want Unavailable", got, err)
		}
		t.Logf("RotateKey answered Unavailable after %s (store request timeout 500ms; caller deadline 60s)", time.Since(start).Round(time.Millisecond))
		if _, err := encrypt(gone); status.Code(err) == codes.OK {
			t.Error("the token revoked before the outage was accepted")
		}
	})
	t.Run("after grace", func(t *testing.T) {
		clock.Advance(grace + time.Second)
		if _, err := encrypt(live); status.Code(err) != codes.Unavailable {
			t.Fatalf("Encrypt after the grace period: got %v, want Unavailable", err)
		}
	})
	if restore == nil {
		return
	}
	restore()
	t.Run("back", func(t *testing.T) {
		eventually(t, "the caches rebuilt", func() bool {
			return a.Tokens.CacheStats().Synced && a.Policies.CacheStats().Synced && eng.CacheStats().Synced
		})
		before := degradedLines(t, auditPath, "/hsmgate.v1.TransitService/Encrypt")
		if _, err := encrypt(live); err != nil {
			t.Fatalf("Encrypt once etcd is back: %v", err)
		}
		if n := degradedLines(t, auditPath, "/hsmgate.v1.TransitService/Encrypt"); n != before {
			t.Errorf("audit: an Encrypt after the rebuild was marked degraded")
		}
		if _, err := encrypt(gone); status.Code(err) != codes.Unauthenticated {
			t.Errorf("revoked token after the outage: got %v, want Unauthenticated", err)
		}
	})
}

// degradedLines counts the successful response lines of method whose
// audit entry says it was served degraded.
func degradedLines(t *testing.T, path, method string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e audit.Entry
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if (e.Type == audit.TypeResponse || e.Type == audit.TypeCall) && e.Method == method && e.Code == codes.OK.String() && e.Extra["degraded"] != "" {
			n++
		}
	}
	return n
}

// counterValue gathers c and returns the value of the counter name.
func counterValue(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
