package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// promtool finds promtool on PATH or in $(go env GOPATH)/bin (where
// `go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0` puts
// it). Missing: the test fails under CI=true, else skips.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "promtool")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("promtool not found (go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0)")
	}
	t.Skip("promtool not found")
	return ""
}

// TestAlertRules: promtool checks the shipped rules file and runs its unit
// tests (each asked-for alert fires on the failure it names).
func TestAlertRules(t *testing.T) {
	p := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "monitoring/rules.yml"},
		{"test", "rules", "monitoring/rules_test.yml"},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			out, err := exec.Command(p, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
	t.Run("asked-for alerts present", func(t *testing.T) {
		raw, err := os.ReadFile("monitoring/rules.yml")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"HsmgateCAExpiringSoon", "HsmgateHSMDown", "HsmgateAuditFailing", "HsmgateCRLStale", "HsmgateStoreUnavailable"} {
			if !strings.Contains(string(raw), "alert: "+a+"\n") {
				t.Errorf("rules.yml has no alert %s", a)
			}
		}
	})
}

// TestPrometheusRuleMatchesRulesFile: the PrometheusRule's groups are the
// plain rules file's, so that what promtool checked is what is deployed.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	pr := docs(t, "monitoring/alerts.yaml")
	if len(pr) != 1 || pr[0]["kind"] != "PrometheusRule" || pr[0]["apiVersion"] != "monitoring.coreos.com/v1" {
		t.Fatalf("alerts.yaml: got %d documents (kind %v), want one monitoring.coreos.com/v1 PrometheusRule", len(pr), pr[0]["kind"])
	}
	plain := docs(t, "monitoring/rules.yml")[0]
	if got, want := get(pr[0], "spec", "groups"), plain["groups"]; !reflect.DeepEqual(got, want) {
		t.Errorf("alerts.yaml spec.groups differ from rules.yml groups:\ngot  %v\nwant %v", got, want)
	}
}

var metricName = regexp.MustCompile(`\bhsmgate_[a-z0-9_]+`)

// TestMonitoringNamesExist: every hsmgate_ metric that the rules and the
// dashboard query is one the code defines (histogram suffixes aside), so a
// renamed metric cannot leave a silent alert or an empty panel.
func TestMonitoringNamesExist(t *testing.T) {
	var src strings.Builder
	err := filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "deploy" || d.Name() == ".git" || d.Name() == "proto") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	code := src.String()
	raw, err := os.ReadFile("monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	rules, err := os.ReadFile("monitoring/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{"rules.yml": string(rules)}
	for i, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %d: no query", i)
		}
		for _, tg := range p.Targets {
			texts["dashboard"] += tg.Expr + "\n"
		}
	}
	for file, text := range texts {
		for _, n := range metricName.FindAllString(text, -1) {
			base := n
			for _, suf := range []string{"_bucket", "_count", "_sum"} {
				base = strings.TrimSuffix(base, suf)
			}
			if !strings.Contains(code, `"`+base+`"`) {
				t.Errorf("%s queries %s: no metric %q in the code", file, n, base)
			}
		}
	}
}
