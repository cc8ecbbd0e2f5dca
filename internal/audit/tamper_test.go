package audit

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

// TestTamper: every tampering of a rotated, checkpointed log is caught by
// the keyed verifier, and reported at the right file and line.
func TestTamper(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	cfg := Config{MaxBytes: 3000}
	files, cp := makeLog(t, path, cfg, testKey, 24)
	if len(files) < 3 {
		t.Fatalf("got %d files, want at least 3", len(files))
	}
	// Another chain under the same key (a second server, or an earlier
	// chain of this one), with as many files.
	otherFiles, _ := makeLog(t, filepath.Join(t.TempDir(), "audit.log"), cfg, testKey, 24)
	// After the log was deleted, a restart (without the checkpoint) began a
	// new chain at seq 1 in the same place.
	restarted, _ := makeLog(t, filepath.Join(t.TempDir(), "audit.log"), Config{}, testKey, 40)
	restarted[0].name = files[len(files)-1].name

	last := len(files) - 1
	lines := func(i int) [][]byte { return splitLines(files[i].data) }
	with := func(i int, ls [][]byte) []logFile {
		out := append([]logFile(nil), files...)
		out[i] = logFile{files[i].name, joinLines(ls)}
		return out
	}
	edit := func(i, j int) []logFile {
		ls := lines(i)
		ls[j] = editLine(ls[j])
		return with(i, ls)
	}
	drop := func(i, j int) []logFile {
		ls := lines(i)
		return with(i, append(ls[:j:j], ls[j+1:]...))
	}
	nLast := len(lines(last))
	mid := len(lines(1)) / 2

	cases := []struct {
		name     string
		files    []logFile
		noCP     bool // verify without the checkpoint
		file     int  // index of the file named in the error (-1: any)
		line     int
		problem  string
		wantLine bool
	}{
		{name: "intact", files: files},
		{name: "intact, without the checkpoint", files: files, noCP: true},
		{name: "first line (genesis header) edited", files: edit(0, 0), file: 0, line: 1, problem: Changed},
		{name: "middle line edited", files: edit(1, mid), file: 1, line: mid + 1, problem: Changed},
		{name: "last line edited", files: edit(last, nLast-1), file: last, line: nLast, problem: Changed},
		{name: "last line edited, without the checkpoint", files: edit(last, nLast-1), noCP: true, file: last, line: nLast, problem: Changed},
		{name: "first line deleted", files: drop(0, 0), file: 0, line: 1, problem: Missing},
		{name: "first two lines of a later file deleted", files: with(1, lines(1)[2:]), file: 1, line: 1, problem: Missing},
		{name: "first entry after a header deleted", files: drop(1, 1), file: 1, line: 2, problem: Missing},
		{name: "middle line deleted", files: drop(1, mid), file: 1, line: mid + 1, problem: Missing},
		{name: "last line deleted", files: drop(last, nLast-1), file: last, line: nLast - 1, problem: Truncated},
		{name: "tail truncated mid-line", files: func() []logFile {
			out := append([]logFile(nil), files...)
			out[last].data = files[last].data[:len(files[last].data)-40]
			return out
		}(), file: last, line: nLast, problem: Malformed},
		{name: "tail truncated mid-line, the cut line ended with a newline", files: with(last, append(lines(last)[:nLast-1:nLast-1], lines(last)[nLast-1][:30])), file: last, line: nLast, problem: Malformed},
		{name: "tail truncated at a line boundary", files: with(last, lines(last)[:2]), file: last, line: 2, problem: Truncated},
		{name: "two lines swapped", files: func() []logFile {
			ls := lines(1)
			ls[mid], ls[mid+1] = ls[mid+1], ls[mid]
			return with(1, ls)
		}(), file: 1, line: mid + 1, problem: Reordered},
		{name: "line duplicated", files: func() []logFile {
			ls := lines(1)
			return with(1, append(ls[:mid+1:mid+1], append([][]byte{ls[mid]}, ls[mid+1:]...)...))
		}(), file: 1, line: mid + 2, problem: Inserted},
		{name: "old line replayed into a later file", files: func() []logFile {
			ls := lines(last)
			return with(last, append(ls[:1:1], append([][]byte{lines(0)[3]}, ls[1:]...)...))
		}(), file: last, line: 2, problem: Inserted},
		{name: "header replayed inside a file", files: func() []logFile {
			ls := lines(1)
			return with(1, append(ls[:mid:mid], append([][]byte{ls[0]}, ls[mid:]...)...))
		}(), file: 1, line: mid + 1, problem: Inserted},
		{name: "edit re-chained with SHA-256 (no key)", files: with(1, rechain(lines(1), mid, sha256Seal)), file: 1, line: mid + 1, problem: Changed},
		{name: "edit re-chained under another key", files: with(1, rechain(lines(1), mid, otherKeySeal)), file: 1, line: mid + 1, problem: Changed},
		{name: "middle file deleted", files: append(files[:1:1], files[2:]...), file: 1, line: 1, problem: Missing},
		{name: "last file deleted", files: files[:last], file: last - 1, problem: Truncated},
		{name: "file deleted, new chain at seq 1 after a restart", files: restarted, problem: Mismatch, file: -1},
		{name: "new chain after a restart appended to the old files", files: append(files[:last:last], restarted...), file: last, line: 1, problem: Foreign},
		{name: "file from another chain swapped in", files: func() []logFile {
			out := append([]logFile(nil), files...)
			out[1] = logFile{files[1].name, otherFiles[1].data}
			return out
		}(), file: 1, line: 1, problem: Foreign},
		{name: "header link broken (previous file renamed)", files: func() []logFile {
			out := append([]logFile(nil), files...)
			out[0].name = filepath.Join(dir, "audit.log.renamed")
			return out
		}(), file: 1, line: 1, problem: Unlinked},
		{name: "files in the wrong order", files: []logFile{files[1], files[0], files[2]}, file: 1, line: 1, problem: "-1"},
		{name: "no files", files: nil, file: -1, problem: Missing},
		{name: "empty file", files: func() []logFile {
			out := append([]logFile(nil), files...)
			out[1].data = nil
			return out
		}(), file: 1, line: 1, problem: Malformed},
		{name: "a whole file from another key", files: func() []logFile {
			other, _ := makeLog(t, filepath.Join(t.TempDir(), "audit.log"), Config{}, bytes.Repeat([]byte{9}, 32), 5)
			return other
		}(), file: 0, line: 1, problem: Changed},
		{name: "garbage line", files: func() []logFile {
			ls := lines(1)
			return with(1, append(ls[:mid:mid], append([][]byte{[]byte("hello\n")}, ls[mid:]...)...))
		}(), file: 1, line: mid + 1, problem: Malformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var expect *Checkpoint
			if !c.noCP {
				expect = cp
			}
			_, err := verifyFiles(testKey, c.files, expect)
			if c.problem == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *ChainError", err)
			}
			if c.problem != "-1" && ce.Problem != c.problem {
				t.Errorf("got %s (%v), want %s", ce.Problem, err, c.problem)
			}
			if c.file >= 0 && c.file < len(c.files) && ce.File != c.files[c.file].name {
				t.Errorf("got file %s (%v), want %s", ce.File, err, c.files[c.file].name)
			}
			if c.line > 0 && ce.Line != c.line {
				t.Errorf("got line %d (%v), want %d", ce.Line, err, c.line)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	l, err := Open(Config{Path: filepath.Join(dir, "a.log"), CheckpointInterval: -1}, testKey)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 4 {
		l.Write(entry(i))
	}
	l.Close()
	good, _ := readFileBytes(filepath.Join(dir, "a.log"))
	f.Add(good)
	f.Add([]byte("{\"seq\":1,\"prev\":\"\"}\n{\"seq\":2,\"prev\":\"x\"}\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte("{\"seq\":3}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, key := range [][]byte{testKey, nil} {
			v := new(Verifier)
			if key != nil {
				v, _ = NewVerifier(key)
			}
			n, err := v.Verify("f", bytes.NewReader(b))
			if err == nil {
				_, err = v.Finish()
			}
			if err != nil {
				var ce *ChainError
				if !errors.As(err, &ce) {
					t.Fatalf("got %v, want a *ChainError", err)
				}
			}
			if n < 0 || n > bytes.Count(b, []byte("\n")) {
				t.Fatalf("got %d lines checked, more than the %d newlines", n, bytes.Count(b, []byte("\n")))
			}
		}
	})
}
