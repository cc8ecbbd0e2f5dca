package hsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// fixture holds a module with one key of each kind the recovery tests use.
type fixture struct {
	m      *hsm.Module
	kek    *hsm.KEK
	signer *hsm.Signer
	aead   *hsm.AEAD
}

func newFixture(t *testing.T, m *hsm.Module) *fixture {
	t.Helper()
	f := &fixture{m: m}
	var err error
	if f.kek, _, err = m.EnsureKEK(ctx, "kek"); err != nil {
		t.Fatal(err)
	}
	if err := m.GenerateKey(ctx, "sig", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if f.signer, err = m.Signer(ctx, "sig"); err != nil {
		t.Fatal(err)
	}
	if err := m.GenerateKey(ctx, "aes", hsm.AES256); err != nil {
		t.Fatal(err)
	}
	if f.aead, err = m.AEAD(ctx, "aes"); err != nil {
		t.Fatal(err)
	}
	return f
}

// ops returns one call of each kind; each returns nil when it worked.
func (f *fixture) ops() map[string]func(context.Context) error {
	digest := sha256.Sum256([]byte("x"))
	nonce := make([]byte, 12)
	return map[string]func(context.Context) error{
		"Ping":   f.m.Ping,
		"Random": func(ctx context.Context) error { _, err := f.m.Random(ctx, 32); return err },
		"Wrap+Unwrap": func(ctx context.Context) error {
			b, err := f.kek.Wrap(ctx, make([]byte, 32))
			if err != nil {
				return err
			}
			_, err = f.kek.Unwrap(ctx, b)
			return err
		},
		"Sign": func(ctx context.Context) error {
			sig, err := f.signer.SignContext(ctx, digest[:], crypto.SHA256)
			if err == nil && !ecdsa.VerifyASN1(f.signer.Public().(*ecdsa.PublicKey), digest[:], sig) {
				return errors.New("signature does not verify")
			}
			return err
		},
		"Seal+Open": func(ctx context.Context) error {
			ct, err := f.aead.SealContext(ctx, nil, nonce, []byte("p"), nil)
			if err != nil {
				return err
			}
			_, err = f.aead.OpenContext(ctx, nil, nonce, ct, nil)
			return err
		},
		"Signer": func(ctx context.Context) error { _, err := f.m.Signer(ctx, "sig"); return err },
	}
}

// fillPool leaves several idle sessions in the pool.
func fillPool(t *testing.T, m *hsm.Module, n int) {
	t.Helper()
	var releases []func()
	for range n {
		r, err := hsm.Hold(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	for _, r := range releases {
		r()
	}
}

// outside opens a logged-in read-write session on the module's token through
// a second PKCS#11 context on the same library.
func outside(t *testing.T, m *hsm.Module, pin string) (*pkcs11.Ctx, uint, pkcs11.SessionHandle) {
	t.Helper()
	p, slot := hsmtest.Slot(t, m.TokenLabel())
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(s, pkcs11.CKU_USER, pin); err != nil && err != pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		t.Fatal(err)
	}
	return p, slot, s
}

func TestRecoverAfterAllSessionsClosed(t *testing.T) {
	f := newFixture(t, hsmtest.Module(t))
	for name, op := range f.ops() {
		t.Run(name, func(t *testing.T) {
			fillPool(t, f.m, 4)
			p, slot := hsmtest.Slot(t, f.m.TokenLabel())
			if err := p.CloseAllSessions(slot); err != nil {
				t.Fatalf("C_CloseAllSessions from outside: %v", err)
			}
			for i := range 3 { // the first call recovers; the others find good sessions
				if err := op(ctx); err != nil {
					t.Fatalf("call %d after C_CloseAllSessions: got %v, want nil", i, err)
				}
			}
		})
	}
}

func TestRecoverAfterLogout(t *testing.T) {
	f := newFixture(t, hsmtest.Module(t))
	for name, op := range f.ops() {
		t.Run(name, func(t *testing.T) {
			fillPool(t, f.m, 2)
			p, _, s := outside(t, f.m, hsmtest.UserPIN)
			if err := p.Logout(s); err != nil {
				t.Fatalf("C_Logout from outside: %v", err)
			}
			p.CloseSession(s)
			if err := op(ctx); err != nil {
				t.Fatalf("after C_Logout: got %v, want nil", err)
			}
		})
	}
}

// TestTokenAway makes the token unusable from outside (its user PIN changed
// and every session closed, so that the Module can neither use its sessions
// nor log in again), checks that calls fail with ErrUnavailable, puts the
// token back and checks that the same Module works again.
func TestTokenAway(t *testing.T) {
	f := newFixture(t, hsmtest.Module(t))
	const otherPIN = "other-pin-5678"
	p, slot, s := outside(t, f.m, hsmtest.UserPIN)
	if err := p.SetPIN(s, hsmtest.UserPIN, otherPIN); err != nil {
		t.Fatalf("C_SetPIN from outside: %v", err)
	}
	if err := p.CloseAllSessions(slot); err != nil {
		t.Fatal(err)
	}
	t.Run("away", func(t *testing.T) {
		for name, op := range f.ops() {
			t.Run(name, func(t *testing.T) {
				if err := op(ctx); !errors.Is(err, hsm.ErrUnavailable) {
					t.Fatalf("while away: got %v, want ErrUnavailable", err)
				}
			})
		}
	})
	p, _, s = outside(t, f.m, otherPIN)
	if err := p.SetPIN(s, otherPIN, hsmtest.UserPIN); err != nil {
		t.Fatalf("C_SetPIN back: %v", err)
	}
	p.CloseSession(s)
	t.Run("back", func(t *testing.T) {
		for name, op := range f.ops() {
			t.Run(name, func(t *testing.T) {
				if err := op(ctx); err != nil {
					t.Fatalf("after it is back: got %v, want nil", err)
				}
			})
		}
	})
}

func TestPoolWait(t *testing.T) {
	cfg := hsmtest.Config(t)
	cfg.MaxSessions = 1
	cfg.WaitTimeout = 20 * time.Millisecond
	m, err := hsm.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	release, err := hsm.Hold(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("deadline", func(t *testing.T) {
		c, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := m.Random(c, 8); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Random with the pool held: got %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx)
		cancel()
		if err := m.Ping(c); !errors.Is(err, context.Canceled) {
			t.Fatalf("Ping with the pool held: got %v, want context.Canceled", err)
		}
	})
	t.Run("no deadline: WaitTimeout", func(t *testing.T) {
		if err := m.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Ping with the pool held: got %v, want ErrUnavailable", err)
		}
	})
	t.Run("waiter gets the session when it is released", func(t *testing.T) {
		done := make(chan error)
		go func() {
			c, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			done <- m.Ping(c)
		}()
		release()
		if err := <-done; err != nil {
			t.Fatalf("Ping after release: got %v, want nil", err)
		}
	})
}

func TestKeys(t *testing.T) {
	m := hsmtest.Module(t)
	if err := m.GenerateKey(ctx, "k", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	t.Run("generate twice", func(t *testing.T) {
		for _, kt := range []hsm.KeyType{hsm.ECDSAP256, hsm.AES256, hsm.Ed25519} {
			if err := m.GenerateKey(ctx, "k", kt); !errors.Is(err, hsm.ErrKeyExists) {
				t.Errorf("GenerateKey(k, %s): got %v, want ErrKeyExists", kt, err)
			}
		}
		if _, _, err := m.EnsureKEK(ctx, "k"); !errors.Is(err, hsm.ErrKeyExists) {
			t.Errorf("EnsureKEK(k) over a signer: got %v, want ErrKeyExists", err)
		}
		if err := m.GenerateKey(ctx, "data", hsm.AES256); err != nil {
			t.Fatal(err)
		}
		if _, _, err := m.EnsureKEK(ctx, "data"); !errors.Is(err, hsm.ErrKeyExists) {
			t.Errorf("EnsureKEK(data) over an AES data key: got %v, want ErrKeyExists", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := m.Signer(ctx, "missing"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("Signer: got %v, want ErrKeyNotFound", err)
		}
		if _, err := m.AEAD(ctx, "missing"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("AEAD: got %v, want ErrKeyNotFound", err)
		}
		if _, err := m.KEK(ctx, "missing"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("KEK: got %v, want ErrKeyNotFound", err)
		}
		if err := m.DestroyKey(ctx, "missing"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("DestroyKey: got %v, want ErrKeyNotFound", err)
		}
	})
	t.Run("wrong kind", func(t *testing.T) {
		if _, err := m.AEAD(ctx, "k"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("AEAD of a key pair: got %v, want ErrKeyNotFound", err)
		}
		if err := m.GenerateKey(ctx, "x", hsm.KeyType("dsa")); !errors.Is(err, hsm.ErrUnsupported) {
			t.Errorf("GenerateKey(dsa): got %v, want ErrUnsupported", err)
		}
	})
	t.Run("destroy", func(t *testing.T) {
		s, err := m.Signer(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if err := m.DestroyKey(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Signer(ctx, "k"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("Signer after destroy: got %v, want ErrKeyNotFound", err)
		}
		digest := sha256.Sum256(nil)
		if _, err := s.SignContext(ctx, digest[:], nil); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("old Signer after destroy: got %v, want ErrKeyNotFound", err)
		}
		if err := m.GenerateKey(ctx, "k", hsm.Ed25519); err != nil {
			t.Errorf("GenerateKey after destroy: got %v, want nil", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		m2, err := hsm.Open(ctx, hsmtest.Config(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := m2.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m2.Close(); err != nil {
			t.Errorf("second Close: got %v, want nil", err)
		}
		if err := m2.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Ping after Close: got %v, want ErrUnavailable", err)
		}
	})
	t.Run("open", func(t *testing.T) {
		cfg := hsmtest.Config(t)
		bad := cfg
		bad.TokenLabel = "no-such-token"
		if _, err := hsm.Open(ctx, bad); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Open of a missing token: got %v, want ErrUnavailable", err)
		}
		bad = cfg
		bad.PIN = "wrong-pin"
		if _, err := hsm.Open(ctx, bad); err == nil {
			t.Errorf("Open with a wrong PIN: got nil, want an error")
		}
	})
}

// TestConcurrent runs every operation from many goroutines on a small pool
// (run with -race), in rounds; between rounds every session is closed from
// outside, so that in the next round many goroutines find dead sessions at
// once and each call must still succeed. (The close happens between rounds,
// not during one: SoftHSM 2.6.1 crashes with SIGSEGV when C_CloseAllSessions
// runs while another thread is inside a call on one of those sessions.)
func TestConcurrent(t *testing.T) {
	f := newFixture(t, hsmtest.Module(t))
	ops := f.ops()
	p, slot := hsmtest.Slot(t, f.m.TokenLabel())
	const rounds, goroutines, iterations = 4, 12, 5
	errc := make(chan error, rounds*goroutines*iterations*len(ops))
	for round := range rounds {
		if round > 0 {
			if err := p.CloseAllSessions(slot); err != nil {
				t.Fatalf("C_CloseAllSessions: %v", err)
			}
		}
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range iterations {
					for name, op := range ops {
						if err := op(ctx); err != nil {
							errc <- fmt.Errorf("round %d: %s: %w", round, name, err)
						}
					}
				}
			})
		}
		wg.Wait()
	}
	close(errc)
	for err := range errc {
		t.Errorf("concurrent call: %v", err)
	}
}

// tokenDir returns the directory in which SoftHSM keeps the token labelled label.
func tokenDir(t *testing.T, label string) string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(filepath.Dir(os.Getenv("SOFTHSM2_CONF")), "tokens", "*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "token.object"))
		if err == nil && bytes.Contains(b, []byte(label+" ")) {
			return d
		}
	}
	t.Fatalf("no token directory for %q", label)
	return ""
}

// TestTokenRemoved takes the token's directory away while the Module is in
// use (SoftHSM's nearest thing to pulling a token out): Ping and lookups
// fail with ErrUnavailable rather than ErrKeyNotFound, and operations on
// keys already in use either still work (their session copies live in
// memory) or fail with ErrUnavailable. SoftHSM 2.6.1 never rediscovers a
// token in a process once its directory has vanished (nor one created after
// C_Initialize), so coming back is tested by TestTokenAway.
func TestTokenRemoved(t *testing.T) {
	f := newFixture(t, hsmtest.Module(t))
	if err := f.m.GenerateKey(ctx, "not-yet-used", hsm.ECDSAP384); err != nil {
		t.Fatal(err)
	}
	dir := tokenDir(t, f.m.TokenLabel())
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Rename(dir+".away", dir) })
	t.Run("Ping", func(t *testing.T) {
		if err := f.m.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Ping while away: got %v, want ErrUnavailable", err)
		}
	})
	t.Run("lookup", func(t *testing.T) {
		if _, err := f.m.Signer(ctx, "not-yet-used"); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Signer while away: got %v, want ErrUnavailable", err)
		}
	})
	for name, op := range f.ops() {
		t.Run(name, func(t *testing.T) {
			for i := range 2 {
				if err := op(ctx); err != nil && !errors.Is(err, hsm.ErrUnavailable) {
					t.Fatalf("call %d while away: got %v, want nil or ErrUnavailable", i, err)
				}
			}
		})
	}
}
