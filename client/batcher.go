package client

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrBatcherClosed is returned by a Batcher call made after Close.
var ErrBatcherClosed = errors.New("client: batcher closed")

// BatcherOptions configure a Batcher. Zero fields take the defaults.
type BatcherOptions struct {
	// MaxItems flushes a batch when it holds this many items (default 128;
	// keep it at or below the server's limits.max_items_per_request).
	MaxItems int
	// MaxWait flushes a batch this long after its first item arrived
	// (default 2ms). It bounds the latency a caller adds by batching.
	MaxWait time.Duration
	// MaxInFlight bounds the batch RPCs of one kind in flight at once
	// (default 4). Items wait in the queue while all are busy.
	MaxInFlight int
	// KeyVersion is the version used by Encrypt and Sign (0: the latest).
	KeyVersion uint32
	// SignOptions are the options of the batched SignData RPCs (WithHash,
	// WithPrehashed, WithSignatureAlgorithm).
	SignOptions []Option
}

// DefaultBatcherOptions are the defaults of a zero BatcherOptions.
var DefaultBatcherOptions = BatcherOptions{MaxItems: 128, MaxWait: 2 * time.Millisecond, MaxInFlight: 4}

// Batcher gathers concurrent single-item Encrypt, Decrypt and Sign calls
// for one key into batch RPCs. Each call blocks until its own result
// arrives and returns its own error; a batch is sent when it holds
// MaxItems items or MaxWait after its first item, whichever comes first.
//
// A caller's ctx is honoured: a call whose ctx ends while it waits returns
// ctx.Err() at once, and an item whose ctx has ended by the time its batch
// is sent is left out of the batch. The batch RPC itself runs with the
// latest deadline of its items (or the Client's Timeout when one has
// none), so one impatient caller does not fail the others.
//
// A Batcher is safe for concurrent use. Close it when done: Close sends
// what is queued, waits for the RPCs in flight, and stops every goroutine
// the Batcher started.
type Batcher struct {
	t    *Transit
	key  string
	opts BatcherOptions

	enc, dec, sig *queue
	closeOnce     sync.Once
}

// Batcher returns a Batcher for key.
func (t *Transit) Batcher(key string, opts BatcherOptions) *Batcher {
	d := DefaultBatcherOptions
	if opts.MaxItems <= 0 {
		opts.MaxItems = d.MaxItems
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = d.MaxWait
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = d.MaxInFlight
	}
	b := &Batcher{t: t, key: key, opts: opts}
	b.enc = newQueue(opts, b.sendEncrypt)
	b.dec = newQueue(opts, b.sendDecrypt)
	b.sig = newQueue(opts, b.sendSign)
	return b
}

// Encrypt encrypts one plaintext (with optional associated data) in the
// next batch and returns the binary ciphertext.
func (b *Batcher) Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	r, err := b.enc.do(ctx, item{in: plaintext, aad: aad})
	return r.out, err
}

// Decrypt decrypts one binary ciphertext in the next batch.
func (b *Batcher) Decrypt(ctx context.Context, ciphertext, aad []byte) ([]byte, error) {
	r, err := b.dec.do(ctx, item{in: ciphertext, aad: aad})
	return r.out, err
}

// Sign signs one input in the next batch.
func (b *Batcher) Sign(ctx context.Context, input []byte) (Versioned, error) {
	r, err := b.sig.do(ctx, item{in: input})
	return Versioned{KeyVersion: r.version, Bytes: r.out}, err
}

// Close sends the queued items, waits for every batch RPC in flight and
// stops the Batcher's goroutines. Calls after Close fail with
// ErrBatcherClosed. Close is idempotent and always returns nil.
func (b *Batcher) Close() error {
	b.closeOnce.Do(func() {
		for _, q := range []*queue{b.enc, b.dec, b.sig} {
			close(q.quit)
		}
		for _, q := range []*queue{b.enc, b.dec, b.sig} {
			q.done.Wait()
		}
	})
	return nil
}

type item struct {
	in, aad []byte
}

type result struct {
	out     []byte
	version uint32
	err     error
}

type pending struct {
	ctx  context.Context
	it   item
	done chan result // buffered: the sender never blocks on a caller who left
}

// queue batches one kind of call.
type queue struct {
	opts BatcherOptions
	send func(ctx context.Context, items []item) ([]result, error)
	reqs chan *pending
	quit chan struct{}
	sem  chan struct{}  // MaxInFlight slots
	done sync.WaitGroup // the loop and the batches in flight
}

