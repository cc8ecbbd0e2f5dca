package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func TestRoleValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		role *pb.Role
	}{
		{"bad name", &pb.Role{Name: "Web!", ServerFlag: true}},
		{"no EKU", &pb.Role{Name: "r"}},
		{"ttl over max", &pb.Role{Name: "r", ServerFlag: true, Ttl: durationpb.New(2 * time.Hour), MaxTtl: durationpb.New(time.Hour)}},
		{"backdate too long", &pb.Role{Name: "r", ServerFlag: true, NotBeforeBackdate: durationpb.New(2 * time.Hour)}},
		{"bad domain", &pb.Role{Name: "r", ServerFlag: true, AllowedDomains: []string{"exa mple.com"}}},
		{"bad glob", &pb.Role{Name: "r", ServerFlag: true, AllowedDomains: []string{"[.example.com"}}},
		{"bad CIDR", &pb.Role{Name: "r", ServerFlag: true, AllowedIpRanges: []string{"10.0.0.0/33"}}},
		{"bad key type", &pb.Role{Name: "r", ServerFlag: true, KeyType: "dsa-1024"}},
		{"bad key usage", &pb.Role{Name: "r", ServerFlag: true, KeyUsage: []string{"cert_sign"}}},
		{"bad EKU", &pb.Role{Name: "r", ExtKeyUsage: []string{"any"}}},
		{"controlled CSR extension", &pb.Role{Name: "r", ServerFlag: true, AllowedCsrExtensions: []string{"2.5.29.19"}}},
		{"bad lint source", &pb.Role{Name: "r", ServerFlag: true, LintSources: []string{"nope"}}},
		{"bad policy", &pb.Role{Name: "r", ServerFlag: true, PolicyIdentifiers: []string{"x.y"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := normalizeRole(tc.role); !errors.Is(err, ErrInvalid) {
				t.Errorf("normalizeRole: error %v, want ErrInvalid", err)
			}
		})
	}
	r, err := normalizeRole(&pb.Role{Name: "r", ClientFlag: true, AllowedDomains: []string{"Example.COM."}})
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyType != KeyECDSAP256 || r.Ttl.AsDuration() != DefaultRoleTTL || r.NotBeforeBackdate.AsDuration() != DefaultBackdate || r.AllowedDomains[0] != "example.com" {
		t.Errorf("defaults: key %s ttl %s backdate %s domain %s", r.KeyType, r.Ttl.AsDuration(), r.NotBeforeBackdate.AsDuration(), r.AllowedDomains[0])
	}
}

func TestHTTPEndpoints(t *testing.T) {
	e := newEnv(t)
	root := e.root(t, "root", KeyECDSAP256)
	im := e.intermediate(t, "im", KeyECDSAP256, "root", nil)
	get := func(path string) (int, string, []byte) {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}
	for _, tc := range []struct {
		path, ctype string
		want        [][]byte // PEM certificates, or nil
		der         []byte
	}{
		{"/pki/ca", "application/x-pem-file", [][]byte{im.Certificate}, nil},
		{"/pki/ca/der", "application/pkix-cert", nil, im.Certificate},
		{"/pki/ca_chain", "application/pem-certificate-chain", [][]byte{im.Certificate, root.Certificate}, nil},
		{"/pki/issuer/root/pem", "application/x-pem-file", [][]byte{root.Certificate}, nil},
		{"/pki/issuer/im/chain", "application/pem-certificate-chain", [][]byte{im.Certificate, root.Certificate}, nil},
	} {
		code, ct, body := get(tc.path)
		if code != 200 || ct != tc.ctype {
			t.Errorf("%s: %d %s, want 200 %s", tc.path, code, ct, tc.ctype)
			continue
		}
		if tc.der != nil && !bytes.Equal(body, tc.der) {
			t.Errorf("%s: wrong DER", tc.path)
		}
		if tc.want != nil && !bytes.Equal(body, pemCerts(tc.want...)) {
			t.Errorf("%s: wrong PEM", tc.path)
		}
	}
	for _, p := range []string{"/pki/issuer/im/crl", "/pki/issuer/im/crl/delta"} {
		_, ct, body := get(p)
		if _, err := x509.ParseRevocationList(body); err != nil || ct != "application/pkix-crl" {
			t.Errorf("%s: %s, %v", p, ct, err)
		}
		_, _, body = get(p + "/pem")
		if blk, _ := pem.Decode(body); blk == nil || blk.Type != "X509 CRL" {
			t.Errorf("%s/pem: not a PEM CRL", p)
		}
	}
	if code, _, _ := get("/pki/issuer/nope/pem"); code != http.StatusNotFound {
		t.Errorf("unknown issuer: %d, want 404", code)
	}
}

