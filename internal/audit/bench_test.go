package audit

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// cpuPerOp reports the process CPU time per operation since start (a
// loaded machine inflates ns/op, much less CPU per op).
func cpuPerOp(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU(b)-start)/float64(b.N)/1e3, "cpu-µs/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkWrite(b *testing.B) {
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "audit.log"), MaxBytes: -1}, testKey)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	id := &Identity{Name: "payments-api", Kind: "token", Policies: []string{"payments"}, Accessor: l.HMAC("x")}
	b.ReportAllocs()
	defer cpuPerOp(b, processCPU(b))
	for b.Loop() {
		if err := l.Write(&Entry{Type: "request", RequestID: "0123456789abcdef01234567", Identity: id, Method: "/hsmgate.v1.TransitService/Encrypt", Resource: "transit/keys/payments-eu", Items: 100}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteParallel: concurrent writers share group writes.
func BenchmarkWriteParallel(b *testing.B) {
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "audit.log"), MaxBytes: -1}, testKey)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	id := &Identity{Name: "payments-api", Kind: "token", Policies: []string{"payments"}, Accessor: l.HMAC("x")}
	b.ReportAllocs()
	b.SetParallelism(4)
	defer cpuPerOp(b, processCPU(b))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Write(&Entry{Type: "request", RequestID: "0123456789abcdef01234567", Identity: id, Method: "/hsmgate.v1.TransitService/Encrypt", Resource: "transit/keys/payments-eu", Items: 100}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
