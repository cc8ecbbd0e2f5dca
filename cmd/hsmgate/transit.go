package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/client/textform"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
)

// newTransitCmd is `hsmgate transit`: named, versioned keys and the data
// operations over them.
func newTransitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "transit",
		Short: "Encryption as a service: keys, encrypt/decrypt, rewrap, data keys, sign/verify, HMAC",
		Long: `Encryption as a service with named, versioned keys that the server keeps.

Data is read from --in FILE, or stdin when --in is absent or "-". Ciphertexts,
signatures and HMACs are printed in the text form hsmgate:v<N>:<base64>, one
line, where N is the key version; decrypt prints the raw plaintext. -o json
(or --json) prints the response as protojson (ciphertexts in the text form),
-o yaml the same as YAML. --aad and --context take base64, or @FILE for a
file's raw bytes.

  hsmgate transit keys create k1                        # aes256-gcm, wrapped
  echo -n hi | hsmgate transit encrypt k1 | hsmgate transit decrypt k1
  hsmgate transit keys rotate k1
  hsmgate transit rewrap k1 --in old.txt > new.txt      # to the latest version
  hsmgate transit keys create signer --type ecdsa-p256
  hsmgate transit sign signer --in doc.pdf > doc.sig
  hsmgate transit verify signer --in doc.pdf --signature @doc.sig

Errors print the server's status (code and message) and exit non-zero.`,
	}
	cmd.AddCommand(newTransitKeysCmd(),
		newTransitEncryptCmd(), newTransitDecryptCmd(), newTransitRewrapCmd(), newTransitDatakeyCmd(),
		newTransitSignCmd(), newTransitVerifyCmd(), newTransitHMACCmd(), newTransitRandomCmd())
	return cmd
}

// transitCallFor is the one TransitService call of a key-management verb
// (see callFor); the data verbs call the client's helpers (transitFor).
func transitCallFor[R any](cmd *cobra.Command, cf *clientFlags, fn func(ctx context.Context, c hsmgatev1.TransitServiceClient) (R, error)) (R, error) {
	return callFor(cmd, cf, hsmgatev1.NewTransitServiceClient, fn)
}

// transitFor is the one call of a data verb, made with the client
// package's transit helpers (the code path every Go program uses).
func transitFor[R any](cmd *cobra.Command, cf *clientFlags, fn func(ctx context.Context, t *client.Transit) (R, error)) (R, error) {
	return clientFor(cmd, cf, func(ctx context.Context, c *client.Client) (R, error) { return fn(ctx, c.Transit) })
}

// itemStatus is the status of a failed item of a client result, for the
// printed document (nil for a success).
func itemStatus(err error) *spb.Status {
	if err == nil {
		return nil
	}
	return status.Convert(err).Proto()
}

// transitRPCError names the verb of a failed call; the status stays in the
// chain, for formatError.
func transitRPCError(verb string, err error) error {
	return fmt.Errorf("transit %s: %w", verb, err)
}

// transitItemError is the error of a failed item (nil when it succeeded),
// named by its verb.
func transitItemError(verb string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("transit %s: %w", verb, err)
}

// transitInput reads FILE, or stdin for "" and "-".
func transitInput(cmd *cobra.Command, path string) ([]byte, error) {
	if path == "" || path == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(path)
}

// transitBytesArg decodes a flag value: base64 (standard, padding optional), or
// @FILE for the file's raw bytes. Empty is nil.
func transitBytesArg(flag, v string) ([]byte, error) {
	if v == "" {
		return nil, nil
	}
	if f, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, usageError{fmt.Errorf("--%s: %w", flag, err)}
		}
		return b, nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(v); err != nil {
			return nil, usageError{fmt.Errorf("--%s: not base64 (use @FILE for a file's raw bytes)", flag)}
		}
	}
	return b, nil
}

// transitParseVersioned reads hsmgate:v<N>:<base64> (version N) or plain base64
// (version def).
func transitParseVersioned(s string, def uint32) ([]byte, uint32, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, textform.Prefix) {
		v, b, err := textform.ParseVersioned(s)
		if err != nil {
			return nil, 0, err
		}
		return b, v, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, 0, fmt.Errorf("want hsmgate:v<N>:<base64> or base64")
	}
	return b, def, nil
}

