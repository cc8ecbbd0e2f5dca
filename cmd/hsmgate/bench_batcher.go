package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/client"
)

// runBatcherBench is `hsmgate bench transit-encrypt --client batcher`.
func runBatcherBench(ctx context.Context, g *globals, f *benchFlags, scenario string, o client.Options, target string) error {
	if f.client != bench.ClientBatcher || scenario != "transit-encrypt" {
		return usageError{fmt.Errorf("--client %q: only transit-encrypt --client %s is served", f.client, bench.ClientBatcher)}
	}
	p := bench.BatcherParams{Goroutines: f.concurrency, Payload: f.payload, MaxItems: f.batch,
		Duration: millis(f.duration), Warmup: millis(f.warmup), MaxWait: millis(f.maxWait),
		Prefix: fmt.Sprintf("%d-%d", os.Getpid(), time.Now().Unix())}
	if p.MaxItems <= 1 {
		p.MaxItems = 64
	}
	if p.Goroutines < bench.MinBatcherGoroutines {
		return usageError{fmt.Errorf("--client batcher: --concurrency %d: want %d or more", p.Goroutines, bench.MinBatcherGoroutines)}
	}
	r, err := bench.RunBatcher(ctx, o, target, p, g.stderr)
	if err != nil {
		return err
	}
	if err := r.WriteTable(g.stdout); err != nil {
		return err
	}
	if f.jsonOut == "" {
		return nil
	}
	jf, err := os.Create(f.jsonOut)
	if err != nil {
		return err
	}
	defer jf.Close()
	return r.WriteJSON(jf)
}
