package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/client"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// EnvSSHRole names the role `hsmgate ssh sign` uses without --role.
const EnvSSHRole = "HSMGATE_SSH_ROLE"

// newSSHCmd is `hsmgate ssh`: certificates for engineers and hosts, the CA
// public keys, revocation and the KRL.
func newSSHCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh",
		Short: "SSH certificates: sign your key, sign host keys, CA keys, revocation, KRL",
		Long: `SSH certificates from hsmgate's SSH CA.

  hsmgate ssh sign ~/.ssh/id_ed25519.pub       # writes ~/.ssh/id_ed25519-cert.pub
  hsmgate ssh host sign --role web --principal web1.example.com /etc/ssh/ssh_host_ed25519_key.pub
  hsmgate ssh ca pub > /etc/ssh/trusted_user_ca_keys
  hsmgate ssh ca pub --known-hosts >> ~/.ssh/known_hosts
  hsmgate ssh revoke --serial 1234567890
  hsmgate ssh krl --out /etc/ssh/revoked.krl`,
	}
	cmd.AddCommand(newSSHSignCmd(), newSSHHostCmd(), newSSHCACmd(), newSSHRoleCmd(), newSSHRevokeCmd(), newSSHKRLCmd())
	return cmd
}

// sshCallFor is the one SSHCAService call of a verb (see callFor).
func sshCallFor[R any](cmd *cobra.Command, cf *clientFlags, fn func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (R, error)) (R, error) {
	return callFor(cmd, cf, hsmgatev1.NewSSHCAServiceClient, fn)
}

// signOptions are the flags of the sign verbs.
type signOptions struct {
	role       string
	principals []string
	ttl        time.Duration
	extensions []string
	options    []string
	output     string
}

func addSignFlags(cmd *cobra.Command, o *signOptions, host bool) {
	fs := cmd.Flags()
	fs.StringArrayVar(&o.principals, "principal", nil, "principal to request (repeatable; default: the role's default principals)")
	fs.DurationVar(&o.ttl, "ttl", 0, "certificate lifetime, positive (default: the role's default_ttl)")
	fs.StringVar(&o.output, "out", "", "certificate file (default: KEY-cert.pub next to the key; required for a key from stdin)")
	if !host {
		fs.StringArrayVar(&o.extensions, "extension", nil, "extension NAME or NAME=VALUE to request (repeatable; default: the role's default extensions)")
		fs.StringArrayVar(&o.options, "option", nil, "critical option NAME=VALUE to request, e.g. source-address=10.0.0.0/8 (repeatable)")
	}
}

func newSSHSignCmd() *cobra.Command {
	o := &signOptions{}
	cmd := &cobra.Command{
		Use:   "sign [flags] [PUBLIC_KEY_FILE]",
		Short: "Get a user certificate for your public key",
		Long: `Get a user certificate for your public key.

Writes the certificate next to the key (id_ed25519.pub -> id_ed25519-cert.pub,
where ssh finds it), or to --out, and prints its principals and validity. "-"
reads the key from stdin (then --out is required). Without a file,
the first of ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_ed25519_sk.pub,
id_ecdsa_sk.pub and id_rsa.pub that exists is used. The role comes
from --role, else $` + EnvSSHRole + `, else "default". Needs the "ssh-sign"
capability on ssh/roles/<role>.`,
		Example: `  hsmgate ssh sign ~/.ssh/id_ed25519.pub
  hsmgate ssh sign --role eng --principal deploy --ttl 2h ~/.ssh/id_ed25519.pub
  ssh-add -L | head -n 1 | hsmgate ssh sign - --out ~/.ssh/agent-cert.pub`,
		Args: cobra.MaximumNArgs(1),
	}
	cmd.Flags().StringVar(&o.role, "role", "", "role to sign under (default $"+EnvSSHRole+", else \"default\")")
	addSignFlags(cmd, o, false)
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if o.role == "" {
			o.role = os.Getenv(EnvSSHRole)
		}
		if o.role == "" {
			o.role = "default"
		}
		file, err := userKeyFile(args)
		if err != nil {
			return err
		}
		return sshSign(cmd, cf, out, false, o, file)
	}
	return cmd
}

