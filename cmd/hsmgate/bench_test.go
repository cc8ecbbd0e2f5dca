package main

import (
	"encoding/json"
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
	r := readResult(t, jsonPath)
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

// TestBenchCompareSmoke: compare drives the same workload over gRPC and
// over hsmgate's own Vault door (in process) and reports both sides and
// their ratio; the shape only, never a speed.
func TestBenchCompareSmoke(t *testing.T) {
	requireSoftHSM(t)
	for _, c := range []struct {
		scenario string
		args     []string
		perReq   []int // items per request on the Vault side, by row
	}{
		{"transit-encrypt", []string{"--sweep", "1,10"}, []int{1, 10}},
		{"pki-sign", nil, []int{1}},
		{"ssh-sign", []string{"--batch", "4"}, []int{1}},
	} {
		t.Run(c.scenario, func(t *testing.T) {
			jsonPath := filepath.Join(t.TempDir(), "cmp.json")
			args := append([]string{"bench", "compare", "--vault-addr", "self", c.scenario,
				"--duration", "500ms", "--warmup", "100ms", "--concurrency", "2", "--json", jsonPath}, c.args...)
			stdout, stderr, code := run(t, nil, args...)
			if code != 0 {
				t.Fatalf("hsmgate bench compare: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			for _, want := range []string{"hsmgate/vault", "vault:   https://127.0.0.1:", " hsmgate ", " vault "} {
				if !strings.Contains(stdout, want) {
					t.Errorf("table has no %q:\n%s", want, stdout)
				}
			}
			b, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			var r bench.CompareResult
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if got, want := len(r.Rows), len(c.perReq); got != want {
				t.Fatalf("got %d rows, want %d", got, want)
			}
			for i, row := range r.Rows {
				if row.HSMGate.ItemsPerS <= 0 || row.Vault.ItemsPerS <= 0 || row.Ratio != bench.Ratio(row.HSMGate.ItemsPerS, row.Vault.ItemsPerS) {
					t.Errorf("batch %d: incomplete row %+v", row.Batch, row)
				}
				if got, want := row.Vault.ItemsPerRequest, c.perReq[i]; got != want {
					t.Errorf("batch %d: got %d items per Vault request, want %d", row.Batch, got, want)
				}
			}
		})
	}
	t.Run("token never printed", func(t *testing.T) {
		got := strings.Join(redactTokenArgs([]string{"bench", "compare", "--vault-token", "s.secret", "--vault-token=s.other", "x"}), " ")
		if strings.Contains(got, "secret") || strings.Contains(got, "other") {
			t.Errorf("got %q, want the tokens redacted", got)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, args := range [][]string{
			{"bench", "compare", "transit-encrypt"},
			{"bench", "compare", "--vault-addr", "https://127.0.0.1:1", "transit-encrypt"},
			{"bench", "compare", "--vault-addr", "self", "--target", "env", "transit-encrypt"},
		} {
			if _, stderr, code := run(t, []string{"VAULT_TOKEN="}, args...); code == 0 {
				t.Errorf("%q: exit 0, want a usage error\n%s", args, stderr)
			}
		}
	})
}

// TestBenchMixedSmoke: the soak's mix runs its four parts per round and
// reports throughput and RSS per interval and the audit log's size per
// request; the shape only.
func TestBenchMixedSmoke(t *testing.T) {
	requireSoftHSM(t)
	jsonPath := filepath.Join(t.TempDir(), "mixed.json")
	stdout, stderr, code := run(t, nil, "bench", "mixed", "--duration", "1s", "--warmup", "200ms",
		"--interval", "250ms", "--concurrency", "2", "--json", jsonPath)
	if code != 0 {
		t.Fatalf("hsmgate bench mixed: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"batch 1 over time", "RSS MiB", "spread: throughput", "audit log: ", "B a request"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table has no %q:\n%s", want, stdout)
		}
	}
	r := readResult(t, jsonPath)
	if len(r.Points) != 1 {
		t.Fatalf("got %d points, want 1", len(r.Points))
	}
	pt := r.Points[0]
	if pt.Requests == 0 || pt.Items != pt.Requests*118 {
		t.Errorf("got %d items in %d rounds, want 118 a round", pt.Items, pt.Requests)
	}
	if len(pt.Windows) < 2 {
		t.Errorf("got %d windows, want several (--interval 250ms of 1s)", len(pt.Windows))
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
	r := readResult(t, jsonPath)
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

// TestBenchPairedTransport: --pair-with transport takes turns with the gRPC
// echo of the same messages at the scenario's concurrency; an unknown limit
// is refused.
func TestBenchPairedTransport(t *testing.T) {
	requireSoftHSM(t)
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	stdout, stderr, code := run(t, nil, "bench", "transit-encrypt", "--batch", "1",
		"--duration", "300ms", "--warmup", "50ms", "--limit-duration", "200ms", "--concurrency", "2",
		"--paired", "2", "--pair-slice", "100ms", "--pair-with", "transport", "--json", jsonPath)
	if code != 0 {
		t.Fatalf("hsmgate bench: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	r := readResult(t, jsonPath)
	pr := r.Points[0].Paired
	if pr == nil || pr.With != bench.PairTransport || pr.HSMConcurrency != 2 || pr.ItemsPerS <= 0 || pr.HSMItemsPerS <= 0 {
		t.Fatalf("paired %+v, want 2 rounds with the transport limit at concurrency 2", pr)
	}
	if !strings.Contains(stdout, "paired: the scenario and the transport limit (c=2)") {
		t.Errorf("table has no paired transport section:\n%s", stdout)
	}
	if _, stderr, code := run(t, nil, "bench", "transit-encrypt", "--pair-with", "nope"); code == 0 || !strings.Contains(stderr, "pair-with") {
		t.Errorf("--pair-with nope: exit %d, %s; want refused", code, stderr)
	}
}

// TestBenchEchoWork: --echo work names the software operation its echo
// runs per item in the transport limit, and an unknown mode is refused with
// the modes there are.
func TestBenchEchoWork(t *testing.T) {
	requireSoftHSM(t)
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	stdout, stderr, code := run(t, nil, "bench", "transit-sign", "--key-type", "ecdsa-p256", "--batch", "1",
		"--duration", "300ms", "--warmup", "50ms", "--limit-duration", "200ms", "--concurrency", "2",
		"--echo", "work", "--json", jsonPath)
	if code != 0 {
		t.Fatalf("hsmgate bench: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	tr := readResult(t, jsonPath).Points[0].Transport
	if tr == nil || tr.ItemsPerS <= 0 || !strings.Contains(tr.Op, "and Go ecdsa-p256 sign") {
		t.Fatalf("transport limit %+v, want the echo with Go's ecdsa-p256 signature per item", tr)
	}
	if _, stderr, code := run(t, nil, "bench", "transit-sign", "--echo", "nope"); code == 0 || !strings.Contains(stderr, "want messages, bytes or work") {
		t.Errorf("--echo nope: exit %d, %s; want refused, naming the modes", code, stderr)
	}
}

// readResult reads the JSON result a bench run wrote to path.
func readResult(t *testing.T, path string) *bench.Result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := bench.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
