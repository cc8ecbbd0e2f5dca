package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/client"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// newPKICmd is `hsmgate pki`: issuers, roles, issuance and revocation of
// X.509 certificates from hsmgate's CA.
func newPKICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "X.509 CA: issuers, roles, issue, sign, revoke",
		Long: `X.509 certificates from hsmgate's CA, whose keys never leave the HSM.

  hsmgate pki issuer create-root root --cn "Example Root CA"
  hsmgate pki issuer create-intermediate int1 --cn "Example Issuing CA" --parent root --default
  hsmgate pki issuer create-root ceremony --cn "Ceremony Root" --key-uri 'pkcs11:object=root-2026;id=%01'
  hsmgate pki role write web --allowed-domain example.com --allow-subdomains
  hsmgate pki issue web --cn api.example.com --san www.example.com --out-dir ./tls
  hsmgate pki sign web --csr req.pem > cert.pem
  hsmgate pki revoke 3f:a2:...`,
	}
	cmd.AddCommand(newPKIIssuerCmd(), newPKIRoleCmd(), newPKIIssueCmd(), newPKISignCmd(), newPKIRevokeCmd(),
		newPKICertCmd(), newPKITidyCmd())
	return cmd
}

// pkiCallFor is the one PKIService call of a verb (see callFor).
func pkiCallFor[R any](cmd *cobra.Command, cf *clientFlags, fn func(ctx context.Context, c hsmgatev1.PKIServiceClient) (R, error)) (R, error) {
	return callFor(cmd, cf, hsmgatev1.NewPKIServiceClient, fn)
}

// printProtoJSON is the table form of the verbs whose human output is the
// message itself as JSON (roles, ACME directories, auth method roles).
func printProtoJSON(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	return writeDocument(w, formatJSON, b)
}

func pkiPemBytes(typ string, ders ...[]byte) []byte {
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	return out
}

func pkiOptDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func pkiPrintIssuer(w io.Writer, is *hsmgatev1.Issuer) error {
	def := ""
	if is.GetIsDefault() {
		def = " (default)"
	}
	state := strings.ToLower(strings.TrimPrefix(is.GetState().String(), "ISSUER_STATE_"))
	if is.GetRetired() {
		state = "retired"
	}
	exp := "-"
	if is.GetNotAfter() != nil {
		exp = is.GetNotAfter().AsTime().Format(time.RFC3339)
	}
	parent := is.GetParent()
	if parent == "" {
		parent = "-"
	}
	_, err := fmt.Fprintf(w, "%s%s\t%s\t%s\tparent %s\texpires %s\t%q\n", is.GetName(), def, state, is.GetKeyType(), parent, exp, is.GetCommonName())
	return err
}

// pkiSubjectFlags are the subject flags of the issuer verbs.
type pkiSubjectFlags struct {
	cn       string
	org, ou  []string
	country  []string
	keyType  string
	keyURI   string
	ttl      time.Duration
	makeDef  bool
	pathLen  int32
	certOut  string
	permDNS  []string
	exclDNS  []string
	permIP   []string
	exclIP   []string
	permURI  []string
	parent   string
	csrOut   string
	notCrit  bool
	certFile string
	policies []string
}

func (f *pkiSubjectFlags) subject() *hsmgatev1.Subject {
	return &hsmgatev1.Subject{CommonName: f.cn, Organization: f.org, OrganizationalUnit: f.ou, Country: f.country}
}

