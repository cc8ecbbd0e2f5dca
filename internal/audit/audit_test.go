package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// writeLog writes n lines to a fresh log and returns its path and lines.
func writeLog(t *testing.T, n int) (string, [][]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Config{Path: path}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		typ := "request"
		if i%2 == 1 {
			typ = "response"
		}
		e := &Entry{Type: typ, RequestID: "r", Method: "/hsmgate.v1.TransitService/Encrypt", Resource: "transit/keys/k", Items: i + 1,
			Identity: &Identity{Name: "svc", Kind: "token", Accessor: l.HMAC("acc")}}
		if err := l.Write(e); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, bytes.SplitAfter(b, []byte("\n"))[:n]
}

func join(lines [][]byte) string { return string(bytes.Join(lines, nil)) }

func TestVerify(t *testing.T) {
	_, lines := writeLog(t, 10)
	edit := func(i int) [][]byte {
		out := append([][]byte(nil), lines...)
		out[i] = bytes.Replace(lines[i], []byte(`"name":"svc"`), []byte(`"name":"eve"`), 1)
		return out
	}
	drop := func(i int) [][]byte {
		return append(append([][]byte(nil), lines[:i]...), lines[i+1:]...)
	}
	swap := func(i int) [][]byte {
		out := append([][]byte(nil), lines...)
		out[i], out[i+1] = out[i+1], out[i]
		return out
	}
	insert := func(i int, line []byte) [][]byte {
		out := append([][]byte(nil), lines[:i]...)
		out = append(out, line)
		return append(out, lines[i:]...)
	}
	cases := []struct {
		name     string
		log      [][]byte
		wantLine int
		want     string
	}{
		{"intact", lines, 0, ""},
		{"edited line 4", edit(3), 4, Changed},
		{"edited first line", edit(0), 1, Changed},
		{"deleted line 5", drop(4), 5, Missing},
		{"deleted first line", drop(0), 0, ""}, // alone, a file may start mid-chain: see TestVerifyRotation
		{"reordered lines 6 and 7", swap(5), 6, Reordered},
		{"duplicated line 3", insert(3, lines[2]), 3, Inserted},
		{"old line replayed at 8", insert(7, lines[1]), 8, Inserted},
		// A forged line that chains correctly to line 4 and takes seq 5: the
		// real line 5, now line 6, claims the same place.
		{"forged line inserted at 5", insert(4, edit(4)[4]), 5, Inserted},
		{"garbage line 2", insert(1, []byte("hello\n")), 2, Malformed},
		{"torn last line", append(append([][]byte(nil), lines[:9]...), lines[9][:20]), 10, Malformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := Verify(strings.NewReader(join(c.log)))
			if c.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				if n != len(c.log) {
					t.Errorf("got %d lines, want %d", n, len(c.log))
				}
				return
			}
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *ChainError", err)
			}
			if ce.Line != c.wantLine || ce.Problem != c.want {
				t.Errorf("got line %d %s (%v), want line %d %s", ce.Line, ce.Problem, err, c.wantLine, c.want)
			}
		})
	}
}

