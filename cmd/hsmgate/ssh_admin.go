package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca/krl"
)

func parseCertType(s string) (hsmgatev1.SSHCertType, error) {
	switch s {
	case "":
		return hsmgatev1.SSHCertType_SSH_CERT_TYPE_UNSPECIFIED, nil
	case "user":
		return hsmgatev1.SSHCertType_SSH_CERT_TYPE_USER, nil
	case "host":
		return hsmgatev1.SSHCertType_SSH_CERT_TYPE_HOST, nil
	}
	return 0, usageError{fmt.Errorf("certificate type %q: want user or host", s)}
}

func parseSSHKeyType(s string) (hsmgatev1.SSHKeyType, error) {
	if s == "" {
		return hsmgatev1.SSHKeyType_SSH_KEY_TYPE_UNSPECIFIED, nil
	}
	v, ok := hsmgatev1.SSHKeyType_value["SSH_KEY_TYPE_"+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]
	if !ok {
		return 0, usageError{fmt.Errorf("key type %q: want ecdsa-p256, ecdsa-p384, ed25519, rsa-3072 or rsa-4096", s)}
	}
	return hsmgatev1.SSHKeyType(v), nil
}

func printCA(w io.Writer, ca *hsmgatev1.SSHCA) error {
	_, err := fmt.Fprintf(w, "%s (%s)\n", ca.GetName(), strings.ToLower(strings.TrimPrefix(ca.GetCertType().String(), "SSH_CERT_TYPE_")))
	for _, k := range ca.GetKeys() {
		fmt.Fprintf(w, "  v%d %-8s %-10s %s\n", k.GetVersion(),
			strings.ToLower(strings.TrimPrefix(k.GetState().String(), "SSHCA_KEY_STATE_")),
			strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k.GetKeyType().String(), "SSH_KEY_TYPE_"), "_", "-")),
			k.GetFingerprint())
	}
	return err
}

