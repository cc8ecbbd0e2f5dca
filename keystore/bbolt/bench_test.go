package bbolt_test

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	"github.com/hsmgate/hsmgate/keystore/storetest"
)

func BenchmarkStore(b *testing.B) {
	for _, nosync := range []bool{false, true} {
		name := "fsync"
		if nosync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			storetest.Bench(b, func(b *testing.B) keystore.Store {
				return open(b, filepath.Join(b.TempDir(), "store.db"), bbolt.Options{NoSync: nosync})
			})
		})
	}
}

// BenchmarkPutParallel: concurrent Puts of distinct keys with fsync, the
// pattern of concurrent issuance (one certificate record per request); they
// share commits.
func BenchmarkPutParallel(b *testing.B) {
	for _, p := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", p), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "store.db"), bbolt.Options{})
			var n atomic.Int64
			b.SetParallelism(p)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Put(context.Background(), fmt.Sprintf("k/%d", n.Add(1)), make([]byte, 600), keystore.MustNotExist); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// The issuance-record benchmarks: a store that already holds certRecords
// certificate records, as PKI Sign writes them (key "pki/certs/<32 random
// hex digits>", a value of about 1.5 KB), into which new records go at
// random places in the key space, each written with fsync. Two shapes:
// "full" (only ever inserted into) and "tidied" (half of the records then
// deleted at random places, as a PKI Tidy of expired certificates does:
// bbolt's freelist then holds tens of thousands of pages).
const (
	certRecords   = 100_000
	certValueSize = 1500
)

var certTemplate struct {
	once sync.Once
	dir  string // removed by TestMain
	keep string // $BBOLT_CERT_DIR, kept
	err  error

	mu     sync.Mutex
	bases  map[string]string    // shape → template path
	stores map[string]*certCopy // by shape and variant
}

// certCopy is one variant's copy of the template, open across the calls of
// a benchmark function (and -count), so that the 240 MiB are copied once.
type certCopy struct {
	s    *bbolt.Store // nil once closed
	path string
}

func TestMain(m *testing.M) {
	code := m.Run()
	t := &certTemplate
	for _, c := range t.stores {
		if c.s != nil {
			_ = c.s.Close()
		}
	}
	if t.dir != "" {
		_ = os.RemoveAll(t.dir)
	}
	os.Exit(code)
}

func certKey(rnd *rand.ChaCha8) string {
	var b [16]byte
	_, _ = rnd.Read(b[:])
	return "pki/certs/" + hex.EncodeToString(b[:])
}

func certValue(rnd *rand.ChaCha8) []byte {
	v := make([]byte, certValueSize)
	_, _ = rnd.Read(v)
	return v
}

// buildCertTemplate writes certRecords records, one per transaction, in
// random key order, as issuance writes them.
func buildCertTemplate(path string) error {
	s, err := bbolt.Open(path, bbolt.Options{NoSync: true})
	if err != nil {
		return err
	}
	rnd := rand.NewChaCha8([32]byte{1})
	for range certRecords {
		if _, err := s.Put(context.Background(), certKey(rnd), certValue(rnd), keystore.MustNotExist); err != nil {
			_ = s.Close()
			return err
		}
	}
	return s.Close()
}

// certShapes are the template stores the benchmarks start from.
var certShapes = []string{"full", "tidied"}

// certStore returns the variant's copy of the shape's template store (built
// once per test binary, or kept in $BBOLT_CERT_DIR between runs), opened
// with the bbolt options tune sets. Copies are synced before use, so that
// no commit's fsync writes them back.
func certStore(b *testing.B, shape, variant string, tune func(*bolt.Options)) *certCopy {
	b.Helper()
	t := &certTemplate
	t.once.Do(func() {
		t.stores, t.bases = make(map[string]*certCopy), make(map[string]string)
		// $BBOLT_CERT_DIR keeps the templates (about 15 s to build, 240 MiB
		// each) and each variant's copy between runs: made there if absent,
		// never removed; the copies grow by the records each run adds.
		if t.keep = os.Getenv("BBOLT_CERT_DIR"); t.keep != "" {
			t.err = os.MkdirAll(t.keep, 0o700)
		} else {
			t.dir, t.err = os.MkdirTemp("", "bbolt-certs-")
		}
	})
	if t.err != nil {
		b.Fatalf("template store: %v", t.err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	dir := t.dir + t.keep
	base, ok := t.bases[shape]
	if !ok {
		base = filepath.Join(dir, shape+".db")
		if _, err := os.Stat(base); err != nil || t.keep == "" {
			var err error
			switch shape {
			case "full":
				err = buildCertTemplate(base)
			case "tidied":
				full := filepath.Join(dir, "full.db")
				if _, err = os.Stat(full); err != nil {
					err = buildCertTemplate(full)
				}
				if err == nil {
					err = tidyCertTemplate(base, full)
				}
			}
			if err != nil {
				b.Fatalf("template store %s: %v", shape, err)
			}
		}
		t.bases[shape] = base
	}
	name := shape + "-" + variant
	c := t.stores[name]
	if c == nil {
		c = &certCopy{path: filepath.Join(dir, name+".db")}
		if _, err := os.Stat(c.path); err != nil || t.keep == "" {
			if err := copyFile(c.path, base); err != nil {
				b.Fatal(err)
			}
		}
		t.stores[name] = c
	}
	if c.s == nil {
		s, err := bbolt.Open(c.path, certOptions(tune))
		if err != nil {
			b.Fatal(err)
		}
		c.s = s
	}
	return c
}

// tidyCertTemplate copies full to path and deletes about half of its
// records, those whose key's first hex digit is below 8 (random places in
// the key space), 2000 per transaction, directly with bbolt (the store's
// one delete per transaction would take minutes here).
func tidyCertTemplate(path, full string) error {
	if err := copyFile(path, full); err != nil {
		return err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		return err
	}
	for done := false; !done && err == nil; {
		err = db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte("entries")).Cursor()
			n := 0
			for k, _ := c.Seek([]byte("pki/certs/")); k != nil; k, _ = c.Next() {
				if !strings.HasPrefix(string(k), "pki/certs/") {
					break
				}
				if k[len("pki/certs/")] < '8' {
					if err := c.Delete(); err != nil {
						return err
					}
					if n++; n == 2000 {
						return nil
					}
				}
			}
			done = true
			return nil
		})
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// certOptions are the store's options with tune applied, and the whole file
// mapped in at open (MAP_POPULATE) whatever the variant: a store that has
// served for a while has its pages resident (the soak's RSS follows the
// file's size), and without it a variant that walks the file at open
// (NoFreelistSync) would start warm and the others cold.
func certOptions(tune func(*bolt.Options)) bbolt.Options {
	return bbolt.WithBoltOptions(bbolt.Options{}, func(o *bolt.Options) {
		o.MmapFlags = syscall.MAP_POPULATE
		if tune != nil {
			tune(o)
		}
	})
}

// certSeed makes each writer's random keys its own, also across runs on
// the kept copies ($BBOLT_CERT_DIR).
var certSeed atomic.Uint64

func newCertRand() *rand.ChaCha8 {
	var seed [32]byte
	seed[0] = 2
	binary.LittleEndian.PutUint64(seed[8:], certSeed.Add(1))
	binary.LittleEndian.PutUint64(seed[16:], uint64(time.Now().UnixNano()))
	return rand.NewChaCha8(seed)
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// usedBytes is the part of the store file bbolt has handed out (its high
// water mark, free pages included), read with the store closed.
func usedBytes(b *testing.B, path string) int64 {
	b.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var n int64
	_ = db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// boltVariantOf is a named set of the bbolt options compared.
type boltVariantOf struct {
	name string
	tune func(*bolt.Options)
}

// boltVariants are the bbolt options compared (see doc.go, "bbolt options").
var boltVariants = []boltVariantOf{
	{"default", boltVariant(bolt.FreelistArrayType, false, 0)}, // bbolt's defaults, the store's before
	{"map", boltVariant(bolt.FreelistMapType, false, 0)},
	{"nofreelistsync", boltVariant(bolt.FreelistArrayType, true, 0)},
	{"map+nofreelistsync", boltVariant(bolt.FreelistMapType, true, 0)}, // the store's (Open)
	{"mmap1g", boltVariant(bolt.FreelistArrayType, false, 1<<30)},
}

// boltVariant sets the three options compared, whatever Open's own.
func boltVariant(ft bolt.FreelistType, noFreelistSync bool, mmap int) func(*bolt.Options) {
	return func(o *bolt.Options) {
		o.FreelistType, o.NoFreelistSync, o.InitialMmapSize = ft, noFreelistSync, mmap
	}
}

// ioCounts are this process's write syscalls and bytes written (syscw and
// wchar of /proc/self/io).
func ioCounts() (writes, bytes int64) {
	b, _ := os.ReadFile("/proc/self/io")
	for _, line := range strings.Split(string(b), "\n") {
		name, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch name {
		case "syscw":
			writes = n
		case "wchar":
			bytes = n
		}
	}
	return writes, bytes
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCertRecords: new certificate records put into a store of
// certRecords records, with fsync, by one goroutine ("serial": one commit per
// record) and by 8 (the soak's concurrency: they share commits). Beside
// ns/op: the process's CPU per record (cpu-µs/op: user and system, the
// syscalls' kernel work included), the growth of the file's used part per
// record (used-KiB/op), which is what the file-backed RSS follows once the
// pages are touched, and the write syscalls and bytes written per record
// (writes/op, written-KiB/op: pages and meta; the fsyncs are not counted).
func BenchmarkCertRecords(b *testing.B) {
	for _, shape := range certShapes {
		for _, v := range boltVariants {
			for _, g := range []int{1, 8} {
				b.Run(fmt.Sprintf("%s/%s/goroutines=%d", shape, v.name, g), func(b *testing.B) {
					benchCertPuts(b, certStore(b, shape, v.name, v.tune), v.tune, g, certKey)
				})
			}
		}
	}
}

func benchCertPuts(b *testing.B, c *certCopy, tune func(*bolt.Options), g int, key func(*rand.ChaCha8) string) {
	used0 := usedAfterClose(b, c, tune)
	s, ctx := c.s, context.Background()
	cpu0 := cpuTime()
	w0, wb0 := ioCounts()
	b.ResetTimer()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := newCertRand()
			for next.Add(1) <= int64(b.N) {
				if _, err := s.Put(ctx, key(rnd), certValue(rnd), keystore.MustNotExist); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime() - cpu0
	w1, wb1 := ioCounts()
	used := usedAfterClose(b, c, tune) - used0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(used)/1024/float64(b.N), "used-KiB/op")
	b.ReportMetric(float64(w1-w0)/float64(b.N), "writes/op")
	b.ReportMetric(float64(wb1-wb0)/1024/float64(b.N), "written-KiB/op")
}

// BenchmarkCertRecordKeys: the store's own options, new records keyed as
// PKI's serials were (random) and as they are (a tag, the time, then random
// bytes: they sort by issue time, pki.randomSerial), into the "full" store
// by 8 and 32 concurrent writers. Random keys dirty one leaf page per record
// in a group's commit; ordered keys append to the same one or two.
func BenchmarkCertRecordKeys(b *testing.B) {
	var clock atomic.Uint64
	clock.Store(uint64(time.Now().UnixMilli()) << 8)
	ordered := func(rnd *rand.ChaCha8) string {
		var k [16]byte
		k[0] = 1
		binary.BigEndian.PutUint64(k[1:9], clock.Add(1)) // each after the last
		_, _ = rnd.Read(k[9:])
		return "pki/certs/" + hex.EncodeToString(k[:])
	}
	i := slices.IndexFunc(boltVariants, func(v boltVariantOf) bool { return v.name == "map+nofreelistsync" })
	if i < 0 {
		b.Fatal("no map+nofreelistsync variant (the store's own options)")
	}
	v := boltVariants[i]
	for _, keys := range []struct {
		name string
		fn   func(*rand.ChaCha8) string
	}{{"random", certKey}, {"ordered", ordered}} {
		for _, g := range []int{8, 32} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", keys.name, g), func(b *testing.B) {
				benchCertPuts(b, certStore(b, "full", v.name, v.tune), v.tune, g, keys.fn)
			})
		}
	}
}

// usedAfterClose closes c's store, reads its used size and opens it again.
func usedAfterClose(b *testing.B, c *certCopy, tune func(*bolt.Options)) int64 {
	b.Helper()
	if err := c.s.Close(); err != nil {
		b.Fatal(err)
	}
	n := usedBytes(b, c.path)
	s, err := bbolt.Open(c.path, certOptions(tune))
	if err != nil {
		b.Fatal(err)
	}
	c.s = s
	return n
}

// BenchmarkCertRecordsOpen: opening a store of about certRecords records
// (full) or half as many with a large freelist (tidied), its freelist
// written by the last commit (default) or not (NoFreelistSync: bbolt
// rebuilds it at every open by walking every page of the tree), as after a
// restart or a crash. Without MAP_POPULATE: the open alone.
func BenchmarkCertRecordsOpen(b *testing.B) {
	for _, shape := range certShapes {
		for _, v := range boltVariants {
			if v.name == "mmap1g" {
				continue
			}
			b.Run(shape+"/"+v.name, func(b *testing.B) {
				c := certStore(b, shape, v.name, v.tune)
				// One commit under these options: it writes the freelist, or
				// marks it unsynced.
				rnd := newCertRand()
				if _, err := c.s.Put(context.Background(), certKey(rnd), certValue(rnd), keystore.MustNotExist); err != nil {
					b.Fatal(err)
				}
				if err := c.s.Close(); err != nil {
					b.Fatal(err)
				}
				c.s = nil
				opts := bbolt.WithBoltOptions(bbolt.Options{}, v.tune)
				for b.Loop() {
					s, err := bbolt.Open(c.path, opts)
					if err != nil {
						b.Fatal(err)
					}
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