func newQueue(opts BatcherOptions, send func(context.Context, []item) ([]result, error)) *queue {
	q := &queue{opts: opts, send: send, reqs: make(chan *pending), quit: make(chan struct{}), sem: make(chan struct{}, opts.MaxInFlight)}
	q.done.Add(1)
	go q.loop()
	return q
}

// do queues one item and waits for its result or the end of ctx.
func (q *queue) do(ctx context.Context, it item) (result, error) {
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	p := &pending{ctx: ctx, it: it, done: make(chan result, 1)}
	select {
	case q.reqs <- p:
	case <-q.quit:
		return result{}, ErrBatcherClosed
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	select {
	case r := <-p.done:
		return r, r.err
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
}

// loop collects items into batches until quit; then it sends what it
// holds and waits for the batches in flight.
func (q *queue) loop() {
	defer q.done.Done()
	var batch []*pending
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var timerC <-chan time.Time
	flush := func() {
		timer.Stop()
		timerC = nil
		if len(batch) > 0 {
			q.dispatch(batch)
			batch = nil
		}
	}
	for {
		select {
		case p := <-q.reqs:
			batch = append(batch, p)
			if len(batch) == 1 {
				timer.Reset(q.opts.MaxWait)
				timerC = timer.C
			}
			if len(batch) >= q.opts.MaxItems {
				flush()
			}
		case <-timerC:
			flush()
		case <-q.quit:
			flush()
			return
		}
	}
}

// dispatch sends one batch in its own goroutine once a slot is free.
func (q *queue) dispatch(batch []*pending) {
	live := batch[:0]
	for _, p := range batch {
		if p.ctx.Err() == nil { // its caller has already returned ctx.Err()
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return
	}
	q.sem <- struct{}{}
	q.done.Add(1)
	go func() {
		defer q.done.Done()
		defer func() { <-q.sem }()
		ctx, cancel := batchContext(live)
		defer cancel()
		items := make([]item, len(live))
		for i, p := range live {
			items[i] = p.it
		}
		rs, err := q.send(ctx, items)
		for i, p := range live {
			if err != nil {
				p.done <- result{err: err}
			} else {
				p.done <- rs[i]
			}
		}
	}()
}

// batchContext carries the latest deadline of the items (none if one has
// none: the Client's Timeout then applies), not their cancellation.
func batchContext(ps []*pending) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range ps {
		dl, ok := p.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(context.Background(), latest)
}

func (b *Batcher) sendEncrypt(ctx context.Context, items []item) ([]result, error) {
	req := make([]EncryptItem, len(items))
	for i, it := range items {
		req[i] = EncryptItem{Plaintext: it.in, AssociatedData: it.aad}
	}
	rs, err := b.t.EncryptBatch(ctx, b.key, req, WithKeyVersion(b.opts.KeyVersion))
	if err != nil {
		return nil, err
	}
	out := make([]result, len(rs))
	for i, r := range rs {
		out[i] = result{out: r.Ciphertext, version: r.KeyVersion, err: r.Err}
	}
	return out, nil
}

func (b *Batcher) sendDecrypt(ctx context.Context, items []item) ([]result, error) {
	req := make([]DecryptItem, len(items))
	for i, it := range items {
		req[i] = DecryptItem{Ciphertext: it.in, AssociatedData: it.aad}
	}
	rs, err := b.t.DecryptBatch(ctx, b.key, req)
	if err != nil {
		return nil, err
	}
	out := make([]result, len(rs))
	for i, r := range rs {
		out[i] = result{out: r.Plaintext, version: r.KeyVersion, err: r.Err}
	}
	return out, nil
}

func (b *Batcher) sendSign(ctx context.Context, items []item) ([]result, error) {
	req := make([]SignItem, len(items))
	for i, it := range items {
		req[i] = SignItem{Input: it.in}
	}
	opts := append([]Option{WithKeyVersion(b.opts.KeyVersion)}, b.opts.SignOptions...)
	rs, err := b.t.SignBatch(ctx, b.key, req, opts...)
	if err != nil {
		return nil, err
	}
	out := make([]result, len(rs))
	for i, r := range rs {
		out[i] = result{out: r.Signature.Bytes, version: r.Signature.KeyVersion, err: r.Err}
	}
	return out, nil
}
