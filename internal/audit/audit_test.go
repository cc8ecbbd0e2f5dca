package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func openLog(t *testing.T, path string) *Log {
	t.Helper()
	l, err := Open(Config{Path: path, CheckpointInterval: -1}, testKey)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestDeletedFileFailsClosed: once the file is deleted, renamed away or
// replaced under a running Log, the write that went into the lost file and
// every later one fail with ErrUnavailable (the request fails), Check says
// so, and a file recreated at the path does not revive the Log.
func TestDeletedFileFailsClosed(t *testing.T) {
	for _, c := range []struct {
		name   string
		attack func(path string) error
	}{
		{"deleted", os.Remove},
		{"renamed away", func(p string) error { return os.Rename(p, p+".moved") }},
		{"replaced by rename", func(p string) error {
			if err := os.WriteFile(p+".new", nil, 0o600); err != nil {
				return err
			}
			return os.Rename(p+".new", p)
		}},
		{"deleted and recreated", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, nil, 0o600)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := dirPath(t)
			l := openLog(t, path)
			for i := range 3 {
				if err := l.Write(entry(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.attack(path); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				err := l.Write(entry(i))
				if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errs.Unavailable) {
					t.Fatalf("write %d after the file was %s: got %v, want ErrUnavailable", i, c.name, err)
				}
				if strings.Contains(err.Error(), path) {
					t.Errorf("the error names the path: %v", err)
				}
			}
			if err := l.Check(t.Context()); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Check: got %v, want ErrUnavailable", err)
			}
		})
	}
	t.Run("noticed by Check while idle", func(t *testing.T) {
		path := dirPath(t)
		l := openLog(t, path)
		if err := l.Check(t.Context()); err != nil {
			t.Fatalf("Check: %v", err)
		}
		os.Remove(path)
		if err := l.Check(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Check: got %v, want ErrUnavailable", err)
		}
		if err := l.Write(entry(0)); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Write: got %v, want ErrUnavailable", err)
		}
	})
}

// TestNonRegularRefused: a FIFO, a device, a directory or a symlink to a
// FIFO as the audit path is refused by Open, which does not block.
func TestNonRegularRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{"fifo": fifo, "symlink to a fifo": link, "directory": dir}
	// A character device, only if it is one (never a regular file outside
	// the test's directory).
	if st, err := os.Stat("/dev/full"); err == nil && st.Mode().Type()&os.ModeCharDevice != 0 {
		paths["device"] = "/dev/full"
	}
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				l, err := Open(Config{Path: p, CheckpointInterval: -1}, testKey)
				if err == nil {
					l.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("Open(%s): got %v, want ErrUnavailable", p, err)
				}
			case <-time.After(time.Minute): // a hang guard, not a timing assertion
				t.Fatalf("Open(%s) hangs", p)
			}
		})
	}
	if st, err := os.Lstat(fifo); err != nil || st.Mode().Type() != os.ModeNamedPipe {
		t.Errorf("the FIFO was replaced: %v", err)
	}
	t.Run("checkpoint is a fifo", func(t *testing.T) {
		path := dirPath(t)
		if err := syscall.Mkfifo(CheckpointPath(path), 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := Open(Config{Path: path, CheckpointInterval: -1}, testKey)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrTampered) {
				t.Errorf("got %v, want ErrTampered", err)
			}
		case <-time.After(time.Minute): // a hang guard
			t.Fatal("Open hangs on a FIFO checkpoint")
		}
	})
	t.Run("verified file is a fifo", func(t *testing.T) {
		if _, err := OpenRegular(fifo); err == nil {
			t.Errorf("OpenRegular(fifo): got nil error")
		}
	})
}

