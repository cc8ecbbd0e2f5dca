package hsm

import (
	"testing"
	"time"
)

// BenchmarkCallMetrics is the cost the measuring layer adds to each PKCS#11
// call (two clock reads and one histogram observation).
func BenchmarkCallMetrics(b *testing.B) {
	c := newCallMetrics()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.record(fnSign, time.Now(), nil)
		}
	})
}
