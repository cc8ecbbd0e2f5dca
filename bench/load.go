package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// op does one unit of work for worker w and returns how many items it did.
type op func(ctx context.Context, w int) (items int, err error)

// load says how to drive an op.
type load struct {
	Label       string
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	// Interval between Windows samples (0: none).
	Interval time.Duration
	// Progress gets a \r-updated line while the load runs (nil: none).
	Progress io.Writer
	Proc     Proc
	// OnMeasure, if set, is called when measurement starts and when it ends
	// (start true, then false): for a CPU profile of the measured part only.
	OnMeasure func(start bool)
}

// measured is what one load produced (warm-up excluded).
type measured struct {
	Requests uint64
	Items    uint64
	Elapsed  time.Duration
	CPU      time.Duration
	// Other is the CPU time other processes used meanwhile (noise), from
	// /proc/stat minus this process's (and the server's, if another).
	Other   time.Duration
	Hist    hist
	Windows []Window
}

// Window is throughput over one interval of a run and the memory at its end.
type Window struct {
	End       Millis  `json:"end_ms"` // since the start of measurement
	ItemsPerS float64 `json:"items_per_s"`
	RSS       int64   `json:"rss_bytes"` // VmRSS: the three below together
	// AnonRSS is the private (anonymous) part of RSS: heap, stacks, C
	// allocations. A leak shows here.
	AnonRSS int64 `json:"rss_anon_bytes"`
	// FileRSS is the file-backed part: above all the bbolt store's mmapped
	// file, which grows with the records written; page cache the kernel can
	// drop, not a leak.
	FileRSS  int64 `json:"rss_file_bytes"`
	ShmemRSS int64 `json:"rss_shmem_bytes"`
	// GoBytes is the memory Go's runtime has mapped and not returned to
	// the OS (heap, stacks, its own metadata), when the server runs in this
	// process; pages it never touched count too, so it is an upper bound of
	// Go's share of the private RSS. 0 when not measured.
	GoBytes int64 `json:"go_runtime_bytes,omitempty"`
	// GoLiveBytes is the Go heap that was live at the last GC: what grows
	// when something keeps more and more (the GC lets the heap reach
	// 1+GOGC/100 times it before it collects).
	GoLiveBytes int64 `json:"go_heap_live_bytes,omitempty"`
	// OtherCores: CPU used by other processes in the window (noise).
	OtherCores float64 `json:"other_cores"`
}

func (m *measured) itemsPerSec() float64 {
	if m.Elapsed <= 0 {
		return 0
	}
	return float64(m.Items) / m.Elapsed.Seconds()
}

type worker struct {
	items atomic.Uint64
	reqs  atomic.Uint64
	hist  hist
	_     [64]byte
}

