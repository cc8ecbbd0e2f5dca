package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hsmgate/hsmgate/internal/config"
)

// loadRerooted loads a config file with config.Load, the way the server does,
// except that every absolute path it names is moved under a temporary root
// where an empty file (or, for the store and the audit log, the directory) is
// made first: Validate checks that files exist, and the examples name
// /etc/hsmgate/... paths. Every variable the file names is set.
func loadRerooted(t *testing.T, file string) *config.Config {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := config.Parse(raw, filepath.Dir(file))
	if err != nil {
		t.Fatalf("config.Parse(%s): %v", file, err)
	}
	for _, env := range []string{parsed.HSM.PINEnv, parsed.Store.Etcd.PasswordEnv, parsed.Audit.HMACKeyEnv} {
		if env != "" {
			t.Setenv(env, strings.Repeat("ab", 32))
		}
	}
	root := t.TempDir()
	reroot := func(p *string, isDirOf bool) {
		if *p == "" {
			return
		}
		if !filepath.IsAbs(*p) {
			t.Errorf("%s: path %q is relative; the deploy examples use absolute paths", file, *p)
			return
		}
		*p = filepath.Join(root, *p)
		if err := os.MkdirAll(filepath.Dir(*p), 0o700); err != nil {
			t.Fatal(err)
		}
		if !isDirOf {
			if err := os.WriteFile(*p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, err := config.Load(file, func(c *config.Config) {
		for _, p := range []*string{
			&c.TLS.CertFile, &c.TLS.KeyFile, &c.TLS.ClientCAFile,
			&c.HSM.Library, &c.HSM.PINFile,
			&c.Store.Etcd.PasswordFile, &c.Store.Etcd.CAFile, &c.Store.Etcd.CertFile, &c.Store.Etcd.KeyFile,
			&c.Audit.HMACKeyFile,
		} {
			reroot(p, false)
		}
		reroot(&c.Store.Path, true)
		reroot(&c.Audit.Path, true)
		if c.Auth.OIDC != nil {
			reroot(&c.Auth.OIDC.JWKSFile, false)
		}
	})
	if err != nil {
		t.Fatalf("config.Load(%s): %v", file, err)
	}
	return c
}

// filePaths lists the files a config names (as written, before rerooting).
func filePaths(c *config.Config) map[string]string {
	m := map[string]string{
		"tls.cert": c.TLS.CertFile, "tls.key": c.TLS.KeyFile, "tls.client_ca": c.TLS.ClientCAFile,
		"hsm.library": c.HSM.Library, "hsm.pin_file": c.HSM.PINFile,
		"store.path": c.Store.Path, "store.etcd.password_file": c.Store.Etcd.PasswordFile,
		"store.etcd.tls.ca": c.Store.Etcd.CAFile, "store.etcd.tls.cert": c.Store.Etcd.CertFile,
		"store.etcd.tls.key": c.Store.Etcd.KeyFile, "audit.path": c.Audit.Path,
		"audit.hmac_key_file": c.Audit.HMACKeyFile,
	}
	for k, v := range m {
		if v == "" {
			delete(m, k)
		}
	}
	return m
}

func parseConfig(t *testing.T, raw []byte) *config.Config {
	t.Helper()
	c, err := config.Parse(raw, "/")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("config/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("got %d files in config/, want hsmgate.yaml and hsmgate-etcd.yaml", len(files))
	}
	wantBackend := map[string]string{"hsmgate.yaml": config.BackendBbolt, "hsmgate-etcd.yaml": config.BackendEtcd}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c := loadRerooted(t, f)
			if want, ok := wantBackend[filepath.Base(f)]; ok && c.Store.Backend != want {
				t.Errorf("store.backend: got %q, want %q", c.Store.Backend, want)
			}
			if c.Audit.Path == "" {
				t.Error("audit.path: empty; a production example must audit")
			}
			if c.HSM.PINEnv == "" && c.HSM.PINFile == "" {
				t.Error("hsm: no PIN reference")
			}
			checkSharedBaseURL(t, c.PKI.BaseURL)
			checkHostMetrics(t, c)
		})
	}
	t.Run("kubernetes/configmap.yaml", func(t *testing.T) {
		dir := t.TempDir()
		f := filepath.Join(dir, "hsmgate.yaml")
		if err := os.WriteFile(f, []byte(configMapConfig(t)), 0o600); err != nil {
			t.Fatal(err)
		}
		c := loadRerooted(t, f)
		if c.Store.Backend != config.BackendEtcd {
			t.Errorf("store.backend: got %q, want etcd (3 replicas)", c.Store.Backend)
		}
		checkSharedBaseURL(t, c.PKI.BaseURL)
		// The Service's stable name on its plain-HTTP port "pki" (80):
		// CA/Browser Forum rules allow only http in AIA and CRL DPs.
		if c.PKI.BaseURL != "http://hsmgate.hsmgate.svc" {
			t.Errorf("pki.base_url %q: want the Service's stable name on its plain-HTTP pki port, http://hsmgate.hsmgate.svc", c.PKI.BaseURL)
		}
		if c.Listen.PKI == "" {
			t.Error("listen.pki: not set: nothing serves pki.base_url over plain http")
		}
		if sp := servicePort(t, findObject(t, "Service", "hsmgate"), "pki"); get(sp, "port") != 80 || get(sp, "targetPort") != "pki" {
			t.Errorf("Service hsmgate port pki %v: want port 80 (pki.base_url names no port), targetPort pki", sp)
		}
	})
}

