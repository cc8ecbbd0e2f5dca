package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"
	"github.com/miekg/dns"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// dnsServer is an in-test authoritative server for TXT records (UDP on loopback).
type dnsServer struct {
	mu   sync.Mutex
	txt  map[string][]string // fqdn → values
	addr string
}

func newDNSServer(t testing.TB) *dnsServer {
	d := &dnsServer{txt: map[string][]string{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return d
}

func (d *dnsServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	for _, q := range r.Question {
		name := strings.ToLower(q.Name)
		d.mu.Lock()
		vals := d.txt[name]
		d.mu.Unlock()
		if q.Qtype == dns.TypeTXT {
			for _, v := range vals {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 1}, Txt: []string{v}})
			}
		}
		if q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, &dns.SOA{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 1},
				Ns: "ns.example.com.", Mbox: "h.example.com.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: 1})
		}
	}
	w.WriteMsg(m)
}

// Present and CleanUp make dnsServer a lego DNS provider.
func (d *dnsServer) Present(ctx context.Context, domain, token, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[strings.ToLower(info.EffectiveFQDN)] = append(d.txt[strings.ToLower(info.EffectiveFQDN)], info.Value)
	return nil
}

func (d *dnsServer) CleanUp(ctx context.Context, domain, token, keyAuth string) error {
	info := dns01.GetChallengeInfo(ctx, domain, keyAuth)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.txt, strings.ToLower(info.EffectiveFQDN))
	return nil
}

type legoUser struct {
	key crypto.Signer
	reg *legoacme.ExtendedAccount
}

func (u *legoUser) GetEmail() string                           { return "" }
func (u *legoUser) GetRegistration() *legoacme.ExtendedAccount { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.Signer               { return u.key }

// TestLego: lego v5 as a library registers with EAB and obtains
// certificates through dns-01 (in-test DNS server, a wildcard included)
// and through tls-alpn-01; ARI renewal info is read back, and an order
// that replaces a certificate is accepted once.
func TestLego(t *testing.T) {
	dnsSrv := newDNSServer(t)
	alpnPort := freePort(t)
	e := newEnv(t, envOpts{eab: true, roleModify: func(r *pb.Role) { r.AllowWildcardCertificates = true }, modify: func(c *Config) {
		c.DNSResolver = dnsSrv.addr
		c.Validation.TLSPort = alpnPort
	}})
	dns01.SetDefaultClient(dns01.NewClient(&dns01.Options{RecursiveNameservers: []string{dnsSrv.addr}, Timeout: 5 * time.Second}))
	t.Cleanup(func() { dns01.SetDefaultClient(dns01.NewClient(nil)) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	newClient := func(t *testing.T) *lego.Client {
		u := &legoUser{key: newECKey(t)}
		cfg := lego.NewConfig(u)
		cfg.CADirURL = e.dirURL
		cfg.HTTPClient = e.client()
		c, err := lego.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		kid, hk, err := e.srv.CreateEAB(ctx, "main", nil)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := c.Registration.RegisterWithExternalAccountBinding(ctx, registration.RegisterEABOptions{TermsOfServiceAgreed: true, Kid: kid, HmacEncoded: hk})
		if err != nil {
			t.Fatalf("RegisterWithExternalAccountBinding: %v", err)
		}
		u.reg = reg
		// A client made after registration uses the account's kid.
		c, err = lego.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("dns-01 with a wildcard", func(t *testing.T) {
		c := newClient(t)
		if err := c.Challenge.SetDNS01Provider(dnsSrv, dns01.PropagationWait(0, true)); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{KeyType: certcrypto.EC256, Domains: []string{"*.apps.example.com", "apps.example.com"}, Bundle: true})
		if err != nil {
			t.Fatalf("Obtain: %v", err)
		}
		leaf := parsePEMCert(t, res.Certificate)
		if !containsAll(leaf.DNSNames, "*.apps.example.com", "apps.example.com") {
			t.Errorf("DNS names: got %v", leaf.DNSNames)
		}
		ri, err := c.Certificate.GetRenewalInfo(ctx, leaf)
		if err != nil {
			t.Fatalf("GetRenewalInfo: %v", err)
		}
		w := ri.SuggestedWindow
		if !w.Start.After(leaf.NotBefore) || !w.End.Before(leaf.NotAfter) || !w.Start.Before(w.End) {
			t.Errorf("suggested window %v..%v not inside %v..%v", w.Start, w.End, leaf.NotBefore, leaf.NotAfter)
		}
		// Renew with replaces, once.
		certID := certIDOf(t, leaf)
		if _, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{KeyType: certcrypto.EC256, Domains: []string{"apps.example.com"}, ReplacesCertID: certID}); err != nil {
			t.Fatalf("Obtain replacing %s: %v", certID, err)
		}
		cr := new(certRecord)
		e.srv.get(ctx, prefixCerts+"main/"+leaf.SerialNumber.Text(16), cr)
		first := cr.ReplacedBy
		if first == "" {
			t.Fatalf("certificate not marked replaced")
		}
		// A second replacement is refused with alreadyReplaced (409);
		// lego then orders again without "replaces", as RFC 9773 5 says.
		if _, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{KeyType: certcrypto.EC256, Domains: []string{"apps.example.com"}, ReplacesCertID: certID}); err != nil {
			t.Fatalf("second Obtain: %v", err)
		}
		e.srv.get(ctx, prefixCerts+"main/"+leaf.SerialNumber.Text(16), cr)
		if cr.ReplacedBy != first {
			t.Errorf("replaced by: got %s, want the first renewal %s", cr.ReplacedBy, first)
		}
		// A revoked certificate's window opens now.
		if err := c.Certificate.Revoke(ctx, res.Certificate); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		ri, err = c.Certificate.GetRenewalInfo(ctx, leaf)
		if err != nil {
			t.Fatal(err)
		}
		if ri.SuggestedWindow.End.After(time.Now().Add(time.Minute)) {
			t.Errorf("revoked certificate's window ends %v, want now", ri.SuggestedWindow.End)
		}
	})

	t.Run("tls-alpn-01", func(t *testing.T) {
		c := newClient(t)
		if err := c.Challenge.SetTLSALPN01Provider(tlsalpn01.NewProviderServer("127.0.0.1", strconv.Itoa(alpnPort))); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(ctx, certificate.ObtainRequest{KeyType: certcrypto.EC256, Domains: []string{"alpn.example.com"}, Bundle: true})
		if err != nil {
			t.Fatalf("Obtain: %v", err)
		}
		if leaf := parsePEMCert(t, res.Certificate); leaf.DNSNames[0] != "alpn.example.com" {
			t.Errorf("DNS names: got %v", leaf.DNSNames)
		}
	})
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

func certIDOf(t testing.TB, c *x509.Certificate) string {
	der := c.SerialNumber.Bytes()
	if len(der) > 0 && der[0]&0x80 != 0 {
		der = append([]byte{0}, der...)
	}
	return b64.EncodeToString(c.AuthorityKeyId) + "." + b64.EncodeToString(der)
}
