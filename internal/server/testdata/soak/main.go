// Command soak measures what idle unauthenticated connections and stalled
// streams cost an hsmgate server: it starts the server (internal/server, with
// health only) in a child process, opens -conns idle HTTP/2 connections (TLS,
// preface, SETTINGS, then silence) from -ips loopback addresses, then
// -stream-conns connections each opening -streams streams that never send
// their message, holds them for -hold, closes everything, and prints the
// child's open file descriptors and RSS (from /proc) every -every.
//
//	go run ./internal/server/testdata/soak                 # the default limits
//	go run ./internal/server/testdata/soak -unlimited      # limits lifted, as before issue 13
//
// With -encrypt N it instead measures a running hsmgate (-pid, -addr,
// -cacert, $HSMGATE_TOKEN, e.g. from `hsmgate dev`): N concurrent Encrypts
// of -size bytes (items of at most 1 MiB) on the transit key -key, repeated
// -rounds times, with the server's fds and RSS sampled as above.
//
//	eval "$(hsmgate dev --state /tmp/hg --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 &)" ...
//	go run ./internal/server/testdata/soak -encrypt 96 -pid PID -addr $HSMGATE_ADDR -cacert $HSMGATE_CACERT -key k1
//
// It is a measuring tool, not a test: run it briefly (seconds), on loopback.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/server"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

var (
	serve       = flag.Bool("serve", false, "internal: run the server (child process)")
	tlsDir      = flag.String("tls", "", "internal: TLS directory of the child")
	unlimited   = flag.Bool("unlimited", false, "lift the connection, stream and pre-auth bounds (the server before issue 13)")
	preauth     = flag.Duration("preauth", 0, "limits.unauthenticated_idle_timeout (0: the default)")
	conns       = flag.Int("conns", 2000, "idle connections to open")
	ips         = flag.Int("ips", 16, "loopback source addresses to spread connections over (127.0.0.1..)")
	streamConns = flag.Int("stream-conns", 40, "connections that open stalled streams")
	streams     = flag.Int("streams", 256, "stalled streams per stream connection")
	hold        = flag.Duration("hold", 10*time.Second, "how long to hold everything open")
	every       = flag.Duration("every", time.Second, "sampling interval")
	after       = flag.Duration("after", 5*time.Second, "how long to keep sampling after closing")

	encrypt = flag.Int("encrypt", 0, "concurrent Encrypts against a running server (see the package doc)")
	pidFlag = flag.Int("pid", 0, "-encrypt: the server's process id")
	addr    = flag.String("addr", "", "-encrypt: the server's gRPC address")
	caFile  = flag.String("cacert", "", "-encrypt: CA certificate of the server")
	keyName = flag.String("key", "k1", "-encrypt: transit key")
	size    = flag.Int("size", 4<<20-4096, "-encrypt: bytes per request")
	rounds  = flag.Int("rounds", 3, "-encrypt: how many times to send the N requests")
)

