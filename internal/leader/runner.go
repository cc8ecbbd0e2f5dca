package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/errs"
)

// Job is one background job. Run does one pass and returns how many things
// it changed (keys rotated, CRLs rebuilt, records deleted; -1 when it does
// not count). It must be idempotent and safe to stop at any point (its ctx
// is cancelled when the lead is lost) and to re-run from the start on
// another replica.
type Job struct {
	Name     string
	Interval time.Duration
	Run      func(ctx context.Context) (int, error)
}

// Auditor receives one line per job run and per change of leadership
// (internal/audit.Log implements it).
type Auditor interface {
	Write(e *audit.Entry) error
}

// RunnerConfig configures NewRunner.
type RunnerConfig struct {
	// Elector decides when this replica leads (required).
	Elector Elector
	// Logger (default slog.Default()). Give one that names the replica
	// (the server's does: every line carries replica=<id>).
	Logger *slog.Logger
	// Audit, when set, gets the job and leadership lines.
	Audit Auditor
	// Registerer receives hsmgate_leader, hsmgate_leader_live_replicas and
	// hsmgate_leader_job_runs_total. Nil: not registered.
	Registerer prometheus.Registerer
	// LiveInterval is how often the count of live replicas is refreshed
	// (default the Elector's TTL / 2).
	LiveInterval time.Duration
}

// Runner runs jobs while its replica leads.
type Runner struct {
	el    Elector
	log   *slog.Logger
	audit Auditor
	id    string
	every time.Duration

	leaderG prometheus.Gauge
	liveG   prometheus.Gauge
	runs    *prometheus.CounterVec

	live    atomic.Int64
	leading atomic.Bool

	mu      sync.Mutex
	jobs    []Job
	termCtx context.Context // non-nil while leading: Add starts jobs in it
	termWG  *sync.WaitGroup
	started bool

	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
}

// NewRunner returns a Runner; jobs run after Start.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.Elector == nil {
		return nil, errors.New("leader: runner: no elector")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LiveInterval <= 0 {
		cfg.LiveInterval = cfg.Elector.TTL() / 2
	}
	id := cfg.Elector.ReplicaID()
	r := &Runner{
		el: cfg.Elector, log: cfg.Logger, audit: cfg.Audit, id: id, every: cfg.LiveInterval,
		leaderG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hsmgate_leader", Help: "1 while this replica leads the background jobs, else 0.",
			ConstLabels: prometheus.Labels{"replica": id},
		}),
		liveG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hsmgate_leader_live_replicas", Help: "Replicas whose lease is alive, as last seen by this replica.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_leader_job_runs_total", Help: "Background job runs on this replica, by job and result (ok, error, stopped).",
		}, []string{"job", "result"}),
		done: make(chan struct{}),
	}
	r.live.Store(1)
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.leaderG, r.liveG, r.runs} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("leader: metrics: %w", err)
			}
		}
	}
	return r, nil
}

// ReplicaID is this replica's ID.
func (r *Runner) ReplicaID() string { return r.id }

// IsLeader reports whether this replica leads now.
func (r *Runner) IsLeader() bool { return r.leading.Load() }

// LiveReplicas is the number of live replicas last seen (at least 1).
func (r *Runner) LiveReplicas() int { return int(max(r.live.Load(), 1)) }

// Add registers a job; while leading it starts at once. Names are unique.
func (r *Runner) Add(j Job) error {
	if j.Name == "" || j.Interval <= 0 || j.Run == nil {
		return fmt.Errorf("leader: job %q: name, positive interval and Run required", j.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.jobs {
		if o.Name == j.Name {
			return fmt.Errorf("leader: job %q added twice", j.Name)
		}
	}
	r.jobs = append(r.jobs, j)
	if r.termCtx != nil {
		r.termWG.Go(func() { r.loop(r.termCtx, j) })
	}
	return nil
}

// Start campaigns in the background until Close.
func (r *Runner) Start(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return
	}
	r.started = true
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go r.watchLive(ctx)
	go func() {
		defer close(r.done)
		r.campaign(ctx)
	}()
}

// Close stops the jobs (waiting for running passes to see their ctx
// cancelled), resigns, and closes the Elector.
func (r *Runner) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if started {
		r.cancel()
		<-r.done
	}
	return r.el.Close()
}