// transitParseCiphertext reads one ciphertext in the text form; surrounding
// space (a trailing newline) is ignored.
func transitParseCiphertext(in []byte) ([]byte, error) {
	s := strings.TrimSpace(string(in))
	if s == "" {
		return nil, usageError{errors.New("no ciphertext on the input (want hsmgate:v<N>:<base64>)")}
	}
	ct, err := textform.Parse(s)
	if err != nil {
		return nil, usageError{fmt.Errorf("input is not a ciphertext in the form hsmgate:v<N>:<base64>: %w", err)}
	}
	return ct, nil
}

// transitDoc is m as the printer's JSON document. With textCiphertext, each
// results[i].ciphertext is shown in the text form hsmgate:v<N>:<base64>
// instead of base64 of the binary envelope (DESIGN: the CLI and JSON show
// the text form).
func transitDoc(m proto.Message, textCiphertext bool) (json.RawMessage, error) {
	b, err := marshalJSON(m)
	if err != nil || !textCiphertext {
		return b, err
	}
	return transitTextCiphertexts(b)
}

// transitPrintOne prints the result of a one-item call, itemErr its error.
// As JSON or YAML the whole response (the client's result as the response
// message) is printed, then a failed item fails the verb; as a table, a
// failed item fails the verb and table prints the success.
func transitPrintOne(out *output, verb string, resp proto.Message, textCiphertext bool, itemErr error, table func(io.Writer) error) error {
	if out.table() {
		if err := transitItemError(verb, itemErr); err != nil {
			return err
		}
		return out.print(nil, table)
	}
	doc, err := transitDoc(resp, textCiphertext)
	if err != nil {
		return fmt.Errorf("transit %s: %w", verb, err)
	}
	if err := out.print(doc, nil); err != nil {
		return err
	}
	return transitItemError(verb, itemErr)
}

func transitTextCiphertexts(b []byte) ([]byte, error) {
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	rs, _ := v["results"].([]any)
	for _, r := range rs {
		o, _ := r.(map[string]any)
		c, ok := o["ciphertext"].(string)
		if !ok || c == "" { // a failed item has none
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			return nil, err
		}
		if o["ciphertext"], err = textform.Format(raw); err != nil {
			return nil, err
		}
	}
	return json.Marshal(v)
}

// transitDataFlags are the flags shared by the data verbs.
type transitDataFlags struct {
	in      string
	aad     string
	context string
	version uint32
}

func (f *transitDataFlags) add(cmd *cobra.Command, aad, context, version bool) {
	fs := cmd.Flags()
	fs.StringVar(&f.in, "in", "", `input file ("-" or absent: stdin)`)
	if aad {
		fs.StringVar(&f.aad, "aad", "", "associated data: base64, or @FILE")
	}
	if context {
		fs.StringVar(&f.context, "context", "", "key derivation context of a derived key: base64, or @FILE")
	}
	if version {
		fs.Uint32Var(&f.version, "version", 0, "key version to use (default: the latest)")
	}
}

// aadContext decodes --aad and --context.
func (f *transitDataFlags) aadContext() (aad, ctx []byte, err error) {
	if aad, err = transitBytesArg("aad", f.aad); err != nil {
		return nil, nil, err
	}
	ctx, err = transitBytesArg("context", f.context)
	return aad, ctx, err
}

func newTransitEncryptCmd() *cobra.Command {
	f := &transitDataFlags{}
	cmd := &cobra.Command{
		Use:   "encrypt NAME",
		Short: "Encrypt data with a key; prints hsmgate:v<N>:<base64>",
		Long: `Encrypt the input with the key's latest version (or --version) and print the
ciphertext in the text form hsmgate:v<N>:<base64> on one line. Needs the
"encrypt" capability on transit/keys/NAME.`,
		Example: `  echo -n hi | hsmgate transit encrypt k1
  hsmgate transit encrypt k1 --in card.txt --aad $(echo -n order-42 | base64) > card.enc
  hsmgate transit encrypt tenants --context $(echo -n tenant-7 | base64) --in doc.txt`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, true, true, true)
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		pt, err := transitInput(cmd, f.in)
		if err != nil {
			return err
		}
		aad, kctx, err := f.aadContext()
		if err != nil {
			return err
		}
		rs, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) ([]client.EncryptResult, error) {
			return t.EncryptBatch(ctx, args[0], []client.EncryptItem{{Plaintext: pt, AssociatedData: aad, Context: kctx}},
				client.WithKeyVersion(f.version))
		})
		if err != nil {
			return transitRPCError("encrypt", err)
		}
		r := rs[0]
		resp := &hsmgatev1.EncryptResponse{Results: []*hsmgatev1.EncryptResult{{Ciphertext: r.Ciphertext, KeyVersion: r.KeyVersion,
			Reference: r.Reference, Error: itemStatus(r.Err)}}}
		return transitPrintCiphertext(out, "encrypt", resp, r)
	}
	return cmd
}