// checkHostMetrics: a host example serves /metrics (plain HTTP) on its own
// listener, on loopback: exposing it further is a decision made with a
// firewall in front, not a default.
func checkHostMetrics(t *testing.T, c *config.Config) {
	t.Helper()
	host, port, err := net.SplitHostPort(c.Listen.Metrics)
	if err != nil {
		t.Errorf("listen.metrics %q: want host:port (the server serves /metrics on no other listener)", c.Listen.Metrics)
		return
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || port == "0" {
		t.Errorf("listen.metrics %q: want a fixed port on a loopback address (plain HTTP)", c.Listen.Metrics)
	}
	for _, other := range []string{c.Listen.GRPC, c.Listen.HTTP} {
		if _, p, _ := net.SplitHostPort(other); p == port {
			t.Errorf("listen.metrics %q: same port as %q", c.Listen.Metrics, other)
		}
	}
}

// docs decodes every YAML document of a file (empty ones skipped).
func docs(t *testing.T, file string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for i := 0; ; i++ {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
}

// get walks a decoded document by keys (string) and indexes (int).
func get(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

func list(v any) []any { s, _ := v.([]any); return s }

// manifests returns every object under deploy/kubernetes and deploy/cert-manager, by file.
func manifests(t *testing.T) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, dir := range []string{"kubernetes", "cert-manager"} {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || (!strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml")) {
				return err
			}
			out[p] = docs(t, p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func findObject(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	for _, ds := range manifests(t) {
		for _, d := range ds {
			if d["kind"] == kind && get(d, "metadata", "name") == name {
				return d
			}
		}
	}
	t.Fatalf("no %s %q under deploy/kubernetes", kind, name)
	return nil
}

func configMapConfig(t *testing.T) string {
	t.Helper()
	cm := findObject(t, "ConfigMap", "hsmgate-config")
	s := str(get(cm, "data", "hsmgate.yaml"))
	if s == "" {
		t.Fatal("ConfigMap hsmgate-config: no data key hsmgate.yaml")
	}
	return s
}

func TestManifestsParse(t *testing.T) {
	for file, ds := range manifests(t) {
		t.Run(file, func(t *testing.T) {
			if len(ds) == 0 {
				t.Fatal("no YAML document")
			}
			for i, d := range ds {
				if str(d["apiVersion"]) == "" || str(d["kind"]) == "" {
					t.Errorf("document %d: apiVersion %q, kind %q: want both", i, d["apiVersion"], d["kind"])
				}
				if d["kind"] == "Kustomization" {
					continue // no metadata
				}
				if str(get(d, "metadata", "name")) == "" {
					t.Errorf("document %d (%v): no metadata.name", i, d["kind"])
				}
			}
		})
	}
}

// TestKustomization: every manifest is listed except the Secret example, and
// every listed file exists. (kubectl kustomize renders it; not run here.)
func TestKustomization(t *testing.T) {
	k := docs(t, "kubernetes/kustomization.yaml")[0]
	listed := map[string]bool{}
	for _, r := range list(k["resources"]) {
		listed[str(r)] = true
		if _, err := os.Stat(filepath.Join("kubernetes", str(r))); err != nil {
			t.Errorf("resource %q: %v", r, err)
		}
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		b := filepath.Base(f)
		switch {
		case b == "kustomization.yaml":
		case b == "secret.example.yaml":
			if listed[b] {
				t.Errorf("%s is listed: apply -k would overwrite real Secrets with placeholders", b)
			}
		case !listed[b]:
			t.Errorf("%s is not in kustomization.yaml resources", b)
		}
	}
}

// serverRoutes are the HTTP routes internal/server registers ("GET /healthz", ...).
func serverRoutes(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../internal/server/server.go")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPodSpecs checks the hardening, the probes and that the config's files
// and variables are provided by the pod spec.
func TestPodSpecs(t *testing.T) {
	routes := serverRoutes(t)
	c := parseConfig(t, []byte(configMapConfig(t)))
	for _, obj := range []struct{ kind, name string }{{"Deployment", "hsmgate"}, {"Job", "hsmgate-init"}} {
		t.Run(obj.kind, func(t *testing.T) {
			d := findObject(t, obj.kind, obj.name)
			if obj.kind == "Deployment" {
				if r, _ := get(d, "spec", "replicas").(int); r != 3 {
					t.Errorf("replicas: got %v, want 3", get(d, "spec", "replicas"))
				}
			}
			checkPodSpec(t, d, c, routes)
		})
	}
}

// checkPodSpec checks the pod template of a Deployment (the server) or a Job
// (hsmgate init) against the config it mounts: hardening, resources, args,
// mounts, variables from Secrets and, for the server, probes and ports.
func checkPodSpec(t *testing.T, d map[string]any, c *config.Config, routes string) {
	t.Helper()
	kind := str(d["kind"])
	pod := get(d, "spec", "template", "spec")
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("pod securityContext.runAsNonRoot: want true")
	}
	if got := get(pod, "securityContext", "seccompProfile", "type"); got != "RuntimeDefault" {
		t.Errorf("pod seccompProfile: got %v, want RuntimeDefault", got)
	}
	if get(pod, "automountServiceAccountToken") != false {
		t.Error("automountServiceAccountToken: want false (hsmgate does not call the Kubernetes API)")
	}
	all := append(list(get(pod, "initContainers")), list(get(pod, "containers"))...)
	for _, ctr := range all {
		name := str(get(ctr, "name"))
		sc := get(ctr, "securityContext")
		if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false {
			t.Errorf("container %s: want readOnlyRootFilesystem true and allowPrivilegeEscalation false", name)
		}
		if drop := list(get(sc, "capabilities", "drop")); len(drop) != 1 || drop[0] != "ALL" {
			t.Errorf("container %s: capabilities.drop: got %v, want [ALL]", name, drop)
		}
		if get(ctr, "resources", "requests") == nil || get(ctr, "resources", "limits", "memory") == nil {
			t.Errorf("container %s: want resource requests and a memory limit", name)
		}
	}
	main := list(get(pod, "containers"))[0]
	args := list(get(main, "args"))
	wantVerb := map[string]string{"Deployment": "server", "Job": "init"}[kind]
	if len(args) != 3 || args[0] != wantVerb || args[1] != "--config" || args[2] != "/etc/hsmgate/config/hsmgate.yaml" {
		t.Errorf("args: got %v, want [%s --config /etc/hsmgate/config/hsmgate.yaml]", args, wantVerb)
	}
	checkMounts(t, main, c, kind == "Job")
	checkEnv(t, main, c, kind == "Job")
	checkVolumes(t, pod)
	if kind != "Deployment" {
		return
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
		h := get(main, probe, "httpGet")
		if get(h, "path") != path || get(h, "scheme") != "HTTPS" || get(h, "port") != "https" {
			t.Errorf("%s: got %v, want GET %s over HTTPS on port https", probe, h, path)
		}
		if !strings.Contains(routes, `"GET `+path+`"`) {
			t.Errorf("%s: internal/server registers no %q route", probe, path)
		}
	}
	ports := map[string]int{}
	for _, p := range list(get(main, "ports")) {
		n, _ := get(p, "containerPort").(int)
		ports[str(get(p, "name"))] = n
	}
	// /metrics is served only on listen.metrics (plain HTTP): a pod without
	// it cannot be scraped at all.
	if c.Listen.Metrics == "" {
		t.Error("listen.metrics: not set (the server serves /metrics on no other listener)")
	}
	for name, addr := range map[string]string{"grpc": c.Listen.GRPC, "https": c.Listen.HTTP, "metrics": c.Listen.Metrics, "pki": c.Listen.PKI} {
		if want := ":" + fmt.Sprint(ports[name]); ports[name] == 0 || !strings.HasSuffix(addr, want) {
			t.Errorf("port %s: containerPort %d does not match listen address %q", name, ports[name], addr)
		}
	}
	// The grace period covers the drain and the wait for in-flight calls.
	grace, _ := get(pod, "terminationGracePeriodSeconds").(int)
	if need := c.Shutdown.Drain + c.Shutdown.Timeout; time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d: want more than shutdown.drain + shutdown.timeout = %s", grace, need)
	}
}

// TestKubernetesMetrics: deploy/kubernetes serves /metrics on the config's
// plain-HTTP listen.metrics, exposes it as container and Service port
// "metrics", says so in the scrape annotations, and admits only the
// monitoring namespace to it.
func TestKubernetesMetrics(t *testing.T) {
	c := parseConfig(t, []byte(configMapConfig(t)))
	_, p, err := net.SplitHostPort(c.Listen.Metrics)
	if err != nil {
		t.Fatalf("configmap.yaml: listen.metrics %q: want host:port", c.Listen.Metrics)
	}
	var port int
	fmt.Sscan(p, &port)
	dep := findObject(t, "Deployment", "hsmgate")
	ann := get(dep, "spec", "template", "metadata", "annotations")
	if get(ann, "prometheus.io/scheme") != "http" || get(ann, "prometheus.io/port") != p || get(ann, "prometheus.io/path") != "/metrics" {
		t.Errorf("Deployment scrape annotations %v: want scheme http, port %s, path /metrics", ann, p)
	}
	svcPort := servicePort(t, findObject(t, "Service", "hsmgate"), "metrics")
	if get(svcPort, "targetPort") != "metrics" || get(svcPort, "port") != port {
		t.Errorf("Service hsmgate port metrics %v: want port %d, targetPort metrics", svcPort, port)
	}
	if sp := servicePort(t, findObject(t, "Service", "hsmgate-headless"), "metrics"); sp != nil {
		t.Errorf("headless Service: port metrics %v: want none (one scrape target per pod)", sp)
	}
	monitoring := yamlValue(t, `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]`)
	checkMetricsIngress(t, findObject(t, "NetworkPolicy", "hsmgate"), port, monitoring)
}

// servicePort returns the Service's port with this name, or nil.
func servicePort(t *testing.T, svc map[string]any, name string) any {
	t.Helper()
	for _, p := range list(get(svc, "spec", "ports")) {
		if get(p, "name") == name {
			return p
		}
	}
	return nil
}

func yamlValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// checkMetricsIngress: the NetworkPolicy admits to the plain-HTTP metrics
// port exactly the peers wantFrom, through rules that name the port (a rule
// without ports or without peers would open it to more).
func checkMetricsIngress(t *testing.T, np map[string]any, port int, wantFrom any) {
	t.Helper()
	var from []any
	for i, rule := range list(get(np, "spec", "ingress")) {
		ports := list(get(rule, "ports"))
		admits := len(ports) == 0
		for _, p := range ports {
			admits = admits || get(p, "port") == port || get(p, "port") == "metrics"
		}
		if !admits {
			continue
		}
		if len(list(get(rule, "from"))) == 0 {
			t.Errorf("NetworkPolicy %v ingress rule %d: admits the metrics port %d from anywhere", get(np, "metadata", "name"), i, port)
		}
		from = append(from, list(get(rule, "from"))...)
	}
	if !reflect.DeepEqual(from, wantFrom) {
		t.Errorf("NetworkPolicy %v: metrics port %d admits %v, want only %v", get(np, "metadata", "name"), port, from, wantFrom)
	}
}

// checkVolumes: every volumeMount of every container names a volume of the pod.
func checkVolumes(t *testing.T, pod any) {
	t.Helper()
	vols := map[string]bool{}
	for _, v := range list(get(pod, "volumes")) {
		vols[str(get(v, "name"))] = true
	}
	for _, ctr := range append(list(get(pod, "initContainers")), list(get(pod, "containers"))...) {
		for _, m := range list(get(ctr, "volumeMounts")) {
			if n := str(get(m, "name")); !vols[n] {
				t.Errorf("container %s: volumeMount %q names no volume of the pod", get(ctr, "name"), n)
			}
		}
	}
}

// checkMounts: every file of the config lies under a volume mount (the audit
// log under a writable one); the Job needs no audit log.
func checkMounts(t *testing.T, ctr any, c *config.Config, job bool) {
	t.Helper()
	for field, p := range filePaths(c) {
		if job && strings.HasPrefix(field, "audit.") {
			continue
		}
		found := false
		for _, m := range list(get(ctr, "volumeMounts")) {
			mp := str(get(m, "mountPath"))
			if strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/") {
				found = true
				if field == "audit.path" && get(m, "readOnly") == true {
					t.Errorf("%s %s: mount %s is read-only", field, p, mp)
				}
			}
		}
		if !found {
			t.Errorf("%s %s: under no volumeMount of container %s", field, p, get(ctr, "name"))
		}
	}
}

// checkEnv: the variables the config names are set from Secrets.
func checkEnv(t *testing.T, ctr any, c *config.Config, job bool) {
	t.Helper()
	want := []string{c.HSM.PINEnv}
	if !job {
		want = append(want, c.Audit.HMACKeyEnv, c.Store.Etcd.PasswordEnv)
	}
	var have []string
	for _, e := range list(get(ctr, "env")) {
		if get(e, "valueFrom", "secretKeyRef") != nil {
			have = append(have, str(get(e, "name")))
		}
	}
	for _, w := range want {
		if w != "" && !slices.Contains(have, w) {
			t.Errorf("env %s (named by the config): not set from a Secret; have %v", w, have)
		}
	}
}

// unit is a parsed systemd unit: directive -> values, in order.
func unit(t *testing.T, file string) map[string][]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: bad line %q", file, line)
			continue
		}
		u[k] = append(u[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// flagRegistered reports whether cmd/hsmgate's non-test sources register a
// flag with this long name (cobra: Flags().XxxVar(&v, "name", ...) or XxxVarP).
func flagRegistered(t *testing.T, name string) bool {
	t.Helper()
	files, err := filepath.Glob("../cmd/hsmgate/*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`Flags\(\)\.\w+\((&[\w.]+, )?"` + regexp.QuoteMeta(name) + `"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if re.Match(b) {
			return true
		}
	}
	return false
}

func TestSystemdUnit(t *testing.T) {
	u := unit(t, "systemd/hsmgate.service")
	checkHardening(t, u)
	if got := u["EnvironmentFile"]; len(got) != 1 || got[0] != "/etc/hsmgate/hsmgate.env" {
		t.Errorf("EnvironmentFile=: got %q, want %q", got, "/etc/hsmgate/hsmgate.env")
	}

	loadRerooted(t, "config/hsmgate.yaml")                  // valid (TestExampleConfigs says more)
	c := parseConfig(t, mustRead(t, "config/hsmgate.yaml")) // paths as written
	checkExec(t, u, "ExecStartPre", "init")
	checkExec(t, u, "ExecStart", "server")

	// The writable paths cover the store and the audit log.
	rw := strings.Fields(strings.Join(u["ReadWritePaths"], " "))
	for _, p := range []string{filepath.Dir(c.Store.Path), filepath.Dir(c.Audit.Path)} {
		if !slices.Contains(rw, p) {
			t.Errorf("ReadWritePaths=%v: missing %s", rw, p)
		}
	}
	checkCredentials(t, u, map[string]string{"audit.hmac_key_file": c.Audit.HMACKeyFile})
	// The env example defines the PIN variable the config names.
	env := string(mustRead(t, "systemd/hsmgate.env.example"))
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(c.HSM.PINEnv) + `=`).MatchString(env) {
		t.Errorf("hsmgate.env.example: no %s= line (hsm.pin_env)", c.HSM.PINEnv)
	}
}

// TestSystemdReplicas: the unit and config for N hosts sharing etcd and a
// network HSM. Every host runs the same file: etcd store, a stable shared
// pki.base_url, secrets as systemd credentials, no `hsmgate init` at start
// (replicas starting together must not race to create the KEK).
func TestSystemdReplicas(t *testing.T) {
	const dir = "systemd/etcd-replica/"
	u := unit(t, dir+"hsmgate.service")
	checkHardening(t, u)
	if len(u["ExecStartPre"]) != 0 {
		t.Errorf("ExecStartPre=%q: want none (the KEK is created once, from one host)", u["ExecStartPre"])
	}
	checkExec(t, u, "ExecStart", "server")

	loaded := loadRerooted(t, dir+"hsmgate.yaml")
	c := parseConfig(t, mustRead(t, dir+"hsmgate.yaml")) // paths as written
	if loaded.Store.Backend != config.BackendEtcd {
		t.Errorf("store.backend: got %q, want etcd", loaded.Store.Backend)
	}
	if len(c.Store.Etcd.Endpoints) < 3 {
		t.Errorf("store.etcd.endpoints: got %d, want every member of a 3+ member cluster", len(c.Store.Etcd.Endpoints))
	}
	if c.Store.Etcd.RequestTimeout <= 0 || c.Store.Etcd.RequestTimeout > 5*time.Second {
		t.Errorf("store.etcd.request_timeout: got %s, want a bound of a few seconds", c.Store.Etcd.RequestTimeout)
	}
	checkSharedBaseURL(t, c.PKI.BaseURL)
	checkHostMetrics(t, loaded)
	if c.HSM.PINEnv != "" || c.Audit.HMACKeyEnv != "" {
		t.Errorf("pin_env %q, hmac_key_env %q: want the secrets as credentials, not in the environment", c.HSM.PINEnv, c.Audit.HMACKeyEnv)
	}
	checkCredentials(t, u, map[string]string{"hsm.pin_file": c.HSM.PINFile, "audit.hmac_key_file": c.Audit.HMACKeyFile})
	rw := strings.Fields(strings.Join(u["ReadWritePaths"], " "))
	if !slices.Contains(rw, filepath.Dir(c.Audit.Path)) {
		t.Errorf("ReadWritePaths=%v: missing %s", rw, filepath.Dir(c.Audit.Path))
	}
}

// checkSharedBaseURL: pki.base_url is set, and names neither localhost nor a
// loopback or unspecified address (every replica's certificates must point
// relying parties at one reachable front).
func checkSharedBaseURL(t *testing.T, base string) {
	t.Helper()
	u, err := url.Parse(base)
	if base == "" || err != nil {
		t.Errorf("pki.base_url %q: want the shared front's URL", base)
		return
	}
	h := strings.ToLower(u.Hostname())
	if ip := net.ParseIP(h); h == "localhost" || strings.HasSuffix(h, ".localhost") || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified())) {
		t.Errorf("pki.base_url %q: %s is no shared front", base, h)
	}
}

