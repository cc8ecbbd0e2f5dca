package sshca

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// testCaller is a settable identity.
type testCaller struct {
	mu sync.Mutex
	c  Caller
}

func (tc *testCaller) get(context.Context) (Caller, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.c, nil
}

func (tc *testCaller) set(c Caller) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.c = c
}

type testEnv struct {
	e      *Engine
	clock  *clocktest.Fake
	caller *testCaller
	store  keystore.Store
	hsm    *hsm.Module
}

// newEnv returns an engine over a fresh SoftHSM token and bbolt file, with a
// fake clock (set to the real time, whole seconds) and a settable caller.
func newEnv(t testing.TB) *testEnv {
	t.Helper()
	m := hsmtest.Module(t)
	st, err := bbolt.Open(filepath.Join(t.TempDir(), "store.db"), bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvOn(t, st, m)
}

// newEnvOn is newEnv over a given store and token: engines made on the same
// ones act as the replicas of one deployment.
func newEnvOn(t testing.TB, st keystore.Store, m *hsm.Module) *testEnv {
	t.Helper()
	env := &testEnv{
		clock:  clocktest.New(time.Now().Truncate(time.Second)),
		caller: &testCaller{c: Caller{Name: "alice", RequestID: "req-1", Metadata: map[string]string{"team": "infra"}}},
		store:  st,
		hsm:    m,
	}
	var err error
	env.e, err = New(context.Background(), Config{
		Store: st, Keys: m, Caller: env.caller.get, Now: env.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.e.Close() })
	return env
}

func (env *testEnv) createCA(t testing.TB, name string, ct pb.SSHCertType, kt pb.SSHKeyType) *pb.SSHCA {
	t.Helper()
	ca, err := env.e.CreateCA(context.Background(), &pb.CreateSSHCARequest{Name: name, CertType: ct, KeyType: kt})
	if err != nil {
		t.Fatalf("CreateCA %s: %v", name, err)
	}
	return ca
}

func (env *testEnv) createRole(t testing.TB, r *pb.SSHRole) *pb.SSHRole {
	t.Helper()
	got, err := env.e.CreateRole(context.Background(), r)
	if err != nil {
		t.Fatalf("CreateRole %s: %v", r.GetName(), err)
	}
	return got
}

// signOne signs one item and returns the parsed certificate or the item's error.
func (env *testEnv) signOne(t testing.TB, ct pb.SSHCertType, role string, it *pb.SSHSignItem) (*ssh.Certificate, *pb.SSHSignResult, error) {
	t.Helper()
	res, err := env.e.Sign(context.Background(), ct, role, []*pb.SSHSignItem{it})
	if err != nil {
		return nil, nil, err
	}
	if res[0].GetError() != nil {
		return nil, res[0], statusErr{res[0].GetError()}
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(res[0].GetCertificate()))
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return pub.(*ssh.Certificate), res[0], nil
}

type statusErr struct {
	s interface{ GetMessage() string }
}

func (s statusErr) Error() string { return s.s.GetMessage() }

func authorized(t testing.TB, pub ssh.PublicKey) string {
	t.Helper()
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

func ed25519Key(t testing.TB) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, authorized(t, s.PublicKey())
}

func rsaKey(t testing.TB, bits int) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return authorized(t, pub)
}

func ecdsaKey(t testing.TB, c elliptic.Curve) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return authorized(t, pub)
}

func wireString(b []byte, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// skKey builds a FIDO (sk-) public key, which no software here can generate.
func skKey(t testing.TB, ecdsaKey bool) string {
	t.Helper()
	var blob []byte
	if ecdsaKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		point, err := k.PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		blob = wireString(blob, []byte(ssh.KeyAlgoSKECDSA256))
		blob = wireString(blob, []byte("nistp256"))
		blob = wireString(blob, point)
	} else {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		blob = wireString(blob, []byte(ssh.KeyAlgoSKED25519))
		blob = wireString(blob, pub)
	}
	blob = wireString(blob, []byte("ssh:"))
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		t.Fatal(err)
	}
	return authorized(t, pub)
}
