package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// h2Preface is what an HTTP/2 client sends first: the preface and an empty
// SETTINGS frame. The attack stops there.
var h2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// idleConn opens a TLS connection from the loopback address src, sends the
// HTTP/2 preface and SETTINGS, and goes silent; an error means refused.
func idleConn(h *harness, src string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := tls.DialWithDialer(d, "tcp", h.srv.GRPCAddr(), &tls.Config{
		RootCAs: h.pki.pool, ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(h2Preface); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dialFrom is a gRPC client whose connections come from the loopback address src.
func (h *harness) dialFrom(t *testing.T, src string) *grpc.ClientConn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tc := &tls.Config{RootCAs: h.pki.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	cc, err := grpc.NewClient(h.srv.GRPCAddr(),
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func okStatus(context.Context) (*hsmgatev1.GetStatusResponse, error) {
	return &hsmgatev1.GetStatusResponse{}, nil
}

// waitClosed reads c until the server closes it (bounded by a generous
// deadline, which only a server that never closes reaches).
func waitClosed(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("still open after a minute")
	}
	return nil
}

// floodIdle opens n idle connections from src with 8 workers; it returns
// those that stayed open and the number refused.
func floodIdle(t *testing.T, h *harness, src string, n int) ([]*tls.Conn, int) {
	t.Helper()
	var (
		mu      sync.Mutex
		open    []*tls.Conn
		refused atomic.Int64
		wg      sync.WaitGroup
		next    atomic.Int64
	)
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				c, err := idleConn(h, src)
				if err != nil {
					refused.Add(1)
					continue
				}
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	return open, int(refused.Load())
}

// TestConnectionFlood: 300 idle HTTP/2 connections from one address. Beyond
// the per-IP bound they are closed at accept and counted; a client from
// another address is still served; slots come back when connections close.
func TestConnectionFlood(t *testing.T) {
	const perIP, flood = 100, 300
	h := start(t, newPKI(t), func(c *Config) {
		c.MaxConnections = 1000
		c.MaxConnectionsPerIP = perIP
		c.UnauthenticatedIdleTimeout = time.Hour
		c.MaxConnectionIdle = time.Hour
	}, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: okStatus})
	})
	open, refused := floodIdle(t, h, "127.0.0.1", flood)
	if len(open) > perIP {
		t.Errorf("open idle connections from one address: got %d, want at most %d", len(open), perIP)
	}
	if refused < flood-perIP {
		t.Errorf("refused connections: got %d, want at least %d", refused, flood-perIP)
	}
	// The metric counts what the limit refused: every connection beyond the
	// bound, and no more than the client saw fail (under load a handshake
	// can also fail for its own reasons).
	if got := int(metricValue(h.srv.lm.refused.WithLabelValues("grpc", "per_ip"))); got < flood-perIP || got > refused {
		t.Errorf("refused metric: got %d, want %d..%d", got, flood-perIP, refused)
	}
	t.Run("fresh client from another address is served", func(t *testing.T) {
		if _, err := callStatus(h.dialFrom(t, "127.0.0.2")); err != nil {
			t.Errorf("got %v, want served", err)
		}
	})
	t.Run("fresh client from the flooding address is refused", func(t *testing.T) {
		if _, err := callStatus(h.dialFrom(t, "127.0.0.1")); status.Code(err) != codes.Unavailable {
			t.Errorf("got %v, want Unavailable (connection closed)", err)
		}
	})
	t.Run("slots are given back", func(t *testing.T) {
		for _, c := range open[:10] {
			c.Close()
		}
		// The server sees the closes asynchronously: poll until a new
		// connection is admitted, then open the rest of the ten.
		for admitted, tries := 0, 0; admitted < 10; tries++ {
			if tries == 1000 {
				t.Fatalf("%d connections admitted after ten closed, want 10", admitted)
			}
			c, err := idleConn(h, "127.0.0.1")
			if err != nil {
				continue
			}
			c.Close()
			admitted++
		}
	})
}

// TestPreauthIdle: idle connections that never authenticate are closed after
// the pre-auth timeout, while a connection that made an authenticated RPC
// stays open past it.
func TestPreauthIdle(t *testing.T) {
	h := start(t, newPKI(t), func(c *Config) {
		c.UnauthenticatedIdleTimeout = time.Second
		c.MaxConnectionIdle = time.Hour
	}, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: okStatus})
	})
	// Before the idle ones: its connection must outlive its pre-auth deadline.
	authed := h.dialFrom(t, "127.0.0.3")
	// Under load its first connection may meet its deadline before the
	// call: the client then reconnects, and the call is retried.
	for i := 0; ; i++ {
		_, err := callStatus(authed)
		if err == nil {
			break
		}
		if i == 20 {
			t.Fatalf("authenticated client: %v", err)
		}
	}
	open, refused := floodIdle(t, h, "127.0.0.1", 50)
	if refused != 0 && len(open) == 0 {
		t.Fatalf("no idle connection opened (%d refused)", refused)
	}
	for i, c := range open {
		if err := waitClosed(c); err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
	}
	if got := metricValue(h.srv.lm.preauthClosed.WithLabelValues("grpc")); int(got) < len(open) {
		t.Errorf("pre-auth closures: got %v, want at least %d", got, len(open))
	}
	// Every idle connection above was accepted after the authenticated one
	// and closed at its own deadline: that one is past its deadline too.
	if got := h.srv.grpcLn.openFrom("127.0.0.3"); got != 1 {
		t.Errorf("connections from the authenticated client: got %d, want 1", got)
	}
	if _, err := callStatus(authed); err != nil {
		t.Errorf("authenticated client after the deadline: %v", err)
	}
}

