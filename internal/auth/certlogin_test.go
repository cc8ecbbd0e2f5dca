package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// leafOpts describes a client certificate for certLeaf.
type leafOpts struct {
	cn     string
	dns    []string
	uri    string
	server bool // server-auth EKU only
}

// certLeaf issues a leaf from ca (ca nil: self-signed) and returns it parsed
// with its TLS form.
func certLeaf(t *testing.T, ca *testCA, o leafOpts) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.cn, Organization: []string{"test"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     o.dns,
	}
	if o.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if o.uri != "" {
		u, _ := url.Parse(o.uri)
		tmpl.URIs = []*url.URL{u}
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}
}

func caPEM(ca *testCA) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
}

func TestCertLogin(t *testing.T) {
	caA, caB := newTestCA(t, "client CA A"), newTestCA(t, "client CA B")
	untrusted := newTestCA(t, "client CA A") // same name, another key
	roots := x509.NewCertPool()
	roots.AddCert(caA.cert)
	roots.AddCert(caB.cert)
	env := newMethodsEnv(t, CertAuthConfig{ClientCAs: roots})
	ctx := context.Background()
	c := env.m.Cert
	for _, r := range []*hsmgatev1.CertRole{
		{Name: "a-clients", AllowedCommonNames: []string{"client-*"}, Policies: []string{"health-read"}},
		{Name: "b-only", AllowedCommonNames: []string{"*"}, CaPem: caPEM(caB), Policies: []string{"payments"}},
		{Name: "spiffe", AllowedUriSans: []string{"spiffe://test/ns/payments/*"}, Policies: []string{"payments"}},
		{Name: "web-dns", AllowedCommonNames: []string{"client-*"}, AllowedDnsSans: []string{"*.web.internal"}, Policies: []string{"payments"}},
	} {
		if _, err := c.WriteRole(ctx, r); err != nil {
			t.Fatalf("WriteRole(%s): %v", r.GetName(), err)
		}
	}
	good, goodTLS := certLeaf(t, caA, leafOpts{cn: "client-1"})
	fromB, _ := certLeaf(t, caB, leafOpts{cn: "anyone"})
	spiffe, _ := certLeaf(t, caA, leafOpts{cn: "x", uri: "spiffe://test/ns/payments/sa/api"})
	dnsGood, _ := certLeaf(t, caA, leafOpts{cn: "client-2", dns: []string{"api.web.internal"}})
	forged, _ := certLeaf(t, untrusted, leafOpts{cn: "client-1"})
	selfSigned, _ := certLeaf(t, nil, leafOpts{cn: "client-1"})
	serverOnly, _ := certLeaf(t, caA, leafOpts{cn: "client-3", server: true})
	other, _ := certLeaf(t, caA, leafOpts{cn: "someone"})

	oks := []struct {
		name, role   string
		chain        []*x509.Certificate
		wantName     string
		wantPolicies []string
	}{
		{"common name", "a-clients", []*x509.Certificate{good}, "client-1", []string{"health-read"}},
		{"role pinned to its CA", "b-only", []*x509.Certificate{fromB}, "anyone", []string{"payments"}},
		{"URI SAN names the identity", "spiffe", []*x509.Certificate{spiffe}, "spiffe://test/ns/payments/sa/api", []string{"payments"}},
		{"CN and DNS SAN both match", "web-dns", []*x509.Certificate{dnsGood}, "client-2", []string{"payments"}},
		{"no role: the first that matches", "", []*x509.Certificate{good}, "client-1", []string{"health-read"}},
	}
	for _, o := range oks {
		t.Run(o.name, func(t *testing.T) {
			l, err := c.Login(ctx, o.chain, o.role)
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			env.checkLoginToken(t, l, o.wantName, "cert", o.wantPolicies)
		})
	}
	bad := []struct {
		name, role string
		chain      []*x509.Certificate
		want       codes.Code
	}{
		{"untrusted CA with the same name", "a-clients", []*x509.Certificate{forged}, codes.Unauthenticated},
		{"untrusted CA handed in as intermediate", "a-clients", []*x509.Certificate{forged, untrusted.cert}, codes.Unauthenticated},
		{"self-signed", "a-clients", []*x509.Certificate{selfSigned}, codes.Unauthenticated},
		{"server-auth certificate", "a-clients", []*x509.Certificate{serverOnly}, codes.Unauthenticated},
		{"no certificate", "a-clients", nil, codes.Unauthenticated},
		{"common name not allowed", "a-clients", []*x509.Certificate{other}, codes.PermissionDenied},
		{"role pinned to another CA", "b-only", []*x509.Certificate{good}, codes.PermissionDenied},
		{"CN matches, DNS SAN missing", "web-dns", []*x509.Certificate{good}, codes.PermissionDenied},
		{"URI SAN missing", "spiffe", []*x509.Certificate{good}, codes.PermissionDenied},
		{"unknown role", "nope", []*x509.Certificate{good}, codes.PermissionDenied},
		{"no role matches", "", []*x509.Certificate{other}, codes.PermissionDenied},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			before := snapshot(t, env.store)
			l, err := c.Login(ctx, b.chain, b.role)
			if got := errs.Code(err); got != b.want || l != nil {
				t.Fatalf("got %v (%v), want %v", got, err, b.want)
			}
			if !sameSnapshot(before, snapshot(t, env.store)) {
				t.Errorf("a refused login changed the store")
			}
		})
	}
	t.Run("expired certificate", func(t *testing.T) {
		env.advance(2 * time.Hour)
		defer env.advance(-2 * time.Hour)
		if _, err := c.Login(ctx, []*x509.Certificate{good}, "a-clients"); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("got %v, want ErrUnauthenticated", err)
		}
	})
	t.Run("without client CAs nothing logs in", func(t *testing.T) {
		off, err := NewCertAuth(CertAuthConfig{}, env.store, env.a.Tokens)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := off.Login(ctx, []*x509.Certificate{good}, "a-clients"); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("got %v, want ErrUnauthenticated", err)
		}
	})
	t.Run("over mTLS", func(t *testing.T) {
		// What the Vault door does for POST /v1/auth/cert/login: hand the
		// chain the TLS layer verified to Login.
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var chain []*x509.Certificate
			if len(r.TLS.VerifiedChains) > 0 {
				chain = r.TLS.VerifiedChains[0]
			}
			l, err := c.Login(r.Context(), chain, r.URL.Query().Get("role"))
			if err != nil {
				http.Error(w, errs.Code(err).String(), http.StatusForbidden)
				return
			}
			io.WriteString(w, l.Token)
		}))
		srv.TLS = &tls.Config{ClientCAs: roots, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		login := func(cert *tls.Certificate) (int, string) {
			tr := srv.Client().Transport.(*http.Transport).Clone()
			if cert != nil {
				tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
			}
			resp, err := (&http.Client{Transport: tr}).Post(srv.URL+"/v1/auth/cert/login?role=a-clients", "application/json", nil)
			if err != nil {
				return 0, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		code, body := login(&goodTLS)
		if code != http.StatusOK {
			t.Fatalf("login with a good certificate: got %d %q", code, body)
		}
		id, err := env.a.Tokens.Authenticate(ctx, body)
		if err != nil || id.Name != "client-1" {
			t.Fatalf("token of the mTLS login: got %v, %v, want client-1", id, err)
		}
		if code, body := login(nil); code != http.StatusForbidden {
			t.Errorf("login without a certificate: got %d %q, want 403", code, body)
		}
	})
}

func TestCertRoleValidation(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	for _, r := range []*hsmgatev1.CertRole{
		nil,
		{Name: "no-constraint", Policies: []string{"p"}},
		{Name: "bad-ca", AllowedCommonNames: []string{"*"}, CaPem: "not pem"},
		{Name: "Bad", AllowedCommonNames: []string{"*"}},
		{Name: "empty-glob", AllowedDnsSans: []string{""}},
	} {
		if _, err := env.m.Cert.WriteRole(context.Background(), r); !errors.Is(err, ErrInvalid) {
			t.Errorf("WriteRole(%v): got %v, want ErrInvalid", r, err)
		}
	}
}
