// Package config loads hsmgate's configuration: a YAML file (File, decoded
// strictly: unknown fields are errors) turned into the runtime Config with
// defaults filled in, relative paths resolved against the file's directory,
// flag overrides applied and every value checked, so that a bad file fails at
// start with a message naming the field.
//
// Secrets are never in the file: the HSM PIN and the etcd password are named
// by reference (an environment variable with *_env, or a file with *_file);
// a literal `pin:` or `password:` is refused.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hsmgate/hsmgate/internal/limits"
)

// Defaults.
const (
	DefaultGRPCAddr             = ":8443"
	DefaultHTTPAddr             = ":8200"
	DefaultKEKLabel             = "hsmgate-kek"
	DefaultMaxSessions          = 8
	DefaultWaitTimeout          = 10 * time.Second
	DefaultEtcdPrefix           = "/hsmgate/"
	DefaultEtcdDialTimeout      = 5 * time.Second
	DefaultEtcdRequestTimeout   = 2 * time.Second
	DefaultDegradedGrace        = 3 * time.Minute
	DefaultMaxRecvBytes         = 4 << 20
	DefaultMaxSendBytes         = 16 << 20
	DefaultMaxConcurrentStreams = 256
	DefaultMaxItemsPerRequest   = limits.MaxItemsPerRequest
	DefaultMaxItemBytes         = limits.MaxItemBytes
	DefaultKeepaliveMinTime     = 10 * time.Second
	DefaultMaxConnectionIdle    = 5 * time.Minute
	DefaultShutdownTimeout      = 20 * time.Second

	DefaultMaxConnections             = 4096
	DefaultMaxConnectionsPerIP        = 256
	DefaultHandshakeTimeout           = 10 * time.Second
	DefaultUnauthenticatedIdleTimeout = 30 * time.Second
	DefaultMaxStreams                 = 4096
	DefaultMaxInflightBytes           = 32 << 20
	DefaultInflightWait               = time.Second
	DefaultRequestReadTimeout         = 30 * time.Second

	// HTTPOff as listen.http disables the HTTP listener.
	HTTPOff = "off"
)

// Store backends.
const (
	BackendBbolt = "bbolt"
	BackendEtcd  = "etcd"
)

// Config is the validated runtime configuration.
type Config struct {
	Listen   Listen
	TLS      TLS
	HSM      HSM
	Store    Store
	Limits   Limits
	Shutdown Shutdown
	Log      Log
	Metrics  Metrics
	Auth     Auth
	Audit    Audit
	PKI      PKI     // pki.go
	SSH      SSH     // ssh.go
	ACME     ACME    // acme.go
	Tracing  Tracing // tracing.go
	Replica  Replica // replica.go
}

// Listen holds listener addresses (host:port; port 0 picks a free one).
type Listen struct {
	GRPC string
	HTTP string // empty: no HTTP listener
	// Metrics is the plain-HTTP /metrics listener (empty: none).
	Metrics string
	// PKI is the plain-HTTP listener of the CA's public objects (empty: none).
	PKI string
}

// Metrics configures what the metrics expose.
type Metrics struct {
	// PerKeyLabels: per-key metrics carry the transit key name (default false).
	PerKeyLabels bool
}

// TLS holds the server's certificate files.
type TLS struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string // empty: no client certificates requested
	MinVersion   uint16 // tls.VersionTLS12 or tls.VersionTLS13
}

// HSM says which token to use and where its PIN is.
type HSM struct {
	Library     string
	TokenLabel  string
	PINEnv      string
	PINFile     string
	KEKLabel    string
	MaxSessions int
	WaitTimeout time.Duration
}

// Store selects and configures the key store.
type Store struct {
	Backend string // BackendBbolt or BackendEtcd
	Path    string // bbolt file
	Etcd    Etcd
	// DegradedGrace (store.degraded_grace): how long cached keys, tokens
	// and policies serve, degraded, while the store is out of reach; 0: off.
	DegradedGrace time.Duration
}

// Etcd configures the etcd backend.
type Etcd struct {
	Endpoints   []string
	Prefix      string
	DialTimeout time.Duration
	// RequestTimeout bounds every store call (store.etcd.request_timeout).
	RequestTimeout time.Duration
	Username       string
	PasswordEnv    string
	PasswordFile   string
	CAFile         string
	CertFile       string
	KeyFile        string
}

