package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CheckpointKeyLabel is the label of the HSM key that signs checkpoints: an
// ECDSA P-256 key made by `hsmgate init` (and by `hsmgate dev`) beside the KEK.
const CheckpointKeyLabel = "hsmgate-audit-checkpoint"

// Signer signs checkpoints: an HSM key (*hsm.Signer). ECDSA keys only; the
// signature is ASN.1 DER over SHA-256 of Checkpoint.Message.
type Signer interface {
	Public() crypto.PublicKey
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// Checkpoint is the head of the chain as the server publishes it: written to
// the checkpoint file beside the log, logged, and exported as a metric.
// Verify takes it as the expected head: a chain that does not reach it had
// its tail cut or its last lines deleted.
//
// MAC (keyed by a key derived from the deployment HMAC key) proves it came
// from a holder of that key; Signature (an HSM key that never leaves the HSM)
// proves it came from the server. A copy kept off the host (the server log,
// the metrics history) also defeats replaying an older checkpoint file.
type Checkpoint struct {
	Version int       `json:"v"`
	ChainID string    `json:"chain_id"`
	Seq     uint64    `json:"seq"`
	Hash    string    `json:"hash"`
	File    string    `json:"file"`
	Time    time.Time `json:"time"`
	MAC     string    `json:"mac"`
	// KeyLabel names the HSM key; PublicKey is its PKIX DER form, Signature
	// the ECDSA signature (both base64 in JSON). Empty when unsigned.
	KeyLabel  string `json:"key_label,omitempty"`
	PublicKey []byte `json:"public_key,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

// Message is what the MAC and the signature cover.
func (c *Checkpoint) Message() []byte {
	return fmt.Appendf(nil, "hsmgate-audit-checkpoint/%d\n%s\n%d\n%s\n%s\n%s\n",
		c.Version, c.ChainID, c.Seq, c.Hash, c.File, c.Time.UTC().Format(time.RFC3339Nano))
}

// CheckpointPath is where the checkpoint of the log at path is written.
func CheckpointPath(path string) string { return path + "-checkpoint.json" }

// ParseHead parses "SEQ:HASH" (as the server logs a checkpoint).
func ParseHead(s string) (uint64, string, error) {
	a, b, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseUint(a, 10, 64)
	if !ok || err != nil || seq == 0 {
		return 0, "", fmt.Errorf("audit: head %q: want SEQ:HASH", s)
	}
	if _, err := hex.DecodeString(b); err != nil || len(b) != macHexLen {
		return 0, "", fmt.Errorf("audit: head %q: the hash is not 64 hex digits", s)
	}
	return seq, b, nil
}

// ReadCheckpoint reads and parses a checkpoint file (not its MAC or signature:
// see VerifyCheckpoint).
func ReadCheckpoint(path string) (*Checkpoint, error) {
	b, err := readSmallRegular(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	c := new(Checkpoint)
	if err := json.Unmarshal(b, c); err != nil || c.Version != 1 || c.Seq == 0 || len(c.Hash) != macHexLen {
		return nil, fmt.Errorf("audit: checkpoint %s: not a checkpoint", path)
	}
	return c, nil
}

// ErrCheckpoint: a checkpoint's MAC or signature does not verify.
var ErrCheckpoint = errors.New("audit: checkpoint does not verify")

// VerifyCheckpoint checks c's MAC under the deployment HMAC key, and its
// signature: against pub when pub is not nil (a signature is then required),
// else against the public key it carries, if signed. It returns the key's
// fingerprint ("sha256:" and hex of the PKIX DER), or "" if unsigned.
func VerifyCheckpoint(hmacKey []byte, c *Checkpoint, pub crypto.PublicKey) (string, error) {
	k, err := deriveKeys(hmacKey)
	if err != nil {
		return "", err
	}
	return k.verifyCheckpoint(c, pub)
}

func (k keys) verifyCheckpoint(c *Checkpoint, pub crypto.PublicKey) (string, error) {
	if !checkMAC(k.checkpoint, c.Message(), c.MAC) {
		return "", fmt.Errorf("%w: bad MAC (edited, or another deployment's key)", ErrCheckpoint)
	}
	if pub == nil && len(c.Signature) == 0 {
		return "", nil
	}
	if len(c.Signature) == 0 {
		return "", fmt.Errorf("%w: not signed", ErrCheckpoint)
	}
	carried, err := x509.ParsePKIXPublicKey(c.PublicKey)
	if err != nil {
		return "", fmt.Errorf("%w: public key: %v", ErrCheckpoint, err)
	}
	if pub == nil {
		pub = carried
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return "", fmt.Errorf("%w: want an ECDSA key, got %T", ErrCheckpoint, pub)
	}
	if !ec.Equal(carried) {
		return "", fmt.Errorf("%w: signed by another key than the one expected", ErrCheckpoint)
	}
	digest := sha256.Sum256(c.Message())
	if !ecdsa.VerifyASN1(ec, digest[:], c.Signature) {
		return "", fmt.Errorf("%w: bad signature", ErrCheckpoint)
	}
	return Fingerprint(ec)
}

// Fingerprint is "sha256:" and the hex SHA-256 of pub's PKIX DER form.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// makeCheckpoint builds, MACs and (with a signer) signs the checkpoint of
// the given head.
func (l *Log) makeCheckpoint(ctx context.Context, h head) (*Checkpoint, error) {
	c := &Checkpoint{Version: 1, ChainID: h.chainID, Seq: h.seq, Hash: h.hash,
		File: filepath.Base(l.cfg.Path), Time: l.now().UTC()}
	c.MAC = hex.EncodeToString(mac(l.keys.checkpoint, c.Message()))
	if l.opts.Signer == nil {
		return c, nil
	}
	der, err := x509.MarshalPKIXPublicKey(l.opts.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	c.KeyLabel, c.PublicKey = l.opts.SignerLabel, der
	digest := sha256.Sum256(c.Message())
	if c.Signature, err = l.opts.Signer.SignContext(ctx, digest[:], crypto.SHA256); err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return c, nil
}

// publish writes the checkpoint of the current head (unless it was already
// published), logs it and keeps it for Checkpoint. Errors are logged: a
// checkpoint that cannot be made leaves the previous one in place.
func (l *Log) publish(ctx context.Context) {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	l.mu.Lock()
	h := l.head
	l.mu.Unlock()
	if last := l.published.Load(); h.seq == 0 || (last != nil && last.Seq == h.seq) {
		return
	}
	c, err := l.makeCheckpoint(ctx, h)
	if err == nil {
		var b []byte
		b, err = json.MarshalIndent(c, "", "  ")
		if err == nil {
			err = writeFileAtomic(l.cpPath, append(b, '\n'))
		}
	}
	if err != nil {
		l.log.Error("audit checkpoint not written", "seq", h.seq, "error", err)
		return
	}
	l.published.Store(c)
	l.log.Info("audit checkpoint", "seq", c.Seq, "hash", c.Hash, "head", fmt.Sprintf("%d:%s", c.Seq, c.Hash),
		"chain_id", c.ChainID, "signed", len(c.Signature) > 0, "key", c.KeyLabel)
}

// publisher publishes a checkpoint every interval, and checks on each tick
// that the file was not deleted or replaced while no request came.
func (l *Log) publisher(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if err := l.Check(context.Background()); err != nil {
			continue // logged once by Check
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		l.publish(ctx)
		cancel()
	}
}

// Checkpoint returns the last checkpoint published (nil before the first).
func (l *Log) Checkpoint() *Checkpoint { return l.published.Load() }