// TestVerifyRotation: a log rotated by size keeps one chain across files;
// a deleted first line of a later file, and a missing file, are found.
func TestVerifyRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := Open(Config{Path: path, MaxBytes: 2000}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	const total = 40
	for i := range total {
		if err := l.Write(&Entry{Type: "request", Method: "/m", Items: i}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	// Reopening continues the chain in the same file.
	l, err = Open(Config{Path: path, MaxBytes: 2000}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(&Entry{Type: "request", Method: "/m"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	rotated, _ := filepath.Glob(path + ".*")
	sort.Strings(rotated)
	files := append(rotated, path)
	if len(files) < 3 {
		t.Fatalf("got %d files, want at least 3 (rotation)", len(files))
	}
	verifyAll := func(files []string, contents map[string]string) (int, error) {
		v := new(Verifier)
		sum := 0
		for _, f := range files {
			s, ok := contents[f]
			if !ok {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				s = string(b)
			}
			n, err := v.Verify(f, strings.NewReader(s))
			sum += n
			if err != nil {
				return sum, err
			}
		}
		return sum, nil
	}
	t.Run("intact", func(t *testing.T) {
		n, err := verifyAll(files, nil)
		if err != nil || n != total+1 {
			t.Errorf("got %d, %v, want %d lines, nil", n, err, total+1)
		}
	})
	t.Run("first line of the second file deleted", func(t *testing.T) {
		b, _ := os.ReadFile(files[1])
		_, rest, _ := strings.Cut(string(b), "\n")
		_, err := verifyAll(files, map[string]string{files[1]: rest})
		var ce *ChainError
		if !errors.As(err, &ce) || ce.File != files[1] || ce.Line != 1 || ce.Problem != Missing {
			t.Errorf("got %v, want %s line 1 missing", err, files[1])
		}
	})
	t.Run("a middle file left out", func(t *testing.T) {
		_, err := verifyAll([]string{files[0], files[2]}, nil)
		var ce *ChainError
		if !errors.As(err, &ce) || ce.File != files[2] || ce.Line != 1 || ce.Problem != Missing {
			t.Errorf("got %v, want %s line 1 missing", err, files[2])
		}
	})
	t.Run("last line of the first file edited", func(t *testing.T) {
		b, _ := os.ReadFile(files[0])
		s := strings.TrimSuffix(string(b), "\n")
		i := strings.LastIndex(s, "\n")
		edited := s[:i+1] + strings.Replace(s[i+1:], `"method":"/m"`, `"method":"/x"`, 1) + "\n"
		_, err := verifyAll(files, map[string]string{files[0]: edited})
		lines := strings.Count(edited, "\n")
		var ce *ChainError
		if !errors.As(err, &ce) || ce.File != files[0] || ce.Line != lines || ce.Problem != Changed {
			t.Errorf("got %v, want %s line %d changed", err, files[0], lines)
		}
	})
}

// TestWriteFailsClosed: on /dev/full every write fails with ErrUnavailable
// (as root too), and an unopenable path fails at Open.
func TestWriteFailsClosed(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err == nil {
		l, err := Open(Config{Path: "/dev/full", MaxBytes: -1}, testKey)
		if err != nil {
			t.Fatal(err)
		}
		err = l.Write(&Entry{Type: "request", Method: "/m"})
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errs.Unavailable) {
			t.Errorf("Write on /dev/full: got %v, want ErrUnavailable", err)
		}
		l.Close()
	}
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	if _, err := Open(Config{Path: filepath.Join(notDir, "audit.log")}, testKey); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Open under a file: got %v, want ErrUnavailable", err)
	}
	t.Run("closed log", func(t *testing.T) {
		l, err := Open(Config{Path: filepath.Join(t.TempDir(), "a.log")}, testKey)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		if err := l.Write(&Entry{Type: "request"}); !errors.Is(err, ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
	})
}

// TestTornTail: a file ending in a partial line (a crash mid-write) is rotated
// out on Open; the new file continues from the last whole line.
func TestTornTail(t *testing.T) {
	path, lines := writeLog(t, 4)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte(`{"seq":5,"ty`))
	f.Close()
	l, err := Open(Config{Path: path}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(&Entry{Type: "request", Method: "/m"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	rotated, _ := filepath.Glob(path + ".*")
	if len(rotated) != 1 {
		t.Fatalf("got %d rotated files, want 1", len(rotated))
	}
	v := new(Verifier)
	if _, err := v.Verify("new", strings.NewReader(join(lines))); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if n, err := v.Verify("new", bytes.NewReader(b)); err != nil || n != 1 {
		t.Errorf("new file after the whole lines: got %d, %v, want 1 line, nil", n, err)
	}
}

func TestHMAC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	l1, _ := Open(Config{Path: path}, testKey)
	l2, _ := Open(Config{Path: path + "2"}, bytes.Repeat([]byte{8}, 32))
	defer l1.Close()
	defer l2.Close()
	a, b := l1.HMAC("secret-id"), l2.HMAC("secret-id")
	if a == b || strings.Contains(a, "secret-id") || !strings.HasPrefix(a, "hmac-sha256:") || a != l1.HMAC("secret-id") {
		t.Errorf("got %s and %s: want keyed, deterministic, prefixed HMACs", a, b)
	}
	if _, err := Open(Config{Path: path}, []byte("short")); err == nil {
		t.Errorf("short key: got nil error")
	}
}

func TestItemCount(t *testing.T) {
	list, _ := structpb.NewList([]any{1, 2, 3})
	cases := []struct {
		name string
		msg  any
		want int
	}{
		{"no items field", wrapperspb.String("x"), 1},
		{"nil", nil, 1},
		// structpb.ListValue's repeated field is "values", not "items".
		{"other repeated field", list, 1},
		{"three items", &hsmgatev1.EncryptRequest{Name: "k", Items: make([]*hsmgatev1.EncryptItem, 3)}, 3},
		{"zero items", &hsmgatev1.EncryptRequest{Name: "k"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got int
			switch m := c.msg.(type) {
			case nil:
				got = ItemCount(nil)
			case *wrapperspb.StringValue:
				got = ItemCount(m)
			case *structpb.ListValue:
				got = ItemCount(m)
			case *hsmgatev1.EncryptRequest:
				got = ItemCount(m)
			}
			if got != c.want {
				t.Errorf("got %d, want %d", got, c.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte("{\"seq\":1,\"prev\":\"\"}\n{\"seq\":2,\"prev\":\"x\"}\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte("{\"seq\":3}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := Verify(bytes.NewReader(b))
		if err != nil {
			var ce *ChainError
			if !errors.As(err, &ce) || ce.Line < 1 {
				t.Fatalf("got %v, want a *ChainError with a line", err)
			}
		}
		if n < 0 || n > bytes.Count(b, []byte("\n"))+1 {
			t.Fatalf("got %d lines", n)
		}
	})
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