func pkiAddSubjectFlags(cmd *cobra.Command, f *pkiSubjectFlags, defKey string) {
	fs := cmd.Flags()
	fs.StringVar(&f.cn, "cn", "", "subject common name (required)")
	fs.StringArrayVar(&f.org, "org", nil, "subject organization (repeatable)")
	fs.StringArrayVar(&f.ou, "ou", nil, "subject organizational unit (repeatable)")
	fs.StringArrayVar(&f.country, "country", nil, "subject country (repeatable)")
	fs.StringVar(&f.keyType, "key-type", "", "key type: ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096, ed25519 (default "+defKey+"; with --key-uri, the key's)")
	fs.StringVar(&f.keyURI, "key-uri", "", "adopt this existing HSM key instead of generating one: RFC 7512 URI 'pkcs11:token=...;object=...;id=%01%02' (sensitive, non-extractable; never destroyed by hsmgate)")
	fs.DurationVar(&f.ttl, "ttl", 0, "validity (default: 10 years for a root, 5 for an intermediate)")
	fs.BoolVar(&f.makeDef, "default", false, "make it the default issuer (the first issuer always is)")
	fs.StringArrayVar(&f.policies, "policy", nil, "certificate policy OID of the CA certificate (repeatable; default none, as internal-profile leaves; a public-profile hierarchy names its leaves' policy, e.g. 2.23.140.1.2.1)")
	fs.StringVar(&f.certOut, "cert-out", "", "also write the certificate (PEM) to this file")
	_ = cmd.MarkFlagRequired("cn")
}

func pkiWriteOrPrint(w io.Writer, path string, data []byte, perm os.FileMode) error {
	if path == "" || path == "-" {
		_, err := w.Write(data)
		return err
	}
	return os.WriteFile(path, data, perm)
}