// TestIssuedKeyNeverStored: the private key Issue returns is nowhere in the store file.
func TestIssuedKeyNeverStored(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t)
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	resp, err := e.svc.Issue(context.Background(), &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(resp.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	d := key.(*ecdsa.PrivateKey).D.Bytes()
	if err := copyStoreFile(e, filepath.Join(dir, "copy.db")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "copy.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, d) || bytes.Contains(b, resp.PrivateKey) {
		t.Fatal("the issued private key is in the store file")
	}
	if !bytes.Contains(b, resp.Certificate) {
		t.Fatal("the issued certificate is not in the store file (is this the right file?)")
	}
}

func copyStoreFile(e *env, to string) error {
	type pather interface{ Path() string }
	p := e.svc.cfg.Store.(pather).Path()
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}

// scriptedSerials returns the given values to the first reads of a
// serial's random part (reads of serialRandom bytes), then crypto/rand.
type scriptedSerials struct {
	mu     sync.Mutex
	values [][]byte
}

func (s *scriptedSerials) Read(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(b) == serialRandom && len(s.values) > 0 {
		copy(b, s.values[0])
		s.values = s.values[1:]
		return serialRandom, nil
	}
	return rand.Read(b)
}

// TestSerialCollisionRetries: a serial already recorded is never reused;
// the issuance signs again with a new one.
func TestSerialCollisionRetries(t *testing.T) {
	same := bytes.Repeat([]byte{0x5a}, serialRandom)
	other := bytes.Repeat([]byte{0x6b}, serialRandom)
	src := &scriptedSerials{}
	e := newEnv(t, func(c *Config) { c.Rand = src })
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	ctx := context.Background()
	src.mu.Lock()
	src.values = [][]byte{same, same, other}
	src.mu.Unlock()
	first, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "b.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now() // the fake clock stands still
	if want := wantSerial(now, same); first.Serial != want {
		t.Fatalf("first serial %s, want %s", first.Serial, want)
	}
	if want := wantSerial(now, other); second.Serial != want {
		t.Errorf("second serial %s, want %s (after the collision)", second.Serial, want)
	}
	rec, err := e.svc.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: first.Serial})
	if err != nil || !bytes.Equal(rec.Certificate.Certificate, first.Certificate) {
		t.Errorf("the first certificate's record was overwritten (%v)", err)
	}
}

// TestNoStoreRole: a no_store role records serial, issuer and expiry (so
// that revocation and OCSP work) but not the certificate.
func TestNoStoreRole(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	r := webRole("ephemeral")
	r.NoStore = true
	e.role(t, r)
	resp, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "ephemeral", CommonName: "A.Example.COM."})
	if err != nil {
		t.Fatal(err)
	}
	if cn := parseCert(t, resp.Certificate).Subject.CommonName; cn != "a.example.com" {
		t.Errorf("CN %q, want it normalized to a.example.com", cn)
	}
	rec, err := e.svc.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: resp.Serial})
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Certificate.Certificate) != 0 || rec.Certificate.Issuer != "root" || rec.Certificate.NotAfter == nil {
		t.Errorf("record: %d DER bytes (want 0), issuer %q, not_after %v", len(rec.Certificate.Certificate), rec.Certificate.Issuer, rec.Certificate.NotAfter)
	}
	if _, err := e.svc.Revoke(ctx, &pb.RevokeRequest{Serial: resp.Serial}); err != nil {
		t.Errorf("Revoke of an unstored certificate: %v", err)
	}
}

