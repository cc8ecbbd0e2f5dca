// Package audit writes hsmgate's tamper-evident audit log: one JSON object per
// line, in its own file (optionally copied to stdout), never mixed with the
// error log.
// How it fits with the rest (the audit chain within a request): docs/architecture.md.
//
// Every request leaves two lines: a "request" line written before the handler
// runs and a "response" line after it, with the status code and latency (a
// refused request leaves one "response" line). A line holds the time, a
// sequence number, the request id, the identity (name, kind, policies, and the
// token accessor HMAC'd), the method, the resource, the item count, the status
// code and the latency. It never holds plaintext, ciphertext, key material or
// tokens; identifiers that need hiding go through Log.HMAC (HMAC-SHA256 with a
// per-deployment key that the caller gives to Open, e.g. from a file or an
// environment variable; it is never stored by this package).
//
// # The chain
//
// Each line carries "seq" (1, 2, 3... across files) and "prev", the hex SHA-256
// of the exact bytes of the previous line (without its newline); the first line
// of the first file has prev "". When the file would grow past MaxBytes it is
// renamed to <path>.<UTC time> and a new file begins, whose first line carries the
// hash of the last line of the rotated-out file, so the chain spans rotations.
// Verify (and `hsmgate audit verify FILE...`, files in order) reports the first
// changed, inserted, missing or reordered line by number.
//
// The chain is unkeyed: it shows any edit or deletion unless the attacker
// rewrites every later line too, and it cannot show a truncated tail by itself.
// Ship the log off the host (or record the last hash that Verify returns) to
// close those gaps.
//
// # Fail closed
//
// Write returns an error when a line cannot be written in full (and fsync'd
// when Fsync is set); the auth interceptor then answers Unavailable without
// running the handler. After a failed write the file is truncated back to its
// last whole line; if even that fails, the Log refuses every later write.
package audit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// ErrUnavailable: the audit log cannot be written; requests must fail.
var ErrUnavailable = errs.New(errs.Unavailable, "audit: log unavailable")

// Config is the audit section of the server config.
type Config struct {
	// Path of the log file (required).
	Path string `yaml:"path"`
	// Stdout also copies every line to standard output (best effort).
	Stdout bool `yaml:"stdout"`
	// MaxBytes rotates the file before it would grow past this size
	// (default 100 MiB; negative: never).
	MaxBytes int64 `yaml:"max_bytes"`
	// Fsync makes every line durable before the request goes on (slower).
	Fsync bool `yaml:"fsync"`
	// HMACKeyFile holds the per-deployment HMAC key (at least 32 bytes, raw);
	// HMACKeyEnv names an environment variable holding it in hex (default
	// HSMGATE_AUDIT_HMAC_KEY). The server reads it with LoadHMACKey.
	HMACKeyFile string `yaml:"hmac_key_file"`
	HMACKeyEnv  string `yaml:"hmac_key_env"`
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
	Type      string            `json:"type"` // "request" or "response"
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

// Log is an open audit log. Safe for concurrent use; lines are serialised.
type Log struct {
	cfg    Config
	key    []byte
	now    func() time.Time
	stdout io.Writer

	mu     sync.Mutex
	f      *os.File
	size   int64
	prev   string
	seq    uint64
	broken error
}

// LoadHMACKey reads the HMAC key from cfg.HMACKeyFile or, when unset, from the
// environment variable cfg.HMACKeyEnv (default HSMGATE_AUDIT_HMAC_KEY, hex).
// It must be at least 32 bytes.
func LoadHMACKey(cfg Config) ([]byte, error) {
	env := cfg.HMACKeyEnv
	if env == "" {
		env = "HSMGATE_AUDIT_HMAC_KEY"
	}
	var key []byte
	switch {
	case cfg.HMACKeyFile != "":
		b, err := os.ReadFile(cfg.HMACKeyFile)
		if err != nil {
			return nil, fmt.Errorf("audit: hmac key: %w", err)
		}
		key = b
	case os.Getenv(env) != "":
		b, err := hex.DecodeString(os.Getenv(env))
		if err != nil {
			return nil, fmt.Errorf("audit: $%s is not hex", env)
		}
		key = b
	default:
		return nil, fmt.Errorf("audit: no hmac key (hmac_key_file, or $%s)", env)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("audit: hmac key shorter than 32 bytes")
	}
	return key, nil
}

// LoadOrCreateKeyFile returns the key in path, first writing 32 random bytes
// there (mode 0600) if the file does not exist. For `hsmgate dev`; production
// keys are provisioned like any other secret.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("audit: hmac key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit: hmac key: %w", err)
		}
		_, werr := f.Write(key)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return nil, fmt.Errorf("audit: hmac key: %w", werr)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: hmac key: %w", err)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("audit: hmac key in %s shorter than 32 bytes", path)
	}
	return key, nil
}

