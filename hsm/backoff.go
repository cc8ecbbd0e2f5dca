package hsm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// backoff spaces out reconnects (opening and logging in a session, resetting
// the slot) while the token keeps failing: exponential with full jitter,
// capped. A healthy Module (no failure since the last success) reconnects at
// once, so that a single fault costs one immediate retry; each failed
// reconnect doubles the wait, and one success clears it. While a wait runs,
// the first caller past it claims the next attempt and pushes the deadline
// on, so that callers arriving together make one attempt, not one each.
type backoff struct {
	base, max time.Duration

	bad atomic.Bool // fails > 0, read without the lock on the hot path

	mu    sync.Mutex
	fails int
	next  time.Time
}

// delay is the wait after n consecutive failures: a random duration in
// [d/2, d] where d = base * 2^(n-1), at most max.
func (b *backoff) delay(n int) time.Duration {
	d := b.max
	if n < 32 {
		if e := b.base << (n - 1); e > 0 && e < b.max {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
}

// fail records a failed reconnect (or a retry that failed again).
func (b *backoff) fail() {
	b.mu.Lock()
	b.fails++
	b.next = time.Now().Add(b.delay(b.fails))
	b.bad.Store(true)
	b.mu.Unlock()
}

// ok records a success: the next fault is retried at once. It reports
// whether this success ended a run of failures.
func (b *backoff) ok() (recovered bool) {
	if !b.bad.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	recovered = b.fails > 0
	b.fails, b.next = 0, time.Time{}
	b.bad.Store(false)
	return recovered
}

// failing reports whether the last reconnect failed.
func (b *backoff) failing() bool { return b.bad.Load() }

// wait returns when a reconnect may be attempted, having claimed it. It
// honours ctx, and answers ErrUnavailable at once when ctx ends before the
// attempt would be due (waiting would be in vain).
func (b *backoff) wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		if b.fails == 0 {
			b.mu.Unlock()
			return nil
		}
		now := time.Now()
		if !now.Before(b.next) {
			b.next = now.Add(b.delay(b.fails)) // claimed: others wait for this attempt
			b.mu.Unlock()
			return nil
		}
		d := b.next.Sub(now)
		b.mu.Unlock()
		if dl, ok := ctx.Deadline(); ok && dl.Before(now.Add(d)) {
			return fmt.Errorf("hsm: reconnect backing off for %v: %w", d.Round(time.Millisecond), ErrUnavailable)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("hsm: waiting to reconnect: %w: %w", ErrUnavailable, ctx.Err())
		case <-t.C:
		}
	}
}
