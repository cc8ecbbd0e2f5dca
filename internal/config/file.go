package config

import "time"

// File is the YAML document exactly as an operator writes it. It is decoded
// with unknown fields refused and is never used by the rest of the program:
// Load turns it into a Config (defaults filled, paths resolved, values checked).
//
// Adding a section: add a field here with its yaml tag, a field to Config, and
// the conversion and checks in toConfig/Validate (or, for auth and audit, in
// auth.go and audit.go, which their package's owners fill in).
type File struct {
	Listen   ListenFile   `yaml:"listen"`
	TLS      TLSFile      `yaml:"tls"`
	HSM      HSMFile      `yaml:"hsm"`
	Store    StoreFile    `yaml:"store"`
	Limits   LimitsFile   `yaml:"limits"`
	Shutdown ShutdownFile `yaml:"shutdown"`
	Log      LogFile      `yaml:"log"`
	Metrics  MetricsFile  `yaml:"metrics"`
	Auth     AuthFile     `yaml:"auth"`
	Audit    AuditFile    `yaml:"audit"`
	PKI      PKIFile      `yaml:"pki"`
	SSH      SSHFile      `yaml:"ssh"`
	ACME     ACMEFile     `yaml:"acme"`
	Tracing  TracingFile  `yaml:"tracing"` // tracing.go
	Replica  ReplicaFile  `yaml:"replica"` // replica.go
}

// ListenFile is the `listen` section: host:port of each listener.
type ListenFile struct {
	GRPC string `yaml:"grpc"` // default ":8443"
	HTTP string `yaml:"http"` // default ":8200"; "off" disables the HTTP listener
	// Metrics is the plain-HTTP listener serving /metrics (Prometheus), and
	// nothing else. Default: none ("off"); /metrics is never on the public
	// HTTPS listener. Keep it on loopback or a network only the scraper
	// reaches (e.g. "127.0.0.1:9464", or the pod IP behind a NetworkPolicy).
	Metrics string `yaml:"metrics"`
	// PKI is a plain-HTTP listener serving only the CA's public objects
	// under /pki/ (CA certificates, CRLs, OCSP): what pki.base_url names,
	// since relying parties fetch them over plain http (the objects are
	// signed; CA/Browser Forum rules allow nothing else in AIA and CRL
	// distribution points). Default: none ("off").
	PKI string `yaml:"pki"`
}

// MetricsFile is the `metrics` section.
type MetricsFile struct {
	// PerKeyLabels adds the transit key name as a label to the per-key
	// metrics (default false: key names are not published, and series do
	// not grow with the number of keys).
	PerKeyLabels bool `yaml:"per_key_labels"`
}

