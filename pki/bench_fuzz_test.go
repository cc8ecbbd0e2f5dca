package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// BenchmarkSign measures Sign (CSR check + zlint + HSM signature + its check + store
// write) per issuer key type, with one CSR so that no key generation is timed.
func BenchmarkSign(b *testing.B) {
	for _, kt := range []string{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA3072, KeyRSA4096} {
		b.Run(kt, func(b *testing.B) {
			e := newEnv(b)
			e.root(b, "root", kt)
			e.role(b, webRole("web"))
			csr := makeCSR(b, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}})
			ctx := context.Background()
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb_ *testing.PB) {
				for pb_.Next() {
					if _, err := e.svc.Sign(ctx, &pb.SignRequest{Role: "web", Csr: csr}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			// CPU per certificate (this process: Go and SoftHSM), which a
			// loaded machine does not inflate the way it does ns/op.
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// BenchmarkLint measures the filtered zlint registries alone.
func BenchmarkLint(b *testing.B) {
	e := newEnv(b)
	e.root(b, "root", KeyECDSAP256)
	e.role(b, webRole("web"))
	r, err := e.svc.Issue(context.Background(), &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		b.Fatal(err)
	}
	// RFC5280 alone, and the default (internal) profile's sources. (The
	// CABF_BR sources refuse this certificate: it has no policy OID.)
	for _, lo := range []lintOptions{{sources: []string{"RFC5280"}}, {sources: internalLintSources}} {
		b.Run(strings.Join(lo.sources, "+"), func(b *testing.B) {
			for b.Loop() {
				if err := lintDER(r.Certificate, lo); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzParseCSR: untrusted CSR bytes never panic, and an accepted CSR's
// request carries no controlled extension.
func FuzzParseCSR(f *testing.F) {
	f.Add(makeCSR(f, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}, DNSNames: []string{"b.example.com"}}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	role, err := normalizeRole(&pb.Role{Name: "r", AllowAnyName: true, ServerFlag: true,
		AllowedKeyTypes: []string{KeyECDSAP256, KeyRSA2048, KeyEd25519}, AllowedCsrExtensions: []string{"1.3.6.1.4.1.55555.1"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := parseCSR(b)
		if err != nil {
			return
		}
		r, err := requestFromCSR(role, csr)
		if err != nil {
			return
		}
		for _, x := range r.extra {
			if controlledExtensions[x.Id.String()] {
				t.Fatalf("controlled extension %s copied from a CSR", x.Id)
			}
		}
	})
}

// FuzzOCSPRequest: untrusted OCSP requests, as DER and through the HTTP
// GET and POST handlers, never panic and always get an OCSP response.
func FuzzOCSPRequest(f *testing.F) {
	e := newEnv(f)
	root := e.root(f, "root", KeyECDSAP256)
	rc, _ := x509.ParseCertificate(root.Certificate)
	good, _ := ocsp.CreateRequest(&x509.Certificate{SerialNumber: big.NewInt(99)}, rc, &ocsp.RequestOptions{Hash: crypto.SHA256})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x00})
	h := e.svc.Handler()
	f.Fuzz(func(t *testing.T, b []byte) {
		if req, err := parseOCSPRequest(b); err == nil {
			if req.SerialNumber.Sign() <= 0 {
				t.Fatalf("accepted a non-positive serial")
			}
		}
		if n := ocspRequestNonce(b); len(n) > maxOCSPNonce {
			t.Fatalf("nonce of %d bytes echoed, limit %d", len(n), maxOCSPNonce)
		}
		for _, r := range []*http.Request{
			httptest.NewRequest(http.MethodPost, "/pki/ocsp", strings.NewReader(string(b))),
			httptest.NewRequest(http.MethodGet, "/pki/ocsp/"+base64.URLEncoding.EncodeToString(b), nil),
		} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if ct := w.Header().Get("Content-Type"); ct != "application/ocsp-response" || w.Body.Len() == 0 {
				t.Fatalf("%s: content type %q, %d bytes", r.Method, ct, w.Body.Len())
			}
			if _, err := ocsp.ParseResponse(w.Body.Bytes(), nil); err != nil && !isOCSPError(err) {
				t.Fatalf("%s: unparsable response: %v", r.Method, err)
			}
		}
	})
}

func isOCSPError(err error) bool {
	_, ok := err.(ocsp.ResponseError)
	return ok
}

// processCPU is the user+system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReferenceECDSASign is Go's ECDSA P-256 signature alone (about
// 32k/s per core on a quiet 2-core VM of this project, DESIGN.md): run with
// BenchmarkSign, its cpu-µs/op scales BenchmarkSign's from a loaded machine
// to a quiet one (Sign's CPU over this one's, times ~31 µs).
func BenchmarkReferenceECDSASign(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("reference"))
	cpu0 := processCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ecdsa.SignASN1(rand.Reader, k, d[:]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}
