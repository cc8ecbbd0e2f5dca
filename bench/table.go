package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable writes r as text: the run's header, the limits, one row per
// batch size, and the per-interval windows of each point.
func (r *Result) WriteTable(out io.Writer) error {
	var b strings.Builder
	p := r.Params
	fmt.Fprintf(&b, "%s: %s\n", p.Scenario, r.Describe)
	fmt.Fprintf(&b, "date %s  host %s (%d CPUs, %s)  load %.2f %.2f %.2f -> %.2f %.2f %.2f\n",
		r.Date.Format("2006-01-02 15:04:05Z"), r.Host.Hostname, r.Host.CPUs, r.Host.GoVersion,
		r.Host.LoadStart[0], r.Host.LoadStart[1], r.Host.LoadStart[2], r.Host.LoadEnd[0], r.Host.LoadEnd[1], r.Host.LoadEnd[2])
	fmt.Fprintf(&b, "target %s; %s\n", r.Target, r.Security)
	fmt.Fprintf(&b, "payload %d B  concurrency %d  connections %d  duration %.0fs  warm-up %.0fs  limits %.0fs each\n",
		p.Payload, p.Concurrency, p.Connections, float64(p.Duration)/1000, float64(p.Warmup)/1000, float64(p.LimitDur)/1000)
	if r.Command != "" {
		fmt.Fprintf(&b, "command: %s\n", r.Command)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "limit\titems/s\tconc\tother cores\t\top\t")
	if r.Software != nil {
		fmt.Fprintf(tw, "software\t%.0f\t%d\t%.2f\t\t%s\t\n", r.Software.ItemsPerS, r.Software.Concurrency, r.Software.OtherCores, r.Software.Op)
	} else {
		fmt.Fprintf(tw, "software\t-\t\t\t\t\t\n")
	}
	if r.HSM != nil {
		fmt.Fprintf(tw, "HSM\t%.0f\t%d\t%.2f\t\t%s\t\n", r.HSM.ItemsPerS, r.HSM.Concurrency, r.HSM.OtherCores, r.HSM.Op)
	} else {
		fmt.Fprintf(tw, "HSM\t-\t\t\t\tnot measured\t\n")
	}
	for _, pt := range r.Points {
		if pt.Transport != nil {
			op := pt.Transport.Op
			if c := pt.Transport.CPUPerItem; c > 0 {
				op += fmt.Sprintf(", CPU %.1f µs/item", c)
			}
			fmt.Fprintf(tw, "transport b=%d\t%.0f\t%d\t%.2f\t\t%s\t\n", pt.Batch, pt.Transport.ItemsPerS, pt.Transport.Concurrency, pt.Transport.OtherCores, op)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\titems/s\treq/s\tMB/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tCPU µs/item\tcores\tother cores\tpeak RSS MiB\t/software\t/HSM\t/transport\t")
	for _, pt := range r.Points {
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.2f\t%.2f\t%.2f\t%.1f\t%s\t%s\t%s\t\n",
			pt.Batch, pt.ItemsPerS, float64(pt.Requests)/(float64(pt.Elapsed)/1000), pt.MBPerS,
			pt.Latency.P50, pt.Latency.P90, pt.Latency.P99, pt.Latency.P999,
			pt.CPUPerItem, pt.CPUUtil, pt.OtherCores, float64(pt.PeakRSS)/(1<<20),
			pct(pt.Ratio.Software), pct(pt.Ratio.HSM), pct(pt.Ratio.Transport))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if pts := pairedPoints(r.Points); len(pts) > 0 {
		pr := pts[0].Paired
		fmt.Fprintf(&b, "\npaired: the scenario and the %s limit (c=%d) in turns, %d rounds of %.1fs each:\n",
			pr.limitName(), pr.HSMConcurrency, pr.Rounds, float64(pr.Slice)/1000)
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "batch\titems/s\t%s items/s\t/%s\t\n", pr.limitName(), pr.limitName())
		for _, pt := range pts {
			fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%s\t\n", pt.Batch, pt.Paired.ItemsPerS, pt.Paired.HSMItemsPerS, pct(pt.Paired.Ratio))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, pt := range r.Points {
		if len(pt.Windows) < 2 {
			continue
		}
		fmt.Fprintf(&b, "\nbatch %d over time:\n", pt.Batch)
		if err := writeWindows(&b, pt.Windows); err != nil {
			return err
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// writeWindows writes the over-time table of one point and its spreads.
// RSS is split into its private (anonymous) and file-backed parts: the
// file-backed part is mostly the bbolt store's mmapped file, which grows
// with every record written (page cache, not a leak), so the leak check is
// the private part.
func writeWindows(b *strings.Builder, ws []Window) error {
	shmem, anon, gomem := false, false, false
	for _, w := range ws {
		shmem = shmem || w.ShmemRSS > 0
		anon = anon || w.AnonRSS > 0
		gomem = gomem || w.GoBytes > 0
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "until s\titems/s\tRSS MiB\tprivate MiB\tfile MiB\t"
	if shmem {
		head += "shmem MiB\t"
	}
	if gomem {
		head += "Go MiB\tGo live MiB\t"
	}
	fmt.Fprintln(tw, head+"other cores\t")
	mib := func(v int64) string {
		if !anon { // not measured (an older result, or no /proc access)
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(v)/(1<<20))
	}
	for _, w := range ws {
		fmt.Fprintf(tw, "%.1f\t%.0f\t%.1f\t%s\t%s\t", float64(w.End)/1000, w.ItemsPerS, float64(w.RSS)/(1<<20), mib(w.AnonRSS), mib(w.FileRSS))
		if shmem {
			fmt.Fprintf(tw, "%s\t", mib(w.ShmemRSS))
		}
		if gomem {
			fmt.Fprintf(tw, "%s\t%s\t", mib(w.GoBytes), mib(w.GoLiveBytes))
		}
		fmt.Fprintf(tw, "%.2f\t\n", w.OtherCores)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	items := spreadOf(ws, func(w Window) float64 { return w.ItemsPerS })
	rss := spreadOf(ws, func(w Window) float64 { return float64(w.RSS) })
	fmt.Fprintf(b, "spread: throughput %.1f%%, RSS %.1f%%", items, rss)
	if !anon {
		b.WriteString(" (max/min - 1); private RSS not measured\n")
		return nil
	}
	fmt.Fprintf(b, ", private RSS %.1f%% (max/min - 1)\n", spreadOf(ws, func(w Window) float64 { return float64(w.AnonRSS) }))
	b.WriteString("  file-backed RSS is mapped files, above all the store's mmapped bbolt file, which grows with\n" +
		"  every record written: page cache the kernel can drop, not a leak; the leak check is the private RSS\n")
	if gomem {
		fmt.Fprintf(b, "spread: Go runtime memory %.1f%%, Go live heap %.1f%%\n",
			spreadOf(ws, func(w Window) float64 { return float64(w.GoBytes) }),
			spreadOf(ws, func(w Window) float64 { return float64(w.GoLiveBytes) }))
		b.WriteString("  Go MiB is what Go's runtime has mapped and not given back (heap, stacks, metadata; untouched pages\n" +
			"  too); Go live MiB is the heap live at the last GC, which the GC lets grow 1+GOGC/100 times before it collects\n")
	}
	return nil
}

// spreadOf is the spread (max/min - 1, in percent) of f over ws.
func spreadOf(ws []Window, f func(Window) float64) float64 {
	lo, hi := f(ws[0]), f(ws[0])
	for _, w := range ws[1:] {
		lo, hi = min(lo, f(w)), max(hi, f(w))
	}
	return spread(lo, hi)
}

func pct(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", r*100)
}

func spread(lo, hi float64) float64 {
	if lo <= 0 {
		return 0
	}
	return (hi/lo - 1) * 100
}

// pairedPoints are the points with a paired measurement.
func pairedPoints(pts []Point) []Point {
	var out []Point
	for _, pt := range pts {
		if pt.Paired != nil {
			out = append(out, pt)
		}
	}
	return out
}
