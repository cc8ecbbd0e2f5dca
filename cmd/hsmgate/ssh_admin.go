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
	"google.golang.org/protobuf/proto"
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

func printCA(w io.Writer, ca *hsmgatev1.SSHCA) {
	fmt.Fprintf(w, "%s (%s)\n", ca.GetName(), strings.ToLower(strings.TrimPrefix(ca.GetCertType().String(), "SSH_CERT_TYPE_")))
	for _, k := range ca.GetKeys() {
		fmt.Fprintf(w, "  v%d %-8s %-10s %s\n", k.GetVersion(),
			strings.ToLower(strings.TrimPrefix(k.GetState().String(), "SSHCA_KEY_STATE_")),
			strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k.GetKeyType().String(), "SSH_KEY_TYPE_"), "_", "-")),
			k.GetFingerprint())
	}
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
		return sshCall(cmd, pubCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.ListSSHCAPublicKeys(ctx, &hsmgatev1.ListSSHCAPublicKeysRequest{Name: name, CertType: ct})
			if err != nil {
				return fmt.Errorf("ssh ca pub: %w", err)
			}
			for _, k := range resp.GetKeys() {
				prefix := ""
				if knownHosts {
					prefix = "@cert-authority * "
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s%s hsmgate:%s:v%d\n", prefix, k.GetPublicKey(), k.GetCa(), k.GetVersion())
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
		return sshCall(cmd, createCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.CreateSSHCA(ctx, req)
			if err != nil {
				return fmt.Errorf("ssh ca create: %w", err)
			}
			printCA(cmd.OutOrStdout(), resp.GetCa())
			return nil
		})
	}

	rotate := &cobra.Command{Use: "rotate NAME [--key-type T]", Short: "Make a new active key; the old one keeps being published until retired", Args: cobra.ExactArgs(1)}
	rotate.Flags().StringVar(&keyType, "key-type", "", "type of the new key (default: the current type)")
	rotateCF := addClientFlags(rotate)
	rotate.RunE = func(cmd *cobra.Command, args []string) error {
		kt, err := parseSSHKeyType(keyType)
		if err != nil {
			return err
		}
		return sshCall(cmd, rotateCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.RotateSSHCA(ctx, &hsmgatev1.RotateSSHCARequest{Name: args[0], KeyType: kt})
			if err != nil {
				return fmt.Errorf("ssh ca rotate: %w", err)
			}
			printCA(cmd.OutOrStdout(), resp.GetCa())
			return nil
		})
	}

	var version uint32
	retire := &cobra.Command{Use: "retire NAME --version N", Short: "Stop publishing a rotated-out key version", Args: cobra.ExactArgs(1)}
	retire.Flags().Uint32Var(&version, "version", 0, "key version to retire (required)")
	_ = retire.MarkFlagRequired("version")
	retireCF := addClientFlags(retire)
	retire.RunE = func(cmd *cobra.Command, args []string) error {
		return sshCall(cmd, retireCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.RetireSSHCAKey(ctx, &hsmgatev1.RetireSSHCAKeyRequest{Name: args[0], Version: version})
			if err != nil {
				return fmt.Errorf("ssh ca retire: %w", err)
			}
			printCA(cmd.OutOrStdout(), resp.GetCa())
			return nil
		})
	}

	list := &cobra.Command{Use: "list", Short: "List CAs and their key versions", Args: cobra.NoArgs}
	listCF := addClientFlags(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		return sshCall(cmd, listCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.ListSSHCAs(ctx, &hsmgatev1.ListSSHCAsRequest{})
			if err != nil {
				return fmt.Errorf("ssh ca list: %w", err)
			}
			for _, ca := range resp.GetCas() {
				printCA(cmd.OutOrStdout(), ca)
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
	write.RunE = func(cmd *cobra.Command, args []string) error {
		var b []byte
		var err error
		if file == "-" {
			b, err = io.ReadAll(cmd.InOrStdin())
		} else {
			b, err = os.ReadFile(file)
		}
		if err != nil {
			return err
		}
		r := &hsmgatev1.SSHRole{}
		if err := protojson.Unmarshal(b, r); err != nil {
			return usageError{fmt.Errorf("role JSON: %w", err)}
		}
		r.Name = args[0]
		return sshCall(cmd, writeCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			var got *hsmgatev1.SSHRole
			resp, err := c.CreateSSHRole(ctx, &hsmgatev1.CreateSSHRoleRequest{Role: r})
			if err == nil {
				got = resp.GetRole()
			} else if status.Code(err) == codes.AlreadyExists {
				uresp, uerr := c.UpdateSSHRole(ctx, &hsmgatev1.UpdateSSHRoleRequest{Role: r})
				if uerr != nil {
					return fmt.Errorf("ssh role write: %w", uerr)
				}
				got = uresp.GetRole()
			} else {
				return fmt.Errorf("ssh role write: %w", err)
			}
			return printJSON(cmd.OutOrStdout(), got)
		})
	}
	read := &cobra.Command{Use: "read NAME", Short: "Print a role as JSON", Args: cobra.ExactArgs(1)}
	readCF := addClientFlags(read)
	read.RunE = func(cmd *cobra.Command, args []string) error {
		return sshCall(cmd, readCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.GetSSHRole(ctx, &hsmgatev1.GetSSHRoleRequest{Name: args[0]})
			if err != nil {
				return fmt.Errorf("ssh role read: %w", err)
			}
			return printJSON(cmd.OutOrStdout(), resp.GetRole())
		})
	}
	list := &cobra.Command{Use: "list", Short: "List role names", Args: cobra.NoArgs}
	listCF := addClientFlags(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		return sshCall(cmd, listCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.ListSSHRoles(ctx, &hsmgatev1.ListSSHRolesRequest{})
			if err != nil {
				return fmt.Errorf("ssh role list: %w", err)
			}
			for _, r := range resp.GetRoles() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\tca=%s\n", r.GetName(),
					strings.ToLower(strings.TrimPrefix(r.GetCertType().String(), "SSH_CERT_TYPE_")), r.GetCa())
			}
			return nil
		})
	}
	del := &cobra.Command{Use: "delete NAME", Short: "Delete a role", Args: cobra.ExactArgs(1)}
	delCF := addClientFlags(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		return sshCall(cmd, delCF, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			if _, err := c.DeleteSSHRole(ctx, &hsmgatev1.DeleteSSHRoleRequest{Name: args[0]}); err != nil {
				return fmt.Errorf("ssh role delete: %w", err)
			}
			return nil
		})
	}
	role.AddCommand(write, read, list, del)
	return role
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
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
	fs.StringVar(&o.keyFile, "key", "", "public key or certificate file")
	fs.StringVar(&o.fp, "fingerprint", "", "SHA256:... fingerprint of a public key")
	fs.StringVar(&o.ca, "ca", "", "CA the serial or key ID belongs to")
	fs.StringVar(&o.reason, "reason", "", "free text kept with the revocation")
	cmd.MarkFlagsMutuallyExclusive("serial", "key-id", "key", "fingerprint")
	cmd.MarkFlagsOneRequired("serial", "key-id", "key", "fingerprint")
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req, err := o.request()
		if err != nil {
			return err
		}
		return sshCall(cmd, cf, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.RevokeSSH(ctx, req)
			if err != nil {
				return fmt.Errorf("ssh revoke: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked; KRL version %d\n", resp.GetKrlVersion())
			return nil
		})
	}
	return cmd
}

