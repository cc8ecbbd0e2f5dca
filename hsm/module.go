package hsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// Module is an open PKCS#11 token with a logged-in, bounded session pool.
// It is safe for concurrent use.
type Module struct {
	p   *pkcs11.Ctx
	cfg Config
	log *slog.Logger

	sem  chan struct{} // one token per session in use; capacity MaxSessions
	idle chan *session // idle sessions; capacity MaxSessions, so a put never blocks

	genMu sync.Mutex // serialises GenerateKey, so that "label taken" checks hold

	mu      sync.Mutex // guards the fields below
	slot    uint
	gen     uint64 // bumped when every session is presumed dead (recovery)
	closed  bool
	handles map[handleKey]pkcs11.ObjectHandle
}

// session is one logged-in PKCS#11 session, held by one goroutine at a time.
type session struct {
	h    pkcs11.SessionHandle
	gen  uint64
	used []handleKey // objects found during the current operation
}

type handleKey struct {
	label string
	class uint
}

// Open loads the library (once per path per process; "already initialised"
// is tolerated), finds the token by label and logs in. MaxSessions and
// WaitTimeout default to DefaultMaxSessions and DefaultWaitTimeout. The
// error wraps ErrUnavailable when the library cannot be loaded or the token
// cannot be found or logged in to (a wrong PIN included).
func Open(ctx context.Context, cfg Config) (*Module, error) {
	if cfg.Library == "" || cfg.TokenLabel == "" {
		return nil, errors.New("hsm: open: Library and TokenLabel are required")
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: open: %w", err)
	}
	p, err := loadLibrary(cfg.Library)
	if err != nil {
		return nil, err
	}
	m := &Module{
		p:       p,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "hsm", "token", cfg.TokenLabel),
		sem:     make(chan struct{}, cfg.MaxSessions),
		idle:    make(chan *session, cfg.MaxSessions),
		handles: make(map[handleKey]pkcs11.ObjectHandle),
	}
	slot, err := m.findSlot()
	if err != nil {
		return nil, err
	}
	m.slot = slot
	s, err := m.openSession()
	if err != nil {
		return nil, fmt.Errorf("hsm: open token %q: %w", cfg.TokenLabel, err)
	}
	m.idle <- s
	return m, nil
}

// Close closes the pool's idle sessions; sessions in use are closed when
// they come back. Call it once the Module's users are done: closing a
// session destroys the session copies of keys it holds. Calls after Close
// fail with ErrUnavailable. Close is idempotent. The library itself is finalised only by Finalize at process exit.
func (m *Module) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	for {
		select {
		case s := <-m.idle:
			if s.gen == m.gen {
				_ = m.p.CloseSession(s.h)
			}
		default:
			return nil
		}
	}
}

// TokenLabel is the label of the token in use.
func (m *Module) TokenLabel() string { return m.cfg.TokenLabel }

// Ping checks that the token answers (C_GetTokenInfo) and that a session is
// logged in; ErrUnavailable if not (after one attempt to recover).
func (m *Module) Ping(ctx context.Context) error {
	err := m.do(ctx, func(s *session) error {
		if err := m.checkLogin(s); err != nil {
			return err
		}
		return m.checkToken()
	})
	if err != nil {
		return fmt.Errorf("hsm: ping %q: %w", m.cfg.TokenLabel, err)
	}
	return nil
}

// MaxRandom is the most bytes one Random call returns.
const MaxRandom = 1 << 20

