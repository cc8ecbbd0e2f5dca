package vaultdoor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	"github.com/hsmgate/hsmgate/pki"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca"
	"github.com/hsmgate/hsmgate/transit"
	"github.com/hsmgate/hsmgate/transit/transithsm"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// env is a whole hsmgate server as `hsmgate server` wires it: SoftHSM,
// bbolt, the three engines and AuthService registered on a real
// internal/server.Server, the auth interceptor with a real audit log, and
// the door on the HTTPS listener.
type env struct {
	t         *testing.T
	url       string // https://127.0.0.1:PORT
	caFile    string
	caKeyFile string
	caPool    *x509.CertPool
	root      string // a root token
	auth      *auth.Auth
	store     keystore.Store
	hsm       *hsm.Module
	pki       *pki.Service
	ssh       pb.SSHCAServiceServer
	auditPath string
	logins    *testLogins
	rootCtx   context.Context // carries a root identity, for direct setup calls
}

// testLogins mints real hsmgate tokens through internal/auth's token
// service for fixed test credentials (the real methods live in internal/auth).
type testLogins struct {
	tokens   *auth.Tokens
	roleID   string
	secretID string
	policies []string
	ttl      time.Duration
	// certRoots are the cert method's trust anchors (nil: none).
	certRoots *x509.CertPool
}

func (l *testLogins) mint(ctx context.Context, name string) (*vaultdoor.Login, error) {
	creator := &auth.Identity{Name: "login", Kind: auth.KindRoot}
	tok, info, err := l.tokens.Create(ctx, creator, auth.TokenRequest{
		DisplayName: name, Policies: l.policies, TTL: l.ttl, Renewable: true, Orphan: true,
		Metadata: map[string]string{"role_name": name},
	})
	if err != nil {
		return nil, err
	}
	return &vaultdoor.Login{Token: tok, Accessor: info.GetAccessor(), Policies: l.policies, TTL: l.ttl,
		Renewable: true, Metadata: map[string]string{"role_name": name}, Name: name}, nil
}

func (l *testLogins) AppRole(ctx context.Context, roleID, secretID string, _ netip.Addr) (*vaultdoor.Login, error) {
	ok := subtle.ConstantTimeCompare([]byte(roleID), []byte(l.roleID)) & subtle.ConstantTimeCompare([]byte(secretID), []byte(l.secretID))
	if ok != 1 {
		return nil, errs.New(errs.PermissionDenied, "test approle: invalid role or secret ID")
	}
	return l.mint(ctx, "approle-cert-manager")
}

// Kubernetes accepts one fixed role and JWT (the real method verifies the
// JWT against the cluster's keys; here only the door's plumbing is tested).
func (l *testLogins) Kubernetes(ctx context.Context, role, jwt string) (*vaultdoor.Login, error) {
	if role != "cert-manager" || subtle.ConstantTimeCompare([]byte(jwt), []byte("test.service-account.jwt")) != 1 {
		return nil, errs.New(errs.PermissionDenied, "test kubernetes: invalid role or JWT")
	}
	return l.mint(ctx, "kubernetes-cert-manager")
}

// Cert accepts a chain whose leaf the trust anchors verify for client auth.
func (l *testLogins) Cert(ctx context.Context, chain []*x509.Certificate, name string) (*vaultdoor.Login, error) {
	if l.certRoots == nil || len(chain) == 0 {
		return nil, errs.New(errs.PermissionDenied, "test cert: no trust anchors")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: l.certRoots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, errs.New(errs.PermissionDenied, "test cert: untrusted certificate")
	}
	return l.mint(ctx, "cert-"+chain[0].Subject.CommonName)
}

