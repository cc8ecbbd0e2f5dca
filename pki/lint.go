package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	_ "github.com/zmap/zlint/v3" // registers every lint in lint.GlobalRegistry
	"github.com/zmap/zlint/v3/lint"
	"github.com/zmap/zlint/v3/util"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/hsmgate/hsmgate/hsm"
)

// Issuance is lint-then-sign in one pass of x509.CreateCertificate: the
// certificate is built and encoded once, with the real issuer as parent and
// a lintSigner as its key. The lintSigner is handed the TBSCertificate; it
// lints the certificate that TBSCertificate makes (with a placeholder where
// the signature goes), and only when zlint passes has the HSM key sign that
// same TBSCertificate. x509.CreateCertificate then checks the signature
// with the issuer certificate's public key. So the TBSCertificate that was
// linted is the one signed, and the result is checked, with no second
// certificate, key or signature made for linting.
//
// The one kind of lint that cannot judge a placeholder is a lint of the
// signature itself (signatureLints: "was this signed by a compromised
// key?"). Its verdict depends only on the issuer's key, so it runs on the
// first real certificate of each issuer key and is remembered
// (issuerRT.sigLinted); a certificate whose issuer fails it is never
// recorded or returned.

// signatureLints are the zlint lints whose verdict depends on the signature
// value rather than on the TBSCertificate. e_cert_issued_by_compromised_emudhra_ca
// verifies the signature against eight P-384 keys (about 4 ms a certificate
// on these machines; 75% of pki-sign's CPU before it was moved).
var signatureLints = map[string]bool{
	"e_cert_issued_by_compromised_emudhra_ca": true,
}

// lintOptions selects the zlint lints.
type lintOptions struct {
	sources []string
	exclude []string
}

func (o lintOptions) key() string {
	return strings.Join(o.sources, ",") + "|" + strings.Join(o.exclude, ",")
}

var registries sync.Map // lintOptions.key() → *linter

// linter is a filtered zlint registry with its certificate lints and
// configuration listed once: zlint.LintCertificateEx lists, sorts and maps
// every lint name again for each certificate.
type linter struct {
	// tbs are the lints of the TBSCertificate; sig the signatureLints selected.
	tbs, sig []*lintRunner
	cfg      lint.Configuration
}

// lintRunner runs one lint as zlint's CertificateLint.Execute does (the
// framework's source filter, CheckApplies, CheckEffective, Execute, a panic
// reported as Fatal) but with configured instances kept in a pool: zlint
// makes and configures (by reflection over the configuration) a new
// instance of every lint for every certificate, about 20 µs of the ~100
// lints' 120 µs a certificate. Lint instances hold only their
// configuration; the pool gives each goroutine its own all the same.
type lintRunner struct {
	*lint.CertificateLint
	pool sync.Pool // of lint.LintInterface, configured
	// cfgErr is the configuration's error for this lint: every run is Fatal.
	cfgErr error
}

func newLintRunner(c *lint.CertificateLint, cfg lint.Configuration) *lintRunner {
	r := &lintRunner{CertificateLint: c}
	first := c.Lint()
	if err := cfg.MaybeConfigure(first, c.Name); err != nil {
		r.cfgErr = err
		return r
	}
	r.pool.Put(first)
	r.pool.New = func() any {
		in := c.Lint()
		if err := cfg.MaybeConfigure(in, c.Name); err != nil {
			return nil // the first one configured: this does too
		}
		return in
	}
	return r
}

// execute runs the lint on c.
func (r *lintRunner) execute(c *zx509.Certificate) (res *lint.LintResult) {
	defer func() {
		if p := recover(); p != nil {
			res = &lint.LintResult{Status: lint.Fatal, Details: fmt.Sprintf("'%s' panicked. Error: %v", r.Name, p)}
		}
	}()
	if r.cfgErr != nil {
		return &lint.LintResult{Status: lint.Fatal, Details: r.cfgErr.Error()}
	}
	if !r.OverrideFrameworkFilter {
		switch {
		case r.Source == lint.CABFBaselineRequirements && !util.IsServerAuthCert(c),
			r.Source == lint.CABFSMIMEBaselineRequirements && !util.IsEmailProtectionCert(c),
			r.Source == lint.CABFCSBaselineRequirements && !util.IsCodeSigning(c.PolicyIdentifiers):
			return &lint.LintResult{Status: lint.NA}
		}
	}
	in, _ := r.pool.Get().(lint.CertificateLintInterface)
	if in == nil {
		return &lint.LintResult{Status: lint.Fatal, Details: "lint " + r.Name + " cannot be configured"}
	}
	defer r.pool.Put(in)
	if !in.CheckApplies(c) {
		return &lint.LintResult{Status: lint.NA}
	}
	if !r.CheckEffective(c) {
		return &lint.LintResult{Status: lint.NE}
	}
	return in.Execute(c)
}

