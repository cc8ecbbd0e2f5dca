package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/internal/audit"
)

// openAuditLog opens the audit log with its checkpoint signer (the HSM key
// audit.CheckpointKeyLabel: made here in dev mode, by `hsmgate init`
// otherwise), adds it to /readyz and to the metrics, and closes it last.
func openAuditLog(ctx context.Context, d *deps, cfg audit.Config, key []byte) (*audit.Log, error) {
	signer, err := auditSigner(ctx, d.HSM, d.DevRootToken != "" || d.DevStateDir != "")
	if err != nil {
		return nil, err
	}
	l, err := audit.OpenWith(cfg, key, audit.Options{Signer: signer, SignerLabel: audit.CheckpointKeyLabel, Logger: d.Log.With("log", "audit")})
	if err != nil {
		return nil, err
	}
	d.OnClose(l.Close)
	d.OnHUP(l.Rotate) // logrotate: SIGHUP starts a new file
	fp, _ := audit.Fingerprint(signer.Public())
	d.Log.Info("audit log open", "path", cfg.Path, "checkpoint", audit.CheckpointPath(cfg.Path), "checkpoint_key", audit.CheckpointKeyLabel, "checkpoint_key_fingerprint", fp)
	d.Server.AddReadyCheck("audit", l.Check)
	seq := func() float64 { s, _, _ := l.Head(); return float64(s) }
	cpSeq := func() float64 {
		if c := l.Checkpoint(); c != nil {
			return float64(c.Seq)
		}
		return 0
	}
	up := func() float64 {
		if l.Check(context.Background()) != nil {
			return 0
		}
		return 1
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hsmgate_audit_seq", Help: "Sequence number of the last audit line written."}, seq),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hsmgate_audit_checkpoint_seq", Help: "Sequence number of the last signed audit checkpoint."}, cpSeq),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hsmgate_audit_writable", Help: "1 while the audit log can be written; 0 once it stopped (every request fails)."}, up),
	} {
		if err := d.Server.Metrics().Register(c); err != nil {
			return nil, fmt.Errorf("audit metrics: %w", err)
		}
	}
	return l, nil
}

// auditSigner finds the checkpoint key in the HSM, creating it when create
// is set (dev mode).
func auditSigner(ctx context.Context, m *hsm.Module, create bool) (*hsm.Signer, error) {
	s, err := m.Signer(ctx, audit.CheckpointKeyLabel)
	if errors.Is(err, hsm.ErrKeyNotFound) && create {
		if _, err = ensureAuditKey(ctx, m); err == nil {
			s, err = m.Signer(ctx, audit.CheckpointKeyLabel)
		}
	}
	if errors.Is(err, hsm.ErrKeyNotFound) {
		return nil, fmt.Errorf("audit checkpoint key %q not found in token %q: run `hsmgate init --config FILE` once first", audit.CheckpointKeyLabel, m.TokenLabel())
	}
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint key %q: %w", audit.CheckpointKeyLabel, err)
	}
	if s.KeyType() != hsm.ECDSAP256 {
		return nil, fmt.Errorf("audit checkpoint key %q: got a %s key, want %s", audit.CheckpointKeyLabel, s.KeyType(), hsm.ECDSAP256)
	}
	return s, nil
}

// ensureAuditKey makes the checkpoint signing key (ECDSA P-256, inside the
// HSM) unless it exists; for `hsmgate init` and dev mode.
func ensureAuditKey(ctx context.Context, m *hsm.Module) (created bool, err error) {
	if _, err := m.Signer(ctx, audit.CheckpointKeyLabel); err == nil {
		return false, nil
	} else if !errors.Is(err, hsm.ErrKeyNotFound) {
		return false, err
	}
	if err := m.GenerateKey(ctx, audit.CheckpointKeyLabel, hsm.ECDSAP256); err != nil {
		return false, fmt.Errorf("audit checkpoint key %q: %w", audit.CheckpointKeyLabel, err)
	}
	return true, nil
}

// initAuditKey is the audit part of `hsmgate init`.
func initAuditKey(ctx context.Context, g *globals, m *hsm.Module) error {
	created, err := ensureAuditKey(ctx, m)
	if err != nil {
		return err
	}
	what := "exists"
	if created {
		what = "created"
	}
	_, err = fmt.Fprintf(g.stdout, "audit checkpoint key %q in token %q: %s\n", audit.CheckpointKeyLabel, m.TokenLabel(), what)
	return err
}

type auditVerifyFlags struct {
	keyFile, keyEnv  string
	checkpoint, head string
	checkpointKey    string
	noCheckpoint     bool
}