// TestConnectionTotalBound: the total bound holds over several addresses.
func TestConnectionTotalBound(t *testing.T) {
	h := start(t, newPKI(t), func(c *Config) {
		c.MaxConnections = 20
		c.MaxConnectionsPerIP = 20
	}, nil)
	var conns []*tls.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	failed := 0
	for i := range 40 {
		c, err := idleConn(h, fmt.Sprintf("127.0.1.%d", 1+i%4))
		if err != nil {
			failed++
			continue
		}
		conns = append(conns, c)
	}
	if len(conns) > 20 {
		t.Errorf("open connections: got %d, want at most 20", len(conns))
	}
	if got := int(metricValue(h.srv.lm.refused.WithLabelValues("grpc", "total"))); got < 40-20 || got > failed {
		t.Errorf("refused for the total bound: metric %d, client saw %d failures, want 20..%d", got, failed, failed)
	}
}

// TestStreamBound: concurrent streams beyond the server-wide bound are refused.
func TestStreamBound(t *testing.T) {
	const maxStreams = 4
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	h := start(t, newPKI(t), func(c *Config) { c.MaxStreams = maxStreams }, func(s *Server) {
		s.RegisterService(&testStreamDesc, streamFunc(func(grpc.ServerStream) error {
			entered <- struct{}{}
			<-release
			return nil
		}))
	})
	cc := h.dial(t, nil)
	errc := make(chan error, 10)
	for range 10 {
		go func() { errc <- callStream(cc) }()
	}
	// maxStreams handlers run (or fewer, if health probes held slots); every
	// other stream is refused.
	refused := 0
	for entries := 0; entries+refused < 10; {
		select {
		case <-entered:
			entries++
		case err := <-errc:
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("got %v, want ResourceExhausted", err)
			}
			refused++
		}
	}
	close(release)
	for range 10 - refused {
		if err := <-errc; err != nil {
			t.Errorf("admitted stream: %v", err)
		}
	}
	if refused < 10-maxStreams {
		t.Errorf("refused streams: got %d, want at least %d", refused, 10-maxStreams)
	}
	if err := callStream(cc); err != nil {
		t.Errorf("stream after the others ended: %v", err)
	}
}

// bytesSvc is a one-method unary service taking a BytesValue.
type bytesSvc func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)

var bytesDesc = grpc.ServiceDesc{
	ServiceName: "hsmgate.test.Bytes",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/hsmgate.test.Bytes/Echo"}
			return ic(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(bytesSvc)(ctx, req.(*wrapperspb.BytesValue))
			})
		},
	}},
}

func callBytes(cc *grpc.ClientConn, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return cc.Invoke(ctx, "/hsmgate.test.Bytes/Echo", wrapperspb.Bytes(make([]byte, n)), new(wrapperspb.BytesValue))
}

