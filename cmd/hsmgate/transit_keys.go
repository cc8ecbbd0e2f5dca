package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/client"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
)

// newTransitKeysCmd is `hsmgate transit keys ...`: the key lifecycle.
func newTransitKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, inspect, rotate, configure, trim, delete, export, back up and import keys",
		Long: `Manage transit keys. A key has versions 1..N; encryption and signing use the
latest (or one at least min_encryption_version), decryption and verification
the version the ciphertext or signature names (at least
min_decryption_version, not disabled, not trimmed).

  hsmgate transit keys create k1 --type aes256-gcm
  hsmgate transit keys list
  hsmgate transit keys show k1
  hsmgate transit keys rotate k1
  hsmgate transit keys config k1 --min-decryption-version 2
  hsmgate transit keys trim k1 --min-available-version 2
  hsmgate transit keys config k1 --deletion-allowed && hsmgate transit keys delete k1`,
	}
	cmd.AddCommand(newTransitKeysCreateCmd(), newTransitKeysListCmd(), newTransitKeysShowCmd(), newTransitKeysRotateCmd(),
		newTransitKeysConfigCmd(), newTransitKeysTrimCmd(), newTransitKeysDeleteCmd(), newTransitKeysExportCmd(),
		newTransitKeysBackupCmd(), newTransitKeysRestoreCmd(), newTransitKeysImportCmd(),
		newTransitKeysVersionStateCmd(true), newTransitKeysVersionStateCmd(false), newTransitKeysWrappingKeyCmd())
	return cmd
}

// transitKeyOutput prints a key: its summary, or the response.
func transitKeyOutput(out *output, k *hsmgatev1.TransitKey, resp proto.Message) error {
	return out.print(resp, func(w io.Writer) error { return printTransitKey(w, k) })
}

func transitEnumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func printTransitKey(w io.Writer, k *hsmgatev1.TransitKey) error {
	minEnc := strconv.FormatUint(uint64(k.GetMinEncryptionVersion()), 10)
	if k.GetMinEncryptionVersion() == 0 {
		minEnc = "0 (the latest)"
	}
	rot := "off"
	if d := k.GetAutoRotatePeriod().AsDuration(); d > 0 {
		rot = d.String()
	}
	maxEnc := "none"
	if n := k.GetMaxEncryptionsPerVersion(); n > 0 {
		maxEnc = strconv.FormatUint(n, 10)
	}
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{k.GetDerived(), "derived"}, {k.GetConvergent(), "convergent"}, {k.GetExportable(), "exportable"},
		{k.GetDeletionAllowed(), "deletion-allowed"}, {k.GetImported(), "imported"},
		{k.GetAllowRestoreRename(), "allow-restore-rename"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	if len(flags) == 0 {
		flags = []string{"-"}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "name:                     %s\n", k.GetName())
	fmt.Fprintf(&b, "type:                     %s\n", transit.KeyTypeName(k.GetType()))
	fmt.Fprintf(&b, "residency:                %s\n", transitEnumName(k.GetResidency().String(), "TRANSIT_RESIDENCY_"))
	fmt.Fprintf(&b, "flags:                    %s\n", strings.Join(flags, " "))
	fmt.Fprintf(&b, "latest version:           %d\n", k.GetLatestVersion())
	fmt.Fprintf(&b, "min decryption version:   %d\n", k.GetMinDecryptionVersion())
	fmt.Fprintf(&b, "min encryption version:   %s\n", minEnc)
	fmt.Fprintf(&b, "auto-rotate period:       %s\n", rot)
	fmt.Fprintf(&b, "max encryptions/version:  %s\n", maxEnc)
	fmt.Fprintf(&b, "created:                  %s\n", transitTime(k.GetCreateTime()))
	fmt.Fprintf(&b, "updated:                  %s\n", transitTime(k.GetUpdateTime()))
	fmt.Fprintf(&b, "versions:\n")
	for _, v := range k.GetVersions() {
		fmt.Fprintf(&b, "  v%-4d %-9s %s", v.GetVersion(),
			transitEnumName(v.GetState().String(), "TRANSIT_VERSION_STATE_"), transitTime(v.GetCreateTime()))
		// Encryption keys: reserved (store, all replicas) and used (reserved
		// less the answering replica's unspent blocks); see TransitKeyVersion.
		if v.Reserved != nil {
			fmt.Fprintf(&b, "  reserved %d  used %d", v.GetReserved(), v.GetUsed())
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func transitTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// transitKeyFlags are the settings of create and import.
type transitKeyFlags struct {
	keyType         string
	derived         bool
	convergent      bool
	exportable      bool
	deletionAllowed bool
	autoRotate      time.Duration
	maxEncryptions  uint64
	allowRename     bool
}

func (f *transitKeyFlags) add(cmd *cobra.Command, def string) {
	fs := cmd.Flags()
	fs.StringVar(&f.keyType, "type", def, "key type: "+strings.Join(transit.KeyTypeNames(), ", "))
	fs.BoolVar(&f.derived, "derived", false, "derive a key per --context (HKDF; aes256-gcm and xchacha20-poly1305, wrapped only)")
	fs.BoolVar(&f.convergent, "convergent", false, "deterministic encryption: equal plaintext+context+AAD give equal ciphertext (needs --derived)")
	fs.BoolVar(&f.exportable, "exportable", false, "allow export of the key material (cannot be undone)")
	fs.BoolVar(&f.deletionAllowed, "deletion-allowed", false, "allow deleting the key")
	fs.DurationVar(&f.autoRotate, "auto-rotate-period", 0, "rotate automatically this often (at least 1h; 0: never)")
	fs.Uint64Var(&f.maxEncryptions, "max-encryptions", 0, "rotate before a version has done this many encryptions (0: the type's default; aes256-gcm 2^32-2^20)")
	fs.BoolVar(&f.allowRename, "allow-restore-rename", false, "allow restoring backups of this key under another name (only at creation)")
}

func (f *transitKeyFlags) parseType() (hsmgatev1.TransitKeyType, error) {
	t := transit.ParseKeyType(f.keyType)
	if t == hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_UNSPECIFIED {
		return 0, usageError{fmt.Errorf("--type %q: want one of %s", f.keyType, strings.Join(transit.KeyTypeNames(), ", "))}
	}
	return t, nil
}

func transitDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func newTransitKeysCreateCmd() *cobra.Command {
	f := &transitKeyFlags{}
	var residency, keyURI string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a key (version 1)",
		Long: `Create a key with version 1. NAME is 1-128 characters of [A-Za-z0-9_.-], not
starting with "." or "-". Residency "wrapped" (default) keeps the material
wrapped under the HSM's KEK and uses it in server memory; "hsm" keeps each
version as a non-extractable HSM object (aes256-gcm, hmac-*, ecdsa-*,
ed25519, rsa-*; not derived, convergent or exportable). With --residency hsm,
--key-uri adopts an existing HSM key (RFC 7512 PKCS#11 URI; sensitive,
non-extractable, of --type) as version 1 instead of generating one; hsmgate
never destroys it. Needs the "create" capability on transit/keys/NAME.`,
		Example: `  hsmgate transit keys create k1
  hsmgate transit keys create signer --type ed25519 --residency hsm
  hsmgate transit keys create tenants --derived --convergent
  hsmgate transit keys create payments --auto-rotate-period 720h --deletion-allowed
  hsmgate transit keys create cards --residency hsm --key-uri 'pkcs11:object=cards-2026;id=%0a'`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, "aes256-gcm")
	cmd.Flags().StringVar(&residency, "residency", "wrapped", "wrapped or hsm")
	cmd.Flags().StringVar(&keyURI, "key-uri", "", "with --residency hsm: adopt this existing HSM key (RFC 7512 URI 'pkcs11:object=...;id=...') instead of generating one")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		t, err := f.parseType()
		if err != nil {
			return err
		}
		r := transit.ParseResidency(residency)
		if r == hsmgatev1.TransitResidency_TRANSIT_RESIDENCY_UNSPECIFIED {
			return usageError{fmt.Errorf("--residency %q: want wrapped or hsm", residency)}
		}
		req := &hsmgatev1.CreateKeyRequest{Name: args[0], Type: t, Residency: r, Derived: f.derived, Convergent: f.convergent,
			Exportable: f.exportable, DeletionAllowed: f.deletionAllowed, AutoRotatePeriod: transitDuration(f.autoRotate),
			MaxEncryptionsPerVersion: f.maxEncryptions, AllowRestoreRename: f.allowRename, KeyUri: keyURI}
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.CreateKeyResponse, error) {
			return c.CreateKey(ctx, req)
		})
		if err != nil {
			return transitRPCError("keys create", err)
		}
		return transitKeyOutput(out, resp.GetKey(), resp)
	}
	return cmd
}

func newTransitKeysListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List key names, one a line",
		Long:    `List every key name in order, one a line. Needs the "list" capability on transit/keys.`,
		Example: `  hsmgate transit keys list`,
		Args:    cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		all, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.ListKeysResponse, error) {
			all := &hsmgatev1.ListKeysResponse{}
			for tok := ""; ; {
				resp, err := c.ListKeys(ctx, &hsmgatev1.ListKeysRequest{PageToken: tok})
				if err != nil {
					return nil, err
				}
				all.Names = append(all.Names, resp.GetNames()...)
				if tok = resp.GetNextPageToken(); tok == "" {
					return all, nil
				}
			}
		})
		if err != nil {
			return transitRPCError("keys list", err)
		}
		return out.print(all, func(w io.Writer) error { return printLines(w, all.GetNames()) })
	}
	return cmd
}

func newTransitKeysShowCmd() *cobra.Command {
	var pub bool
	var version uint32
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a key's settings and versions (never its material)",
		Long: `Show a key's type, residency, flags, minimum versions, rotation settings and
each version's state, creation time and encryption count. --public-key prints
the PEM public key of the latest version (or --version) of an asymmetric key
instead. Needs the "read" capability on transit/keys/NAME.`,
		Example: `  hsmgate transit keys show k1
  hsmgate transit keys show signer --public-key > signer.pub.pem
  hsmgate transit keys show k1 --json`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().BoolVar(&pub, "public-key", false, "print only the public key (PEM) of an asymmetric key")
	cmd.Flags().Uint32Var(&version, "version", 0, "with --public-key: the version (default: the latest)")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.GetKeyResponse, error) {
			return c.GetKey(ctx, &hsmgatev1.GetKeyRequest{Name: args[0]})
		})
		if err != nil {
			return transitRPCError("keys show", err)
		}
		k := resp.GetKey()
		if !pub {
			return transitKeyOutput(out, k, resp)
		}
		if version == 0 {
			version = k.GetLatestVersion()
		}
		for _, v := range k.GetVersions() {
			if v.GetVersion() == version && v.GetPublicKeyPem() != "" {
				// As JSON: the version, with its publicKeyPem.
				return out.print(v, func(w io.Writer) error {
					_, err := io.WriteString(w, v.GetPublicKeyPem())
					return err
				})
			}
		}
		return fmt.Errorf("transit keys show: %s has no public key for version %d", args[0], version)
	}
	return cmd
}

// newTransitKeysSimpleCmd builds a verb that takes NAME, calls fn and prints the key.
func newTransitKeysSimpleCmd(use, short, long, example string, args cobra.PositionalArgs,
	call func(ctx context.Context, c hsmgatev1.TransitServiceClient, args []string) (*hsmgatev1.TransitKey, proto.Message, error),
) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Example: example, Args: args}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	verb := "keys " + strings.Fields(use)[0]
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var k *hsmgatev1.TransitKey
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (proto.Message, error) {
			var resp proto.Message
			var err error
			k, resp, err = call(ctx, c, args)
			return resp, err
		})
		if err != nil {
			return transitRPCError(verb, err)
		}
		return transitKeyOutput(out, k, resp)
	}
	return cmd
}

