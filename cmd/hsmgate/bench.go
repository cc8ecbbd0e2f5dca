package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/acme"
	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/hsm"
)

type benchFlags struct {
	target      string
	residency   string
	keyType     string
	batch       int
	sweep       string
	payload     int
	concurrency int
	connections int
	duration    time.Duration
	warmup      time.Duration
	limitDur    time.Duration
	paired      int
	pairSlice   time.Duration
	interval    time.Duration
	jsonOut     string
	svgOut      string
	cpuProfile  string
	pairWith    string
	memProfile  string
	serverPID   int
	serverLog   string
	echo        string
	client      string        // "" or bench.ClientBatcher
	maxWait     time.Duration // --client batcher: the batcher's MaxWait
	// compare (bench_compare.go)
	vaultAddr, vaultToken, vaultCACert string
	names                              bench.VaultNames
}

func newBenchCmd(g *globals) *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench [compare] SCENARIO",
		Short: "Measure an hsmgate end to end against its software, HSM and transport limits, measured in the same run",
		Long: `Drive an hsmgate over gRPC with one scenario and measure, in the same run:

  software limit   the same operation in this process with Go's crypto, on
                   --concurrency goroutines
  HSM limit        the same PKCS#11 operation in a tight loop on the same token
                   (the best of 1, --concurrency and 4x that many goroutines)
  transport limit  a gRPC echo service on a TLS listener of the same kind that
                   decodes the scenario's own request messages and answers
                   with a response the server gave (byte for byte the same
                   messages; --echo bytes: one bytes field of the same sizes;
                   --echo work: the same messages, and the software limit's
                   operation once per item in the handler, the least any
                   server of this call must do), with the same batch,
                   concurrency and connections

With --target inprocess (the default) the server is built in this process
the way "hsmgate dev" builds it, on a fresh SoftHSM token in a temporary
directory (removed afterwards), with authentication (the root token) and the
audit log ON, as in a deployment; its request log is at --server-log-level.
Server CPU per item and peak RSS are then this process's (client included).
With --target env the server is the one the HSMGATE_* variables name
(HSMGATE_ADDR, HSMGATE_CACERT, HSMGATE_TOKEN); give --server-pid for its CPU
and RSS (from /proc); the HSM limit is not measured.

Throughput is in items per second (an item is a plaintext, signature, MAC or
certificate; a request carries --batch items). --sweep runs several batch
sizes for the chart. The table goes to stdout, a live progress line to stderr;
--json writes the result and --svg (default: the JSON path with .svg) a chart
of throughput against batch size with the limits as lines.

Scenarios:
  ` + strings.Join(bench.Scenarios(), "\n  ") + "\n" + compareLong,
		Example: `  hsmgate bench transit-encrypt --batch 1000 --duration 10s --json out.json
  hsmgate bench transit-encrypt --sweep 1,10,100,1000 --json bench/results/encrypt.json
  hsmgate bench transit-sign --residency hsm --key-type ecdsa-p256 --batch 100
  hsmgate bench ssh-sign --batch 16 --key-type ed25519
  hsmgate bench pki-sign --concurrency 4 --cpuprofile pki.pprof
  hsmgate bench acme-order --concurrency 8 --duration 10s
  . .hsmgate-dev/env && hsmgate bench transit-hmac --target env --server-pid "$(pgrep -n hsmgate)"
  hsmgate bench compare --vault-addr self transit-encrypt --sweep 1,100
  hsmgate bench compare --vault-addr https://127.0.0.1:8200 --vault-token "$VAULT_TOKEN" --vault-cacert vault-ca.pem transit-encrypt --concurrency 32
  hsmgate bench compare --vault-addr https://127.0.0.1:8200 --vault-role bench pki-sign --concurrency 8`,
		Args: benchArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				return runBenchCompare(cmd.Context(), g, f, args[1])
			}
			return runBench(cmd.Context(), g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.target, "target", "inprocess", "inprocess (a fresh server in this process) or env (the server of the HSMGATE_* variables)")
	fl.StringVar(&f.residency, "residency", "wrapped", "transit key residency: wrapped or hsm")
	fl.StringVar(&f.keyType, "key-type", "", "key type (transit key; SSH CA key; PKI issuer key); default the scenario's first")
	fl.IntVar(&f.batch, "batch", 0, "items per request (1.."+fmt.Sprint(bench.MaxBatch)+"; default 16 for ssh-sign, else 1)")
	fl.StringVar(&f.sweep, "sweep", "", "batch sizes to run one after another, e.g. 1,10,100,1000 (overrides --batch)")
	fl.IntVar(&f.payload, "payload", 256, "bytes per item (plaintext, signed or MACed message)")
	fl.IntVar(&f.concurrency, "concurrency", 4, "goroutines sending requests (and running the limits)")
	fl.IntVar(&f.connections, "connections", 1, "gRPC connections the goroutines share")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "measured time per batch size")
	fl.DurationVar(&f.warmup, "warmup", 2*time.Second, "unmeasured time before each measurement")
	fl.DurationVar(&f.limitDur, "limit-duration", 0, "measured time of each limit (default min(--duration, 3s))")
	fl.DurationVar(&f.interval, "interval", 0, "throughput and RSS sample interval (default 1m, or --duration/5 when shorter than 2m)")
	fl.IntVar(&f.paired, "paired", 0, "after each batch size, run it and a limit (--pair-with) in turns for this many rounds (of --pair-slice each): a ratio both measured on the same machine state")
	fl.StringVar(&f.pairWith, "pair-with", bench.PairHSM, "with --paired: the limit to take turns with: hsm, or transport (the gRPC echo of the same messages at the same concurrency)")
	fl.DurationVar(&f.pairSlice, "pair-slice", bench.DefaultPairSlice, "with --paired: measured time of each turn")
	fl.StringVar(&f.jsonOut, "json", "", "write the result as JSON to this file")
	fl.StringVar(&f.svgOut, "svg", "", "write the chart here (default: the --json path with .svg)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the scenario's measured phases (not the limits) here")
	fl.StringVar(&f.memProfile, "memprofile", "", "write the allocations of the scenario's measured phases here (and those before them to FILE.base: go tool pprof -sample_index=alloc_objects -base FILE.base FILE)")
	fl.StringVar(&f.echo, "echo", bench.EchoMessages, "transport limit: messages (echo the scenario's own request and response messages), bytes (one bytes field of the same sizes), or work (messages, and the software limit's operation once per item in the echo's handler)")
	fl.StringVar(&f.client, "client", "", "transit-encrypt only: \""+bench.ClientBatcher+"\" compares client.Batcher with the same goroutines unbatched (--concurrency 64 or more; --batch is the batcher's max items, default 64)")
	fl.DurationVar(&f.maxWait, "max-wait", 2*time.Millisecond, "with --client batcher: the batcher's max wait before a batch is sent")
	fl.IntVar(&f.serverPID, "server-pid", 0, "with --target env: the server's PID, for its CPU time and RSS")
	fl.StringVar(&f.serverLog, "server-log-level", "warn", "with --target inprocess: the server's log level (debug logs every request)")
	addCompareFlags(cmd, f) // bench_compare.go
	return cmd
}

