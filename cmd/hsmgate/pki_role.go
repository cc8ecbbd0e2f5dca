package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// pkiRoleFlags are the flags of `pki role write`; each one changes its field
// only when given (a new role starts from the defaults shown).
type pkiRoleFlags struct {
	issuer                                             string
	domains, ipRanges, uris, keyTypes, kus, ekus       []string
	csrExts, lintSources, lintExclude, orgs, policies  []string
	bare, sub, glob, wildcard, localhost, anyName, ips bool
	server, client, requireCN, noStore                 bool
	keyType, lintProfile                               string
	ttl, maxTTL, backdate                              time.Duration
}

func pkiAddRoleFlags(fs *pflag.FlagSet, f *pkiRoleFlags) {
	fs.StringVar(&f.issuer, "issuer", "", "issuer that signs (default: the default issuer at issuance)")
	fs.StringArrayVar(&f.domains, "allowed-domain", nil, "allowed domain, or glob with --allow-glob-domains (repeatable)")
	fs.BoolVar(&f.bare, "allow-bare-domains", false, "allow names equal to an allowed domain")
	fs.BoolVar(&f.sub, "allow-subdomains", false, "allow names below an allowed domain, at any depth")
	fs.BoolVar(&f.glob, "allow-glob-domains", false, "treat allowed domains containing * as globs (* within one label)")
	fs.BoolVar(&f.wildcard, "allow-wildcard", false, "allow wildcard names (*.x) where x's subdomains are allowed")
	fs.BoolVar(&f.localhost, "allow-localhost", false, "allow the name localhost")
	fs.BoolVar(&f.anyName, "allow-any-name", false, "allow any valid DNS name and common name")
	fs.BoolVar(&f.ips, "allow-ip-sans", false, "allow IP SANs")
	fs.StringArrayVar(&f.ipRanges, "allowed-ip-range", nil, "CIDR that IP SANs must be in (repeatable)")
	fs.StringArrayVar(&f.uris, "allowed-uri", nil, "URI SAN glob, e.g. spiffe://cluster.local/ns/*/sa/* (repeatable)")
	fs.StringVar(&f.keyType, "key-type", "ecdsa-p256", "key type Issue generates")
	fs.StringArrayVar(&f.keyTypes, "allowed-key-type", nil, "key type Sign accepts in CSRs (repeatable; default: --key-type)")
	fs.DurationVar(&f.ttl, "ttl", 30*24*time.Hour, "default validity")
	fs.DurationVar(&f.maxTTL, "max-ttl", 30*24*time.Hour, "longest validity a request may ask for")
	fs.DurationVar(&f.backdate, "backdate", 30*time.Second, "NotBefore this far in the past, for clock skew")
	fs.StringArrayVar(&f.kus, "key-usage", nil, "key usage: digital_signature, key_encipherment, key_agreement, ... (repeatable)")
	fs.StringArrayVar(&f.ekus, "ext-key-usage", nil, "extra extended key usage: code_signing, email_protection, ... (repeatable)")
	fs.BoolVar(&f.server, "server", true, "add serverAuth")
	fs.BoolVar(&f.client, "client", true, "add clientAuth")
	fs.BoolVar(&f.requireCN, "require-cn", true, "require a common name")
	fs.BoolVar(&f.noStore, "no-store", false, "do not keep issued certificates (serial and expiry are still recorded)")
	fs.StringArrayVar(&f.csrExts, "allowed-csr-extension", nil, "CSR extension OID that Sign may copy (repeatable)")
	fs.StringVar(&f.lintProfile, "lint-profile", "internal", "internal (RFC 5280 and structural lints: private names and IPs allowed) or public (adds the CA/Browser Forum sets)")
	fs.StringArrayVar(&f.lintSources, "lint-source", nil, "zlint source: RFC5280, CABF_BR, ... (repeatable; replaces the profile's sources)")
	fs.StringArrayVar(&f.lintExclude, "lint-exclude", nil, "zlint lint to skip (repeatable)")
	fs.StringArrayVar(&f.orgs, "org", nil, "subject organization of issued certificates (repeatable)")
	fs.StringArrayVar(&f.policies, "policy", nil, "certificate policy OID (repeatable)")
}