func newTransitKeysRotateCmd() *cobra.Command {
	return newTransitKeysSimpleCmd("rotate NAME", "Add a new latest version",
		`Add a new version, which becomes the latest: new encryptions and signatures
use it; existing ciphertexts still decrypt with the versions they name (until
min_decryption_version is raised or the versions are trimmed). Imported keys
rotate only by "keys import --new-version". Needs the "rotate" capability on
transit/keys/NAME.`,
		`  hsmgate transit keys rotate k1`, cobra.ExactArgs(1),
		func(ctx context.Context, c hsmgatev1.TransitServiceClient, args []string) (*hsmgatev1.TransitKey, proto.Message, error) {
			resp, err := c.RotateKey(ctx, &hsmgatev1.RotateKeyRequest{Name: args[0]})
			return resp.GetKey(), resp, err
		})
}

func newTransitKeysVersionStateCmd(enable bool) *cobra.Command {
	use, short, long := "disable-version NAME VERSION", "Make a version refuse every operation until enabled again",
		`Disable one version: it refuses encryption, decryption, signing and
verification until "keys enable-version". The latest version cannot be
disabled. Needs the "update" capability on transit/keys/NAME.`
	if enable {
		use, short, long = "enable-version NAME VERSION", "Undo disable-version",
			`Enable a disabled version again. Needs the "update" capability on transit/keys/NAME.`
	}
	return newTransitKeysSimpleCmd(use, short, long, "  hsmgate transit keys "+strings.Fields(use)[0]+" k1 1", cobra.ExactArgs(2),
		func(ctx context.Context, c hsmgatev1.TransitServiceClient, args []string) (*hsmgatev1.TransitKey, proto.Message, error) {
			v, err := strconv.ParseUint(args[1], 10, 32)
			if err != nil || v == 0 {
				return nil, nil, usageError{fmt.Errorf("VERSION %q: want a positive number", args[1])}
			}
			if enable {
				resp, err := c.EnableKeyVersion(ctx, &hsmgatev1.EnableKeyVersionRequest{Name: args[0], Version: uint32(v)})
				return resp.GetKey(), resp, err
			}
			resp, err := c.DisableKeyVersion(ctx, &hsmgatev1.DisableKeyVersionRequest{Name: args[0], Version: uint32(v)})
			return resp.GetKey(), resp, err
		})
}

func newTransitKeysTrimCmd() *cobra.Command {
	var floor uint32
	cmd := newTransitKeysSimpleCmd("trim NAME --min-available-version N", "Destroy the material of every version below N",
		`Destroy the material of every version below --min-available-version, for
good: their ciphertexts can never be decrypted again. N must not exceed
min_decryption_version nor min_encryption_version (raise those first with
"keys config", and rewrap what you keep). Needs the "delete" capability on
transit/keys/NAME.`,
		`  hsmgate transit keys config k1 --min-decryption-version 3 --min-encryption-version 3
  hsmgate transit keys trim k1 --min-available-version 3`, cobra.ExactArgs(1),
		func(ctx context.Context, c hsmgatev1.TransitServiceClient, args []string) (*hsmgatev1.TransitKey, proto.Message, error) {
			resp, err := c.TrimKey(ctx, &hsmgatev1.TrimKeyRequest{Name: args[0], MinAvailableVersion: floor})
			return resp.GetKey(), resp, err
		})
	cmd.Flags().Uint32Var(&floor, "min-available-version", 0, "lowest version to keep (required)")
	_ = cmd.MarkFlagRequired("min-available-version")
	return cmd
}

