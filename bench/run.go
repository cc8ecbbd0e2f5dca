package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Options configure Run.
type Options struct {
	Params Params
	Env    *Env
	// Proc is the serving process (PID 0: this one, for an in-process server).
	Proc Proc
	// Token is sent to the echo server too, so its requests carry the same
	// metadata as the scenario's.
	Token string
	// TempDir holds the echo server's TLS files.
	TempDir string
	// Progress gets the live \r-updated line (nil: none).
	Progress io.Writer
	// Log gets one line per phase (nil: none).
	Log io.Writer
	// StartProfile and StopProfile bracket the scenario's measured phases
	// (not the limits) for a CPU profile; nil: none.
	StartProfile func() error
	StopProfile  func()
	// Command, Target and Security are recorded in the result.
	Command, Target, Security string
}

// Defaults and bounds.
const (
	MaxBatch        = 10000
	limitChunk      = 64 // software-limit items per timed call
	DefaultLimitDur = 3 * time.Second
)

// ParseSweep reads "1,10,100".
func ParseSweep(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > MaxBatch {
			return nil, fmt.Errorf("bench: --sweep %q: want batch sizes 1..%d", f, MaxBatch)
		}
		out = append(out, n)
	}
	return out, nil
}

// Check validates p against its scenario and fills defaults.
func (p *Params) Check() error {
	s, ok := scenarios[p.Scenario]
	if !ok {
		return fmt.Errorf("bench: unknown scenario %q (see hsmgate bench --help)", p.Scenario)
	}
	if p.KeyType == "" {
		p.KeyType = s.keyTypes[0]
	}
	found := false
	for _, k := range s.keyTypes {
		found = found || k == p.KeyType
	}
	if !found {
		return fmt.Errorf("bench: %s: --key-type %q: want one of %s", p.Scenario, p.KeyType, strings.Join(s.keyTypes, ", "))
	}
	if s.residency {
		if p.Residency == "" {
			p.Residency = "wrapped"
		}
		if _, err := residencyOf(p.Residency); err != nil {
			return err
		}
	} else {
		p.Residency = ""
	}
	if p.Batch == 0 {
		p.Batch = max(s.minBatch, 1)
	}
	if p.Batch < 1 || p.Batch > MaxBatch {
		return fmt.Errorf("bench: --batch %d: want 1..%d", p.Batch, MaxBatch)
	}
	if len(p.Sweep) == 0 {
		p.Sweep = []int{p.Batch}
	}
	for _, b := range p.Sweep {
		if s.maxBatch > 0 && b > s.maxBatch {
			return fmt.Errorf("bench: %s: batch %d: at most %d item(s) per request", p.Scenario, b, s.maxBatch)
		}
	}
	if p.Concurrency < 1 || p.Connections < 1 {
		return errors.New("bench: --concurrency and --connections must be at least 1")
	}
	if p.Duration <= 0 {
		return errors.New("bench: --duration must be positive")
	}
	if err := oneOf(&p.Echo, "--echo", EchoMessages, EchoBytes, EchoWork); err != nil {
		return err
	}
	if p.LimitDur <= 0 {
		p.LimitDur = min(p.Duration, ms(DefaultLimitDur))
	}
	if p.Paired < 0 || p.Paired > 100 {
		return fmt.Errorf("bench: --paired %d: want 0..100 rounds", p.Paired)
	}
	if err := oneOf(&p.PairWith, "--pair-with", PairHSM, PairTransport); err != nil {
		return err
	}
	if p.Paired > 0 && p.PairSlice <= 0 {
		p.PairSlice = ms(DefaultPairSlice)
	}
	return nil
}

// The limits a paired measurement can take turns with (Params.PairWith).
const (
	PairHSM       = "hsm"
	PairTransport = "transport"
)

// DefaultPairSlice is how long the scenario and the HSM limit each run in
// one round of a paired measurement (plus pairWarmup each).
const DefaultPairSlice = time.Second

const pairWarmup = 250 * time.Millisecond

