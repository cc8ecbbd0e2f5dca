package auth

import (
	"container/list"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit is a token bucket: Rate requests per second, bursts of Burst.
// A zero Rate means no limit.
type Limit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

func (l Limit) unlimited() bool { return l.Rate <= 0 }

func (l Limit) burst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	if b := int(l.Rate); b > 1 {
		return b
	}
	return 1
}

// ResourceLimit limits each resource matching a glob, one bucket per resource.
type ResourceLimit struct {
	Match string `yaml:"match"`
	Limit `yaml:",inline"`
}

// RateLimitConfig is the rate-limit section of the server config.
type RateLimitConfig struct {
	// Identity is the default per-identity limit.
	Identity Limit `yaml:"identity"`
	// Policies override the per-identity limit for identities holding the
	// policy; with several, the highest rate wins.
	Policies map[string]Limit `yaml:"policies"`
	// Resources limit each matching resource (e.g. transit/keys/payments-*);
	// the first matching entry applies.
	Resources []ResourceLimit `yaml:"resources"`
	// Anonymous limits the requests without credentials that Anonymous
	// rules admit (hsmgate status), one bucket per client address (IPv6: per
	// /64); zero: DefaultAnonymousLimit. It cannot be turned off.
	Anonymous Limit `yaml:"anonymous"`
	// MaxBuckets bounds the number of buckets kept (default 100000); the least
	// recently used bucket is dropped first.
	MaxBuckets int `yaml:"max_buckets"`
}

// RateLimiter holds the token buckets.
type RateLimiter struct {
	cfg RateLimitConfig
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*list.Element
	lru     *list.List
}

type bucket struct {
	key string
	lim *rate.Limiter
	cfg Limit
}

// NewRateLimiter returns a limiter for cfg.
func NewRateLimiter(cfg RateLimitConfig) *RateLimiter {
	if cfg.MaxBuckets <= 0 {
		cfg.MaxBuckets = 100000
	}
	return &RateLimiter{cfg: cfg, now: time.Now, buckets: map[string]*list.Element{}, lru: list.New()}
}

// Allow takes one token from the identity's bucket and from the resource's
// bucket, or returns ErrRateLimited naming which limit was hit.
func (r *RateLimiter) Allow(id *Identity, resource string) error {
	if r == nil {
		return nil
	}
	if l := r.identityLimit(id); !l.unlimited() && id != nil {
		if !r.take(id.RateKey(), l) {
			return fmt.Errorf("%w: identity %.64q", ErrRateLimited, id.Name)
		}
	}
	if resource != "" {
		for _, rl := range r.cfg.Resources {
			if Match(rl.Match, resource) {
				if !rl.unlimited() && !r.take("res:"+resource, rl.Limit) {
					return fmt.Errorf("%w: resource %.160q", ErrRateLimited, resource)
				}
				break
			}
		}
	}
	return nil
}

// DefaultAnonymousLimit is the default RateLimitConfig.Anonymous.
var DefaultAnonymousLimit = Limit{Rate: 5, Burst: 20}

// AllowAnonymous takes one token from the bucket of the client address
// remote ("host:port"; unparsable addresses share one bucket), or returns
// ErrRateLimited.
func (r *RateLimiter) AllowAnonymous(remote string) error {
	if r == nil {
		return nil
	}
	l := r.cfg.Anonymous
	if l.unlimited() {
		l = DefaultAnonymousLimit
	}
	if !r.take("anon:"+addrKey(remote), l) {
		return fmt.Errorf("%w: requests without credentials from this address", ErrRateLimited)
	}
	return nil
}

// addrKey is the bucket of a client address: the IP, or its /64 for IPv6.
func addrKey(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		a, err := netip.ParseAddr(remote)
		if err != nil {
			return "?"
		}
		ap = netip.AddrPortFrom(a, 0)
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func (r *RateLimiter) identityLimit(id *Identity) Limit {
	l := r.cfg.Identity
	found := false
	if id != nil {
		for _, p := range id.Policies {
			if o, ok := r.cfg.Policies[p]; ok && (!found || o.unlimited() || (!l.unlimited() && o.Rate > l.Rate)) {
				l, found = o, true
			}
		}
	}
	return l
}

func (r *RateLimiter) take(key string, l Limit) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b *bucket
	if e, ok := r.buckets[key]; ok {
		b = e.Value.(*bucket)
		r.lru.MoveToFront(e)
		if b.cfg != l { // the limit changed (another policy set): start afresh
			b.cfg, b.lim = l, rate.NewLimiter(rate.Limit(l.Rate), l.burst())
		}
	} else {
		b = &bucket{key: key, cfg: l, lim: rate.NewLimiter(rate.Limit(l.Rate), l.burst())}
		r.buckets[key] = r.lru.PushFront(b)
		for r.lru.Len() > r.cfg.MaxBuckets {
			old := r.lru.Back()
			r.lru.Remove(old)
			delete(r.buckets, old.Value.(*bucket).key)
		}
	}
	return b.lim.AllowN(r.now(), 1)
}
