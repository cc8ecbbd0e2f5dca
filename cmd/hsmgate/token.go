package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// newTokenCmd is `hsmgate token create|lookup|renew|revoke|root`.
func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, look up, renew and revoke bearer tokens",
		Long: `Bearer tokens are "hgs." and 32 random bytes. The server keeps only their
SHA-256, which is also their accessor: the name used to look up, renew and
revoke a token. A token's secret is printed once, by create.

A token made with a token is its child: it never outlives its parent and is
revoked with it. A root caller can make orphans (--orphan), which are not.`,
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenListCmd(g), newTokenLookupCmd(g), newTokenRenewCmd(g), newTokenRevokeCmd(g), newTokenRootCmd(g))
	return cmd
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var (
		name       string
		policies   []string
		ttl, max   time.Duration
		renewable  bool
		root       bool
		meta       []string
		secretOnly bool
		orphan     bool
		entity     string
		entityMeta []string
	)
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create a token (its secret is shown once)",
		Example: `  hsmgate token create --display-name payments-api --policy payments --ttl 24h --renewable`,
		Args:    cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	fs := cmd.Flags()
	fs.StringVar(&name, "display-name", "", "name of the token's identity")
	fs.StringSliceVar(&policies, "policy", nil, "policy to bind (repeat or comma-separate)")
	fs.DurationVar(&ttl, "ttl", 0, "time to live (default: the server's)")
	fs.DurationVar(&max, "max-ttl", 0, "limit that renewals cannot pass (default: the server's)")
	fs.BoolVar(&renewable, "renewable", false, "allow renewal")
	fs.BoolVar(&root, "root", false, "make a root token (only a root caller may)")
	fs.StringArrayVar(&meta, "meta", nil, "metadata key=value (repeatable)")
	fs.BoolVar(&secretOnly, "secret-only", false, "print only the token")
	fs.BoolVar(&orphan, "orphan", false, "do not make the token a child of the caller's token (root only)")
	fs.StringVar(&entity, "entity", "", "vouched identity for SSH principals and rate limits (root, or admin on auth/entities/<name>; default: the caller's)")
	fs.StringArrayVar(&entityMeta, "entity-meta", nil, "vouched metadata key=value, with --entity (repeatable)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		md, err := keyValues("--meta", meta)
		if err != nil {
			return err
		}
		emd, err := keyValues("--entity-meta", entityMeta)
		if err != nil {
			return err
		}
		req := &hsmgatev1.CreateTokenRequest{DisplayName: name, Policies: policies, Renewable: renewable, Root: root, Metadata: md, Orphan: orphan,
			Entity: entity, EntityMetadata: emd}
		if ttl > 0 {
			req.Ttl = durationpb.New(ttl)
		}
		if max > 0 {
			req.MaxTtl = durationpb.New(max)
		}
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.CreateTokenResponse, error) {
			return c.CreateToken(ctx, req)
		})
		if err != nil {
			return fmt.Errorf("token create: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			if secretOnly {
				_, err := fmt.Fprintln(w, resp.GetToken())
				return err
			}
			if _, err := fmt.Fprintf(w, "token:        %s\n", resp.GetToken()); err != nil {
				return err
			}
			fmt.Fprintln(g.stderr, "(the token is shown this once; the server keeps only its hash)")
			return printTokenInfo(w, resp.GetInfo())
		})
	}
	return cmd
}

// keyValues parses repeated key=value flags.
func keyValues(flag string, kvs []string) (map[string]string, error) {
	md := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("token create: %s %q: want key=value", flag, kv)}
		}
		md[k] = v
	}
	return md, nil
}

func printTokenInfo(w io.Writer, t *hsmgatev1.TokenInfo) error {
	if t == nil {
		return nil
	}
	exp := "never"
	if t.GetExpireTime() != nil {
		exp = t.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
	}
	maxExp := "none"
	if t.GetMaxExpireTime() != nil {
		maxExp = t.GetMaxExpireTime().AsTime().UTC().Format(time.RFC3339)
	}
	keys := make([]string, 0, len(t.GetMetadata()))
	for k := range t.GetMetadata() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var md []string
	for _, k := range keys {
		md = append(md, k+"="+t.GetMetadata()[k])
	}
	_, err := fmt.Fprintf(w, "accessor:     %s\ndisplay name: %s\npolicies:     %s\nroot:         %v\nrenewable:    %v\ncreated:      %s by %s\nexpires:      %s\nmax expiry:   %s\nmetadata:     %s\n",
		t.GetAccessor(), t.GetDisplayName(), strings.Join(t.GetPolicies(), ","), t.GetRoot(), t.GetRenewable(),
		t.GetCreateTime().AsTime().UTC().Format(time.RFC3339), t.GetCreatedBy(), exp, maxExp, strings.Join(md, ","))
	if err != nil || t.GetEntity() == "" {
		return err
	}
	var emd []string
	for k, v := range t.GetEntityMetadata() {
		emd = append(emd, k+"="+v)
	}
	sort.Strings(emd)
	_, err = fmt.Fprintf(w, "entity:       %s\nentity meta:  %s\n", t.GetEntity(), strings.Join(emd, ","))
	return err
}

func newTokenListCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List live tokens: accessor, display name, policies, expiry", Args: cobra.NoArgs}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.ListTokensResponse, error) {
			return c.ListTokens(ctx, &hsmgatev1.ListTokensRequest{})
		})
		if err != nil {
			return fmt.Errorf("token list: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			for _, t := range resp.GetTokens() {
				exp := "never"
				if t.GetExpireTime() != nil {
					exp = t.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
				}
				kind := ""
				if t.GetRoot() {
					kind = " (root)"
				}
				if _, err := fmt.Fprintf(w, "%s  %s%s  [%s]  expires %s\n", t.GetAccessor(), t.GetDisplayName(), kind, strings.Join(t.GetPolicies(), ","), exp); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return cmd
}

func newTokenLookupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lookup [ACCESSOR]",
		Short: "Describe a token by accessor, or the caller itself without one",
		Args:  cobra.MaximumNArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 {
			resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.LookupTokenResponse, error) {
				return c.LookupToken(ctx, &hsmgatev1.LookupTokenRequest{Accessor: args[0]})
			})
			if err != nil {
				return fmt.Errorf("token lookup: %w", err)
			}
			return out.print(resp, func(w io.Writer) error { return printTokenInfo(w, resp.GetInfo()) })
		}
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.LookupSelfResponse, error) {
			return c.LookupSelf(ctx, &hsmgatev1.LookupSelfRequest{})
		})
		if err != nil {
			return fmt.Errorf("token lookup: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			if _, err := fmt.Fprintf(w, "identity:     %s (%s)\npolicies:     %s\n", resp.GetName(), resp.GetKind(), strings.Join(resp.GetPolicies(), ",")); err != nil {
				return err
			}
			return printTokenInfo(w, resp.GetToken())
		})
	}
	return cmd
}

func newTokenRenewCmd(g *globals) *cobra.Command {
	var inc time.Duration
	cmd := &cobra.Command{
		Use:   "renew [ACCESSOR]",
		Short: "Renew a token by accessor, or the caller's own token without one",
		Args:  cobra.MaximumNArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.Flags().DurationVar(&inc, "increment", 0, "new TTL from now (default: the token's TTL; capped by its max TTL)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var d *durationpb.Duration
		if inc > 0 {
			d = durationpb.New(inc)
		}
		// RenewToken and RenewSelf answer the same: the token's info.
		info, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (*hsmgatev1.TokenInfo, error) {
			if len(args) == 1 {
				resp, err := c.RenewToken(ctx, &hsmgatev1.RenewTokenRequest{Accessor: args[0], Increment: d})
				return resp.GetInfo(), err
			}
			resp, err := c.RenewSelf(ctx, &hsmgatev1.RenewSelfRequest{Increment: d})
			return resp.GetInfo(), err
		})
		if err != nil {
			return fmt.Errorf("token renew: %w", err)
		}
		return out.print(&hsmgatev1.RenewTokenResponse{Info: info}, func(w io.Writer) error { return printTokenInfo(w, info) })
	}
	return cmd
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	var self bool
	cmd := &cobra.Command{
		Use:   "revoke ACCESSOR | --self",
		Short: "Revoke a token by accessor, or the caller's own token with --self",
		Args:  cobra.MaximumNArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.Flags().BoolVar(&self, "self", false, "revoke the token this command authenticates with")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if self == (len(args) == 1) {
			return usageError{fmt.Errorf("token revoke: give an ACCESSOR or --self")}
		}
		resp, err := authCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthServiceClient) (proto.Message, error) {
			if self {
				return c.RevokeSelf(ctx, &hsmgatev1.RevokeSelfRequest{})
			}
			return c.RevokeToken(ctx, &hsmgatev1.RevokeTokenRequest{Accessor: args[0]})
		})
		if err != nil {
			return fmt.Errorf("token revoke: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, "revoked")
			return err
		})
	}
	return cmd
}

// newTokenRootCmd bootstraps a root token straight into the configured key
// store (no server involved; with bbolt, the server must be stopped).
func newTokenRootCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "root --config FILE",
		Short: "Generate a root token and store its hash in the configured key store (offline bootstrap)",
		Long: `Generate a root token, store its SHA-256 in the key store named by the config
file, and print the token once. A root token bypasses every policy: use it to
write the first policies and make tokens with --orphan (children of the root
token would die with it), then revoke it (hsmgate token revoke --self).
With the bbolt store the server must be stopped (the file is locked).`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "YAML config file (required)")
	_ = cmd.MarkFlagRequired("config")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := config.Load(cfgPath)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		st, err := openStore(ctx, c)
		if err != nil {
			return err
		}
		defer st.Close()
		secret, err := auth.GenerateToken(nil)
		if err != nil {
			return err
		}
		toks, err := auth.NewTokens(ctx, st, c.Auth.Tokens)
		if err != nil {
			return err
		}
		if err := toks.EnsureRoot(ctx, secret); err != nil {
			return fmt.Errorf("token root: %w", err)
		}
		cancel()
		fmt.Fprintln(g.stderr, "(the root token is shown this once; the store keeps only its hash)")
		_, err = fmt.Fprintf(g.stdout, "export HSMGATE_TOKEN=%s\n", secret)
		return err
	}
	return cmd
}
