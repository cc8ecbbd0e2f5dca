package pki

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Role defaults.
const (
	DefaultRoleTTL      = 30 * 24 * time.Hour
	DefaultBackdate     = 30 * time.Second
	maxBackdate         = time.Hour
	DefaultLeafKeyType  = KeyECDSAP256
	maxCSRExtensionOIDs = 32
)

var keyUsages = map[string]x509.KeyUsage{
	"digital_signature":  x509.KeyUsageDigitalSignature,
	"content_commitment": x509.KeyUsageContentCommitment,
	"key_encipherment":   x509.KeyUsageKeyEncipherment,
	"data_encipherment":  x509.KeyUsageDataEncipherment,
	"key_agreement":      x509.KeyUsageKeyAgreement,
}

var extKeyUsages = map[string]x509.ExtKeyUsage{
	"server_auth":      x509.ExtKeyUsageServerAuth,
	"client_auth":      x509.ExtKeyUsageClientAuth,
	"code_signing":     x509.ExtKeyUsageCodeSigning,
	"email_protection": x509.ExtKeyUsageEmailProtection,
	"time_stamping":    x509.ExtKeyUsageTimeStamping,
	"ocsp_signing":     x509.ExtKeyUsageOCSPSigning,
}

// controlledExtensions are never copied from a CSR, whatever the role says.
var controlledExtensions = map[string]bool{
	"2.5.29.14":               true, // subject key identifier
	"2.5.29.15":               true, // key usage
	"2.5.29.17":               true, // subject alt name
	"2.5.29.18":               true, // issuer alt name
	"2.5.29.19":               true, // basic constraints
	"2.5.29.30":               true, // name constraints
	"2.5.29.31":               true, // CRL distribution points
	"2.5.29.32":               true, // certificate policies
	"2.5.29.35":               true, // authority key identifier
	"2.5.29.36":               true, // policy constraints
	"2.5.29.37":               true, // extended key usage
	"2.5.29.46":               true, // freshest CRL
	"2.5.29.54":               true, // inhibit any policy
	"1.3.6.1.5.5.7.1.1":       true, // authority information access
	"1.3.6.1.5.5.7.1.11":      true, // subject information access
	"1.3.6.1.5.5.7.48.1.5":    true, // OCSP no check
	"1.3.6.1.4.1.11129.2.4.2": true, // CT SCT list
	"1.3.6.1.4.1.11129.2.4.3": true, // CT poison
}

