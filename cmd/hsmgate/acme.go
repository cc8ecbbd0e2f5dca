package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// newACMECmd is `hsmgate acme`: ACME directories and EAB keys.
func newACMECmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acme",
		Short: "ACME server (RFC 8555): directories bound to PKI roles, EAB keys",
		Long: `ACME directories, each bound to a PKI role, served at /acme/<name>/directory.

  hsmgate acme directory write web --role web --eab-required --allowed-challenge http-01
  hsmgate acme directory read web
  hsmgate acme directory list
  hsmgate acme eab create web
  hsmgate acme eab create web --allowed-domain example.com --max-orders-per-day 100`,
	}
	dir := &cobra.Command{Use: "directory", Short: "ACME directories"}
	dir.AddCommand(newACMEDirWriteCmd(), newACMEDirReadCmd(), newACMEDirListCmd())
	eab := &cobra.Command{Use: "eab", Short: "External Account Binding keys"}
	eab.AddCommand(newACMEEABCreateCmd())
	cmd.AddCommand(dir, eab)
	return cmd
}

// acmeCallFor is the one ACMEService call of a verb (see callFor).
func acmeCallFor[R any](cmd *cobra.Command, cf *clientFlags, fn func(ctx context.Context, c hsmgatev1.ACMEServiceClient) (R, error)) (R, error) {
	return callFor(cmd, cf, hsmgatev1.NewACMEServiceClient, fn)
}

func newACMEDirWriteCmd() *cobra.Command {
	var d hsmgatev1.ACMEDirectory
	cmd := &cobra.Command{
		Use:   "write NAME --role ROLE",
		Short: "Create or replace a directory",
		Args:  cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	fs := cmd.Flags()
	fs.StringVar(&d.Role, "role", "", "PKI role that checks names and signs (required)")
	fs.BoolVar(&d.EabRequired, "eab-required", false, "new accounts need an External Account Binding")
	fs.StringSliceVar(&d.AllowedChallenges, "allowed-challenge", nil, "challenge type offered (repeat; default: all supported)")
	fs.StringVar(&d.TermsOfService, "terms-of-service", "", "terms of service URL (accounts must agree)")
	cmd.MarkFlagRequired("role")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		d.Name = args[0]
		r, err := acmeCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.ACMEServiceClient) (*hsmgatev1.WriteDirectoryResponse, error) {
			return c.WriteDirectory(ctx, &hsmgatev1.WriteDirectoryRequest{Directory: &d})
		})
		if err != nil {
			return fmt.Errorf("acme directory write: %w", err)
		}
		return out.print(r.GetDirectory(), func(w io.Writer) error { return printProtoJSON(w, r.GetDirectory()) })
	}
	return cmd
}

func newACMEDirReadCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "read NAME", Short: "Show a directory", Args: cobra.ExactArgs(1)}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := acmeCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.ACMEServiceClient) (*hsmgatev1.GetDirectoryResponse, error) {
			return c.GetDirectory(ctx, &hsmgatev1.GetDirectoryRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("acme directory read: %w", err)
		}
		return out.print(r.GetDirectory(), func(w io.Writer) error { return printProtoJSON(w, r.GetDirectory()) })
	}
	return cmd
}

func newACMEDirListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List directories", Args: cobra.NoArgs}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := acmeCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.ACMEServiceClient) (*hsmgatev1.ListDirectoriesResponse, error) {
			return c.ListDirectories(ctx, &hsmgatev1.ListDirectoriesRequest{})
		})
		if err != nil {
			return fmt.Errorf("acme directory list: %w", err)
		}
		return out.print(r, func(w io.Writer) error {
			for _, d := range r.GetDirectories() {
				if _, err := fmt.Fprintf(w, "%s\trole=%s\teab_required=%v\t%s\n", d.GetName(), d.GetRole(), d.GetEabRequired(), d.GetUrl()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return cmd
}

func newACMEEABCreateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create DIRECTORY",
		Short: "Make a single-use EAB key; the HMAC key is printed once",
		Long: `Make a single-use External Account Binding key for DIRECTORY. The account
bound with it inherits its policy, enforced at every new order:
--allowed-domain (repeat) restricts DNS names to those domains and their
subdomains (others: rejectedIdentifier; IP identifiers refused), and
--max-orders-per-day caps its new orders per UTC day (past it: rateLimited).`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	var req hsmgatev1.CreateEABKeyRequest
	fs := cmd.Flags()
	fs.StringSliceVar(&req.AllowedDomains, "allowed-domain", nil, "DNS domain the account may order names under (repeat; default: any the role allows)")
	fs.Uint32Var(&req.MaxOrdersPerDay, "max-orders-per-day", 0, "new orders per UTC day of the account (0: no policy limit)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req.Directory = args[0]
		r, err := acmeCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.ACMEServiceClient) (*hsmgatev1.CreateEABKeyResponse, error) {
			return c.CreateEABKey(ctx, &req)
		})
		if err != nil {
			return fmt.Errorf("acme eab create: %w", err)
		}
		return out.print(r, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "key_id:   %s\nhmac_key: %s\n", r.GetKeyId(), r.GetHmacKey())
			return err
		})
	}
	return cmd
}
