package vaultdoor_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// vaultClient is vault/api's client for the env, with the dev CA trusted
// as cert-manager's caBundle / VAULT_CACERT does it.
func (e *env) vaultClient(token string) *vault.Client {
	e.t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = e.url
	cfg.MaxRetries = 0
	if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: e.caFile}); err != nil {
		e.t.Fatal(err)
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

func csrPEM(t *testing.T, cn string, dns []string, ips []net.IP) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips,
	}, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// cmSign replays cert-manager's Vault issuer Sign: the parameters as
// strings, exactly as pkg/internal/vault builds them, a RawRequest POST to
// /v1/<path>, the answer decoded as a Vault secret.
func cmSign(t *testing.T, c *vault.Client, issuerPath string, csr []byte, ttl string) (map[string]any, error) {
	t.Helper()
	blk, _ := pem.Decode(csr)
	req, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ips := make([]string, len(req.IPAddresses))
	for i, ip := range req.IPAddresses {
		ips[i] = ip.String()
	}
	params := map[string]string{
		"common_name":          req.Subject.CommonName,
		"alt_names":            strings.Join(req.DNSNames, ","),
		"ip_sans":              strings.Join(ips, ","),
		"uri_sans":             "",
		"ttl":                  ttl,
		"csr":                  string(csr),
		"exclude_cn_from_sans": "true",
	}
	r := c.NewRequest("POST", path.Join("/v1", issuerPath))
	r.Headers = http.Header{}
	r.Headers.Add("X-VAULT-NAMESPACE", "team-a") // accepted and ignored
	if err := r.SetJSONBody(params); err != nil {
		t.Fatal(err)
	}
	resp, err := c.RawRequest(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var secret vault.Secret
	if err := resp.DecodeJSON(&secret); err != nil {
		t.Fatal(err)
	}
	return secret.Data, nil
}

// cmChain joins the answer as cert-manager does (ca_chain, issuing_ca,
// certificate, joined by newlines) and orders it as
// ParseSingleCertificateChainPEM does: leaf first, each certificate signed by
// the next, ending at a self-signed root. It fails the test on a gap.
func cmChain(t *testing.T, data map[string]any) []*x509.Certificate {
	t.Helper()
	var parts []string
	if l, ok := data["ca_chain"].([]any); ok {
		for _, s := range l {
			parts = append(parts, s.(string))
		}
	}
	parts = append(parts, data["issuing_ca"].(string), data["certificate"].(string))
	rest := []byte(strings.Join(parts, "\n"))
	seen := map[string]bool{}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("chain: %v", err)
		}
		if !seen[string(c.Raw)] {
			seen[string(c.Raw)] = true
			certs = append(certs, c)
		}
	}
	// The leaf is the certificate that signed no other.
	var leaf *x509.Certificate
	for _, c := range certs {
		signsOther := false
		for _, o := range certs {
			if o != c && o.CheckSignatureFrom(c) == nil {
				signsOther = true
			}
		}
		if !signsOther {
			if leaf != nil {
				t.Fatalf("chain has two leaves: %q and %q", leaf.Subject, c.Subject)
			}
			leaf = c
		}
	}
	if leaf == nil {
		t.Fatal("chain has no leaf")
	}
	chain := []*x509.Certificate{leaf}
	for cur := leaf; !(cur.CheckSignatureFrom(cur) == nil && string(cur.RawIssuer) == string(cur.RawSubject)); {
		var next *x509.Certificate
		for _, c := range certs {
			if c != cur && cur.CheckSignatureFrom(c) == nil {
				next = c
			}
		}
		if next == nil {
			t.Fatalf("chain: nothing signed %q", cur.Subject)
		}
		chain = append(chain, next)
		cur = next
		if len(chain) > len(certs) {
			t.Fatal("chain loops")
		}
	}
	if len(chain) != len(certs) {
		t.Fatalf("chain: got %d linked certificates of %d", len(chain), len(certs))
	}
	return chain
}