func newSSHCACmd() *cobra.Command {
	ca := &cobra.Command{Use: "ca", Short: "SSH certificate authorities: public keys, create, rotate, retire"}

	var name, certType string
	var knownHosts bool
	pub := &cobra.Command{
		Use:   "pub [--ca NAME] [--type user|host] [--known-hosts]",
		Short: "Print the published CA public keys",
		Long: `Print the published (active and retiring) CA public keys: by default one
per line, the content of sshd's TrustedUserCAKeys file; with --known-hosts the
"@cert-authority * KEY" lines of the host CAs for ssh's known_hosts.`,
		Args: cobra.NoArgs,
	}
	pub.Flags().StringVar(&name, "ca", "", "only this CA")
	pub.Flags().StringVar(&certType, "type", "", "only CAs of this type: user or host (default: user, or host with --known-hosts)")
	pub.Flags().BoolVar(&knownHosts, "known-hosts", false, "print @cert-authority lines for known_hosts")
	pubCF := addClientFlags(pub)
	pubOut := addOutput(pub)
	pub.RunE = func(cmd *cobra.Command, _ []string) error {
		if certType == "" && name == "" {
			certType = "user"
			if knownHosts {
				certType = "host"
			}
		}
		ct, err := parseCertType(certType)
		if err != nil {
			return err
		}
		resp, err := sshCallFor(cmd, pubCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.ListSSHCAPublicKeysResponse, error) {
			return c.ListSSHCAPublicKeys(ctx, &hsmgatev1.ListSSHCAPublicKeysRequest{Name: name, CertType: ct})
		})
		if err != nil {
			return fmt.Errorf("ssh ca pub: %w", err)
		}
		return pubOut.print(resp, func(w io.Writer) error {
			prefix := ""
			if knownHosts {
				prefix = "@cert-authority * "
			}
			for _, k := range resp.GetKeys() {
				if _, err := fmt.Fprintf(w, "%s%s hsmgate:%s:v%d\n", prefix, k.GetPublicKey(), k.GetCa(), k.GetVersion()); err != nil {
					return err
				}
			}
			return nil
		})
	}

	var keyType, rsaAlg, keyURI string
	var overlap time.Duration
	create := &cobra.Command{
		Use:   "create NAME --type user|host [--key-type ed25519]",
		Short: "Create a CA whose key is generated in the HSM",
		Args:  cobra.ExactArgs(1),
	}
	create.Flags().StringVar(&certType, "type", "", "user or host (required)")
	create.Flags().StringVar(&keyType, "key-type", "ed25519", "ecdsa-p256, ecdsa-p384, ed25519, rsa-3072 or rsa-4096")
	create.Flags().StringVar(&rsaAlg, "rsa-algorithm", "", "rsa-sha2-512 (default) or rsa-sha2-256")
	create.Flags().StringVar(&keyURI, "key-uri", "", "adopt this existing HSM key instead of generating one: RFC 7512 URI 'pkcs11:token=...;object=...;id=%01' (sensitive, non-extractable; its type unless --key-type is given; never destroyed by hsmgate)")
	create.Flags().DurationVar(&overlap, "rotation-overlap", 0, "how long a rotated-out key stays published (0: until retired)")
	createCF := addClientFlags(create)
	createOut := addOutput(create)
	create.RunE = func(cmd *cobra.Command, args []string) error {
		ct, err := parseCertType(certType)
		if err != nil {
			return err
		}
		var kt hsmgatev1.SSHKeyType // unspecified: the adopted key's type
		if keyURI == "" || cmd.Flags().Changed("key-type") {
			if kt, err = parseSSHKeyType(keyType); err != nil {
				return err
			}
		}
		req := &hsmgatev1.CreateSSHCARequest{Name: args[0], CertType: ct, KeyType: kt, RsaSignatureAlgorithm: rsaAlg, KeyUri: keyURI}
		if overlap > 0 {
			req.RotationOverlap = durationpb.New(overlap)
		}
		resp, err := sshCallFor(cmd, createCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.CreateSSHCAResponse, error) {
			return c.CreateSSHCA(ctx, req)
		})
		if err != nil {
			return fmt.Errorf("ssh ca create: %w", err)
		}
		return createOut.print(resp, func(w io.Writer) error { return printCA(w, resp.GetCa()) })
	}

	rotate := &cobra.Command{Use: "rotate NAME [--key-type T]", Short: "Make a new active key; the old one keeps being published until retired", Args: cobra.ExactArgs(1)}
	rotate.Flags().StringVar(&keyType, "key-type", "", "type of the new key (default: the current type)")
	rotateCF := addClientFlags(rotate)
	rotateOut := addOutput(rotate)
	rotate.RunE = func(cmd *cobra.Command, args []string) error {
		kt, err := parseSSHKeyType(keyType)
		if err != nil {
			return err
		}
		resp, err := sshCallFor(cmd, rotateCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.RotateSSHCAResponse, error) {
			return c.RotateSSHCA(ctx, &hsmgatev1.RotateSSHCARequest{Name: args[0], KeyType: kt})
		})
		if err != nil {
			return fmt.Errorf("ssh ca rotate: %w", err)
		}
		return rotateOut.print(resp, func(w io.Writer) error { return printCA(w, resp.GetCa()) })
	}

	var version uint32
	retire := &cobra.Command{Use: "retire NAME --version N", Short: "Stop publishing a rotated-out key version", Args: cobra.ExactArgs(1)}
	retire.Flags().Uint32Var(&version, "version", 0, "key version to retire (required)")
	_ = retire.MarkFlagRequired("version")
	retireCF := addClientFlags(retire)
	retireOut := addOutput(retire)
	retire.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := sshCallFor(cmd, retireCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.RetireSSHCAKeyResponse, error) {
			return c.RetireSSHCAKey(ctx, &hsmgatev1.RetireSSHCAKeyRequest{Name: args[0], Version: version})
		})
		if err != nil {
			return fmt.Errorf("ssh ca retire: %w", err)
		}
		return retireOut.print(resp, func(w io.Writer) error { return printCA(w, resp.GetCa()) })
	}

	list := &cobra.Command{Use: "list", Short: "List CAs and their key versions", Args: cobra.NoArgs}
	listCF := addClientFlags(list)
	listOut := addOutput(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := sshCallFor(cmd, listCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.ListSSHCAsResponse, error) {
			return c.ListSSHCAs(ctx, &hsmgatev1.ListSSHCAsRequest{})
		})
		if err != nil {
			return fmt.Errorf("ssh ca list: %w", err)
		}
		return listOut.print(resp, func(w io.Writer) error {
			for _, ca := range resp.GetCas() {
				if err := printCA(w, ca); err != nil {
					return err
				}
			}
			return nil
		})
	}
	ca.AddCommand(pub, create, rotate, retire, list)
	return ca
}

