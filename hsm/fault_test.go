package hsm_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmfault"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// faulty opens a Module through the fault-injecting layer, with the keys of
// newFixture, and returns the layer and the token's slot.
func faulty(t *testing.T, adjust func(*hsm.Config)) (*fixture, *hsmfault.Ctx, uint) {
	t.Helper()
	cfg := hsmtest.Config(t)
	if adjust != nil {
		adjust(&cfg)
	}
	var fc *hsmfault.Ctx
	m, err := hsm.OpenWith(ctx, cfg, func(p hsm.PKCS11) hsm.PKCS11 {
		fc = hsmfault.Wrap(p)
		return fc
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	_, slot := hsmtest.Slot(t, cfg.TokenLabel)
	return newFixture(t, m), fc, slot
}

// sign is one ECDSA signature through the pool.
func (f *fixture) sign(ctx context.Context) error {
	d := sha256.Sum256([]byte("m"))
	_, err := f.signer.SignContext(ctx, d[:], crypto.SHA256)
	return err
}

// busy runs every operation from goroutines at once, n rounds, with each
// call bounded by timeout, and returns how many calls succeeded.
func (f *fixture) busy(goroutines, n int, timeout time.Duration) int {
	var mu sync.Mutex
	okCalls := 0
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range n {
				for _, op := range f.ops() {
					c, cancel := context.WithTimeout(ctx, timeout)
					if op(c) == nil {
						mu.Lock()
						okCalls++
						mu.Unlock()
					}
					cancel()
				}
			}
		})
	}
	wg.Wait()
	return okCalls
}

// settle makes calls, one at a time and without a deadline, until every kind
// has worked once (the Module is back), then runs the pending clean-up
// (slot reset, closing a failed key-copy session) and checks that it is done.
func (f *fixture) settle(t *testing.T) {
	t.Helper()
	for name, op := range f.ops() {
		var err error
		for range 20 {
			if err = op(ctx); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s after the fault: got %v, want nil", name, err)
		}
	}
	if pending, err := hsm.Maintain(ctx, f.m); pending || err != nil {
		t.Fatalf("clean-up after the fault: got pending=%v, %v; want nothing left", pending, err)
	}
}

// TestFlapsDoNotLeakSessions takes the device away 30 times (every PKCS#11
// function answers CKR_DEVICE_REMOVED, closing included) while calls run
// from several goroutines, and counts the sessions the library holds
// afterwards: the pool's and the key-copy session, no more. Before sessions
// were closed on faults, each flap left the pool's sessions open in the
// library (135 after 30 flaps in the attack campaign).
func TestFlapsDoNotLeakSessions(t *testing.T) {
	const maxSessions = 4
	f, fc, slot := faulty(t, func(c *hsm.Config) {
		c.MaxSessions = maxSessions
		c.ReconnectBackoff, c.MaxReconnectBackoff = time.Millisecond, 20*time.Millisecond
	})
	f.busy(maxSessions, 2, time.Minute)
	before := fc.LibrarySessions(slot)
	for range 30 {
		fc.Fail(pkcs11.CKR_DEVICE_REMOVED)
		f.busy(maxSessions, 1, 20*time.Millisecond)
		fc.Heal()
		f.busy(maxSessions, 1, time.Minute)
	}
	f.settle(t)
	after := fc.LibrarySessions(slot)
	t.Logf("sessions in the library: %d before 30 flaps, %d after; opened through the layer and not closed: %d; registered: %d",
		before, after, fc.Open(), hsm.Registered(f.m))
	if after > maxSessions+1 {
		t.Errorf("sessions in the library after 30 flaps: got %d, want at most %d (pool + key-copy session; %d before)", after, maxSessions+1, before)
	}
	if got, want := hsm.Registered(f.m), after; got != want {
		t.Errorf("sessions the Module knows: got %d, want %d (the library's count)", got, want)
	}
}

// TestCloseFailsTooResetsSlot makes every call but opening a session and
// logging in fail with CKR_DEVICE_ERROR, closing included: sessions that
// cannot be closed are counted, no more than MaxSessions of them are left
// waiting, opening backs off, and once the device answers again the slot is
// reset (C_CloseAllSessions) and nothing is left over. Before, each call
// opened a fresh session and dropped it (952 in a 3 s window).
func TestCloseFailsTooResetsSlot(t *testing.T) {
	const maxSessions = 4
	f, fc, slot := faulty(t, func(c *hsm.Config) { c.MaxSessions = maxSessions })
	f.busy(maxSessions, 2, time.Minute)
	before := fc.LibrarySessions(slot)
	fc.ResetCalls()
	fc.FailExcept(pkcs11.CKR_DEVICE_ERROR, "OpenSession", "Login", "GetSlotList", "GetTokenInfo")
	okCalls := f.busy(maxSessions, 10, 20*time.Millisecond)
	calls := maxSessions * 10 * len(f.ops())
	during := fc.LibrarySessions(slot)
	opens := fc.Calls("OpenSession")
	fc.Heal()
	f.settle(t)
	after := fc.LibrarySessions(slot)
	t.Logf("sessions in the library: %d before, %d at the end of the fault window (%d calls, %d succeeded, %d C_OpenSession), %d after; C_CloseAllSessions calls: %d",
		before, during, calls, okCalls, opens, after, fc.Calls("CloseAllSessions"))
	// The pool's sessions, the key-copy session, and at most MaxSessions
	// that wait for the reset.
	if limit := 2*maxSessions + 1; during > limit {
		t.Errorf("sessions in the library during the fault: got %d, want at most %d", during, limit)
	}
	if limit := calls / 10; opens > limit {
		t.Errorf("C_OpenSession calls during the fault: got %d for %d calls, want at most %d (backoff)", opens, calls, limit)
	}
	if after > maxSessions+1 {
		t.Errorf("sessions in the library after the fault: got %d, want at most %d", after, maxSessions+1)
	}
	if fc.Calls("CloseAllSessions") == 0 {
		t.Errorf("C_CloseAllSessions calls: got 0, want the slot reset once the device answers")
	}
}