func runBench(ctx context.Context, g *globals, f *benchFlags, scenario string) error {
	p, err := benchParams(f, scenario)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "hsmgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	o := bench.Options{Params: p, TempDir: tmp, Progress: g.stderr, Log: g.stderr,
		Command: "hsmgate " + strings.Join(os.Args[1:], " ")}
	t, err := openBenchTarget(ctx, g, f, tmp)
	if err != nil {
		return err
	}
	defer t.close()
	if f.client != "" {
		return runBatcherBench(ctx, g, f, scenario, t.client, t.target)
	}
	o.Env, o.Proc, o.Target, o.Security, o.Token = t.env, t.proc, t.target, t.security, t.client.Token
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		o.StartProfile = func() error { return pprof.StartCPUProfile(pf) }
		o.StopProfile = pprof.StopCPUProfile
	}
	if f.memProfile != "" {
		start, stop := o.StartProfile, o.StopProfile
		o.StartProfile = func() error {
			if start != nil {
				if err := start(); err != nil {
					return err
				}
			}
			return writeAllocs(f.memProfile + ".base")
		}
		o.StopProfile = func() {
			if stop != nil {
				stop()
			}
			if err := writeAllocs(f.memProfile); err != nil {
				fmt.Fprintf(g.stderr, "bench: memory profile: %v\n", err)
			}
		}
	}
	r, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if f.target == "env" && f.serverPID == 0 {
		r.Notes = append(r.Notes, "CPU and RSS are of the bench client: no --server-pid")
	}
	if t.srv != nil {
		if n := auditSize(t.srv.auditPath); n != "" {
			r.Notes = append(r.Notes, n)
		}
	}
	if err := r.WriteTable(g.stdout); err != nil {
		return err
	}
	return writeBenchFiles(r, f)
}

