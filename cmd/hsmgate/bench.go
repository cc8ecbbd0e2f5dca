package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/internal/client"
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
	serverPID   int
	serverLog   string
	echo        string
}

func newBenchCmd(g *globals) *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure an hsmgate end to end against its software, HSM and transport limits, measured in the same run",
		Long: `Drive an hsmgate over gRPC with one scenario and measure, in the same run:

  software limit   the same operation in this process with Go's crypto, on
                   --concurrency goroutines
  HSM limit        the same PKCS#11 operation in a tight loop on the same token
                   (the best of 1, --concurrency and 4x that many goroutines)
  transport limit  a gRPC echo service on a TLS listener of the same kind that
                   decodes the scenario's own request messages and answers
                   with a response the server gave (byte for byte the same
                   messages; --echo bytes: one bytes field of the same sizes),
                   with the same batch, concurrency and connections

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
  ` + strings.Join(bench.Scenarios(), "\n  "),
		Example: `  hsmgate bench transit-encrypt --batch 1000 --duration 10s --json out.json
  hsmgate bench transit-encrypt --sweep 1,10,100,1000 --json bench/results/encrypt.json
  hsmgate bench transit-sign --residency hsm --key-type ecdsa-p256 --batch 100
  hsmgate bench ssh-sign --batch 16 --key-type ed25519
  hsmgate bench pki-sign --concurrency 4 --cpuprofile pki.pprof
  . .hsmgate-dev/env && hsmgate bench transit-hmac --target env --server-pid "$(pgrep -n hsmgate)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
	fl.IntVar(&f.paired, "paired", 0, "after each batch size, run it and the HSM limit in turns for this many rounds (of --pair-slice each): a ratio both measured on the same machine state")
	fl.DurationVar(&f.pairSlice, "pair-slice", bench.DefaultPairSlice, "with --paired: measured time of each turn")
	fl.StringVar(&f.jsonOut, "json", "", "write the result as JSON to this file")
	fl.StringVar(&f.svgOut, "svg", "", "write the chart here (default: the --json path with .svg)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the scenario's measured phases (not the limits) here")
	fl.StringVar(&f.echo, "echo", bench.EchoMessages, "transport limit: messages (echo the scenario's own request and response messages) or bytes (one bytes field of the same sizes)")
	fl.IntVar(&f.serverPID, "server-pid", 0, "with --target env: the server's PID, for its CPU time and RSS")
	fl.StringVar(&f.serverLog, "server-log-level", "warn", "with --target inprocess: the server's log level (info logs every request)")
	return cmd
}

func runBench(ctx context.Context, g *globals, f *benchFlags, scenario string) error {
	p := bench.Params{
		Scenario: scenario, Residency: f.residency, KeyType: f.keyType, Batch: f.batch, Payload: f.payload,
		Concurrency: f.concurrency, Connections: f.connections, Echo: f.echo,
		Duration: millis(f.duration), Warmup: millis(f.warmup), LimitDur: millis(f.limitDur), Interval: millis(f.interval),
		Paired: f.paired,
	}
	if f.paired > 0 {
		p.PairSlice = millis(f.pairSlice)
	}
	if f.sweep != "" {
		sw, err := bench.ParseSweep(f.sweep)
		if err != nil {
			return usageError{err}
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
		return usageError{err}
	}
	tmp, err := os.MkdirTemp("", "hsmgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	o := bench.Options{Params: p, TempDir: tmp, Progress: g.stderr, Log: g.stderr,
		Command: "hsmgate " + strings.Join(os.Args[1:], " ")}
	var ccfg client.Config
	switch f.target {
	case "inprocess":
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(f.serverLog)); err != nil {
			return usageError{fmt.Errorf("--server-log-level %q: want debug, info, warn or error", f.serverLog)}
		}
		log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
		srv, err := startBenchServer(ctx, filepath.Join(tmp, "server"), log)
		if err != nil {
			return err
		}
		defer srv.stop()
		ccfg = srv.client
		o.Env = &bench.Env{HSM: srv.hsm}
		o.Target = "in-process server, " + ccfg.Addr + " (TLS, loopback)"
		o.Security = "auth ON (root token as bearer) and audit ON (hash-chained audit log, one line per call), as deployed; request log at " + f.serverLog
	case "env":
		ccfg = client.FromEnv()
		o.Env = &bench.Env{}
		o.Proc = bench.Proc{PID: f.serverPID}
		o.Target = "server at " + ccfg.Addr + " (HSMGATE_ADDR)"
		o.Security = "the server's own auth and audit configuration (token from HSMGATE_TOKEN)"
	default:
		return usageError{fmt.Errorf("--target %q: want inprocess or env", f.target)}
	}
	o.Token = ccfg.Token
	o.Env.Prefix = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().Unix())
	for range p.Connections {
		cc, err := client.Dial(ccfg) // each ClientConn has its own HTTP/2 connection
		if err != nil {
			return err
		}
		defer cc.Close()
		o.Env.Conns = append(o.Env.Conns, cc)
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		o.StartProfile = func() error { return pprof.StartCPUProfile(pf) }
		o.StopProfile = pprof.StopCPUProfile
	}
	r, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if f.target == "env" && f.serverPID == 0 {
		r.Notes = append(r.Notes, "CPU and RSS are of the bench client: no --server-pid")
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

// benchServer is a dev-style server in this process.
type benchServer struct {
	client client.Config
	hsm    *hsm.Module // a second module on the same token, for the HSM limit
	cancel context.CancelFunc
	done   chan error
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
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &benchServer{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		s.done <- runServer(sctx, st.cfg, log, runOptions{
			createKEK: true, devRootToken: st.rootToken, devStateDir: st.dir,
			listening: func(a listenAddrs) error { ready <- a.GRPC; return nil },
		})
	}()
	select {
	case addr := <-ready:
		s.client = client.Config{Addr: addr, CACert: st.tls.CACert, Token: st.rootToken}
	case err := <-s.done:
		cancel()
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
}