// TLSFile is the `tls` section. TLS is always on: cert and key are required.
type TLSFile struct {
	Cert string `yaml:"cert"` // PEM certificate chain, leaf first
	Key  string `yaml:"key"`  // PEM private key
	// ClientCA, when set, makes the server ask for client certificates and
	// verify those given against these CAs (mTLS identities for auth).
	// A client without a certificate may still connect (and use a token).
	ClientCA string `yaml:"client_ca"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// HSMFile is the `hsm` section. The PIN is only ever named by reference.
type HSMFile struct {
	Library    string `yaml:"library"`     // path of the PKCS#11 module
	TokenLabel string `yaml:"token_label"` // token to use
	PINEnv     string `yaml:"pin_env"`     // name of the environment variable holding the user PIN
	PINFile    string `yaml:"pin_file"`    // file holding the user PIN
	KEKLabel   string `yaml:"kek_label"`   // default "hsmgate-kek"
	// MaxSessions bounds the session pool (default 8).
	MaxSessions int `yaml:"max_sessions"`
	// WaitTimeout bounds the wait for a pooled session (default 10s).
	WaitTimeout time.Duration `yaml:"wait_timeout"`

	// PIN exists only so that a literal PIN is refused with a clear message
	// instead of an "unknown field" error. Any value is an error.
	PIN any `yaml:"pin"`
}

// StoreFile is the `store` section.
type StoreFile struct {
	Backend string   `yaml:"backend"` // "bbolt" (default) or "etcd"
	Path    string   `yaml:"path"`    // bbolt: the database file
	Etcd    EtcdFile `yaml:"etcd"`
	// DegradedGrace: while the store is out of reach, requests that need
	// only cached keys, tokens and policies are served (and audited as
	// degraded) for this long after the caches were last in sync; writes
	// fail with Unavailable. 0 turns it off (default 3m).
	DegradedGrace *time.Duration `yaml:"degraded_grace"`
}

// EtcdFile is `store.etcd`.
type EtcdFile struct {
	Endpoints   []string      `yaml:"endpoints"`    // host:port or https://host:port
	Prefix      string        `yaml:"prefix"`       // default "/hsmgate/"
	DialTimeout time.Duration `yaml:"dial_timeout"` // default 5s
	// RequestTimeout bounds every store call, whatever the caller's
	// deadline: a frozen member or a lost quorum costs a call at most
	// this (default 2s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	Username       string        `yaml:"username"`
	// The etcd password, by reference only (like the HSM PIN).
	PasswordEnv  string      `yaml:"password_env"`
	PasswordFile string      `yaml:"password_file"`
	TLS          EtcdTLSFile `yaml:"tls"`

	// Password exists only to refuse a literal password clearly.
	Password any `yaml:"password"`
}

// EtcdTLSFile is `store.etcd.tls`: CA to verify etcd, and a client certificate.
type EtcdTLSFile struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// LimitsFile is the `limits` section. Zero means the default.
type LimitsFile struct {
	MaxRecvBytes         int `yaml:"max_recv_bytes"`         // default 4 MiB
	MaxSendBytes         int `yaml:"max_send_bytes"`         // default 16 MiB
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"` // per connection; default 256
	MaxItemsPerRequest   int `yaml:"max_items_per_request"`  // items in one batch RPC; default 1000
	MaxItemBytes         int `yaml:"max_item_bytes"`         // one item's payload in a batch RPC; default 1 MiB
	// KeepaliveMinTime: clients pinging more often are disconnected (default 10s).
	KeepaliveMinTime time.Duration `yaml:"keepalive_min_time"`
	// MaxConnectionIdle closes gRPC connections without RPCs for this long,
	// once they have made an authenticated request (default 5m).
	MaxConnectionIdle time.Duration `yaml:"max_connection_idle"`

	// MaxConnections bounds open connections over all listeners together
	// (default 4096; keep it below the process's file descriptor limit).
	// Connections beyond it are closed as soon as they are accepted.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP bounds open connections from one client address
	// (IPv6: one /64) over all listeners (default 256). Behind a proxy or NAT
	// that hides client addresses, raise it to the proxy's share.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface of a new
	// connection, and the reading of an HTTPS request's headers (default 10s).
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// UnauthenticatedIdleTimeout closes a gRPC connection that has not
	// started an authenticated RPC this long after it was accepted, and is
	// the keep-alive idle timeout of HTTPS connections (default 30s).
	UnauthenticatedIdleTimeout time.Duration `yaml:"unauthenticated_idle_timeout"`
	// MaxStreams bounds concurrent gRPC streams (RPCs) over all connections
	// (default 4096); max_concurrent_streams bounds them per connection.
	MaxStreams int `yaml:"max_streams"`
	// MaxInflightBytes bounds the request bytes being read or handled at
	// once over all RPCs and HTTPS requests (default 32 MiB; at least
	// max_recv_bytes). A unary RPC takes max_recv_bytes of it while its
	// request is read, then the request's size until it ends, and waits (up
	// to its deadline) for room before reading; one client address (IPv6:
	// /64) reads at most a quarter (at least 2) of max_inflight_bytes/max_recv_bytes
	// requests at once. A stream message or an HTTPS
	// body that does not fit waits up to InflightWait, then is refused with
	// RESOURCE_EXHAUSTED (HTTP 429).
	MaxInflightBytes int           `yaml:"max_inflight_bytes"`
	InflightWait     time.Duration `yaml:"inflight_wait"` // default 1s
	// RequestReadTimeout cancels a unary RPC whose request has not arrived in
	// full this long after it got its share of max_inflight_bytes (default 30s).
	RequestReadTimeout time.Duration `yaml:"request_read_timeout"`
	// MaxHTTPBodyBytes bounds an HTTPS request body (default max_recv_bytes).
	MaxHTTPBodyBytes int `yaml:"max_http_body_bytes"`
}

// ShutdownFile is the `shutdown` section.
type ShutdownFile struct {
	// Drain: how long health reports NOT_SERVING before the listeners close,
	// so load balancers stop sending (default 0).
	Drain time.Duration `yaml:"drain"`
	// Timeout bounds the wait for in-flight RPCs; then they are cut (default 20s).
	Timeout time.Duration `yaml:"timeout"`
}

// LogFile is the `log` section.
type LogFile struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}