func newTransitKeysConfigCmd() *cobra.Command {
	var (
		minDec, minEnc         uint32
		deletion, exportable   bool
		autoRotate             time.Duration
		maxEncryptions         uint64
		cmd                    *cobra.Command
		minDecFlag, minEncFlag = "min-decryption-version", "min-encryption-version"
	)
	cmd = newTransitKeysSimpleCmd("config NAME [flags]", "Change a key's settings (only the flags given)",
		`Change the settings named by flags; the others stay. Vault's rules hold:
min-decryption-version is 1..latest (not below trimmed versions);
min-encryption-version is 0 (the latest) or min-decryption-version..latest;
exportable cannot be undone; auto-rotate-period is 0 (off) or at least 1h.
Needs the "update" capability on transit/keys/NAME.`,
		`  hsmgate transit keys config k1 --min-decryption-version 2
  hsmgate transit keys config k1 --deletion-allowed
  hsmgate transit keys config k1 --auto-rotate-period 0`, cobra.ExactArgs(1),
		func(ctx context.Context, c hsmgatev1.TransitServiceClient, args []string) (*hsmgatev1.TransitKey, proto.Message, error) {
			fs := cmd.Flags()
			req := &hsmgatev1.UpdateKeyConfigRequest{Name: args[0]}
			if fs.Changed(minDecFlag) {
				req.MinDecryptionVersion = &minDec
			}
			if fs.Changed(minEncFlag) {
				req.MinEncryptionVersion = &minEnc
			}
			if fs.Changed("deletion-allowed") {
				req.DeletionAllowed = &deletion
			}
			if fs.Changed("exportable") {
				req.Exportable = &exportable
			}
			if fs.Changed("auto-rotate-period") {
				req.AutoRotatePeriod = durationpb.New(autoRotate)
			}
			if fs.Changed("max-encryptions") {
				req.MaxEncryptionsPerVersion = &maxEncryptions
			}
			if proto.Equal(req, &hsmgatev1.UpdateKeyConfigRequest{Name: args[0]}) {
				return nil, nil, usageError{fmt.Errorf("nothing to change: name a setting (see --help)")}
			}
			resp, err := c.UpdateKeyConfig(ctx, req)
			return resp.GetKey(), resp, err
		})
	fs := cmd.Flags()
	fs.Uint32Var(&minDec, minDecFlag, 0, "oldest version that may decrypt and verify")
	fs.Uint32Var(&minEnc, minEncFlag, 0, "oldest version that may encrypt and sign (0: only the latest)")
	fs.BoolVar(&deletion, "deletion-allowed", false, "allow (or with =false forbid) deleting the key")
	fs.BoolVar(&exportable, "exportable", false, "allow export of the key material (cannot be undone)")
	fs.DurationVar(&autoRotate, "auto-rotate-period", 0, "rotate automatically this often (0: never)")
	fs.Uint64Var(&maxEncryptions, "max-encryptions", 0, "rotate before a version has done this many encryptions")
	return cmd
}

func newTransitKeysDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a key and destroy its material (needs deletion-allowed)",
		Long: `Delete a key and destroy every version's material: its ciphertexts can never
be decrypted again. The key must have deletion-allowed ("keys config NAME
--deletion-allowed"). Needs the "delete" capability on transit/keys/NAME.`,
		Example: `  hsmgate transit keys config old --deletion-allowed && hsmgate transit keys delete old`,
		Args:    cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.DeleteKeyResponse, error) {
			return c.DeleteKey(ctx, &hsmgatev1.DeleteKeyRequest{Name: args[0]})
		})
		if err != nil {
			return transitRPCError("keys delete", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "deleted %s\n", args[0])
			return err
		})
	}
	return cmd
}

func newTransitKeysExportCmd() *cobra.Command {
	var version uint32
	cmd := &cobra.Command{
		Use:   "export NAME",
		Short: "Print the plaintext material of an exportable key (audited)",
		Long: `Print the plaintext key material of an exportable key: every usable version,
or --version. Symmetric keys print "v<N> <base64>" lines; private keys print
a "# NAME v<N>" line then the PKCS#8 PEM of each version. The request is
audited; the material is never logged. Needs the "export" capability on
transit/keys/NAME.`,
		Example: `  hsmgate transit keys export k1 --version 2
  hsmgate transit keys export signer > signer-keys.pem`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().Uint32Var(&version, "version", 0, "only this version (default: every usable version)")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.ExportKeyResponse, error) {
			return c.ExportKey(ctx, &hsmgatev1.ExportKeyRequest{Name: args[0], Version: version})
		})
		if err != nil {
			return transitRPCError("keys export", err)
		}
		// As JSON or YAML the material is in base64.
		return out.print(resp, func(w io.Writer) error { return transitPrintExport(w, resp) })
	}
	return cmd
}