func newPKIIssuerCmd() *cobra.Command {
	issuer := &cobra.Command{Use: "issuer", Short: "CA certificates: create a root or an intermediate, import, list"}

	root := &pkiSubjectFlags{}
	createRoot := &cobra.Command{
		Use:   "create-root NAME --cn CN [flags]",
		Short: "Make a root CA whose key is generated in the HSM",
		Args:  cobra.ExactArgs(1),
	}
	pkiAddSubjectFlags(createRoot, root, "ecdsa-p384")
	createRoot.Flags().Int32Var(&root.pathLen, "max-path-len", 0, "max path length below the root (0: unlimited)")
	cf := addClientFlags(createRoot)
	rootOut := addOutput(createRoot)
	createRoot.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.CreateRootIssuerResponse, error) {
			return c.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{
				Name: args[0], KeyType: root.keyType, Subject: root.subject(), Ttl: pkiOptDuration(root.ttl),
				MakeDefault: root.makeDef, MaxPathLen: root.pathLen, KeyUri: root.keyURI, PolicyIdentifiers: root.policies,
			})
		})
		if err != nil {
			return fmt.Errorf("pki issuer create-root: %w", err)
		}
		if root.certOut != "" {
			if err := os.WriteFile(root.certOut, pkiPemBytes("CERTIFICATE", r.GetIssuer().GetCertificate()), 0o644); err != nil {
				return err
			}
		}
		return rootOut.print(r, func(w io.Writer) error { return pkiPrintIssuer(w, r.GetIssuer()) })
	}

	im := &pkiSubjectFlags{}
	createIm := &cobra.Command{
		Use:   "create-intermediate NAME --cn CN (--parent ISSUER | --csr-out FILE) [flags]",
		Short: "Make an intermediate CA: signed by one of our issuers, or a CSR for an external root",
		Long: `Make an intermediate CA whose key is generated in the HSM.

With --parent, one of hsmgate's issuers signs it at once. Without it, its CSR is
written to --csr-out (or stdout); have the external root sign it, then run
"hsmgate pki issuer import NAME --cert FILE".`,
		Args: cobra.ExactArgs(1),
	}
	pkiAddSubjectFlags(createIm, im, "ecdsa-p256")
	fs := createIm.Flags()
	fs.StringVar(&im.parent, "parent", "", "issuer that signs it (empty: emit a CSR)")
	fs.StringVar(&im.csrOut, "csr-out", "", "file for the CSR (PEM) when there is no --parent (default stdout)")
	fs.Int32Var(&im.pathLen, "max-path-len", 0, "max path length below it (0: it signs only leaf certificates; -1: unlimited)")
	fs.StringArrayVar(&im.permDNS, "permitted-dns", nil, "name constraint: permitted DNS domain (repeatable)")
	fs.StringArrayVar(&im.exclDNS, "excluded-dns", nil, "name constraint: excluded DNS domain (repeatable)")
	fs.StringArrayVar(&im.permIP, "permitted-ip", nil, "name constraint: permitted IP range, CIDR (repeatable)")
	fs.StringArrayVar(&im.exclIP, "excluded-ip", nil, "name constraint: excluded IP range, CIDR (repeatable)")
	fs.StringArrayVar(&im.permURI, "permitted-uri-domain", nil, "name constraint: permitted URI domain (repeatable)")
	fs.BoolVar(&im.notCrit, "constraints-not-critical", false, "mark the name constraints non-critical")
	cf2 := addClientFlags(createIm)
	imOut := addOutput(createIm)
	createIm.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf2, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.CreateIntermediateIssuerResponse, error) {
			return c.CreateIntermediateIssuer(ctx, &hsmgatev1.CreateIntermediateIssuerRequest{
				Name: args[0], KeyType: im.keyType, Subject: im.subject(), Ttl: pkiOptDuration(im.ttl), Parent: im.parent,
				MakeDefault: im.makeDef, MaxPathLen: im.pathLen, KeyUri: im.keyURI, PolicyIdentifiers: im.policies,
				NameConstraints: &hsmgatev1.NameConstraints{
					PermittedDnsDomains: im.permDNS, ExcludedDnsDomains: im.exclDNS, PermittedIpRanges: im.permIP,
					ExcludedIpRanges: im.exclIP, PermittedUriDomains: im.permURI, NotCritical: im.notCrit,
				},
			})
		})
		if err != nil {
			return fmt.Errorf("pki issuer create-intermediate: %w", err)
		}
		if len(r.GetCsr()) > 0 {
			// As JSON or YAML the response carries the CSR (DER, base64);
			// --csr-out still gets the PEM.
			if !imOut.table() {
				if im.csrOut != "" && im.csrOut != "-" {
					if err := os.WriteFile(im.csrOut, pkiPemBytes("CERTIFICATE REQUEST", r.GetCsr()), 0o644); err != nil {
						return err
					}
				}
				return imOut.print(r, nil)
			}
			return pkiWriteOrPrint(cmd.OutOrStdout(), im.csrOut, pkiPemBytes("CERTIFICATE REQUEST", r.GetCsr()), 0o644)
		}
		if im.certOut != "" {
			if err := os.WriteFile(im.certOut, pkiPemBytes("CERTIFICATE", r.GetIssuer().GetCertificate()), 0o644); err != nil {
				return err
			}
		}
		return imOut.print(r, func(w io.Writer) error { return pkiPrintIssuer(w, r.GetIssuer()) })
	}

	imp := &pkiSubjectFlags{}
	importCmd := &cobra.Command{
		Use:   "import NAME --cert FILE [--default]",
		Short: "Import the certificate an external root signed for a pending intermediate",
		Long:  "Import the certificate an external root signed for a pending intermediate; FILE is PEM and may carry the chain above it.",
		Args:  cobra.ExactArgs(1),
	}
	importCmd.Flags().StringVar(&imp.certFile, "cert", "", `PEM file: the certificate, then optionally its chain; "-" for stdin (required)`)
	importCmd.Flags().BoolVar(&imp.makeDef, "default", false, "make it the default issuer")
	_ = importCmd.MarkFlagRequired("cert")
	cf3 := addClientFlags(importCmd)
	impOut := addOutput(importCmd)
	importCmd.RunE = func(cmd *cobra.Command, args []string) error {
		b, err := readInputFile(cmd, "cert", imp.certFile)
		if err != nil {
			return err
		}
		r, err := pkiCallFor(cmd, cf3, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.ImportIssuerCertificateResponse, error) {
			return c.ImportIssuerCertificate(ctx, &hsmgatev1.ImportIssuerCertificateRequest{Name: args[0], Certificate: b, MakeDefault: imp.makeDef})
		})
		if err != nil {
			return fmt.Errorf("pki issuer import: %w", err)
		}
		return impOut.print(r, func(w io.Writer) error { return pkiPrintIssuer(w, r.GetIssuer()) })
	}

	list := &cobra.Command{Use: "list", Short: "List issuers", Args: cobra.NoArgs}
	cf4 := addClientFlags(list)
	listOut := addOutput(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		r, err := pkiCallFor(cmd, cf4, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.ListIssuersResponse, error) {
			return c.ListIssuers(ctx, &hsmgatev1.ListIssuersRequest{})
		})
		if err != nil {
			return fmt.Errorf("pki issuer list: %w", err)
		}
		return listOut.print(r, func(w io.Writer) error {
			for _, is := range r.GetIssuers() {
				if err := pkiPrintIssuer(w, is); err != nil {
					return err
				}
			}
			return nil
		})
	}

	issuer.AddCommand(createRoot, createIm, importCmd, list, newPKIIssuerGetCmd(), newPKIIssuerUpdateCmd(), newPKICrossSignCmd())
	return issuer
}

