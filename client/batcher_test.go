package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// batchTransit is a transit server that "encrypts" by prefixing "ct:",
// fails items whose plaintext is "bad", records each RPC's item count, and
// can hold RPCs until released.
type batchTransit struct {
	pb.UnimplementedTransitServiceServer
	wholeCall codes.Code    // non-OK: fail every call with it
	hold      chan struct{} // non-nil: each RPC waits for a receive
	entered   chan struct{} // non-nil: signalled when an RPC starts

	mu      sync.Mutex
	batches []int
}

func (s *batchTransit) Encrypt(ctx context.Context, r *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.hold != nil {
		<-s.hold
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(r.GetItems()))
	s.mu.Unlock()
	if s.wholeCall != codes.OK {
		return nil, grpcstatus.Error(s.wholeCall, "whole call")
	}
	resp := &pb.EncryptResponse{}
	for _, it := range r.GetItems() {
		if string(it.GetPlaintext()) == "bad" {
			resp.Results = append(resp.Results, &pb.EncryptResult{Error: &status.Status{Code: int32(codes.InvalidArgument), Message: "bad item"}})
			continue
		}
		resp.Results = append(resp.Results, &pb.EncryptResult{Ciphertext: append([]byte("ct:"), it.GetPlaintext()...), KeyVersion: 1})
	}
	return resp, nil
}

func (s *batchTransit) Decrypt(ctx context.Context, r *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	s.mu.Lock()
	s.batches = append(s.batches, len(r.GetItems()))
	s.mu.Unlock()
	resp := &pb.DecryptResponse{}
	for _, it := range r.GetItems() {
		resp.Results = append(resp.Results, &pb.DecryptResult{Plaintext: bytes.TrimPrefix(it.GetCiphertext(), []byte("ct:")), KeyVersion: 1})
	}
	return resp, nil
}

func newBatchClient(t *testing.T, s *batchTransit) *Client {
	t.Helper()
	o := serve(t, func(g *grpc.Server) { pb.RegisterTransitServiceServer(g, s) })
	o.Retry = RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	c, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run calls fn from n goroutines at once and returns their errors.
func run(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return errs
}

func TestBatcherGathersConcurrentCalls(t *testing.T) {
	s := &batchTransit{}
	c := newBatchClient(t, s)
	// MaxWait is far longer than the test: the batch is sent because it is full.
	b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 64, MaxWait: time.Hour})
	defer b.Close()
	errs := run(64, func(i int) error {
		msg := fmt.Sprintf("m%d", i)
		ct, err := b.Encrypt(context.Background(), []byte(msg), nil)
		if err != nil {
			return err
		}
		if got, want := string(ct), "ct:"+msg; got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.batches) != 1 || s.batches[0] != 64 {
		t.Errorf("batches: got %v, want one of 64 items", s.batches)
	}
}

func TestBatcherFlushesAfterMaxWait(t *testing.T) {
	s := &batchTransit{}
	c := newBatchClient(t, s)
	b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 1000, MaxWait: time.Millisecond})
	defer b.Close()
	pt, err := b.Decrypt(context.Background(), []byte("ct:x"), nil)
	if err != nil || string(pt) != "x" {
		t.Fatalf("got %q, %v; want \"x\", nil", pt, err)
	}
}

func TestBatcherPerItemErrors(t *testing.T) {
	s := &batchTransit{}
	c := newBatchClient(t, s)
	b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 3, MaxWait: time.Hour})
	defer b.Close()
	inputs := []string{"good", "bad", "fine"}
	errs := run(3, func(i int) error {
		_, err := b.Encrypt(context.Background(), []byte(inputs[i]), nil)
		return err
	})
	for i, err := range errs {
		if want := inputs[i] == "bad"; errors.Is(err, ErrInvalidArgument) != want {
			t.Errorf("item %q: got err %v, want ErrInvalidArgument %v", inputs[i], err, want)
		}
		if inputs[i] != "bad" && err != nil {
			t.Errorf("item %q: got err %v, want nil", inputs[i], err)
		}
	}
}

func TestBatcherWholeCallError(t *testing.T) {
	s := &batchTransit{wholeCall: codes.Unavailable}
	c := newBatchClient(t, s)
	b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 4, MaxWait: time.Hour})
	defer b.Close()
	for i, err := range run(4, func(int) error {
		_, err := b.Encrypt(context.Background(), []byte("x"), nil)
		return err
	}) {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("caller %d: got %v, want ErrUnavailable", i, err)
		}
	}
}

func TestBatcherContextCancel(t *testing.T) {
	s := &batchTransit{hold: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := newBatchClient(t, s)
	b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 1, MaxWait: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.Encrypt(ctx, []byte("x"), nil)
		done <- err
	}()
	<-s.entered // the batch RPC is in flight and held by the server
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	// The batch RPC does not carry the caller's cancellation: it completes.
	close(s.hold)
	b.Close()
	if _, err := b.Encrypt(context.Background(), []byte("x"), nil); !errors.Is(err, ErrBatcherClosed) {
		t.Errorf("after Close: got %v, want ErrBatcherClosed", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.Transit.Batcher("k", BatcherOptions{}).Encrypt(ctx2, []byte("x"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("ended ctx: got %v, want context.Canceled", err)
	}
}

func TestBatcherCloseWaitsAndLeaksNothing(t *testing.T) {
	s := &batchTransit{hold: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := newBatchClient(t, s)
	// Connect first: the connection's own goroutines are not the Batcher's.
	if _, err := c.Transit.Decrypt(context.Background(), "k", []byte("ct:warm")); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.batches = nil
	s.mu.Unlock()
	ignore := goleak.IgnoreCurrent()
	b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 1, MaxWait: time.Hour})
	res := make(chan error, 1)
	go func() {
		_, err := b.Encrypt(context.Background(), []byte("x"), nil)
		res <- err
	}()
	<-s.entered
	// Release the held RPC only once Close has begun; Close must then wait
	// for it, so the server has answered by the time Close returns.
	go func() { <-b.enc.quit; close(s.hold) }()
	b.Close()
	s.mu.Lock()
	answered := len(s.batches)
	s.mu.Unlock()
	if answered != 1 {
		t.Errorf("Close returned before the batch RPC in flight was answered")
	}
	if err := <-res; err != nil {
		t.Errorf("caller of the in-flight batch: got %v, want nil", err)
	}
	goleak.VerifyNone(t, ignore)
}

// TestBatcherOneCallerCancelsOthersSucceed: a caller that gives up does not
// cancel the batch RPC that carries other callers' items (a batch run under
// the first caller's ctx would fail them all).
func TestBatcherOneCallerCancelsOthersSucceed(t *testing.T) {
	s := &batchTransit{hold: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := newBatchClient(t, s)
	b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 2, MaxWait: time.Hour})
	defer b.Close()
	ctxA, cancelA := context.WithCancel(context.Background())
	// A is queued first (sent straight to the queue, as Encrypt does), so
	// it is the first item of the batch.
	pA := &pending{ctx: ctxA, it: item{in: []byte("a")}, done: make(chan result, 1)}
	b.enc.reqs <- pA
	resB := make(chan error, 1)
	go func() { _, err := b.Encrypt(context.Background(), []byte("b"), nil); resB <- err }()
	<-s.entered // both items are in the RPC, held by the server
	cancelA()   // caller A gives up
	close(s.hold)
	if err := <-resB; err != nil {
		t.Errorf("caller B: got %v, want nil", err)
	}
}