// TestCertificateStatus: get and list say valid, expired or revoked from the
// clock and the revocation (an expired certificate is not "valid").
func TestCertificateStatus(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	issue := func() string {
		r, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com", Ttl: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return r.Serial
	}
	live, revoked := issue(), issue()
	if _, err := e.svc.Revoke(ctx, &pb.RevokeRequest{Serial: revoked}); err != nil {
		t.Fatal(err)
	}
	check := func(when string, want map[string]pb.CertificateStatus) {
		t.Helper()
		for serial, w := range want {
			r, err := e.svc.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: serial})
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Certificate.Status; got != w {
				t.Errorf("%s: GetCertificate(%s) status %v, want %v", when, serial, got, w)
			}
		}
		l, err := e.svc.ListCertificates(ctx, &pb.ListCertificatesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range l.Certificates {
			if w, ok := want[rec.Serial]; ok && rec.Status != w {
				t.Errorf("%s: ListCertificates %s status %v, want %v", when, rec.Serial, rec.Status, w)
			}
		}
	}
	check("now", map[string]pb.CertificateStatus{live: pb.CertificateStatus_CERTIFICATE_STATUS_VALID, revoked: pb.CertificateStatus_CERTIFICATE_STATUS_REVOKED})
	e.clock.Advance(2 * time.Hour)
	check("after expiry", map[string]pb.CertificateStatus{live: pb.CertificateStatus_CERTIFICATE_STATUS_EXPIRED, revoked: pb.CertificateStatus_CERTIFICATE_STATUS_REVOKED})
}

// wantSerial is the hex serial of a certificate issued at t whose random
// part is rnd: the tag, then the milliseconds, big-endian in 6 bytes.
func wantSerial(t time.Time, rnd []byte) string {
	ms := fmt.Sprintf("%012x", t.UnixMilli())
	return fmt.Sprintf("%x", serialTag) + ms + hex.EncodeToString(rnd)
}

// TestSerialsSortByIssueTime: serials are a fixed 31 hex digits that sort
// as their certificates were issued (so that the store's records are
// appended), and each carries 72 fresh random bits.
func TestSerialsSortByIssueTime(t *testing.T) {
	e := newEnv(t)
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	ctx := context.Background()
	var serials []string
	randoms := map[string]bool{}
	for i := range 6 {
		if i%2 == 0 {
			e.clock.Advance(time.Millisecond)
		}
		out, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: fmt.Sprintf("s%d.example.com", i)})
		if err != nil {
			t.Fatal(err)
		}
		cert := parseCert(t, out.Certificate)
		if cert.SerialNumber.Sign() <= 0 || serialHex(cert.SerialNumber) != out.Serial {
			t.Fatalf("serial %s: certificate holds %v", out.Serial, cert.SerialNumber)
		}
		if len(out.Serial) != 31 {
			t.Fatalf("serial %s: %d hex digits, want 31", out.Serial, len(out.Serial))
		}
		if want := wantSerial(e.clock.Now(), nil); out.Serial[:len(want)] != want {
			t.Errorf("serial %s does not start with the issue time %s", out.Serial, want)
		}
		rnd := out.Serial[len(out.Serial)-2*serialRandom:]
		if randoms[rnd] {
			t.Errorf("serial %s: random part %s seen before", out.Serial, rnd)
		}
		randoms[rnd] = true
		serials = append(serials, out.Serial)
	}
	for i := 2; i < len(serials); i += 2 {
		if serials[i] <= serials[i-1] {
			t.Errorf("serial %s, issued a millisecond after %s, sorts before it", serials[i], serials[i-1])
		}
	}
}
