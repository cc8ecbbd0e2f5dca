package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/internal/auth"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// newPolicyCmd is `hsmgate policy write|read|list|delete`.
func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Write, read, list and delete policies",
		Long: `Policies are named lists of rules: a resource glob, capabilities, and an
effect (allow, the default, or deny). Explicit deny wins; the default is deny.
'*' in a resource matches any run of characters, '/' included.

A policy file (YAML or JSON):

  rules:
    - resource: transit/keys/payments-*
      capabilities: [encrypt, decrypt]
    - resource: transit/keys/payments-legacy
      capabilities: [encrypt]
      effect: deny`,
	}
	cmd.AddCommand(newPolicyWriteCmd(g), newPolicyReadCmd(g), newPolicyListCmd(g), newPolicyDeleteCmd(g))
	return cmd
}

// authCallFor is the one AuthService call of a verb (see callFor).
func authCallFor[R any](cmd *cobra.Command, cf *clientFlags, fn func(context.Context, hsmgatev1.AuthServiceClient) (R, error)) (R, error) {
	return callFor(cmd, cf, hsmgatev1.NewAuthServiceClient, fn)
}

func newPolicyWriteCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "write NAME FILE",
		Short:   "Create or replace a policy from a YAML/JSON file (- for stdin)",
		Example: `  hsmgate policy write payments payments.yaml`,
		Args:    cobra.ExactArgs(2),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var doc []byte
		var err error
		if args[1] == "-" {
			doc, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20+1))
		} else {
			doc, err = os.ReadFile(args[1])
		}
		if err != nil {
			return fmt.Errorf("policy write: %w", err)
		}
		p, err := auth.ParsePolicyDocument(args[0], doc)
		if err != nil {
			return fmt.Errorf("policy write: %w", err)
		}
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.WritePolicyResponse, error) {
			return c.WritePolicy(ctx, &hsmgatev1.WritePolicyRequest{Policy: p})
		})
		if err != nil {
			return fmt.Errorf("policy write: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "policy %q written (%d rules)\n", p.GetName(), len(p.GetRules()))
			return err
		})
	}
	return cmd
}

func newPolicyReadCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "read NAME",
		Short: "Print a policy as a policy file (-o json: the stored message)",
		Args:  cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.ReadPolicyResponse, error) {
			return c.ReadPolicy(ctx, &hsmgatev1.ReadPolicyRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("policy read: %w", err)
		}
		return out.print(resp.GetPolicy(), func(w io.Writer) error {
			_, err := w.Write(auth.FormatPolicyDocument(resp.GetPolicy()))
			return err
		})
	}
	return cmd
}

func newPolicyListCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List policy names", Args: cobra.NoArgs}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.ListPoliciesResponse, error) {
			return c.ListPolicies(ctx, &hsmgatev1.ListPoliciesRequest{})
		})
		if err != nil {
			return fmt.Errorf("policy list: %w", err)
		}
		return out.print(resp, func(w io.Writer) error { return printLines(w, resp.GetNames()) })
	}
	return cmd
}

func newPolicyDeleteCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "delete NAME", Short: "Delete a policy", Args: cobra.ExactArgs(1)}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.DeletePolicyResponse, error) {
			return c.DeletePolicy(ctx, &hsmgatev1.DeletePolicyRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("policy delete: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "policy %q deleted\n", args[0])
			return err
		})
	}
	return cmd
}