func newPKIIssuerGetCmd() *cobra.Command {
	var chain bool
	cmd := &cobra.Command{Use: "get NAME", Short: "Print an issuer's certificate (PEM), or its chain", Args: cobra.ExactArgs(1)}
	cmd.Flags().BoolVar(&chain, "chain", false, "also print the chain above it, up to the root")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.GetIssuerResponse, error) {
			return c.GetIssuer(ctx, &hsmgatev1.GetIssuerRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("pki issuer get: %w", err)
		}
		return out.print(r, func(w io.Writer) error {
			certs := [][]byte{r.GetIssuer().GetCertificate()}
			if chain {
				certs = append(certs, r.GetIssuer().GetChain()...)
			}
			_, err := w.Write(pkiPemBytes("CERTIFICATE", certs...))
			return err
		})
	}
	return cmd
}

func newPKIIssuerUpdateCmd() *cobra.Command {
	var makeDef, retire, unretire bool
	cmd := &cobra.Command{
		Use:   "update NAME [--default] [--retire | --unretire]",
		Short: "Make an issuer the default, or retire it (rotation: make the new one default, retire the old)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().BoolVar(&makeDef, "default", false, "make it the default issuer")
	cmd.Flags().BoolVar(&retire, "retire", false, "stop issuing from it (it keeps serving CRL and OCSP)")
	cmd.Flags().BoolVar(&unretire, "unretire", false, "issue from it again")
	cmd.MarkFlagsMutuallyExclusive("retire", "unretire")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req := &hsmgatev1.UpdateIssuerRequest{Name: args[0], MakeDefault: makeDef}
		if retire || unretire {
			req.Retired = proto.Bool(retire)
		}
		r, err := pkiCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.UpdateIssuerResponse, error) {
			return c.UpdateIssuer(ctx, req)
		})
		if err != nil {
			return fmt.Errorf("pki issuer update: %w", err)
		}
		return out.print(r, func(w io.Writer) error { return pkiPrintIssuer(w, r.GetIssuer()) })
	}
	return cmd
}

func newPKICrossSignCmd() *cobra.Command {
	var signer, out string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "cross-sign NAME --signer ISSUER [--out FILE]",
		Short: "Have another issuer sign issuer NAME's subject and key",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&signer, "signer", "", "issuer that signs (required)")
	cmd.Flags().StringVar(&out, "out", "", "file for the certificate (default stdout)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "validity (default: NAME's remaining validity)")
	_ = cmd.MarkFlagRequired("signer")
	cf := addClientFlags(cmd)
	o := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.CrossSignIssuerResponse, error) {
			return c.CrossSignIssuer(ctx, &hsmgatev1.CrossSignIssuerRequest{Name: args[0], Signer: signer, Ttl: pkiOptDuration(ttl)})
		})
		if err != nil {
			return fmt.Errorf("pki issuer cross-sign: %w", err)
		}
		return pkiPrintCertificates(cmd, o, r, out, r.GetCertificate())
	}
	return cmd
}