func main() {
	flag.Parse()
	var err error
	switch {
	case *serve:
		err = runServer()
	case *encrypt > 0:
		err = runEncrypt()
	default:
		err = runSoak()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// runServer is the child: a server with health only, until stdin closes.
func runServer() error {
	files, _, err := devtls.Ensure(*tlsDir, devtls.DefaultHosts, time.Now())
	if err != nil {
		return err
	}
	cfg := server.Config{
		GRPCAddr: "127.0.0.1:0",
		CertFile: files.Cert,
		KeyFile:  files.Key,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),

		UnauthenticatedIdleTimeout: *preauth,
	}
	if *unlimited {
		cfg.MaxConnections = 1 << 20
		cfg.MaxConnectionsPerIP = 1 << 20
		cfg.MaxStreams = 1 << 20
		cfg.MaxConnectionIdle = 30 * time.Minute
		cfg.UnauthenticatedIdleTimeout = 30 * time.Minute
	}
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	if err := s.Listen(); err != nil {
		return err
	}
	fmt.Printf("ADDR %s\n", s.GRPCAddr())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return s.Serve(ctx)
}

func runSoak() error {
	dir, err := os.MkdirTemp("", "hsmgate-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files, _, err := devtls.Ensure(dir, devtls.DefaultHosts, time.Now())
	if err != nil {
		return err
	}
	args := []string{"-serve", "-tls", dir, "-preauth", preauth.String()}
	if *unlimited {
		args = append(args, "-unlimited")
	}
	child := exec.Command(os.Args[0], args...)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		_ = child.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return fmt.Errorf("child: %w", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
	pem, err := os.ReadFile(files.CACert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}

	pid := child.Process.Pid
	var phase atomic.Value
	phase.Store("baseline")
	var openConns, refused, streamsSent, streamsRefused atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	start := time.Now()
	fmt.Printf("# %s, unlimited=%v: %d idle conns from %d addresses, %d conns x %d stalled streams\n",
		addr, *unlimited, *conns, *ips, *streamConns, *streams)
	fmt.Printf("%6s  %-8s %8s %9s %10s %8s %8s %9s\n", "t(s)", "phase", "srv_fds", "srv_rssMB", "conns_ok", "refused", "streams", "s_refused")
	sampler.Go(func() {
		t := time.NewTicker(*every)
		defer t.Stop()
		for {
			fds, rss := procStats(pid)
			fmt.Printf("%6.1f  %-8s %8d %9.1f %10d %8d %8d %9d\n", time.Since(start).Seconds(), phase.Load(), fds, float64(rss)/1024,
				openConns.Load(), refused.Load(), streamsSent.Load(), streamsRefused.Load())
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	time.Sleep(*every)

	phase.Store("idle")
	var mu sync.Mutex
	var all []net.Conn
	keep := func(c net.Conn) {
		mu.Lock()
		all = append(all, c)
		mu.Unlock()
		openConns.Add(1)
	}
	// Idle connections come from 127.0.0.x, stream connections from 127.0.1.x.
	dial := func(net3 byte, i int) (*tls.Conn, error) {
		d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, net3, byte(1+i%*ips))}}
		c, err := tls.DialWithDialer(d, "tcp", addr, tc)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	parallel(*conns, func(i int) {
		c, err := dial(0, i)
		if err != nil {
			refused.Add(1)
			return
		}
		if err := http2.NewFramer(c, c).WriteSettings(); err != nil {
			c.Close()
			refused.Add(1)
			return
		}
		keep(c)
	})

	phase.Store("streams")
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", "/grpc.health.v1.Health/Check"},
		{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hbuf.Bytes()
	parallel(*streamConns, func(i int) {
		c, err := dial(1, i)
		if err != nil {
			refused.Add(1)
			return
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			c.Close()
			refused.Add(1)
			return
		}
		keep(c)
		go func() {
			// Keep the server's writes flowing; a stream the server ends
			// before its message arrives was refused.
			rd := http2.NewFramer(io.Discard, c)
			for {
				f, err := rd.ReadFrame()
				if err != nil {
					return
				}
				if h, ok := f.(*http2.HeadersFrame); ok && h.StreamEnded() {
					streamsRefused.Add(1)
				}
			}
		}()
		for s := range *streams {
			// HEADERS without END_STREAM, then nothing: the server waits for the message.
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*s + 1), BlockFragment: block, EndHeaders: true}); err != nil {
				return
			}
			streamsSent.Add(1)
		}
	})

	phase.Store("hold")
	time.Sleep(*hold)
	phase.Store("closed")
	mu.Lock()
	for _, c := range all {
		c.Close()
	}
	mu.Unlock()
	openConns.Store(0)
	time.Sleep(*after)
	close(stop)
	sampler.Wait()
	return nil
}

// runEncrypt sends -encrypt concurrent large Encrypts, -rounds times.
func runEncrypt() error {
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	token := os.Getenv("HSMGATE_TOKEN")
	cc, err := grpc.NewClient(*addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := hsmgatev1.NewTransitServiceClient(cc)
	req := &hsmgatev1.EncryptRequest{Name: *keyName}
	for left := *size; left > 0; left -= 1 << 20 {
		req.Items = append(req.Items, &hsmgatev1.EncryptItem{Plaintext: make([]byte, min(left, 1<<20-1024))})
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	start := time.Now()
	sample := func(what string, ok, busy, other int) {
		fds, rss := procStats(*pidFlag)
		fmt.Printf("%6.1f  %-10s %8d %9.1f %6d %6d %6d\n", time.Since(start).Seconds(), what, fds, float64(rss)/1024, ok, busy, other)
	}
	fmt.Printf("# %d concurrent Encrypts of %d bytes (%d items) on %q, %d rounds\n", *encrypt, proto.Size(req), len(req.Items), *keyName, *rounds)
	fmt.Printf("%6s  %-10s %8s %9s %6s %6s %6s\n", "t(s)", "phase", "srv_fds", "srv_rssMB", "ok", "busy", "other")
	sample("baseline", 0, 0, 0)
	var firstErr atomic.Value
	for r := range *rounds {
		var ok, busy, other atomic.Int64
		var wg sync.WaitGroup
		done := make(chan struct{})
		go func() {
			t := time.NewTicker(*every / 4)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					sample(fmt.Sprintf("round %d", r+1), int(ok.Load()), int(busy.Load()), int(other.Load()))
				}
			}
		}()
		for range *encrypt {
			wg.Go(func() {
				_, err := client.Encrypt(ctx, req)
				switch status.Code(err) {
				case codes.OK:
					ok.Add(1)
				case codes.ResourceExhausted:
					busy.Add(1)
				default:
					other.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			})
		}
		wg.Wait()
		close(done)
		sample(fmt.Sprintf("round %d", r+1), int(ok.Load()), int(busy.Load()), int(other.Load()))
	}
	time.Sleep(*after)
	sample("after", 0, 0, 0)
	if e := firstErr.Load(); e != nil {
		fmt.Println("# first other error:", e)
	}
	return nil
}

// parallel runs fn(0..n-1) on 16 workers.
func parallel(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				fn(int(i))
			}
		})
	}
	wg.Wait()
}

// procStats returns the open file descriptors and the RSS (KiB) of pid.
func procStats(pid int) (fds int, rssKB int) {
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		fds = len(ents)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return fds, rssKB
}
