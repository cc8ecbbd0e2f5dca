package vaultdoor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/internal/limits"
)

// Defaults of Config fields left zero.
const (
	DefaultMaxBodyBytes  = 1 << 20
	DefaultMaxBatchItems = limits.MaxItemsPerRequest
	DefaultTransitMount  = "transit"
	DefaultSSHMount      = "ssh"
	DefaultPKIMount      = "pki"
)

// Config configures a Door.
type Config struct {
	// Registry finds the gRPC services and their interceptors (required;
	// *server.Server).
	Registry Registry
	// Logins serves auth/approle, auth/kubernetes and auth/cert login; nil
	// answers 404 for them (the method is not enabled).
	Logins Logins
	// Auditor, when set, receives one line per login attempt (logins run
	// before any identity exists, so the RPC interceptor cannot audit them).
	Auditor Auditor
	// Health reports whether the HSM and the store answer (sys/health);
	// nil: always healthy.
	Health func(ctx context.Context) error
	// PKIMounts maps a mount path to the issuer its ca, crl and
	// root/sign-intermediate endpoints use ("" or "default": the default
	// issuer). Nil: {"pki": ""}. Sign and issue use the role's issuer.
	PKIMounts map[string]string
	// TransitMount and SSHMount (defaults "transit" and "ssh").
	TransitMount string
	SSHMount     string
	// SSHCA names the CA whose key GET ssh/public_key returns ("": every
	// published user CA key, one per line).
	SSHCA string
	// MaxBodyBytes bounds a request body (default 1 MiB).
	MaxBodyBytes int64
	// MaxBatchItems bounds batch_input (default 1000; the transit
	// service's own limit applies too).
	MaxBatchItems int
	// Version is reported by sys/health.
	Version string
	Logger  *slog.Logger
	Now     func() time.Time
}

// Door serves the Vault-compatible HTTP API under /v1/.
type Door struct {
	cfg     Config
	log     *slog.Logger
	logins  atomic.Pointer[Logins]
	auditor atomic.Pointer[Auditor]
}

// SetLogins installs the auth methods behind auth/<method>/login (they may
// be built after the door, with the auth wiring).
func (d *Door) SetLogins(l Logins) { d.logins.Store(&l) }

// SetAuditor installs the audit log that login lines go to.
func (d *Door) SetAuditor(a Auditor) { d.auditor.Store(&a) }

func (d *Door) loginsOf() Logins {
	if p := d.logins.Load(); p != nil {
		return *p
	}
	return nil
}

func (d *Door) auditorOf() Auditor {
	if p := d.auditor.Load(); p != nil {
		return *p
	}
	return nil
}