// checkHardening: the sandbox directives every hsmgate unit keeps.
func checkHardening(t *testing.T, u map[string][]string) {
	t.Helper()
	for _, d := range []struct{ key, want string }{
		{"User", "hsmgate"}, {"ProtectSystem", "strict"}, {"NoNewPrivileges", "yes"},
		{"PrivateTmp", "yes"}, {"CapabilityBoundingSet", ""}, {"Restart", "on-failure"},
		{"LimitCORE", "0"}, {"ProtectHome", "yes"},
	} {
		if got := u[d.key]; len(got) != 1 || got[0] != d.want {
			t.Errorf("%s=: got %q, want %q", d.key, got, d.want)
		}
	}
	if len(u["LimitNOFILE"]) == 0 {
		t.Error("LimitNOFILE=: missing")
	}
}

// checkExec: the unit's key runs `hsmgate VERB --config /etc/hsmgate/hsmgate.yaml`
// with flags cmd/hsmgate registers.
func checkExec(t *testing.T, u map[string][]string, key, verb string) {
	t.Helper()
	if len(u[key]) != 1 {
		t.Errorf("%s=: got %d lines, want 1", key, len(u[key]))
		return
	}
	args := strings.Fields(strings.TrimLeft(u[key][0], "-+!@:"))
	if len(args) < 2 || path.Base(args[0]) != "hsmgate" {
		t.Errorf("%s=%s: want hsmgate VERB ...", key, u[key][0])
		return
	}
	if args[1] != verb {
		t.Errorf("%s: verb %q, want %q", key, args[1], verb)
	}
	hasConfig := false
	for i, a := range args[2:] {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !flagRegistered(t, name) {
			t.Errorf("%s: flag --%s: not registered in cmd/hsmgate", key, name)
		}
		if name == "config" {
			hasConfig = true
			if i+3 >= len(args) || args[i+3] != "/etc/hsmgate/hsmgate.yaml" {
				t.Errorf("%s: --config: want /etc/hsmgate/hsmgate.yaml", key)
			}
		}
	}
	if !hasConfig {
		t.Errorf("%s: no --config", key)
	}
}

// checkCredentials: each file (config field -> path as written) is a
// credential the unit loads: /run/credentials/hsmgate.service/NAME with a
// LoadCredential=NAME:... line.
func checkCredentials(t *testing.T, u map[string][]string, files map[string]string) {
	t.Helper()
	loaded := map[string]bool{}
	for _, lc := range u["LoadCredential"] {
		name, src, ok := strings.Cut(lc, ":")
		if !ok || !filepath.IsAbs(src) {
			t.Errorf("LoadCredential=%s: want NAME:/absolute/path", lc)
		}
		loaded[name] = true
	}
	for field, p := range files {
		if p == "" {
			continue
		}
		dir, name := filepath.Split(p)
		if dir != "/run/credentials/hsmgate.service/" || !loaded[name] {
			t.Errorf("%s %s: not a LoadCredential= of the unit (have %v)", field, p, u["LoadCredential"])
		}
	}
	for name := range loaded {
		used := false
		for _, p := range files {
			used = used || filepath.Base(p) == name
		}
		if !used {
			t.Errorf("LoadCredential=%s: no config field reads it", name)
		}
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