// newEnv starts the server; opts change the auth config (rate limits).
func newEnv(t *testing.T, opts ...func(*auth.Config)) *env {
	t.Helper()
	var acfg auth.Config
	for _, o := range opts {
		o(&acfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	m := hsmtest.Module(t)
	kek, _, err := m.EnsureKEK(ctx, "kek")
	if err != nil {
		t.Fatal(err)
	}
	st, err := bbolt.Open(filepath.Join(dir, "store.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	te, err := transit.New(transit.Config{Store: st, KEK: kek, HSM: transithsm.New(m), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pki.New(pki.Config{Store: st, Keys: m, BaseURL: "http://pki.test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	se, err := sshca.New(ctx, sshca.Config{Store: st, Keys: m, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(ctx, acfg, st)
	if err != nil {
		t.Fatal(err)
	}
	root, err := auth.GenerateToken(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Tokens.EnsureRoot(ctx, root); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	auditPath := filepath.Join(dir, "audit.log")
	al, err := audit.Open(audit.Config{Path: auditPath}, key)
	if err != nil {
		t.Fatal(err)
	}
	files, _, err := devtls.Ensure(filepath.Join(dir, "tls"), devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	srv, err := server.New(server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", CertFile: files.Cert, KeyFile: files.Key, ClientCAFile: files.CACert, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	pb.RegisterTransitServiceServer(srv, transit.NewService(te, transit.ServiceConfig{}))
	pb.RegisterPKIServiceServer(srv, ps)
	ssvc := sshca.NewService(se)
	pb.RegisterSSHCAServiceServer(srv, ssvc)
	pb.RegisterAuthServiceServer(srv, a.Service)
	srv.HandleHTTP("GET /v1/ssh/", se.HTTPHandler())
	table, err := auth.Merge(auth.PublicTable(), auth.AuthTable(), transit.AuthTable(), pki.AuthTable(), sshca.AuthTable(), vaultdoor.AuthTable())
	if err != nil {
		t.Fatal(err)
	}
	logins := &testLogins{tokens: a.Tokens, roleID: "role-id-1", secretID: "secret-id-1", policies: []string{"cert-manager"}, ttl: time.Hour, certRoots: pool}
	door, err := vaultdoor.New(vaultdoor.Config{
		Registry: srv, Logins: logins, Auditor: al, Logger: log, Version: "test",
		Health: func(ctx context.Context) error {
			if err := m.Ping(ctx); err != nil {
				return err
			}
			return st.Ping(ctx)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range door.Patterns() {
		srv.HandleHTTP(p, door)
	}
	ic, err := a.Interceptor(table, al)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Use(ic.Unary(), ic.Stream()); err != nil {
		t.Fatal(err)
	}
	if err := auth.CheckTableCovers(srv, table); err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = se.Close()
		_ = te.Close()
		_ = al.Close()
		_ = st.Close()
	})
	rootCtx := auth.WithIdentity(ctx, &auth.Identity{Name: "test-root", Kind: auth.KindRoot})
	e := &env{t: t, url: "https://" + srv.HTTPAddr(), caFile: files.CACert, caKeyFile: files.CAKey, caPool: pool, root: root, auth: a,
		store: st, hsm: m, pki: ps, ssh: ssvc, auditPath: auditPath, logins: logins, rootCtx: rootCtx}
	if _, err := ps.CreateRootIssuer(rootCtx, &pb.CreateRootIssuerRequest{Name: "root", KeyType: "ecdsa-p256",
		Subject: &pb.Subject{CommonName: "hsmgate test root"}, Ttl: durationpb.New(10 * 365 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.CreateIntermediateIssuer(rootCtx, &pb.CreateIntermediateIssuerRequest{Name: "inter", Parent: "root",
		KeyType: "ecdsa-p256", Subject: &pb.Subject{CommonName: "hsmgate test intermediate"}, MakeDefault: true,
		MaxPathLen: -1}); err != nil {
		t.Fatal(err)
	}
	return e
}

// policy writes a policy of one allow rule per resource glob.
func (e *env) policy(name string, rules map[string][]string) {
	e.t.Helper()
	p := &pb.Policy{Name: name}
	for res, caps := range rules {
		p.Rules = append(p.Rules, &pb.PolicyRule{Resource: res, Capabilities: caps})
	}
	if _, err := e.auth.Policies.Put(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
}

// token mints a token with policies.
func (e *env) token(policies ...string) string {
	e.t.Helper()
	tok, _, err := e.auth.Tokens.Create(context.Background(), &auth.Identity{Name: "test", Kind: auth.KindRoot},
		auth.TokenRequest{DisplayName: "test", Policies: policies, TTL: time.Hour, Renewable: true, Orphan: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.caPool}}, Timeout: 60 * time.Second}
}

// do sends a raw request and returns the status and body.
func (e *env) do(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	req.Header.Set("X-Vault-Request", "true")
	resp, err := e.httpClient().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// auditLines returns the audit log's lines.
func (e *env) auditLines() []map[string]any {
	e.t.Helper()
	b, err := os.ReadFile(e.auditPath)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			e.t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// sshService is the registered SSH CA service, for setup calls.
func (e *env) sshService() pb.SSHCAServiceServer { return e.ssh }
