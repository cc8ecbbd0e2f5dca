package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

func hsmSigner(t *testing.T, m *hsm.Module, label string) *hsm.Signer {
	t.Helper()
	ctx := context.Background()
	if err := m.GenerateKey(ctx, label, hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	s, err := m.Signer(ctx, label)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCheckpointSigned: the checkpoint is signed by the HSM key; an edited
// checkpoint, one signed by another key, an unsigned one where a key is
// expected, and one under another HMAC key all fail; Open refuses a
// checkpoint signed by another key than its own.
func TestCheckpointSigned(t *testing.T) {
	m := hsmtest.Module(t)
	s := hsmSigner(t, m, CheckpointKeyLabel)
	other := hsmSigner(t, m, "other")
	path := dirPath(t)
	open := func(sg Signer) (*Log, error) {
		return OpenWith(Config{Path: path, CheckpointInterval: -1}, testKey, Options{Signer: sg, SignerLabel: CheckpointKeyLabel})
	}
	l, err := open(s)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := l.Write(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	seq, hash, _ := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cp, err := ReadCheckpoint(CheckpointPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != seq || cp.Hash != hash || cp.KeyLabel != CheckpointKeyLabel {
		t.Fatalf("got checkpoint %d:%s by %q, want %d:%s by %q", cp.Seq, cp.Hash, cp.KeyLabel, seq, hash, CheckpointKeyLabel)
	}
	fp, err := VerifyCheckpoint(testKey, cp, s.Public())
	want, _ := Fingerprint(s.Public())
	if err != nil || fp != want {
		t.Fatalf("VerifyCheckpoint: got %q, %v, want %q, nil", fp, err, want)
	}
	edited := func(f func(c *Checkpoint)) *Checkpoint {
		c := *cp
		f(&c)
		return &c
	}
	cases := []struct {
		name string
		key  []byte
		cp   *Checkpoint
		pub  any
	}{
		{"seq lowered", testKey, edited(func(c *Checkpoint) { c.Seq-- }), s.Public()},
		{"hash changed", testKey, edited(func(c *Checkpoint) { c.Hash = strings.Repeat("0", 64) }), s.Public()},
		{"chain changed", testKey, edited(func(c *Checkpoint) { c.ChainID = "x" }), nil},
		{"expected another key", testKey, cp, other.Public()},
		{"unsigned where a key is expected", testKey, edited(func(c *Checkpoint) { c.Signature, c.PublicKey = nil, nil }), s.Public()},
		{"another HMAC key", bytes.Repeat([]byte{9}, 32), cp, nil},
		{"signature cut", testKey, edited(func(c *Checkpoint) { c.Signature = c.Signature[:len(c.Signature)-2] }), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := VerifyCheckpoint(c.key, c.cp, c.pub); !errors.Is(err, ErrCheckpoint) {
				t.Errorf("got %v, want ErrCheckpoint", err)
			}
		})
	}
	t.Run("Open with another signer", func(t *testing.T) {
		if _, err := open(other); !errors.Is(err, ErrTampered) {
			t.Errorf("got %v, want ErrTampered", err)
		}
	})
	t.Run("Open with its signer continues", func(t *testing.T) {
		l, err := open(s)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	})
}

// TestCheckpointPeriodic: the checkpoint follows the head on each tick, and
// the tick notices a deleted file while no request comes.
func TestCheckpointPeriodic(t *testing.T) {
	path := dirPath(t)
	l, err := Open(Config{Path: path, CheckpointInterval: time.Millisecond}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 3 {
		if err := l.Write(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	seq, hash, _ := l.Head()
	guard := time.Now().Add(time.Minute) // a hang guard
	for c := l.Checkpoint(); c == nil || c.Seq != seq; c = l.Checkpoint() {
		if time.Now().After(guard) {
			t.Fatalf("no checkpoint of seq %d", seq)
		}
		time.Sleep(time.Millisecond)
	}
	onDisk, err := ReadCheckpoint(CheckpointPath(path))
	if err != nil || onDisk.Seq != seq || onDisk.Hash != hash {
		t.Fatalf("checkpoint file: got %+v, %v, want seq %d", onDisk, err, seq)
	}
	os.Remove(path)
	for {
		l.mu.Lock()
		broken := l.broken
		l.mu.Unlock()
		if broken != nil {
			break
		}
		if time.Now().After(guard) {
			t.Fatal("the deleted file is not noticed")
		}
		time.Sleep(time.Millisecond)
	}
}