func (r *Runner) watchLive(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		ids, err := r.el.Live(ctx)
		if err == nil {
			r.live.Store(int64(len(ids)))
			r.liveG.Set(float64(len(ids)))
		} else if ctx.Err() == nil {
			r.log.Debug("leader: live replicas unknown", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runner) campaign(ctx context.Context) {
	for ctx.Err() == nil {
		term, err := r.el.Campaign(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("leader: campaign stopped", "err", err)
			}
			return
		}
		r.lead(ctx, term)
	}
}

// lead runs every job until the term ends or ctx is done, then waits for
// the jobs to stop.
func (r *Runner) lead(ctx context.Context, term Term) {
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	r.mu.Lock()
	r.termCtx, r.termWG = tctx, &wg
	for _, j := range r.jobs {
		wg.Go(func() { r.loop(tctx, j) })
	}
	r.mu.Unlock()
	r.leading.Store(true)
	r.leaderG.Set(1)
	r.log.Info("leader: this replica leads the background jobs")
	r.auditLine("leader/acquire", 0, nil, 0)

	lost := false
	select {
	case <-term.Done():
		lost = true
	case <-ctx.Done():
	}
	r.leading.Store(false)
	r.leaderG.Set(0)
	r.mu.Lock()
	r.termCtx, r.termWG = nil, nil
	r.mu.Unlock()
	cancel()
	wg.Wait()
	if lost {
		r.log.Warn("leader: lead lost (lease expired or store unreachable); jobs stopped")
		r.auditLine("leader/lose", 0, errLeadLost, 0)
		return
	}
	rctx, rcancel := context.WithTimeout(context.Background(), r.el.TTL())
	defer rcancel()
	if err := term.Resign(rctx); err != nil {
		r.log.Warn("leader: resign", "err", err)
	}
	r.auditLine("leader/resign", 0, nil, 0)
}

var errLeadLost = errs.New(errs.Unavailable, "leader: lead lost")

// loop runs j at once, then every j.Interval, until ctx is done.
func (r *Runner) loop(ctx context.Context, j Job) {
	t := time.NewTicker(j.Interval)
	defer t.Stop()
	for {
		r.runOnce(ctx, j)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runner) runOnce(ctx context.Context, j Job) {
	if ctx.Err() != nil {
		return
	}
	start := time.Now()
	n, err := j.Run(ctx)
	took := time.Since(start)
	result := "ok"
	switch {
	case err != nil && ctx.Err() != nil:
		result = "stopped"
		r.log.Info("leader: job stopped with the lead", "job", j.Name, "err", err)
	case err != nil:
		result = "error"
		r.log.Error("leader: job failed", "job", j.Name, "err", err, "took", took)
	case n > 0:
		r.log.Info("leader: job done", "job", j.Name, "changed", n, "took", took)
	default:
		r.log.Debug("leader: job done", "job", j.Name, "changed", n, "took", took)
	}
	r.runs.WithLabelValues(j.Name, result).Inc()
	r.auditLine("job/"+j.Name, n, err, took)
}

// auditLine writes one audit line naming this replica; a failure to write
// is logged (a job that ran stays run).
func (r *Runner) auditLine(method string, n int, err error, took time.Duration) {
	if r.audit == nil {
		return
	}
	code := "OK"
	if err != nil {
		code = errs.Code(err).String()
	}
	e := &audit.Entry{
		Type:      "job",
		Identity:  &audit.Identity{Name: r.id, Kind: "replica"},
		Method:    method,
		Items:     max(n, 0),
		Code:      code,
		LatencyMS: float64(took.Microseconds()) / 1000,
		Extra:     map[string]string{"replica": r.id},
	}
	if werr := r.audit.Write(e); werr != nil {
		r.log.Error("leader: audit line not written", "method", method, "err", werr)
	}
}
