package leader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// DefaultTTL is the lease TTL when a config leaves it zero: a leader that
// dies is replaced within about this long.
const DefaultTTL = 10 * time.Second

// MinTTL is the shortest TTL accepted (etcd leases count whole seconds).
const MinTTL = time.Second

// ErrClosed: the Elector was closed.
var ErrClosed = errs.New(errs.Unavailable, "leader: closed")

// Elector decides which replica leads. Its methods are safe for concurrent use.
type Elector interface {
	// Campaign blocks until this replica leads and returns its Term; it
	// returns ctx.Err() when ctx is done first, or ErrClosed.
	// Unreachable stores are retried inside, not returned.
	Campaign(ctx context.Context) (Term, error)
	// Live returns the IDs of the replicas whose lease is alive, sorted;
	// an error wrapping keystore.ErrUnavailable when the store does not answer.
	Live(ctx context.Context) ([]string, error)
	// ReplicaID is this replica's ID.
	ReplicaID() string
	// TTL is the lease TTL: how long a dead leader may keep the lead.
	TTL() time.Duration
	// Close gives up the lease (the next candidate leads at once) and
	// stops; later Campaigns return ErrClosed. A second Close returns nil.
	Close() error
}

// Term is one period of leadership.
type Term interface {
	// Done is closed when the lead is lost: the lease expired or was
	// taken, or the store could not be reached to renew it in time.
	Done() <-chan struct{}
	// Resign gives up the lead (the next candidate leads at once).
	Resign(ctx context.Context) error
}

// DefaultReplicaID is "<hostname>-<pid>": unique per process on a host.
func DefaultReplicaID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "hsmgate"
	}
	return h + "-" + strconv.Itoa(os.Getpid())
}

// CheckReplicaID refuses IDs that would not make a single store key segment.
func CheckReplicaID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("leader: replica id %q: want 1 to 128 characters", id)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("leader: replica id %q: only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

func checkTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return DefaultTTL, nil
	case ttl < MinTTL:
		return 0, fmt.Errorf("leader: TTL %s below %s", ttl, MinTTL)
	}
	return ttl, nil
}

// sleep waits d or until ctx is done (then ctx.Err()).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// errorsIsCtx reports whether err is ctx's own error.
func errorsIsCtx(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}