func transitPrintExport(w io.Writer, resp *hsmgatev1.ExportKeyResponse) error {
	asym := transit.KeyTypeName(resp.GetType())
	private := strings.HasPrefix(asym, "ecdsa") || strings.HasPrefix(asym, "rsa") || asym == "ed25519"
	var b strings.Builder
	for _, v := range resp.GetVersions() {
		if private {
			fmt.Fprintf(&b, "# %s v%d\n", resp.GetName(), v.GetVersion())
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: v.GetMaterial()}))
			continue
		}
		fmt.Fprintf(&b, "v%d %s\n", v.GetVersion(), base64.StdEncoding.EncodeToString(v.GetMaterial()))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func newTransitKeysBackupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup NAME",
		Short: "Print a sealed backup of a key, as base64",
		Long: `Print a backup of the key as one base64 line: its settings, versions, usage
counts and material, sealed as a whole under a key that only the
deployment's KEK opens (so it restores only where that KEK is, and any edit
makes it unusable). Needs the "export" capability on transit/keys/NAME.`,
		Example: `  hsmgate transit keys backup k1 > k1.backup
  hsmgate transit keys restore --in k1.backup`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.BackupKeyResponse, error) {
			return c.BackupKey(ctx, &hsmgatev1.BackupKeyRequest{Name: args[0]})
		})
		if err != nil {
			return transitRPCError("keys backup", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, base64.StdEncoding.EncodeToString(resp.GetBackup()))
			return err
		})
	}
	return cmd
}

func newTransitKeysRestoreCmd() *cobra.Command {
	var in, name string
	cmd := &cobra.Command{
		Use:   "restore [--in FILE] [--name NAME]",
		Short: "Recreate a key from a backup (under its own name)",
		Long: `Recreate a key from the output of "keys backup" (base64, read from --in or
stdin) under the backup's name, which must be free. Usage counts are
restored and never lowered. --name restores under another name only if the
key was created with --allow-restore-rename; such a copy decrypts what the
original encrypted, but the copied versions of an encryption key never
encrypt again there (the copy's first encryption rotates to fresh material). Needs the "create"
capability on transit/keys/<name>.`,
		Example: `  hsmgate transit keys restore --in k1.backup
  hsmgate transit keys backup k1 | hsmgate transit keys restore --name k1-copy   # needs --allow-restore-rename on k1`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&in, "in", "", `backup file ("-" or absent: stdin)`)
	cmd.Flags().StringVar(&name, "name", "", "restore under this name (default: the backup's; another name needs a key created with --allow-restore-rename)")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		b, err := transitInput(cmd, in)
		if err != nil {
			return err
		}
		backup, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(backup) == 0 {
			return usageError{fmt.Errorf("the input is not a backup (want the base64 line of `transit keys backup`)")}
		}
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.RestoreKeyResponse, error) {
			return c.RestoreKey(ctx, &hsmgatev1.RestoreKeyRequest{Backup: backup, Name: name})
		})
		if err != nil {
			return transitRPCError("keys restore", err)
		}
		return transitKeyOutput(out, resp.GetKey(), resp)
	}
	return cmd
}

func newTransitKeysWrappingKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wrapping-key",
		Short: "Print the deployment's RSA-4096 import wrapping public key (PEM)",
		Long: `Print the RSA-4096 public key that "keys import" wraps material for (RSA-OAEP
SHA-256 of an ephemeral AES-256 key, then AES-KWP of the material, as AWS KMS
and Vault do). "keys import" fetches it itself; this is for wrapping
elsewhere. Needs the "read" capability on transit/wrapping-key.`,
		Example: `  hsmgate transit keys wrapping-key > wrap.pub.pem`,
		Args:    cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.GetWrappingKeyResponse, error) {
			return c.GetWrappingKey(ctx, &hsmgatev1.GetWrappingKeyRequest{})
		})
		if err != nil {
			return transitRPCError("keys wrapping-key", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := io.WriteString(w, resp.GetPublicKeyPem())
			return err
		})
	}
	return cmd
}