// userKeyFile is the key named on the command line, else the first of the
// usual ~/.ssh public keys that exists.
func userKeyFile(args []string) (string, error) {
	if len(args) == 1 {
		return args[0], nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	for _, n := range []string{"id_ed25519.pub", "id_ecdsa.pub", "id_ed25519_sk.pub", "id_ecdsa_sk.pub", "id_rsa.pub"} {
		p := filepath.Join(home, ".ssh", n)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", usageError{fmt.Errorf("no public key found in %s; name one", filepath.Join(home, ".ssh"))}
}

func newSSHHostCmd() *cobra.Command {
	host := &cobra.Command{Use: "host", Short: "Host certificates"}
	o := &signOptions{}
	cmd := &cobra.Command{
		Use:   "sign --role ROLE [flags] HOST_PUBLIC_KEY_FILE",
		Short: "Get a host certificate for a host's public key",
		Long: `Get a host certificate for a host's public key.

Writes KEY-cert.pub next to the key; point sshd's HostCertificate at it. Needs
the "ssh-sign" capability on ssh/roles/<role>.`,
		Example: `  hsmgate ssh host sign --role web --principal web1.example.com /etc/ssh/ssh_host_ed25519_key.pub`,
		Args:    cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&o.role, "role", "", "host role to sign under (required)")
	_ = cmd.MarkFlagRequired("role")
	addSignFlags(cmd, o, true)
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return sshSign(cmd, cf, out, true, o, args[0])
	}
	host.AddCommand(cmd)
	return host
}

// certPath is where ssh looks for the certificate of key file path.
func certPath(path string) string { return client.CertPath(path) }

func parseKV(list []string, needValue bool) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, s := range list {
		k, v, ok := strings.Cut(s, "=")
		if k == "" || (needValue && !ok) {
			return nil, usageError{fmt.Errorf("%q: want NAME=VALUE", s)}
		}
		m[k] = v
	}
	return m, nil
}

// sshSign signs the key in file, writes the certificate and prints it
// (as JSON or YAML: the SSHSignResult).
func sshSign(cmd *cobra.Command, cf *clientFlags, out *output, host bool, o *signOptions, file string) error {
	verb := "ssh sign"
	if host {
		verb = "ssh host sign"
	}
	var pub []byte
	var err error
	if file == "-" {
		// A key from stdin (an agent's: ssh-add -L) has no place beside it.
		if o.output == "" {
			return usageError{fmt.Errorf("a public key from stdin (-) needs --out FILE for the certificate")}
		}
		pub, err = readInputFile(cmd, "key", "-")
	} else {
		pub, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	req, err := sshSignRequest(o, host, file, pub)
	if err != nil {
		return err
	}
	c, err := clientFor(cmd, cf, func(ctx context.Context, cl *client.Client) (*client.SSHCertificate, error) {
		return cl.SSH.Sign(ctx, req)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	path, err := sshWriteCert(o, file, c)
	if err != nil {
		return err
	}
	res := sshCertDoc(c)
	return out.print(res, func(w io.Writer) error { return sshPrintSigned(w, path, res) })
}

// sshSignRequest is the client request of the flags for pub, the public
// key read from file.
func sshSignRequest(o *signOptions, host bool, file string, pub []byte) (client.SSHSignRequest, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		return client.SSHSignRequest{}, usageError{fmt.Errorf("%s: not a public key: %w", file, err)}
	}
	exts, err := parseKV(o.extensions, false)
	if err != nil {
		return client.SSHSignRequest{}, err
	}
	opts, err := parseKV(o.options, true)
	if err != nil {
		return client.SSHSignRequest{}, err
	}
	if o.ttl < 0 {
		return client.SSHSignRequest{}, usageError{fmt.Errorf("--ttl %s: a certificate lifetime must be positive", o.ttl)}
	}
	return client.SSHSignRequest{Role: o.role, PublicKey: key, Principals: o.principals, TTL: o.ttl,
		Extensions: exts, CriticalOptions: opts, Host: host}, nil
}

// sshCertDoc is a certificate from the client as the SSHSignResult message
// (the JSON and YAML document of the sign verbs).
func sshCertDoc(c *client.SSHCertificate) *hsmgatev1.SSHSignResult {
	return &hsmgatev1.SSHSignResult{Certificate: c.AuthorizedKey, Serial: c.Cert.Serial, KeyId: c.Cert.KeyId,
		Principals: c.Cert.ValidPrincipals, ValidAfter: sshTime(c.Cert.ValidAfter), ValidBefore: sshTime(c.Cert.ValidBefore),
		Ca: c.CA, CaVersion: c.CAVersion}
}

// sshTime is a certificate time; "forever" (past int64 seconds) has none.
func sshTime(t uint64) *timestamppb.Timestamp {
	if t > math.MaxInt64 {
		return nil
	}
	return timestamppb.New(time.Unix(int64(t), 0))
}

// sshWriteCert writes the certificate to --out, else next to the key, and
// returns where.
func sshWriteCert(o *signOptions, file string, c *client.SSHCertificate) (string, error) {
	path := o.output
	if path == "" {
		path = certPath(file)
	}
	return path, os.WriteFile(path, []byte(c.AuthorizedKey+"\n"), 0o644)
}

func sshPrintSigned(w io.Writer, path string, res *hsmgatev1.SSHSignResult) error {
	_, err := fmt.Fprintf(w, "certificate:  %s\nprincipals:   %s\nvalid:        %s to %s (%s)\nserial:       %d\nkey id:       %s\nca:           %s (version %d)\n",
		path, strings.Join(res.GetPrincipals(), ", "),
		res.GetValidAfter().AsTime().Local().Format(time.RFC3339), res.GetValidBefore().AsTime().Local().Format(time.RFC3339),
		res.GetValidBefore().AsTime().Sub(res.GetValidAfter().AsTime()).Round(time.Second),
		res.GetSerial(), res.GetKeyId(), res.GetCa(), res.GetCaVersion())
	return err
}
