package audit

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// TestRotation: a log rotated by size keeps one verifiable chain across
// files and across a restart; each file starts with a header linked to the
// previous file.
func TestRotation(t *testing.T) {
	path := dirPath(t)
	makeLog(t, path, Config{MaxBytes: 2000, MaxFiles: -1}, testKey, 30)
	files, cp := makeLog(t, path, Config{MaxBytes: 2000, MaxFiles: -1}, testKey, 30)
	if len(files) < 4 {
		t.Fatalf("got %d files, want at least 4", len(files))
	}
	for _, f := range files {
		if len(f.data) > 2000 {
			t.Errorf("%s: got %d bytes, want at most 2000", f.name, len(f.data))
		}
		first, _ := parse(nil, bytes.TrimSuffix(splitLines(f.data)[0], []byte("\n")))
		if first.Type != TypeHeader {
			t.Errorf("%s does not start with a header", f.name)
		}
	}
	r, err := verifyFiles(testKey, files, cp)
	if err != nil {
		t.Fatal(err)
	}
	if r.FirstSeq != 1 || r.LastSeq != cp.Seq || r.Lines != int(cp.Seq) || r.Files != len(files) {
		t.Errorf("got %+v, want seq 1..%d over %d files", r, cp.Seq, len(files))
	}
}

// TestRetention: rotated files beyond max_files, and older than max_age, are
// deleted; what is left verifies, starting mid-chain at a header.
func TestRetention(t *testing.T) {
	t.Run("max_files", func(t *testing.T) {
		path := dirPath(t)
		files, cp := makeLog(t, path, Config{MaxBytes: 1500, MaxFiles: 2}, testKey, 60)
		if len(files) != 3 {
			t.Fatalf("got %d files, want 2 rotated and the live one", len(files))
		}
		r, err := verifyFiles(testKey, files, cp)
		if err != nil {
			t.Fatal(err)
		}
		if r.FirstSeq <= 1 {
			t.Errorf("got first seq %d, want the chain to start mid-way", r.FirstSeq)
		}
		total := 0
		for _, f := range files {
			total += len(f.data)
		}
		if total > 3*1500 {
			t.Errorf("got %d bytes on disk, want at most (max_files+1) x max_size = %d", total, 3*1500)
		}
	})
	t.Run("max_age", func(t *testing.T) {
		path := dirPath(t)
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		l, err := OpenWith(Config{Path: path, MaxAge: 36 * time.Hour, MaxFiles: -1, CheckpointInterval: -1}, testKey,
			Options{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		for day := range 5 {
			if err := l.Write(entry(day)); err != nil {
				t.Fatal(err)
			}
			if err := l.Rotate(); err != nil {
				t.Fatal(err)
			}
			now = now.Add(24 * time.Hour)
		}
		l.Close()
		names, times, _ := rotatedFiles(path)
		if len(names) != 2 {
			t.Fatalf("got %d rotated files (%v), want the 2 rotated in the last 36h", len(names), names)
		}
		for _, ts := range times {
			if now.Sub(ts) > 60*time.Hour {
				t.Errorf("a file rotated at %v is kept", ts)
			}
		}
		cp, _ := ReadCheckpoint(CheckpointPath(path))
		if _, err := verifyFiles(testKey, readFiles(t, path), cp); err != nil {
			t.Error(err)
		}
	})
	t.Run("crash mid-rotation", func(t *testing.T) {
		// The live file was renamed away but its successor never made: Open
		// continues from the newest rotated file.
		path := dirPath(t)
		makeLog(t, path, Config{MaxBytes: 1500}, testKey, 20)
		if err := os.Rename(path, rotatedName(path, time.Now())); err != nil {
			t.Fatal(err)
		}
		files, cp := makeLog(t, path, Config{MaxBytes: 1500}, testKey, 3)
		if _, err := verifyFiles(testKey, files, cp); err != nil {
			t.Error(err)
		}
	})
}

// TestWriteFailsClosed: when the disk is full (here: the file size limit,
// RLIMIT_FSIZE, in a child process) a write fails with ErrUnavailable, the
// partial line is cut off, and the chain still verifies.
func TestWriteFailsClosed(t *testing.T) {
	if dir := os.Getenv("AUDIT_FSIZE_CHILD"); dir != "" {
		switch os.Getenv("AUDIT_FSIZE_MODE") {
		case "rotation":
			fsizeRotationChild(t, dir)
		default:
			fsizeChild(t, dir)
		}
		return
	}
	for _, mode := range []string{"write", "rotation"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestWriteFailsClosed$", "-test.count=1")
			cmd.Env = append(os.Environ(), "AUDIT_FSIZE_CHILD="+dir, "AUDIT_FSIZE_MODE="+mode)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			path := filepath.Join(dir, "audit.log")
			var cp *Checkpoint
			if mode == "rotation" {
				if cp, err = ReadCheckpoint(CheckpointPath(path)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := verifyFiles(testKey, readFiles(t, path), cp); err != nil {
				t.Errorf("after the failed writes: %v", err)
			}
		})
	}
}

// setFileLimit sets RLIMIT_FSIZE's soft limit (0: back to the hard limit).
func setFileLimit(t *testing.T, n uint64) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
		t.Fatal(err)
	}
	rl.Cur = rl.Max
	if n > 0 {
		rl.Cur = n
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
		t.Fatal(err)
	}
}

// fsizeRotationChild: the disk fills just as the file rotates, so the new
// file's header cannot be written. The request fails; once space is back,
// the next write puts the header first and the chain goes on.
func fsizeRotationChild(t *testing.T, dir string) {
	signal.Ignore(syscall.SIGXFSZ)
	path := filepath.Join(dir, "audit.log")
	l, err := Open(Config{Path: path, CheckpointInterval: -1, MaxBytes: 1200}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	names := func() int { n, _, _ := rotatedFiles(path); return len(n) }
	for names() == 0 {
		if err := l.Write(entry(0)); err != nil {
			t.Fatal(err)
		}
	}
	setFileLimit(t, 100)
	if err := l.Rotate(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Rotate while the header cannot be written: got %v, want ErrUnavailable", err)
	}
	if err := l.Write(entry(2)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Write while the header cannot be written: got %v, want ErrUnavailable", err)
	}
	if err := l.Rotate(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Rotate again while the header cannot be written: got %v, want ErrUnavailable", err)
	}
	if names() != 2 {
		t.Fatalf("got %d rotated files, want 2 (the rotation happened)", names())
	}
	setFileLimit(t, 0)
	for i := range 3 {
		if err := l.Write(entry(i)); err != nil {
			t.Fatalf("Write once space is back: %v", err)
		}
	}
	l.Close()
}

func fsizeChild(t *testing.T, dir string) {
	signal.Ignore(syscall.SIGXFSZ)
	path := filepath.Join(dir, "audit.log")
	l, err := Open(Config{Path: path, CheckpointInterval: -1, MaxBytes: -1}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 4000
	setFileLimit(t, limit)
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		werr = l.Write(entry(i))
	}
	if !errors.Is(werr, ErrUnavailable) || !errors.Is(werr, errs.Unavailable) {
		t.Fatalf("Write past the limit: got %v, want ErrUnavailable", werr)
	}
	if err := l.Write(entry(0)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("next Write: got %v, want ErrUnavailable", err)
	}
	st, _ := os.Stat(path)
	b, _ := os.ReadFile(path)
	if st.Size() > limit || len(b) == 0 || b[len(b)-1] != '\n' {
		t.Errorf("got %d bytes ending %q, want whole lines under %d bytes", st.Size(), b[max(len(b)-1, 0):], limit)
	}
	l.Close()
}