// normalizeRole checks a role and fills in its defaults. It returns a copy.
func normalizeRole(in *pb.Role) (*pb.Role, error) {
	if in == nil {
		return nil, fmt.Errorf("%w: role missing", ErrInvalid)
	}
	r := proto.Clone(in).(*pb.Role)
	if err := checkName("role", r.Name); err != nil {
		return nil, err
	}
	if r.Issuer != "" && r.Issuer != "default" {
		if err := checkName("issuer", r.Issuer); err != nil {
			return nil, err
		}
	}
	if r.Issuer == "default" {
		r.Issuer = ""
	}
	for i, d := range r.AllowedDomains {
		d = normalizeDNS(d)
		if strings.Contains(d, "*") {
			if _, err := path.Match(strings.ReplaceAll(d, ".", "/"), ""); err != nil {
				return nil, fmt.Errorf("%w: allowed domain glob %q: %v", ErrInvalid, d, err)
			}
		} else if _, err := checkDNSSyntax(d); err != nil {
			return nil, fmt.Errorf("%w: allowed domain %q: %v", ErrInvalid, d, err)
		}
		r.AllowedDomains[i] = d
	}
	for _, c := range r.AllowedIpRanges {
		if _, err := netip.ParsePrefix(c); err != nil {
			return nil, fmt.Errorf("%w: allowed IP range %q: %v", ErrInvalid, c, err)
		}
	}
	for _, g := range r.AllowedUriSans {
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("%w: allowed URI glob %q: %v", ErrInvalid, g, err)
		}
	}
	if r.KeyType == "" {
		r.KeyType = DefaultLeafKeyType
	}
	if !leafKeyTypes[r.KeyType] {
		return nil, fmt.Errorf("%w: key type %q", ErrInvalid, r.KeyType)
	}
	if len(r.AllowedKeyTypes) == 0 {
		r.AllowedKeyTypes = []string{r.KeyType}
	}
	for _, kt := range r.AllowedKeyTypes {
		if !leafKeyTypes[kt] {
			return nil, fmt.Errorf("%w: allowed key type %q", ErrInvalid, kt)
		}
	}
	if err := normalizeDurations(r); err != nil {
		return nil, err
	}
	for _, ku := range r.KeyUsage {
		if _, ok := keyUsages[ku]; !ok {
			return nil, fmt.Errorf("%w: key usage %q", ErrInvalid, ku)
		}
	}
	for _, eku := range r.ExtKeyUsage {
		if _, ok := extKeyUsages[eku]; !ok {
			return nil, fmt.Errorf("%w: extended key usage %q", ErrInvalid, eku)
		}
	}
	if !r.ServerFlag && !r.ClientFlag && len(r.ExtKeyUsage) == 0 {
		return nil, fmt.Errorf("%w: role %q has no extended key usage (set server_flag, client_flag or ext_key_usage)", ErrInvalid, r.Name)
	}
	if len(r.AllowedCsrExtensions) > maxCSRExtensionOIDs {
		return nil, fmt.Errorf("%w: more than %d allowed CSR extensions", ErrInvalid, maxCSRExtensionOIDs)
	}
	for _, o := range r.AllowedCsrExtensions {
		if _, err := parseOID(o); err != nil {
			return nil, err
		}
		if controlledExtensions[o] {
			return nil, fmt.Errorf("%w: extension %s is set by the CA and cannot come from a CSR", ErrInvalid, o)
		}
	}
	for _, p := range r.PolicyIdentifiers {
		if _, err := x509.ParseOID(p); err != nil {
			return nil, fmt.Errorf("%w: policy identifier %q", ErrInvalid, p)
		}
	}
	switch r.LintProfile {
	case "":
		r.LintProfile = ProfileInternal
	case ProfileInternal, ProfilePublic:
	default:
		return nil, fmt.Errorf("%w: lint_profile %q (want %q or %q)", ErrInvalid, r.LintProfile, ProfileInternal, ProfilePublic)
	}
	if _, err := roleLintOptions(r).registry(); err != nil {
		return nil, err
	}
	return r, nil
}

func normalizeDurations(r *pb.Role) error {
	maxTTL := DefaultRoleTTL
	if r.MaxTtl != nil {
		maxTTL = r.MaxTtl.AsDuration()
	}
	ttl := min(DefaultRoleTTL, maxTTL)
	if r.Ttl != nil {
		ttl = r.Ttl.AsDuration()
	}
	if ttl <= 0 || maxTTL <= 0 || ttl > maxTTL {
		return fmt.Errorf("%w: need 0 < ttl (%s) <= max_ttl (%s)", ErrInvalid, ttl, maxTTL)
	}
	back := DefaultBackdate
	if r.NotBeforeBackdate != nil {
		back = r.NotBeforeBackdate.AsDuration()
	}
	if back < 0 || back > maxBackdate {
		return fmt.Errorf("%w: not_before_backdate %s outside [0, %s]", ErrInvalid, back, maxBackdate)
	}
	r.Ttl, r.MaxTtl, r.NotBeforeBackdate = durationpb.New(ttl), durationpb.New(maxTTL), durationpb.New(back)
	return nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%w: OID %q", ErrInvalid, s)
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: OID %q", ErrInvalid, s)
		}
		oid[i] = n
	}
	return oid, nil
}

// Lint profiles of a role (Role.lint_profile).
const (
	// ProfileInternal: RFC 5280 and the structural lints. Private names
	// (.local, .internal, .test, cluster.local) and private IPs are what an
	// internal CA is for; nothing here is checked against the public TLDs.
	ProfileInternal = "internal"
	// ProfilePublic adds the CA/Browser Forum's Baseline Requirements (server
	// certificates) and S/MIME BR (email protection).
	ProfilePublic = "public"
)

// internalLintSources are the structural lint sets: the certificate profile
// (RFC 5280), algorithm encodings (RFC 5480) and IDNs (RFC 5891), plus
// zlint's community lints (encoding mistakes, whitespace, lengths).
var internalLintSources = []string{"RFC5280", "RFC5480", "RFC5891", "Community"}

