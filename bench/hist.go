package bench

import (
	"math"
	"math/bits"
	"time"
)

// hist is a fixed-size log-linear latency histogram in nanoseconds: values
// below 2^subBits are exact, larger ones fall into buckets 1/2^(subBits-1)
// wide relative to their value (under 1.6% error). Its memory does not grow
// with the number of samples, so a long run's RSS does not either.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	max    int64
}

const (
	subBits     = 7
	subCount    = 1 << subBits // exact values below this
	halfSub     = subCount / 2
	histBuckets = subCount + 64*halfSub
)

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits // >= 1
	m := int(uint64(v) >> shift)             // in [halfSub*2/2.., subCount)
	return subCount + (shift-1)*halfSub + (m - halfSub)
}

// valueOf is the middle of bucket b.
func valueOf(b int) int64 {
	if b < subCount {
		return int64(b)
	}
	b -= subCount
	shift := b/halfSub + 1
	m := int64(b%halfSub + halfSub)
	lo := m << shift
	return lo + (int64(1)<<shift)/2
}

func (h *hist) record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile is the nearest-rank q-quantile (0 < q <= 1); 0 for no samples.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			v := valueOf(b)
			if v > h.max {
				v = h.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Latency is a summary of per-request latencies.
type Latency struct {
	P50  Millis `json:"p50_ms"`
	P90  Millis `json:"p90_ms"`
	P99  Millis `json:"p99_ms"`
	P999 Millis `json:"p99_9_ms"`
	Mean Millis `json:"mean_ms"`
	Max  Millis `json:"max_ms"`
}

// Millis is a duration written in JSON as fractional milliseconds.
type Millis float64

// ms converts d.
func ms(d time.Duration) Millis { return Millis(float64(d) / 1e6) }

func (h *hist) summary() Latency {
	return Latency{
		P50:  ms(h.quantile(0.50)),
		P90:  ms(h.quantile(0.90)),
		P99:  ms(h.quantile(0.99)),
		P999: ms(h.quantile(0.999)),
		Mean: ms(h.mean()),
		Max:  ms(time.Duration(h.max)),
	}
}

// Ratio is got/limit, or 0 when the limit was not measured.
func Ratio(got, limit float64) float64 {
	if limit <= 0 || math.IsNaN(limit) || math.IsInf(limit, 0) {
		return 0
	}
	return got / limit
}