// transitPrintCiphertext prints the result of Encrypt or Rewrap (resp is
// it as the response message).
func transitPrintCiphertext(out *output, verb string, resp proto.Message, r client.EncryptResult) error {
	return transitPrintOne(out, verb, resp, true, r.Err, func(w io.Writer) error {
		txt, err := textform.Format(r.Ciphertext)
		if err != nil {
			return fmt.Errorf("transit %s: %w", verb, err)
		}
		_, err = fmt.Fprintln(w, txt)
		return err
	})
}

func newTransitDecryptCmd() *cobra.Command {
	f := &transitDataFlags{}
	cmd := &cobra.Command{
		Use:   "decrypt NAME",
		Short: "Decrypt a hsmgate:v<N>:<base64> ciphertext; prints the raw plaintext",
		Long: `Decrypt one ciphertext in the text form hsmgate:v<N>:<base64> (a trailing
newline is fine) with the version it names, and write the raw plaintext to
stdout. The same --aad and --context as at encryption are needed. Needs the
"decrypt" capability on transit/keys/NAME.`,
		Example: `  echo -n hi | hsmgate transit encrypt k1 | hsmgate transit decrypt k1
  hsmgate transit decrypt k1 --in card.enc --aad $(echo -n order-42 | base64)
  hsmgate transit decrypt k1 --in card.enc --json`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, true, true, false)
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		in, err := transitInput(cmd, f.in)
		if err != nil {
			return err
		}
		ct, err := transitParseCiphertext(in)
		if err != nil {
			return err
		}
		aad, kctx, err := f.aadContext()
		if err != nil {
			return err
		}
		rs, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) ([]client.DecryptResult, error) {
			return t.DecryptBatch(ctx, args[0], []client.DecryptItem{{Ciphertext: ct, AssociatedData: aad, Context: kctx}})
		})
		if err != nil {
			return transitRPCError("decrypt", err)
		}
		r := rs[0]
		resp := &hsmgatev1.DecryptResponse{Results: []*hsmgatev1.DecryptResult{{Plaintext: r.Plaintext, KeyVersion: r.KeyVersion,
			Reference: r.Reference, Error: itemStatus(r.Err)}}}
		return transitPrintOne(out, "decrypt", resp, false, r.Err, func(w io.Writer) error {
			_, err := w.Write(r.Plaintext)
			return err
		})
	}
	return cmd
}

func newTransitRewrapCmd() *cobra.Command {
	f := &transitDataFlags{}
	cmd := &cobra.Command{
		Use:   "rewrap NAME",
		Short: "Re-encrypt a ciphertext to the latest (or a given) key version, server-side",
		Long: `Decrypt a ciphertext (text form) and encrypt it again with the key's latest
version (or --version), keeping --aad and --context; the plaintext never
leaves the server. Prints the new ciphertext. Use it after a rotation, before
raising min_decryption_version. Needs the "rewrap" capability on
transit/keys/NAME.`,
		Example: `  hsmgate transit keys rotate k1
  hsmgate transit rewrap k1 --in card.enc > card.enc.new && mv card.enc.new card.enc`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, true, true, true)
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		in, err := transitInput(cmd, f.in)
		if err != nil {
			return err
		}
		ct, err := transitParseCiphertext(in)
		if err != nil {
			return err
		}
		aad, kctx, err := f.aadContext()
		if err != nil {
			return err
		}
		rs, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) ([]client.EncryptResult, error) {
			return t.RewrapBatch(ctx, args[0], []client.DecryptItem{{Ciphertext: ct, AssociatedData: aad, Context: kctx}},
				client.WithKeyVersion(f.version))
		})
		if err != nil {
			return transitRPCError("rewrap", err)
		}
		r := rs[0]
		resp := &hsmgatev1.RewrapResponse{Results: []*hsmgatev1.RewrapResult{{Ciphertext: r.Ciphertext, KeyVersion: r.KeyVersion,
			Reference: r.Reference, Error: itemStatus(r.Err)}}}
		return transitPrintCiphertext(out, "rewrap", resp, r)
	}
	return cmd
}