// pkiCertRequest is the request of --cn, --san and --ttl (SANs sorted by
// client.SplitSANs: an IP address, a URI with "://", else a DNS name).
func pkiCertRequest(role, cn string, sans []string, ttl time.Duration) (client.CertificateRequest, error) {
	dns, ips, uris, err := client.SplitSANs(sans)
	if err != nil {
		return client.CertificateRequest{}, usageError{fmt.Errorf("--san: %w", err)}
	}
	return client.CertificateRequest{Role: role, CommonName: cn, DNSNames: dns, IPAddresses: ips, URIs: uris, TTL: ttl}, nil
}

// pkiCertDoc is a certificate from the client as the SignResponse message
// (the JSON and YAML document of issue and sign; no private key).
func pkiCertDoc(c *client.Certificate) *hsmgatev1.SignResponse {
	r := &hsmgatev1.SignResponse{Certificate: c.Leaf.Raw, Serial: c.Serial, Issuer: c.Issuer,
		NotAfter: timestamppb.New(c.Leaf.NotAfter)}
	for _, ca := range c.Chain {
		r.Chain = append(r.Chain, ca.Raw)
	}
	return r
}

func newPKIIssueCmd() *cobra.Command {
	var cn, outDir, keyType string
	var sans []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "issue ROLE --cn NAME [--san NAME]... --out-dir DIR",
		Short: "Get a new key pair and certificate (the key is made here and never leaves this machine)",
		Long: `Get a new key pair and a certificate under ROLE: the key pair is generated
here, a CSR for it is signed by the CA, and only the public key is sent.

Writes DIR/cert.pem (the certificate), DIR/key.pem (its private key, mode 0600),
DIR/chain.pem (the issuer chain), DIR/fullchain.pem (certificate then chain)
and DIR/ca.pem (the root). A --san that parses as an IP address becomes an IP
SAN, one with "://" a URI SAN, anything else a DNS name. Needs the "issue"
capability on pki/roles/ROLE.`,
		Example: `  hsmgate pki issue web --cn api.example.com --san www.example.com --san 10.0.0.5 --out-dir ./tls`,
		Args:    cobra.ExactArgs(1),
	}
	fs := cmd.Flags()
	fs.StringVar(&cn, "cn", "", "common name")
	fs.StringArrayVar(&sans, "san", nil, "subject alternative name: DNS name, IP address or URI (repeatable)")
	fs.DurationVar(&ttl, "ttl", 0, "validity (default: the role's ttl)")
	fs.StringVar(&keyType, "key-type", "ecdsa-p256", "key type to generate, one the role allows: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072 or rsa-4096")
	fs.StringVar(&outDir, "out-dir", "", "directory for the files (required)")
	_ = cmd.MarkFlagRequired("out-dir")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req, err := pkiCertRequest(args[0], cn, sans, ttl)
		if err != nil {
			return err
		}
		key, err := client.GenerateKey(keyType)
		if err != nil {
			return usageError{fmt.Errorf("--key-type: %w", err)}
		}
		c, err := clientFor(cmd, cf, func(ctx context.Context, cl *client.Client) (*client.Certificate, error) {
			return cl.PKI.IssueForKey(ctx, key, req)
		})
		if err != nil {
			return fmt.Errorf("pki issue: %w", err)
		}
		if err := pkiWriteIssued(outDir, c); err != nil {
			return err
		}
		// The private key is in DIR/key.pem (mode 0600), never on stdout.
		return out.print(pkiCertDoc(c), func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "serial %s\nissuer %s\nexpires %s\nwritten to %s\n", c.Serial, c.Issuer,
				c.Leaf.NotAfter.UTC().Format(time.RFC3339), outDir)
			return err
		})
	}
	return cmd
}