// TestReconnectBacksOff counts the attempts to open a session while the
// device is away and many calls keep asking for one: with the reconnect
// backoff (50 ms doubling to 5 s, the defaults) a burst of calls makes a few
// attempts, not one or two per call.
func TestReconnectBacksOff(t *testing.T) {
	const maxSessions = 4
	f, fc, _ := faulty(t, func(c *hsm.Config) { c.MaxSessions = maxSessions })
	fc.ResetCalls()
	fc.Fail(pkcs11.CKR_DEVICE_REMOVED)
	f.busy(maxSessions, 10, 10*time.Millisecond)
	calls := maxSessions * 10 * len(f.ops())
	opens := fc.Calls("OpenSession")
	fc.Heal()
	t.Logf("C_OpenSession attempts while the device was away: %d for %d calls", opens, calls)
	if opens > 20 {
		t.Errorf("C_OpenSession attempts while away: got %d for %d calls, want at most 20", opens, calls)
	}
	f.settle(t)
}

// TestSessionFaultsCloseTheSession injects one fault per call, for each kind
// of dead-session answer: each call still succeeds (retried once on a new
// session), and the failed session is closed, not dropped.
func TestSessionFaultsCloseTheSession(t *testing.T) {
	for name, rv := range map[string]uint{
		"CKR_SESSION_HANDLE_INVALID": pkcs11.CKR_SESSION_HANDLE_INVALID,
		"CKR_DEVICE_REMOVED":         pkcs11.CKR_DEVICE_REMOVED,
		"CKR_DEVICE_ERROR":           pkcs11.CKR_DEVICE_ERROR,
	} {
		t.Run(name, func(t *testing.T) {
			f, fc, slot := faulty(t, nil)
			if err := f.sign(ctx); err != nil {
				t.Fatal(err)
			}
			before := fc.LibrarySessions(slot)
			for i := range 20 {
				fc.FailN(rv, 1, "Sign")
				if err := f.sign(ctx); err != nil {
					t.Fatalf("sign %d with one %s: got %v, want nil", i, name, err)
				}
			}
			if after := fc.LibrarySessions(slot); after > before {
				t.Errorf("sessions in the library after 20 faults: got %d, want at most %d (before)", after, before)
			}
		})
	}
}

// TestReloginRace logs the token out from outside and in again at the worst
// moment: between a key search that found nothing (the session was public)
// and the check of the session's state (logged in again, as another
// goroutine's recovery would do). The key exists: the signature must work,
// never ErrKeyNotFound.
func TestReloginRace(t *testing.T) {
	f, fc, _ := faulty(t, nil)
	p, _, s := outside(t, f.m, hsmtest.UserPIN)
	defer p.CloseSession(s)
	if err := p.Logout(s); err != nil {
		t.Fatalf("C_Logout from outside: %v", err)
	}
	fc.Before("GetSessionInfo", func() {
		if err := p.Login(s, pkcs11.CKU_USER, hsmtest.UserPIN); err != nil {
			t.Errorf("C_Login from outside: %v", err)
		}
	})
	signer, err := f.m.Signer(ctx, "sig")
	if err != nil {
		t.Fatalf("Signer after an outside logout and login: got %v, want nil", err)
	}
	d := sha256.Sum256([]byte("m"))
	if _, err := signer.SignContext(ctx, d[:], crypto.SHA256); err != nil {
		t.Fatalf("sign: got %v, want nil", err)
	}
}

