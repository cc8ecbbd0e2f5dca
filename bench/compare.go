package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"
)

// CompareOptions configure Compare.
type CompareOptions struct {
	Params Params
	// Env is the hsmgate side (gRPC).
	Env *Env
	// Proc is hsmgate's process (for its CPU per item; PID 0: this one).
	Proc Proc
	// Vault is the Vault-API side and Names its mounts and object names.
	Vault *VaultClient
	Names VaultNames
	// VaultInProcess: the Vault side is served by this process too (hsmgate's
	// own door, in process), so its CPU per item is measured as well.
	VaultInProcess bool
	// Progress gets the live line, Log one line per phase (nil: none).
	Progress, Log io.Writer
	// Command and Target are recorded.
	Command, Target string
}

// CompareSchema names the JSON of a CompareResult.
const CompareSchema = "hsmgate-bench-compare/v1"

// CompareResult is one `hsmgate bench compare` run.
type CompareResult struct {
	Schema    string       `json:"schema"`
	Date      time.Time    `json:"date"`
	Command   string       `json:"command,omitempty"`
	Target    string       `json:"target"`
	VaultAddr string       `json:"vault_addr"`
	Describe  string       `json:"describe"`
	Params    Params       `json:"params"`
	Host      Host         `json:"host"`
	Rows      []CompareRow `json:"rows"`
	Notes     []string     `json:"notes,omitempty"`
}

// CompareRow is one batch size on both sides.
type CompareRow struct {
	Batch   int         `json:"batch"`
	HSMGate CompareSide `json:"hsmgate"`
	Vault   CompareSide `json:"vault"`
	// Ratio is hsmgate's items/s over the Vault side's.
	Ratio float64 `json:"ratio"`
}

// CompareSide is one side's measurement.
type CompareSide struct {
	ItemsPerRequest int     `json:"items_per_request"`
	ItemsPerS       float64 `json:"items_per_s"`
	ReqPerS         float64 `json:"requests_per_s"`
	Latency         Latency `json:"latency"`
	// CPUPerItem is the serving process's CPU per item in µs (0: not measured).
	CPUPerItem float64 `json:"cpu_us_per_item,omitempty"`
	OtherCores float64 `json:"other_cores"`
}