// TestInflightBytes: concurrent large requests beyond the budget wait before
// their request is read (or until their deadline), and the bytes being read or
// handled never exceed the budget; a request that stalls is cut.
func TestInflightBytes(t *testing.T) {
	const msg = 600 << 10
	const recvMax = 1 << 20
	const budgetBytes = 2 << 20 // two requests: 2 x 600 KiB held + 1 MiB to read the next > 2 MiB
	const calls = 16

	t.Run("unary waits beyond the budget", func(t *testing.T) {
		var inHandler, maxInHandler atomic.Int64
		entered := make(chan struct{}, calls)
		release := make(chan struct{})
		var releaseOnce sync.Once
		unblock := func() { releaseOnce.Do(func() { close(release) }) }
		h := start(t, newPKI(t), func(c *Config) {
			c.MaxRecvBytes = recvMax
			c.MaxInflightBytes = budgetBytes
		}, func(s *Server) {
			s.RegisterService(&bytesDesc, bytesSvc(func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
				n := inHandler.Add(1)
				for m := maxInHandler.Load(); n > m && !maxInHandler.CompareAndSwap(m, n); m = maxInHandler.Load() {
				}
				entered <- struct{}{}
				<-release
				inHandler.Add(-1)
				return &wrapperspb.BytesValue{}, nil
			}))
		})
		defer unblock() // on failure, let the handlers end so the server stops
		cc := h.dial(t, nil)
		errc := make(chan error, calls)
		for range calls {
			go func() { errc <- callBytes(cc, msg) }()
		}
		// Two calls are handled, the other 14 wait for room.
		entries := 0
		for entries < 2 || h.srv.budget.waiters.Load() < calls-2 {
			select {
			case <-entered:
				entries++
				if entries > 2 {
					t.Fatalf("%d calls handled at once (%d bytes), want 2 (budget %d)", entries, entries*msg, budgetBytes)
				}
			case err := <-errc:
				t.Fatalf("a call ended while the others were held: %v", err)
			case <-time.After(10 * time.Millisecond): // poll the waiters
			}
		}
		t.Run("a waiting call ends at its deadline", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := cc.Invoke(ctx, "/hsmgate.test.Bytes/Echo", wrapperspb.Bytes(make([]byte, msg)), new(wrapperspb.BytesValue))
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("got %v, want DeadlineExceeded", err)
			}
		})
		unblock()
		for range calls {
			if err := <-errc; err != nil {
				t.Errorf("call: got %v, want served after waiting", err)
			}
		}
		if max := maxInHandler.Load(); max*msg > budgetBytes {
			t.Errorf("calls handled at once: got %d (%d bytes), want at most %d bytes", max, max*msg, budgetBytes)
		}
		if peak := h.srv.budget.peak.Load(); peak > budgetBytes || peak < msg {
			t.Errorf("bytes in flight peak: got %d, want %d..%d", peak, msg, budgetBytes)
		}
		for h.srv.budget.cur.Load() != 0 { // End stats arrive after the client's answer
			time.Sleep(time.Millisecond)
		}
		if got := metricValue(h.srv.lm.inflight); got != 0 {
			t.Errorf("bytes in flight after the calls: got %v, want 0", got)
		}
	})

	t.Run("a stalled request is cut", func(t *testing.T) {
		h := start(t, newPKI(t), func(c *Config) {
			c.MaxRecvBytes = recvMax
			c.MaxInflightBytes = budgetBytes
			c.RequestReadTimeout = 300 * time.Millisecond
		}, func(s *Server) {
			s.RegisterService(&bytesDesc, bytesSvc(func(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
				return &wrapperspb.BytesValue{}, nil
			}))
		})
		cc := h.dial(t, nil)
		// The unary method, opened as a client stream that never sends its request.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/hsmgate.test.Bytes/Echo")
		if err != nil {
			t.Fatal(err)
		}
		err = cs.RecvMsg(new(wrapperspb.BytesValue))
		if code := status.Code(err); code != codes.Canceled {
			t.Errorf("stalled request: got %v, want Canceled by the server", err)
		}
		if got := metricValue(h.srv.lm.readTimeouts); got != 1 {
			t.Errorf("read timeouts: got %v, want 1", got)
		}
		for h.srv.budget.cur.Load() != 0 {
			time.Sleep(time.Millisecond)
		}
		if err := callBytes(cc, msg); err != nil {
			t.Errorf("call after the stalled one: %v", err)
		}
	})

	t.Run("stalled requests from one address do not hold every share", func(t *testing.T) {
		h := start(t, newPKI(t), func(c *Config) {
			c.MaxRecvBytes = recvMax
			c.MaxInflightBytes = 4 * recvMax // 4 shares, 2 per address
			c.RequestReadTimeout = time.Hour
		}, func(s *Server) {
			s.RegisterService(&bytesDesc, bytesSvc(func(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
				return &wrapperspb.BytesValue{}, nil
			}))
		})
		attacker := h.dialFrom(t, "127.0.0.1")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 4 {
			if _, err := attacker.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/hsmgate.test.Bytes/Echo"); err != nil {
				t.Fatal(err)
			}
		}
		// Two stalled requests hold their address's shares, two wait for them.
		for h.srv.budget.cur.Load() != 2*recvMax || h.srv.budget.waiters.Load() != 2 {
			if h.srv.budget.cur.Load() == 4*recvMax {
				t.Fatalf("one address's stalled requests hold every share")
			}
			time.Sleep(time.Millisecond)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel2()
		err := h.dialFrom(t, "127.0.0.2").Invoke(ctx2, "/hsmgate.test.Bytes/Echo", wrapperspb.Bytes(make([]byte, msg)), new(wrapperspb.BytesValue))
		if err != nil {
			t.Errorf("call from another address: got %v, want served", err)
		}
	})

	t.Run("stream messages refused beyond the budget", func(t *testing.T) {
		// Streams take the budget per message; with no wait, a message that
		// does not fit is refused.
		h := start(t, newPKI(t), func(c *Config) {
			c.MaxRecvBytes = recvMax
			c.MaxInflightBytes = recvMax
			c.InflightWait = -1
		}, nil)
		release, err := h.srv.budget.acquire(context.Background(), recvMax, "grpc") // the budget is full
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		bs := &budgetStream{ServerStream: fakeRecvStream{msg: wrapperspb.Bytes(make([]byte, msg))}, b: h.srv.budget}
		if err := bs.RecvMsg(new(wrapperspb.BytesValue)); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("got %v, want ResourceExhausted", err)
		}
		if got := metricValue(h.srv.lm.inflightRefused.WithLabelValues("grpc")); got != 1 {
			t.Errorf("refused metric: got %v, want 1", got)
		}
	})
}

