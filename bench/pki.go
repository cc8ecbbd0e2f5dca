package bench

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func init() {
	register(&scenario{name: "pki-sign", summary: "PKIService.Sign of an ECDSA P-256 CSR (one certificate per RPC; issuer key type: --key-type)",
		keyTypes: []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", "rsa-4096"}, minBatch: 1, maxBatch: 1, prepare: preparePKISign(false)})
	register(&scenario{name: "pki-issue", summary: "PKIService.Issue: the server makes an ECDSA P-256 key and its certificate (one per RPC; issuer key type: --key-type)",
		keyTypes: []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", "rsa-4096"}, minBatch: 1, maxBatch: 1, prepare: preparePKISign(true)})
}

// preparePKISign prepares pki-sign, or pki-issue when issue is set.
func preparePKISign(issue bool) func(ctx context.Context, env *Env, p Params) (*workload, error) {
	return func(ctx context.Context, env *Env, p Params) (*workload, error) {
		return preparePKI(ctx, env, p, issue)
	}
}

func preparePKI(ctx context.Context, env *Env, p Params, issue bool) (*workload, error) {
	c := hsmgatev1.NewPKIServiceClient(env.Conns[0])
	issuer, role := "bench-"+env.Prefix, "bench-"+env.Prefix
	if _, err := c.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{
		Name: issuer, KeyType: p.KeyType, Subject: &hsmgatev1.Subject{CommonName: "hsmgate bench " + env.Prefix},
		Ttl: durationpb.New(24 * time.Hour),
	}); err != nil {
		return nil, fmt.Errorf("bench: create issuer: %w", err)
	}
	if _, err := c.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: &hsmgatev1.Role{
		Name: role, Issuer: issuer, AllowedDomains: []string{"bench.example.com"}, AllowSubdomains: true,
		KeyType: "ecdsa-p256", Ttl: durationpb.New(time.Hour), MaxTtl: durationpb.New(2 * time.Hour),
		ServerFlag: true, NoStore: false,
	}}); err != nil {
		return nil, fmt.Errorf("bench: create role: %w", err)
	}
	leaf, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "svc.bench.example.com"}, DNSNames: []string{"svc.bench.example.com"},
	}, leaf)
	if err != nil {
		return nil, err
	}
	w := &workload{
		Describe: fmt.Sprintf("Sign (CSR, ECDSA P-256 leaf), issuer %s, zlint on", p.KeyType),
		Close: func() {
			_, _ = c.DeleteRole(context.Background(), &hsmgatev1.DeleteRoleRequest{Name: role})
		},
	}
	csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	w.Vault = func(batch int, n VaultNames) (*vaultRequest, error) {
		// Vault signs one CSR per request: there is no batch form.
		return &vaultRequest{Path: n.PKIMount + "/sign/" + cmp.Or(n.Role, role), Items: 1,
			Body: vaultBody(map[string]string{"csr": csrPEM}), Check: checkField("certificate")}, nil
	}
	call := func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
		return hsmgatev1.NewPKIServiceClient(cc).Sign(ctx, &hsmgatev1.SignRequest{Role: role, Csr: csr})
	}
	var msg proto.Message = &hsmgatev1.SignRequest{Role: role, Csr: csr}
	if issue {
		w.Describe = fmt.Sprintf("Issue (the server makes an ECDSA P-256 key), issuer %s, zlint on", p.KeyType)
		ireq := &hsmgatev1.IssueRequest{Role: role, CommonName: "svc.bench.example.com"}
		msg = ireq
		call = func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
			return hsmgatev1.NewPKIServiceClient(cc).Issue(ctx, ireq)
		}
		w.Vault = func(batch int, n VaultNames) (*vaultRequest, error) {
			return &vaultRequest{Path: n.PKIMount + "/issue/" + cmp.Or(n.Role, role), Items: 1,
				Body: vaultBody(map[string]string{"common_name": "svc.bench.example.com"}), Check: checkField("certificate")}, nil
		}
	}
	var certSize int
	w.Request = func(batch int) (request, error) {
		if batch != 1 {
			return request{}, fmt.Errorf("bench: %s: one certificate per request (--batch 1)", p.Scenario)
		}
		resp, err := call(ctx, env.Conns[0])
		if err != nil {
			return request{}, fmt.Errorf("bench: %s: %w", p.Scenario, err)
		}
		switch r := resp.(type) {
		case *hsmgatev1.SignResponse:
			certSize = len(r.Certificate)
		case *hsmgatev1.IssueResponse:
			certSize = len(r.Certificate)
		}
		return request{Msg: msg, Call: call}, nil
	}
	if _, err := w.Request(1); err != nil {
		w.Close()
		return nil, err
	}
	// Software: a whole certificate made and signed by Go with a Go issuer key
	// of the same type (x509.CreateCertificate; no lint). HSM: the issuer's
	// signature alone, over the digest of a TBSCertificate of the same size.
	gk, opts, err := goSigner(p.KeyType)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, gk.Public(), gk)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	w.SoftwareOp = "Go x509.CreateCertificate (" + p.KeyType + " issuer)"
	w.Software = func(context.Context) error {
		sn, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		t := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: "svc.bench.example.com"},
			DNSNames: []string{"svc.bench.example.com"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		pub := leaf.Public()
		if issue { // the server makes the key, so does the software limit
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			pub = k.Public()
		}
		_, err := x509.CreateCertificate(rand.Reader, t, caCert, pub, gk)
		return err
	}
	var hopts crypto.SignerOpts = opts
	tbs := make([]byte, max(certSize-100, 300))
	hw := &workload{}
	if err := signLimits(ctx, env, hw, p.KeyType, tbs, hopts); err != nil {
		w.Close()
		return nil, err
	}
	w.HSM, w.HSMOp = hw.HSM, hw.HSMOp
	if hw.Close != nil {
		prev := w.Close
		w.Close = func() { prev(); hw.Close() }
	}
	return w, nil
}