// newAuditCmd is `hsmgate audit verify FILE...`.
func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Work with the audit log"}
	f := &auditVerifyFlags{}
	verify := &cobra.Command{
		Use:   "verify FILE...",
		Short: "Check the keyed chain of audit log files against the server's checkpoint",
		Long: `Check the HMAC chain of one or more audit log files, given in order (the
rotated files oldest first, the live file last), with the deployment's audit
HMAC key (--hmac-key-file, or hex in $HSMGATE_AUDIT_HMAC_KEY; in dev mode the
key file beside the log is used). Every file must start with its header,
linked to the file before; the first file may start mid-chain (older files
deleted by retention).

The chain must reach the expected head: the checkpoint the server signs and
writes beside the log (--checkpoint FILE; by default LIVE-checkpoint.json
next to the last FILE), or a head SEQ:HASH from the server log or a copy kept
elsewhere (--head). A checkpoint's HMAC is checked, and its HSM signature:
against --checkpoint-key (a PEM public key) when given, else against the key
it carries, whose fingerprint is printed (compare it with the one the server
logs at start).

Prints the first changed, inserted, missing, reordered or foreign line and
exits 1; otherwise prints the number of lines and the head.`,
		Example: `  hsmgate audit verify --hmac-key-file /run/secrets/audit-hmac-key /var/log/hsmgate/audit.log.* /var/log/hsmgate/audit.log
  hsmgate audit verify --head 81234:5f0c... audit.log.* audit.log`,
		Args: cobra.MinimumNArgs(1),
	}
	verifyOut := addOutput(verify)
	verify.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := runAuditVerify(f, args)
		if err != nil {
			return err
		}
		return verifyOut.print(r, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, r.summary())
			return err
		})
	}
	fl := verify.Flags()
	fl.StringVar(&f.keyFile, "hmac-key-file", "", "file holding the audit HMAC key (raw bytes)")
	fl.StringVar(&f.keyEnv, "hmac-key-env", audit.DefaultHMACKeyEnv, "environment variable holding the audit HMAC key in hex")
	fl.StringVar(&f.checkpoint, "checkpoint", "", "checkpoint file written by the server (default: LIVE-checkpoint.json beside the last FILE)")
	fl.StringVar(&f.head, "head", "", "expected head SEQ:HASH (from the server log), instead of a checkpoint file")
	fl.StringVar(&f.checkpointKey, "checkpoint-key", "", "PEM public key that must have signed the checkpoint")
	fl.BoolVar(&f.noCheckpoint, "no-checkpoint", false, "do not check the head (the tail may have been cut)")
	cmd.AddCommand(verify, newAuditKeyCmd(g))
	return cmd
}

// newAuditKeyCmd is `hsmgate audit checkpoint-key --config FILE`: the public
// key that signs checkpoints, in PEM, to pin with verify --checkpoint-key.
func newAuditKeyCmd(g *globals) *cobra.Command {
	sf := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "checkpoint-key --config FILE",
		Short: "Print the public key (PEM) that signs audit checkpoints, from the HSM",
		Args:  cobra.NoArgs,
	}
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, log, err := sf.loadWithLogger(g)
		if err != nil {
			return err
		}
		m, err := openHSM(cmd.Context(), c, log)
		if err != nil {
			return err
		}
		defer m.Close()
		s, err := auditSigner(cmd.Context(), m, false)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(s.Public())
		if err != nil {
			return err
		}
		fp, _ := audit.Fingerprint(s.Public())
		pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		doc := struct {
			Label        string `json:"label"`
			Fingerprint  string `json:"fingerprint"`
			PublicKeyPEM string `json:"publicKeyPem"`
		}{audit.CheckpointKeyLabel, fp, string(pemKey)}
		return out.print(doc, func(w io.Writer) error {
			fmt.Fprintf(g.stderr, "%s %s\n", audit.CheckpointKeyLabel, fp)
			_, err := w.Write(pemKey)
			return err
		})
	}
	sf.add(cmd, false) // reads the config only: no listeners
	return cmd
}

// auditVerifyResult is what a successful `audit verify` reports (the
// printer's JSON; summary is the table line).
type auditVerifyResult struct {
	Lines       int    `json:"lines"`
	Files       int    `json:"files"`
	FirstSeq    uint64 `json:"firstSeq"`
	LastSeq     uint64 `json:"lastSeq"`
	ChainID     string `json:"chainId"`
	LastHash    string `json:"lastHash"`
	MidChain    bool   `json:"midChain"`    // older files deleted by retention, or not given
	HeadChecked bool   `json:"headChecked"` // false with --no-checkpoint: a cut tail would not show
	Head        string `json:"head"`        // what was reached: a checkpoint (and its signer) or --head
	AfterHead   int    `json:"afterHead"`   // lines written after the head
}