// Compare runs a scenario against hsmgate over gRPC and the same workload
// against a Vault-API server over HTTP, batch size by batch size, the two
// sides one after the other (their order alternating from one batch size
// to the next), with the same payload, concurrency, warm-up and duration.
func Compare(ctx context.Context, o CompareOptions) (*CompareResult, error) {
	p := o.Params
	if err := p.Check(); err != nil {
		return nil, err
	}
	if o.Env == nil || len(o.Env.Conns) == 0 || o.Vault == nil {
		return nil, errors.New("bench: compare: no connections")
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	names := o.Names.withDefaults()
	host, _ := os.Hostname()
	r := &CompareResult{Schema: CompareSchema, Date: time.Now().UTC(), Command: o.Command, Target: o.Target,
		VaultAddr: o.Vault.Addr, Params: p,
		Host: Host{Hostname: host, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadAvg(),
			ServerPID: o.Proc.PID, InProcess: o.Proc.PID == 0}}
	w, err := scenarios[p.Scenario].prepare(ctx, o.Env, p)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if w.Vault == nil {
		return nil, fmt.Errorf("bench: compare: scenario %s has no Vault API form (compare: transit-encrypt, transit-sign, pki-sign, ssh-sign)", p.Scenario)
	}
	r.Describe = w.Describe
	if w.VaultSetup != nil {
		_ = o.Vault.do(ctx, w.VaultSetup(names)) // best effort; the first call below tells
	}
	for i, b := range p.Sweep {
		rq, err := w.Request(b)
		if err != nil {
			return nil, err
		}
		if _, err := rq.Call(ctx, o.Env.Conns[0]); err != nil {
			return nil, fmt.Errorf("bench: %s: first call: %w", p.Scenario, err)
		}
		vr, err := w.Vault(b, names)
		if err != nil {
			return nil, err
		}
		if err := o.Vault.do(ctx, vr); err != nil {
			return nil, fmt.Errorf("bench: compare: first Vault call (does the key or role exist there? --vault-key, --vault-role): %w", err)
		}
		if vr.Items != b {
			r.Notes = append(r.Notes, fmt.Sprintf("batch %d: the Vault API has no batch form for this operation: one item per request there", b))
		}
		hsmgateOp := func(ctx context.Context, wk int) (int, error) {
			if _, err := rq.Call(ctx, o.Env.Conns[wk%len(o.Env.Conns)]); err != nil {
				return 0, err
			}
			return b, nil
		}
		vaultOp := func(ctx context.Context, _ int) (int, error) {
			if err := o.Vault.do(ctx, vr); err != nil {
				return 0, err
			}
			return vr.Items, nil
		}
		mk := func(label string) load {
			return load{Label: label, Concurrency: p.Concurrency, Warmup: p.dur(p.Warmup), Duration: p.dur(p.Duration),
				Progress: o.Progress, Proc: o.Proc}
		}
		row := CompareRow{Batch: b}
		runSide := func(vault bool) error {
			if vault {
				m, err := mk(fmt.Sprintf("vault b=%d", b)).run(ctx, vaultOp)
				if err != nil {
					return err
				}
				row.Vault = side(m, vr.Items, o.VaultInProcess)
				return nil
			}
			m, err := mk(fmt.Sprintf("hsmgate b=%d", b)).run(ctx, hsmgateOp)
			if err != nil {
				return err
			}
			row.HSMGate = side(m, b, true)
			return nil
		}
		first := i%2 == 1 // alternate which side runs first
		if err := runSide(first); err != nil {
			return nil, err
		}
		if err := runSide(!first); err != nil {
			return nil, err
		}
		row.Ratio = Ratio(row.HSMGate.ItemsPerS, row.Vault.ItemsPerS)
		r.Rows = append(r.Rows, row)
		logf("bench: compare %s batch %d: hsmgate %.0f items/s, vault %.0f items/s (%.2fx)",
			p.Scenario, b, row.HSMGate.ItemsPerS, row.Vault.ItemsPerS, row.Ratio)
	}
	r.Host.LoadEnd = loadAvg()
	return r, nil
}

func side(m *measured, perReq int, cpu bool) CompareSide {
	s := CompareSide{ItemsPerRequest: perReq, ItemsPerS: m.itemsPerSec(), Latency: m.Hist.summary(), OtherCores: m.otherCores()}
	if m.Elapsed > 0 {
		s.ReqPerS = float64(m.Requests) / m.Elapsed.Seconds()
	}
	if cpu && m.Items > 0 {
		s.CPUPerItem = float64(m.CPU.Microseconds()) / float64(m.Items)
	}
	return s
}

// WriteJSON writes r as indented JSON.
func (r *CompareResult) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteTable writes r as a table: both sides of each batch size and their ratio.
func (r *CompareResult) WriteTable(out io.Writer) error {
	p := r.Params
	fmt.Fprintf(out, "compare %s: %s\n", p.Scenario, r.Describe)
	fmt.Fprintf(out, "date %s  host %s (%d CPUs, %s)  load %.2f %.2f %.2f -> %.2f %.2f %.2f\n",
		r.Date.Format("2006-01-02 15:04:05Z"), r.Host.Hostname, r.Host.CPUs, r.Host.GoVersion,
		r.Host.LoadStart[0], r.Host.LoadStart[1], r.Host.LoadStart[2], r.Host.LoadEnd[0], r.Host.LoadEnd[1], r.Host.LoadEnd[2])
	fmt.Fprintf(out, "hsmgate: %s (gRPC)\nvault:   %s (Vault HTTP API, JSON)\n", r.Target, r.VaultAddr)
	fmt.Fprintf(out, "payload %d B  concurrency %d  duration %s  warm-up %s\n", p.Payload, p.Concurrency,
		p.dur(p.Duration), p.dur(p.Warmup))
	if r.Command != "" {
		fmt.Fprintf(out, "command: %s\n", r.Command)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\tside\titems/req\titems/s\treq/s\tp50 ms\tp99 ms\tCPU µs/item\tother cores\thsmgate/vault\t")
	cpu := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	for _, row := range r.Rows {
		for i, s := range []CompareSide{row.HSMGate, row.Vault} {
			name, ratio := "hsmgate", fmt.Sprintf("%.2fx", row.Ratio)
			if i == 1 {
				name, ratio = "vault", ""
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f\t%.0f\t%.3f\t%.3f\t%s\t%.2f\t%s\t\n", row.Batch, name, s.ItemsPerRequest,
				s.ItemsPerS, s.ReqPerS, float64(s.Latency.P50), float64(s.Latency.P99), cpu(s.CPUPerItem), s.OtherCores, ratio)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range r.Notes {
		fmt.Fprintf(out, "note: %s\n", n)
	}
	return nil
}