// roleLintOptions selects the lints for a role's certificates: the role's
// lint_sources when set, else its profile's. The issuer's key type plays no
// part: an Ed25519 leaf or issuer meets the same gate under every issuer.
func roleLintOptions(r *pb.Role) lintOptions {
	srcs := r.LintSources
	if len(srcs) == 0 {
		srcs = internalLintSources
		if r.LintProfile == ProfilePublic {
			srcs = slices.Clone(srcs)
			if r.ServerFlag || slices.Contains(r.ExtKeyUsage, "server_auth") {
				srcs = append(srcs, "CABF_BR")
			}
			if slices.Contains(r.ExtKeyUsage, "email_protection") {
				srcs = append(srcs, "CABF_SMIME_BR")
			}
		}
	}
	return lintOptions{sources: srcs, exclude: r.LintExclude}
}

// oidDomainValidated is the CA/B Forum's domain-validated policy.
var oidDomainValidated = x509.OID{}

func init() {
	oid, err := x509.ParseOID("2.23.140.1.2.1")
	if err != nil {
		panic(err)
	}
	oidDomainValidated = oid
}

// rolePolicies returns the certificate policies for a certificate linted with lo.
func rolePolicies(r *pb.Role, lo lintOptions) []x509.OID {
	var out []x509.OID
	for _, p := range r.PolicyIdentifiers {
		if oid, err := x509.ParseOID(p); err == nil {
			out = append(out, oid)
		}
	}
	if len(out) == 0 && slices.Contains(lo.sources, "CABF_BR") {
		out = append(out, oidDomainValidated)
	}
	return out
}

// CreateRole stores a new role; ErrRoleExists if the name is taken.
func (s *Service) CreateRole(ctx context.Context, req *pb.CreateRoleRequest) (*pb.CreateRoleResponse, error) {
	r, err := normalizeRole(req.GetRole())
	if err != nil {
		return nil, err
	}
	if _, err := putProto(ctx, s.cfg.Store, prefixRoles+r.Name, r, keystore.MustNotExist); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			return nil, fmt.Errorf("%w: %q", ErrRoleExists, r.Name)
		}
		return nil, err
	}
	return &pb.CreateRoleResponse{Role: r}, nil
}

// UpdateRole replaces a role; ErrRoleNotFound if absent.
func (s *Service) UpdateRole(ctx context.Context, req *pb.UpdateRoleRequest) (*pb.UpdateRoleResponse, error) {
	r, err := normalizeRole(req.GetRole())
	if err != nil {
		return nil, err
	}
	_, rev, err := s.getRole(ctx, r.Name)
	if err != nil {
		return nil, err
	}
	if _, err := putProto(ctx, s.cfg.Store, prefixRoles+r.Name, r, rev); err != nil {
		return nil, err
	}
	return &pb.UpdateRoleResponse{Role: r}, nil
}

// GetRole returns a role; ErrRoleNotFound if absent.
func (s *Service) GetRole(ctx context.Context, req *pb.GetRoleRequest) (*pb.GetRoleResponse, error) {
	r, _, err := s.getRole(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetRoleResponse{Role: r}, nil
}

// ListRoles returns every role.
func (s *Service) ListRoles(ctx context.Context, _ *pb.ListRolesRequest) (*pb.ListRolesResponse, error) {
	es, err := s.cfg.Store.List(ctx, prefixRoles)
	if err != nil {
		return nil, fmt.Errorf("pki: list roles: %w", err)
	}
	out := &pb.ListRolesResponse{}
	for _, e := range es {
		r := new(pb.Role)
		if err := proto.Unmarshal(e.Value, r); err != nil {
			return nil, fmt.Errorf("pki: decode %s: %v", e.Key, err)
		}
		out.Roles = append(out.Roles, r)
	}
	return out, nil
}

// DeleteRole removes a role; ErrRoleNotFound if absent.
func (s *Service) DeleteRole(ctx context.Context, req *pb.DeleteRoleRequest) (*pb.DeleteRoleResponse, error) {
	if err := checkName("role", req.GetName()); err != nil {
		return nil, err
	}
	err := s.cfg.Store.Delete(ctx, prefixRoles+req.GetName(), keystore.AnyRevision)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrRoleNotFound, req.GetName())
	}
	if err != nil {
		return nil, fmt.Errorf("pki: delete role: %w", err)
	}
	return &pb.DeleteRoleResponse{}, nil
}