func (o *revokeOptions) request() (*hsmgatev1.RevokeSSHRequest, error) {
	req := &hsmgatev1.RevokeSSHRequest{Ca: o.ca, Reason: o.reason}
	switch {
	case o.serial != 0:
		req.Target = &hsmgatev1.RevokeSSHRequest_Serial{Serial: o.serial}
	case o.keyID != "":
		req.Target = &hsmgatev1.RevokeSSHRequest_KeyId{KeyId: o.keyID}
	case o.keyFile != "":
		b, err := os.ReadFile(o.keyFile)
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
		Use:   "krl [-o FILE] [--show FILE]",
		Short: "Fetch the KRL for sshd's RevokedKeys, or describe one",
		Long: `Fetch the current KRL. With -o it is written (binary) to FILE, for sshd's
RevokedKeys; without, its contents are described. --show FILE describes a
local KRL file instead, without contacting the server.`,
		Example: `  hsmgate ssh krl -o /etc/ssh/revoked.krl
  hsmgate ssh krl --show /etc/ssh/revoked.krl`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the binary KRL to FILE")
	cmd.Flags().StringVar(&show, "show", "", "describe this local KRL file")
	cf := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if show != "" {
			b, err := os.ReadFile(show)
			if err != nil {
				return err
			}
			return describeKRL(cmd.OutOrStdout(), b)
		}
		return sshCall(cmd, cf, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) error {
			resp, err := c.GetKRL(ctx, &hsmgatev1.GetKRLRequest{})
			if err != nil {
				return fmt.Errorf("ssh krl: %w", err)
			}
			if output == "" {
				return describeKRL(cmd.OutOrStdout(), resp.GetKrl())
			}
			return sshWriteFile(output, resp.GetKrl())
		})
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
func describeKRL(w io.Writer, b []byte) error {
	k, err := krl.Parse(b)
	if err != nil {
		return err
	}
	k.Normalize()
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
