package main

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/bench"
)

// TestBenchSmoke runs one short scenario against an in-process server (in a
// child process: SoftHSM reads its configuration once per process) and
// checks the shape of what it writes, never a speed.
func TestBenchSmoke(t *testing.T) {
	requireSoftHSM(t)
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	stdout, stderr, code := run(t, nil, "bench", "transit-encrypt", "--sweep", "1,10",
		"--duration", "600ms", "--warmup", "100ms", "--limit-duration", "300ms", "--concurrency", "2",
		"--paired", "2", "--pair-slice", "200ms", "--json", jsonPath)
	if code != 0 {
		t.Fatalf("hsmgate bench: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"software", "HSM", "transport b=10", "p99.9 ms", "/transport"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table has no %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "\r") {
		t.Error("no \\r-updated progress line on stderr")
	}
	f, err := os.Open(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := bench.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.Software == nil || r.HSM == nil {
		t.Fatalf("limits: software %v, HSM %v; want both measured", r.Software, r.HSM)
	}
	if got := len(r.Points); got != 2 {
		t.Fatalf("%d points, want 2 (--sweep 1,10)", got)
	}
	for _, p := range r.Points {
		if p.Items == 0 || p.ItemsPerS <= 0 || p.Transport == nil || p.Ratio.Transport <= 0 || p.Ratio.HSM <= 0 || p.PeakRSS <= 0 {
			t.Errorf("batch %d: incomplete point %+v", p.Batch, p)
		}
		if p.Items != p.Requests*uint64(p.Batch) {
			t.Errorf("batch %d: %d items in %d requests", p.Batch, p.Items, p.Requests)
		}
		if pr := p.Paired; pr == nil || pr.Rounds != 2 || pr.Slice != 200 || pr.HSMConcurrency != r.HSM.Concurrency ||
			pr.ItemsPerS <= 0 || pr.HSMItemsPerS <= 0 || pr.Ratio != bench.Ratio(pr.ItemsPerS, pr.HSMItemsPerS) {
			t.Errorf("batch %d: paired %+v, want 2 rounds of 200 ms at the HSM limit's concurrency, both rates measured", p.Batch, pr)
		}
	}
	if !strings.Contains(stdout, "paired: the scenario and the HSM limit") {
		t.Errorf("table has no paired section:\n%s", stdout)
	}
	if !strings.Contains(r.Security, "auth ON") || !r.Host.InProcess {
		t.Errorf("security %q, in process %v: want auth ON, in process", r.Security, r.Host.InProcess)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "out.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg, new(struct{})); err != nil {
		t.Errorf("out.svg: %v", err)
	}
}

// TestBenchACMEOrderSmoke runs acme-order briefly: golang.org/x/crypto/acme
// completes whole orders (http-01 answered by the bench's responder, which
// the in-process server validates against through the test-only option)
// before and during the load; the HSM limit is measured beside it and the
// transport limit is named as not applicable. Checks the shape, never a speed.
func TestBenchACMEOrderSmoke(t *testing.T) {
	requireSoftHSM(t)
	jsonPath := filepath.Join(t.TempDir(), "acme.json")
	stdout, stderr, code := run(t, nil, "bench", "acme-order",
		"--duration", "1s", "--warmup", "100ms", "--limit-duration", "300ms", "--concurrency", "2", "--json", jsonPath)
	if code != 0 {
		t.Fatalf("hsmgate bench acme-order: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	f, err := os.Open(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := bench.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.HSM == nil || !strings.Contains(r.HSM.Op, "PKCS#11") {
		t.Errorf("HSM limit: got %+v, want the issuer's PKCS#11 signature measured", r.HSM)
	}
	if len(r.Points) != 1 || r.Points[0].Transport != nil {
		t.Fatalf("points: got %+v, want one, without a transport limit", r.Points)
	}
	if !strings.Contains(strings.Join(r.Notes, "\n"), "transport limit not measured") {
		t.Errorf("notes: got %q, want the transport limit named as not measured", r.Notes)
	}
	if !strings.Contains(r.Describe, "ACME order") || !strings.Contains(stdout, "acme-order") {
		t.Errorf("describe %q / table:\n%s", r.Describe, stdout)
	}
	t.Logf("orders measured in 1 s: %d (%.1f/s)", r.Points[0].Items, r.Points[0].ItemsPerS)
}
