// Package hsmtest gives each test a fresh SoftHSM2 token.
//
// SoftHSM reads SOFTHSM2_CONF once per process, at C_Initialize, and does
// not see tokens that softhsm2-util creates afterwards (verified with
// SoftHSM 2.6.1: C_GetSlotList does not rescan). So the helper sets up one
// configuration per test process, in a temporary directory, the first time
// it is called (before any hsm.Open in the process: a test binary must not
// open SoftHSM by other means first), and makes every token in process
// with C_InitToken on the free slot and C_InitPIN. SoftHSM keeps each token
// in its own subdirectory of the token directory, so each test's token is
// in a directory of its own, with a unique label.
//
// Without SoftHSM2 installed, the helpers call t.Fatal when the environment
// variable CI is set and t.Skip otherwise.
package hsmtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/softhsm"
)

// The PINs of every test token.
const (
	SOPIN   = "so-pin-1234"
	UserPIN = "user-pin-1234"
)

var proc struct {
	once sync.Once
	err  error
	lib  string
	dir  string
	p    *pkcs11.Ctx

	mu sync.Mutex // serialises token creation
	n  int
}

func setup() {
	lib, err := softhsm.Library()
	if err != nil {
		proc.err = err
		return
	}
	removeOld()
	dir, err := os.MkdirTemp("", "hsmtest-")
	if err != nil {
		proc.err = err
		return
	}
	conf, err := softhsm.WriteConfig(dir)
	if err != nil {
		proc.err = err
		return
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	p := pkcs11.New(lib)
	if p == nil {
		proc.err = fmt.Errorf("hsmtest: cannot load %s", lib)
		return
	}
	if err := p.Initialize(); err != nil && err != pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		proc.err = fmt.Errorf("hsmtest: initialise %s: %w", lib, err)
		return
	}
	proc.lib, proc.dir, proc.p = lib, dir, p
}

// removeOld deletes the configuration directories of earlier test processes
// (a process cannot remove its own: the library keeps using it to the end).
func removeOld() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "hsmtest-*"))
	for _, d := range old {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > time.Hour {
			os.RemoveAll(d)
		}
	}
}

func require(t testing.TB) {
	t.Helper()
	proc.once.Do(setup)
	if proc.err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("hsmtest: SoftHSM2 is required in CI: %v", proc.err)
		}
		t.Skipf("hsmtest: SoftHSM2 not available: %v", proc.err)
	}
}

// Library returns the path of libsofthsm2.so, skipping or failing the test
// as the package doc says if SoftHSM2 is not installed.
func Library(t testing.TB) string {
	t.Helper()
	require(t)
	return proc.lib
}

// Config makes a fresh token for the test and returns the configuration that
// opens it (user PIN UserPIN, SO PIN SOPIN, a pool of 4, logs to the
// test's output).
func Config(t testing.TB) hsm.Config {
	t.Helper()
	require(t)
	proc.mu.Lock()
	defer proc.mu.Unlock()
	proc.n++
	label := fmt.Sprintf("t%d-%d", os.Getpid(), proc.n)
	if err := initToken(label); err != nil {
		t.Fatalf("hsmtest: make token %q: %v", label, err)
	}
	return hsm.Config{
		Library:     proc.lib,
		TokenLabel:  label,
		PIN:         UserPIN,
		MaxSessions: 4,
		WaitTimeout: 30 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
}

// Module opens a fresh token for the test and closes it in t.Cleanup.
func Module(t testing.TB) *hsm.Module {
	t.Helper()
	cfg := Config(t)
	m, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("hsmtest: open token %q: %v", cfg.TokenLabel, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Slot returns the slot that holds the token with this label, for tests that
// act on the token from outside the Module (a second PKCS#11 context on the
// same library): closing every session, logging out, changing the PIN.
func Slot(t testing.TB, label string) (*pkcs11.Ctx, uint) {
	t.Helper()
	require(t)
	slots, err := proc.p.GetSlotList(true)
	if err != nil {
		t.Fatalf("hsmtest: slots: %v", err)
	}
	for _, id := range slots {
		ti, err := proc.p.GetTokenInfo(id)
		if err == nil && strings.TrimRight(ti.Label, " ") == label {
			return proc.p, id
		}
	}
	t.Fatalf("hsmtest: token %q not found", label)
	return nil, 0
}

func initToken(label string) error {
	return softhsm.InitTokenOn(proc.p, label, SOPIN, UserPIN)
}

// Logout logs the token with this label out from outside the Module (a
// second PKCS#11 context on the same library, as another part of the
// process could): every session of the process on the token loses its login.
func Logout(t testing.TB, label string) {
	t.Helper()
	p, slot := Slot(t, label)
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatalf("hsmtest: open session: %v", err)
	}
	defer p.CloseSession(s)
	if err := p.Logout(s); err != nil {
		t.Fatalf("hsmtest: C_Logout: %v", err)
	}
}

// ForeignECKey makes an ECDSA P-256 key pair with this label and CKA_ID on
// the token from outside any Module (a second session of the process, as
// a key-ceremony tool would make it): private, sensitive and not
// extractable, or extractable and not sensitive when extractable is true.
func ForeignECKey(t testing.TB, token, label string, id []byte, extractable bool) {
	t.Helper()
	p, slot := Slot(t, token)
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatalf("hsmtest: open session: %v", err)
	}
	defer p.CloseSession(s)
	p256 := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	common := func(class uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label), pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		}
	}
	pub := append(common(pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true))
	priv := append(common(pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, !extractable),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, extractable))
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
	if _, _, err := p.GenerateKeyPair(s, mech, pub, priv); err != nil {
		t.Fatalf("hsmtest: foreign key %q: %v", label, err)
	}
}

// ForeignAESKey makes an AES-256 token key (encrypt and decrypt; private,
// sensitive, not extractable) with this label and CKA_ID from outside any
// Module, as ForeignECKey does.
func ForeignAESKey(t testing.TB, token, label string, id []byte) {
	t.Helper()
	p, slot := Slot(t, token)
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatalf("hsmtest: open session: %v", err)
	}
	defer p.CloseSession(s)
	_, err = p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
	})
	if err != nil {
		t.Fatalf("hsmtest: foreign AES key %q: %v", label, err)
	}
}
