package hsm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/miekg/pkcs11"
)

const sessionFlags = pkcs11.CKF_SERIAL_SESSION | pkcs11.CKF_RW_SESSION

// maxExclusiveWait bounds how long maintain waits for every session of the
// pool to come back before it gives up (and tries again later).
const maxExclusiveWait = time.Second

// do runs op on a pooled session, and recovers from faults as the package
// doc says (section "Sessions and recovery"): stale handles are re-found,
// a lost login is logged in again, a token that stops answering is looked
// up again, and a dead session is closed and op retried once on a new one
// (opened under the reconnect backoff). If that fails too, or ctx ends first,
// the error wraps ErrUnavailable.
//
// When ctx has a deadline the work runs on a goroutine of its own, so that a
// call that hangs in the library does not hold the caller past it: the
// caller gets ErrUnavailable (and ctx's error) when ctx ends, and the
// goroutine gives the session back to the pool when the library returns.
// The session keeps its place in the pool until then, so a hanging HSM can
// take at most MaxSessions calls with it. Without a deadline the work runs
// on the caller's goroutine (the hand-off costs a few microseconds per call,
// as much as a cheap PKCS#11 call), and a call that hangs holds its caller,
// cancellation or not, until the library returns.
func (m *Module) do(ctx context.Context, op func(*session) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: %w", err)
	}
	if err := m.take(ctx); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		err := m.work(ctx, op)
		m.after()
		return err
	}
	done := make(chan error, 1)
	go func() {
		done <- m.work(ctx, op)
		m.after()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done: // finished at the same moment: a result is better
			return err
		default:
		}
		return fmt.Errorf("hsm: gave up waiting for the HSM: %w: %w", ErrUnavailable, ctx.Err())
	}
}

// work is do's body, run while holding a place in the pool.
func (m *Module) work(ctx context.Context, op func(*session) error) error {
	s, err := m.session(ctx)
	if err != nil {
		return err
	}
	err = m.run(s, op)
	switch {
	case err == nil:
		m.succeeded()
		m.release(s)
		return nil
	case errors.Is(err, errTokenGone):
		// The session still works, the token does not: look for the token
		// again, and retry once if it is back.
		m.release(s)
		if _, ferr := m.refindSlot(m.currentSlot()); ferr != nil {
			return ferr
		}
		if s, err = m.session(ctx); err != nil {
			return err
		}
	case loggedOut(err):
		m.log.Warn("hsm session lost its login; logging in again", "error", err)
		if lerr := m.login(s.h); lerr != nil {
			m.release(s) // alive: it will try to log in again when next used
			return lerr
		}
		m.forgetHandles() // a logout invalidates handles of private session objects
	case sessionDead(err):
		m.log.Warn("hsm session failed; closing it and reconnecting", "error", err)
		m.discard(s)
		m.checkKeeper()
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("hsm: %w: %w: %w", ErrUnavailable, cerr, err)
		}
		if s, err = m.openSession(ctx); err != nil {
			return err
		}
	default:
		m.settle(s, err)
		return err
	}
	err = m.run(s, op)
	switch {
	case err == nil:
		m.succeeded()
	case errors.Is(err, errTokenGone):
		m.release(s)
		return unavailable("after recovery", err)
	case sessionDead(err):
		m.discard(s)
		m.bo.fail()
		return unavailable("after recovery", err)
	case loggedOut(err):
		m.release(s)
		return unavailable("after recovery", err)
	}
	m.settle(s, err)
	return err
}

