package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// callerDeadline is the deadline of every call of the replica tests: far
// above the store's own timeout, so a call that ends at this deadline was
// not bounded by the store.
const callerDeadline = 30 * time.Second

// ledger records what the load did: every acknowledged write (to check
// later that none was lost), the completion time of each, and how long
// calls took.
type ledger struct {
	mu       sync.Mutex
	created  []string          // transit keys whose CreateKey succeeded
	rotated  map[string]uint32 // key -> highest version a RotateKey acknowledged
	issued   []string          // serials of acknowledged Issue calls
	revoked  []string          // serials of acknowledged Revoke calls
	sealed   []sealedItem      // ciphertexts to decrypt on another replica
	writes   []time.Time       // completion time of each acknowledged write
	calls    []callRecord
	deadline int // calls that ended at the caller's deadline
}

type sealedItem struct {
	key        string
	plaintext  []byte
	ciphertext []byte
	replica    int
}

type callRecord struct {
	op   string
	end  time.Time
	took time.Duration
	code codes.Code
}

func newLedger() *ledger { return &ledger{rotated: map[string]uint32{}} }

// call runs op with the caller deadline and records it; it reports whether
// op succeeded.
func (l *ledger) call(what string, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), callerDeadline)
	defer cancel()
	start := time.Now()
	err := op(ctx)
	end := time.Now()
	code := status.Code(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	if ctx.Err() != nil || code == codes.DeadlineExceeded {
		l.deadline++
	}
	l.calls = append(l.calls, callRecord{op: what, end: end, took: end.Sub(start), code: code})
	return err
}

// wrote records an acknowledged write that ended now.
func (l *ledger) wrote(f func(l *ledger)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, time.Now())
	f(l)
}

// writesAfter waits until n writes acknowledged after from are recorded,
// and returns the time of the nth; the zero time if they are not by until.
func (l *ledger) writesAfter(n int, from, until time.Time) time.Time {
	for {
		l.mu.Lock()
		seen := 0
		for _, w := range l.writes {
			if w.After(from) {
				if seen++; seen == n {
					l.mu.Unlock()
					return w
				}
			}
		}
		l.mu.Unlock()
		if time.Now().After(until) {
			return time.Time{}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// window summarises the calls that ended in [from, to).
type window struct {
	calls, ok, deadline int
	longest             time.Duration
	longestOp           string // what the longest call did
	codes               map[codes.Code]int
	writeGap            time.Duration // longest time without an acknowledged write
}

func (l *ledger) window(from, to time.Time) window {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := window{codes: map[codes.Code]int{}, deadline: l.deadline}
	for _, c := range l.calls {
		if c.end.Before(from) || !c.end.Before(to) {
			continue
		}
		w.calls++
		w.codes[c.code]++
		if c.code == codes.OK {
			w.ok++
		}
		if c.took > w.longest {
			w.longest, w.longestOp = c.took, c.op
		}
	}
	last := from
	for _, wt := range l.writes {
		if wt.Before(from) || !wt.Before(to) {
			continue
		}
		w.writeGap = max(w.writeGap, wt.Sub(last))
		last = wt
	}
	w.writeGap = max(w.writeGap, to.Sub(last))
	return w
}

func (w window) String() string {
	keys := make([]codes.Code, 0, len(w.codes))
	for c := range w.codes {
		keys = append(keys, c)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for _, c := range keys {
		fmt.Fprintf(&b, " %s=%d", c, w.codes[c])
	}
	return fmt.Sprintf("%d calls (%s), longest %s (%s)", w.calls, b.String()[min(1, b.Len()):], w.longest.Round(time.Millisecond), w.longestOp)
}

// load runs the mixed load: workers goroutines, each doing encrypt,
// rotate, create, issue and revoke in turn on the replicas in turn, until
// stop is closed.
type load struct {
	rs      *replicaSet
	l       *ledger
	workers int
	stop    chan struct{}
	wg      sync.WaitGroup
}

// The fixtures of the load, made by setupLoad.
const (
	loadHotKey  = "hot"  // encrypted by every worker
	loadRotKey  = "spin" // rotated by every worker
	loadRole    = "web"
	loadDomain  = "replicas.example.com"
	loadPayload = "the acknowledged plaintext"
)

// setupLoad makes the fixtures: a root CA (its key in the HSM, made through
// replica 0), a role, and the transit keys; and checks that a certificate is
// issued through each other replica, whose HSM instance must find the CA key
// made through replica 0 in the shared token.
func setupLoad(t *testing.T, rs *replicaSet) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r0 := rs.Replicas[0]
	// On a loaded machine a store call can time out on a healthy cluster
	// too: the fixtures are retried while Unavailable.
	if err := untilAvailable(ctx, func(ctx context.Context) error {
		_, err := r0.PKI.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{
			Name: "root", KeyType: "ecdsa-p256", Subject: &hsmgatev1.Subject{CommonName: "Replicas Root"},
			Ttl: durationpb.New(24 * time.Hour), MakeDefault: true,
		})
		return existsOK(err)
	}); err != nil {
		t.Fatalf("CreateRootIssuer on %s: %v", r0.Name, err)
	}
	if err := untilAvailable(ctx, func(ctx context.Context) error {
		_, err := r0.PKI.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: &hsmgatev1.Role{
			Name: loadRole, AllowedDomains: []string{loadDomain}, AllowSubdomains: true,
			Ttl: durationpb.New(time.Hour), MaxTtl: durationpb.New(time.Hour), ServerFlag: true,
		}})
		return existsOK(err)
	}); err != nil {
		t.Fatalf("CreateRole on %s: %v", r0.Name, err)
	}
	for _, k := range []string{loadHotKey, loadRotKey} {
		if err := untilAvailable(ctx, func(ctx context.Context) error {
			_, err := r0.Transit.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: k, Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
			return existsOK(err)
		}); err != nil {
			t.Fatalf("CreateKey %s on %s: %v", k, r0.Name, err)
		}
	}
	for _, r := range rs.Replicas[1:] {
		var resp *hsmgatev1.IssueResponse
		err := untilAvailable(ctx, func(ctx context.Context) (err error) {
			resp, err = r.PKI.Issue(ctx, &hsmgatev1.IssueRequest{Role: loadRole, CommonName: "setup-" + r.Name + "." + loadDomain})
			return err
		})
		if err != nil {
			t.Fatalf("Issue on %s (CA key made through %s): %v", r.Name, r0.Name, err)
		}
		if resp.GetSerial() == "" {
			t.Fatalf("Issue on %s: no serial", r.Name)
		}
	}
}

