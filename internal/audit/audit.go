// Package audit writes hsmgate's tamper-evident audit log: one JSON object per
// line, in its own file (optionally copied to stdout), never mixed with the
// error log.
// How it fits with the rest (the audit chain within a request): docs/architecture.md.
//
// Every request leaves two lines: a "request" line written before the handler
// runs and a "response" line after it, with the status code and latency (a
// refused request leaves one "response" line). A call that changes no state
// and hands out no key material (encrypt, decrypt, sign, verify, MAC, reads)
// leaves one "call" line instead, written after the handler and before the
// answer leaves, with the status and latency. A line holds the time, a
// sequence number, the request id, the identity (name, kind, policies, and the
// token accessor HMAC'd), the method, the resource, the item count, the status
// code and the latency. It never holds plaintext, ciphertext, key material or
// tokens; identifiers that need hiding go through Log.HMAC (HMAC-SHA256 with a
// per-deployment key that the caller gives to Open, e.g. from a file or an
// environment variable; it is never stored by this package).
//
// # The chain
//
// Each line carries "seq" (1, 2, 3... across files and restarts), "prev" (the
// previous line's mac; "" at the very start) and, last, "mac": HMAC-SHA256 of
// the line without its mac, under a chain key derived from the deployment key
// (HKDF, see keys). Without the key nobody can edit, insert or re-chain a line,
// the last one included. Every file begins with a header line (type "header")
// that names the previous file, its last seq and the chain's random id, and is
// chained like any other line: deleting a file's first lines, leaving a file
// out or swapping in a file of another chain shows.
//
// Deleting the last lines, or cutting the tail, leaves a shorter valid chain;
// the checkpoint closes that gap. Every CheckpointInterval and at Close the Log
// writes the head (seq, hash) to CheckpointPath(path), MAC'd and, with a
// Signer, signed by an HSM key; logs it; and exposes it (Head, Checkpoint) for
// metrics. `hsmgate audit verify FILE... --checkpoint F` (or --head SEQ:HASH
// from the server log) fails if the chain does not reach it.
//
// On Open the chain resumes from the last line of the file (or of the newest
// rotated file, after a crash mid-rotation). A log that is missing, shorter
// than the checkpoint, of another chain, or whose last line fails its MAC
// refuses to open: the operator decides (move the checkpoint aside to start a
// new chain on purpose). A file of the old, unkeyed format (before the chain
// was keyed) is rotated out and a new chain begins; Verify does not read the
// old format. A failed header write (a full disk just as the file rotates)
// is retried by the next Write.
//
// # Retention
//
// When the file would grow past MaxBytes it is renamed to <path>.<UTC time>
// and a new file begins with a header. Rotated files beyond MaxFiles, or
// rotated out more than MaxAge ago, are deleted; the remaining files still
// verify (the first one starts mid-chain, at its header).
//
// # Fail closed
//
// Write returns an error when a line cannot be written in full (and fsync'd
// when Fsync is set); the auth interceptor then answers Unavailable without
// running the handler. After a failed write the file is truncated back to its
// last whole line; if even that fails, the Log refuses every later write.
// After every write, and on every checkpoint tick, the Log checks that the
// path still names the open file: once the file is deleted, renamed away or
// replaced, every later write fails (as on a full disk) until an operator
// restarts the server. Only regular files are opened: a FIFO, a device or a
// socket (or a symlink to one) is refused, without blocking on the open.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/internal/groupcommit"
)

// ErrUnavailable: the audit log cannot be written; requests must fail.
var ErrUnavailable = errs.New(errs.Unavailable, "audit: log unavailable")

// ErrTampered: on Open, the log does not continue the chain the checkpoint
// (or its own header) promises: deleted, cut, replaced or edited.
var ErrTampered = errs.New(errs.FailedPrecondition, "audit: log does not continue its chain")

