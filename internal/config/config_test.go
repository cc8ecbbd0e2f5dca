package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixture writes the files a valid config names and returns its directory.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"cert.pem", "key.pem", "ca.pem", "libfake.so", "pin"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const valid = `
listen:
  grpc: 127.0.0.1:9443
  http: 127.0.0.1:9200
tls:
  cert: cert.pem
  key: key.pem
  client_ca: ca.pem
hsm:
  library: libfake.so
  token_label: prod
  pin_env: HSMGATE_PIN
  pin_file: pin
  max_sessions: 4
  wait_timeout: 3s
store:
  backend: bbolt
  path: data/hsmgate.db
limits:
  max_recv_bytes: 1048576
  max_concurrent_streams: 64
  max_items_per_request: 500
  max_item_bytes: 65536
log:
  level: debug
  format: json
`

func load(t *testing.T, dir, body string, overrides ...func(*Config)) (*Config, error) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hsmgate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path, overrides...)
}

func TestLoadValid(t *testing.T) {
	dir := fixture(t)
	c, err := load(t, dir, valid)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"grpc", c.Listen.GRPC, "127.0.0.1:9443"},
		{"cert resolved against the file's dir", c.TLS.CertFile, filepath.Join(dir, "cert.pem")},
		{"pin file", c.HSM.PINFile, filepath.Join(dir, "pin")},
		{"kek default", c.HSM.KEKLabel, DefaultKEKLabel},
		{"wait timeout", c.HSM.WaitTimeout, 3 * time.Second},
		{"store path", c.Store.Path, filepath.Join(dir, "data/hsmgate.db")},
		{"streams", c.Limits.MaxConcurrentStreams, uint32(64)},
		{"send default", c.Limits.MaxSendBytes, DefaultMaxSendBytes},
		{"item bytes", c.Limits.MaxItemBytes, 65536},
		{"tls 1.2 default", c.TLS.MinVersion, uint16(0x0303)},
		{"log level", c.Log.Level, slog.LevelDebug},
		{"shutdown default", c.Shutdown.Timeout, DefaultShutdownTimeout},
		{"no metrics listener by default", c.Listen.Metrics, ""},
		{"no plain-HTTP PKI listener by default", c.Listen.PKI, ""},
		{"no per-key metric labels by default", c.Metrics.PerKeyLabels, false},
		{"connections default", c.Limits.MaxConnections, DefaultMaxConnections},
		{"per-IP default", c.Limits.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP},
		{"handshake default", c.Limits.HandshakeTimeout, DefaultHandshakeTimeout},
		{"pre-auth idle default", c.Limits.UnauthenticatedIdleTimeout, DefaultUnauthenticatedIdleTimeout},
		{"idle default below 30m", c.Limits.MaxConnectionIdle, 5 * time.Minute},
		{"streams total default", c.Limits.MaxStreams, DefaultMaxStreams},
		{"inflight default", c.Limits.MaxInflightBytes, DefaultMaxInflightBytes},
		{"inflight wait default", c.Limits.InflightWait, DefaultInflightWait},
		{"HTTP body default is max_recv_bytes", c.Limits.MaxHTTPBodyBytes, 1048576},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestOverrides(t *testing.T) {
	dir := fixture(t)
	c, err := load(t, dir, valid, func(c *Config) { c.Listen.GRPC = "127.0.0.1:0" })
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.GRPC != "127.0.0.1:0" {
		t.Errorf("override: got %q, want 127.0.0.1:0", c.Listen.GRPC)
	}
	// An override is validated like the file.
	if _, err := load(t, dir, valid, func(c *Config) { c.Listen.GRPC = "nonsense" }); err == nil ||
		!strings.Contains(err.Error(), "listen.grpc") {
		t.Errorf("bad override: got %v, want a listen.grpc error", err)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(string) string
		want string
	}{
		{"literal PIN", func(s string) string {
			return strings.Replace(s, "  pin_env: HSMGATE_PIN\n", "  pin: \"123456\"\n", 1)
		}, "hsm.pin: a PIN is never read from the config file"},
		{"literal etcd password", func(s string) string {
			return strings.Replace(s, "  path: data/hsmgate.db\n", "  path: data/hsmgate.db\n  etcd:\n    password: hunter2\n", 1)
		}, "store.etcd.password: a password is never read"},
		{"PIN given as pin_env", func(s string) string {
			return strings.Replace(s, "pin_env: HSMGATE_PIN", "pin_env: \"1234-5678\"", 1)
		}, "hsm.pin_env: \"1234-5678\" is not an environment variable name"},
		{"unknown field", func(s string) string {
			return strings.Replace(s, "  max_sessions: 4\n", "  max_sesions: 4\n", 1)
		}, "field max_sesions not found"},
		{"unknown section", func(s string) string { return s + "cluster:\n  size: 3\n" }, "field cluster not found"},
		{"item bytes out of range", func(s string) string {
			return strings.Replace(s, "max_item_bytes: 65536", "max_item_bytes: 999999999", 1)
		}, "limits.max_item_bytes: 999999999 is out of range"},
		{"bad backend", func(s string) string {
			return strings.Replace(s, "backend: bbolt", "backend: redis", 1)
		}, `store.backend: "redis": want "bbolt" or "etcd"`},
		{"etcd without endpoints", func(s string) string {
			return strings.Replace(s, "backend: bbolt", "backend: etcd", 1)
		}, "store.etcd.endpoints: required"},
		{"no PIN reference", func(s string) string {
			s = strings.Replace(s, "  pin_env: HSMGATE_PIN\n", "", 1)
			return strings.Replace(s, "  pin_file: pin\n", "", 1)
		}, "pin_env or pin_file is required"},
		{"missing cert file", func(s string) string {
			return strings.Replace(s, "cert: cert.pem", "cert: nope.pem", 1)
		}, "tls.cert: stat"},
		{"bad address", func(s string) string {
			return strings.Replace(s, "grpc: 127.0.0.1:9443", "grpc: 9443", 1)
		}, `listen.grpc: "9443": want host:port`},
		{"bad duration", func(s string) string {
			return strings.Replace(s, "wait_timeout: 3s", "wait_timeout: soon", 1)
		}, "line 15: cannot unmarshal !!str `soon` into time.Duration"},
		{"bad log level", func(s string) string {
			return strings.Replace(s, "level: debug", "level: loud", 1)
		}, `log.level: "loud"`},
		{"zero streams", func(s string) string {
			return strings.Replace(s, "max_concurrent_streams: 64", "max_concurrent_streams: -1", 1)
		}, "limits.max_concurrent_streams"},
		{"two documents", func(s string) string { return s + "---\nlisten: {}\n" }, "more than one YAML document"},
		{"bad metrics address", func(s string) string {
			return strings.Replace(s, "  http: 127.0.0.1:9200\n", "  http: 127.0.0.1:9200\n  metrics: 9464\n", 1)
		}, `listen.metrics: "9464": want host:port`},
		{"bad pki address", func(s string) string {
			return strings.Replace(s, "  http: 127.0.0.1:9200\n", "  http: 127.0.0.1:9200\n  pki: 8080\n", 1)
		}, `listen.pki: "8080": want host:port`},
		{"per-IP above total", func(s string) string {
			return strings.Replace(s, "  max_item_bytes: 65536\n", "  max_item_bytes: 65536\n  max_connections: 10\n  max_connections_per_ip: 11\n", 1)
		}, "limits.max_connections_per_ip: 11 is out of range"},
		{"inflight below one message", func(s string) string {
			return strings.Replace(s, "  max_item_bytes: 65536\n", "  max_item_bytes: 65536\n  max_inflight_bytes: 1000\n", 1)
		}, "limits.max_inflight_bytes: 1000 is out of range"},
		{"pre-auth idle above idle", func(s string) string {
			return strings.Replace(s, "  max_item_bytes: 65536\n", "  max_item_bytes: 65536\n  unauthenticated_idle_timeout: 1h\n", 1)
		}, "limits.unauthenticated_idle_timeout: 1h0m0s is out of range"},
		{"handshake too short", func(s string) string {
			return strings.Replace(s, "  max_item_bytes: 65536\n", "  max_item_bytes: 65536\n  handshake_timeout: 1ms\n", 1)
		}, "limits.handshake_timeout"},
		{"zero total streams", func(s string) string {
			return strings.Replace(s, "  max_item_bytes: 65536\n", "  max_item_bytes: 65536\n  max_streams: -5\n", 1)
		}, "limits.max_streams"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, fixture(t), tc.edit(valid))
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "123456") || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error echoes a secret: %v", err)
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	_, err := load(t, fixture(t), "store:\n  backend: etcd\n")
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"tls.cert: required", "tls.key: required", "hsm.library: required", "hsm.token_label: required", "store.etcd.endpoints"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestExampleConfig(t *testing.T) {
	raw, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(raw, "/etc/hsmgate")
	if err != nil {
		t.Fatalf("testdata/example.yaml does not parse: %v", err)
	}
	// The example shows every limit explicitly, at its default.
	if got, want := c.Limits, Default().Limits; got != want {
		t.Errorf("example limits:\ngot  %+v\nwant %+v", got, want)
	}
	if got, want := c.Listen.Metrics, "127.0.0.1:9464"; got != want {
		t.Errorf("example listen.metrics: got %q, want %q", got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte("hsm:\n  pin: 1\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := Parse(raw, "/x")
		if err == nil {
			_ = c.Validate() // must not panic
		}
	})
}
