// Package clock is the time source the engines take by injection (Config.Now
// or Config.Clock), so that certificate, expiry and rotation tests run on a
// fake clock (clock/clocktest) instead of waiting.
package clock

import "time"

// Clock tells the time.
type Clock interface {
	Now() time.Time
}

// System is the real clock (time.Now).
type System struct{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

var _ Clock = System{}
