package auth

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
)

// refusals counts the refusals that anyone can cause in bulk (no valid
// credential; over a rate limit) and samples their audit lines: at most a
// given number per second of each kind, the others counted and reported as
// extra.suppressed in the next line written. So a flood of refused requests
// costs a bounded number of audit bytes per second (and cannot fill the disk
// and stop the service, the audit log being fail-closed), yet every refusal
// is counted in hsmgate_auth_refusals_total and the audit log says how many
// were not written. Other refusals (permission denied, bad resource) are
// written one by one: they need a valid identity, which rate limits bound.
type refusals struct {
	total      *prometheus.CounterVec // by reason
	suppressed *prometheus.CounterVec // audit lines not written, by reason
	samplers   map[codes.Code]*sampler
}

// refusalReasons names the sampled codes in metrics.
var refusalReasons = map[codes.Code]string{
	codes.Unauthenticated:   "unauthenticated",
	codes.ResourceExhausted: "rate_limited",
}

func newRefusals(perSecond int) *refusals {
	r := &refusals{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_auth_refusals_total",
			Help: "Requests refused before authorisation: unauthenticated, or over a rate limit.",
		}, []string{"reason"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_auth_refusal_audit_suppressed_total",
			Help: "Refusals whose audit line was not written (sampled); each written line carries the count since the previous one.",
		}, []string{"reason"}),
		samplers: map[codes.Code]*sampler{},
	}
	for code, reason := range refusalReasons {
		r.samplers[code] = &sampler{lim: rate.NewLimiter(rate.Limit(perSecond), perSecond)}
		r.total.WithLabelValues(reason)
		r.suppressed.WithLabelValues(reason)
	}
	return r
}

// sample counts a refusal of code and says whether its audit line is
// written, with the extra fields it carries. Codes that are not sampled are
// always written.
func (r *refusals) sample(code codes.Code, now time.Time) (extra map[string]string, write bool) {
	s, ok := r.samplers[code]
	if !ok {
		return nil, true
	}
	reason := refusalReasons[code]
	r.total.WithLabelValues(reason).Inc()
	n, write := s.take(now)
	if !write {
		r.suppressed.WithLabelValues(reason).Inc()
		return nil, false
	}
	if n > 0 {
		extra = map[string]string{"sampled": reason, "suppressed": strconv.FormatUint(n, 10)}
	}
	return extra, true
}

// sampler is a token bucket of audit lines with a count of the refusals
// it turned away since the last line it let through.
type sampler struct {
	mu         sync.Mutex
	lim        *rate.Limiter
	suppressed uint64
}

// take returns whether a line may be written now and, if so, how many were
// suppressed before it.
func (s *sampler) take(now time.Time) (suppressed uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lim.AllowN(now, 1) {
		s.suppressed++
		return 0, false
	}
	n := s.suppressed
	s.suppressed = 0
	return n, true
}

// Describe and Collect make the interceptor a prometheus.Collector of its
// refusal counters: register it with the server's registry.
func (i *Interceptor) Describe(ch chan<- *prometheus.Desc) {
	i.ref.total.Describe(ch)
	i.ref.suppressed.Describe(ch)
	i.degraded.Describe(ch)
}

// Collect implements prometheus.Collector.
func (i *Interceptor) Collect(ch chan<- prometheus.Metric) {
	i.ref.total.Collect(ch)
	i.ref.suppressed.Collect(ch)
	i.degraded.Collect(ch)
}

var _ prometheus.Collector = (*Interceptor)(nil)
