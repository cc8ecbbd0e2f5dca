package bench

import (
	"math"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	t.Run("exact small values", func(t *testing.T) {
		var h hist
		for v := 1; v <= 100; v++ {
			h.record(time.Duration(v))
		}
		for _, c := range []struct {
			q    float64
			want time.Duration
		}{{0.5, 50}, {0.9, 90}, {0.99, 99}, {0.999, 100}, {1, 100}} {
			if got := h.quantile(c.q); got != c.want {
				t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
			}
		}
	})
	t.Run("large values within 1.6%", func(t *testing.T) {
		var h hist
		for v := 1; v <= 10000; v++ {
			h.record(time.Duration(v) * time.Microsecond)
		}
		for _, c := range []struct {
			q    float64
			want time.Duration
		}{{0.5, 5 * time.Millisecond}, {0.9, 9 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}} {
			got := h.quantile(c.q)
			if rel := math.Abs(float64(got-c.want)) / float64(c.want); rel > 0.016 {
				t.Errorf("quantile(%v) = %v, want %v (±1.6%%)", c.q, got, c.want)
			}
		}
		if got, want := h.summary().Max, ms(10*time.Millisecond); got != want {
			t.Errorf("max = %v, want %v", got, want)
		}
		if got, want := h.mean(), 5000500*time.Nanosecond; got != want {
			t.Errorf("mean = %v, want %v", got, want)
		}
	})
	t.Run("empty", func(t *testing.T) {
		var h hist
		if got := h.quantile(0.99); got != 0 {
			t.Errorf("quantile of nothing = %v, want 0", got)
		}
	})
	t.Run("merge", func(t *testing.T) {
		var a, b hist
		a.record(time.Millisecond)
		b.record(3 * time.Millisecond)
		a.merge(&b)
		if a.n != 2 || a.max != int64(3*time.Millisecond) {
			t.Errorf("merged n=%d max=%d, want 2 and %d", a.n, a.max, 3*time.Millisecond)
		}
	})
}

func TestBucketsMonotonic(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<40; v = v*5/4 + 1 {
		b := bucketOf(v)
		if b < prev {
			t.Fatalf("bucketOf(%d) = %d, below bucketOf of a smaller value (%d)", v, b, prev)
		}
		if b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, want < %d", v, b, histBuckets)
		}
		if mid := valueOf(b); v >= subCount && math.Abs(float64(mid-v))/float64(v) > 0.016 {
			t.Fatalf("valueOf(bucketOf(%d)) = %d, more than 1.6%% off", v, mid)
		}
		prev = b
	}
}

func TestRatio(t *testing.T) {
	for _, c := range []struct {
		name       string
		got, limit float64
		want       float64
	}{
		{"half", 50, 100, 0.5},
		{"above the limit", 150, 100, 1.5},
		{"no limit", 50, 0, 0},
		{"NaN limit", 50, math.NaN(), 0},
		{"infinite limit", 50, math.Inf(1), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Ratio(c.got, c.limit); got != c.want {
				t.Errorf("Ratio(%v, %v) = %v, want %v", c.got, c.limit, got, c.want)
			}
		})
	}
}

func TestResultRatios(t *testing.T) {
	r := &Result{Software: &Limit{ItemsPerS: 1000}, HSM: &Limit{ItemsPerS: 200}}
	p := Point{ItemsPerS: 100, Transport: &Limit{ItemsPerS: 400}}
	r.ratios(&p)
	if want := (Ratios{Software: 0.1, HSM: 0.5, Transport: 0.25}); p.Ratio != want {
		t.Errorf("ratios = %+v, want %+v", p.Ratio, want)
	}
}

func TestParseSweep(t *testing.T) {
	got, err := ParseSweep("1, 10,100,1000")
	if err != nil || len(got) != 4 || got[3] != 1000 {
		t.Errorf("ParseSweep = %v, %v; want [1 10 100 1000]", got, err)
	}
	for _, bad := range []string{"0", "10001", "x"} {
		if _, err := ParseSweep(bad); err == nil {
			t.Errorf("ParseSweep(%q): no error, want one", bad)
		}
	}
}

func TestBytesValueOfSize(t *testing.T) {
	for _, n := range []int{3, 10, 127, 128, 129, 130, 1000, 262024} {
		v := bytesValueOfSize(n)
		got := protoSize(v)
		if got > n || got < n-1 {
			t.Errorf("bytesValueOfSize(%d) encodes to %d bytes, want %d (or one less at a varint boundary)", n, got, n)
		}
	}
}