// New checks cfg and returns the door.
func New(cfg Config) (*Door, error) {
	if cfg.Registry == nil {
		return nil, errors.New("vaultdoor: a registry is required")
	}
	if cfg.PKIMounts == nil {
		cfg.PKIMounts = map[string]string{DefaultPKIMount: ""}
	}
	if cfg.TransitMount == "" {
		cfg.TransitMount = DefaultTransitMount
	}
	if cfg.SSHMount == "" {
		cfg.SSHMount = DefaultSSHMount
	}
	mounts := map[string]bool{"sys": true, "auth": true, cfg.TransitMount: true}
	if mounts[cfg.SSHMount] {
		return nil, fmt.Errorf("vaultdoor: mount %q used twice", cfg.SSHMount)
	}
	mounts[cfg.SSHMount] = true
	for m := range cfg.PKIMounts {
		if m == "" || strings.Contains(m, "/") || mounts[m] {
			return nil, fmt.Errorf("vaultdoor: bad or duplicate PKI mount %q", m)
		}
		mounts[m] = true
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxBatchItems <= 0 {
		cfg.MaxBatchItems = DefaultMaxBatchItems
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Door{cfg: cfg, log: cfg.Logger}
	if cfg.Logins != nil {
		d.SetLogins(cfg.Logins)
	}
	if cfg.Auditor != nil {
		d.SetAuditor(cfg.Auditor)
	}
	return d, nil
}

// Patterns are the http.ServeMux patterns to register the door under: all of
// /v1/, and, beside the SSH engine's own GET /v1/ssh/ endpoints (more
// specific than /v1/), the SSH CA's public key and GET on ssh/sign/ (405 in
// Vault's shape).
func (d *Door) Patterns() []string {
	ssh := "GET /v1/" + d.cfg.SSHMount + "/"
	return []string{"/v1/", ssh + "public_key", ssh + "sign/"}
}

// handler serves one matched endpoint.
type handler func(w http.ResponseWriter, c *call, f *fields, args []string) error

// endpoint is a matched path: its handler per method, and whether it needs
// no token.
type endpoint struct {
	methods map[string]handler // "GET", "POST" (PUT too), "DELETE", "LIST"
	public  bool
	args    []string
}

func (d *Door) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{r: r, reqID: newRequestID()}
	defer func() {
		if p := recover(); p != nil {
			d.log.Error("vaultdoor: panic", "request_id", c.reqID, "path", r.URL.Path, "panic", fmt.Sprint(p))
			writeErrors(w, http.StatusInternalServerError, "internal error")
		}
	}()
	w.Header().Set("Cache-Control", "no-store")
	ep := d.route(r.URL.Path)
	if ep == nil {
		writeErrors(w, http.StatusNotFound, "unsupported path")
		return
	}
	method := r.Method
	if method == http.MethodPut {
		method = http.MethodPost
	}
	if method == http.MethodGet && r.URL.Query().Get("list") == "true" {
		method = "LIST"
	}
	if method == http.MethodHead {
		method = http.MethodGet
	}
	h := ep.methods[method]
	if h == nil {
		writeErrors(w, http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	if r.Header.Get("X-Vault-Wrap-TTL") != "" {
		// Answering unwrapped to a client that asked for a wrapping token
		// would hand the secret to whoever holds the response.
		writeErrors(w, http.StatusBadRequest, "response wrapping is not supported")
		return
	}
	if !ep.public {
		tok, err := tokenOf(r)
		if err != nil {
			d.writeErr(w, c, err)
			return
		}
		c.token = tok
	}
	f := &fields{m: map[string]json.RawMessage{}, used: map[string]bool{}}
	if method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, d.cfg.MaxBodyBytes)
		var err error
		if f, err = readFields(r, d.cfg.MaxBodyBytes); err != nil {
			d.writeErr(w, c, err)
			return
		}
	}
	if err := h(w, c, f, ep.args); err != nil {
		d.writeErr(w, c, err)
	}
}

// tokenOf reads X-Vault-Token, else Authorization: Bearer. No token is not
// an error here: the interceptor answers it as any unauthenticated call.
func tokenOf(r *http.Request) (string, error) {
	if v := r.Header.Values("X-Vault-Token"); len(v) > 0 {
		if len(v) > 1 {
			return "", errs.New(errs.Unauthenticated, "vaultdoor: several X-Vault-Token headers")
		}
		return strings.TrimSpace(v[0]), nil
	}
	if v := r.Header.Values("Authorization"); len(v) > 0 {
		if len(v) > 1 {
			return "", errs.New(errs.Unauthenticated, "vaultdoor: several Authorization headers")
		}
		const p = "bearer "
		h := v[0]
		if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
			return "", errs.New(errs.Unauthenticated, "vaultdoor: authorization is not a bearer credential")
		}
		return strings.TrimSpace(h[len(p):]), nil
	}
	return "", nil
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// invalidf is a caller's mistake (400).
func invalidf(format string, a ...any) error {
	return errs.New(errs.InvalidArgument, "vaultdoor: "+fmt.Sprintf(format, a...))
}

// statusOf maps an error to Vault's HTTP status and message through the
// one error map (errs.VaultHTTPStatus: 400 bad input, 403 denied or
// unauthenticated, 404 unknown, 412 a lost race to retry, 429 rate limited,
// 503 unavailable, 500 anything else, "internal error"); a refusal reads
// "permission denied: ..." as Vault's do.
func statusOf(err error) (int, string) {
	code, msg := errs.VaultHTTPStatus(err)
	if code == http.StatusForbidden {
		msg = "permission denied: " + msg
	}
	return code, msg
}

func (d *Door) writeErr(w http.ResponseWriter, c *call, err error) {
	code, msg := statusOf(err)
	if code == http.StatusInternalServerError {
		d.log.Error("vaultdoor: internal error", "request_id", c.reqID, "path", c.r.URL.Path, "error", err)
	}
	writeErrors(w, code, msg)
}

func writeErrors(w http.ResponseWriter, code int, msgs ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string][]string{"errors": msgs})
}

// response is Vault's envelope.
type response struct {
	RequestID     string    `json:"request_id"`
	LeaseID       string    `json:"lease_id"`
	Renewable     bool      `json:"renewable"`
	LeaseDuration int       `json:"lease_duration"`
	Data          any       `json:"data"`
	WrapInfo      any       `json:"wrap_info"`
	Warnings      []string  `json:"warnings"`
	Auth          *authInfo `json:"auth"`
}

// authInfo is the envelope's auth block (logins and renew-self).
type authInfo struct {
	ClientToken   string            `json:"client_token"`
	Accessor      string            `json:"accessor"`
	Policies      []string          `json:"policies"`
	TokenPolicies []string          `json:"token_policies"`
	Metadata      map[string]string `json:"metadata"`
	LeaseDuration int64             `json:"lease_duration"`
	Renewable     bool              `json:"renewable"`
	EntityID      string            `json:"entity_id"`
	TokenType     string            `json:"token_type"`
	Orphan        bool              `json:"orphan"`
}

func writeData(w http.ResponseWriter, c *call, code int, data any) {
	writeJSON(w, code, &response{RequestID: c.reqID, Data: data})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