func (o lintOptions) registry() (*linter, error) {
	k := o.key()
	if r, ok := registries.Load(k); ok {
		return r.(*linter), nil
	}
	var srcs lint.SourceList
	for _, s := range o.sources {
		var src lint.LintSource
		if src.FromString(s); src == lint.UnknownLintSource {
			return nil, fmt.Errorf("%w: unknown lint source %q", ErrInvalid, s)
		}
		srcs = append(srcs, src)
	}
	if len(srcs) == 0 {
		srcs = lint.SourceList{lint.RFC5280}
	}
	r, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: srcs, ExcludeNames: o.exclude})
	if err != nil {
		return nil, fmt.Errorf("%w: lint filter: %v", ErrInvalid, err)
	}
	l := &linter{cfg: r.GetConfiguration()}
	for _, c := range r.CertificateLints().Lints() {
		if c.Name == smallKeyLintName {
			c = smallKeyLint(c) // the same check, in one table lookup (smallkey.go)
		}
		if signatureLints[c.Name] {
			l.sig = append(l.sig, newLintRunner(c, l.cfg))
		} else {
			l.tbs = append(l.tbs, newLintRunner(c, l.cfg))
		}
	}
	if len(l.tbs)+len(l.sig) == 0 { // never lint with nothing (e.g. the lints not linked in)
		return nil, fmt.Errorf("%w: no lint selected by sources %v", ErrInvalid, o.sources)
	}
	registries.Store(k, l)
	return l, nil
}

// run runs lints on c, each as zlint.LintCertificateEx runs it; ErrLint
// naming each error or fatal finding.
func (l *linter) run(c *zx509.Certificate, lints []*lintRunner) error {
	var bad []string
	for _, li := range lints {
		r := li.execute(c)
		if r.Status == lint.Error || r.Status == lint.Fatal {
			name := li.Name
			if r.Details != "" {
				name += " (" + r.Details + ")"
			}
			bad = append(bad, name)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%w: %s", ErrLint, strings.Join(bad, ", "))
	}
	return nil
}

func parseForLint(der []byte) (*zx509.Certificate, error) {
	c, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: zlint cannot parse the certificate: %v", ErrLint, err)
	}
	return c, nil
}

// lintDER runs every selected lint, signature lints included, on a signed
// certificate (a self-signed root, linted before it is stored).
func lintDER(der []byte, o lintOptions) error {
	reg, err := o.registry()
	if err != nil {
		return err
	}
	c, err := parseForLint(der)
	if err != nil {
		return err
	}
	return reg.run(c, append(reg.tbs[:len(reg.tbs):len(reg.tbs)], reg.sig...))
}

// lintTBS runs the TBSCertificate lints on the certificate that tbs makes
// with sig in place of the signature.
func (l *linter) lintTBS(tbs, sig []byte) error {
	algID, ok := tbsSignatureAlgorithm(tbs)
	if !ok {
		return errors.New("pki: cannot read the signature algorithm of a TBSCertificate")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(algID)
		b.AddASN1BitString(sig)
	})
	der, err := b.Bytes()
	if err != nil {
		return fmt.Errorf("pki: encode the certificate to lint: %v", err)
	}
	c, err := parseForLint(der)
	if err != nil {
		return err
	}
	return l.run(c, l.tbs)
}

// lintSignature runs the signature lints on a signed certificate of iss,
// once per lint and issuer key (the verdict depends on the key alone).
func (l *linter) lintSignature(iss *issuerRT, der []byte) error {
	var c *zx509.Certificate
	for _, li := range l.sig {
		if v, ok := iss.sigLinted.Load(li.Name); ok {
			if v != nil {
				return v.(error)
			}
			continue
		}
		if c == nil {
			var err error
			if c, err = parseForLint(der); err != nil {
				return err
			}
		}
		err := l.run(c, []*lintRunner{li})
		if errors.Is(err, ErrLint) {
			iss.sigLinted.Store(li.Name, err)
			return err
		}
		if err != nil {
			return err
		}
		iss.sigLinted.Store(li.Name, nil)
	}
	return nil
}

