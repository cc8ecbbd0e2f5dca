// Package clocktest is the one settable clock of the tests: a clock.Clock
// that moves only when told to. Engines take its Now method (Config.Now) or
// the Fake itself (Config.Clock).
package clocktest

import (
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/internal/clock"
)

// Fake is a clock that stands still until Advance or Set; safe for
// concurrent use.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

var _ clock.Clock = (*Fake)(nil)

// New returns a Fake reading start.
func New(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock by d (backwards when d is negative).
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// Set moves the clock to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}