// Random returns n bytes from the HSM's RNG; ErrInvalidInput if n is
// negative or above MaxRandom.
func (m *Module) Random(ctx context.Context, n int) ([]byte, error) {
	if n < 0 || n > MaxRandom {
		return nil, fmt.Errorf("hsm: random: length %d: %w", n, ErrInvalidInput)
	}
	if n == 0 {
		return []byte{}, nil
	}
	var out []byte
	err := m.do(ctx, func(s *session) error {
		b, err := m.p.GenerateRandom(s.h, n)
		if err != nil {
			return err
		}
		if len(b) != n {
			return fmt.Errorf("hsm: random: got %d bytes, want %d", len(b), n)
		}
		out = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: random: %w", err)
	}
	return out, nil
}

// Rand is an io.Reader over the HSM's RNG (for crypto APIs that take one).
// Each Read is one C_GenerateRandom of at most 64 KiB, bounded by
// Config.WaitTimeout.
func (m *Module) Rand() io.Reader { return randReader{m} }

type randReader struct{ m *Module }

func (r randReader) Read(p []byte) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.m.cfg.WaitTimeout)
	defer cancel()
	b, err := r.m.Random(ctx, min(len(p), 64<<10))
	if err != nil {
		return 0, err
	}
	return copy(p, b), nil
}

// findSlot returns the slot holding the token labelled cfg.TokenLabel.
func (m *Module) findSlot() (uint, error) {
	slots, err := m.p.GetSlotList(true)
	if err != nil {
		return 0, unavailable("list slots", err)
	}
	for _, id := range slots {
		ti, err := m.p.GetTokenInfo(id)
		if err != nil {
			continue // a token that went away between the two calls
		}
		if strings.TrimRight(ti.Label, " \x00") == m.cfg.TokenLabel {
			return id, nil
		}
	}
	return 0, fmt.Errorf("hsm: token %q not found: %w", m.cfg.TokenLabel, ErrUnavailable)
}

// openSession opens and logs in a session on the current slot. If the slot
// is gone it looks the token up by label once. Errors wrap ErrUnavailable.
func (m *Module) openSession() (*session, error) {
	m.mu.Lock()
	slot, gen := m.slot, m.gen
	m.mu.Unlock()
	const flags = pkcs11.CKF_SERIAL_SESSION | pkcs11.CKF_RW_SESSION
	h, err := m.p.OpenSession(slot, flags)
	if err != nil && sessionDead(err) {
		slot, err = m.refindSlot(slot)
		if err != nil {
			return nil, err
		}
		h, err = m.p.OpenSession(slot, flags)
	}
	if err != nil {
		return nil, unavailable("open session", err)
	}
	if err := m.login(h); err != nil {
		_ = m.p.CloseSession(h)
		return nil, err
	}
	return &session{h: h, gen: gen}, nil
}

// login logs the token in through h; "already logged in" is success.
func (m *Module) login(h pkcs11.SessionHandle) error {
	err := m.p.Login(h, pkcs11.CKU_USER, m.cfg.PIN)
	if err != nil && !isRV(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		return unavailable("log in", err)
	}
	return nil
}

// refindSlot looks the token up again if the slot is still old.
func (m *Module) refindSlot(old uint) (uint, error) {
	slot, err := m.findSlot()
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	if m.slot == old {
		m.slot = slot
	}
	m.mu.Unlock()
	return slot, nil
}

// acquire takes a session from the pool, opening one if none is idle. It
// waits for a free place while the pool is full, until ctx is done or, when
// ctx has no deadline, for at most Config.WaitTimeout (ErrUnavailable).
func (m *Module) acquire(ctx context.Context) (*session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: %w", err)
	}
	select {
	case m.sem <- struct{}{}:
	default:
		if err := m.wait(ctx); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	closed, gen := m.closed, m.gen
	m.mu.Unlock()
	if closed {
		<-m.sem
		return nil, errClosed
	}
	for {
		select {
		case s := <-m.idle:
			if s.gen != gen {
				continue // from before a recovery: dead, dropped without a close
			}
			return s, nil
		default:
			s, err := m.openSession()
			if err != nil {
				<-m.sem
				return nil, err
			}
			return s, nil
		}
	}
}

func (m *Module) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: waiting for a session: %w", err)
	}
	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(m.cfg.WaitTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hsm: waiting for a session: %w", ctx.Err())
	case <-timeout:
		return fmt.Errorf("hsm: no session free after %v: %w", m.cfg.WaitTimeout, ErrUnavailable)
	}
}

