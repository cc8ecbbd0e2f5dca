package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

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
		return sshSign(cmd, cf, out, hsmgatev1.SSHCertType_SSH_CERT_TYPE_USER, o, file)
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
		return sshSign(cmd, cf, out, hsmgatev1.SSHCertType_SSH_CERT_TYPE_HOST, o, args[0])
	}
	host.AddCommand(cmd)
	return host
}

// certPath is where ssh looks for the certificate of key file path.
func certPath(path string) string {
	return strings.TrimSuffix(path, ".pub") + "-cert.pub"
}

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
func sshSign(cmd *cobra.Command, cf *clientFlags, out *output, ct hsmgatev1.SSHCertType, o *signOptions, file string) error {
	verb := "ssh sign"
	if ct == hsmgatev1.SSHCertType_SSH_CERT_TYPE_HOST {
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
	item, err := sshSignItem(o, file, pub)
	if err != nil {
		return err
	}
	res, err := sshCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.SSHCAServiceClient) (*hsmgatev1.SSHSignResult, error) {
		return sshSignKey(ctx, c, ct, o.role, item)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	path, err := sshWriteCert(o, file, res)
	if err != nil {
		return err
	}
	return out.print(res, func(w io.Writer) error { return sshPrintSigned(w, path, res) })
}

// sshSignItem is the request item for pub, the public key read from file.
func sshSignItem(o *signOptions, file string, pub []byte) (*hsmgatev1.SSHSignItem, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: not a public key: %w", file, err)}
	}
	exts, err := parseKV(o.extensions, false)
	if err != nil {
		return nil, err
	}
	opts, err := parseKV(o.options, true)
	if err != nil {
		return nil, err
	}
	item := &hsmgatev1.SSHSignItem{
		PublicKey:       strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))),
		Principals:      o.principals,
		Extensions:      exts,
		CriticalOptions: opts,
	}
	switch {
	case o.ttl < 0:
		return nil, usageError{fmt.Errorf("--ttl %s: a certificate lifetime must be positive", o.ttl)}
	case o.ttl > 0:
		item.Ttl = durationpb.New(o.ttl)
	}
	return item, nil
}

// sshSignKey signs one item; a failed item is its status error.
func sshSignKey(ctx context.Context, c hsmgatev1.SSHCAServiceClient, ct hsmgatev1.SSHCertType, role string, item *hsmgatev1.SSHSignItem) (*hsmgatev1.SSHSignResult, error) {
	var results []*hsmgatev1.SSHSignResult
	if ct == hsmgatev1.SSHCertType_SSH_CERT_TYPE_HOST {
		resp, err := c.SignHostKey(ctx, &hsmgatev1.SignHostKeyRequest{Role: role, Items: []*hsmgatev1.SSHSignItem{item}})
		if err != nil {
			return nil, err
		}
		results = resp.GetResults()
	} else {
		resp, err := c.SignUserKey(ctx, &hsmgatev1.SignUserKeyRequest{Role: role, Items: []*hsmgatev1.SSHSignItem{item}})
		if err != nil {
			return nil, err
		}
		results = resp.GetResults()
	}
	if len(results) != 1 {
		return nil, fmt.Errorf("got %d results, want 1", len(results))
	}
	if st := results[0].GetError(); st != nil && st.GetCode() != 0 {
		return nil, status.FromProto(st).Err()
	}
	return results[0], nil
}

// sshWriteCert writes the certificate to --out, else next to the key, and
// returns where.
func sshWriteCert(o *signOptions, file string, res *hsmgatev1.SSHSignResult) (string, error) {
	path := o.output
	if path == "" {
		path = certPath(file)
	}
	return path, os.WriteFile(path, []byte(res.GetCertificate()+"\n"), 0o644)
}

func sshPrintSigned(w io.Writer, path string, res *hsmgatev1.SSHSignResult) error {
	_, err := fmt.Fprintf(w, "certificate:  %s\nprincipals:   %s\nvalid:        %s to %s (%s)\nserial:       %d\nkey id:       %s\nca:           %s (version %d)\n",
		path, strings.Join(res.GetPrincipals(), ", "),
		res.GetValidAfter().AsTime().Local().Format(time.RFC3339), res.GetValidBefore().AsTime().Local().Format(time.RFC3339),
		res.GetValidBefore().AsTime().Sub(res.GetValidAfter().AsTime()).Round(time.Second),
		res.GetSerial(), res.GetKeyId(), res.GetCa(), res.GetCaVersion())
	return err
}