func (p Params) dur(m Millis) time.Duration { return time.Duration(float64(m) * 1e6) }

// Run measures the limits, then the scenario at each batch size of
// Params.Sweep, and returns the result.
func Run(ctx context.Context, o Options) (*Result, error) {
	p := o.Params
	if err := p.Check(); err != nil {
		return nil, err
	}
	if o.Env == nil || len(o.Env.Conns) == 0 {
		return nil, errors.New("bench: no connections")
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	host, _ := os.Hostname()
	r := &Result{
		Schema: Schema, Date: time.Now().UTC(), Command: o.Command, Target: o.Target, Security: o.Security,
		Params: p,
		Host: Host{Hostname: host, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadAvg(),
			ServerPID: o.Proc.PID, InProcess: o.Proc.PID == 0},
	}
	w, err := scenarios[p.Scenario].prepare(ctx, o.Env, p)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if p.Echo == EchoWork && w.Software == nil && w.NoTransport == "" {
		return nil, fmt.Errorf("bench: --echo %s: %s has no software operation to run in the echo", EchoWork, p.Scenario)
	}
	r.Describe = w.Describe
	logf("bench: %s: %s", p.Scenario, w.Describe)

	reqs := make([]request, len(p.Sweep))
	for i, b := range p.Sweep {
		if reqs[i], err = w.Request(b); err != nil {
			return nil, err
		}
		// One call for the response the echo server will send (and to fail early).
		resp, err := reqs[i].Call(ctx, o.Env.Conns[0])
		if err != nil {
			return nil, fmt.Errorf("bench: %s: first call: %w", p.Scenario, err)
		}
		reqs[i].Resp = resp
		pt := Point{Batch: b}
		if reqs[i].Msg != nil && resp != nil {
			pt.ReqBytes, pt.RespBytes = proto.Size(reqs[i].Msg), proto.Size(resp)
		}
		r.Points = append(r.Points, pt)
	}

	limitLoad := func(label string, conc int) load {
		return load{Label: label, Concurrency: conc, Warmup: min(p.dur(p.Warmup), time.Second), Duration: p.dur(p.LimitDur),
			Progress: o.Progress, Proc: Proc{}}
	}
	// Software limit: the item op in chunks, so that timing costs nothing.
	if w.Software != nil {
		m, err := limitLoad("software limit", p.Concurrency).run(ctx, func(ctx context.Context, _ int) (int, error) {
			for range limitChunk {
				if err := w.Software(ctx); err != nil {
					return 0, err
				}
			}
			return limitChunk, nil
		})
		if err != nil {
			return nil, err
		}
		r.Software = &Limit{Op: w.SoftwareOp, ItemsPerS: m.itemsPerSec(), Concurrency: p.Concurrency,
			P50: m.Hist.summary().P50 / limitChunk, P99: m.Hist.summary().P99 / limitChunk, OtherCores: m.otherCores()}
		logf("bench: software limit: %.0f items/s (%s)", r.Software.ItemsPerS, w.SoftwareOp)
	}
	// HSM limit: the best of 1, one per core, the bench's concurrency and 4
	// times it (SoftHSM's AES-GCM is fastest on one thread; its signatures
	// are fastest and steadiest at one thread per core, and sometimes gain
	// from more threads: the server runs several calls per request).
	if w.HSM != nil {
		concs := []int{1, runtime.GOMAXPROCS(0), p.Concurrency, min(4*p.Concurrency, 64)}
		slices.Sort(concs)
		concs = slices.Compact(concs)
		for _, c := range concs {
			m, err := limitLoad(fmt.Sprintf("HSM limit c=%d", c), c).run(ctx, func(ctx context.Context, _ int) (int, error) {
				return 1, w.HSM(ctx)
			})
			if err != nil {
				return nil, err
			}
			if r.HSM == nil || m.itemsPerSec() > r.HSM.ItemsPerS {
				s := m.Hist.summary()
				r.HSM = &Limit{Op: w.HSMOp, ItemsPerS: m.itemsPerSec(), Concurrency: c, P50: s.P50, P99: s.P99, OtherCores: m.otherCores()}
			}
		}
		logf("bench: HSM limit: %.0f items/s at concurrency %d (%s)", r.HSM.ItemsPerS, r.HSM.Concurrency, w.HSMOp)
	} else {
		r.Notes = append(r.Notes, "HSM limit not measured (no HSM operation for this scenario, or no token in this process)")
	}
	// Transport limit per batch size.
	// The echo of each point's messages, and what sets the echo server to
	// answer them, for PairTransport.
	var echoOps []op
	var echoShapes []func()
	if w.NoTransport != "" {
		r.Notes = append(r.Notes, "transport limit not measured: "+w.NoTransport)
	} else {
		echo, err := startEcho(o.TempDir)
		if err != nil {
			return nil, err
		}
		defer echo.stop()
		echoConns := make([]*grpc.ClientConn, p.Connections)
		for i := range echoConns {
			if echoConns[i], err = echo.dial(o.Token); err != nil {
				return nil, err
			}
			defer echoConns[i].Close()
		}
		echoOps = make([]op, len(r.Points))
		echoShapes = make([]func(), len(r.Points))
		for i := range r.Points {
			pt := &r.Points[i]
			shape, call := echoFor(p.Echo, reqs[i], w.Software, reqs[i].items(pt.Batch))
			batch := pt.Batch
			echoOps[i] = func(ctx context.Context, wk int) (int, error) {
				return batch, call(ctx, echoConns[wk%len(echoConns)])
			}
			echoShapes[i] = func() { echo.set(shape) }
			echoShapes[i]()
			m, err := limitLoad(fmt.Sprintf("transport limit b=%d", pt.Batch), p.Concurrency).run(ctx, echoOps[i])
			if err != nil {
				return nil, err
			}
			s := m.Hist.summary()
			what := p.Echo
			if p.Echo == EchoWork {
				what = "messages, and " + w.SoftwareOp + " per item"
			}
			pt.Transport = &Limit{Op: fmt.Sprintf("gRPC echo (%s) of %d B requests, %d B responses", what, pt.ReqBytes, pt.RespBytes),
				ItemsPerS: m.itemsPerSec(), Concurrency: p.Concurrency, P50: s.P50, P99: s.P99, OtherCores: m.otherCores()}
			if m.Items > 0 {
				pt.Transport.CPUPerItem = float64(m.CPU.Microseconds()) / float64(m.Items)
			}
			logf("bench: transport limit at batch %d: %.0f items/s", pt.Batch, pt.Transport.ItemsPerS)
		}
	}

	// The scenario.
	if o.StartProfile != nil {
		if err := o.StartProfile(); err != nil {
			return nil, err
		}
		defer o.StopProfile()
	}
	for i := range r.Points {
		pt := &r.Points[i]
		rq := reqs[i]
		interval := p.dur(p.Interval)
		scenarioOp := func(ctx context.Context, wk int) (int, error) {
			if _, err := rq.Call(ctx, o.Env.Conns[wk%len(o.Env.Conns)]); err != nil {
				return 0, err
			}
			return rq.items(pt.Batch), nil
		}
		m, err := load{Label: fmt.Sprintf("%s b=%d", p.Scenario, pt.Batch), Concurrency: p.Concurrency,
			Warmup: p.dur(p.Warmup), Duration: p.dur(p.Duration), Interval: interval, Progress: o.Progress, Proc: o.Proc,
		}.run(ctx, scenarioOp)
		if err != nil {
			return nil, err
		}
		pt.Requests, pt.Items, pt.Elapsed = m.Requests, m.Items, ms(m.Elapsed)
		pt.ItemsPerS = m.itemsPerSec()
		pt.MBPerS = float64(m.Requests) * float64(pt.ReqBytes+pt.RespBytes) / m.Elapsed.Seconds() / 1e6
		pt.Latency = m.Hist.summary()
		if m.Items > 0 {
			pt.CPUPerItem = float64(m.CPU.Microseconds()) / float64(m.Items)
		}
		pt.CPUUtil = m.CPU.Seconds() / m.Elapsed.Seconds()
		pt.OtherCores = m.otherCores()
		_, pt.PeakRSS, _ = o.Proc.Mem()
		pt.Windows = m.Windows
		r.ratios(pt)
		switch {
		case p.Paired == 0:
		case p.PairWith == PairHSM && w.HSM != nil && r.HSM != nil:
			hsm := func(ctx context.Context, _ int) (int, error) { return 1, w.HSM(ctx) }
			if pt.Paired, err = paired(ctx, p, pt.Batch, PairHSM, r.HSM.Concurrency, o.Progress, scenarioOp, hsm, nil); err != nil {
				return nil, err
			}
		case p.PairWith == PairTransport && echoOps != nil:
			if pt.Paired, err = paired(ctx, p, pt.Batch, PairTransport, p.Concurrency, o.Progress, scenarioOp, echoOps[i], echoShapes[i]); err != nil {
				return nil, err
			}
		}
		logf("bench: %s batch %d: %.0f items/s, p99 %.3f ms", p.Scenario, pt.Batch, pt.ItemsPerS, pt.Latency.P99)
	}
	r.Host.LoadEnd = loadAvg()
	return r, nil
}

// oneOf checks the value of flag in *v against def and alts; empty means def.
func oneOf(v *string, flag, def string, alts ...string) error {
	switch {
	case *v == "":
		*v = def
	case *v == def || slices.Contains(alts, *v):
	default:
		all := append([]string{def}, alts...)
		return fmt.Errorf("bench: %s %q: want %s or %s", flag, *v, strings.Join(all[:len(all)-1], ", "), all[len(all)-1])
	}
	return nil
}

// loadAvg reads /proc/loadavg (zeros if unreadable).
func loadAvg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}