// settle puts a session back after an operation that did not fail for want
// of a session; one with an operation left active is closed instead.
func (m *Module) settle(s *session, err error) {
	if isRV(err, pkcs11.CKR_OPERATION_ACTIVE) {
		m.discard(s)
		return
	}
	m.release(s)
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

// take reserves a place in the pool. It waits while the pool is full, until
// ctx is done or, when ctx has no deadline, for at most Config.WaitTimeout
// (ErrUnavailable).
func (m *Module) take(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
	default:
		if err := m.wait(ctx); err != nil {
			return err
		}
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		<-m.sem
		return errClosed
	}
	return nil
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

// succeeded records a call that worked: reconnects need no more backoff,
// and pending maintenance is due at once if this ends a run of failures
// (the device is back).
func (m *Module) succeeded() {
	if m.bo.ok() {
		m.recovered.Store(true)
	}
}

// after frees a place in the pool, having run pending maintenance first.
func (m *Module) after() {
	if m.maint.Load() {
		m.maintain(m.recovered.Swap(false))
	}
	<-m.sem
}

// session gives the caller (who holds a place) an idle session, or opens one.
func (m *Module) session(ctx context.Context) (*session, error) {
	for {
		select {
		case s := <-m.idle:
			if s.gone.Load() {
				continue // closed by a slot reset, or its number reused
			}
			return s, nil
		default:
			return m.openSession(ctx)
		}
	}
}

// release returns a healthy session to the pool.
func (m *Module) release(s *session) {
	if s.gone.Load() {
		return
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		m.discard(s)
		return
	}
	select {
	case m.idle <- s:
	default: // cannot happen (at most MaxSessions pool sessions exist), but never block
		m.discard(s)
	}
}

// openSession opens a logged-in session to replace one that failed, or to
// grow the pool: after the reconnect backoff, and not while MaxSessions
// sessions that could not be closed wait for a slot reset. Errors wrap
// ErrUnavailable.
func (m *Module) openSession(ctx context.Context) (*session, error) {
	if err := m.bo.wait(ctx); err != nil {
		return nil, err
	}
	if n := m.orphanCount(); n >= m.cfg.MaxSessions {
		// As many sessions as the pool holds could not be closed: reset
		// the slot before opening more (an attempt, under the backoff).
		m.maintain(true)
		if n = m.orphanCount(); n >= m.cfg.MaxSessions {
			m.bo.fail()
			return nil, fmt.Errorf("hsm: %d sessions could not be closed and wait for a slot reset: %w", n, ErrUnavailable)
		}
	}
	s, err := m.openLoggedIn()
	if err != nil {
		m.bo.fail()
		return nil, err
	}
	return s, nil
}

func (m *Module) orphanCount() int {
	m.sessMu.Lock()
	defer m.sessMu.Unlock()
	return m.orphans
}

// openLoggedIn opens and logs in a session on the current slot. If the
// slot is gone it looks the token up by label once. Errors wrap ErrUnavailable.
func (m *Module) openLoggedIn() (*session, error) {
	slot := m.currentSlot()
	s, err := m.openRaw(slot)
	if err != nil && sessionDead(err) {
		if slot, err = m.refindSlot(slot); err != nil {
			return nil, err
		}
		s, err = m.openRaw(slot)
	}
	if err != nil {
		return nil, unavailable("open session", err)
	}
	if err := m.login(s.h); err != nil {
		m.discard(s)
		return nil, err
	}
	return s, nil
}

// openRaw opens a session and registers it. A handle number that is
// registered already belongs to a session that the library has closed
// behind our back (a token removed, C_CloseAllSessions from outside): that
// one is marked gone, so that nobody uses or closes the number for it.
func (m *Module) openRaw(slot uint) (*session, error) {
	m.sessMu.Lock()
	defer m.sessMu.Unlock()
	h, err := m.p.OpenSession(slot, sessionFlags)
	if err != nil {
		return nil, err
	}
	if old := m.open[h]; old != nil {
		old.gone.Store(true)
		if old.orphan {
			m.orphans--
		}
	}
	s := &session{h: h}
	m.open[h] = s
	return s, nil
}

// discard closes a session that its holder will not use again. If the close
// fails, the session stays registered as an orphan and the slot is reset
// (C_CloseAllSessions) by maintain. Closing is safe here: the holder is the
// only goroutine that uses the session, and pool sessions own no objects
// that others use (key copies live in the keeper session).
func (m *Module) discard(s *session) (closed bool) {
	s.gone.Store(true)
	m.sessMu.Lock()
	defer m.sessMu.Unlock()
	if m.open[s.h] != s {
		return true // closed by a slot reset, or its number given to a newer session
	}
	err := m.p.CloseSession(s.h)
	if err == nil || isRV(err, pkcs11.CKR_SESSION_HANDLE_INVALID) || isRV(err, pkcs11.CKR_SESSION_CLOSED) {
		delete(m.open, s.h)
		return true
	}
	if !s.orphan {
		s.orphan = true
		m.orphans++
	}
	m.maint.Store(true)
	m.log.Warn("hsm session could not be closed; the slot will be reset", "error", err, "unclosed", m.orphans)
	return false
}

// login logs the token in through h; "already logged in" is success.
func (m *Module) login(h pkcs11.SessionHandle) error {
	err := m.p.Login(h, pkcs11.CKU_USER, m.cfg.PIN)
	if err != nil && !isRV(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		return unavailable("log in", err)
	}
	return nil
}

func (m *Module) currentSlot() uint {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slot
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

// maintain closes retired keeper sessions and, if sessions could not be
// closed, resets the slot with C_CloseAllSessions. Both need every session
// of the pool idle (a keeper's key copies may be in use by any call, and a
// reset closes sessions in use), so maintain first takes every place of the
// pool, waiting at most maxExclusiveWait (a call hanging in the library keeps
// it from ever getting them). Failed attempts are spaced out like
// reconnects, unless now is set (the caller waited for the reconnect
// backoff already). The caller holds one place.
func (m *Module) maintain(now bool) {
	if !m.maintMu.TryLock() {
		if now {
			m.recovered.Store(true) // for the next caller, should this attempt fail
		}
		return // another goroutine is at it
	}
	defer m.maintMu.Unlock()
	m.maintainLocked(now)
}

// maintainLocked is maintain, with maintMu held.
func (m *Module) maintainLocked(now bool) {
	if !m.maint.Load() || (!now && time.Now().Before(m.maintNext)) {
		return
	}
	m.maint.Store(false)
	if ok := m.exclusive(1, m.cleanUp); ok {
		m.maintFail = 0
		return
	}
	m.maint.Store(true)
	m.maintFail++
	m.maintNext = time.Now().Add(m.bo.delay(m.maintFail))
}

// exclusive runs f while holding every place of the pool (held of them
// already), so that no session of this Module is in use. It reports whether f
// ran and succeeded.
func (m *Module) exclusive(held int, f func() bool) bool {
	t := time.NewTimer(min(maxExclusiveWait, m.cfg.WaitTimeout))
	defer t.Stop()
	n := 0
	defer func() {
		for range n {
			<-m.sem
		}
	}()
	for n < cap(m.sem)-held {
		select {
		case m.sem <- struct{}{}:
			n++
		case <-t.C:
			return false
		}
	}
	return f()
}

// cleanUp, run by maintain with the pool to itself, closes retired keepers
// and resets the slot if any session could not be closed. It reports
// whether nothing is left to do.
func (m *Module) cleanUp() bool {
	m.mu.Lock()
	retired := m.retired
	m.retired = nil
	m.mu.Unlock()
	for _, k := range retired {
		m.discard(k)
	}
	m.sessMu.Lock()
	defer m.sessMu.Unlock()
	if m.orphans == 0 {
		return true
	}
	n := m.orphans
	if err := m.p.CloseAllSessions(m.currentSlot()); err != nil {
		m.log.Warn("hsm slot reset failed; trying again later", "error", err, "unclosed", n)
		return false
	}
	for h, s := range m.open {
		s.gone.Store(true)
		delete(m.open, h)
	}
	m.orphans = 0
	m.mu.Lock()
	m.keeper = nil
	clear(m.handles)
	m.mu.Unlock()
	for {
		select {
		case <-m.idle: // closed by the reset
			continue
		default:
		}
		break
	}
	m.log.Warn("hsm slot reset (C_CloseAllSessions): sessions that could not be closed are closed", "unclosed", n)
	return true
}

// cached returns a session-object copy of the token object h, made in the
// keeper session and remembered under key; h itself when no copy can be made
// (the copy is a speed-up only). The keeper is a session outside the pool
// that only makes copies: the copies are used from every pool session, and
// a session's objects die with it, so pool sessions can be closed at any
// time while the keeper is closed only by maintain, with the pool idle.
func (m *Module) cached(key handleKey, h pkcs11.ObjectHandle) pkcs11.ObjectHandle {
	m.keepMu.Lock()
	defer m.keepMu.Unlock()
	m.mu.Lock()
	if prev, ok := m.handles[key]; ok {
		m.mu.Unlock()
		return prev
	}
	k, retiring, closed := m.keeper, len(m.retired) > 0, m.closed
	m.mu.Unlock()
	if closed {
		return h
	}
	if k == nil {
		if retiring || m.bo.failing() {
			return h // not now: one keeper waits to be closed, or reconnects fail
		}
		var err error
		if k, err = m.openLoggedIn(); err != nil {
			return h
		}
		m.mu.Lock()
		m.keeper = k
		m.mu.Unlock()
	}
	cp, err := m.p.CopyObject(k.h, h, []*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, false)})
	if err != nil {
		if sessionDead(err) {
			m.retireKeeper(k, err)
		}
		return h
	}
	m.mu.Lock()
	if m.keeper == k && !m.closed {
		m.handles[key] = cp
	}
	m.mu.Unlock()
	return cp
}

// checkKeeper retires the keeper if it does not answer: after a fault that
// may have taken every session, so that no handle of its (possibly reused
// by the library) is used again.
func (m *Module) checkKeeper() {
	m.keepMu.Lock()
	defer m.keepMu.Unlock()
	m.mu.Lock()
	k := m.keeper
	m.mu.Unlock()
	if k == nil {
		return
	}
	if _, err := m.p.GetSessionInfo(k.h); err != nil {
		m.retireKeeper(k, err)
	}
}

// retireKeeper forgets the keeper and its copies; maintain closes it.
func (m *Module) retireKeeper(k *session, cause error) {
	m.mu.Lock()
	if m.keeper == k {
		m.keeper = nil
		m.retired = append(m.retired, k)
		clear(m.handles)
		m.log.Warn("hsm key-copy session failed; it will be closed", "error", cause)
	}
	m.mu.Unlock()
	m.maint.Store(true)
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