// tbsSignatureAlgorithm returns the signature AlgorithmIdentifier element of
// a TBSCertificate (the certificate's outer one is the same).
func tbsSignatureAlgorithm(tbs []byte) ([]byte, bool) {
	in := cryptobyte.String(tbs)
	var t, serial, alg cryptobyte.String
	if !in.ReadASN1(&t, cbasn1.SEQUENCE) || !in.Empty() ||
		!t.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!t.ReadASN1Element(&serial, cbasn1.INTEGER) || !t.ReadASN1Element(&alg, cbasn1.SEQUENCE) {
		return nil, false
	}
	return alg, true
}

// placeholderSignature is a well-formed signature value of the size the
// issuer key makes (lints such as e_mp_ecdsa_signature_encoding_correct
// read its length), which no key made: ECDSA (r, s) of the curve's size,
// Ed25519's 64 bytes, RSA's modulus size.
func placeholderSignature(pub crypto.PublicKey) []byte {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		n := (k.Curve.Params().BitSize + 7) / 8
		v := make([]byte, n)
		v[0] = 0x7f
		for i := 1; i < n; i++ {
			v[i] = 0xa5
		}
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(v) })
			b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(v) })
		})
		return b.BytesOrPanic()
	case ed25519.PublicKey:
		return make([]byte, ed25519.SignatureSize)
	case *rsa.PublicKey:
		return make([]byte, k.Size())
	}
	return make([]byte, 64)
}

// lintSigner is the key x509.CreateCertificate signs with (see the top of
// this file): lint the TBSCertificate, then sign it with the HSM key.
type lintSigner struct {
	ctx    context.Context
	iss    *issuerRT
	reg    *linter
	signed bool  // the HSM signed: an error after this is ours, not the request's
	err    error // the lint's or the HSM's error, as is
}

var _ crypto.MessageSigner = (*lintSigner)(nil)

// Public is the issuer certificate's key: the HSM signature is checked against it.
func (l *lintSigner) Public() crypto.PublicKey { return l.iss.cert.PublicKey }

// Sign refuses: x509.CreateCertificate signs through SignMessage, with the
// TBSCertificate itself, which is what is linted.
func (l *lintSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("pki: the linting signer signs whole messages only")
}

// SignMessage lints msg (a TBSCertificate) and has the issuer's key sign it.
func (l *lintSigner) SignMessage(rnd io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	if err := l.reg.lintTBS(msg, l.iss.lintSig); err != nil {
		l.err = err
		return nil, err
	}
	sig, err := signTBS(hsm.WithContext(l.ctx, l.iss.signer), rnd, l.iss.sigAlg, msg)
	if err != nil {
		l.err = fmt.Errorf("pki: sign with issuer %q: %w", l.iss.rec.Name, err)
		return nil, l.err
	}
	l.signed = true
	return sig, nil
}

// signDER lints and signs tmpl for pub with iss and returns the DER
// certificate: built and encoded once, linted, signed by the HSM, its
// signature checked, its signature lints passed (once per issuer key).
func (s *Service) signDER(ctx context.Context, iss *issuerRT, tmpl *x509.Certificate, pub crypto.PublicKey, reg *linter) ([]byte, error) {
	if iss.cert == nil {
		return nil, fmt.Errorf("%w: %q is %s", ErrIssuerNotActive, iss.rec.Name, iss.rec.State)
	}
	tmpl.SignatureAlgorithm = iss.sigAlg
	ls := &lintSigner{ctx: ctx, iss: iss, reg: reg}
	der, err := x509.CreateCertificate(s.cfg.Rand, tmpl, iss.cert, pub, ls)
	switch {
	case err == nil:
	case ls.signed:
		return nil, fmt.Errorf("pki: certificate signed by issuer %q fails its check: %v", iss.rec.Name, err)
	case ls.err != nil:
		return nil, ls.err
	default:
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := reg.lintSignature(iss, der); err != nil {
		return nil, err
	}
	return der, nil
}

// signCert is signDER with the lints of lo, and the certificate parsed.
func (s *Service) signCert(ctx context.Context, iss *issuerRT, tmpl *x509.Certificate, pub crypto.PublicKey, lo lintOptions) ([]byte, *x509.Certificate, error) {
	reg, err := lo.registry()
	if err != nil {
		return nil, nil, err
	}
	der, err := s.signDER(ctx, iss, tmpl, pub, reg)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse issued certificate: %v", err)
	}
	return der, cert, nil
}