func newTransitDatakeyCmd() *cobra.Command {
	f := &transitDataFlags{}
	var bits uint32
	var wrappedOnly bool
	cmd := &cobra.Command{
		Use:   "datakey NAME",
		Short: "Make a random data key, encrypted under NAME (and in plaintext)",
		Long: `Make a random data key for envelope encryption: prints the key encrypted
under NAME ("ciphertext: hsmgate:v<N>:<base64>") and, unless --wrapped-only,
the key itself ("plaintext: <base64>"). Keep the ciphertext beside your data;
"hsmgate transit decrypt NAME" gives the key back (as raw bytes). Needs the
"datakey" capability on transit/keys/NAME.`,
		Example: `  hsmgate transit datakey k1
  hsmgate transit datakey k1 --bits 512 --wrapped-only
  hsmgate transit datakey k1 --json | jq -r .results[0].plaintext`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, true, true, true)
	_ = cmd.Flags().MarkHidden("in") // no input
	cmd.Flags().Uint32Var(&bits, "bits", 256, "data key size: 128, 256 or 512")
	cmd.Flags().BoolVar(&wrappedOnly, "wrapped-only", false, "return only the encrypted data key")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		aad, kctx, err := f.aadContext()
		if err != nil {
			return err
		}
		opts := []client.Option{client.WithAAD(aad), client.WithKeyContext(kctx), client.WithKeyVersion(f.version)}
		if wrappedOnly {
			opts = append(opts, client.WithWrappedOnly())
		}
		dk, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) (client.DataKey, error) {
			return t.GenerateDataKey(ctx, args[0], bits, opts...)
		})
		if err != nil {
			return transitRPCError("datakey", err)
		}
		resp := &hsmgatev1.GenerateDataKeyResponse{Results: []*hsmgatev1.DataKeyResult{{Plaintext: dk.Plaintext,
			Ciphertext: dk.Ciphertext, KeyVersion: dk.KeyVersion}}}
		return transitPrintOne(out, "datakey", resp, true, nil, func(w io.Writer) error {
			txt, err := textform.Format(dk.Ciphertext)
			if err != nil {
				return fmt.Errorf("transit datakey: %w", err)
			}
			if _, err := fmt.Fprintf(w, "ciphertext: %s\n", txt); err != nil {
				return err
			}
			if !wrappedOnly {
				_, err = fmt.Fprintf(w, "plaintext:  %s\n", base64.StdEncoding.EncodeToString(dk.Plaintext))
			}
			return err
		})
	}
	return cmd
}

// transitSigFlags are the signature options of sign and verify.
type transitSigFlags struct {
	hash      string
	prehashed bool
	algorithm string
}

func (s *transitSigFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&s.hash, "hash", "", "hash: sha2-256, sha2-384 or sha2-512 (default: sha2-256; sha2-384 for ecdsa-p384; none for ed25519)")
	fs.BoolVar(&s.prehashed, "prehashed", false, "the input is already a digest of --hash (not for ed25519)")
	fs.StringVar(&s.algorithm, "signature-algorithm", "", "RSA padding: pss (default) or pkcs1v15")
}

// options are the client options of the flags.
func (s *transitSigFlags) options() ([]client.Option, error) {
	h := transit.ParseHashAlgorithm(s.hash)
	if s.hash != "" && h == hsmgatev1.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_UNSPECIFIED {
		return nil, usageError{fmt.Errorf("--hash %q: want sha2-256, sha2-384 or sha2-512", s.hash)}
	}
	a := transit.ParseSignatureAlgorithm(s.algorithm)
	if s.algorithm != "" && a == hsmgatev1.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_UNSPECIFIED {
		return nil, usageError{fmt.Errorf("--signature-algorithm %q: want pss or pkcs1v15", s.algorithm)}
	}
	opts := []client.Option{client.WithHash(h), client.WithSignatureAlgorithm(a)}
	if s.prehashed {
		opts = append(opts, client.WithPrehashed())
	}
	return opts, nil
}

