package hsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Module is an open PKCS#11 token with a logged-in, bounded session pool.
// It is safe for concurrent use.
type Module struct {
	p   PKCS11
	cfg Config
	log *slog.Logger
	met *callMetrics // measured over p (metrics.go)

	sem  chan struct{} // one token per session in use; capacity MaxSessions
	idle chan *session // idle sessions; capacity MaxSessions, so a put never blocks

	genMu sync.Mutex // serialises GenerateKey, so that "label taken" checks hold

	mu      sync.Mutex // guards the fields below
	slot    uint
	closed  bool
	handles map[handleKey]pkcs11.ObjectHandle // session-object copies, held by keeper
	keeper  *session                          // owns the copies; nil until one is needed
	retired []*session                        // keepers that failed, closed by maintain

	keepMu sync.Mutex // serialises the calls made on the keeper session

	sessMu  sync.Mutex // serialises C_OpenSession, C_CloseSession and C_CloseAllSessions; guards the fields below
	open    map[pkcs11.SessionHandle]*session
	orphans int // sessions of open whose close failed: they wait for a slot reset

	bo        backoff
	maint     atomic.Bool // orphans or retired keepers wait for maintain
	recovered atomic.Bool // a call worked after failures: maintain at once
	maintMu   sync.Mutex  // one maintain at a time; guards maintNext
	maintNext time.Time
	maintFail int
}

// session is one logged-in PKCS#11 session, held by one goroutine at a time.
type session struct {
	h      pkcs11.SessionHandle
	used   []handleKey // objects found during the current operation
	gone   atomic.Bool // closed (by us or by a slot reset) or its number reused: never use again
	orphan bool        // its close failed; guarded by Module.sessMu
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
	return open(ctx, cfg, nil)
}

// open is Open with the library seen through wrap (tests put a
// fault-injecting layer there); wrap nil is the library itself.
func open(ctx context.Context, cfg Config, wrap func(PKCS11) PKCS11) (*Module, error) {
	if cfg.Library == "" || cfg.TokenLabel == "" {
		return nil, errors.New("hsm: open: Library and TokenLabel are required")
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.ReconnectBackoff <= 0 {
		cfg.ReconnectBackoff = DefaultReconnectBackoff
	}
	if cfg.MaxReconnectBackoff <= 0 {
		cfg.MaxReconnectBackoff = DefaultMaxReconnectBackoff
	}
	cfg.MaxReconnectBackoff = max(cfg.MaxReconnectBackoff, cfg.ReconnectBackoff)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: open: %w", err)
	}
	lib, err := loadLibrary(cfg.Library)
	if err != nil {
		return nil, err
	}
	var p PKCS11 = lib
	if wrap != nil {
		p = wrap(p)
	}
	met := newCallMetrics()
	p = met.wrap(p)
	m := &Module{
		p:       p,
		met:     met,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "hsm", "token", cfg.TokenLabel),
		sem:     make(chan struct{}, cfg.MaxSessions),
		idle:    make(chan *session, cfg.MaxSessions),
		handles: make(map[handleKey]pkcs11.ObjectHandle),
		open:    make(map[pkcs11.SessionHandle]*session),
		bo:      backoff{base: cfg.ReconnectBackoff, max: cfg.MaxReconnectBackoff},
	}
	slot, err := m.findSlot()
	if err != nil {
		return nil, err
	}
	m.slot = slot
	s, err := m.openLoggedIn()
	if err != nil {
		return nil, fmt.Errorf("hsm: open token %q: %w", cfg.TokenLabel, err)
	}
	m.idle <- s
	return m, nil
}

// Close closes the pool's idle sessions, the session that holds the key
// copies, and (once more) any session whose close failed before; sessions in
// use are closed when they come back. Call it once the Module's users are
// done: closing the copies' session destroys the copies. Calls after Close
// fail with ErrUnavailable. Close is idempotent. The library itself is
// finalised only by Finalize at process exit.
func (m *Module) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	keepers := append(m.retired, m.keeper)
	m.keeper, m.retired = nil, nil
	clear(m.handles)
	m.mu.Unlock()
	for {
		select {
		case s := <-m.idle:
			m.discard(s)
			continue
		default:
		}
		break
	}
	for _, k := range keepers {
		if k != nil {
			m.discard(k)
		}
	}
	m.sessMu.Lock()
	for h, s := range m.open {
		if s.orphan && m.p.CloseSession(h) == nil {
			delete(m.open, h)
			m.orphans--
		}
	}
	m.sessMu.Unlock()
	return nil
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