func writeBenchFiles(r *bench.Result, f *benchFlags) error {
	svg := f.svgOut
	if svg == "" && f.jsonOut != "" {
		svg = strings.TrimSuffix(f.jsonOut, filepath.Ext(f.jsonOut)) + ".svg"
	}
	write := func(path string, fn func(io.Writer) error) error {
		if path == "" {
			return nil
		}
		fh, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := fn(fh); err != nil {
			fh.Close()
			return err
		}
		return fh.Close()
	}
	return errors.Join(write(f.jsonOut, r.WriteJSON), write(svg, r.WriteSVG))
}

func millis(d time.Duration) bench.Millis { return bench.Millis(float64(d) / 1e6) }

// benchParams turns the flags into checked parameters.
func benchParams(f *benchFlags, scenario string) (bench.Params, error) {
	p := bench.Params{
		Scenario: scenario, Residency: f.residency, KeyType: f.keyType, Batch: f.batch, Payload: f.payload,
		Concurrency: f.concurrency, Connections: f.connections, Echo: f.echo,
		Duration: millis(f.duration), Warmup: millis(f.warmup), LimitDur: millis(f.limitDur), Interval: millis(f.interval),
		Paired: f.paired, PairWith: f.pairWith,
	}
	if f.paired > 0 {
		p.PairSlice = millis(f.pairSlice)
	}
	if f.sweep != "" {
		sw, err := bench.ParseSweep(f.sweep)
		if err != nil {
			return p, usageError{err}
		}
		p.Sweep = sw
	}
	if p.Interval == 0 {
		p.Interval = millis(time.Minute)
		if f.duration < 2*time.Minute {
			p.Interval = millis(f.duration / 5)
		}
	}
	if err := p.Check(); err != nil {
		return p, usageError{err}
	}
	return p, nil
}

// benchTarget is the hsmgate a bench drives: in this process or named by
// the HSMGATE_* variables.
type benchTarget struct {
	client           client.Options
	env              *bench.Env
	proc             bench.Proc
	target, security string
	srv              *benchServer // in process; nil otherwise
	closers          []func()
}

func (t *benchTarget) close() {
	for i := len(t.closers) - 1; i >= 0; i-- {
		t.closers[i]()
	}
}

// openBenchTarget starts or names the server (--target) and dials
// --connections connections to it.
func openBenchTarget(ctx context.Context, g *globals, f *benchFlags, tmp string) (_ *benchTarget, err error) {
	t := &benchTarget{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	switch f.target {
	case "inprocess":
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(f.serverLog)); err != nil {
			return nil, usageError{fmt.Errorf("--server-log-level %q: want debug, info, warn or error", f.serverLog)}
		}
		log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
		srv, err := startBenchServer(ctx, filepath.Join(tmp, "server"), log)
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, srv.stop)
		t.srv, t.client = srv, srv.client
		t.env = &bench.Env{HSM: srv.hsm, ACME: srv.acme}
		t.target = "in-process server, " + t.client.Addr + " (TLS, loopback)"
		t.security = "auth ON (root token as bearer) and audit ON (hash-chained audit log, one line per call), as deployed; request log at " + f.serverLog
	case "env":
		t.client = client.FromEnv()
		t.env = &bench.Env{}
		t.proc = bench.Proc{PID: f.serverPID}
		t.target = "server at " + t.client.Addr + " (HSMGATE_ADDR)"
		t.security = "the server's own auth and audit configuration (token from HSMGATE_TOKEN)"
	default:
		return nil, usageError{fmt.Errorf("--target %q: want inprocess or env", f.target)}
	}
	t.env.Prefix = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().Unix())
	for range max(f.connections, 1) {
		cc, err := client.Dial(t.client) // each ClientConn has its own HTTP/2 connection
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() { cc.Close() })
		t.env.Conns = append(t.env.Conns, cc)
	}
	return t, nil
}

// benchServer is a dev-style server in this process.
type benchServer struct {
	client client.Options
	// httpAddr is its HTTPS listener (the Vault door is under /v1/ there).
	httpAddr string
	// auditPath is its audit log.
	auditPath string
	hsm       *hsm.Module // a second module on the same token, for the HSM limit
	acme      *bench.ACMETarget
	http01    *bench.HTTP01Responder
	cancel    context.CancelFunc
	done      chan error
}