func newSSHRoleCmd() *cobra.Command {
	role := &cobra.Command{Use: "role", Short: "SSH roles: write (create or replace from JSON), read, list, delete"}
	var file string
	write := &cobra.Command{
		Use:   "write NAME -f ROLE.json",
		Short: "Create or replace a role from its JSON form (hsmgate.v1.SSHRole)",
		Example: `  echo '{"ca":"users","allowedPrincipals":["{{identity.name}}"],"defaultPrincipals":["{{identity.name}}"],
         "maxTtl":"28800s","allowedExtensions":["permit-pty"],"defaultExtensions":{"permit-pty":""}}' |
    hsmgate ssh role write eng -f -`,
		Args: cobra.ExactArgs(1),
	}
	write.Flags().StringVarP(&file, "file", "f", "", "JSON file, - for standard input (required)")
	_ = write.MarkFlagRequired("file")
	writeCF := addClientFlags(write)
	writeOut := addOutput(write)
	write.RunE = func(cmd *cobra.Command, args []string) error {
		b, err := readInputFile(cmd, "file", file)
		if err != nil {
			return err
		}
		r := &hsmgatev1.SSHRole{}
		if err := protojson.Unmarshal(b, r); err != nil {
			return usageError{fmt.Errorf("role JSON: %w", err)}
		}
		r.Name = args[0]
		got, err := sshCallFor(cmd, writeCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.SSHRole, error) {
			resp, err := c.CreateSSHRole(ctx, &hsmgatev1.CreateSSHRoleRequest{Role: r})
			if status.Code(err) == codes.AlreadyExists {
				uresp, uerr := c.UpdateSSHRole(ctx, &hsmgatev1.UpdateSSHRoleRequest{Role: r})
				return uresp.GetRole(), uerr
			}
			return resp.GetRole(), err
		})
		if err != nil {
			return fmt.Errorf("ssh role write: %w", err)
		}
		return writeOut.print(got, func(w io.Writer) error { return printProtoJSON(w, got) })
	}
	read := &cobra.Command{Use: "read NAME", Short: "Print a role as JSON", Args: cobra.ExactArgs(1)}
	readCF := addClientFlags(read)
	readOut := addOutput(read)
	read.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := sshCallFor(cmd, readCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.GetSSHRoleResponse, error) {
			return c.GetSSHRole(ctx, &hsmgatev1.GetSSHRoleRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("ssh role read: %w", err)
		}
		return readOut.print(resp.GetRole(), func(w io.Writer) error { return printProtoJSON(w, resp.GetRole()) })
	}
	list := &cobra.Command{Use: "list", Short: "List role names", Args: cobra.NoArgs}
	listCF := addClientFlags(list)
	listOut := addOutput(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := sshCallFor(cmd, listCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.ListSSHRolesResponse, error) {
			return c.ListSSHRoles(ctx, &hsmgatev1.ListSSHRolesRequest{})
		})
		if err != nil {
			return fmt.Errorf("ssh role list: %w", err)
		}
		return listOut.print(resp, func(w io.Writer) error {
			for _, r := range resp.GetRoles() {
				if _, err := fmt.Fprintf(w, "%s\t%s\tca=%s\n", r.GetName(),
					strings.ToLower(strings.TrimPrefix(r.GetCertType().String(), "SSH_CERT_TYPE_")), r.GetCa()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	del := &cobra.Command{Use: "delete NAME", Short: "Delete a role", Args: cobra.ExactArgs(1)}
	delCF := addClientFlags(del)
	delOut := addOutput(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := sshCallFor(cmd, delCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.DeleteSSHRoleResponse, error) {
			return c.DeleteSSHRole(ctx, &hsmgatev1.DeleteSSHRoleRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("ssh role delete: %w", err)
		}
		return delOut.print(resp, func(io.Writer) error { return nil })
	}
	role.AddCommand(write, read, list, del)
	return role
}

type revokeOptions struct {
	serial                 uint64
	keyID, keyFile, fp, ca string
	reason                 string
}

func newSSHRevokeCmd() *cobra.Command {
	o := &revokeOptions{}
	cmd := &cobra.Command{
		Use:   "revoke (--serial N | --key-id ID | --key FILE | --fingerprint SHA256:...) [--ca NAME]",
		Short: "Revoke certificates or keys; the KRL is regenerated at once",
		Long: `Revoke certificates or keys; the KRL is regenerated at once.

--serial revokes one certificate (under the CA key that issued it, or under
every key of --ca); --key-id revokes every certificate with that key ID (of
--ca, or of any CA); --key (a public key or certificate file) and
--fingerprint revoke a key and every certificate for it. Needs "revoke" on
ssh/cas/<ca>, or on ssh/krl without --ca.`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.Uint64Var(&o.serial, "serial", 0, "certificate serial")
	fs.StringVar(&o.keyID, "key-id", "", "certificate key ID")
	fs.StringVar(&o.keyFile, "key", "", `public key or certificate file, "-" for stdin`)
	fs.StringVar(&o.fp, "fingerprint", "", "SHA256:... fingerprint of a public key")
	fs.StringVar(&o.ca, "ca", "", "CA the serial or key ID belongs to")
	fs.StringVar(&o.reason, "reason", "", "free text kept with the revocation")
	cmd.MarkFlagsMutuallyExclusive("serial", "key-id", "key", "fingerprint")
	cmd.MarkFlagsOneRequired("serial", "key-id", "key", "fingerprint")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req, err := o.request(cmd)
		if err != nil {
			return err
		}
		resp, err := sshCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.RevokeSSHResponse, error) {
			return c.RevokeSSH(ctx, req)
		})
		if err != nil {
			return fmt.Errorf("ssh revoke: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "revoked; KRL version %d\n", resp.GetKrlVersion())
			return err
		})
	}
	return cmd
}

func (o *revokeOptions) request(cmd *cobra.Command) (*hsmgatev1.RevokeSSHRequest, error) {
	req := &hsmgatev1.RevokeSSHRequest{Ca: o.ca, Reason: o.reason}
	switch {
	case o.serial != 0:
		req.Target = &hsmgatev1.RevokeSSHRequest_Serial{Serial: o.serial}
	case o.keyID != "":
		req.Target = &hsmgatev1.RevokeSSHRequest_KeyId{KeyId: o.keyID}
	case o.keyFile != "":
		b, err := readInputFile(cmd, "key", o.keyFile)
		if err != nil {
			return nil, err
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey(b); err != nil {
			return nil, usageError{fmt.Errorf("%s: not a public key: %w", o.keyFile, err)}
		}
		req.Target = &hsmgatev1.RevokeSSHRequest_PublicKey{PublicKey: strings.TrimSpace(string(b))}
	case o.fp != "":
		req.Target = &hsmgatev1.RevokeSSHRequest_Sha256Fingerprint{Sha256Fingerprint: o.fp}
	default:
		return nil, usageError{fmt.Errorf("one of --serial, --key-id, --key, --fingerprint is required")}
	}
	return req, nil
}

func newSSHKRLCmd() *cobra.Command {
	var output, show string
	cmd := &cobra.Command{
		Use:   "krl [--out FILE] [--show FILE]",
		Short: "Fetch the KRL for sshd's RevokedKeys, or describe one",
		Long: `Fetch the current KRL. With --out it is written (binary) to FILE, for sshd's
RevokedKeys; without, its contents are described (-o json: as an object).
--show FILE describes a local KRL file instead, without contacting the
server.`,
		Example: `  hsmgate ssh krl --out /etc/ssh/revoked.krl
  hsmgate ssh krl --show /etc/ssh/revoked.krl
  hsmgate ssh krl -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&output, "out", "", "write the binary KRL to FILE")
	cmd.Flags().StringVar(&show, "show", "", "describe this local KRL file")
	cmd.MarkFlagsMutuallyExclusive("out", "show")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var b []byte
		if show != "" {
			var err error
			if b, err = os.ReadFile(show); err != nil {
				return err
			}
		} else {
			resp, err := sshCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.GetKRLResponse, error) {
				return c.GetKRL(ctx, &hsmgatev1.GetKRLRequest{})
			})
			if err != nil {
				return fmt.Errorf("ssh krl: %w", err)
			}
			b = resp.GetKrl()
		}
		if output != "" {
			if err := sshWriteFile(output, b); err != nil {
				return err
			}
			if out.table() {
				return nil
			}
		}
		k, err := krl.Parse(b)
		if err != nil {
			return fmt.Errorf("ssh krl: %w", err)
		}
		k.Normalize()
		return out.print(krlDoc(k), func(w io.Writer) error { return describeKRL(w, k) })
	}
	return cmd
}

// sshWriteFile replaces path so that sshd never reads a partial KRL.
func sshWriteFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// describeKRL prints a KRL like `ssh-keygen -Q -l`.
func describeKRL(w io.Writer, k *krl.KRL) error {
	fmt.Fprintf(w, "# KRL version %d\n# Generated at %s\n", k.Version, k.GeneratedDate.Local().Format(time.RFC3339))
	if k.Comment != "" {
		fmt.Fprintf(w, "# Comment: %s\n", k.Comment)
	}
	for _, s := range k.Certs {
		if len(s.CAKey) == 0 {
			fmt.Fprintln(w, "\n# Wildcard CA")
		} else if ca, err := ssh.ParsePublicKey(s.CAKey); err == nil {
			fmt.Fprintf(w, "\n# CA key %s %s\n", ca.Type(), ssh.FingerprintSHA256(ca))
		} else {
			fmt.Fprintln(w, "\n# CA key (unparseable)")
		}
		for _, r := range s.Serials {
			if r.Lo == r.Hi {
				fmt.Fprintf(w, "serial: %d\n", r.Lo)
			} else {
				fmt.Fprintf(w, "serial: %d-%d\n", r.Lo, r.Hi)
			}
		}
		for _, id := range s.KeyIDs {
			fmt.Fprintf(w, "id: %s\n", id)
		}
	}
	if len(k.ExplicitKeys) > 0 {
		fmt.Fprintln(w, "\n# Explicit keys")
		for _, blob := range k.ExplicitKeys {
			if key, err := ssh.ParsePublicKey(blob); err == nil {
				fmt.Fprintf(w, "key: %s", ssh.MarshalAuthorizedKey(key))
			}
		}
	}
	for _, h := range k.SHA256 {
		fmt.Fprintf(w, "hash: SHA256:%s\n", base64.RawStdEncoding.EncodeToString(h))
	}
	for _, h := range k.SHA1 {
		fmt.Fprintf(w, "hash: SHA1:%s\n", base64.RawStdEncoding.EncodeToString(h))
	}
	return nil
}

// krlJSON is a KRL as the printer's JSON: what describeKRL prints.
type krlJSON struct {
	Version       uint64           `json:"version"`
	GeneratedTime string           `json:"generatedTime"`
	Comment       string           `json:"comment"`
	Certs         []krlCertSection `json:"certs"`
	ExplicitKeys  []string         `json:"explicitKeys"`
	SHA256        []string         `json:"sha256"`
	SHA1          []string         `json:"sha1"`
}

// krlCertSection is one CA's revoked serials and key IDs; an empty
// caFingerprint is the wildcard section (any CA).
type krlCertSection struct {
	CAKeyType     string   `json:"caKeyType"`
	CAFingerprint string   `json:"caFingerprint"`
	Serials       []string `json:"serials"`
	KeyIDs        []string `json:"keyIds"`
}

func krlDoc(k *krl.KRL) krlJSON {
	d := krlJSON{Version: k.Version, GeneratedTime: k.GeneratedDate.UTC().Format(time.RFC3339), Comment: k.Comment,
		Certs: []krlCertSection{}, ExplicitKeys: []string{}, SHA256: []string{}, SHA1: []string{}}
	for _, s := range k.Certs {
		cs := krlCertSection{Serials: []string{}, KeyIDs: append([]string{}, s.KeyIDs...)}
		if ca, err := ssh.ParsePublicKey(s.CAKey); err == nil {
			cs.CAKeyType, cs.CAFingerprint = ca.Type(), ssh.FingerprintSHA256(ca)
		}
		for _, r := range s.Serials {
			if r.Lo == r.Hi {
				cs.Serials = append(cs.Serials, fmt.Sprint(r.Lo))
			} else {
				cs.Serials = append(cs.Serials, fmt.Sprintf("%d-%d", r.Lo, r.Hi))
			}
		}
		d.Certs = append(d.Certs, cs)
	}
	for _, blob := range k.ExplicitKeys {
		if key, err := ssh.ParsePublicKey(blob); err == nil {
			d.ExplicitKeys = append(d.ExplicitKeys, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))))
		}
	}
	for _, h := range k.SHA256 {
		d.SHA256 = append(d.SHA256, "SHA256:"+base64.RawStdEncoding.EncodeToString(h))
	}
	for _, h := range k.SHA1 {
		d.SHA1 = append(d.SHA1, "SHA1:"+base64.RawStdEncoding.EncodeToString(h))
	}
	return d
}