// release returns a healthy session to the pool and frees its place.
func (m *Module) release(s *session) {
	m.mu.Lock()
	switch {
	case s.gen != m.gen:
		// dead since a recovery: drop
	case m.closed:
		_ = m.p.CloseSession(s.h)
	default:
		m.idle <- s // never blocks: at most MaxSessions sessions exist
	}
	m.mu.Unlock()
	<-m.sem
}

// drop forgets a session without returning it to the pool, and without
// closing it, and frees its place. Sessions are closed only by Close: closing
// one also destroys the session-object copies it made, which other
// goroutines may be using at that moment, and SoftHSM 2.6.1 does not survive
// objects or sessions going away under a running call.
func (m *Module) drop(*session) { <-m.sem }

// do runs op on a pooled session. Stale object handles are re-found once.
// If the session lost its login, the token is logged in again and op
// retried once on it. If the token stops answering, it is looked up again
// by label and op retried once if it is found. If the session is dead, it
// is not returned to the pool, every session of the current generation is
// presumed dead (C_CloseAllSessions, token removal), the token is re-found
// by label, a new session is opened and logged in, and op is retried once.
// If that fails too the error wraps ErrUnavailable.
func (m *Module) do(ctx context.Context, op func(*session) error) error {
	s, err := m.acquire(ctx)
	if err != nil {
		return err
	}
	err = m.run(s, op)
	switch {
	case errors.Is(err, errTokenGone):
		// The session still works (dropping it would leak it), the token
		// does not: look for the token again, and retry once if it is back.
		m.release(s)
		m.mu.Lock()
		slot := m.slot
		m.mu.Unlock()
		if _, ferr := m.refindSlot(slot); ferr != nil {
			return ferr
		}
		if s, err = m.acquire(ctx); err != nil {
			return err
		}
	case err == nil || (!loggedOut(err) && !sessionDead(err)):
		if isRV(err, pkcs11.CKR_OPERATION_ACTIVE) {
			m.drop(s) // an operation left behind: not worth keeping
		} else {
			m.release(s)
		}
		return err
	case loggedOut(err):
		m.log.Warn("hsm session lost its login; logging in again", "error", err)
		if lerr := m.login(s.h); lerr != nil {
			m.release(s) // alive: it will try to log in again when next used
			return lerr
		}
		m.forgetHandles()
	default:
		// Dropped without a close, keeping its place in the pool for the retry.
		if err := m.newGeneration(s.gen, err); err != nil {
			<-m.sem
			return err
		}
		if s, err = m.openSession(); err != nil {
			<-m.sem
			return err
		}
	}
	err = m.run(s, op)
	switch {
	case errors.Is(err, errTokenGone):
		m.release(s)
		return unavailable("after recovery", err)
	case sessionDead(err):
		m.drop(s)
		return unavailable("after recovery", err)
	case loggedOut(err):
		m.release(s)
		return unavailable("after recovery", err)
	}
	m.release(s)
	return err
}

// run calls op, and once more after forgetting cached handles if a handle
// was stale.
func (m *Module) run(s *session, op func(*session) error) error {
	s.used = s.used[:0]
	err := op(s)
	if err != nil && staleHandle(err) {
		m.mu.Lock()
		for _, k := range s.used {
			delete(m.handles, k)
		}
		m.mu.Unlock()
		s.used = s.used[:0]
		err = op(s)
	}
	return err
}

// newGeneration marks every session of generation gen as dead (if nobody
// did it already, and then logs cause once): idle ones are dropped by acquire, busy ones by release.
// It then looks the token up again by label, since a token that comes back
// may come back in another slot.
func (m *Module) newGeneration(gen uint64, cause error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen {
		m.log.Warn("hsm sessions lost; reopening", "error", cause)
		m.gen++
		clear(m.handles)
	}
	slot, err := m.findSlot()
	if err != nil {
		return err
	}
	m.slot = slot
	return nil
}

func (m *Module) forgetHandles() {
	m.mu.Lock()
	clear(m.handles)
	m.mu.Unlock()
}

// forget drops the cached handles of one label.
func (m *Module) forget(label string) {
	m.mu.Lock()
	for k := range m.handles {
		if k.label == label {
			delete(m.handles, k)
		}
	}
	m.mu.Unlock()
}
