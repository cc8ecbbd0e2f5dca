package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Schema names the JSON layout; bump it when a field changes meaning.
const Schema = "hsmgate-bench/v1"

// Result is one run: its parameters, the same-run limits, and one Point per
// batch size.
type Result struct {
	Schema   string    `json:"schema"`
	Date     time.Time `json:"date"`
	Command  string    `json:"command"`
	Host     Host      `json:"host"`
	Target   string    `json:"target"`
	Security string    `json:"security"`
	Describe string    `json:"describe"`
	Params   Params    `json:"params"`
	Software *Limit    `json:"software_limit,omitempty"`
	HSM      *Limit    `json:"hsm_limit,omitempty"`
	Points   []Point   `json:"points"`
	Notes    []string  `json:"notes,omitempty"`
}

// Host describes the machine.
type Host struct {
	Hostname  string     `json:"hostname"`
	CPUs      int        `json:"cpus"`
	GoVersion string     `json:"go_version"`
	LoadStart [3]float64 `json:"loadavg_start"`
	LoadEnd   [3]float64 `json:"loadavg_end"`
	ServerPID int        `json:"server_pid,omitempty"`
	InProcess bool       `json:"in_process"`
}

// Limit is a measured ceiling in items per second.
type Limit struct {
	Op          string  `json:"op"`
	ItemsPerS   float64 `json:"items_per_s"`
	Concurrency int     `json:"concurrency"`
	// P50 and P99 of one call (one item, or one request for transport).
	P50 Millis `json:"p50_ms"`
	P99 Millis `json:"p99_ms"`
	// OtherCores is the CPU other processes used meanwhile, in cores (noise).
	OtherCores float64 `json:"other_cores"`
	// CPUPerItem is this process's CPU per item in µs, for the transport
	// limit (echo client and server both run here): beside the in-process
	// scenario's own CPU per item, a ratio that a busy machine moves less
	// than the throughputs (0: not measured).
	CPUPerItem float64 `json:"cpu_us_per_item,omitempty"`
}

// Ratios are a point's throughput over each limit (0: not measured).
type Ratios struct {
	Software  float64 `json:"software"`
	HSM       float64 `json:"hsm"`
	Transport float64 `json:"transport"`
}

// Point is the scenario at one batch size.
type Point struct {
	Batch      int     `json:"batch"`
	ReqBytes   int     `json:"request_bytes"`
	RespBytes  int     `json:"response_bytes"`
	Requests   uint64  `json:"requests"`
	Items      uint64  `json:"items"`
	Elapsed    Millis  `json:"elapsed_ms"`
	ItemsPerS  float64 `json:"items_per_s"`
	MBPerS     float64 `json:"mb_per_s"` // request+response message bytes, 1e6 per MB
	Latency    Latency `json:"latency"`  // per request
	CPUPerItem float64 `json:"cpu_us_per_item"`
	CPUUtil    float64 `json:"cpu_cores"`
	PeakRSS    int64   `json:"peak_rss_bytes"`
	// OtherCores is the CPU other processes used meanwhile, in cores: the
	// noise (this machine has Host.CPUs cores for everything).
	OtherCores float64  `json:"other_cores"`
	Transport  *Limit   `json:"transport_limit,omitempty"`
	Ratio      Ratios   `json:"ratio"`
	Windows    []Window `json:"windows,omitempty"`
	// Paired is the scenario and the HSM limit measured in turns (--paired).
	Paired *Paired `json:"paired,omitempty"`
}

// Paired is a batch size's scenario and the HSM limit (at the concurrency
// that won the limit) run in turns: Rounds rounds of Slice each, the order
// alternating. The separate measurements above run tens of seconds apart;
// these see the same machine, so their ratio is the steadier one where the
// machine's speed moves (a shared VM).
type Paired struct {
	Rounds int    `json:"rounds"`
	Slice  Millis `json:"slice_ms"`
	// With is the limit: PairHSM ("" in results from before it was
	// chosen) or PairTransport. HSMConcurrency and HSMItemsPerS are that
	// limit's, whichever it is (their names are from when it was the HSM's).
	With           string  `json:"with,omitempty"`
	HSMConcurrency int     `json:"hsm_concurrency"`
	ItemsPerS      float64 `json:"items_per_s"`
	HSMItemsPerS   float64 `json:"hsm_items_per_s"`
	Ratio          float64 `json:"ratio"`
}

// limitName is the paired limit's name in tables.
func (p *Paired) limitName() string {
	if p.With == PairTransport {
		return "transport"
	}
	return "HSM"
}

// WriteJSON writes r indented.
func (r *Result) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// ReadJSON reads a Result written by WriteJSON.
func ReadJSON(rd io.Reader) (*Result, error) {
	var r Result
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: read result: %w", err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("bench: read result: schema %q, want %q", r.Schema, Schema)
	}
	return &r, nil
}

// ratios fills p.Ratio from the limits.
func (r *Result) ratios(p *Point) {
	if r.Software != nil {
		p.Ratio.Software = Ratio(p.ItemsPerS, r.Software.ItemsPerS)
	}
	if r.HSM != nil {
		p.Ratio.HSM = Ratio(p.ItemsPerS, r.HSM.ItemsPerS)
	}
	if p.Transport != nil {
		p.Ratio.Transport = Ratio(p.ItemsPerS, p.Transport.ItemsPerS)
	}
}

func (m *measured) otherCores() float64 {
	if m.Elapsed <= 0 {
		return 0
	}
	return m.Other.Seconds() / m.Elapsed.Seconds()
}
