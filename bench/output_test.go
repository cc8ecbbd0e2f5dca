package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func protoSize(m proto.Message) int { return proto.Size(m) }

func sampleResult() *Result {
	return &Result{
		Schema: Schema, Date: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), Command: "hsmgate bench transit-encrypt --sweep 1,10,100",
		Host:   Host{Hostname: "h", CPUs: 2, GoVersion: "go1.26.8", LoadStart: [3]float64{0.1, 0.2, 0.3}, InProcess: true},
		Target: "in-process", Security: "auth ON", Describe: "Encrypt <aes256-gcm> & co",
		Params:   Params{Scenario: "transit-encrypt", Residency: "wrapped", KeyType: "aes256-gcm", Batch: 1, Sweep: []int{1, 10, 100}, Payload: 256, Concurrency: 4, Connections: 1, Duration: 1000, Echo: EchoMessages},
		Software: &Limit{Op: "Go", ItemsPerS: 4e6, Concurrency: 4},
		HSM:      &Limit{Op: "PKCS#11", ItemsPerS: 6e4, Concurrency: 1},
		Points: []Point{
			{Batch: 1, ItemsPerS: 5e3, Transport: &Limit{ItemsPerS: 1e4}, Latency: Latency{P50: 0.1, P99: 0.5}, Windows: []Window{
				{End: 500, ItemsPerS: 5e3, RSS: 50 << 20, AnonRSS: 20 << 20, FileRSS: 30 << 20},
				{End: 1000, ItemsPerS: 5.5e3, RSS: 100 << 20, AnonRSS: 21 << 20, FileRSS: 79 << 20},
			}},
			{Batch: 10, ItemsPerS: 5e4, Transport: &Limit{ItemsPerS: 1e5}},
			{Batch: 100, ItemsPerS: 3e5, Transport: &Limit{ItemsPerS: 5e5}},
		},
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := sampleResult()
	for i := range r.Points {
		r.ratios(&r.Points[i])
	}
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip changed the result:\n got %+v\nwant %+v", got, r)
	}
	// The documented field names.
	var raw map[string]any
	if err := json.Unmarshal(b.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "date", "command", "host", "params", "software_limit", "hsm_limit", "points"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON has no %q field", k)
		}
	}
	pt := raw["points"].([]any)[0].(map[string]any)
	for _, k := range []string{"batch", "items_per_s", "mb_per_s", "latency", "cpu_us_per_item", "peak_rss_bytes", "transport_limit", "ratio", "windows"} {
		if _, ok := pt[k]; !ok {
			t.Errorf("JSON point has no %q field", k)
		}
	}
	win := pt["windows"].([]any)[0].(map[string]any)
	for k, want := range map[string]float64{"end_ms": 500, "items_per_s": 5e3, "rss_bytes": 50 << 20, "rss_anon_bytes": 20 << 20, "rss_file_bytes": 30 << 20, "rss_shmem_bytes": 0, "other_cores": 0} {
		if got, ok := win[k]; !ok || got != want {
			t.Errorf("JSON window %q = %v, want %v", k, got, want)
		}
	}
	t.Run("wrong schema", func(t *testing.T) {
		if _, err := ReadJSON(strings.NewReader(`{"schema":"other"}`)); err == nil {
			t.Error("ReadJSON accepted another schema")
		}
	})
}

func TestSVG(t *testing.T) {
	r := sampleResult()
	var b bytes.Buffer
	if err := r.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	classes := map[string]int{}
	d := xml.NewDecoder(&b)
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			for _, a := range se.Attr {
				if a.Name.Local == "class" {
					classes[se.Name.Local+"."+a.Value]++
				}
			}
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	for _, want := range []string{"line.limit-software", "line.limit-hsm", "polyline.limit-transport", "polyline.scenario"} {
		if classes[want] != 1 {
			t.Errorf("%s: %d elements, want 1 (have %v)", want, classes[want], classes)
		}
	}
	t.Run("no limits, one point", func(t *testing.T) {
		r := sampleResult()
		r.Software, r.HSM, r.Points = nil, nil, r.Points[:1]
		r.Points[0].Transport = nil
		var b bytes.Buffer
		if err := r.WriteSVG(&b); err != nil {
			t.Fatal(err)
		}
		if err := xml.Unmarshal(b.Bytes(), new(struct{})); err != nil {
			t.Errorf("SVG is not well-formed XML: %v", err)
		}
		if strings.Contains(b.String(), "limit-hsm") {
			t.Error("SVG draws an HSM limit that was not measured")
		}
	})
}

