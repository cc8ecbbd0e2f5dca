package server

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/errs"
)

// Bounds against unauthenticated exhaustion (issue 13.4):
//
//   - connLimiter: open connections in total and per client address, over
//     every listener; a connection beyond either bound is closed as soon as it
//     is accepted and counted (hsmgate_server_connections_refused_total).
//   - limitListener: on the gRPC listener, a connection that has not started an
//     authenticated RPC within UnauthenticatedIdleTimeout of being accepted is
//     closed (hsmgate_server_connections_preauth_closed_total); the TLS
//     handshake and HTTP/2 preface are bounded by HandshakeTimeout.
//   - streams: concurrent gRPC streams over all connections (the tap handle);
//     MaxConcurrentStreams bounds them per connection.
//   - budget: request bytes being read or handled at once, over RPC messages
//     and HTTPS bodies (hsmgate_server_inflight_bytes). A unary RPC waits for
//     its share before its request is read (recvhold.go); a stream message or
//     an HTTPS body that does not fit waits up to InflightWait and is then
//     refused with ResourceExhausted.

// ErrBusy refuses a request that does not fit in the bytes-in-flight budget.
var ErrBusy = errs.New(errs.ResourceExhausted, "server: busy: too many request bytes in flight, retry later")

// limitMetrics are the collectors of the bounds above.
type limitMetrics struct {
	open            *prometheus.GaugeVec
	refused         *prometheus.CounterVec
	preauthClosed   *prometheus.CounterVec
	streamsRefused  prometheus.Counter
	inflight        prometheus.Gauge
	inflightRefused *prometheus.CounterVec
	readTimeouts    prometheus.Counter
	waiting         prometheus.Gauge
}

func newLimitMetrics(reg prometheus.Registerer) (*limitMetrics, error) {
	m := &limitMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hsmgate_server_connections", Help: "Open connections, by listener.",
		}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_server_connections_refused_total", Help: "Connections closed at accept, by listener and bound (total, per_ip).",
		}, []string{"listener", "reason"}),
		preauthClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_server_connections_preauth_closed_total", Help: "Connections closed for not starting an authenticated request in time.",
		}, []string{"listener"}),
		streamsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hsmgate_server_streams_refused_total", Help: "gRPC streams refused over the server-wide stream bound.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hsmgate_server_inflight_bytes", Help: "Request bytes being handled (gRPC messages and HTTPS bodies).",
		}),
		inflightRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_server_inflight_refused_total", Help: "Requests refused over the bytes-in-flight budget, by transport.",
		}, []string{"transport"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hsmgate_server_inflight_waiting", Help: "Unary RPCs waiting for room in the bytes-in-flight budget before their request is read.",
		}),
		readTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hsmgate_server_request_read_timeouts_total", Help: "Unary RPCs cancelled for not sending their request within the read timeout.",
		}),
	}
	for _, c := range []prometheus.Collector{m.open, m.refused, m.preauthClosed, m.streamsRefused, m.inflight, m.inflightRefused, m.readTimeouts, m.waiting} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// connLimiter counts open connections in total and per client address.
type connLimiter struct {
	maxTotal, maxPerIP int
	m                  *limitMetrics

	mu    sync.Mutex
	total int
	perIP map[string]int
}

func newConnLimiter(maxTotal, maxPerIP int, m *limitMetrics) *connLimiter {
	return &connLimiter{maxTotal: maxTotal, maxPerIP: maxPerIP, m: m, perIP: make(map[string]int)}
}

// acquire takes a slot for a connection from key; "" if admitted, else the
// bound that refused it.
func (l *connLimiter) acquire(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.maxTotal:
		return "total"
	case l.perIP[key] >= l.maxPerIP:
		return "per_ip"
	}
	l.total++
	l.perIP[key]++
	return ""
}

func (l *connLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[key]--; l.perIP[key] <= 0 {
		delete(l.perIP, key)
	}
}

// ipKey is the per-IP bound's key of a peer: its IPv4 address, or the /64 of
// its IPv6 address (one host usually holds a whole /64).
func ipKey(a net.Addr) string {
	var ip net.IP
	if ta, ok := a.(*net.TCPAddr); ok {
		ip = ta.IP
	} else if host, _, err := net.SplitHostPort(a.String()); err == nil {
		ip = net.ParseIP(host)
	}
	if ip == nil {
		return a.String()
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// limitListener admits connections through a connLimiter and, when preauth
// is set, closes those not marked authenticated in time.
type limitListener struct {
	net.Listener
	name    string
	lim     *connLimiter
	preauth time.Duration // 0: no pre-auth deadline

	mu    sync.Mutex
	conns map[string]*trackedConn // by remote address
}

func newLimitListener(ln net.Listener, name string, lim *connLimiter, preauth time.Duration) *limitListener {
	return &limitListener{Listener: ln, name: name, lim: lim, preauth: preauth, conns: make(map[string]*trackedConn)}
}

// Accept returns the next admitted connection; refused ones are closed here.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := ipKey(c.RemoteAddr())
		if reason := l.lim.acquire(key); reason != "" {
			_ = c.Close()
			l.lim.m.refused.WithLabelValues(l.name, reason).Inc()
			continue
		}
		tc := &trackedConn{Conn: c, l: l, key: key, remote: c.RemoteAddr().String()}
		l.lim.m.open.WithLabelValues(l.name).Inc()
		l.mu.Lock()
		l.conns[tc.remote] = tc
		if l.preauth > 0 {
			tc.timer = time.AfterFunc(l.preauth, tc.preauthExpired)
		}
		l.mu.Unlock()
		return tc, nil
	}
}