func newTransitSignCmd() *cobra.Command {
	f := &transitDataFlags{}
	s := &transitSigFlags{}
	cmd := &cobra.Command{
		Use:   "sign NAME",
		Short: "Sign data with an asymmetric key; prints hsmgate:v<N>:<base64 signature>",
		Long: `Sign the input (or, with --prehashed, its digest) with the key's latest
version (or --version). Prints hsmgate:v<N>:<base64>, where N is the version
that signed: "hsmgate transit verify" takes it as is. Signatures are ECDSA
ASN.1 DER, Ed25519, or RSA PSS (salt = hash length) / PKCS#1 v1.5. Needs the
"sign" capability on transit/keys/NAME.`,
		Example: `  hsmgate transit sign signer --in release.tar.gz > release.sig
  hsmgate transit sign rsa1 --in msg --hash sha2-512 --signature-algorithm pkcs1v15
  sha256sum -b big.iso | cut -d' ' -f1 | xxd -r -p | hsmgate transit sign signer --prehashed`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, false, false, true)
	s.add(cmd)
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		in, err := transitInput(cmd, f.in)
		if err != nil {
			return err
		}
		opts, err := s.options()
		if err != nil {
			return err
		}
		rs, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) ([]client.SignResult, error) {
			return t.SignBatch(ctx, args[0], []client.SignItem{{Input: in}}, append(opts, client.WithKeyVersion(f.version))...)
		})
		if err != nil {
			return transitRPCError("sign", err)
		}
		r := rs[0]
		resp := &hsmgatev1.SignDataResponse{Results: []*hsmgatev1.SignResult{{Signature: r.Signature.Bytes, KeyVersion: r.Signature.KeyVersion,
			Reference: r.Reference, Error: itemStatus(r.Err)}}}
		return transitPrintOne(out, "sign", resp, false, r.Err, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, r.Signature)
			return err
		})
	}
	return cmd
}

// errTransitInvalid is returned by verify and hmac --verify when the check fails:
// "invalid" is printed and the exit status is 1.
var errTransitInvalid = errors.New("not valid")

func newTransitVerifyCmd() *cobra.Command {
	f := &transitDataFlags{}
	s := &transitSigFlags{}
	var sig string
	cmd := &cobra.Command{
		Use:   "verify NAME --signature SIG",
		Short: `Check a signature; prints "valid" (exit 0) or fails (exit 1)`,
		Long: `Check a signature of the input. --signature is the output of
"hsmgate transit sign" (hsmgate:v<N>:<base64>, which names the version), or
plain base64 with --version (default: the latest), or @FILE holding either.
Prints "valid" and exits 0, or exits 1 when the signature does not verify.
Use the same --hash, --prehashed and --signature-algorithm as when signing.
Needs the "verify" capability on transit/keys/NAME.`,
		Example: `  hsmgate transit verify signer --in release.tar.gz --signature @release.sig
  hsmgate transit verify signer --in msg --signature hsmgate:v2:MEUCIQ...`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, false, false, true)
	s.add(cmd)
	cmd.Flags().StringVar(&sig, "signature", "", "signature: hsmgate:v<N>:<base64>, base64, or @FILE (required)")
	_ = cmd.MarkFlagRequired("signature")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		raw, v, err := transitVersionedArg("signature", sig, f.version)
		if err != nil {
			return err
		}
		in, err := transitInput(cmd, f.in)
		if err != nil {
			return err
		}
		opts, err := s.options()
		if err != nil {
			return err
		}
		rs, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) ([]client.VerifyResult, error) {
			return t.VerifyBatch(ctx, args[0], []client.VerifyItem{{Input: in, Signature: client.Versioned{KeyVersion: v, Bytes: raw}}}, opts...)
		})
		if err != nil {
			return transitRPCError("verify", err)
		}
		return transitVerdict(out, "verify", rs[0])
	}
	return cmd
}

// transitVersionedArg decodes a --signature or --verify value (see transitParseVersioned;
// @FILE reads it from a file).
func transitVersionedArg(flag, v string, def uint32) ([]byte, uint32, error) {
	if f, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, 0, usageError{fmt.Errorf("--%s: %w", flag, err)}
		}
		v = string(b)
	}
	raw, ver, err := transitParseVersioned(v, def)
	if err != nil {
		return nil, 0, usageError{fmt.Errorf("--%s: %w", flag, err)}
	}
	return raw, ver, nil
}

// transitVerdict prints a verification's outcome: an item error, "valid", or
// errTransitInvalid (exit 1). As JSON, the document is the response
// message of VerifySignature (the same shape as VerifyHmac's).
func transitVerdict(out *output, verb string, r client.VerifyResult) error {
	valid := r.Valid
	resp := &hsmgatev1.VerifySignatureResponse{Results: []*hsmgatev1.VerifyResult{{Valid: r.Valid, Reference: r.Reference,
		Error: itemStatus(r.Err)}}}
	err := transitPrintOne(out, verb, resp, false, r.Err, func(w io.Writer) error {
		if !valid {
			return nil
		}
		_, err := fmt.Fprintln(w, "valid")
		return err
	})
	if err == nil && !valid {
		return fmt.Errorf("transit %s: %w", verb, errTransitInvalid)
	}
	return err
}

