package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/bench"
)

// compareLong documents `hsmgate bench compare SCENARIO` (in bench's help).
const compareLong = `
Compare (hsmgate bench compare SCENARIO): drive hsmgate over gRPC and a
server that speaks Vault's HTTP API (a Vault or OpenBao you run, or
hsmgate's own Vault door) with the same workload: the same payload,
concurrency, warm-up, duration and batch sizes (transit batches as
batch_input; Vault signs CSRs and SSH keys one per request), the two sides
one after the other, and print both rows and their ratio (no limits, no
profile). Scenarios: transit-encrypt, transit-sign, pki-sign, ssh-sign. The
hsmgate side makes its objects as above. On the Vault side the transit key
is made with POST <mount>/keys/<name> (an existing one is used as it is);
PKI and SSH roles must exist: name them with --vault-role (a PKI role that
signs svc.bench.example.com, an SSH role that signs user keys for the
principal "bench"). --vault-addr self benches hsmgate's own Vault door (in
process, with the same token and objects).`

// addCompareFlags adds the flags of the Vault side.
func addCompareFlags(cmd *cobra.Command, f *benchFlags) {
	fl := cmd.Flags()
	fl.StringVar(&f.vaultAddr, "vault-addr", "", `compare: the Vault-API server, e.g. https://127.0.0.1:8200; "self": hsmgate's own Vault door (--target inprocess)`)
	fl.StringVar(&f.vaultToken, "vault-token", "", "compare: its token (X-Vault-Token); default $VAULT_TOKEN")
	fl.StringVar(&f.vaultCACert, "vault-cacert", "", "compare: PEM CA bundle that verifies it; default $VAULT_CACERT, else the system roots")
	fl.StringVar(&f.names.TransitMount, "vault-transit-mount", "transit", "compare: its transit mount")
	fl.StringVar(&f.names.PKIMount, "vault-pki-mount", "pki", "compare: its PKI mount")
	fl.StringVar(&f.names.SSHMount, "vault-ssh-mount", "ssh", "compare: its SSH mount")
	fl.StringVar(&f.names.Key, "vault-key", "", "compare: its transit key (default: the name of hsmgate's, made there if missing)")
	fl.StringVar(&f.names.Role, "vault-role", "", "compare: its PKI or SSH role (default: the name of hsmgate's)")
}

// benchArgs accepts SCENARIO or "compare SCENARIO".
func benchArgs(_ *cobra.Command, args []string) error {
	switch {
	case len(args) == 1 && args[0] != "compare":
		return nil
	case len(args) == 2 && args[0] == "compare":
		return nil
	}
	return fmt.Errorf("want SCENARIO or compare SCENARIO, got %d argument(s)", len(args))
}

func runBenchCompare(ctx context.Context, g *globals, f *benchFlags, scenario string) error {
	if f.vaultToken == "" {
		f.vaultToken = os.Getenv("VAULT_TOKEN")
	}
	if f.vaultCACert == "" {
		f.vaultCACert = os.Getenv("VAULT_CACERT")
	}
	self := f.vaultAddr == "self"
	switch {
	case f.vaultAddr == "":
		return usageError{errors.New("--vault-addr is required (a URL, or self)")}
	case self && f.target != "inprocess":
		return usageError{errors.New("--vault-addr self needs --target inprocess")}
	case !self && f.vaultToken == "":
		return usageError{errors.New("--vault-token (or $VAULT_TOKEN) is required")}
	}
	p, err := benchParams(f, scenario)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "hsmgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	t, err := openBenchTarget(ctx, g, f, tmp)
	if err != nil {
		return err
	}
	defer t.close()
	addr, token, ca := f.vaultAddr, f.vaultToken, f.vaultCACert
	if self {
		addr, token, ca = "https://"+t.srv.httpAddr, t.client.Token, t.client.CACert
	}
	vc, err := bench.NewVaultClient(addr, token, ca, p.Concurrency)
	if err != nil {
		return usageError{err}
	}
	defer vc.Close()
	r, err := bench.Compare(ctx, bench.CompareOptions{
		Params: p, Env: t.env, Proc: t.proc, Vault: vc, Names: f.names, VaultInProcess: self,
		Progress: g.stderr, Log: g.stderr, Target: t.target,
		Command: "hsmgate " + strings.Join(redactTokenArgs(os.Args[1:]), " "),
	})
	if err != nil {
		return err
	}
	if self {
		r.Notes = append(r.Notes, "vault side: hsmgate's own Vault door in this process (same engines, auth, audit)")
	}
	if err := r.WriteTable(g.stdout); err != nil {
		return err
	}
	if f.jsonOut == "" {
		return nil
	}
	fh, err := os.Create(f.jsonOut)
	if err != nil {
		return err
	}
	if err := r.WriteJSON(fh); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// redactTokenArgs replaces the value of --vault-token in a command line
// (it is recorded in the result): tokens are never printed.
func redactTokenArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--vault-token="):
			out[i] = "--vault-token=REDACTED"
		case i > 0 && args[i-1] == "--vault-token":
			out[i] = "REDACTED"
		default:
			out[i] = a
		}
	}
	return out
}