func pkiWriteIssued(dir string, c *client.Certificate) error {
	keyPEM, err := c.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	type file struct {
		name string
		data []byte
		perm os.FileMode
	}
	files := []file{
		{"key.pem", keyPEM, 0o600},
		{"cert.pem", c.CertPEM(), 0o644},
		{"chain.pem", c.ChainPEM(), 0o644},
		{"fullchain.pem", c.FullChainPEM(), 0o644},
	}
	if len(c.Chain) > 0 {
		files = append(files, file{"ca.pem", pkiPemBytes("CERTIFICATE", c.Chain[len(c.Chain)-1].Raw), 0o644})
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		// Never leave an old key readable by others: remove, then create with the mode.
		_ = os.Remove(p)
		if err := os.WriteFile(p, f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// pkiPrintCertificates prints certificates as PEM (to the file path, or
// stdout for "" and "-"), or, as JSON or YAML, writes the file if one is
// named and prints resp.
func pkiPrintCertificates(cmd *cobra.Command, o *output, resp proto.Message, path string, ders ...[]byte) error {
	data := pkiPemBytes("CERTIFICATE", ders...)
	if !o.table() {
		if path != "" && path != "-" {
			if err := os.WriteFile(path, data, 0o644); err != nil {
				return err
			}
		}
		return o.print(resp, nil)
	}
	return pkiWriteOrPrint(cmd.OutOrStdout(), path, data, 0o644)
}

func newPKISignCmd() *cobra.Command {
	var csrFile, cn, out string
	var sans []string
	var ttl time.Duration
	var withChain bool
	cmd := &cobra.Command{
		Use:   "sign ROLE --csr FILE [--out FILE]",
		Short: "Get a certificate for a CSR (names from the CSR unless --cn/--san are given)",
		Example: `  hsmgate pki sign web --csr req.pem > cert.pem
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -subj /CN=a.example.com | hsmgate pki sign web --csr -`,
		Args: cobra.ExactArgs(1),
	}
	fs := cmd.Flags()
	fs.StringVar(&csrFile, "csr", "", `CSR file, PEM or DER; "-" for stdin (required)`)
	fs.StringVar(&cn, "cn", "", "common name (default: the CSR's)")
	fs.StringArrayVar(&sans, "san", nil, "SAN instead of the CSR's (repeatable)")
	fs.DurationVar(&ttl, "ttl", 0, "validity (default: the role's ttl)")
	fs.StringVar(&out, "out", "", "certificate file (default stdout)")
	fs.BoolVar(&withChain, "chain", true, "append the issuer chain")
	_ = cmd.MarkFlagRequired("csr")
	cf := addClientFlags(cmd)
	o := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		csr, err := readInputFile(cmd, "csr", csrFile)
		if err != nil {
			return err
		}
		req, err := pkiCertRequest(args[0], cn, sans, ttl)
		if err != nil {
			return err
		}
		c, err := clientFor(cmd, cf, func(ctx context.Context, cl *client.Client) (*client.Certificate, error) {
			return cl.PKI.SignCSR(ctx, csr, req)
		})
		if err != nil {
			return fmt.Errorf("pki sign: %w", err)
		}
		certs := [][]byte{c.Leaf.Raw}
		if withChain {
			for _, ca := range c.Chain {
				certs = append(certs, ca.Raw)
			}
		}
		if out != "" && out != "-" && o.table() {
			fmt.Fprintf(cmd.ErrOrStderr(), "serial %s, expires %s\n", c.Serial, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return pkiPrintCertificates(cmd, o, pkiCertDoc(c), out, certs...)
	}
	return cmd
}

func newPKIRevokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     "revoke SERIAL [--reason REASON]",
		Short:   "Revoke a certificate by serial number (hex, colons allowed)",
		Example: "  hsmgate pki revoke 3fa2c1... --reason keyCompromise",
		Args:    cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&reason, "reason", "unspecified", "RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, or its number")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		code, err := client.ParseRevocationReason(reason)
		if err != nil {
			return usageError{err}
		}
		at, err := clientFor(cmd, cf, func(ctx context.Context, cl *client.Client) (time.Time, error) {
			return cl.PKI.Revoke(ctx, args[0], code)
		})
		if err != nil {
			return fmt.Errorf("pki revoke: %w", err)
		}
		return out.print(&hsmgatev1.RevokeResponse{RevocationTime: timestamppb.New(at)}, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "revoked at %s\n", at.UTC().Format(time.RFC3339))
			return err
		})
	}
	return cmd
}