func TestTable(t *testing.T) {
	r := sampleResult()
	for i := range r.Points {
		r.ratios(&r.Points[i])
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"software", "HSM", "transport b=100", "p99.9 ms", "/transport", "50%", "over time", "spread: throughput"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table has no %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "paired") {
		t.Errorf("a paired section without a paired measurement:\n%s", b.String())
	}
	t.Run("over time", func(t *testing.T) {
		for _, re := range []string{
			`(?m)^ *until s +items/s +RSS MiB +private MiB +file MiB +other cores *$`,
			`(?m)^ *0\.5 +5000 +50\.0 +20\.0 +30\.0 +0\.00 *$`,
			`(?m)^ *1\.0 +5500 +100\.0 +21\.0 +79\.0 +0\.00 *$`,
			`(?m)^spread: throughput 10\.0%, RSS 100\.0%, private RSS 5\.0% \(max/min - 1\)$`,
			`store's mmapped bbolt file`,
			`page cache the kernel can drop, not a leak; the leak check is the private RSS`,
		} {
			if !regexp.MustCompile(re).MatchString(b.String()) {
				t.Errorf("table does not match %s:\n%s", re, b.String())
			}
		}
		if strings.Contains(b.String(), "shmem") {
			t.Errorf("a shmem column with no shared memory:\n%s", b.String())
		}
	})
	t.Run("shmem column when there is some", func(t *testing.T) {
		r := sampleResult()
		r.Points[0].Windows[1].ShmemRSS = 2 << 20
		var b bytes.Buffer
		if err := r.WriteTable(&b); err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^ *1\.0 +5500 +100\.0 +21\.0 +79\.0 +2\.0 +0\.00 *$`).MatchString(b.String()) {
			t.Errorf("no shmem column:\n%s", b.String())
		}
	})
	t.Run("Go runtime columns when the server ran in process", func(t *testing.T) {
		r := sampleResult()
		r.Points[0].Windows[0].GoBytes, r.Points[0].Windows[0].GoLiveBytes = 12<<20, 6<<20
		r.Points[0].Windows[1].GoBytes, r.Points[0].Windows[1].GoLiveBytes = 12<<20, 7<<20
		var b bytes.Buffer
		if err := r.WriteTable(&b); err != nil {
			t.Fatal(err)
		}
		for _, re := range []string{
			`(?m)^ *until s +items/s +RSS MiB +private MiB +file MiB +Go MiB +Go live MiB +other cores *$`,
			`(?m)^ *0\.5 +5000 +50\.0 +20\.0 +30\.0 +12\.0 +6\.0 +0\.00 *$`,
			`(?m)^ *1\.0 +5500 +100\.0 +21\.0 +79\.0 +12\.0 +7\.0 +0\.00 *$`,
			`(?m)^spread: Go runtime memory 0\.0%, Go live heap 16\.7%$`,
		} {
			if !regexp.MustCompile(re).MatchString(b.String()) {
				t.Errorf("table does not match %s:\n%s", re, b.String())
			}
		}
	})
	t.Run("older result without private RSS", func(t *testing.T) {
		r := sampleResult()
		for i := range r.Points[0].Windows {
			r.Points[0].Windows[i].AnonRSS, r.Points[0].Windows[i].FileRSS = 0, 0
		}
		var b bytes.Buffer
		if err := r.WriteTable(&b); err != nil {
			t.Fatal(err)
		}
		for _, re := range []string{`(?m)^ *1\.0 +5500 +100\.0 +- +- +0\.00 *$`, `RSS 100\.0% \(max/min - 1\); private RSS not measured`} {
			if !regexp.MustCompile(re).MatchString(b.String()) {
				t.Errorf("table does not match %s:\n%s", re, b.String())
			}
		}
	})
	r.Points[2].Paired = &Paired{Rounds: 5, Slice: 1000, HSMConcurrency: 16, ItemsPerS: 41000, HSMItemsPerS: 50000, Ratio: Ratio(41000, 50000)}
	b.Reset()
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "(c=16) in turns, 5 rounds of 1.0s") || !regexp.MustCompile(`(?m)^ *100 +41000 +50000 +82% *$`).MatchString(b.String()) {
		t.Errorf("paired section missing or wrong:\n%s", b.String())
	}
	r.Points[2].Paired.With = PairTransport
	b.Reset()
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "the scenario and the transport limit (c=16)") || !strings.Contains(b.String(), "transport items/s  /transport") {
		t.Errorf("paired with the transport limit: section missing or wrong:\n%s", b.String())
	}
}