// run drives o on l.Concurrency goroutines for l.Warmup then l.Duration.
// The first error stops the load and is returned.
func (l load) run(ctx context.Context, o op) (*measured, error) {
	if l.Concurrency < 1 {
		l.Concurrency = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		errOnce   sync.Once
		firstErr  error
		wg        sync.WaitGroup
	)
	ws := make([]*worker, l.Concurrency)
	for i := range ws {
		ws[i] = new(worker)
	}
	for i := range ws {
		wg.Add(1)
		go func(w *worker, i int) {
			defer wg.Done()
			for !stop.Load() {
				t0 := time.Now()
				n, err := o(ctx, i)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() == nil || !stop.Load() {
						errOnce.Do(func() { firstErr = err })
					}
					stop.Store(true)
					cancel()
					return
				}
				if measuring.Load() && !stop.Load() {
					w.hist.record(d)
					w.items.Add(uint64(n))
					w.reqs.Add(1)
				}
			}
		}(ws[i], i)
	}
	total := func() (items, reqs uint64) {
		for _, w := range ws {
			items += w.items.Load()
			reqs += w.reqs.Load()
		}
		return
	}
	m := &measured{}
	finish := func() (*measured, error) {
		stop.Store(true)
		wg.Wait()
		if firstErr != nil {
			return nil, fmt.Errorf("bench: %s: %w", l.Label, firstErr)
		}
		if err := ctx.Err(); err != nil && m.Elapsed == 0 {
			return nil, err
		}
		return m, nil
	}

	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	progress := func(phase string, since time.Time, items uint64) {
		if l.Progress == nil {
			return
		}
		el := time.Since(since)
		rate := 0.0
		if el > 0 {
			rate = float64(items) / el.Seconds()
		}
		fmt.Fprintf(l.Progress, "\r%-44s %-7s %6.1fs  %12.0f items/s ", l.Label, phase, el.Seconds(), rate)
	}
	wait := func(until time.Time, phase string, since time.Time, onTick func(now time.Time)) bool {
		for {
			select {
			case <-ctx.Done():
				return false
			case now := <-tick.C:
				items, _ := total()
				progress(phase, since, items)
				if onTick != nil {
					onTick(now)
				}
				if !now.Before(until) {
					return true
				}
			}
		}
	}
	if l.Warmup > 0 && !wait(start.Add(l.Warmup), "warm-up", start, nil) {
		return finish()
	}
	cpu0, err := l.Proc.CPU()
	if err != nil {
		return nil, err
	}
	self0, _ := Proc{}.CPU()
	sys0 := systemBusy()
	if l.OnMeasure != nil {
		l.OnMeasure(true)
	}
	mstart := time.Now()
	measuring.Store(true)
	lastWin, lastItems := mstart, uint64(0)
	lastSys, lastSelf, lastCPU := sys0, self0, cpu0
	window := func(now time.Time) {
		items, _ := total()
		mem, _ := l.Proc.Memory()
		el := now.Sub(lastWin)
		w := Window{End: ms(now.Sub(mstart)), ItemsPerS: float64(items-lastItems) / el.Seconds(),
			RSS: mem.RSS, AnonRSS: mem.Anon, FileRSS: mem.File, ShmemRSS: mem.Shmem}
		if l.Proc.PID == 0 {
			w.GoBytes, w.GoLiveBytes = goMemory()
		}
		sys, self, cpu := systemBusy(), lastSelf, lastCPU
		self, _ = Proc{}.CPU()
		cpu, _ = l.Proc.CPU()
		if sys > 0 && lastSys > 0 {
			ours := self - lastSelf
			if l.Proc.PID != 0 {
				ours += cpu - lastCPU
			}
			w.OtherCores = max(sys-lastSys-ours, 0).Seconds() / el.Seconds()
		}
		m.Windows = append(m.Windows, w)
		lastWin, lastItems, lastSys, lastSelf, lastCPU = now, items, sys, self, cpu
	}
	ok := wait(mstart.Add(l.Duration), "measure", mstart, func(now time.Time) {
		if l.Interval > 0 && now.Sub(lastWin) >= l.Interval {
			window(now)
		}
	})
	measuring.Store(false)
	end := time.Now()
	if l.OnMeasure != nil {
		l.OnMeasure(false)
	}
	if l.Interval > 0 && end.Sub(lastWin) >= l.Interval/2 {
		window(end)
	}
	cpu1, err := l.Proc.CPU()
	if err != nil {
		return nil, err
	}
	self1, _ := Proc{}.CPU()
	sys1 := systemBusy()
	if l.Progress != nil {
		fmt.Fprint(l.Progress, "\r\033[K")
	}
	stop.Store(true)
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("bench: %s: %w", l.Label, firstErr)
	}
	if !ok {
		return nil, ctx.Err()
	}
	m.Elapsed = end.Sub(mstart)
	m.CPU = cpu1 - cpu0
	if sys0 > 0 && sys1 > 0 {
		ours := self1 - self0
		if l.Proc.PID != 0 {
			ours += m.CPU
		}
		m.Other = max(sys1-sys0-ours, 0)
	}
	for _, w := range ws {
		m.Items += w.items.Load()
		m.Requests += w.reqs.Load()
		m.Hist.merge(&w.hist)
	}
	return m, nil
}
