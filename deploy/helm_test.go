package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"go/build"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hsmgate/hsmgate/internal/config"
)

const (
	chartDir = "helm/hsmgate"
	// helmInstall is how CI (scripts/deps.sh) installs the helm this test runs.
	helmInstall = "go install helm.sh/helm/v3/cmd/helm@v3.22.0"
	// kubeVersion is the Kubernetes version lint and template render for. A
	// helm built by `go install` (no release ldflags) would assume v1.20,
	// older than the chart's kubeVersion.
	kubeVersion = "1.33.0"
)

// helmBin finds helm on PATH or where `go install` puts it. Without it the
// test fails under CI=true and is skipped otherwise.
func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "helm")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("helm: not on PATH nor in %v; install it with: %s", dirs, helmInstall)
	}
	t.Skipf("helm not found (install: %s)", helmInstall)
	return ""
}

// runHelm runs helm with its cache, config and data under a temporary
// directory (nothing of the user's is read or written) and returns stdout.
func runHelm(t *testing.T, args ...string) (stdout []byte, stderr string, err error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), helmBin(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "kubeconfig"), // none: template and lint never reach a cluster
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.Bytes(), errb.String(), err
}

func TestHelmLint(t *testing.T) {
	out, _, err := runHelm(t, "version", "--short")
	if err != nil || !strings.HasPrefix(string(out), "v3.") {
		t.Fatalf("helm version: %q, %v; want v3", out, err)
	}
	t.Logf("helm %s", strings.TrimSpace(string(out)))
	for _, values := range []string{"", "ci/multi-replica-values.yaml"} {
		t.Run("values="+values, func(t *testing.T) {
			args := []string{"lint", "--strict", "--kube-version", kubeVersion, chartDir}
			if values != "" {
				args = append(args, "-f", filepath.Join(chartDir, values))
			}
			out, stderr, err := runHelm(t, args...)
			t.Logf("helm %s:\n%s%s", strings.Join(args, " "), out, stderr)
			if err != nil {
				t.Fatalf("helm lint: %v", err)
			}
		})
	}
}

