package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"sync"
	"testing"
	"time"
)

// marshalLike is what Write wrote before the hand encoder: encoding/json.
func marshalLike(t testing.TB, e *Entry) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func handEncoded(t testing.TB, e *Entry) ([]byte, error) {
	t.Helper()
	mid, err := encodeMiddle(nil, e)
	if err != nil {
		return nil, err
	}
	return frame(nil, e.Time, e.Seq, mid, e.Prev)
}

// TestEncodeLikeJSON: the hand encoder writes the bytes encoding/json writes.
func TestEncodeLikeJSON(t *testing.T) {
	ts := time.Date(2026, 12, 5, 8, 0, 0, 123456789, time.UTC)
	for _, c := range []struct {
		name string
		e    Entry
	}{
		{"minimal", Entry{Time: ts, Seq: 1, Type: "request", Method: "/m"}},
		{"full", Entry{Time: ts, Seq: 18446744073709551615, Type: "response", RequestID: "abc", Remote: "127.0.0.1:5",
			Identity: &Identity{Name: "n", Kind: "token", Policies: []string{"a", "b"}, Accessor: "hmac-sha256:00"},
			Method:   "/hsmgate.v1.TransitService/Encrypt", Resource: "transit/keys/k", Items: -3, Code: "OK", LatencyMS: 0.123,
			Extra: map[string]string{"z": "1", "a": "2", "m": ""}, Prev: "ff00"}},
		{"escapes", Entry{Time: ts.In(time.FixedZone("x", 3600)), Seq: 2, Type: "a\"b\\c\n\r\t\b\f\x00\x1f<>&\u2028\u2029é\xff\xfe",
			Method: "\x7f日本", Identity: &Identity{Name: "<script>", Kind: ""}, Prev: "\u00e9"}},
		{"small latency", Entry{Time: ts, Type: "t", Method: "m", LatencyMS: 1e-9}},
		{"large latency", Entry{Time: ts, Type: "t", Method: "m", LatencyMS: 1e22}},
		{"negative latency", Entry{Time: ts, Type: "t", Method: "m", LatencyMS: -2.5e-7}},
		{"empty policies", Entry{Time: ts, Type: "t", Method: "m", Identity: &Identity{Policies: []string{}}}},
		{"zero time", Entry{Type: "t", Method: "m"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := handEncoded(t, &c.e)
			if err != nil {
				t.Fatal(err)
			}
			if want := marshalLike(t, &c.e); !bytes.Equal(got, want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
	t.Run("NaN latency", func(t *testing.T) {
		if _, err := handEncoded(t, &Entry{Type: "t", LatencyMS: math.NaN()}); err == nil {
			t.Error("got no error, want one (as encoding/json)")
		}
	})
	t.Run("year 10000", func(t *testing.T) {
		if _, err := handEncoded(t, &Entry{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Type: "t"}); err == nil {
			t.Error("got no error, want one (as encoding/json)")
		}
	})
}

// FuzzEncodeLikeJSON: any strings and numbers encode as encoding/json does.
func FuzzEncodeLikeJSON(f *testing.F) {
	f.Add("request", "id", "name", "policy", "/m", "res", "OK", "k", "v", 3, 0.5, int64(0))
	f.Add("\xff<\u2028", "\x00", "é", "\"", "\\", "", "", "", "", -1, 1e-7, int64(1e18))
	f.Fuzz(func(t *testing.T, typ, reqID, name, policy, method, res, code, k, v string, items int, lat float64, nanos int64) {
		if math.IsNaN(lat) || math.IsInf(lat, 0) {
			return
		}
		e := &Entry{Time: time.Unix(0, nanos).UTC(), Seq: uint64(items), Type: typ, RequestID: reqID, Method: method,
			Identity: &Identity{Name: name, Kind: code, Policies: []string{policy}}, Resource: res, Items: items,
			Code: code, LatencyMS: lat, Extra: map[string]string{k: v}, Prev: v}
		got, err := handEncoded(t, e)
		want, jerr := json.Marshal(e)
		if (err != nil) != (jerr != nil) {
			t.Fatalf("hand encoder error %v, encoding/json error %v", err, jerr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}

// countingWriter counts the writes of the stdout copy.
type countingWriter struct {
	mu     sync.Mutex
	writes int
	bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.Buffer.Write(p)
}

// TestGroupWrite: the lines queued while a group is written go out together
// in one write, in order, each with its seq, and the chain verifies.
func TestGroupWrite(t *testing.T) {
	path := dirPath(t)
	l := openLog(t, path)
	cw := &countingWriter{}
	l.stdout = cw
	var group []*queued
	for i := range 5 {
		e := entry(i)
		mid, err := encodeMiddle(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		group = append(group, &queued{e: e, middle: mid})
	}
	seq0, _ := l.LastHash()
	l.writeGroup(group)
	for i, q := range group {
		if q.err != nil {
			t.Errorf("line %d: %v", i, q.err)
		}
		if got, want := q.e.Seq, seq0+uint64(i)+1; got != want {
			t.Errorf("line %d: got seq %d, want %d", i, got, want)
		}
	}
	if cw.writes != 1 {
		t.Errorf("got %d writes for a group of 5 lines, want 1", cw.writes)
	}
	if got := bytes.Count(cw.Bytes(), []byte("\n")); got != 5 {
		t.Errorf("got %d lines written, want 5", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyFiles(testKey, readFiles(t, path), nil); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

// TestConcurrentWrites: many writers at once, small files (rotation inside
// groups): every Write succeeds with a distinct seq, and the files verify
// against the checkpoint.
func TestConcurrentWrites(t *testing.T) {
	path := dirPath(t)
	l, err := Open(Config{Path: path, CheckpointInterval: -1, MaxBytes: 4096, MaxFiles: -1}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 60
	seqs := make(chan uint64, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := entry(w*each + i)
				if err := l.Write(e); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				seqs <- e.Seq
			}
		})
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("seq %d given twice", s)
		}
		seen[s] = true
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cp, err := ReadCheckpoint(CheckpointPath(path))
	if err != nil {
		t.Fatal(err)
	}
	files := readFiles(t, path)
	if len(files) < 3 {
		t.Errorf("got %d files, want rotation (at least 3)", len(files))
	}
	res, err := verifyFiles(testKey, files, cp)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got, want := len(seen), writers*each; got != want {
		t.Errorf("got %d lines, want %d", got, want)
	}
	_ = res
}

// TestConcurrentWritesFailClosed: once the file is deleted under concurrent
// writers, every Write that returns after that fails; none after the first
// failure succeeds.
func TestConcurrentWritesFailClosed(t *testing.T) {
	path := dirPath(t)
	l := openLog(t, path)
	if err := l.Write(entry(0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 20 {
				if err := l.Write(entry(i)); !errors.Is(err, ErrUnavailable) {
					t.Errorf("Write after the file was deleted: got %v, want ErrUnavailable", err)
					return
				}
			}
		})
	}
	wg.Wait()
}
