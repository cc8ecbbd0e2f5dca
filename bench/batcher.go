package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/hsmgate/hsmgate/client"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// ClientBatcher is the --client value of transit-encrypt that measures
// client.Batcher against the same goroutines calling one item per RPC.
const ClientBatcher = "batcher"

// MinBatcherGoroutines is the fewest goroutines the batcher comparison
// runs with: batching pays off when many callers each have one item.
const MinBatcherGoroutines = 64

// BatcherParams are the knobs of RunBatcher.
type BatcherParams struct {
	Goroutines int    `json:"goroutines"`
	Payload    int    `json:"payload_bytes"`
	Duration   Millis `json:"duration_ms"` // measured time of each mode
	Warmup     Millis `json:"warmup_ms"`   // unmeasured time before it
	MaxItems   int    `json:"max_items"`   // client.BatcherOptions.MaxItems
	MaxWait    Millis `json:"max_wait_ms"` // client.BatcherOptions.MaxWait
	Prefix     string `json:"-"`           // makes the key name unique
}

// BatcherRow is one mode's measurement: per caller (an Encrypt call of
// one item) and per RPC.
type BatcherRow struct {
	Mode        string  `json:"mode"`
	Items       uint64  `json:"items"`
	ItemsPerSec float64 `json:"items_per_sec"`
	Caller      Latency `json:"caller_latency"`
	RPCs        uint64  `json:"rpcs"`
	RPC         Latency `json:"rpc_latency"`
}

// BatcherResult compares the modes of one run.
type BatcherResult struct {
	Target string        `json:"target"`
	Params BatcherParams `json:"params"`
	Rows   []BatcherRow  `json:"rows"` // unbatched, then batcher
	// Speedup is the batcher's items/s over the unbatched items/s.
	Speedup float64 `json:"speedup"`
	// P99Bound is MaxWait plus the p99 of one batch RPC: the bound the
	// batcher's caller p99 is compared with.
	P99Bound    Millis `json:"p99_bound_ms"`
	WithinBound bool   `json:"p99_within_bound"`
}

// rpcRecorder records the latency of Encrypt RPCs while on.
type rpcRecorder struct {
	mu sync.Mutex
	on bool
	h  hist
}

func (r *rpcRecorder) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	t0 := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	if method == hsmgatev1.TransitService_Encrypt_FullMethodName {
		r.mu.Lock()
		if r.on {
			r.h.record(time.Since(t0))
		}
		r.mu.Unlock()
	}
	return err
}

func (r *rpcRecorder) set(on bool) (h hist) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on, h = on, r.h
	if on {
		r.h = hist{}
	}
	return h
}

// RunBatcher runs transit-encrypt (aes256-gcm, wrapped) twice with the same
// p.Goroutines goroutines, each sending one item per call in a loop: first
// unbatched (client.Transit.Encrypt, one RPC per item), then through one
// client.Batcher shared by all of them, on one connection of o.
func RunBatcher(ctx context.Context, o client.Options, target string, p BatcherParams, progress io.Writer) (*BatcherResult, error) {
	if p.Goroutines < MinBatcherGoroutines {
		return nil, fmt.Errorf("bench: --client batcher needs --concurrency %d or more, got %d", MinBatcherGoroutines, p.Goroutines)
	}
	rec := &rpcRecorder{}
	o.DialOptions = append(o.DialOptions, grpc.WithChainUnaryInterceptor(rec.intercept))
	c, err := client.New(ctx, o)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	key := "bench-batcher-" + p.Prefix
	if _, err := c.Transit.Stub().CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: key,
		Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, DeletionAllowed: true}); err != nil {
		return nil, fmt.Errorf("bench: create key: %w", err)
	}
	defer c.Transit.Stub().DeleteKey(context.Background(), &hsmgatev1.DeleteKeyRequest{Name: key})

	msg := payload(p.Payload)
	res := &BatcherResult{Target: target, Params: p}
	fmt.Fprintf(progress, "bench: transit-encrypt, %d goroutines, one item each per call: unbatched\n", p.Goroutines)
	row, err := measureCallers(ctx, p, rec, func(ctx context.Context) error {
		_, err := c.Transit.Encrypt(ctx, key, msg)
		return err
	})
	if err != nil {
		return nil, err
	}
	row.Mode = "unbatched"
	res.Rows = append(res.Rows, row)

	fmt.Fprintf(progress, "bench: the same through client.Batcher (max %d items, max wait %v)\n", p.MaxItems, time.Duration(float64(p.MaxWait)*1e6))
	b := c.Transit.Batcher(key, client.BatcherOptions{MaxItems: p.MaxItems, MaxWait: time.Duration(float64(p.MaxWait) * 1e6)})
	row, err = measureCallers(ctx, p, rec, func(ctx context.Context) error {
		_, err := b.Encrypt(ctx, msg, nil)
		return err
	})
	b.Close()
	if err != nil {
		return nil, err
	}
	row.Mode = "batcher"
	res.Rows = append(res.Rows, row)

	un, bt := res.Rows[0], res.Rows[1]
	res.Speedup = Ratio(bt.ItemsPerSec, un.ItemsPerSec)
	res.P99Bound = p.MaxWait + bt.RPC.P99
	res.WithinBound = bt.Caller.P99 <= res.P99Bound
	return res, nil
}

