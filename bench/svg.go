package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// SVG geometry.
const (
	svgW, svgH                = 760, 440
	padL, padR, padT, padB    = 80.0, 200.0, 50.0, 60.0
	plotW, plotH              = svgW - padL - padR, svgH - padT - padB
	colScenario, colTransport = "#1f77b4", "#2ca02c"
	colSoftware, colHSM       = "#d62728", "#9467bd"
)

// WriteSVG draws throughput (items/s, log scale) against batch size (log
// scale): the scenario as a line with points, the transport limit measured
// at each batch size as a dashed line, and the software and HSM limits as
// horizontal lines.
func (r *Result) WriteSVG(w io.Writer) error {
	var b bytes.Buffer
	var xs []float64
	ymin, ymax := math.Inf(1), math.Inf(-1)
	see := func(v float64) {
		if v > 0 {
			ymin, ymax = math.Min(ymin, v), math.Max(ymax, v)
		}
	}
	for _, p := range r.Points {
		xs = append(xs, float64(p.Batch))
		see(p.ItemsPerS)
		if p.Transport != nil {
			see(p.Transport.ItemsPerS)
		}
	}
	if r.Software != nil {
		see(r.Software.ItemsPerS)
	}
	if r.HSM != nil {
		see(r.HSM.ItemsPerS)
	}
	if math.IsInf(ymin, 0) {
		ymin, ymax = 1, 10
	}
	// Decades around the data.
	y0 := math.Floor(math.Log10(ymin))
	y1 := math.Ceil(math.Log10(ymax))
	if y1 <= y0 {
		y1 = y0 + 1
	}
	x0, x1 := 0.0, 1.0
	if len(xs) > 0 {
		x0 = math.Floor(math.Log10(xs[0]))
		x1 = math.Ceil(math.Log10(xs[len(xs)-1]))
		for _, x := range xs {
			x0 = math.Min(x0, math.Floor(math.Log10(x)))
			x1 = math.Max(x1, math.Ceil(math.Log10(x)))
		}
		if x1 <= x0 {
			x1 = x0 + 1
		}
	}
	px := func(x float64) float64 { return padL + (math.Log10(x)-x0)/(x1-x0)*plotW }
	py := func(y float64) float64 { return padT + plotH - (math.Log10(y)-y0)/(y1-y0)*plotH }

	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	text(&b, padL, 22, "start", "14", fmt.Sprintf("%s: %s", r.Params.Scenario, r.Describe))
	text(&b, padL, 38, "start", "11", fmt.Sprintf("%s, %d CPUs, concurrency %d, connections %d, %s",
		r.Date.Format("2006-01-02 15:04Z"), r.Host.CPUs, r.Params.Concurrency, r.Params.Connections, r.Target))
	// Axes and grid.
	fmt.Fprintf(&b, `<g stroke="#ccc" stroke-width="1">`+"\n")
	for e := y0; e <= y1; e++ {
		y := padT + plotH - (e-y0)/(y1-y0)*plotH
		fmt.Fprintf(&b, `<line class="grid" x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f"/>`+"\n", padL, y, padL+plotW, y)
	}
	for e := x0; e <= x1; e++ {
		x := padL + (e-x0)/(x1-x0)*plotW
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f"/>`+"\n", x, padT, x, padT+plotH)
	}
	fmt.Fprintf(&b, "</g>\n")
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="black"/>`+"\n", padL, padT, plotW, plotH)
	for e := y0; e <= y1; e++ {
		y := padT + plotH - (e-y0)/(y1-y0)*plotH
		text(&b, padL-6, y+4, "end", "11", siNumber(math.Pow(10, e)))
	}
	for e := x0; e <= x1; e++ {
		x := padL + (e-x0)/(x1-x0)*plotW
		text(&b, x, padT+plotH+16, "middle", "11", siNumber(math.Pow(10, e)))
	}
	text(&b, padL+plotW/2, svgH-18, "middle", "12", "batch size (items per request, log scale)")
	fmt.Fprintf(&b, `<text x="18" y="%.0f" text-anchor="middle" transform="rotate(-90 18 %.0f)">items/s (log scale)</text>`+"\n", padT+plotH/2, padT+plotH/2)

	legendY := float64(padT + 10)
	legend := func(color, dash, label string) {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n",
			padL+plotW+12, legendY, padL+plotW+36, legendY, color, dash)
		text(&b, padL+plotW+42, legendY+4, "start", "11", label)
		legendY += 18
	}
	hline := func(class, color string, l *Limit, label string) {
		if l == nil || l.ItemsPerS <= 0 {
			return
		}
		y := py(l.ItemsPerS)
		fmt.Fprintf(&b, `<line class="%s" x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="8 4"/>`+"\n",
			class, padL, y, padL+plotW, y, color)
		legend(color, "8 4", fmt.Sprintf("%s %s/s", label, siNumber(l.ItemsPerS)))
	}
	hline("limit-software", colSoftware, r.Software, "software limit")
	hline("limit-hsm", colHSM, r.HSM, "HSM limit")
	var tp, sp []string
	for _, p := range r.Points {
		if p.Transport != nil && p.Transport.ItemsPerS > 0 {
			tp = append(tp, fmt.Sprintf("%.1f,%.1f", px(float64(p.Batch)), py(p.Transport.ItemsPerS)))
		}
		if p.ItemsPerS > 0 {
			sp = append(sp, fmt.Sprintf("%.1f,%.1f", px(float64(p.Batch)), py(p.ItemsPerS)))
		}
	}
	if len(tp) > 0 {
		fmt.Fprintf(&b, `<polyline class="limit-transport" points="%s" fill="none" stroke="%s" stroke-width="2" stroke-dasharray="3 3"/>`+"\n", strings.Join(tp, " "), colTransport)
		legend(colTransport, "3 3", "transport limit (echo)")
	}
	if len(sp) > 0 {
		fmt.Fprintf(&b, `<polyline class="scenario" points="%s" fill="none" stroke="%s" stroke-width="2.5"/>`+"\n", strings.Join(sp, " "), colScenario)
		for _, p := range r.Points {
			if p.ItemsPerS > 0 {
				x, y := px(float64(p.Batch)), py(p.ItemsPerS)
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x, y, colScenario)
				text(&b, x+6, y-6, "start", "10", siNumber(p.ItemsPerS))
			}
		}
		legend(colScenario, "", r.Params.Scenario)
	}
	fmt.Fprintf(&b, "</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

func text(b *bytes.Buffer, x, y float64, anchor, size, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%s">`, x, y, anchor, size)
	_ = xml.EscapeText(b, []byte(s))
	b.WriteString("</text>\n")
}

// siNumber writes 1234567 as 1.23M.
func siNumber(v float64) string {
	switch {
	case v >= 1e9:
		return trimZeros(fmt.Sprintf("%.2f", v/1e9)) + "G"
	case v >= 1e6:
		return trimZeros(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case v >= 1e3:
		return trimZeros(fmt.Sprintf("%.2f", v/1e3)) + "k"
	}
	return trimZeros(fmt.Sprintf("%.2f", v))
}

func trimZeros(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
