package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// logFile is one file of a log, as Verify reads it.
type logFile struct {
	name string
	data []byte
}

func entry(i int) *Entry {
	typ := "request"
	if i%2 == 1 {
		typ = "response"
	}
	return &Entry{Type: typ, RequestID: "r", Method: "/hsmgate.v1.TransitService/Encrypt", Resource: "transit/keys/k", Items: i + 1,
		Identity: &Identity{Name: "svc", Kind: "token"}}
}

// makeLog writes n entries to the log at path (cfg.Path set from it), closes
// it and returns its files (rotated oldest first, then the live one) and its
// checkpoint.
func makeLog(t *testing.T, path string, cfg Config, key []byte, n int) ([]logFile, *Checkpoint) {
	t.Helper()
	cfg.Path = path
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = -1
	}
	l, err := Open(cfg, key)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for i := range n {
		if err := l.Write(entry(i)); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cp, err := ReadCheckpoint(CheckpointPath(path))
	if err != nil {
		t.Fatal(err)
	}
	return readFiles(t, path), cp
}

// readFiles reads the rotated files of path and path itself.
func readFiles(t *testing.T, path string) []logFile {
	t.Helper()
	names, _, err := rotatedFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []logFile
	for _, n := range append(names, path) {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, logFile{n, b})
	}
	return out
}

// verifyFiles verifies files in order with key, expecting cp's head if cp is
// not nil.
func verifyFiles(key []byte, files []logFile, cp *Checkpoint) (Result, error) {
	v, err := NewVerifier(key)
	if err != nil {
		return Result{}, err
	}
	if cp != nil {
		v.Expect(cp.Seq, cp.Hash)
	}
	for _, f := range files {
		if _, err := v.Verify(f.name, bytes.NewReader(f.data)); err != nil {
			return Result{}, err
		}
	}
	return v.Finish()
}

func splitLines(b []byte) [][]byte {
	return bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// joinLines joins lines, each ending with a newline.
func joinLines(lines [][]byte) []byte {
	var out []byte
	for _, l := range lines {
		out = append(out, bytes.TrimSuffix(l, []byte("\n"))...)
		out = append(out, '\n')
	}
	return out
}

// editLine changes one byte of the line's time, keeping its mac.
func editLine(line []byte) []byte {
	return bytes.Replace(line, []byte(`"time":"20`), []byte(`"time":"21`), 1)
}

// rechain edits lines[from] and re-seals it and every later line so that
// the links hold, with reseal computing each line's new mac.
func rechain(lines [][]byte, from int, reseal func(body []byte) ([]byte, string)) [][]byte {
	out := make([][]byte, len(lines))
	copy(out, lines)
	prevOld, prevNew := "", ""
	for i := from; i < len(lines); i++ {
		body, sum, ok := unseal(bytes.TrimSuffix(lines[i], []byte("\n")))
		if !ok {
			panic("rechain: not a sealed line")
		}
		if i == from {
			body = editLine(body)
		} else {
			body = bytes.Replace(body, []byte(`"prev":"`+prevOld+`"`), []byte(`"prev":"`+prevNew+`"`), 1)
		}
		line, newSum := reseal(body)
		out[i] = append(line, '\n')
		prevOld, prevNew = sum, newSum
	}
	return out
}

// sha256Seal is what an attacker without the key can compute: the old,
// unkeyed chain hash in place of the MAC.
func sha256Seal(body []byte) ([]byte, string) {
	h := sha256.Sum256(body)
	sum := hex.EncodeToString(h[:])
	line := append([]byte(nil), body[:len(body)-1]...)
	return append(line, macPrefix+sum+macSuffix...), sum
}

func otherKeySeal(body []byte) ([]byte, string) {
	k, _ := deriveKeys(bytes.Repeat([]byte{9}, 32))
	return seal(k.chain, body)
}

func dirPath(t *testing.T) string { return filepath.Join(t.TempDir(), "audit.log") }

func readFileBytes(p string) ([]byte, error) { return os.ReadFile(p) }