// apply sets the fields whose flags were given (all of them for a new role).
func (f *pkiRoleFlags) apply(fs *pflag.FlagSet, r *hsmgatev1.Role, all bool) {
	set := func(name string, fn func()) {
		if all || fs.Changed(name) {
			fn()
		}
	}
	set("issuer", func() { r.Issuer = f.issuer })
	set("allowed-domain", func() { r.AllowedDomains = f.domains })
	set("allow-bare-domains", func() { r.AllowBareDomains = f.bare })
	set("allow-subdomains", func() { r.AllowSubdomains = f.sub })
	set("allow-glob-domains", func() { r.AllowGlobDomains = f.glob })
	set("allow-wildcard", func() { r.AllowWildcardCertificates = f.wildcard })
	set("allow-localhost", func() { r.AllowLocalhost = f.localhost })
	set("allow-any-name", func() { r.AllowAnyName = f.anyName })
	set("allow-ip-sans", func() { r.AllowIpSans = f.ips })
	set("allowed-ip-range", func() { r.AllowedIpRanges = f.ipRanges })
	set("allowed-uri", func() { r.AllowedUriSans = f.uris })
	set("key-type", func() { r.KeyType = f.keyType })
	set("allowed-key-type", func() { r.AllowedKeyTypes = f.keyTypes })
	set("ttl", func() { r.Ttl = durationpb.New(f.ttl) })
	set("max-ttl", func() { r.MaxTtl = durationpb.New(f.maxTTL) })
	set("backdate", func() { r.NotBeforeBackdate = durationpb.New(f.backdate) })
	set("key-usage", func() { r.KeyUsage = f.kus })
	set("ext-key-usage", func() { r.ExtKeyUsage = f.ekus })
	set("server", func() { r.ServerFlag = f.server })
	set("client", func() { r.ClientFlag = f.client })
	set("require-cn", func() { r.RequireCn = f.requireCN })
	set("no-store", func() { r.NoStore = f.noStore })
	set("allowed-csr-extension", func() { r.AllowedCsrExtensions = f.csrExts })
	set("lint-profile", func() { r.LintProfile = f.lintProfile })
	set("lint-source", func() { r.LintSources = f.lintSources })
	set("lint-exclude", func() { r.LintExclude = f.lintExclude })
	set("org", func() { r.Organization = f.orgs })
	set("policy", func() { r.PolicyIdentifiers = f.policies })
}

func newPKIRoleCmd() *cobra.Command {
	role := &cobra.Command{Use: "role", Short: "Roles: what may be issued (names, key types, validity, usages)"}

	f := &pkiRoleFlags{}
	write := &cobra.Command{
		Use:   "write NAME [flags]",
		Short: "Create a role, or change the given fields of an existing one",
		Example: `  hsmgate pki role write web --allowed-domain example.com --allow-subdomains --allow-bare-domains
  hsmgate pki role write mesh --allowed-uri 'spiffe://cluster.local/ns/*/sa/*' --require-cn=false --server=false
  hsmgate pki role write web --max-ttl 2160h   # changes only max_ttl`,
		Args: cobra.ExactArgs(1),
	}
	pkiAddRoleFlags(write.Flags(), f)
	cf := addClientFlags(write)
	writeOut := addOutput(write)
	write.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.Role, error) {
			cur, err := c.GetRole(ctx, &hsmgatev1.GetRoleRequest{Name: args[0]})
			if pkiIsNotFound(err) {
				r := &hsmgatev1.Role{Name: args[0]}
				f.apply(cmd.Flags(), r, true)
				out, err := c.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: r})
				return out.GetRole(), err
			}
			if err != nil {
				return nil, err
			}
			r := cur.GetRole()
			f.apply(cmd.Flags(), r, false)
			out, err := c.UpdateRole(ctx, &hsmgatev1.UpdateRoleRequest{Role: r})
			return out.GetRole(), err
		})
		if err != nil {
			return fmt.Errorf("pki role write: %w", err)
		}
		return writeOut.print(r, func(w io.Writer) error { return printProtoJSON(w, r) })
	}

	read := &cobra.Command{Use: "read NAME", Short: "Print a role (JSON)", Args: cobra.ExactArgs(1)}
	cf2 := addClientFlags(read)
	readOut := addOutput(read)
	read.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf2, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.GetRoleResponse, error) {
			return c.GetRole(ctx, &hsmgatev1.GetRoleRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("pki role read: %w", err)
		}
		return readOut.print(r.GetRole(), func(w io.Writer) error { return printProtoJSON(w, r.GetRole()) })
	}

	list := &cobra.Command{Use: "list", Short: "List role names", Args: cobra.NoArgs}
	cf3 := addClientFlags(list)
	listOut := addOutput(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		r, err := pkiCallFor(cmd, cf3, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.ListRolesResponse, error) {
			return c.ListRoles(ctx, &hsmgatev1.ListRolesRequest{})
		})
		if err != nil {
			return fmt.Errorf("pki role list: %w", err)
		}
		return listOut.print(r, func(w io.Writer) error {
			for _, role := range r.GetRoles() {
				if _, err := fmt.Fprintln(w, role.GetName()); err != nil {
					return err
				}
			}
			return nil
		})
	}

	del := &cobra.Command{Use: "delete NAME", Short: "Delete a role", Args: cobra.ExactArgs(1)}
	cf4 := addClientFlags(del)
	delOut := addOutput(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := pkiCallFor(cmd, cf4, func(ctx context.Context, c hsmgatev1.PKIServiceClient) (*hsmgatev1.DeleteRoleResponse, error) {
			return c.DeleteRole(ctx, &hsmgatev1.DeleteRoleRequest{Name: args[0]})
		})
		if err != nil {
			return fmt.Errorf("pki role delete: %w", err)
		}
		return delOut.print(r, func(io.Writer) error { return nil })
	}
	role.AddCommand(write, read, list, del)
	return role
}