func TestCertManagerVaultIssuer(t *testing.T) {
	e := newEnv(t)
	if _, err := e.pki.CreateRole(e.rootCtx, &pb.CreateRoleRequest{Role: &pb.Role{
		Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, AllowIpSans: true,
		ServerFlag: true, LintSources: []string{"RFC5280"}, MaxTtl: durationpb.New(2400 * time.Hour), Ttl: durationpb.New(24 * time.Hour),
	}}); err != nil {
		t.Fatal(err)
	}
	e.policy("cert-manager", map[string][]string{
		"pki/roles/web":         {"issue"},
		"pki/issuers/default":   {"update"},
		"auth/tokens/self":      {"read"},
		"transit/keys/not-this": {"encrypt"},
	})

	// cert-manager: AppRole login with a fresh client (no token yet).
	c := e.vaultClient("")
	c.ClearToken()
	lr := c.NewRequest("POST", "/v1/auth/approle/login")
	if err := lr.SetJSONBody(map[string]string{"role_id": "role-id-1", "secret_id": "secret-id-1"}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.RawRequest(lr)
	if err != nil {
		t.Fatalf("approle login: %v", err)
	}
	var login vault.Secret
	if err := resp.DecodeJSON(&login); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tok, err := login.TokenID()
	if err != nil || !strings.HasPrefix(tok, "hgs.") {
		t.Fatalf("login token: got %q, %v; want an hsmgate token", tok, err)
	}
	if got := login.Auth.Policies; !slices.Equal(got, []string{"cert-manager"}) {
		t.Errorf("login policies: got %v, want [cert-manager]", got)
	}
	if login.Auth.LeaseDuration != 3600 || !login.Auth.Renewable {
		t.Errorf("login lease: got %d renewable %v, want 3600 true", login.Auth.LeaseDuration, login.Auth.Renewable)
	}
	c.SetToken(tok)

	t.Run("wrong secret id refused", func(t *testing.T) {
		bad := e.vaultClient("")
		r := bad.NewRequest("POST", "/v1/auth/approle/login")
		_ = r.SetJSONBody(map[string]string{"role_id": "role-id-1", "secret_id": "nope"})
		_, err := bad.RawRequest(r)
		var re *vault.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
			t.Fatalf("got %v, want 403", err)
		}
	})

	t.Run("sys/health", func(t *testing.T) {
		r := c.NewRequest("GET", "/v1/sys/health")
		resp, err := c.RawRequest(r)
		if err != nil {
			t.Fatalf("sys/health: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("sys/health: got %d, want 200", resp.StatusCode)
		}
		h, err := c.Sys().Health()
		if err != nil || !h.Initialized || h.Sealed || h.Standby {
			t.Fatalf("Sys().Health(): %+v %v", h, err)
		}
	})

	for _, ttl := range []string{(2160 * time.Hour).String(), "2160h"} {
		t.Run("sign ttl "+ttl, func(t *testing.T) {
			dns := []string{"web.example.com", "api.example.com"}
			ips := []net.IP{net.ParseIP("10.1.2.3").To4()}
			before := time.Now().UTC().Truncate(time.Second)
			data, err := cmSign(t, c, "pki/sign/web", csrPEM(t, "web.example.com", dns, ips), ttl)
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			after := time.Now().UTC()
			chain := cmChain(t, data)
			if len(chain) != 3 {
				t.Fatalf("chain: got %d certificates, want leaf, intermediate, root", len(chain))
			}
			leaf := chain[0]
			if got := leaf.DNSNames; !slices.Equal(got, dns) {
				t.Errorf("DNS SANs: got %v, want %v", got, dns)
			}
			if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(ips[0]) {
				t.Errorf("IP SANs: got %v, want %v", leaf.IPAddresses, ips)
			}
			if len(leaf.URIs) != 0 || len(leaf.EmailAddresses) != 0 {
				t.Errorf("extra SANs: %v %v", leaf.URIs, leaf.EmailAddresses)
			}
			lo, hi := before.Add(2160*time.Hour), after.Add(2160*time.Hour)
			if leaf.NotAfter.Before(lo) || leaf.NotAfter.After(hi) {
				t.Errorf("NotAfter: got %s, want issue time + 2160h in [%s, %s]", leaf.NotAfter, lo, hi)
			}
			if exp, _ := data["expiration"].(json.Number).Int64(); exp != leaf.NotAfter.Unix() {
				t.Errorf("expiration: got %d, want %d", exp, leaf.NotAfter.Unix())
			}
			if got, want := data["serial_number"], colonSerial(leaf); got != want {
				t.Errorf("serial_number: got %v, want %v", got, want)
			}
			pool := x509.NewCertPool()
			pool.AddCert(chain[2])
			inter := x509.NewCertPool()
			inter.AddCert(chain[1])
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: "api.example.com"}); err != nil {
				t.Errorf("verify: %v", err)
			}
		})
	}

	t.Run("isCA through root/sign-intermediate", func(t *testing.T) {
		data, err := cmSign(t, c, "pki/root/sign-intermediate", csrPEM(t, "team-a sub CA", nil, nil), (720 * time.Hour).String())
		if err != nil {
			t.Fatalf("sign-intermediate: %v", err)
		}
		chain := cmChain(t, data)
		ca := chain[0]
		if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Fatalf("got IsCA %v KU %v, want a CA certificate", ca.IsCA, ca.KeyUsage)
		}
		if ca.Subject.CommonName != "team-a sub CA" {
			t.Errorf("CN: got %q", ca.Subject.CommonName)
		}
		if len(chain) != 3 {
			t.Errorf("chain: got %d, want 3", len(chain))
		}
		if ca.MaxPathLen > 0 || ca.MaxPathLenZero {
			t.Errorf("path length: got %d (zero %v), want unlimited", ca.MaxPathLen, ca.MaxPathLenZero)
		}
		for _, mpl := range []any{0, "0"} {
			code, body := e.do("POST", "/v1/pki/root/sign-intermediate", tok, map[string]any{
				"csr": string(csrPEM(t, "leaf-only CA", nil, nil)), "max_path_length": mpl, "format": "der",
			})
			var r struct{ Data struct{ Certificate string } }
			_ = json.Unmarshal(body, &r)
			der, _ := base64.StdEncoding.DecodeString(r.Data.Certificate)
			x, err := x509.ParseCertificate(der)
			if code != 200 || err != nil || !x.IsCA || x.MaxPathLen != 0 || !x.MaxPathLenZero {
				t.Errorf("max_path_length %v: %d %v %.200s", mpl, code, err, body)
			}
		}
	})

	t.Run("refused name answers 400 with errors", func(t *testing.T) {
		_, err := cmSign(t, c, "pki/sign/web", csrPEM(t, "evil.org", []string{"evil.org"}, nil), "2160h")
		var re *vault.ResponseError
		if !errors.As(err, &re) {
			t.Fatalf("got %v, want a Vault response error", err)
		}
		if re.StatusCode != http.StatusBadRequest || len(re.Errors) != 1 || !strings.Contains(re.Errors[0], "evil.org") {
			t.Fatalf("got %d %q, want 400 with one error naming evil.org", re.StatusCode, re.Errors)
		}
	})

	t.Run("ttl over the role's max refused", func(t *testing.T) {
		_, err := cmSign(t, c, "pki/sign/web", csrPEM(t, "web.example.com", []string{"web.example.com"}, nil), "9000h")
		var re *vault.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
			t.Fatalf("got %v, want 400", err)
		}
	})

	t.Run("token lookup, renew, revoke", func(t *testing.T) {
		s, err := c.Auth().Token().LookupSelf()
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := s.TokenID(); id != tok {
			t.Errorf("lookup-self id: got another token")
		}
		if pol, _ := s.TokenPolicies(); !slices.Equal(pol, []string{"cert-manager"}) {
			t.Errorf("lookup-self policies: got %v", pol)
		}
		if ttl, _ := s.TokenTTL(); ttl <= 0 || ttl > time.Hour {
			t.Errorf("lookup-self ttl: got %s", ttl)
		}
		r, err := c.Auth().Token().RenewSelf(1800)
		if err != nil {
			t.Fatalf("renew-self: %v", err)
		}
		if r.Auth == nil || r.Auth.ClientToken != tok || !r.Auth.Renewable {
			t.Errorf("renew-self auth: %+v", r.Auth)
		}
		if err := c.Auth().Token().RevokeSelf(""); err != nil {
			t.Fatalf("revoke-self: %v", err)
		}
		if _, err := c.Auth().Token().LookupSelf(); err == nil {
			t.Fatal("lookup-self after revoke-self: got success, want 403")
		}
	})
}

func colonSerial(c *x509.Certificate) string {
	h := c.SerialNumber.Text(16)
	if len(h)%2 == 1 {
		h = "0" + h
	}
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

var _ = fmt.Sprint