// startBenchServer builds the server as `hsmgate dev` does, in dir: a fresh
// SoftHSM token, bbolt store, dev CA, KEK, every engine, auth with a root
// token and the audit log; listening on 127.0.0.1:0. The batch limit is
// raised to bench.MaxBatch items per request.
func startBenchServer(ctx context.Context, dir string, log *slog.Logger) (*benchServer, error) {
	st, err := prepareDevState(ctx, dir, &devFlags{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0"}, log)
	if err != nil {
		return nil, err
	}
	st.cfg.Limits.MaxItemsPerRequest = bench.MaxBatch
	// acme-order: http-01 is answered by the bench on a loopback port that
	// the server validates against (TEST-ONLY option), without ACME's rate
	// limits (every order comes from 127.0.0.1).
	http01, err := bench.NewHTTP01Responder()
	if err != nil {
		return nil, err
	}
	roots, err := loadRoots(st.tls.CACert)
	if err != nil {
		http01.Close()
		return nil, err
	}
	const unlimited = 1 << 30
	at := &acmeTesting{
		validation: acme.ValidationTarget{Host: "127.0.0.1", HTTPPort: http01.Port(), TLSPort: 1},
		limits: acme.Limits{OrdersPerHour: unlimited, OrderBurst: unlimited, AccountsPerHour: unlimited, AccountBurst: unlimited,
			FailedValidationsPerHour: unlimited, FailedValidationBurst: unlimited},
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &benchServer{cancel: cancel, done: make(chan error, 1), http01: http01, auditPath: st.cfg.Audit.Path}
	if s.auditPath == "" && st.cfg.Store.Path != "" { // as the wiring does without an audit section (authwire.go)
		s.auditPath = filepath.Join(filepath.Dir(st.cfg.Store.Path), "audit.log")
	}
	ready := make(chan listenAddrs, 1)
	go func() {
		s.done <- runServer(sctx, st.cfg, log, runOptions{
			createKEK: true, devRootToken: st.rootToken, devStateDir: st.dir, acmeTesting: at,
			listening: func(a listenAddrs) error { ready <- a; return nil },
		})
	}()
	select {
	case addrs := <-ready:
		s.client = client.Options{Addr: addrs.GRPC, CACert: st.tls.CACert, Token: st.rootToken}
		s.httpAddr = addrs.HTTP
		s.acme = &bench.ACMETarget{BaseURL: "https://" + addrs.HTTP, Roots: roots, HTTP01: http01}
	case err := <-s.done:
		cancel()
		http01.Close()
		return nil, fmt.Errorf("bench: server: %w", err)
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	// The library is initialised once per process; this module shares it.
	if s.hsm, err = openHSM(ctx, st.cfg, log); err != nil {
		s.stop()
		return nil, fmt.Errorf("bench: HSM for the limit: %w", err)
	}
	return s, nil
}

// stop closes the limit's module, then the server (which finalises the library).
func (s *benchServer) stop() {
	if s.hsm != nil {
		_ = s.hsm.Close()
	}
	s.cancel()
	<-s.done
	if s.http01 != nil {
		_ = s.http01.Close()
	}
}

// loadRoots reads a PEM CA file into a pool.
func loadRoots(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("bench: no certificate in %s", path)
	}
	return p, nil
}

// auditSize describes the audit log's size per request: its files' bytes
// and lines (the live file and the rotated ones), or "" when there is none.
// Every request ends with one response or call line (a request that may
// change state has a request line before it, a read-only call has that one
// line), so those lines count the requests.
func auditSize(path string) string {
	if path == "" {
		return ""
	}
	files, _ := filepath.Glob(path + ".2*") // rotated: <path>.<UTC time>
	var size, lines, reqs int64
	for _, name := range append(files, path) {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		size += int64(len(b))
		lines += int64(bytes.Count(b, []byte{'\n'}))
		reqs += int64(bytes.Count(b, []byte(`"type":"response"`)) + bytes.Count(b, []byte(`"type":"call"`)))
	}
	if lines == 0 || reqs == 0 {
		return ""
	}
	return fmt.Sprintf("audit log: %d bytes in %d lines for %d requests, %.0f B a line, %.0f B a request (set-up and warm-up calls included)",
		size, lines, reqs, float64(size)/float64(lines), float64(size)/float64(reqs))
}

// writeAllocs writes the allocation profile so far (every allocation since
// the start, sampled) to path.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC() // the profile is as of the last GC
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