// decodeAll decodes every YAML document of a stream (empty ones skipped),
// as docs does for the files under deploy/kubernetes.
func decodeAll(t *testing.T, raw []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for i := 0; ; i++ {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("rendered document %d: %v", i, err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
}

// rendered is the output of helm template, by kind and name.
type rendered map[string]map[string]map[string]any

func (r rendered) get(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	d, ok := r[kind][name]
	if !ok {
		t.Fatalf("no %s %q rendered; have %v", kind, name, slices.Sorted(maps.Keys(r[kind])))
	}
	return d
}

// subset reports whether every key of sel has the same value in labels.
func subset(sel, labels any) bool {
	s, _ := sel.(map[string]any)
	l, _ := labels.(map[string]any)
	if len(s) == 0 {
		return false // an empty selector selects everything: never what we want here
	}
	for k, v := range s {
		if l[k] != v {
			return false
		}
	}
	return true
}

func TestHelmTemplate(t *testing.T) {
	routes := serverRoutes(t)
	cases := []struct {
		name, release, namespace, values string
		replicas                         int
		baseURL                          string
		monitor                          bool
		antiAffinity                     string // the podAntiAffinity term used
		metricsFrom                      string // YAML: the peers admitted to the metrics port
	}{
		{"defaults", "hsmgate", "hsmgate", "", 3, "http://hsmgate.hsmgate.svc", false, "preferredDuringSchedulingIgnoredDuringExecution", monitoringNS},
		{"defaults-other-release", "kms", "security", "", 3, "http://kms-hsmgate.security.svc", false, "preferredDuringSchedulingIgnoredDuringExecution", monitoringNS},
		{"multi-replica", "prod", "hsmgate-prod", "ci/multi-replica-values.yaml", 5, "http://ca.example.com", true, "requiredDuringSchedulingIgnoredDuringExecution",
			`[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}, podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}}]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", tc.release, chartDir, "--namespace", tc.namespace, "--kube-version", kubeVersion}
			if tc.values != "" {
				args = append(args, "-f", filepath.Join(chartDir, tc.values))
			}
			out, stderr, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
			}
			r := rendered{}
			for i, d := range decodeAll(t, out) {
				kind, name := str(d["kind"]), str(get(d, "metadata", "name"))
				if str(d["apiVersion"]) == "" || kind == "" || name == "" {
					t.Errorf("document %d: apiVersion %q, kind %q, name %q: want all three", i, d["apiVersion"], kind, name)
					continue
				}
				if ns := get(d, "metadata", "namespace"); ns != tc.namespace {
					t.Errorf("%s %s: namespace %v, want %s", kind, name, ns, tc.namespace)
				}
				if l := get(d, "metadata", "labels", "app.kubernetes.io/instance"); l != tc.release {
					t.Errorf("%s %s: label app.kubernetes.io/instance %v, want %s", kind, name, l, tc.release)
				}
				if r[kind] == nil {
					r[kind] = map[string]map[string]any{}
				}
				if _, dup := r[kind][name]; dup {
					t.Errorf("%s %s: rendered twice", kind, name)
				}
				r[kind][name] = d
			}
			want := map[string]int{"ConfigMap": 2, "Deployment": 1, "Job": 1, "Service": 2, "ServiceAccount": 1,
				"PodDisruptionBudget": 1, "NetworkPolicy": 1}
			if tc.monitor {
				want["ServiceMonitor"] = 1
			}
			kinds := map[string]bool{}
			for k := range want {
				kinds[k] = true
			}
			for k := range r {
				kinds[k] = true
			}
			for _, kind := range slices.Sorted(maps.Keys(kinds)) {
				if len(r[kind]) != want[kind] {
					t.Errorf("%s: %d rendered, want %d", kind, len(r[kind]), want[kind])
				}
			}
			full := tc.release + "-hsmgate"
			if tc.release == "hsmgate" {
				full = "hsmgate"
			}
			checkHelmConfig(t, r, full, tc.baseURL)
			c := parseConfig(t, []byte(str(get(r.get(t, "ConfigMap", full+"-config"), "data", "hsmgate.yaml"))))

			dep := r.get(t, "Deployment", full)
			job := r.get(t, "Job", full+"-init")
			if n, _ := get(dep, "spec", "replicas").(int); n != tc.replicas {
				t.Errorf("replicas: got %v, want %d", get(dep, "spec", "replicas"), tc.replicas)
			}
			for _, d := range []map[string]any{dep, job} {
				t.Run(str(d["kind"]), func(t *testing.T) { checkPodSpec(t, d, c, routes) })
			}
			checkHelmWiring(t, r, full, dep, job)
			checkHelmMetrics(t, r, full, c, yamlValue(t, tc.metricsFrom))
			pod := get(dep, "spec", "template", "spec")
			if str(get(dep, "spec", "template", "metadata", "annotations", "checksum/config")) == "" {
				t.Error("pod template: no checksum/config annotation (a config change would not roll the pods)")
			}
			spread := false
			for _, tsc := range list(get(pod, "topologySpreadConstraints")) {
				spread = spread || (get(tsc, "topologyKey") == "kubernetes.io/hostname" &&
					subset(get(tsc, "labelSelector", "matchLabels"), get(dep, "spec", "template", "metadata", "labels")))
			}
			if !spread {
				t.Error("topologySpreadConstraints: no spread of the server pods over kubernetes.io/hostname")
			}
			if get(pod, "affinity", "podAntiAffinity", tc.antiAffinity) == nil {
				t.Errorf("affinity.podAntiAffinity: no %s term", tc.antiAffinity)
			}
			if tc.monitor {
				checkServiceMonitor(t, r, full, c)
			}
		})
	}
}

// checkHelmConfig loads the rendered hsmgate.yaml the way the server does and
// checks what the chart promises: etcd, a stable base URL, the store timeout.
func checkHelmConfig(t *testing.T, r rendered, full, baseURL string) {
	t.Helper()
	raw := str(get(r.get(t, "ConfigMap", full+"-config"), "data", "hsmgate.yaml"))
	hook := str(get(r.get(t, "ConfigMap", full+"-init-config"), "data", "hsmgate.yaml"))
	if raw == "" || raw != hook {
		t.Errorf("the init Job's config differs from the server's (or is empty):\n%s\n---\n%s", raw, hook)
	}
	f := filepath.Join(t.TempDir(), "hsmgate.yaml")
	if err := os.WriteFile(f, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	c := loadRerooted(t, f) // config.Parse (strict) + Validate
	if c.Store.Backend != config.BackendEtcd {
		t.Errorf("store.backend: got %q, want etcd", c.Store.Backend)
	}
	if c.PKI.BaseURL != baseURL {
		t.Errorf("pki.base_url: got %q, want %q", c.PKI.BaseURL, baseURL)
	}
	checkSharedBaseURL(t, c.PKI.BaseURL)
	if !strings.Contains(raw, "request_timeout:") || c.Store.Etcd.RequestTimeout <= 0 {
		t.Errorf("store.etcd.request_timeout: not set (got %s)", c.Store.Etcd.RequestTimeout)
	}
	if c.HSM.PINEnv == "" || c.Audit.HMACKeyEnv == "" || c.Audit.Path == "" {
		t.Errorf("hsm.pin_env %q, audit.hmac_key_env %q, audit.path %q: want all set", c.HSM.PINEnv, c.Audit.HMACKeyEnv, c.Audit.Path)
	}
}

// checkHelmWiring: the objects refer to each other correctly (selectors,
// ConfigMaps, ServiceAccount, ports, hooks, network policy).
func checkHelmWiring(t *testing.T, r rendered, full string, dep, job map[string]any) {
	t.Helper()
	podLabels := get(dep, "spec", "template", "metadata", "labels")
	jobLabels := get(job, "spec", "template", "metadata", "labels")
	if !subset(get(dep, "spec", "selector", "matchLabels"), podLabels) {
		t.Error("Deployment: selector does not match its pod template")
	}
	svc := r.get(t, "Service", full)
	headless := r.get(t, "Service", full+"-headless")
	for _, s := range []map[string]any{svc, headless} {
		if !subset(get(s, "spec", "selector"), podLabels) || subset(get(s, "spec", "selector"), jobLabels) {
			t.Errorf("Service %s: selector %v: want the server pods and not the init Job's", get(s, "metadata", "name"), get(s, "spec", "selector"))
		}
	}
	if get(headless, "spec", "clusterIP") != "None" {
		t.Error("headless Service: clusterIP is not None")
	}
	if pdb := r.get(t, "PodDisruptionBudget", full); !subset(get(pdb, "spec", "selector", "matchLabels"), podLabels) {
		t.Error("PodDisruptionBudget: selector does not match the server pods")
	}
	np := r.get(t, "NetworkPolicy", full)
	sel := get(np, "spec", "podSelector", "matchLabels")
	if !subset(sel, podLabels) || !subset(sel, jobLabels) {
		t.Errorf("NetworkPolicy: podSelector %v: want the server and init Job pods", sel)
	}
	if types := list(get(np, "spec", "policyTypes")); !slices.Contains(types, any("Ingress")) || !slices.Contains(types, any("Egress")) {
		t.Errorf("NetworkPolicy: policyTypes %v: want Ingress and Egress", types)
	}

	// Container ports, Service target ports, NetworkPolicy ingress ports agree.
	main := list(get(dep, "spec", "template", "spec", "containers"))[0]
	cports := map[string]int{}
	for _, p := range list(get(main, "ports")) {
		cports[str(get(p, "name"))], _ = get(p, "containerPort").(int)
	}
	ingress := map[int]bool{}
	for _, rule := range list(get(np, "spec", "ingress")) {
		for _, p := range list(get(rule, "ports")) {
			n, _ := get(p, "port").(int)
			ingress[n] = true
		}
	}
	for _, p := range list(get(svc, "spec", "ports")) {
		tp := str(get(p, "targetPort"))
		if _, ok := cports[tp]; !ok {
			t.Errorf("Service port %v: targetPort %q is no container port (%v)", get(p, "name"), tp, cports)
		}
		if !ingress[cports[tp]] {
			t.Errorf("NetworkPolicy: no ingress rule for port %d (%s)", cports[tp], tp)
		}
	}
	// Egress to every etcd member's port.
	c := parseConfig(t, []byte(str(get(r.get(t, "ConfigMap", full+"-config"), "data", "hsmgate.yaml"))))
	egress := map[string]bool{}
	for _, rule := range list(get(np, "spec", "egress")) {
		for _, p := range list(get(rule, "ports")) {
			egress[fmt.Sprint(get(p, "port"))] = true
		}
	}
	for _, ep := range c.Store.Etcd.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || !egress[u.Port()] {
			t.Errorf("NetworkPolicy: no egress rule for etcd endpoint %s", ep)
		}
	}

	// The pods mount the ConfigMaps rendered for them, run as the ServiceAccount.
	for _, x := range []struct {
		obj map[string]any
		cm  string
	}{{dep, full + "-config"}, {job, full + "-init-config"}} {
		found := false
		for _, v := range list(get(x.obj, "spec", "template", "spec", "volumes")) {
			if get(v, "name") == "config" {
				found = get(v, "configMap", "name") == x.cm
			}
		}
		if !found {
			t.Errorf("%s: volume config does not mount ConfigMap %s", x.obj["kind"], x.cm)
		}
	}
	sa := get(dep, "spec", "template", "spec", "serviceAccountName")
	if _, ok := r["ServiceAccount"][str(sa)]; !ok {
		t.Errorf("Deployment: serviceAccountName %v is not rendered", sa)
	}

	// The init Job and its ConfigMap are pre-install/pre-upgrade hooks, the ConfigMap first.
	cm := r.get(t, "ConfigMap", full+"-init-config")
	for _, o := range []map[string]any{cm, job} {
		hooks := strings.Split(str(get(o, "metadata", "annotations", "helm.sh/hook")), ",")
		if !slices.Contains(hooks, "pre-install") || !slices.Contains(hooks, "pre-upgrade") {
			t.Errorf("%s %s: helm.sh/hook %v: want pre-install and pre-upgrade", o["kind"], get(o, "metadata", "name"), hooks)
		}
	}
	var wc, wj int
	fmt.Sscan(str(get(cm, "metadata", "annotations", "helm.sh/hook-weight")), &wc)
	fmt.Sscan(str(get(job, "metadata", "annotations", "helm.sh/hook-weight")), &wj)
	if wc >= wj {
		t.Errorf("hook weights: ConfigMap %d, Job %d: want the ConfigMap created first", wc, wj)
	}
}

// monitoringNS is the chart's default networkPolicy.metricsFrom.
const monitoringNS = `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]`

// checkHelmMetrics: the rendered config sets listen.metrics (the only
// listener serving /metrics) to the Service's and container's "metrics"
// port, which the NetworkPolicy opens to metricsFrom alone.
func checkHelmMetrics(t *testing.T, r rendered, full string, c *config.Config, metricsFrom any) {
	t.Helper()
	sp := servicePort(t, r.get(t, "Service", full), "metrics")
	port, _ := get(sp, "port").(int)
	if port == 0 || get(sp, "targetPort") != "metrics" {
		t.Fatalf("Service %s: port metrics %v: want a port with targetPort metrics", full, sp)
	}
	if want := fmt.Sprintf(":%d", port); c.Listen.Metrics != want {
		t.Errorf("listen.metrics: got %q, want %q (the Service's metrics port)", c.Listen.Metrics, want)
	}
	if sp := servicePort(t, r.get(t, "Service", full+"-headless"), "metrics"); sp != nil {
		t.Errorf("headless Service: port metrics %v: want none", sp)
	}
	checkMetricsIngress(t, r.get(t, "NetworkPolicy", full), port, metricsFrom)
}

func checkServiceMonitor(t *testing.T, r rendered, full string, c *config.Config) {
	t.Helper()
	sm := r.get(t, "ServiceMonitor", full)
	sel := get(sm, "spec", "selector", "matchLabels")
	if !subset(sel, get(r.get(t, "Service", full), "metadata", "labels")) {
		t.Errorf("ServiceMonitor: selector %v does not select Service %s", sel, full)
	}
	if subset(sel, get(r.get(t, "Service", full+"-headless"), "metadata", "labels")) {
		t.Error("ServiceMonitor: selects the headless Service too (every target scraped twice)")
	}
	// hsmgate serves /metrics only on listen.metrics, in plain HTTP; the
	// HTTPS listener answers 404 for it.
	ep := list(get(sm, "spec", "endpoints"))
	if len(ep) != 1 || get(ep[0], "port") != "metrics" || get(ep[0], "scheme") != "http" || get(ep[0], "path") != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %v: want port metrics, scheme http, path /metrics", ep)
	} else if get(ep[0], "tlsConfig") != nil {
		t.Errorf("ServiceMonitor endpoint: tlsConfig %v on a plain-HTTP port", get(ep[0], "tlsConfig"))
	}
	if c.Listen.Metrics == "" {
		t.Error("ServiceMonitor rendered, but the config has no listen.metrics: nothing serves /metrics")
	}
	b, err := os.ReadFile("../internal/server/http.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"GET /metrics"`) {
		t.Error(`internal/server/http.go registers no "GET /metrics" route`)
	}
}

// TestHelmRefuses: values that would make a broken or dangerous deployment
// stop `helm template` (hence install and upgrade) with an error naming the
// value; a sound override next to them renders.
func TestHelmRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string // in the error; "" = renders
	}{
		{"sound base URL", []string{"--set-string", "pki.baseURL=https://ca.example.com"}, ""},
		{"localhost base URL", []string{"--set-string", "pki.baseURL=https://localhost:8200"}, "pki.baseURL"},
		{"loopback base URL", []string{"--set-string", "pki.baseURL=http://127.0.0.1:8200"}, "pki.baseURL"},
		{"IPv6 loopback base URL", []string{"--set-string", "pki.baseURL=http://[::1]:8200"}, "pki.baseURL"},
		{"base URL with a query", []string{"--set-string", "pki.baseURL=http://ca.example.com/?x=1"}, "baseURL"},
		{"no etcd endpoints", []string{"--set-json", "etcd.endpoints=[]"}, "endpoints"},
		{"bad request timeout", []string{"--set-string", "etcd.requestTimeout=forever"}, "requestTimeout"},
		{"library outside /opt/hsm", []string{"--set-string", "hsmClient.library=/usr/lib/libpkcs11.so"}, "library"},
		{"audit path override", []string{"--set-string", "config.audit.path=/tmp/audit.log"}, "path"},
		{"unknown value", []string{"--set", "replicas=3"}, "replicas"},
		{"metrics port on the HTTPS port", []string{"--set", "service.ports.metrics=8200"}, "service.ports"},
		{"metrics port on the gRPC port", []string{"--set", "service.ports.metrics=8443"}, "service.ports"},
		{"TLS scrape config (metrics are plain HTTP)", []string{"--set", "serviceMonitor.tlsConfig.insecureSkipVerify=true"}, "tlsConfig"},
		{"custom metrics port", []string{"--set", "service.ports.metrics=9100"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", "hsmgate", chartDir, "--namespace", "hsmgate", "--kube-version", kubeVersion}, tc.set...)
			_, stderr, err := runHelm(t, args...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("helm template %v: %v\n%s", tc.set, err, stderr)
			case tc.want != "" && err == nil:
				t.Fatalf("helm template %v: rendered, want an error naming %s", tc.set, tc.want)
			case tc.want != "" && !strings.Contains(stderr, tc.want):
				t.Errorf("helm template %v: error %q does not name %s", tc.set, stderr, tc.want)
			}
		})
	}
}

// TestHelmMatchesKustomize: with its default values, release hsmgate in
// namespace hsmgate, the chart renders the same server config as
// deploy/kubernetes (one design, two packagings: they must not drift).
func TestHelmMatchesKustomize(t *testing.T) {
	out, stderr, err := runHelm(t, "template", "hsmgate", chartDir, "--namespace", "hsmgate",
		"--kube-version", kubeVersion, "--show-only", "templates/configmap.yaml")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr)
	}
	ds := decodeAll(t, out)
	if len(ds) != 1 {
		t.Fatalf("got %d documents, want the ConfigMap", len(ds))
	}
	fromHelm := parseConfig(t, []byte(str(get(ds[0], "data", "hsmgate.yaml"))))
	fromKustomize := parseConfig(t, []byte(configMapConfig(t)))
	if !reflect.DeepEqual(fromHelm, fromKustomize) {
		t.Errorf("configs differ:\nhelm:      %+v\nkustomize: %+v", *fromHelm, *fromKustomize)
	}
}