// fakeRecvStream is a grpc.ServerStream whose RecvMsg yields msg.
type fakeRecvStream struct {
	grpc.ServerStream
	msg *wrapperspb.BytesValue
}

func (f fakeRecvStream) Context() context.Context { return context.Background() }
func (f fakeRecvStream) RecvMsg(m any) error {
	m.(*wrapperspb.BytesValue).Value = f.msg.Value
	return nil
}

// TestHTTPLimits: bodies over the limit are refused, /metrics is only on its
// own listener, and HTTPS connections are bounded like gRPC ones.
func TestHTTPLimits(t *testing.T) {
	h := start(t, newPKI(t), func(c *Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.MaxHTTPBodyBytes = 64 << 10
	}, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: okStatus})
		s.HandleHTTP("POST /v1/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
				return
			}
			fmt.Fprint(w, n)
		}))
	})
	if _, err := callStatus(h.dial(t, nil)); err != nil {
		t.Fatal(err)
	}
	hc := h.httpClient()
	base := "https://" + h.srv.HTTPAddr()
	post := func(body io.Reader) int {
		t.Helper()
		resp, err := hc.Post(base+"/v1/echo", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("body within the limit", func(t *testing.T) {
		if got := post(strings.NewReader(strings.Repeat("a", 1000))); got != 200 {
			t.Errorf("got %d, want 200", got)
		}
	})
	t.Run("declared body over the limit", func(t *testing.T) {
		if got := post(strings.NewReader(strings.Repeat("a", 65<<10))); got != http.StatusRequestEntityTooLarge {
			t.Errorf("got %d, want 413", got)
		}
	})
	t.Run("streamed body over the limit", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write(make([]byte, 65<<10))
			pw.Close()
		}()
		if got := post(pr); got != http.StatusRequestEntityTooLarge {
			t.Errorf("got %d, want 413", got)
		}
	})
	t.Run("metrics on their own listener", func(t *testing.T) {
		resp, err := http.Get("http://" + h.srv.MetricsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		want := `grpc_server_handled_total{grpc_code="OK",grpc_method="GetStatus",grpc_service="hsmgate.v1.SystemService",grpc_type="unary"} 1`
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("got %d, want 200 with %q:\n%.2000s", resp.StatusCode, want, body)
		}
		for _, m := range []string{"hsmgate_server_connections", "hsmgate_server_inflight_bytes"} {
			if !strings.Contains(string(body), m) {
				t.Errorf("metrics lack %s", m)
			}
		}
	})
	t.Run("no metrics on the HTTPS listener", func(t *testing.T) {
		resp, err := hc.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("got %d, want 404", resp.StatusCode)
		}
	})
	t.Run("server settings", func(t *testing.T) {
		hs := h.srv.httpServer()
		if hs.ReadHeaderTimeout != DefaultHandshakeTimeout || hs.IdleTimeout != DefaultPreauthIdleTimeout ||
			hs.HTTP2 == nil || hs.HTTP2.MaxConcurrentStreams != DefaultMaxConcurrentStreams || hs.MaxHeaderBytes == 0 {
			t.Errorf("got ReadHeaderTimeout %v, IdleTimeout %v, HTTP2 %+v, MaxHeaderBytes %d", hs.ReadHeaderTimeout, hs.IdleTimeout, hs.HTTP2, hs.MaxHeaderBytes)
		}
	})
}