// paired runs the scenario (op) and a limit (with: PairHSM or
// PairTransport, lim at concurrency limConc) in turns, p.Paired rounds of
// p.PairSlice each, alternating which goes first, and returns their rates
// and ratio: both then see the same machine, whose speed on a shared VM
// moves by tens of percent within seconds. prep (if any) runs before each
// turn of the limit.
func paired(ctx context.Context, p Params, batch int, with string, limConc int, progress io.Writer, op, lim op, prep func()) (*Paired, error) {
	slice := p.dur(p.PairSlice)
	var sItems, hItems uint64
	var sTime, hTime time.Duration
	scenario := func(k int) error {
		m, err := load{Label: fmt.Sprintf("paired %d/%d b=%d: scenario", k+1, p.Paired, batch), Concurrency: p.Concurrency,
			Warmup: pairWarmup, Duration: slice, Progress: progress}.run(ctx, op)
		if err != nil {
			return err
		}
		sItems, sTime = sItems+m.Items, sTime+m.Elapsed
		return nil
	}
	limit := func(k int) error {
		if prep != nil {
			prep()
		}
		m, err := load{Label: fmt.Sprintf("paired %d/%d b=%d: %s limit", k+1, p.Paired, batch, with), Concurrency: limConc,
			Warmup: pairWarmup, Duration: slice, Progress: progress}.run(ctx, lim)
		if err != nil {
			return err
		}
		hItems, hTime = hItems+m.Items, hTime+m.Elapsed
		return nil
	}
	for k := range p.Paired {
		first, second := scenario, limit
		if k%2 == 1 {
			first, second = limit, scenario
		}
		if err := first(k); err != nil {
			return nil, err
		}
		if err := second(k); err != nil {
			return nil, err
		}
	}
	pr := &Paired{Rounds: p.Paired, Slice: p.PairSlice, With: with, HSMConcurrency: limConc}
	if sTime > 0 {
		pr.ItemsPerS = float64(sItems) / sTime.Seconds()
	}
	if hTime > 0 {
		pr.HSMItemsPerS = float64(hItems) / hTime.Seconds()
	}
	pr.Ratio = Ratio(pr.ItemsPerS, pr.HSMItemsPerS)
	return pr, nil
}