func newTransitKeysImportCmd() *cobra.Command {
	f := &transitKeyFlags{}
	var in, encoding string
	var newVersion bool
	cmd := &cobra.Command{
		Use:   "import NAME --type TYPE --in FILE",
		Short: "Create a key (or a new version) from your own material, wrapped for the server",
		Long: `Bring your own key: read the material from --in (or stdin), wrap it for the
server's wrapping key (RSA-OAEP-SHA256 + AES-KWP; the plaintext material
never crosses the wire) and create a wrapped-residency key, or with
--new-version add a version to an existing imported key.

Material: raw bytes for symmetric keys (32 for aes256-gcm and
xchacha20-poly1305, 32 or more for hmac-*; --encoding base64 or hex to read
them as text), a PEM or DER private key for the others (PKCS#8, or
PKCS#1/SEC 1 "RSA/EC PRIVATE KEY", converted here). Needs the "create"
capability on transit/keys/NAME.`,
		Example: `  openssl rand 32 > k.bin && hsmgate transit keys import byok --type aes256-gcm --in k.bin
  openssl genpkey -algorithm ed25519 -out ed.pem && hsmgate transit keys import byok-sign --type ed25519 --in ed.pem
  hsmgate transit keys import byok --type aes256-gcm --in k2.bin --new-version`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, "")
	_ = cmd.MarkFlagRequired("type")
	cmd.Flags().StringVar(&in, "in", "", `material file ("-" or absent: stdin)`)
	cmd.Flags().StringVar(&encoding, "encoding", "raw", "symmetric material encoding: raw, base64 or hex")
	cmd.Flags().BoolVar(&newVersion, "new-version", false, "add a version to an existing imported key")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		t, err := f.parseType()
		if err != nil {
			return err
		}
		raw, err := transitInput(cmd, in)
		if err != nil {
			return err
		}
		material, err := transitImportMaterial(raw, encoding)
		clear(raw)
		if err != nil {
			return err
		}
		defer clear(material)
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.ImportKeyResponse, error) {
			wk, err := c.GetWrappingKey(ctx, &hsmgatev1.GetWrappingKeyRequest{})
			if err != nil {
				return nil, err
			}
			pub, err := client.ParseWrappingKey(wk.GetPublicKeyPem())
			if err != nil {
				return nil, fmt.Errorf("wrapping key: %w", err)
			}
			wrapped, err := client.WrapForImport(pub, material, rand.Reader)
			if err != nil {
				return nil, fmt.Errorf("wrap: %w", err)
			}
			return c.ImportKey(ctx, &hsmgatev1.ImportKeyRequest{Name: args[0], Type: t, WrappedMaterial: wrapped,
				NewVersion: newVersion, Derived: f.derived, Convergent: f.convergent, Exportable: f.exportable,
				DeletionAllowed: f.deletionAllowed, AutoRotatePeriod: transitDuration(f.autoRotate),
				MaxEncryptionsPerVersion: f.maxEncryptions, AllowRestoreRename: f.allowRename})
		})
		if err != nil {
			return transitRPCError("keys import", err)
		}
		return transitKeyOutput(out, resp.GetKey(), resp)
	}
	return cmd
}

// transitImportMaterial turns the input of `keys import` into what ImportKey
// wants: a PEM private key becomes PKCS#8 DER (PKCS#1 and SEC 1 converted);
// otherwise the bytes, decoded per encoding.
func transitImportMaterial(in []byte, encoding string) ([]byte, error) {
	if len(in) == 0 {
		return nil, usageError{fmt.Errorf("--in: no key material on the input")}
	}
	if blk, _ := pem.Decode(in); blk != nil {
		m, err := client.ImportMaterial(in, nil)
		if err != nil {
			return nil, usageError{fmt.Errorf("--in: %w", err)}
		}
		return m, nil
	}
	switch encoding {
	case "raw":
		return append([]byte(nil), in...), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(in)))
		if err != nil {
			return nil, usageError{fmt.Errorf("--in: not base64")}
		}
		return b, nil
	case "hex":
		b, err := hex.DecodeString(strings.TrimSpace(string(in)))
		if err != nil {
			return nil, usageError{fmt.Errorf("--in: not hex")}
		}
		return b, nil
	}
	return nil, usageError{fmt.Errorf("--encoding %q: want raw, base64 or hex", encoding)}
}