func startLoad(rs *replicaSet, l *ledger, workers int) *load {
	ld := &load{rs: rs, l: l, workers: workers, stop: make(chan struct{})}
	for w := range workers {
		ld.wg.Go(func() { ld.worker(w) })
	}
	return ld
}

// Stop ends the load and waits for the workers.
func (ld *load) Stop() {
	close(ld.stop)
	ld.wg.Wait()
}

func (ld *load) worker(w int) {
	n := len(ld.rs.Replicas)
	var mine []string // serials this worker issued and has not revoked
	for i := 0; ; i++ {
		select {
		case <-ld.stop:
			return
		default:
		}
		ri := (w + i) % n
		r := ld.rs.Replicas[ri]
		switch i % 6 {
		case 0, 3:
			ld.encrypt(r, ri, w, i)
		case 1:
			ld.l.call("rotate", func(ctx context.Context) error {
				resp, err := r.Transit.RotateKey(ctx, &hsmgatev1.RotateKeyRequest{Name: loadRotKey})
				if err == nil {
					v := resp.GetKey().GetLatestVersion()
					ld.l.wrote(func(l *ledger) { l.rotated[loadRotKey] = max(l.rotated[loadRotKey], v) })
				}
				return err
			})
		case 2:
			name := fmt.Sprintf("k-%d-%d", w, i)
			ld.l.call("create", func(ctx context.Context) error {
				_, err := r.Transit.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: name, Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
				if err == nil {
					ld.l.wrote(func(l *ledger) { l.created = append(l.created, name) })
				}
				return err
			})
		case 4:
			cn := fmt.Sprintf("w%d-%d.%s", w, i, loadDomain)
			ld.l.call("issue", func(ctx context.Context) error {
				resp, err := r.PKI.Issue(ctx, &hsmgatev1.IssueRequest{Role: loadRole, CommonName: cn})
				if err == nil {
					mine = append(mine, resp.GetSerial())
					ld.l.wrote(func(l *ledger) { l.issued = append(l.issued, resp.GetSerial()) })
				}
				return err
			})
		case 5:
			if len(mine) == 0 {
				continue
			}
			serial := mine[0]
			ld.l.call("revoke", func(ctx context.Context) error {
				_, err := r.PKI.Revoke(ctx, &hsmgatev1.RevokeRequest{Serial: serial, Reason: 1})
				if err == nil {
					mine = mine[1:]
					ld.l.wrote(func(l *ledger) { l.revoked = append(l.revoked, serial) })
				}
				return err
			})
		}
	}
}