// TestErrorsLeakNothing: a 100 KB key name is not echoed back nor logged in
// full, and an audit write failure does not tell the client the file's path
// (the server log has it).
func TestErrorsLeakNothing(t *testing.T) {
	long := strings.Repeat("k", 100<<10)
	const auditPath = "/var/log/hsmgate/audit.log"
	notFound := errs.New(errs.NotFound, "transit: key not found")
	h := start(t, newPKI(t), nil, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(ctx context.Context) (*hsmgatev1.GetStatusResponse, error) {
			return nil, fmt.Errorf("transit: key %q: %w", long, notFound)
		}})
		// What the auth interceptor returns when the audit line cannot be written.
		if err := s.Use(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if v, _ := req.(*hsmgatev1.GetStatusRequest); v != nil && auditFailing.Load() {
				return nil, fmt.Errorf("auth: %w", fmt.Errorf("audit: write: %w: %v", audit.ErrUnavailable,
					fmt.Errorf("write %s: no space left on device", auditPath)))
			}
			return handler(ctx, req)
		}, nil); err != nil {
			t.Fatal(err)
		}
	})
	cc := h.dial(t, nil)

	_, err := callStatus(cc)
	st := status.Convert(err)
	if st.Code() != codes.NotFound || len(st.Message()) > errs.MaxMessageBytes+len(errs.TruncatedMarker) ||
		!strings.HasSuffix(st.Message(), errs.TruncatedMarker) {
		t.Errorf("long key name: got %v and a %d-byte message, want NotFound cut to %d bytes", st.Code(), len(st.Message()), errs.MaxMessageBytes)
	}
	for i, line := range strings.Split(h.logs.String(), "\n") {
		if len(line) > 8<<10 {
			t.Errorf("log line %d is %d bytes long: echoed input not cut", i, len(line))
		}
	}

	auditFailing.Store(true)
	defer auditFailing.Store(false)
	_, err = callStatus(cc)
	st = status.Convert(err)
	if st.Code() != codes.Unavailable || st.Message() != "audit: log unavailable" {
		t.Errorf("audit failure: got %v %q, want Unavailable \"audit: log unavailable\"", st.Code(), st.Message())
	}
	if !strings.Contains(h.logs.String(), auditPath) {
		t.Errorf("the server log lacks the audit failure's cause:\n%s", h.logs.String())
	}
}

var auditFailing atomic.Bool

// openFrom counts the listener's open connections from the address ip.
func (l *limitListener) openFrom(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.conns {
		if c.key == ip {
			n++
		}
	}
	return n
}

// metricValue reads a counter's or gauge's value.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestHTTPInflight: an HTTPS request whose body does not fit in the bytes in
// flight budget is refused with 429 while another holds it.
func TestHTTPInflight(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	h := start(t, newPKI(t), func(c *Config) {
		c.MaxRecvBytes = 64 << 10
		c.MaxHTTPBodyBytes = 64 << 10
		c.MaxInflightBytes = 64 << 10
		c.InflightWait = -1
	}, func(s *Server) {
		s.HandleHTTP("POST /v1/hold", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			entered <- struct{}{}
			<-release
		}))
	})
	hc := h.httpClient()
	url := "https://" + h.srv.HTTPAddr() + "/v1/hold"
	first := make(chan error, 1)
	go func() {
		resp, err := hc.Post(url, "application/octet-stream", strings.NewReader(strings.Repeat("a", 40<<10)))
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	<-entered
	resp, err := hc.Post(url, "application/octet-stream", strings.NewReader(strings.Repeat("b", 40<<10)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	close(release)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second request: got %d (Retry-After %q), want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if err := <-first; err != nil {
		t.Errorf("first request: %v", err)
	}
	if peak := h.srv.budget.peak.Load(); peak > 64<<10 {
		t.Errorf("bytes in flight peak: got %d, want at most %d", peak, 64<<10)
	}
}
