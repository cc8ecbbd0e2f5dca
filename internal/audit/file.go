package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// rotatedLayout is the time suffix of a rotated file: <path>.<UTC time>.
// Names sort in rotation order.
const rotatedLayout = "20060102T150405.000000000Z"

// openRegular opens path for appending (creating it when create is set) and
// refuses anything but a regular file: a FIFO, a device or a socket (or a
// symlink to one) would hang every request or lose the records. O_NONBLOCK
// keeps the open itself from blocking on a FIFO with no reader; it does
// nothing to a regular file.
func openRegular(path string, create bool) (*os.File, os.FileInfo, error) {
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	flags := os.O_RDWR | os.O_APPEND | syscall.O_NONBLOCK
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	return f, st, nil
}

// errReplaced: the path no longer names the open file.
var errReplaced = errors.New("the audit file was deleted, renamed or replaced while open")

// samePath checks that path still names the file open as fi (device and
// inode; one stat(2) per call, no allocation).
func samePath(path string, fi os.FileInfo) error {
	want, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("no inode for %s", path)
	}
	var st syscall.Stat_t
	for {
		err := syscall.Stat(path, &st)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.ENOENT {
			return errReplaced
		}
		if err != nil {
			return &os.PathError{Op: "stat", Path: path, Err: err}
		}
		break
	}
	if st.Dev != want.Dev || st.Ino != want.Ino {
		return errReplaced
	}
	return nil
}

// tail is what Open learns from an existing file.
type tail struct {
	first   []byte // the first line (the header), nil if none
	last    []byte // the last whole line, nil if none
	torn    int    // bytes after the last newline
	size    int64
	name    string
	hasData bool
}

// readTail reads the first and the last whole line of the file at path.
func readTail(f *os.File, size int64) (tail, error) {
	t := tail{size: size, hasData: size > 0}
	if size == 0 {
		return t, nil
	}
	head := make([]byte, min(size, maxLine+1))
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return t, err
	}
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		t.first = head[:i]
	}
	off := max(size-(maxLine+1), 0)
	buf := make([]byte, size-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return t, err
	}
	end := bytes.LastIndexByte(buf, '\n')
	if end < 0 {
		if off > 0 {
			return t, fmt.Errorf("last line longer than %d bytes", maxLine)
		}
		t.torn = len(buf)
		return t, nil
	}
	t.torn = len(buf) - end - 1
	start := bytes.LastIndexByte(buf[:end], '\n') + 1
	if start == 0 && off > 0 {
		return t, fmt.Errorf("last line longer than %d bytes", maxLine)
	}
	t.last = buf[start:end]
	return t, nil
}

// readTailPath opens path read-only (refusing non-regular files) and reads
// its tail.
func readTailPath(path string) (tail, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return tail{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return tail{}, err
	}
	t, err := readTail(f, st.Size())
	t.name = filepath.Base(path)
	return t, err
}

// OpenRegular opens path for reading, refusing anything but a regular file
// without blocking (a FIFO with no writer would block a plain open).
func OpenRegular(path string) (*os.File, error) {
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, nil
}

// readSmallRegular reads a regular file of at most limit bytes.
func readSmallRegular(path string, limit int64) ([]byte, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, err
}

// rotatedFiles lists the rotated files of path, oldest first, with the time
// in their names.
func rotatedFiles(path string) ([]string, []time.Time, error) {
	matches, err := filepath.Glob(escapeGlob(path) + ".*")
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(matches)
	var names []string
	var times []time.Time
	for _, m := range matches {
		ts, err := time.Parse(rotatedLayout, strings.TrimPrefix(m, path+"."))
		if err != nil {
			continue
		}
		names = append(names, m)
		times = append(times, ts)
	}
	return names, times, nil
}

func escapeGlob(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(p)
}

// rotatedName returns an unused name for the file rotated out at t.
func rotatedName(path string, t time.Time) string {
	t = t.UTC()
	for {
		dst := path + "." + t.Format(rotatedLayout)
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			return dst
		}
		t = t.Add(time.Nanosecond)
	}
}

// prune deletes rotated files beyond maxFiles (the oldest) and those rotated
// out more than maxAge ago. It returns the files deleted.
func prune(path string, maxFiles int, maxAge time.Duration, now time.Time) ([]string, error) {
	names, times, err := rotatedFiles(path)
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for i, n := range names {
		tooMany := maxFiles > 0 && len(names)-i > maxFiles
		tooOld := maxAge > 0 && now.Sub(times[i]) > maxAge
		if !tooMany && !tooOld {
			continue
		}
		if err := os.Remove(n); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, n)
	}
	return deleted, errors.Join(errs...)
}

// writeFileAtomic writes b to path through a temporary file, fsync and rename.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