// TestRestart: reopening continues seq and the chain in the same file; a log
// deleted, cut, replaced by a new chain or edited at its end under an
// existing checkpoint refuses to open; moving the checkpoint aside starts a
// new chain on purpose.
func TestRestart(t *testing.T) {
	t.Run("resumes", func(t *testing.T) {
		path := dirPath(t)
		makeLog(t, path, Config{}, testKey, 5)
		files, cp := makeLog(t, path, Config{}, testKey, 4)
		if len(files) != 1 {
			t.Fatalf("got %d files, want 1", len(files))
		}
		r, err := verifyFiles(testKey, files, cp)
		if err != nil {
			t.Fatal(err)
		}
		if r.Lines != 10 || r.LastSeq != 10 || r.FirstSeq != 1 || cp.Seq != 10 {
			t.Errorf("got %d lines, seq %d..%d, checkpoint %d, want 10 lines (1 header), seq 1..10, checkpoint 10", r.Lines, r.FirstSeq, r.LastSeq, cp.Seq)
		}
	})
	refused := []struct {
		name   string
		attack func(t *testing.T, path string)
	}{
		{"log deleted", func(t *testing.T, p string) { os.Remove(p) }},
		{"log emptied", func(t *testing.T, p string) { os.Truncate(p, 0) }},
		{"last line deleted", func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			ls := splitLines(b)
			os.WriteFile(p, joinLines(ls[:len(ls)-1]), 0o600)
		}},
		{"last line edited", func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			ls := splitLines(b)
			ls[len(ls)-1] = editLine(ls[len(ls)-1])
			os.WriteFile(p, joinLines(ls), 0o600)
		}},
		{"replaced by a new chain", func(t *testing.T, p string) {
			other := filepath.Join(t.TempDir(), "audit.log")
			makeLog(t, other, Config{}, testKey, 20)
			b, _ := os.ReadFile(other)
			os.WriteFile(p, b, 0o600)
		}},
		{"checkpoint edited", func(t *testing.T, p string) {
			b, _ := os.ReadFile(CheckpointPath(p))
			os.WriteFile(CheckpointPath(p), bytes.Replace(b, []byte(`"seq": 6`), []byte(`"seq": 5`), 1), 0o600)
		}},
	}
	for _, c := range refused {
		t.Run("refused: "+c.name, func(t *testing.T) {
			path := dirPath(t)
			makeLog(t, path, Config{}, testKey, 5)
			c.attack(t, path)
			_, err := Open(Config{Path: path, CheckpointInterval: -1}, testKey)
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("Open: got %v, want ErrTampered", err)
			}
		})
	}
	t.Run("new chain on purpose", func(t *testing.T) {
		path := dirPath(t)
		_, old := makeLog(t, path, Config{}, testKey, 5)
		os.Remove(path)
		os.Rename(CheckpointPath(path), CheckpointPath(path)+".old")
		files, cp := makeLog(t, path, Config{}, testKey, 2)
		if cp.Seq != 3 || cp.ChainID == old.ChainID {
			t.Errorf("got seq %d chain %s, want seq 3 in a new chain (old %s)", cp.Seq, cp.ChainID, old.ChainID)
		}
		// The old checkpoint (kept off the host) shows the gap.
		if _, err := verifyFiles(testKey, files, old); err == nil {
			t.Errorf("the new chain verifies against the old checkpoint")
		}
	})
}

// TestTornTail: a file ending in a partial line (a crash mid-write) is rotated
// out on Open; the new file's header declares the torn bytes and the chain
// verifies across both.
func TestTornTail(t *testing.T) {
	path := dirPath(t)
	makeLog(t, path, Config{}, testKey, 4)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte(`{"seq":6,"ty`))
	f.Close()
	files, cp := makeLog(t, path, Config{}, testKey, 1)
	if len(files) != 2 {
		t.Fatalf("got %d files, want 2", len(files))
	}
	if r, err := verifyFiles(testKey, files, cp); err != nil || r.LastSeq != 7 {
		t.Errorf("got seq %d, %v, want 7, nil", r.LastSeq, err)
	}
	// Without the next file's header, the torn line is an error.
	if _, err := verifyFiles(testKey, files[:1], nil); err == nil {
		t.Errorf("a torn last line verifies")
	}
}

