package bbolt_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
)

// recordValue is a 1.5 KB value that the key determines, so that a damaged
// record is told from a good one.
func recordValue(key string) []byte {
	var v []byte
	for i := 0; len(v) < 1500; i++ {
		h := sha256.Sum256([]byte(key + "/" + strconv.Itoa(i)))
		v = append(v, h[:]...)
	}
	return v[:1500]
}

// checkFile runs bbolt's consistency check on the closed store file, opened
// with bbolt's default options (a synced freelist: what an older hsmgate
// would open it with).
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bolt.Open with default options: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("bbolt consistency check: %v", err)
	}
}

const crashChildEnv = "BBOLT_CRASH_CHILD"

// TestCrashKeepsCommittedWrites: a process killed (SIGKILL) while 8
// goroutines write records loses none whose Put returned. The store does not
// write bbolt's freelist (NoFreelistSync); the reopen rebuilds it from the
// tree, and the writes after it must not reuse a page that holds a record.
func TestCrashKeepsCommittedWrites(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	acked := map[string]int64{}
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsCommittedWrites$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		n := 0
		for n < 400 && sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ok" {
				continue
			}
			rev, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatalf("child wrote %q", sc.Text())
			}
			acked[f[1]] = rev
			n++
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if n < 400 {
			t.Fatalf("round %d: the child acknowledged %d writes before it ended, want 400; stderr:\n%s", round, n, stderr.String())
		}
		// Reopen after the kill: every acknowledged write is there.
		s, err := bbolt.Open(path, bbolt.Options{})
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		for k, rev := range acked {
			e, err := s.Get(ctx, k)
			if err != nil || e.Revision != rev || !bytes.Equal(e.Value, recordValue(k)) {
				t.Fatalf("round %d: Get(%q) after kill: revision %d, value intact %v, err %v; want revision %d and the value",
					round, k, e.Revision, bytes.Equal(e.Value, recordValue(k)), err, rev)
			}
		}
		// Writes after the rebuild of the freelist, then the whole check.
		for i := range 200 {
			k := fmt.Sprintf("pki/certs/after-%d-%03d", round, i)
			rev, err := s.Put(ctx, k, recordValue(k), keystore.MustNotExist)
			if err != nil {
				t.Fatal(err)
			}
			acked[k] = rev
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		checkFile(t, path)
	}
	s := open(t, path, bbolt.Options{})
	es, err := s.List(ctx, "pki/certs/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if rev, ok := acked[e.Key]; ok && (e.Revision != rev || !bytes.Equal(e.Value, recordValue(e.Key))) {
			t.Errorf("%s: revision %d (want %d), value intact %v", e.Key, e.Revision, rev, bytes.Equal(e.Value, recordValue(e.Key)))
		}
		delete(acked, e.Key)
	}
	if len(acked) > 0 {
		t.Errorf("%d acknowledged records missing at the end", len(acked))
	}
}

// crashChild writes records from 8 goroutines and prints "ok KEY REV" after
// each Put returns, until it is killed.
func crashChild(path string) {
	s, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var n atomic.Int64
	pid := os.Getpid()
	for g := range 8 {
		go func() {
			for {
				k := fmt.Sprintf("pki/certs/%08x-%d-%d", n.Add(1)*2654435761%(1<<32), pid, g)
				rev, err := s.Put(context.Background(), k, recordValue(k), keystore.MustNotExist)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ok %s %d\n", k, rev)
				mu.Unlock()
			}
		}()
	}
	select {}
}

// TestFreelistFormats: a file written with bbolt's freelist synced (an
// hsmgate from before NoFreelistSync, after deletes: free pages on the
// list) opens and takes writes; the file the store leaves opens again with
// bbolt's default options (going back to that hsmgate) and is consistent.
func TestFreelistFormats(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	old, err := bbolt.Open(path, bbolt.WithBoltOptions(bbolt.Options{}, func(o *bolt.Options) {
		o.NoFreelistSync, o.FreelistType = false, bolt.FreelistArrayType
	}))
	if err != nil {
		t.Fatal(err)
	}
	revs := map[string]int64{}
	for i := range 300 {
		k := fmt.Sprintf("pki/certs/%03d", i)
		if revs[k], err = old.Put(ctx, k, recordValue(k), keystore.MustNotExist); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 300; i += 2 {
		k := fmt.Sprintf("pki/certs/%03d", i)
		if err := old.Delete(ctx, k, revs[k]); err != nil {
			t.Fatal(err)
		}
		delete(revs, k)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatalf("Open of a file with a synced freelist: %v", err)
	}
	for i := 300; i < 500; i++ {
		k := fmt.Sprintf("pki/certs/%03d", i)
		if revs[k], err = s.Put(ctx, k, recordValue(k), keystore.MustNotExist); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path) // rebuilds and writes the freelist, as an older hsmgate would
	s = open(t, path, bbolt.Options{})
	es, err := s.List(ctx, "pki/certs/")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(revs) {
		t.Errorf("List: %d records, want %d", len(es), len(revs))
	}
	for _, e := range es {
		if e.Revision != revs[e.Key] || !bytes.Equal(e.Value, recordValue(e.Key)) {
			t.Errorf("%s: revision %d, want %d (value intact %v)", e.Key, e.Revision, revs[e.Key], bytes.Equal(e.Value, recordValue(e.Key)))
		}
	}
}

const damagedChildEnv = "BBOLT_DAMAGED_CHILD"

// TestOpenDamagedFile: bbolt rebuilds the freelist at open by walking the
// whole tree (NoFreelistSync), so a store file whose tree is damaged (here
// the entries bucket's root page says it is a freelist page) stops the
// process at Open, with bbolt's message naming the page, before it serves
// anything. (bbolt panics, in a goroutine of its own for some damage, so
// Open cannot turn it into an error; with a synced freelist the same damage
// panics later, at the first read of that page.)
func TestOpenDamagedFile(t *testing.T) {
	if path := os.Getenv(damagedChildEnv); path != "" {
		s, err := bbolt.Open(path, bbolt.Options{})
		if err == nil {
			_ = s.Close()
			fmt.Println("opened")
		}
		return
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		k := fmt.Sprintf("pki/certs/%03d", i)
		if _, err := s.Put(ctx, k, recordValue(k), keystore.MustNotExist); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var root int64
	_ = db.View(func(tx *bolt.Tx) error {
		root = int64(tx.Bucket([]byte("entries")).Root())
		return nil
	})
	pageSize := int64(db.Info().PageSize)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The page header: id (8 bytes), flags (2, little-endian), ...; 0x10
	// is a freelist page.
	if _, err := f.WriteAt([]byte{0x10, 0}, root*pageSize+8); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenDamagedFile$")
	cmd.Env = append(os.Environ(), damagedChildEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Contains(string(out), "opened") {
		t.Fatalf("Open of a damaged file: the process went on (%v):\n%s", err, out)
	}
	if want := fmt.Sprintf("page %d: invalid type", root); !strings.Contains(string(out), want) {
		t.Errorf("Open of a damaged file stopped the process without %q:\n%s", want, out)
	}
}