// Config is the audit section of the server config.
type Config struct {
	// Path of the log file (required).
	Path string `yaml:"path"`
	// Stdout also copies every line to standard output (best effort).
	Stdout bool `yaml:"stdout"`
	// MaxBytes rotates the file before it would grow past this size
	// (default 100 MiB; negative: never).
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxFiles keeps at most this many rotated files (default 10; negative:
	// no limit); MaxAge deletes rotated files older than this (0: no limit).
	MaxFiles int           `yaml:"max_files"`
	MaxAge   time.Duration `yaml:"max_age"`
	// Fsync makes every line durable before the request goes on (slower).
	Fsync bool `yaml:"fsync"`
	// CheckpointInterval is how often the head is published (default 10s;
	// negative: only at Close).
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// HMACKeyFile holds the per-deployment HMAC key (at least 32 bytes, raw);
	// HMACKeyEnv names an environment variable holding it in hex (default
	// HSMGATE_AUDIT_HMAC_KEY). The server reads it with LoadHMACKey.
	HMACKeyFile string `yaml:"hmac_key_file"`
	HMACKeyEnv  string `yaml:"hmac_key_env"`
}

// Options are the Log's collaborators.
type Options struct {
	// Signer signs checkpoints (nil: checkpoints carry only a MAC).
	Signer Signer
	// SignerLabel names Signer's key in checkpoints.
	SignerLabel string
	// Logger receives checkpoints and failures (nil: discarded).
	Logger *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Identity is who made a request, as logged.
type Identity struct {
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	Policies []string `json:"policies,omitempty"`
	// Accessor is the HMAC of the token accessor, for token identities.
	Accessor string `json:"accessor,omitempty"`
}

// Entry is one line. Write fills Time, Seq and Prev.
type Entry struct {
	Time      time.Time         `json:"time"`
	Seq       uint64            `json:"seq"`
	Type      string            `json:"type"` // TypeRequest, TypeResponse or TypeCall
	RequestID string            `json:"request_id,omitempty"`
	Identity  *Identity         `json:"identity,omitempty"`
	Remote    string            `json:"remote,omitempty"`
	Method    string            `json:"method"`
	Resource  string            `json:"resource,omitempty"`
	Items     int               `json:"items"`
	Code      string            `json:"code,omitempty"`
	LatencyMS float64           `json:"latency_ms,omitempty"`
	Extra     map[string]string `json:"extra,omitempty"` // values already HMAC'd by the caller
	Prev      string            `json:"prev"`
}

// head is the chain's position.
type head struct {
	seq     uint64
	hash    string
	chainID string
}

// Log is an open audit log. Safe for concurrent use; lines are serialised.
type Log struct {
	cfg    Config
	opts   Options
	keys   keys
	now    func() time.Time
	log    *slog.Logger
	stdout io.Writer
	cpPath string

	mu       sync.Mutex
	f        *os.File
	fi       os.FileInfo // of f, to notice the path naming another file
	size     int64
	head     head
	broken   error
	chainMAC hash.Hash      // under mu
	pending  *pendingHeader // the current file still lacks its header
	buf      []byte         // under mu: the lines of a group, reused
	body     []byte         // under mu: one line's body, reused

	group groupcommit.Queue[*queued] // concurrent Writes, written together

	pubMu     sync.Mutex // serialises publish
	published atomic.Pointer[Checkpoint]
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Open opens (or creates) the log at cfg.Path and continues its chain, with
// no checkpoint signer and no logger. hmacKey (at least 32 bytes) keys the
// chain and HMAC; the Log keeps a copy.
func Open(cfg Config, hmacKey []byte) (*Log, error) { return OpenWith(cfg, hmacKey, Options{}) }

// OpenWith is Open with a checkpoint signer, a logger and a clock. It fails
// with ErrUnavailable when the file cannot be opened (or is not a regular
// file), and ErrTampered when it does not continue its chain (see the package
// doc).
func OpenWith(cfg Config, hmacKey []byte, o Options) (*Log, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("audit: path is required")
	}
	k, err := deriveKeys(hmacKey)
	if err != nil {
		return nil, err
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 100 << 20
	}
	if cfg.MaxFiles == 0 {
		cfg.MaxFiles = 10
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = 10 * time.Second
	}
	l := &Log{cfg: cfg, opts: o, keys: k, now: o.Now, log: o.Logger, cpPath: CheckpointPath(cfg.Path),
		stop: make(chan struct{}), done: make(chan struct{})}
	if l.now == nil {
		l.now = time.Now
	}
	l.chainMAC = hmac.New(sha256.New, k.chain)
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout {
		l.stdout = os.Stdout
	}
	if err := l.resume(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	l.publish(ctx)
	cancel()
	if cfg.CheckpointInterval > 0 {
		go l.publisher(cfg.CheckpointInterval)
	} else {
		close(l.done)
	}
	return l, nil
}

// HMAC returns "hmac-sha256:" and the hex HMAC of s under the deployment key.
func (l *Log) HMAC(s string) string {
	return "hmac-sha256:" + hex.EncodeToString(mac(l.keys.value, []byte(s)))
}

// Write appends e as one chained line. It fills e.Time (if zero), e.Seq and
// e.Prev. An error wraps ErrUnavailable: the caller must fail the request.
//
// Write returns only once the line is written (and fsync'd when Fsync is
// set). Lines of concurrent Writes are written together (group commit): the
// first caller to find no write in progress writes its own line at once and
// with it every line queued meanwhile, in one write(2), one fsync and one
// check of the path; the next queued caller leads the next group. So no
// caller waits longer than one group write for another's, and the cost of
// the system calls is shared when requests come together.
func (l *Log) Write(e *Entry) error {
	if e.Type == TypeHeader {
		return fmt.Errorf("audit: %w: entry type %q is reserved", ErrUnavailable, e.Type)
	}
	middle, err := encodeMiddle(make([]byte, 0, 384), e)
	if err != nil {
		return fmt.Errorf("audit: encode: %w: %v", ErrUnavailable, err)
	}
	w := &queued{e: e, middle: middle}
	l.group.Do(w, l.writeGroup)
	return w.err
}

// queued is one Write waiting for its group.
type queued struct {
	e      *Entry
	middle []byte // encodeMiddle
	err    error  // its result, set by writeGroup
}

// writeGroup writes the lines of a group, in order, and sets each one's
// result. The lines go out in one write unless the file rotates among them;
// a failed write fails its lines and every later one of the group (their
// requests fail: fail closed), and leaves the head at the last line written.
func (l *Log) writeGroup(group []*queued) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fail := func(qs []*queued, err error) {
		for _, q := range qs {
			q.err = err
		}
	}
	if err := l.usable(); err != nil {
		fail(group, err)
		return
	}
	if l.pending != nil {
		if err := l.writeHeader(); err != nil {
			fail(group, err)
			return
		}
	}
	buf := l.buf[:0]
	seq, hash := l.head.seq, l.head.hash
	start := 0 // group[start:] are not written yet
	for i, q := range group {
		if q.e.Time.IsZero() {
			q.e.Time = l.now().UTC()
		}
		body, err := frame(l.body[:0], q.e.Time, seq+1, q.middle, hash)
		if err != nil {
			q.err = fmt.Errorf("audit: encode: %w: %v", ErrUnavailable, err)
			continue // its request fails; the others' lines go on
		}
		if l.cfg.MaxBytes > 0 && l.size+int64(len(buf)) > 0 && l.size+int64(len(buf)+len(body)+macTail) > l.cfg.MaxBytes {
			if err := l.writeLines(buf, seq, hash); err != nil {
				fail(group[start:], err)
				return
			}
			start, buf = i, buf[:0]
			if err := l.rotate(0); err != nil {
				fail(group[start:], err)
				return
			}
			seq, hash = l.head.seq, l.head.hash
			if body, err = frame(l.body[:0], q.e.Time, seq+1, q.middle, hash); err != nil {
				q.err = fmt.Errorf("audit: encode: %w: %v", ErrUnavailable, err)
				continue
			}
		}
		l.body = body
		q.e.Seq, q.e.Prev = seq+1, hash
		buf, hash = appendSeal(buf, l.chainMAC, body)
		buf = append(buf, '\n')
		seq++
	}
	l.buf = buf
	if len(buf) > 0 {
		if err := l.writeLines(buf, seq, hash); err != nil {
			for _, q := range group[start:] {
				if q.err == nil {
					q.err = err
				}
			}
		}
	}
	if cap(l.buf) > maxKeptBuf {
		l.buf, l.body = nil, nil
	}
}

// maxKeptBuf bounds the group buffer kept between writes.
const maxKeptBuf = 1 << 20

func (l *Log) usable() error {
	if l.broken != nil {
		return l.broken
	}
	if l.f == nil {
		return fmt.Errorf("audit: %w: closed", ErrUnavailable)
	}
	return nil
}

// writeLine seals body and writes it as the line seq (a header).
func (l *Log) writeLine(body []byte, seq uint64) error {
	line, sum := sealWith(l.chainMAC, body)
	return l.writeLines(append(line, '\n'), seq, sum)
}

// writeLines appends whole lines, the last of which is lastSeq with mac
// lastHash, and moves the head there. After the write it checks that the
// path still names the file: lines written into a deleted or replaced file
// fail their requests, and every later one.
func (l *Log) writeLines(lines []byte, lastSeq uint64, lastHash string) error {
	n, err := l.f.Write(lines)
	if err == nil && l.cfg.Fsync {
		err = l.f.Sync()
	}
	if err != nil {
		if n > 0 {
			if terr := l.f.Truncate(l.size); terr != nil {
				l.fail(fmt.Errorf("audit: %w: log left with a partial line", ErrUnavailable), terr)
			}
		}
		l.log.Error("audit write failed", "seq", lastSeq, "error", err)
		return fmt.Errorf("audit: write: %w", ErrUnavailable)
	}
	l.size += int64(n)
	if err := samePath(l.cfg.Path, l.fi); err != nil {
		return l.fail(fmt.Errorf("audit: %w: the log file was deleted or replaced", ErrUnavailable), err)
	}
	l.head.seq, l.head.hash = lastSeq, lastHash
	if l.stdout != nil {
		l.stdout.Write(lines) // best effort: the file is the record
	}
	return nil
}

// fail stops the Log for good (until a restart) and logs why, once. The
// error returned to callers does not name the path.
func (l *Log) fail(err, cause error) error {
	if l.broken == nil {
		l.broken = err
		l.log.Error("audit log stopped: every request fails until an operator restarts the server",
			"path", l.cfg.Path, "seq", l.head.seq, "cause", cause)
	}
	return l.broken
}

// Check reports whether the log can be written: nil, or the error every
// Write returns. It also checks that the path still names the open file
// (for readiness checks, and the checkpoint ticker while no request comes).
func (l *Log) Check(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if err := samePath(l.cfg.Path, l.fi); err != nil {
		return l.fail(fmt.Errorf("audit: %w: the log file was deleted or replaced", ErrUnavailable), err)
	}
	return nil
}

// rotate renames the current file away, starts a new one with a header and
// deletes rotated files past the retention limits. prevTorn is the length of
// a partial last line in the file rotated out. A failure stops the Log.
func (l *Log) rotate(prevTorn int) error {
	if err := samePath(l.cfg.Path, l.fi); err != nil {
		return l.fail(fmt.Errorf("audit: %w: the log file was deleted or replaced", ErrUnavailable), err)
	}
	if l.pending != nil {
		return l.writeHeader() // the current file is new and empty: no second rotation
	}
	l.f.Close()
	l.f = nil
	dst := rotatedName(l.cfg.Path, l.now())
	if err := os.Rename(l.cfg.Path, dst); err != nil {
		return l.fail(fmt.Errorf("audit: rotate: %w", ErrUnavailable), err)
	}
	if err := l.startFile(filepath.Base(dst), prevTorn); err != nil {
		return err
	}
	deleted, err := prune(l.cfg.Path, l.cfg.MaxFiles, l.cfg.MaxAge, l.now())
	for _, d := range deleted {
		l.log.Info("audit file deleted by retention", "file", d)
	}
	if err != nil {
		l.log.Warn("audit retention", "error", err)
	}
	return nil
}

// startFile creates the file at the path (it must not exist, or be empty)
// and writes its header, linked to prevFile.
func (l *Log) startFile(prevFile string, prevTorn int) error {
	f, fi, err := openRegular(l.cfg.Path, true)
	if err == nil && fi.Size() != 0 {
		f.Close()
		err = fmt.Errorf("%s appeared while rotating", l.cfg.Path)
	}
	if err != nil {
		return l.fail(fmt.Errorf("audit: new file: %w", ErrUnavailable), err)
	}
	l.f, l.fi, l.size = f, fi, 0
	l.pending = &pendingHeader{prevFile: prevFile, prevTorn: prevTorn}
	return l.writeHeader()
}

// pendingHeader is the header a new file still needs.
type pendingHeader struct {
	prevFile string
	prevTorn int
}

// writeHeader writes the pending header of a new file. When the write fails
// (a full disk) the header stays pending: the request fails, and the next
// Write tries again, as after any failed write.
func (l *Log) writeHeader() error {
	p := l.pending
	h := header{Time: l.now().UTC(), Seq: l.head.seq + 1, Type: TypeHeader, Format: FormatV2,
		ChainID: l.head.chainID, PrevFile: p.prevFile, PrevSeq: l.head.seq, PrevTorn: p.prevTorn, Prev: l.head.hash}
	body, err := json.Marshal(h)
	if err != nil {
		return l.fail(fmt.Errorf("audit: header: %w", ErrUnavailable), err)
	}
	if err := l.writeLine(body, h.Seq); err != nil {
		return err
	}
	l.pending = nil
	return nil
}

// Rotate starts a new file now (e.g. on SIGHUP).
func (l *Log) Rotate() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	return l.rotate(0)
}

// Close publishes a last checkpoint and closes the file; later writes fail.
func (l *Log) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		l.mu.Lock()
		if l.f != nil {
			err = l.f.Close()
			l.f = nil
		}
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l.publish(ctx)
	})
	return err
}

// Head returns the sequence number and hash (mac) of the last line written,
// and the chain's id.
func (l *Log) Head() (seq uint64, hash, chainID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head.seq, l.head.hash, l.head.chainID
}

// LastHash returns the sequence number and hash of the last line written.
func (l *Log) LastHash() (uint64, string) {
	seq, hash, _ := l.Head()
	return seq, hash
}

func newChainID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// ItemCount returns the length of msg's repeated field named "items", or 1
// when it has none.
func ItemCount(msg proto.Message) int {
	if msg == nil {
		return 1
	}
	m := msg.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(protoreflect.Name("items"))
	if fd == nil || !fd.IsList() {
		return 1
	}
	return m.Get(fd).List().Len()
}