// Limits bound what one client can ask of the server.
type Limits struct {
	MaxRecvBytes         int
	MaxSendBytes         int
	MaxConcurrentStreams uint32
	MaxItemsPerRequest   int
	// MaxItemBytes bounds one item's payload (plaintext, ciphertext or
	// input, with its AAD and context) in a batch RPC.
	MaxItemBytes      int
	KeepaliveMinTime  time.Duration
	MaxConnectionIdle time.Duration

	// Connection, stream and memory bounds (see LimitsFile).
	MaxConnections             int
	MaxConnectionsPerIP        int
	HandshakeTimeout           time.Duration
	UnauthenticatedIdleTimeout time.Duration
	MaxStreams                 int
	MaxInflightBytes           int
	InflightWait               time.Duration
	MaxHTTPBodyBytes           int
	RequestReadTimeout         time.Duration
}

// Shutdown tunes graceful shutdown.
type Shutdown struct {
	Drain   time.Duration
	Timeout time.Duration
}

// Log configures the process log (stderr).
type Log struct {
	Level  slog.Level
	Format string // "text" or "json"
}

// Load reads the YAML file at path, applies overrides (flags) in order and
// validates the result. Relative paths in the file are relative to the file's
// directory; paths set by overrides are taken as given.
func Load(path string, overrides ...func(*Config)) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(raw, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	for _, o := range overrides {
		o(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a YAML document strictly and converts it to a Config with
// defaults filled in (not yet validated: call Validate after overrides).
// dir resolves relative paths.
func Parse(raw []byte, dir string) (*Config, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	return f.toConfig(dir)
}

// Default returns a Config with every default set and nothing else (tests and
// dev mode start from it).
func Default() *Config {
	c, err := File{}.toConfig("")
	if err != nil {
		panic(err) // the zero File converts without error
	}
	return c
}

func (f File) toConfig(dir string) (*Config, error) {
	var problems []error
	bad := func(field, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) || dir == "" {
			return p
		}
		return filepath.Join(dir, p)
	}
	if f.HSM.PIN != nil {
		bad("hsm.pin", "a PIN is never read from the config file: name an environment variable with hsm.pin_env or a file with hsm.pin_file")
	}
	if f.Store.Etcd.Password != nil {
		bad("store.etcd.password", "a password is never read from the config file: use store.etcd.password_env or store.etcd.password_file")
	}
	c := &Config{
		Listen:  Listen{GRPC: or(f.Listen.GRPC, DefaultGRPCAddr), HTTP: or(f.Listen.HTTP, DefaultHTTPAddr), Metrics: f.Listen.Metrics, PKI: f.Listen.PKI},
		Metrics: Metrics{PerKeyLabels: f.Metrics.PerKeyLabels},
		TLS: TLS{
			CertFile:     abs(f.TLS.Cert),
			KeyFile:      abs(f.TLS.Key),
			ClientCAFile: abs(f.TLS.ClientCA),
		},
		HSM: HSM{
			Library:     abs(f.HSM.Library),
			TokenLabel:  f.HSM.TokenLabel,
			PINEnv:      f.HSM.PINEnv,
			PINFile:     abs(f.HSM.PINFile),
			KEKLabel:    or(f.HSM.KEKLabel, DefaultKEKLabel),
			MaxSessions: orInt(f.HSM.MaxSessions, DefaultMaxSessions),
			WaitTimeout: orDur(f.HSM.WaitTimeout, DefaultWaitTimeout),
		},
		Store: Store{
			Backend:       or(f.Store.Backend, BackendBbolt),
			Path:          abs(f.Store.Path),
			DegradedGrace: DefaultDegradedGrace,
			Etcd: Etcd{
				Endpoints:      f.Store.Etcd.Endpoints,
				Prefix:         or(f.Store.Etcd.Prefix, DefaultEtcdPrefix),
				DialTimeout:    orDur(f.Store.Etcd.DialTimeout, DefaultEtcdDialTimeout),
				RequestTimeout: orDur(f.Store.Etcd.RequestTimeout, DefaultEtcdRequestTimeout),
				Username:       f.Store.Etcd.Username,
				PasswordEnv:    f.Store.Etcd.PasswordEnv,
				PasswordFile:   abs(f.Store.Etcd.PasswordFile),
				CAFile:         abs(f.Store.Etcd.TLS.CA),
				CertFile:       abs(f.Store.Etcd.TLS.Cert),
				KeyFile:        abs(f.Store.Etcd.TLS.Key),
			},
		},
		Limits: Limits{
			MaxRecvBytes:       orInt(f.Limits.MaxRecvBytes, DefaultMaxRecvBytes),
			MaxSendBytes:       orInt(f.Limits.MaxSendBytes, DefaultMaxSendBytes),
			MaxItemsPerRequest: orInt(f.Limits.MaxItemsPerRequest, DefaultMaxItemsPerRequest),
			MaxItemBytes:       orInt(f.Limits.MaxItemBytes, DefaultMaxItemBytes),
			KeepaliveMinTime:   orDur(f.Limits.KeepaliveMinTime, DefaultKeepaliveMinTime),
			MaxConnectionIdle:  orDur(f.Limits.MaxConnectionIdle, DefaultMaxConnectionIdle),

			MaxConnections:             orInt(f.Limits.MaxConnections, DefaultMaxConnections),
			MaxConnectionsPerIP:        orInt(f.Limits.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP),
			HandshakeTimeout:           orDur(f.Limits.HandshakeTimeout, DefaultHandshakeTimeout),
			UnauthenticatedIdleTimeout: orDur(f.Limits.UnauthenticatedIdleTimeout, DefaultUnauthenticatedIdleTimeout),
			MaxStreams:                 orInt(f.Limits.MaxStreams, DefaultMaxStreams),
			MaxInflightBytes:           orInt(f.Limits.MaxInflightBytes, DefaultMaxInflightBytes),
			InflightWait:               orDur(f.Limits.InflightWait, DefaultInflightWait),
			RequestReadTimeout:         orDur(f.Limits.RequestReadTimeout, DefaultRequestReadTimeout),
		},
		Shutdown: Shutdown{Drain: f.Shutdown.Drain, Timeout: orDur(f.Shutdown.Timeout, DefaultShutdownTimeout)},
		Log:      Log{Format: or(f.Log.Format, "text")},
		PKI:      f.PKI.toPKI(),
		SSH:      f.SSH.toSSH(),
		ACME:     f.ACME.toACME(),
		Tracing:  f.Tracing.toTracing(),
		Replica:  f.Replica.toReplica(os.Getenv),
	}
	if c.Listen.HTTP == HTTPOff {
		c.Listen.HTTP = ""
	}
	if c.Listen.Metrics == HTTPOff {
		c.Listen.Metrics = ""
	}
	if c.Listen.PKI == HTTPOff {
		c.Listen.PKI = ""
	}
	c.Limits.MaxHTTPBodyBytes = orInt(f.Limits.MaxHTTPBodyBytes, c.Limits.MaxRecvBytes)
	switch n := orInt(f.Limits.MaxConcurrentStreams, DefaultMaxConcurrentStreams); {
	case n < 1 || n > 1<<20:
		bad("limits.max_concurrent_streams", "%d is out of range 1..%d", n, 1<<20)
	default:
		c.Limits.MaxConcurrentStreams = uint32(n)
	}
	switch f.TLS.MinVersion {
	case "", "1.2":
		c.TLS.MinVersion = 0x0303 // tls.VersionTLS12
	case "1.3":
		c.TLS.MinVersion = 0x0304 // tls.VersionTLS13
	default:
		bad("tls.min_version", "%q: want \"1.2\" or \"1.3\"", f.TLS.MinVersion)
	}
	if f.Store.DegradedGrace != nil {
		c.Store.DegradedGrace = *f.Store.DegradedGrace
	}
	switch strings.ToLower(f.Log.Level) {
	case "", "info":
		c.Log.Level = slog.LevelInfo
	case "debug":
		c.Log.Level = slog.LevelDebug
	case "warn", "warning":
		c.Log.Level = slog.LevelWarn
	case "error":
		c.Log.Level = slog.LevelError
	default:
		bad("log.level", "%q: want debug, info, warn or error", f.Log.Level)
	}
	var err error
	if c.Auth, err = f.Auth.toAuth(dir); err != nil {
		problems = append(problems, fmt.Errorf("auth: %w", err))
	}
	if c.Audit, err = f.Audit.toAudit(dir); err != nil {
		problems = append(problems, fmt.Errorf("audit: %w", err))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return c, nil
}

// Validate checks every field and returns all problems found, each naming
// its field as written in the YAML file.
func (c *Config) Validate() error {
	var problems []error
	bad := func(field, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	checkAddr := func(field, addr string) {
		if err := checkHostPort(addr); err != nil {
			bad(field, "%v", err)
		}
	}
	checkFile := func(field, path string, required bool) {
		if path == "" {
			if required {
				bad(field, "required")
			}
			return
		}
		if st, err := os.Stat(path); err != nil {
			bad(field, "%v", err)
		} else if st.IsDir() {
			bad(field, "%s is a directory", path)
		}
	}

	checkAddr("listen.grpc", c.Listen.GRPC)
	if c.Listen.HTTP != "" {
		checkAddr("listen.http", c.Listen.HTTP)
	}
	if c.Listen.Metrics != "" {
		checkAddr("listen.metrics", c.Listen.Metrics)
	}
	if c.Listen.PKI != "" {
		checkAddr("listen.pki", c.Listen.PKI)
	}

	checkFile("tls.cert", c.TLS.CertFile, true)
	checkFile("tls.key", c.TLS.KeyFile, true)
	checkFile("tls.client_ca", c.TLS.ClientCAFile, false)
	if c.TLS.MinVersion != 0x0303 && c.TLS.MinVersion != 0x0304 {
		bad("tls.min_version", "must be TLS 1.2 or 1.3")
	}

	checkFile("hsm.library", c.HSM.Library, true)
	if c.HSM.TokenLabel == "" {
		bad("hsm.token_label", "required")
	}
	if c.HSM.PINEnv == "" && c.HSM.PINFile == "" {
		bad("hsm", "pin_env or pin_file is required (the PIN is never in the config file)")
	}
	if c.HSM.PINEnv != "" && !validEnvName(c.HSM.PINEnv) {
		bad("hsm.pin_env", "%q is not an environment variable name (give the variable's name, not the PIN)", c.HSM.PINEnv)
	}
	checkFile("hsm.pin_file", c.HSM.PINFile, false)
	if c.HSM.KEKLabel == "" {
		bad("hsm.kek_label", "required")
	}
	if c.HSM.MaxSessions < 1 || c.HSM.MaxSessions > 1024 {
		bad("hsm.max_sessions", "%d is out of range 1..1024", c.HSM.MaxSessions)
	}
	if c.HSM.WaitTimeout <= 0 {
		bad("hsm.wait_timeout", "must be positive")
	}

	if c.Store.DegradedGrace < 0 {
		bad("store.degraded_grace", "must not be negative (0 turns degraded service off)")
	}
	switch c.Store.Backend {
	case BackendBbolt:
		if c.Store.Path == "" {
			bad("store.path", "required for the bbolt backend")
		} else if st, err := os.Stat(filepath.Dir(c.Store.Path)); err != nil || !st.IsDir() {
			bad("store.path", "directory of %s does not exist", c.Store.Path)
		}
	case BackendEtcd:
		c.validateEtcd(bad, checkFile)
	default:
		bad("store.backend", "%q: want %q or %q", c.Store.Backend, BackendBbolt, BackendEtcd)
	}
	c.validatePKI(bad)
	c.validateReplica(bad)
	c.validateSSH(bad)
	c.validateACME(bad)

	l := c.Limits
	if l.MaxRecvBytes < 1024 || l.MaxRecvBytes > 256<<20 {
		bad("limits.max_recv_bytes", "%d is out of range 1024..%d", l.MaxRecvBytes, 256<<20)
	}
	if l.MaxSendBytes < 1024 || l.MaxSendBytes > 256<<20 {
		bad("limits.max_send_bytes", "%d is out of range 1024..%d", l.MaxSendBytes, 256<<20)
	}
	if l.MaxConcurrentStreams < 1 {
		bad("limits.max_concurrent_streams", "must be at least 1")
	}
	if l.MaxItemsPerRequest < 1 || l.MaxItemsPerRequest > 1_000_000 {
		bad("limits.max_items_per_request", "%d is out of range 1..1000000", l.MaxItemsPerRequest)
	}
	if l.MaxItemBytes < 1 || l.MaxItemBytes > 256<<20 {
		bad("limits.max_item_bytes", "%d is out of range 1..%d", l.MaxItemBytes, 256<<20)
	}
	if l.KeepaliveMinTime < time.Second {
		bad("limits.keepalive_min_time", "%s is below 1s", l.KeepaliveMinTime)
	}
	if l.MaxConnectionIdle < time.Second {
		bad("limits.max_connection_idle", "%s is below 1s", l.MaxConnectionIdle)
	}
	c.validateConnLimits(bad)
	if c.Shutdown.Drain < 0 {
		bad("shutdown.drain", "must not be negative")
	}
	if c.Shutdown.Timeout <= 0 {
		bad("shutdown.timeout", "must be positive")
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	if err := c.Auth.Validate(); err != nil {
		problems = append(problems, fmt.Errorf("auth: %w", err))
	}
	if err := c.Audit.Validate(); err != nil {
		problems = append(problems, fmt.Errorf("audit: %w", err))
	}
	return errors.Join(problems...)
}

// validateConnLimits checks the connection, stream and memory bounds.
func (c *Config) validateConnLimits(bad func(string, string, ...any)) {
	l := c.Limits
	if l.MaxConnections < 1 || l.MaxConnections > 1<<20 {
		bad("limits.max_connections", "%d is out of range 1..%d", l.MaxConnections, 1<<20)
	}
	if l.MaxConnectionsPerIP < 1 || l.MaxConnectionsPerIP > l.MaxConnections {
		bad("limits.max_connections_per_ip", "%d is out of range 1..max_connections (%d)", l.MaxConnectionsPerIP, l.MaxConnections)
	}
	if l.HandshakeTimeout < 100*time.Millisecond || l.HandshakeTimeout > 5*time.Minute {
		bad("limits.handshake_timeout", "%s is out of range 100ms..5m", l.HandshakeTimeout)
	}
	if l.UnauthenticatedIdleTimeout < 100*time.Millisecond || l.UnauthenticatedIdleTimeout > l.MaxConnectionIdle {
		bad("limits.unauthenticated_idle_timeout", "%s is out of range 100ms..max_connection_idle (%s)", l.UnauthenticatedIdleTimeout, l.MaxConnectionIdle)
	}
	if l.MaxStreams < 1 || l.MaxStreams > 1<<20 {
		bad("limits.max_streams", "%d is out of range 1..%d", l.MaxStreams, 1<<20)
	}
	if l.MaxInflightBytes < l.MaxRecvBytes || l.MaxInflightBytes < l.MaxHTTPBodyBytes || int64(l.MaxInflightBytes) > 16<<30 {
		bad("limits.max_inflight_bytes", "%d is out of range max(max_recv_bytes, max_http_body_bytes)..%d", l.MaxInflightBytes, int64(16<<30))
	}
	if l.InflightWait < 0 || l.InflightWait > time.Minute {
		bad("limits.inflight_wait", "%s is out of range 0..1m", l.InflightWait)
	}
	if l.RequestReadTimeout < 100*time.Millisecond || l.RequestReadTimeout > 10*time.Minute {
		bad("limits.request_read_timeout", "%s is out of range 100ms..10m", l.RequestReadTimeout)
	}
	if l.MaxHTTPBodyBytes < 1024 || l.MaxHTTPBodyBytes > 256<<20 {
		bad("limits.max_http_body_bytes", "%d is out of range 1024..%d", l.MaxHTTPBodyBytes, 256<<20)
	}
}

func (c *Config) validateEtcd(bad func(string, string, ...any), checkFile func(string, string, bool)) {
	e := c.Store.Etcd
	if len(e.Endpoints) == 0 {
		bad("store.etcd.endpoints", "required for the etcd backend")
	}
	for i, ep := range e.Endpoints {
		hostport := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(fmt.Sprintf("store.etcd.endpoints[%d]", i), "%q: want host:port or http(s)://host:port", ep)
				continue
			}
			hostport = u.Host
		}
		if err := checkHostPort(hostport); err != nil {
			bad(fmt.Sprintf("store.etcd.endpoints[%d]", i), "%v", err)
		}
	}
	if !strings.HasPrefix(e.Prefix, "/") {
		bad("store.etcd.prefix", "%q must start with /", e.Prefix)
	}
	if e.DialTimeout <= 0 {
		bad("store.etcd.dial_timeout", "must be positive")
	}
	if e.RequestTimeout <= 0 {
		bad("store.etcd.request_timeout", "must be positive")
	}
	if e.PasswordEnv != "" && !validEnvName(e.PasswordEnv) {
		bad("store.etcd.password_env", "%q is not an environment variable name", e.PasswordEnv)
	}
	if (e.PasswordEnv != "" || e.PasswordFile != "") && e.Username == "" {
		bad("store.etcd.username", "required with a password")
	}
	checkFile("store.etcd.password_file", e.PasswordFile, false)
	checkFile("store.etcd.tls.ca", e.CAFile, false)
	checkFile("store.etcd.tls.cert", e.CertFile, e.KeyFile != "")
	checkFile("store.etcd.tls.key", e.KeyFile, e.CertFile != "")
}

func checkHostPort(addr string) error {
	if addr == "" {
		return errors.New("required")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port", addr)
	}
	return nil
}

// validEnvName reports whether s looks like an environment variable name.
func validEnvName(s string) bool {
	for i, r := range s {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

func orDur(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