// markAuthenticated lifts the pre-auth deadline of the connection from remote.
func (l *limitListener) markAuthenticated(remote string) {
	l.mu.Lock()
	tc := l.conns[remote]
	l.mu.Unlock()
	if tc == nil || tc.authed.Swap(true) {
		return
	}
	if tc.timer != nil {
		tc.timer.Stop()
	}
}

type trackedConn struct {
	net.Conn
	l      *limitListener
	key    string
	remote string
	timer  *time.Timer // set under l.mu
	authed atomic.Bool
	once   sync.Once
}

func (c *trackedConn) preauthExpired() {
	if c.authed.Load() {
		return
	}
	c.l.lim.m.preauthClosed.WithLabelValues(c.l.name).Inc()
	_ = c.Close()
}

// Close closes the connection and gives back its slot (once).
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.remote] == c {
			delete(c.l.conns, c.remote)
		}
		t := c.timer
		c.l.mu.Unlock()
		if t != nil {
			t.Stop()
		}
		c.l.lim.release(c.key)
		c.l.lim.m.open.WithLabelValues(c.l.name).Dec()
	})
	return c.Conn.Close()
}

// publicMethod reports whether an RPC needs no identity (health and
// reflection, public in every auth table); starting one does not count as
// an authenticated request.
func publicMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// authenticated is called by the innermost interceptor, which a request
// reaches only once the auth interceptors admitted it: the connection it came
// on is then past its pre-auth deadline.
func (s *Server) authenticated(ctx context.Context, fullMethod string) {
	if s.grpcLn == nil {
		return
	}
	if fn := s.cfg.Authenticated; fn != nil {
		if !fn(ctx) {
			return
		}
	} else if publicMethod(fullMethod) {
		return
	}
	if r, ok := auth.Remote(ctx); ok { // made once per connection (TagConn)
		s.grpcLn.markAuthenticated(r)
	} else if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		s.grpcLn.markAuthenticated(p.Addr.String())
	}
}

// budget bounds the request bytes being handled at once.
type budget struct {
	sem     *semaphore.Weighted
	max     int64
	wait    time.Duration // < 0: refuse at once
	m       *limitMetrics
	cur     atomic.Int64
	peak    atomic.Int64 // high-water mark of cur (tests)
	waiters atomic.Int64 // unary RPCs waiting in reserve
}

func newBudget(max int64, wait time.Duration, m *limitMetrics) *budget {
	return &budget{sem: semaphore.NewWeighted(max), max: max, wait: wait, m: m}
}

// acquire takes n bytes of the budget, waiting up to b.wait, and returns
// their release; ErrBusy (or ctx's error) if they could not be had.
func (b *budget) acquire(ctx context.Context, n int64, transport string) (func(), error) {
	if n <= 0 {
		return func() {}, nil
	}
	n = min(n, b.max) // one message never needs more than the whole budget
	if !b.sem.TryAcquire(n) {
		if b.wait < 0 {
			b.m.inflightRefused.WithLabelValues(transport).Inc()
			return nil, ErrBusy
		}
		wctx, cancel := context.WithTimeout(ctx, b.wait)
		err := b.sem.Acquire(wctx, n)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			b.m.inflightRefused.WithLabelValues(transport).Inc()
			return nil, ErrBusy
		}
	}
	b.taken(n)
	var once sync.Once
	return func() { once.Do(func() { b.give(n) }) }, nil
}

// taken accounts n bytes just acquired from b.sem.
func (b *budget) taken(n int64) {
	cur := b.cur.Add(n)
	for p := b.peak.Load(); cur > p && !b.peak.CompareAndSwap(p, cur); p = b.peak.Load() {
	}
	b.m.inflight.Add(float64(n))
}

// give returns n bytes to the budget.
func (b *budget) give(n int64) {
	b.cur.Add(-n)
	b.m.inflight.Sub(float64(n))
	b.sem.Release(n)
}

// msgSize is the encoded size of a request message (0 if not protobuf).
func msgSize(m any) int64 {
	if pm, ok := m.(proto.Message); ok {
		return int64(proto.Size(pm))
	}
	return 0
}

// fdReserve is the file descriptors kept for the server's own files (HSM
// library, store, audit log, TLS files) beyond max_connections.
const fdReserve = 128
