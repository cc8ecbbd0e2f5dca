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

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// newAuthCmd is `hsmgate auth approle|kubernetes|cert ...`: administration of
// the login methods (the logins themselves go through the Vault door).
func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Manage login methods: AppRole, Kubernetes, client certificates",
		Long: `Login methods turn a machine's own credential into an ordinary hsmgate
token with a role's policies and TTL, at the Vault-compatible door:

  POST /v1/auth/approle/login     {"role_id": ..., "secret_id": ...}
  POST /v1/auth/kubernetes/login  {"role": ..., "jwt": <service-account token>}
  POST /v1/auth/cert/login        {"name": <role, optional>}   (over mTLS)

The token's identity is vouched for by the method: the AppRole's name, the
service account (system:serviceaccount:<namespace>:<name>), or the client
certificate's URI SAN, else its CN.`,
	}
	cmd.AddCommand(newAppRoleCmd(g), newKubernetesAuthCmd(g), newCertAuthCmd(g))
	return cmd
}

// methodCallFor is the one AuthMethodService call of a verb (see callFor).
func methodCallFor[R any](cmd *cobra.Command, cf *clientFlags, fn func(context.Context, hsmgatev1.AuthMethodServiceClient) (R, error)) (R, error) {
	return callFor(cmd, cf, hsmgatev1.NewAuthMethodServiceClient, fn)
}

// optDuration is nil for zero (the server's default).
func optDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// tokenFlags are the token TTL flags of every role.
type tokenFlags struct {
	policies    []string
	ttl, maxTTL time.Duration
}

func addTokenFlags(cmd *cobra.Command) *tokenFlags {
	f := &tokenFlags{}
	fs := cmd.Flags()
	fs.StringSliceVar(&f.policies, "policy", nil, "policy of the tokens it issues (repeat or comma-separate)")
	fs.DurationVar(&f.ttl, "token-ttl", 0, "TTL of its tokens (default: the server's)")
	fs.DurationVar(&f.maxTTL, "token-max-ttl", 0, "limit that renewals of its tokens cannot pass (default: the server's)")
	return f
}

// nameVerbs adds read, list and delete verbs over one kind of named role.
func nameVerbs(g *globals, what string, read func(context.Context, hsmgatev1.AuthMethodServiceClient, string) (proto.Message, error),
	list func(context.Context, hsmgatev1.AuthMethodServiceClient) ([]string, error),
	del func(context.Context, hsmgatev1.AuthMethodServiceClient, string) error) []*cobra.Command {
	r := &cobra.Command{Use: "read NAME", Short: "Show a " + what, Args: cobra.ExactArgs(1)}
	rcf := addClientFlags(r)
	rout := addOutput(r)
	r.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := methodCallFor(cmd, rcf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (proto.Message, error) {
			return read(ctx, c, args[0])
		})
		if err != nil {
			return fmt.Errorf("%s read: %w", what, err)
		}
		return rout.print(m, func(w io.Writer) error { return printProtoJSON(w, m) })
	}
	l := &cobra.Command{Use: "list", Short: "List " + what + " names", Args: cobra.NoArgs}
	lcf := addClientFlags(l)
	lout := addOutput(l)
	l.RunE = func(cmd *cobra.Command, _ []string) error {
		names, err := methodCallFor(cmd, lcf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) ([]string, error) {
			return list(ctx, c)
		})
		if err != nil {
			return fmt.Errorf("%s list: %w", what, err)
		}
		return lout.print(namesDoc{Names: append([]string{}, names...)}, func(w io.Writer) error { return printLines(w, names) })
	}
	d := &cobra.Command{Use: "delete NAME", Short: "Delete a " + what, Args: cobra.ExactArgs(1)}
	dcf := addClientFlags(d)
	dout := addOutput(d)
	d.RunE = func(cmd *cobra.Command, args []string) error {
		_, err := methodCallFor(cmd, dcf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (struct{}, error) {
			return struct{}{}, del(ctx, c, args[0])
		})
		if err != nil {
			return fmt.Errorf("%s delete: %w", what, err)
		}
		return dout.print(emptyDoc{}, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s %q deleted\n", what, args[0])
			return err
		})
	}
	return []*cobra.Command{r, l, d}
}

func newAppRoleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approle",
		Short: "AppRoles: role_id + secret_id logins for machines (cert-manager, CI)",
		Long: `An AppRole has a random role_id (public-ish: put it in the client's config)
and secret IDs (secret: 32 random bytes, shown once by "secret-id create"; the
server keeps only a hash). A secret ID can expire (--secret-id-ttl), allow a
number of logins (--secret-id-num-uses; 0 is unlimited) and be bound to CIDRs.`,
		Example: `  hsmgate auth approle write cert-manager --policy pki-web --token-ttl 20m --secret-id-ttl 720h
  hsmgate auth approle role-id cert-manager
  hsmgate auth approle secret-id create cert-manager --meta cluster=prod`,
	}
	cmd.AddCommand(newAppRoleWriteCmd(g), newAppRoleIDCmd(g), newSecretIDCmd(g))
	cmd.AddCommand(nameVerbs(g, "approle",
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient, n string) (proto.Message, error) {
			r, err := c.ReadAppRole(ctx, &hsmgatev1.ReadAppRoleRequest{Name: n})
			return r.GetRole(), err
		},
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) ([]string, error) {
			r, err := c.ListAppRoles(ctx, &hsmgatev1.ListAppRolesRequest{})
			return r.GetNames(), err
		},
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient, n string) error {
			_, err := c.DeleteAppRole(ctx, &hsmgatev1.DeleteAppRoleRequest{Name: n})
			return err
		})...)
	return cmd
}

func newAppRoleWriteCmd(g *globals) *cobra.Command {
	var (
		secretTTL time.Duration
		numUses   uint32
		cidrs     []string
	)
	cmd := &cobra.Command{
		Use:   "write NAME",
		Short: "Create an AppRole, or replace its settings (a new one gets a random role_id; an existing one keeps its own)",
		Args:  cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	tf := addTokenFlags(cmd)
	fs := cmd.Flags()
	fs.DurationVar(&secretTTL, "secret-id-ttl", 0, "lifetime of new secret IDs (0: no expiry)")
	fs.Uint32Var(&numUses, "secret-id-num-uses", 0, "logins a new secret ID allows (0: unlimited)")
	fs.StringSliceVar(&cidrs, "bind-cidr", nil, "CIDR logins must come from (repeat or comma-separate)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		role := &hsmgatev1.AppRole{
			Name: args[0], Policies: tf.policies, TokenTtl: optDuration(tf.ttl), TokenMaxTtl: optDuration(tf.maxTTL),
			SecretIdTtl: optDuration(secretTTL), SecretIdNumUses: numUses, BoundCidrs: cidrs,
		}
		resp, err := methodCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.WriteAppRoleResponse, error) {
			return c.WriteAppRole(ctx, &hsmgatev1.WriteAppRoleRequest{Role: role})
		})
		if err != nil {
			return fmt.Errorf("approle write: %w", err)
		}
		return out.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "approle %q written (role_id %s)\n", resp.GetRole().GetName(), resp.GetRole().GetRoleId())
			return err
		})
	}
	return cmd
}

func newAppRoleIDCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "role-id NAME", Short: "Print an AppRole's role_id", Args: cobra.ExactArgs(1)}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := methodCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.ReadAppRoleResponse, error) {
			return c.ReadAppRole(ctx, &hsmgatev1.ReadAppRoleRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("approle role-id: %w", err)
		}
		doc := struct {
			Name   string `json:"name"`
			RoleID string `json:"roleId"`
		}{resp.GetRole().GetName(), resp.GetRole().GetRoleId()}
		return out.print(doc, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, resp.GetRole().GetRoleId())
			return err
		})
	}
	return cmd
}

func newSecretIDCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "secret-id", Short: "Create, list and destroy an AppRole's secret IDs"}

	var (
		meta       []string
		cidrs      []string
		secretOnly bool
	)
	create := &cobra.Command{Use: "create NAME", Short: "Make a secret ID (shown once)", Args: cobra.ExactArgs(1)}
	ccf := addClientFlags(create)
	cout := addOutput(create)
	create.Flags().StringArrayVar(&meta, "meta", nil, "metadata key=value, copied into its tokens (repeatable)")
	create.Flags().StringSliceVar(&cidrs, "cidr", nil, "CIDR logins with it must come from (repeat or comma-separate)")
	create.Flags().BoolVar(&secretOnly, "secret-only", false, "print only the secret ID")
	create.RunE = func(cmd *cobra.Command, args []string) error {
		md := map[string]string{}
		for _, kv := range meta {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usageError{fmt.Errorf("secret-id create: --meta %q: want key=value", kv)}
			}
			md[k] = v
		}
		resp, err := methodCallFor(cmd, ccf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.CreateSecretIDResponse, error) {
			return c.CreateSecretID(ctx, &hsmgatev1.CreateSecretIDRequest{RoleName: args[0], Metadata: md, Cidrs: cidrs})
		})
		if err != nil {
			return fmt.Errorf("secret-id create: %w", err)
		}
		return cout.print(resp, func(w io.Writer) error {
			if secretOnly {
				_, err := fmt.Fprintln(w, resp.GetSecretId())
				return err
			}
			fmt.Fprintln(g.stderr, "(the secret ID is shown this once; the server keeps only its hash)")
			_, err := fmt.Fprintf(w, "secret_id:          %s\nsecret_id_accessor: %s\n%s", resp.GetSecretId(), resp.GetInfo().GetAccessor(), secretIDLine(resp.GetInfo()))
			return err
		})
	}

	list := &cobra.Command{Use: "list NAME", Short: "List live secret IDs: accessor, expiry, uses left, metadata (never the secrets)", Args: cobra.ExactArgs(1)}
	lcf := addClientFlags(list)
	lout := addOutput(list)
	list.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := methodCallFor(cmd, lcf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.ListSecretIDsResponse, error) {
			return c.ListSecretIDs(ctx, &hsmgatev1.ListSecretIDsRequest{RoleName: args[0]})
		})
		if err != nil {
			return fmt.Errorf("secret-id list: %w", err)
		}
		return lout.print(resp, func(w io.Writer) error {
			for _, s := range resp.GetSecretIds() {
				if _, err := fmt.Fprintf(w, "%s  %s", s.GetAccessor(), secretIDLine(s)); err != nil {
					return err
				}
			}
			return nil
		})
	}

	destroy := &cobra.Command{Use: "destroy NAME ACCESSOR", Short: "Destroy a secret ID by its accessor", Args: cobra.ExactArgs(2)}
	dcf := addClientFlags(destroy)
	dout := addOutput(destroy)
	destroy.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := methodCallFor(cmd, dcf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.DestroySecretIDResponse, error) {
			return c.DestroySecretID(ctx, &hsmgatev1.DestroySecretIDRequest{RoleName: args[0], Accessor: args[1]})
		})
		if err != nil {
			return fmt.Errorf("secret-id destroy: %w", err)
		}
		return dout.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "secret id %s destroyed\n", args[1])
			return err
		})
	}
	cmd.AddCommand(create, list, destroy)
	return cmd
}

// secretIDLine describes a secret ID on one line (ending in a newline).
func secretIDLine(s *hsmgatev1.SecretIDInfo) string {
	exp := "never"
	if s.GetExpireTime() != nil {
		exp = s.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
	}
	uses := "unlimited"
	if s.GetUsesLeft() > 0 {
		uses = fmt.Sprint(s.GetUsesLeft())
	}
	keys := make([]string, 0, len(s.GetMetadata()))
	for k := range s.GetMetadata() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var md []string
	for _, k := range keys {
		md = append(md, k+"="+s.GetMetadata()[k])
	}
	return fmt.Sprintf("expires=%s uses_left=%s cidrs=%s metadata=%s\n", exp, uses, strings.Join(s.GetCidrs(), ","), strings.Join(md, ","))
}

func newKubernetesAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kubernetes",
		Short: "Kubernetes service-account logins",
		Long: `Pods log in with their service-account token (a JWT). The server verifies it
against the cluster issuer's public keys (a JWKS: give the file from
"kubectl get --raw /openid/v1/jwks", or a URL to fetch it from), its issuer,
audience, expiry and not-before, then the role's bound service accounts and
namespaces.

With --token-review-url the server also asks the API server, by a TokenReview
(authentication.k8s.io/v1), whether the token is valid now (so the token of a
deleted pod or service account is refused before it expires); without a key
set the TokenReview alone decides. The API server's TLS is verified against
--token-review-ca-file (default: the system's roots). The reviewer's bearer
token (its service account needs the system:auth-delegator cluster role) is
the server's own, never sent by this command nor stored: the server config's
auth.kubernetes.token_reviewer_jwt_file (e.g. the pod's own
/var/run/secrets/kubernetes.io/serviceaccount/token, re-read on every review)
or token_reviewer_jwt_env; without either, the login JWT reviews itself.`,
		Example: `  kubectl get --raw /openid/v1/jwks > cluster-jwks.json
  hsmgate auth kubernetes config --issuer https://kubernetes.default.svc.cluster.local --jwks-file cluster-jwks.json --audience hsmgate
  hsmgate auth kubernetes config --token-review-url https://kubernetes.default.svc --token-review-ca-file /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
  hsmgate auth kubernetes role write cert-manager --sa-name cert-manager --sa-namespace cert-manager --policy pki-web`,
	}
	var (
		issuer, jwksFile, jwksURL, jwksCAFile string
		reviewURL, reviewCAFile               string
		audiences                             []string
	)
	cfgCmd := &cobra.Command{Use: "config", Short: "Set the issuer and its keys (without flags: show them)", Args: cobra.NoArgs}
	cf := addClientFlags(cfgCmd)
	cfgOut := addOutput(cfgCmd)
	fs := cfgCmd.Flags()
	fs.StringVar(&issuer, "issuer", "", `the exact "iss" of the cluster's service-account tokens`)
	fs.StringVar(&jwksFile, "jwks-file", "", `JSON Web Key Set file of the issuer's public keys (stored in the server); "-" for stdin`)
	fs.StringVar(&jwksURL, "jwks-url", "", "https URL the server fetches the key set from")
	fs.StringVar(&jwksCAFile, "jwks-ca-file", "", `PEM CA to verify --jwks-url with; "-" for stdin`)
	fs.StringSliceVar(&audiences, "audience", nil, `audience a token must name in "aud" (repeatable)`)
	fs.StringVar(&reviewURL, "token-review-url", "", "https URL of the API server that reviews every login token (TokenReview)")
	fs.StringVar(&reviewCAFile, "token-review-ca-file", "", `PEM CA to verify --token-review-url with; "-" for stdin`)
	cfgCmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if !fs.Changed("issuer") && !fs.Changed("jwks-file") && !fs.Changed("jwks-url") && !fs.Changed("audience") && !fs.Changed("token-review-url") {
			resp, err := methodCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.ReadKubernetesConfigResponse, error) {
				return c.ReadKubernetesConfig(ctx, &hsmgatev1.ReadKubernetesConfigRequest{})
			})
			if err != nil {
				return fmt.Errorf("kubernetes config: %w", err)
			}
			return cfgOut.print(resp.GetConfig(), func(w io.Writer) error { return printProtoJSON(w, resp.GetConfig()) })
		}
		if err := oneStdin(map[string]string{"jwks-file": jwksFile, "jwks-ca-file": jwksCAFile, "token-review-ca-file": reviewCAFile}); err != nil {
			return err
		}
		conf := &hsmgatev1.KubernetesAuthConfig{Issuer: issuer, JwksUrl: jwksURL, Audiences: audiences, TokenReviewUrl: reviewURL}
		for _, f := range []struct {
			flag, path string
			dst        *string
		}{{"jwks-file", jwksFile, &conf.Jwks}, {"jwks-ca-file", jwksCAFile, &conf.JwksCaPem}, {"token-review-ca-file", reviewCAFile, &conf.TokenReviewCaPem}} {
			if f.path == "" {
				continue
			}
			b, err := readInputFile(cmd, f.flag, f.path)
			if err != nil {
				return fmt.Errorf("kubernetes config: %w", err)
			}
			*f.dst = string(b)
		}
		resp, err := methodCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.WriteKubernetesConfigResponse, error) {
			return c.WriteKubernetesConfig(ctx, &hsmgatev1.WriteKubernetesConfigRequest{Config: conf})
		})
		if err != nil {
			return fmt.Errorf("kubernetes config: %w", err)
		}
		return cfgOut.print(resp, func(w io.Writer) error {
			var err error
			if issuer != "" {
				_, err = fmt.Fprintf(w, "kubernetes auth configured for issuer %s\n", issuer)
			}
			if err == nil && reviewURL != "" {
				_, err = fmt.Fprintf(w, "kubernetes auth: every login token reviewed by %s\n", reviewURL)
			}
			return err
		})
	}

	role := &cobra.Command{Use: "role", Short: "Write, read, list and delete Kubernetes roles"}
	var names, namespaces []string
	var audience string
	write := &cobra.Command{Use: "write NAME", Short: "Create or replace a Kubernetes role", Args: cobra.ExactArgs(1)}
	wcf := addClientFlags(write)
	wout := addOutput(write)
	tf := addTokenFlags(write)
	write.Flags().StringSliceVar(&names, "sa-name", nil, `service-account names allowed ("*" for any; globs)`)
	write.Flags().StringSliceVar(&namespaces, "sa-namespace", nil, `namespaces allowed ("*" for any; globs)`)
	write.Flags().StringVar(&audience, "audience", "", "audience required instead of the config's")
	write.RunE = func(cmd *cobra.Command, args []string) error {
		r := &hsmgatev1.KubernetesRole{Name: args[0], BoundServiceAccountNames: names, BoundServiceAccountNamespaces: namespaces, Audience: audience,
			Policies: tf.policies, TokenTtl: optDuration(tf.ttl), TokenMaxTtl: optDuration(tf.maxTTL)}
		resp, err := methodCallFor(cmd, wcf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.WriteKubernetesRoleResponse, error) {
			return c.WriteKubernetesRole(ctx, &hsmgatev1.WriteKubernetesRoleRequest{Role: r})
		})
		if err != nil {
			return fmt.Errorf("kubernetes role write: %w", err)
		}
		return wout.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "kubernetes role %q written\n", args[0])
			return err
		})
	}
	role.AddCommand(write)
	role.AddCommand(nameVerbs(g, "kubernetes role",
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient, n string) (proto.Message, error) {
			r, err := c.ReadKubernetesRole(ctx, &hsmgatev1.ReadKubernetesRoleRequest{Name: n})
			return r.GetRole(), err
		},
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) ([]string, error) {
			r, err := c.ListKubernetesRoles(ctx, &hsmgatev1.ListKubernetesRolesRequest{})
			return r.GetNames(), err
		},
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient, n string) error {
			_, err := c.DeleteKubernetesRole(ctx, &hsmgatev1.DeleteKubernetesRoleRequest{Name: n})
			return err
		})...)
	cmd.AddCommand(cfgCmd, role)
	return cmd
}

func newCertAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Client-certificate logins (over mTLS, against tls.client_ca)",
		Long: `A client presenting a certificate that verifies against the server's client
CAs logs in under a cert role. Each --cn/--dns/--uri list given must match
(globs); --ca-file ties the role to one client CA.`,
		Example: `  hsmgate auth cert role write web --cn 'web-*' --policy pki-web --token-ttl 1h`,
	}
	role := &cobra.Command{Use: "role", Short: "Write, read, list and delete cert roles"}
	var cns, dnss, uris []string
	var caFile string
	write := &cobra.Command{Use: "write NAME", Short: "Create or replace a cert role", Args: cobra.ExactArgs(1)}
	wcf := addClientFlags(write)
	wout := addOutput(write)
	tf := addTokenFlags(write)
	write.Flags().StringSliceVar(&cns, "cn", nil, "subject common names allowed (globs)")
	write.Flags().StringSliceVar(&dnss, "dns", nil, "DNS SANs allowed (globs)")
	write.Flags().StringSliceVar(&uris, "uri", nil, "URI SANs allowed (globs)")
	write.Flags().StringVar(&caFile, "ca-file", "", `PEM CA certificate(s), one of which must be in the client's chain; "-" for stdin`)
	write.RunE = func(cmd *cobra.Command, args []string) error {
		r := &hsmgatev1.CertRole{Name: args[0], AllowedCommonNames: cns, AllowedDnsSans: dnss, AllowedUriSans: uris,
			Policies: tf.policies, TokenTtl: optDuration(tf.ttl), TokenMaxTtl: optDuration(tf.maxTTL)}
		if caFile != "" {
			b, err := readInputFile(cmd, "ca-file", caFile)
			if err != nil {
				return fmt.Errorf("cert role write: %w", err)
			}
			r.CaPem = string(b)
		}
		resp, err := methodCallFor(cmd, wcf, func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) (*hsmgatev1.WriteCertRoleResponse, error) {
			return c.WriteCertRole(ctx, &hsmgatev1.WriteCertRoleRequest{Role: r})
		})
		if err != nil {
			return fmt.Errorf("cert role write: %w", err)
		}
		return wout.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "cert role %q written\n", args[0])
			return err
		})
	}
	role.AddCommand(write)
	role.AddCommand(nameVerbs(g, "cert role",
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient, n string) (proto.Message, error) {
			r, err := c.ReadCertRole(ctx, &hsmgatev1.ReadCertRoleRequest{Name: n})
			return r.GetRole(), err
		},
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient) ([]string, error) {
			r, err := c.ListCertRoles(ctx, &hsmgatev1.ListCertRolesRequest{})
			return r.GetNames(), err
		},
		func(ctx context.Context, c hsmgatev1.AuthMethodServiceClient, n string) error {
			_, err := c.DeleteCertRole(ctx, &hsmgatev1.DeleteCertRoleRequest{Name: n})
			return err
		})...)
	cmd.AddCommand(role)
	return cmd
}