// TestUpgrade: a file of the old, unkeyed format is rotated out on Open and a
// new keyed chain begins; a file holding only a partial header (a crash
// just after a rotation) is started again, linked to the newest rotated file.
func TestUpgrade(t *testing.T) {
	t.Run("old format", func(t *testing.T) {
		path := dirPath(t)
		old := "{\"seq\":1,\"type\":\"request\",\"prev\":\"\"}\n{\"seq\":2,\"type\":\"response\",\"prev\":\"ab\"}\n"
		os.WriteFile(path, []byte(old), 0o600)
		files, cp := makeLog(t, path, Config{}, testKey, 2)
		if len(files) != 2 || string(files[0].data) != old {
			t.Fatalf("got %d files, want the old one kept as rotated and a new one", len(files))
		}
		if r, err := verifyFiles(testKey, files[1:], cp); err != nil || r.FirstSeq != 1 || r.LastSeq != 3 {
			t.Errorf("new chain: got %+v, %v, want seq 1..3", r, err)
		}
	})
	t.Run("partial header", func(t *testing.T) {
		path := dirPath(t)
		makeLog(t, path, Config{}, testKey, 3)
		if err := os.Rename(path, rotatedName(path, time.Now())); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(path, []byte(`{"time":"2026-`), 0o600)
		files, cp := makeLog(t, path, Config{}, testKey, 2)
		if r, err := verifyFiles(testKey, files, cp); err != nil || r.LastSeq != 7 {
			t.Errorf("got %+v, %v, want seq 1..7 over both files", r, err)
		}
	})
}

func TestHMAC(t *testing.T) {
	path := dirPath(t)
	l1 := openLog(t, path)
	l2, err := Open(Config{Path: path + "2", CheckpointInterval: -1}, bytes.Repeat([]byte{8}, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	a, b := l1.HMAC("secret-id"), l2.HMAC("secret-id")
	if a == b || strings.Contains(a, "secret-id") || !strings.HasPrefix(a, "hmac-sha256:") || a != l1.HMAC("secret-id") {
		t.Errorf("got %s and %s: want keyed, deterministic, prefixed HMACs", a, b)
	}
	if _, err := Open(Config{Path: path + "3"}, []byte("short")); err == nil {
		t.Errorf("short key: got nil error")
	}
	// Domain separation: no value HMAC is a chain MAC or the chain key.
	_, hash, _ := l1.Head()
	k, _ := deriveKeys(testKey)
	for _, s := range []string{kdfSalt, chainInfo, checkpointInfo, chainInfo + "\x01"} {
		v := strings.TrimPrefix(l1.HMAC(s), "hmac-sha256:")
		if v == hash || strings.Contains(v, string(k.chain)) || bytes.Equal([]byte(v), k.chain) {
			t.Errorf("HMAC(%q) reveals a chain value", s)
		}
	}
	if bytes.Equal(k.chain, testKey) || bytes.Equal(k.chain, k.checkpoint) {
		t.Errorf("derived keys are not distinct")
	}
	if err := l1.Write(&Entry{Type: TypeHeader}); err == nil {
		t.Errorf("Write of a header entry: got nil, want an error")
	}
}

func TestItemCount(t *testing.T) {
	list, _ := structpb.NewList([]any{1, 2, 3})
	cases := []struct {
		name string
		got  int
		want int
	}{
		{"no items field", ItemCount(wrapperspb.String("x")), 1},
		{"nil", ItemCount(nil), 1},
		// structpb.ListValue's repeated field is "values", not "items".
		{"other repeated field", ItemCount(list), 1},
		{"three items", ItemCount(&hsmgatev1.EncryptRequest{Name: "k", Items: make([]*hsmgatev1.EncryptItem, 3)}), 3},
		{"zero items", ItemCount(&hsmgatev1.EncryptRequest{Name: "k"}), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %d, want %d", c.got, c.want)
			}
		})
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hmac-key")
	k1, err := LoadOrCreateKeyFile(path)
	if err != nil || len(k1) != 32 {
		t.Fatalf("create: got %d bytes, %v, want 32", len(k1), err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode: got %o, want 600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateKeyFile(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("reload: got a different key or %v", err)
	}
	t.Setenv("HSMGATE_AUDIT_HMAC_KEY", "")
	if k3, err := LoadHMACKey(Config{HMACKeyFile: path}); err != nil || !bytes.Equal(k1, k3) {
		t.Errorf("LoadHMACKey(file): got %v", err)
	}
	t.Setenv("MY_KEY", strings.Repeat("ab", 32))
	if k4, err := LoadHMACKey(Config{HMACKeyEnv: "MY_KEY"}); err != nil || len(k4) != 32 {
		t.Errorf("LoadHMACKey(env): got %d bytes, %v", len(k4), err)
	}
	if _, err := LoadHMACKey(Config{}); err == nil {
		t.Errorf("LoadHMACKey(nothing): got nil error")
	}
}