func (ld *load) encrypt(r *replica, ri, w, i int) {
	pt := fmt.Appendf(nil, "%s %d/%d", loadPayload, w, i)
	ld.l.call("encrypt", func(ctx context.Context) error {
		resp, err := r.Transit.Encrypt(ctx, &hsmgatev1.EncryptRequest{Name: loadHotKey, Items: []*hsmgatev1.EncryptItem{{Plaintext: pt}}})
		if err != nil {
			return err
		}
		res := resp.GetResults()
		if len(res) != 1 || res[0].GetError() != nil {
			return status.Errorf(codes.Internal, "encrypt: results %v", res)
		}
		ld.l.mu.Lock()
		if len(ld.l.sealed) < 300 {
			ld.l.sealed = append(ld.l.sealed, sealedItem{key: loadHotKey, plaintext: pt, ciphertext: res[0].GetCiphertext(), replica: ri})
		}
		ld.l.mu.Unlock()
		return nil
	})
}

// untilAvailable retries op while it answers Unavailable (a replica's
// store connection coming back after a fault), up to a hang guard.
func untilAvailable(ctx context.Context, op func(ctx context.Context) error) error {
	guard := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, callerDeadline)
		err := op(cctx)
		cancel()
		if status.Code(err) != codes.Unavailable || time.Now().After(guard) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkNoWriteLost reads every acknowledged write back through every
// replica: created keys exist, the rotated key has at least the highest
// acknowledged version, issued certificates are found (revoked ones as
// revoked), and ciphertexts made on one replica decrypt on the others.
func checkNoWriteLost(t *testing.T, rs *replicaSet, l *ledger) (checked int) {
	t.Helper()
	ctx := context.Background()
	l.mu.Lock()
	created, issued, revoked, sealed := slices.Clone(l.created), slices.Clone(l.issued), slices.Clone(l.revoked), slices.Clone(l.sealed)
	rotated := l.rotated[loadRotKey]
	l.mu.Unlock()
	isRevoked := map[string]bool{}
	for _, s := range revoked {
		isRevoked[s] = true
	}
	for ri, r := range rs.Replicas {
		for _, name := range created {
			err := untilAvailable(ctx, func(ctx context.Context) error {
				_, err := r.Transit.GetKey(ctx, &hsmgatev1.GetKeyRequest{Name: name})
				return err
			})
			if err != nil {
				t.Errorf("acknowledged CreateKey %q: GetKey on %s: %v", name, r.Name, err)
			}
		}
		err := untilAvailable(ctx, func(ctx context.Context) error {
			resp, err := r.Transit.GetKey(ctx, &hsmgatev1.GetKeyRequest{Name: loadRotKey})
			if err == nil && resp.GetKey().GetLatestVersion() < rotated {
				t.Errorf("GetKey %q on %s: got latest version %d, want >= %d (acknowledged by a RotateKey)", loadRotKey, r.Name, resp.GetKey().GetLatestVersion(), rotated)
			}
			return err
		})
		if err != nil {
			t.Errorf("GetKey %q on %s: %v", loadRotKey, r.Name, err)
		}
		for _, serial := range issued {
			err := untilAvailable(ctx, func(ctx context.Context) error {
				resp, err := r.PKI.GetCertificate(ctx, &hsmgatev1.GetCertificateRequest{Serial: serial})
				// A Revoke that failed may have committed: only the
				// acknowledged ones must show.
				if err == nil && isRevoked[serial] && !resp.GetCertificate().GetRevoked() {
					t.Errorf("certificate %s on %s: got revoked=false, want true (a Revoke was acknowledged)", serial, r.Name)
				}
				return err
			})
			if err != nil {
				t.Errorf("acknowledged Issue %s: GetCertificate on %s: %v", serial, r.Name, err)
			}
		}
		for _, s := range sealed {
			if s.replica == ri {
				continue
			}
			err := untilAvailable(ctx, func(ctx context.Context) error {
				resp, err := r.Transit.Decrypt(ctx, &hsmgatev1.DecryptRequest{Name: s.key, Items: []*hsmgatev1.DecryptItem{{Ciphertext: s.ciphertext}}})
				if err != nil {
					return err
				}
				if res := resp.GetResults(); len(res) != 1 || !bytes.Equal(res[0].GetPlaintext(), s.plaintext) {
					t.Errorf("Decrypt on %s of a ciphertext made on %s: got %v, want plaintext %q", r.Name, rs.Replicas[s.replica].Name, res, s.plaintext)
				}
				return nil
			})
			if err != nil {
				t.Errorf("Decrypt on %s of a ciphertext made on %s: %v", r.Name, rs.Replicas[s.replica].Name, err)
			}
		}
	}
	return len(created) + len(issued) + len(revoked) + 1
}

// percentile returns the p-th percentile (0..100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// existsOK treats AlreadyExists as success: a create of a fixture retried
// after an Unavailable that had committed.
func existsOK(err error) error {
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return err
}
