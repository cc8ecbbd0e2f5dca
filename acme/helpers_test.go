package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	"github.com/hsmgate/hsmgate/pki"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// env is an ACME server over a real CA (SoftHSM token, bbolt store), on a
// loopback TLS listener, with its PKI endpoints (OCSP) beside it, and a
// loopback HTTP server that answers http-01 challenges (Validation points
// port 80 at it).
type env struct {
	srv    *Server
	pki    *pki.Service
	store  keystore.Store
	https  *httptest.Server
	roots  *x509.CertPool
	chall  *challServer
	dirURL string
	// audit is the env's audit log, at auditPath.
	audit     *audit.Log
	auditPath string
}

// challServer serves /.well-known/acme-challenge/<token> from a map.
type challServer struct {
	mu   sync.Mutex
	resp map[string]string
	srv  *httptest.Server
	port int
}

func (c *challServer) set(token, body string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resp[token] = body
}

func newChallServer(t testing.TB) *challServer {
	c := &challServer{resp: map[string]string{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		c.mu.Lock()
		body, found := c.resp[tok]
		c.mu.Unlock()
		if !ok || !found {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(c.srv.Close)
	u, _ := url.Parse(c.srv.URL)
	c.port, _ = strconv.Atoi(u.Port())
	return c
}

type envOpts struct {
	eab        bool
	httpPort   int // validation port for 80 (default: the env's challenge server)
	modify     func(*Config)
	noWorkers  bool
	roleModify func(*pb.Role)
	// stores, when set, are the keystore clients of the replicas: one
	// Server (and pki.Service) per store, requests spread round-robin.
	stores []keystore.Store
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	m := hsmtest.Module(t)
	var st keystore.Store
	if len(o.stores) > 0 {
		st = o.stores[0]
	} else {
		bst, err := bbolt.Open(filepath.Join(t.TempDir(), "store.db"), bbolt.Options{NoSync: true})
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		t.Cleanup(func() { bst.Close() })
		st = bst
	}
	kek, _, err := m.EnsureKEK(ctx, "kek")
	if err != nil {
		t.Fatalf("EnsureKEK: %v", err)
	}
	mux := http.NewServeMux()
	hs := httptest.NewUnstartedServer(mux)
	hs.StartTLS()
	t.Cleanup(hs.Close)
	p, err := pki.New(pki.Config{Store: st, Keys: m, BaseURL: hs.URL, LintExclude: pki.HTTPSURLLints})
	if err != nil {
		t.Fatalf("pki.New: %v", err)
	}
	p.RegisterHTTP(mux)
	if _, err := p.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{
		Name: "root", KeyType: pki.KeyECDSAP256, Subject: &pb.Subject{CommonName: "ACME Test Root"},
	}); err != nil {
		t.Fatalf("CreateRootIssuer: %v", err)
	}
	role := &pb.Role{
		Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, AllowBareDomains: true,
		AllowIpSans: true, AllowedIpRanges: []string{"127.0.0.0/8"}, ServerFlag: true,
		Ttl: durationpb.New(24 * time.Hour), MaxTtl: durationpb.New(72 * time.Hour),
		KeyType: pki.KeyECDSAP256, AllowedKeyTypes: []string{pki.KeyECDSAP384, pki.KeyRSA2048, pki.KeyEd25519},
	}
	if o.roleModify != nil {
		o.roleModify(role)
	}
	if _, err := p.CreateRole(ctx, &pb.CreateRoleRequest{Role: role}); err != nil {
		t.Fatalf("CreateRole: %v", err)
	}
	chall := newChallServer(t)
	port := o.httpPort
	if port == 0 {
		port = chall.port
	}
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	al, err := audit.Open(audit.Config{Path: auditPath}, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatalf("audit.Open: %v", err)
	}
	t.Cleanup(func() { al.Close() })
	cfg := Config{
		Store: st, CA: p, Wrapper: kek, BaseURL: hs.URL, Audit: al,
		Validation: ValidationTarget{Host: "127.0.0.1", HTTPPort: port, TLSPort: 1},
	}
	if o.modify != nil {
		o.modify(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	replicas := []*Server{s}
	for _, rst := range o.stores[min(1, len(o.stores)):] {
		rp, err := pki.New(pki.Config{Store: rst, Keys: m, BaseURL: hs.URL, LintExclude: pki.HTTPSURLLints})
		if err != nil {
			t.Fatal(err)
		}
		rcfg := cfg
		rcfg.Store, rcfg.CA = rst, rp
		r, err := New(rcfg)
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, r)
	}
	var rr atomic.Uint64
	handlers := make([]http.Handler, len(replicas))
	for i, r := range replicas {
		handlers[i] = r.Handler()
	}
	mux.Handle("/acme/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers[rr.Add(1)%uint64(len(handlers))].ServeHTTP(w, r)
	}))
	if !o.noWorkers {
		for _, r := range replicas {
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { r.Run(rctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
		}
	}
	if err := s.WriteDirectory(ctx, &Directory{Name: "main", Role: "web", EABRequired: o.eab}); err != nil {
		t.Fatalf("WriteDirectory: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(hs.Certificate())
	return &env{srv: s, pki: p, store: st, https: hs, roots: roots, chall: chall, dirURL: hs.URL + "/acme/main/directory",
		audit: al, auditPath: auditPath}
}

// client is an HTTP client that trusts the env's TLS listener.
func (e *env) client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}, Timeout: time.Minute}
}

// snapshot returns every keystore entry under acme/ except nonces, for
// "changed nothing" checks.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	es, err := e.store.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, x := range es {
		if strings.HasPrefix(x.Key, prefixNonces) {
			continue
		}
		out[x.Key] = string(x.Value)
	}
	return out
}