func (r auditVerifyResult) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ok: %d lines in %d file(s); seq %d..%d of chain %s; last hash %s", r.Lines, r.Files, r.FirstSeq, r.LastSeq, r.ChainID, r.LastHash)
	if r.MidChain {
		b.WriteString("; starts mid-chain (older files deleted by retention, or not given)")
	}
	if r.HeadChecked {
		fmt.Fprintf(&b, "; %s, %d line(s) after it", r.Head, r.AfterHead)
	} else {
		b.WriteString("; head NOT checked (--no-checkpoint): a cut tail would not show")
	}
	return b.String()
}

func runAuditVerify(f *auditVerifyFlags, files []string) (auditVerifyResult, error) {
	for _, name := range files { // a missing file first: it is the likelier mistake
		if _, err := os.Stat(name); err != nil {
			return auditVerifyResult{}, fmt.Errorf("audit verify: %w", err)
		}
	}
	key, err := verifyKey(f, files)
	if err != nil {
		return auditVerifyResult{}, usageError{fmt.Errorf("audit verify: %w", err)}
	}
	v, err := audit.NewVerifier(key)
	if err != nil {
		return auditVerifyResult{}, usageError{fmt.Errorf("audit verify: %w", err)}
	}
	headNote, err := expectHead(v, f, key, files[len(files)-1])
	if err != nil {
		return auditVerifyResult{}, err
	}
	for _, name := range files {
		if err := verifyOne(v, name); err != nil {
			return auditVerifyResult{}, err
		}
	}
	r, err := v.Finish()
	if err != nil {
		return auditVerifyResult{}, fmt.Errorf("audit verify: %w", err)
	}
	return auditVerifyResult{Lines: r.Lines, Files: r.Files, FirstSeq: r.FirstSeq, LastSeq: r.LastSeq, ChainID: r.ChainID,
		LastHash: r.LastHash, MidChain: r.FirstSeq > 1, HeadChecked: headNote != "", Head: headNote, AfterHead: r.AfterHead}, nil
}

func verifyOne(v *audit.Verifier, name string) error {
	fh, err := audit.OpenRegular(name)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	defer fh.Close()
	if _, err := v.Verify(name, fh); err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	return nil
}

// verifyKey finds the HMAC key: the flag's file, the environment, or (dev
// mode's layout) audit-hmac-key beside the last file.
func verifyKey(f *auditVerifyFlags, files []string) ([]byte, error) {
	if f.keyFile != "" || os.Getenv(f.keyEnv) != "" {
		return audit.LoadHMACKey(audit.Config{HMACKeyFile: f.keyFile, HMACKeyEnv: f.keyEnv})
	}
	dev := filepath.Join(filepath.Dir(files[len(files)-1]), "audit-hmac-key")
	if _, err := os.Stat(dev); err == nil {
		return audit.LoadHMACKey(audit.Config{HMACKeyFile: dev})
	}
	return nil, fmt.Errorf("no HMAC key: give --hmac-key-file, or the key in hex in $%s", f.keyEnv)
}

// expectHead sets the head the chain must reach and describes it.
func expectHead(v *audit.Verifier, f *auditVerifyFlags, key []byte, live string) (string, error) {
	if f.head != "" {
		seq, hash, err := audit.ParseHead(f.head)
		if err != nil {
			return "", usageError{err}
		}
		v.Expect(seq, hash)
		return fmt.Sprintf("head seq %d reached", seq), nil
	}
	if f.noCheckpoint {
		return "", nil
	}
	path := f.checkpoint
	if path == "" {
		path = audit.CheckpointPath(live)
	}
	cp, err := audit.ReadCheckpoint(path)
	if err != nil {
		return "", fmt.Errorf("audit verify: %w (give --checkpoint, --head, or --no-checkpoint)", err)
	}
	var pub crypto.PublicKey
	if f.checkpointKey != "" {
		if pub, err = readPublicKey(f.checkpointKey); err != nil {
			return "", usageError{err}
		}
	}
	fp, err := audit.VerifyCheckpoint(key, cp, pub)
	if err != nil {
		return "", fmt.Errorf("audit verify: %s: %w", path, err)
	}
	v.Expect(cp.Seq, cp.Hash)
	signed := "unsigned"
	if fp != "" {
		signed = "signed by " + fp
		if pub != nil {
			signed += " (the key given)"
		}
	}
	return fmt.Sprintf("checkpoint seq %d of %s reached (%s)", cp.Seq, cp.Time.Format("2006-01-02T15:04:05Z07:00"), signed), nil
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--checkpoint-key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("--checkpoint-key %s: no PEM block", path)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("--checkpoint-key %s: %w", path, err)
	}
	return pub, nil
}