func newPKICertCmd() *cobra.Command {
	cert := &cobra.Command{Use: "cert", Short: "Issued certificates: get, list"}
	get := &cobra.Command{Use: "get SERIAL", Short: "Print an issued certificate (PEM) and its state on stderr", Args: cobra.ExactArgs(1)}
	cf := addClientFlags(get)
	getOut := addOutput(get)
	get.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.GetCertificateResponse, error) {
			return c.GetCertificate(ctx, &hsmgatev1.GetCertificateRequest{Serial: args[0]})
		})
		if err != nil {
			return fmt.Errorf("pki cert get: %w", err)
		}
		rec := r.GetCertificate()
		// As JSON or YAML the record is the output (its certificate empty
		// when the role does not store them).
		return getOut.print(r, func(w io.Writer) error {
			state := pkiCertStatus(rec)
			if rec.GetRevoked() {
				state += " " + rec.GetRevocationTime().AsTime().Format(time.RFC3339)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "serial %s issuer %s role %s expires %s %s\n", rec.GetSerial(), rec.GetIssuer(), rec.GetRole(),
				rec.GetNotAfter().AsTime().Format(time.RFC3339), state)
			if len(rec.GetCertificate()) == 0 {
				return fmt.Errorf("pki cert get: the role does not store certificates")
			}
			_, err := w.Write(pkiPemBytes("CERTIFICATE", rec.GetCertificate()))
			return err
		})
	}
	var issuer string
	var revoked bool
	list := &cobra.Command{Use: "list", Short: "List issued certificates", Args: cobra.NoArgs}
	list.Flags().StringVar(&issuer, "issuer", "", "only this issuer's")
	list.Flags().BoolVar(&revoked, "revoked", false, "only revoked ones")
	cf2 := addClientFlags(list)
	listOut := addOutput(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		all, err := pkiCallFor(cmd, cf2, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.ListCertificatesResponse, error) {
			all := &hsmgatev1.ListCertificatesResponse{}
			for token := ""; ; {
				r, err := c.ListCertificates(ctx, &hsmgatev1.ListCertificatesRequest{Issuer: issuer, RevokedOnly: revoked, PageSize: 1000, PageToken: token})
				if err != nil {
					return nil, err
				}
				all.Certificates = append(all.Certificates, r.GetCertificates()...)
				if token = r.GetNextPageToken(); token == "" {
					return all, nil
				}
			}
		})
		if err != nil {
			return fmt.Errorf("pki cert list: %w", err)
		}
		return listOut.print(all, func(w io.Writer) error {
			for _, rec := range all.GetCertificates() {
				state := pkiCertStatus(rec)
				if _, err := fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", rec.GetSerial(), rec.GetIssuer(), rec.GetRole(),
					rec.GetNotAfter().AsTime().Format(time.RFC3339), state, rec.GetCommonName()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	cert.AddCommand(get, list)
	return cert
}

func newPKITidyCmd() *cobra.Command {
	var buffer time.Duration
	cmd := &cobra.Command{Use: "tidy", Short: "Drop records of certificates expired for longer than --safety-buffer", Args: cobra.NoArgs}
	cmd.Flags().DurationVar(&buffer, "safety-buffer", 72*time.Hour, "keep records expired less than this long")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		r, err := pkiCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.TidyResponse, error) {
			return c.Tidy(ctx, &hsmgatev1.TidyRequest{SafetyBuffer: durationpb.New(buffer)})
		})
		if err != nil {
			return fmt.Errorf("pki tidy: %w", err)
		}
		return out.print(r, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "removed %d certificate records (%d revoked)\n", r.GetCertificatesRemoved(), r.GetRevokedRemoved())
			return err
		})
	}
	return cmd
}

// pkiCertStatus names the status the server computed: valid, expired or revoked.
func pkiCertStatus(rec *hsmgatev1.CertificateRecord) string {
	s := strings.ToLower(strings.TrimPrefix(rec.GetStatus().String(), "CERTIFICATE_STATUS_"))
	if s == "unspecified" { // a server from before the status field
		s = "unknown"
	}
	return s
}

// pkiIsNotFound reports a NotFound status.
func pkiIsNotFound(err error) bool { return status.Code(err) == codes.NotFound }
