package transit

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// RSA key generation is slow (and slower under -race): each size is made
// once per test binary and handed out for every wrapped RSA key.
var rsaCache struct {
	mu   sync.Mutex
	keys map[int]*rsa.PrivateKey
}

func cachedRSA(bits int) (*rsa.PrivateKey, error) {
	rsaCache.mu.Lock()
	defer rsaCache.mu.Unlock()
	if k, ok := rsaCache.keys[bits]; ok {
		return k, nil
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, err
	}
	if rsaCache.keys == nil {
		rsaCache.keys = map[int]*rsa.PrivateKey{}
	}
	rsaCache.keys[bits] = k
	return k, nil
}

func TestMain(m *testing.M) {
	generateRSAKey = cachedRSA
	os.Exit(m.Run())
}

// fixture is one engine on a real SoftHSM token and a real bbolt file.
type fixture struct {
	t     testing.TB
	e     *Engine
	store keystore.Store
	path  string
	mod   *hsm.Module
	kek   *hsm.KEK
	clock *clocktest.Fake
	cfg   Config
}

var sharedHSM struct {
	once sync.Once
	mod  *hsm.Module
	kek  *hsm.KEK
}

// newFixture makes a fresh store and engine; the SoftHSM token is fresh per
// fixture unless shared is set (benchmarks), where one token serves the binary.
func newFixture(t testing.TB, mutate ...func(*Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	mod := hsmtest.Module(t)
	kek, _, err := mod.EnsureKEK(ctx, "kek")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, mod: mod, kek: kek, clock: clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	f.path = filepath.Join(t.TempDir(), "store.db")
	f.cfg = Config{KEK: kek, HSM: moduleHSM{mod}, Clock: f.clock, UsageBlock: 1 << 10}
	for _, m := range mutate {
		m(&f.cfg)
	}
	f.open()
	t.Cleanup(f.close)
	return f
}

func (f *fixture) open() {
	f.t.Helper()
	s, err := bbolt.Open(f.path, bbolt.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	f.store = s
	cfg := f.cfg
	cfg.Store = s
	e, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.e = e
}

func (f *fixture) close() {
	if f.e != nil {
		f.e.Close()
		f.e = nil
	}
	if f.store != nil {
		f.store.Close()
		f.store = nil
	}
}

// reopen simulates a process restart on the same store file and token.
func (f *fixture) reopen() {
	f.t.Helper()
	f.close()
	f.open()
}

func (f *fixture) create(name string, typ pb.TransitKeyType, res pb.TransitResidency, mod ...func(*pb.CreateKeyRequest)) *pb.TransitKey {
	f.t.Helper()
	req := &pb.CreateKeyRequest{Name: name, Type: typ, Residency: res}
	for _, m := range mod {
		m(req)
	}
	k, err := f.e.CreateKey(context.Background(), req)
	if err != nil {
		f.t.Fatalf("CreateKey(%s %v %v): %v", name, typ, res, err)
	}
	return k
}

func (f *fixture) encrypt(name string, pt, aad, kctx []byte) []byte {
	f.t.Helper()
	r, err := f.e.Encrypt(context.Background(), &pb.EncryptRequest{Name: name, Items: []*pb.EncryptItem{{Plaintext: pt, AssociatedData: aad, Context: kctx}}})
	if err != nil {
		f.t.Fatalf("Encrypt(%s): %v", name, err)
	}
	if r.Results[0].Error != nil {
		f.t.Fatalf("Encrypt(%s) item: %v", name, r.Results[0].Error)
	}
	return r.Results[0].Ciphertext
}

// decrypt returns the plaintext and the item's code (OK or its error).
func (f *fixture) decrypt(name string, ct, aad, kctx []byte) ([]byte, codes.Code) {
	f.t.Helper()
	r, err := f.e.Decrypt(context.Background(), &pb.DecryptRequest{Name: name, Items: []*pb.DecryptItem{{Ciphertext: ct, AssociatedData: aad, Context: kctx}}})
	if err != nil {
		f.t.Fatalf("Decrypt(%s): whole call failed: %v", name, err)
	}
	if e := r.Results[0].Error; e != nil {
		return nil, codes.Code(e.Code)
	}
	return r.Results[0].Plaintext, codes.OK
}

func code(err error) codes.Code { return errs.Code(err) }

func wantCode(t testing.TB, what string, err error, want codes.Code) {
	t.Helper()
	if got := code(err); got != want {
		t.Fatalf("%s: got code %v (%v), want %v", what, got, err, want)
	}
}

// poll retries cond until it holds or the deadline passes.
func poll(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	wrapped = pb.TransitResidency_TRANSIT_RESIDENCY_WRAPPED
	inHSM   = pb.TransitResidency_TRANSIT_RESIDENCY_HSM
)

var allTypes = []pb.TransitKeyType{
	pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_XCHACHA20_POLY1305,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA512,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P384,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_2048,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_3072,
	pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_4096,
}

// moduleHSM adapts *hsm.Module as transithsm does (that package imports
// transit, so in-package tests cannot use it). It is not a fake: every call
// goes to the real SoftHSM token.
type moduleHSM struct{ m *hsm.Module }

func (a moduleHSM) GenerateKey(ctx context.Context, label, kt string) error {
	return a.m.GenerateKey(ctx, label, hsm.KeyType(kt))
}
func (a moduleHSM) DestroyKey(ctx context.Context, label string) error {
	return a.m.DestroyKey(ctx, label)
}
func (a moduleHSM) AEAD(ctx context.Context, label string) (AEAD, error) {
	x, err := a.m.AEAD(ctx, label)
	if err != nil {
		return nil, err
	}
	return x, nil
}
func (a moduleHSM) Signer(ctx context.Context, label string) (Signer, error) {
	x, err := a.m.Signer(ctx, label)
	if err != nil {
		return nil, err
	}
	return x, nil
}
func (a moduleHSM) MAC(ctx context.Context, label string, h crypto.Hash) (MAC, error) {
	x, err := a.m.MAC(ctx, label, h)
	if err != nil {
		return nil, err
	}
	return x, nil
}
func (a moduleHSM) Random(ctx context.Context, n int) ([]byte, error) { return a.m.Random(ctx, n) }