// TestReloginAfterNotLoggedIn: one CKR_USER_NOT_LOGGED_IN logs in again and
// retries; a token that keeps answering it gives ErrUnavailable, never
// ErrKeyNotFound.
func TestReloginAfterNotLoggedIn(t *testing.T) {
	f, fc, _ := faulty(t, nil)
	p, _, s := outside(t, f.m, hsmtest.UserPIN)
	if err := p.Logout(s); err != nil {
		t.Fatalf("C_Logout from outside: %v", err)
	}
	p.CloseSession(s)
	t.Run("outside logout", func(t *testing.T) {
		if err := f.sign(ctx); err != nil {
			t.Fatalf("sign after C_Logout from outside: got %v, want nil", err)
		}
	})
	t.Run("once", func(t *testing.T) {
		fc.FailN(pkcs11.CKR_USER_NOT_LOGGED_IN, 1, "SignInit")
		if err := f.sign(ctx); err != nil {
			t.Fatalf("sign with one CKR_USER_NOT_LOGGED_IN: got %v, want nil", err)
		}
	})
	t.Run("always", func(t *testing.T) {
		fc.Fail(pkcs11.CKR_USER_NOT_LOGGED_IN, "SignInit", "FindObjectsInit")
		defer fc.Heal()
		err := f.sign(ctx)
		if !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("sign while never logged in: got %v, want ErrUnavailable", err)
		}
		if _, err := f.m.Signer(ctx, "sig"); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Signer while never logged in: got %v, want ErrUnavailable", err)
		}
	})
	t.Run("back", func(t *testing.T) {
		if err := f.sign(ctx); err != nil {
			t.Fatalf("sign after: got %v, want nil", err)
		}
	})
}

// TestHangHonoursDeadline makes C_Sign hang: a call with a deadline returns
// when the deadline passes (ErrUnavailable and DeadlineExceeded), other
// calls go on in the rest of the pool, a pool full of hung calls answers
// waiters by their deadline, and once the library returns the pool is whole
// again with no session leaked.
func TestHangHonoursDeadline(t *testing.T) {
	const maxSessions = 2
	f, fc, slot := faulty(t, func(c *hsm.Config) { c.MaxSessions = maxSessions })
	if err := f.sign(ctx); err != nil {
		t.Fatal(err)
	}
	before := fc.LibrarySessions(slot)
	h := fc.Hang("Sign")
	defer h.Release()
	result := make(chan error, maxSessions)
	for range maxSessions {
		go func() {
			c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			result <- f.sign(c)
		}()
	}
	<-h.Entered()
	for i := range maxSessions {
		select {
		case err := <-result:
			if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("hung sign %d: got %v, want ErrUnavailable and DeadlineExceeded", i, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("hung sign %d did not return by its deadline", i)
		}
	}
	t.Run("pool full of hung calls", func(t *testing.T) {
		c, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := f.m.Random(c, 8); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Random with every session hung: got %v, want DeadlineExceeded", err)
		}
	})
	h.Release()
	t.Run("after release", func(t *testing.T) {
		for i := range 2 * maxSessions {
			if err := f.sign(ctx); err != nil {
				t.Fatalf("sign %d after the hang: got %v, want nil", i, err)
			}
		}
		if after := fc.LibrarySessions(slot); after > maxSessions+1 {
			t.Errorf("sessions in the library: got %d, want at most %d (%d before)", after, maxSessions+1, before)
		}
	})
}

// TestHangLeavesOtherSessions: one call hanging takes one session; the
// others keep serving.
func TestHangLeavesOtherSessions(t *testing.T) {
	f, fc, _ := faulty(t, func(c *hsm.Config) { c.MaxSessions = 2 })
	h := fc.Hang("Sign")
	defer h.Release()
	go func() {
		c, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		f.sign(c)
	}()
	<-h.Entered()
	if _, err := f.m.Random(ctx, 8); err != nil {
		t.Fatalf("Random while one call hangs: got %v, want nil", err)
	}
}

// TestFaultsUnderLoad injects dead-session faults into calls of every kind
// while goroutines keep the pool busy: sessions are closed while other
// goroutines run calls with the shared key copies (SoftHSM 2.6.1 crashes if
// a session closes under a call on it, or objects in use go away), every
// call either works or answers ErrUnavailable, and the sessions in the
// library stay bounded.
func TestFaultsUnderLoad(t *testing.T) {
	const maxSessions = 4
	f, fc, slot := faulty(t, func(c *hsm.Config) {
		c.MaxSessions = maxSessions
		c.ReconnectBackoff, c.MaxReconnectBackoff = time.Millisecond, 10*time.Millisecond
	})
	fns := []string{"Sign", "Encrypt", "Decrypt", "GenerateRandom", "WrapKey", "UnwrapKey", "GetSessionInfo"}
	rvs := []uint{pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_SESSION_CLOSED}
	var wg sync.WaitGroup
	errc := make(chan error, 8*20*len(f.ops()))
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				fc.FailN(rvs[(g+i)%len(rvs)], 1, fns[(g*7+i)%len(fns)])
				for name, op := range f.ops() {
					if err := op(ctx); err != nil && !errors.Is(err, hsm.ErrUnavailable) {
						errc <- fmt.Errorf("%s: %w", name, err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("call under injected faults: got %v, want nil or ErrUnavailable", err)
	}
	fc.Heal()
	f.settle(t)
	if n := fc.LibrarySessions(slot); n > maxSessions+1 {
		t.Errorf("sessions in the library after the faults: got %d, want at most %d", n, maxSessions+1)
	}
}
