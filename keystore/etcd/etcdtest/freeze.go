package etcdtest

import (
	"net"
	"net/url"
	"sync"
	"testing"
)

// Freezer is a TCP proxy in front of one member's client URL that can
// freeze: while frozen it forwards no byte in either direction but keeps
// every connection open, as a member stopped with SIGSTOP (or cut off by a
// silent network) looks to a client. The member itself runs on, so the
// cluster keeps its quorum.
type Freezer struct {
	// Endpoint is the proxy's client URL, to give a store instead of the member's.
	Endpoint string

	ln     net.Listener
	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	closed bool
	conns  []net.Conn
}

// Freezable starts a Freezer in front of member i; it closes in t.Cleanup.
func (c *Cluster) Freezable(t testing.TB, i int) *Freezer {
	t.Helper()
	u, err := url.Parse(c.Endpoints[i])
	if err != nil {
		t.Fatalf("etcdtest: endpoint %q: %v", c.Endpoints[i], err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: proxy listen: %v", err)
	}
	f := &Freezer{Endpoint: u.Scheme + "://" + ln.Addr().String(), ln: ln}
	f.cond = sync.NewCond(&f.mu)
	go f.serve(u.Host)
	t.Cleanup(f.close)
	return f
}

// Freeze stops forwarding; Thaw resumes it.
func (f *Freezer) Freeze() { f.set(true) }

// Thaw resumes forwarding of what was held.
func (f *Freezer) Thaw() { f.set(false) }

func (f *Freezer) set(frozen bool) {
	f.mu.Lock()
	f.frozen = frozen
	f.mu.Unlock()
	f.cond.Broadcast()
}

func (f *Freezer) serve(target string) {
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			continue
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		f.conns = append(f.conns, in, out)
		f.mu.Unlock()
		go f.pipe(out, in)
		go f.pipe(in, out)
	}
}

// pipe copies src to dst, holding each chunk while frozen.
func (f *Freezer) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			for f.frozen && !f.closed {
				f.cond.Wait()
			}
			closed := f.closed
			f.mu.Unlock()
			if closed {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *Freezer) close() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	f.cond.Broadcast()
	f.ln.Close()
	for _, c := range conns {
		c.Close()
	}
}