// measureCallers runs call from p.Goroutines goroutines in a loop: warmup,
// then the measured duration.
func measureCallers(ctx context.Context, p BatcherParams, rec *rpcRecorder, call func(context.Context) error) (BatcherRow, error) {
	warm := time.Duration(float64(p.Warmup) * 1e6)
	dur := time.Duration(float64(p.Duration) * 1e6)
	start := time.Now()
	measureFrom, stop := start.Add(warm), start.Add(warm+dur)
	ctx, cancel := context.WithDeadline(ctx, stop.Add(30*time.Second))
	defer cancel()

	hs := make([]hist, p.Goroutines)
	errs := make([]error, p.Goroutines)
	var wg sync.WaitGroup
	recOn := make(chan struct{})
	go func() {
		time.Sleep(time.Until(measureFrom))
		rec.set(true)
		close(recOn)
	}()
	for w := range p.Goroutines {
		wg.Go(func() {
			for {
				t0 := time.Now()
				if !t0.Before(stop) {
					return
				}
				if err := call(ctx); err != nil {
					errs[w] = err
					return
				}
				if t1 := time.Now(); !t0.Before(measureFrom) && !t1.After(stop) {
					hs[w].record(t1.Sub(t0))
				}
			}
		})
	}
	wg.Wait()
	<-recOn
	rpcs := rec.set(false)
	var all hist
	for i := range hs {
		if errs[i] != nil {
			return BatcherRow{}, fmt.Errorf("bench: goroutine %d: %w", i, errs[i])
		}
		all.merge(&hs[i])
	}
	return BatcherRow{Items: all.n, ItemsPerSec: float64(all.n) / dur.Seconds(), Caller: all.summary(),
		RPCs: rpcs.n, RPC: rpcs.summary()}, nil
}

// WriteTable prints the two rows and the comparison.
func (r *BatcherResult) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "transit-encrypt --client batcher: %d goroutines, %d-byte items, %v measured per mode; %s\n",
		r.Params.Goroutines, r.Params.Payload, time.Duration(float64(r.Params.Duration)*1e6), r.Target)
	fmt.Fprintf(w, "%-10s %12s %10s %10s %10s %10s %12s\n", "mode", "items/s", "p50 ms", "p99 ms", "rpcs", "items/rpc", "rpc p99 ms")
	for _, row := range r.Rows {
		per := 0.0
		if row.RPCs > 0 {
			per = float64(row.Items) / float64(row.RPCs)
		}
		fmt.Fprintf(w, "%-10s %12.0f %10.2f %10.2f %10d %10.1f %12.2f\n", row.Mode, row.ItemsPerSec,
			float64(row.Caller.P50), float64(row.Caller.P99), row.RPCs, per, float64(row.RPC.P99))
	}
	_, err := fmt.Fprintf(w, "batcher/unbatched items/s: %.1fx; batcher p99 %.2f ms vs bound max-wait + batch rpc p99 = %.2f ms: within=%v\n",
		r.Speedup, float64(r.Rows[1].Caller.P99), float64(r.P99Bound), r.WithinBound)
	return err
}

// WriteJSON writes the result as indented JSON.
func (r *BatcherResult) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}
