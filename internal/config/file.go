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
	Auth     AuthFile     `yaml:"auth"`
	Audit    AuditFile    `yaml:"audit"`
	PKI      PKIFile      `yaml:"pki"`
	Metrics  MetricsFile  `yaml:"metrics"`
}

// ListenFile is the `listen` section: host:port of each listener.
type ListenFile struct {
	GRPC string `yaml:"grpc"` // default ":8443"
	HTTP string `yaml:"http"` // default ":8200"; "off" disables the HTTP listener
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
	// MaxConnectionIdle closes connections idle this long (default 30m).
	MaxConnectionIdle time.Duration `yaml:"max_connection_idle"`
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
