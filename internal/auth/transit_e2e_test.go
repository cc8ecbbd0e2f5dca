package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
)

// switchAuditor lets a test make the audit log unwritable mid-run.
type switchAuditor struct{ cur atomic.Pointer[audit.Log] }

func (s *switchAuditor) Write(e *audit.Entry) error { return s.cur.Load().Write(e) }
func (s *switchAuditor) HMAC(v string) string       { return s.cur.Load().HMAC(v) }

// TestTransitThroughAuth runs the real transit service (SoftHSM KEK, bbolt
// store) behind the interceptor and a real audit log:
//   - every registered method has a rule (CheckTableCovers);
//   - with the audit log unwritable, Encrypt and RotateKey fail with
//     Unavailable and the key is unchanged;
//   - canary: after encrypting a known plaintext with a known token, neither
//     the plaintext, nor the token, nor the key bytes appear in the audit log,
//     the process log or the store file.
func TestTransitThroughAuth(t *testing.T) {
	ctx := context.Background()
	mod := hsmtest.Module(t)
	kek, _, err := mod.EnsureKEK(ctx, "kek")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	storePath := filepath.Join(dir, "store.db")
	store, err := bbolt.Open(storePath, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	eng, err := transit.New(transit.Config{Store: store, KEK: kek, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	a, err := auth.New(actx, auth.Config{}, store)
	if err != nil {
		t.Fatal(err)
	}
	auditPath := filepath.Join(dir, "audit.log")
	good, err := audit.Open(audit.Config{Path: auditPath}, bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	// An audit log whose file is gone fails every write (as a full disk).
	badPath := filepath.Join(dir, "bad-audit.log")
	bad, err := audit.Open(audit.Config{Path: badPath, MaxBytes: -1}, bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(badPath); err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	sw := &switchAuditor{}
	sw.cur.Store(good)

	srv, cc, _ := serveTransit(t, eng, a, sw)
	defer srv.Stop()
	defer cc.Close()

	pol, err := auth.ParsePolicyDocument("payments", []byte("rules:\n  - resource: transit/keys/payments-*\n    capabilities: [create, read, encrypt, decrypt, rotate, export]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Policies.Put(ctx, pol); err != nil {
		t.Fatal(err)
	}
	token, _, err := a.Tokens.Create(ctx, &auth.Identity{Name: "root", Kind: auth.KindRoot}, auth.TokenRequest{DisplayName: "payments-api", Policies: []string{"payments"}})
	if err != nil {
		t.Fatal(err)
	}
	tctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	tc := pb.NewTransitServiceClient(cc)
	const name = "payments-canary"
	if _, err := tc.CreateKey(tctx, &pb.CreateKeyRequest{Name: name, Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Exportable: true}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	plaintext := []byte("CANARY-7d1f0c55-plaintext-that-must-never-be-logged")
	enc, err := tc.Encrypt(tctx, &pb.EncryptRequest{Name: name, Items: []*pb.EncryptItem{{Plaintext: plaintext}}})
	if err != nil || len(enc.GetResults()) != 1 || enc.GetResults()[0].GetError() != nil {
		t.Fatalf("Encrypt: %v %v", enc, err)
	}
	ct := enc.GetResults()[0].GetCiphertext()
	dec, err := tc.Decrypt(tctx, &pb.DecryptRequest{Name: name, Items: []*pb.DecryptItem{{Ciphertext: ct}}})
	if err != nil || !bytes.Equal(dec.GetResults()[0].GetPlaintext(), plaintext) {
		t.Fatalf("Decrypt: %v %v", dec, err)
	}
	exp, err := tc.ExportKey(tctx, &pb.ExportKeyRequest{Name: name})
	if err != nil || len(exp.GetVersions()) != 1 {
		t.Fatalf("ExportKey: %v %v", exp, err)
	}
	keyBytes := exp.GetVersions()[0].GetMaterial()
	if _, err := tc.Encrypt(tctx, &pb.EncryptRequest{Name: "orders", Items: []*pb.EncryptItem{{Plaintext: plaintext}}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Encrypt on a key outside the policy: got %v, want PermissionDenied", err)
	}

	t.Run("audit unwritable", func(t *testing.T) {
		sw.cur.Store(bad)
		_, err := tc.Encrypt(tctx, &pb.EncryptRequest{Name: name, Items: []*pb.EncryptItem{{Plaintext: plaintext}}})
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("Encrypt: got %v (%v), want Unavailable", got, err)
		}
		_, err = tc.RotateKey(tctx, &pb.RotateKeyRequest{Name: name})
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("RotateKey: got %v (%v), want Unavailable", got, err)
		}
		sw.cur.Store(good)
		k, err := tc.GetKey(tctx, &pb.GetKeyRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if got := k.GetKey().GetLatestVersion(); got != 1 {
			t.Errorf("latest version after the refused rotation: got %d, want 1", got)
		}
	})

	t.Run("canary", func(t *testing.T) {
		srv.Stop()
		good.Close()
		cancel() // stop the auth caches' watches before the store closes
		store.Close()
		auditBytes, err := os.ReadFile(auditPath)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := audit.Verify(bytes.NewReader(auditBytes)); err != nil || n < 8 {
			t.Errorf("audit log: got %d lines, %v, want a valid chain of at least 8", n, err)
		}
		storeBytes, err := os.ReadFile(storePath)
		if err != nil {
			t.Fatal(err)
		}
		secrets := map[string][]byte{
			"plaintext":        plaintext,
			"token":            []byte(token),
			"token secret":     []byte(token[len(auth.TokenPrefix):]),
			"key bytes":        keyBytes,
			"key hex":          []byte(hex.EncodeToString(keyBytes)),
			"key base64":       []byte(base64.StdEncoding.EncodeToString(keyBytes)),
			"plaintext base64": []byte(base64.StdEncoding.EncodeToString(plaintext)),
		}
		places := map[string][]byte{"audit log": auditBytes, "process log": logs.Bytes(), "store file": storeBytes}
		for what, secret := range secrets {
			for where, content := range places {
				if bytes.Contains(content, secret) {
					t.Errorf("the %s appears in the %s", what, where)
				}
			}
		}
		if !bytes.Contains(auditBytes, []byte(`"method":"/hsmgate.v1.TransitService/Encrypt"`)) {
			t.Errorf("audit log lacks the Encrypt request")
		}
	})
}

// serveTransit serves TransitService (with AuthService and health) behind
// a's interceptor writing to auditor, on a loopback port, and returns the
// server, a client connection to it and the interceptor.
func serveTransit(t *testing.T, eng *transit.Engine, a *auth.Auth, auditor auth.Auditor) (*grpc.Server, *grpc.ClientConn, *auth.Interceptor) {
	t.Helper()
	table, err := auth.Merge(auth.PublicTable(), auth.AuthTable(), transit.AuthTable())
	if err != nil {
		t.Fatal(err)
	}
	ic, err := a.Interceptor(table, auditor)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(ic.Unary()), grpc.ChainStreamInterceptor(ic.Stream()))
	pb.RegisterTransitServiceServer(srv, transit.NewService(eng, transit.ServiceConfig{}))
	pb.RegisterAuthServiceServer(srv, a.Service)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	if err := auth.CheckTableCovers(srv, table); err != nil {
		t.Fatalf("CheckTableCovers: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	return srv, cc, ic
}