func newTransitHMACCmd() *cobra.Command {
	f := &transitDataFlags{}
	var verify string
	cmd := &cobra.Command{
		Use:   "hmac NAME",
		Short: "HMAC data with an hmac-* key, or check an HMAC with --verify",
		Long: `Compute the HMAC of the input with the key's latest version (or --version) and
print it as hsmgate:v<N>:<base64>. With --verify MAC (that form, base64 with
--version, or @FILE), check MAC in constant time instead: prints "valid" and
exits 0, or exits 1. Needs the "hmac" capability on transit/keys/NAME
("verify" with --verify).`,
		Example: `  hsmgate transit keys create mac1 --type hmac-sha256
  echo -n payload | hsmgate transit hmac mac1
  echo -n payload | hsmgate transit hmac mac1 --verify hsmgate:v1:3q2+7w...`,
		Args: cobra.ExactArgs(1),
	}
	f.add(cmd, false, false, true)
	cmd.Flags().StringVar(&verify, "verify", "", "check this HMAC instead of printing one")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var mac []byte
		var mv uint32
		if verify != "" {
			var err error
			if mac, mv, err = transitVersionedArg("verify", verify, f.version); err != nil {
				return err
			}
		}
		in, err := transitInput(cmd, f.in)
		if err != nil {
			return err
		}
		if verify != "" {
			rs, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) ([]client.VerifyResult, error) {
				return t.VerifyHMACBatch(ctx, args[0], []client.VerifyItem{{Input: in, Signature: client.Versioned{KeyVersion: mv, Bytes: mac}}})
			})
			if err != nil {
				return transitRPCError("hmac", err)
			}
			return transitVerdict(out, "hmac", rs[0])
		}
		rs, err := transitFor(cmd, cf, func(ctx context.Context, t *client.Transit) ([]client.SignResult, error) {
			return t.HMACBatch(ctx, args[0], []client.SignItem{{Input: in}}, client.WithKeyVersion(f.version))
		})
		if err != nil {
			return transitRPCError("hmac", err)
		}
		r := rs[0]
		resp := &hsmgatev1.ComputeHmacResponse{Results: []*hsmgatev1.HmacResult{{Hmac: r.Signature.Bytes, KeyVersion: r.Signature.KeyVersion,
			Reference: r.Reference, Error: itemStatus(r.Err)}}}
		return transitPrintOne(out, "hmac", resp, false, r.Err, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, r.Signature)
			return err
		})
	}
	return cmd
}

func newTransitRandomCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "random [BYTES]",
		Short: "Random bytes from the HSM's RNG (default 32, base64)",
		Long: `Print BYTES (1..65536, default 32) random bytes from the HSM's RNG, as base64
(default), hex, or raw bytes. Needs the "read" capability on transit/random.`,
		Example: `  hsmgate transit random
  hsmgate transit random 16 --format hex
  hsmgate transit random 64 --format raw > seed.bin`,
		Args: cobra.MaximumNArgs(1),
	}
	cmd.Flags().StringVar(&format, "format", "base64", "output: base64, hex or raw")
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		n := uint64(32)
		if len(args) == 1 {
			var err error
			if n, err = strconv.ParseUint(args[0], 10, 32); err != nil || n == 0 {
				return usageError{fmt.Errorf("BYTES %q: want a positive number", args[0])}
			}
		}
		switch format {
		case "base64", "hex", "raw":
		default:
			return usageError{fmt.Errorf("--format %q: want base64, hex or raw", format)}
		}
		resp, err := transitCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.TransitServiceClient) (*hsmgatev1.GenerateRandomResponse, error) {
			return c.GenerateRandom(ctx, &hsmgatev1.GenerateRandomRequest{Bytes: uint32(n)})
		})
		if err != nil {
			return transitRPCError("random", err)
		}
		return out.print(resp, func(w io.Writer) error {
			var err error
			switch format {
			case "hex":
				_, err = fmt.Fprintln(w, hex.EncodeToString(resp.GetRandom()))
			case "raw":
				_, err = w.Write(resp.GetRandom())
			default:
				_, err = fmt.Fprintln(w, base64.StdEncoding.EncodeToString(resp.GetRandom()))
			}
			return err
		})
	}
	return cmd
}