// Open opens (or creates) the log at cfg.Path and continues its chain. hmacKey
// (at least 32 bytes) keys HMAC; the Log keeps a copy.
func Open(cfg Config, hmacKey []byte) (*Log, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("audit: path is required")
	}
	if len(hmacKey) < 32 {
		return nil, fmt.Errorf("audit: hmac key shorter than 32 bytes")
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 100 << 20
	}
	l := &Log{cfg: cfg, key: append([]byte(nil), hmacKey...), now: time.Now}
	if cfg.Stdout {
		l.stdout = os.Stdout
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// open opens the file and recovers seq and prev from its last line. A file
// whose last line is torn (no newline) is rotated out, left for Verify to show.
func (l *Log) open() error {
	f, err := os.OpenFile(l.cfg.Path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: open: %w: %v", ErrUnavailable, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: stat: %w: %v", ErrUnavailable, err)
	}
	l.f, l.size = f, st.Size()
	if l.size == 0 {
		return nil
	}
	last, torn, err := lastLine(f, l.size)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: read last line: %w: %v", ErrUnavailable, err)
	}
	if last != nil {
		var r struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(last, &r); err != nil {
			torn = true
		} else {
			l.seq, l.prev = r.Seq, hashLine(last)
		}
	}
	if torn {
		return l.rotate()
	}
	return nil
}

// lastLine returns the last complete line of f (nil if none) and whether
// bytes follow it without a newline.
func lastLine(f *os.File, size int64) ([]byte, bool, error) {
	const chunk = 1 << 20
	off := max(size-chunk, 0)
	buf := make([]byte, size-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	torn := buf[len(buf)-1] != '\n'
	end := len(buf)
	if !torn {
		end--
	} else {
		for end > 0 && buf[end-1] != '\n' {
			end--
		}
		if end == 0 {
			return nil, true, nil
		}
		end--
	}
	start := end
	for start > 0 && buf[start-1] != '\n' {
		start--
	}
	if start == 0 && off > 0 {
		return nil, true, fmt.Errorf("last line longer than %d bytes", chunk)
	}
	return buf[start:end], torn, nil
}

func hashLine(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// HMAC returns "hmac-sha256:" and the hex HMAC of s under the deployment key.
func (l *Log) HMAC(s string) string {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte(s))
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))
}

// Write appends e as one chained line. It fills e.Time (if zero), e.Seq and
// e.Prev. An error wraps ErrUnavailable: the caller must fail the request.
func (l *Log) Write(e *Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return l.broken
	}
	if l.f == nil {
		return fmt.Errorf("audit: %w: closed", ErrUnavailable)
	}
	if e.Time.IsZero() {
		e.Time = l.now().UTC()
	}
	if l.cfg.MaxBytes > 0 && l.size > 0 && l.size+512 > l.cfg.MaxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	e.Seq, e.Prev = l.seq+1, l.prev
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: encode: %w: %v", ErrUnavailable, err)
	}
	if l.cfg.MaxBytes > 0 && l.size > 0 && l.size+int64(len(line))+1 > l.cfg.MaxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(append(line, '\n'))
	if err == nil && l.cfg.Fsync {
		err = l.f.Sync()
	}
	if err != nil {
		if n > 0 {
			if terr := l.f.Truncate(l.size); terr != nil {
				l.broken = fmt.Errorf("audit: %w: log left with a partial line: %v", ErrUnavailable, terr)
			}
		}
		return fmt.Errorf("audit: write: %w: %v", ErrUnavailable, err)
	}
	l.size += int64(n)
	l.seq, l.prev = e.Seq, hashLine(line)
	if l.stdout != nil {
		l.stdout.Write(append(line, '\n')) // best effort: the file is the record
	}
	return nil
}

// rotate renames the current file away and starts a new one; the chain goes on.
func (l *Log) rotate() error {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	dst := l.cfg.Path + "." + l.now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(l.cfg.Path, dst); err != nil {
		return fmt.Errorf("audit: rotate: %w: %v", ErrUnavailable, err)
	}
	f, err := os.OpenFile(l.cfg.Path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: rotate: %w: %v", ErrUnavailable, err)
	}
	l.f, l.size = f, 0
	return nil
}

// Rotate starts a new file now (e.g. on SIGHUP).
func (l *Log) Rotate() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("audit: %w: closed", ErrUnavailable)
	}
	return l.rotate()
}

// Close closes the file; later writes fail.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// LastHash returns the sequence number and hash of the last line written.
func (l *Log) LastHash() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, l.prev
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
