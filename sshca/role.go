package sshca

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Role defaults and limits.
const (
	DefaultUserMaxTTL = 24 * time.Hour
	DefaultHostMaxTTL = 90 * 24 * time.Hour
	DefaultUserTTL    = time.Hour
	DefaultHostTTL    = 30 * 24 * time.Hour
	DefaultBackdate   = time.Minute
	MaxBackdate       = time.Hour
	DefaultKeyID      = "{{identity.name}}:{{role}}:{{request_id}}"
	maxPrincipals     = 256
	maxPrincipalLen   = 255
	maxKeyIDLen       = 1024
)

// The user-certificate extensions OpenSSH defines (values are empty).
var standardExtensions = []string{
	"no-touch-required", "permit-X11-forwarding", "permit-agent-forwarding",
	"permit-port-forwarding", "permit-pty", "permit-user-rc",
}

// The critical options OpenSSH defines.
const (
	optForceCommand   = "force-command"
	optSourceAddress  = "source-address"
	optVerifyRequired = "verify-required"
)

var criticalOptions = []string{optForceCommand, optSourceAddress, optVerifyRequired}

// Subject key families and their size floors and defaults.
var keyFamilies = map[string]struct{ floor, def uint32 }{
	"ed25519":    {0, 0},
	"sk-ed25519": {0, 0},
	"sk-ecdsa":   {256, 256},
	"ecdsa":      {256, 256},
	"rsa":        {2048, 3072},
}

func defaultKeyTypes() []*pb.SSHKeyTypeRule {
	return []*pb.SSHKeyTypeRule{
		{Type: "ed25519"}, {Type: "ecdsa", MinBits: 256}, {Type: "rsa", MinBits: 3072},
		{Type: "sk-ecdsa", MinBits: 256}, {Type: "sk-ed25519"},
	}
}

// normalizeRole validates r against its CA and fills defaults. It returns a new message.
func (e *Engine) normalizeRole(ctx context.Context, in *pb.SSHRole) (*pb.SSHRole, error) {
	r := proto.Clone(in).(*pb.SSHRole)
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: role %.64q: %s", ErrInvalid, r.GetName(), fmt.Sprintf(format, a...))
	}
	if !ValidName(r.GetName()) {
		return nil, fmt.Errorf("%w: role name %.64q", ErrInvalid, r.GetName())
	}
	ca, _, err := e.getCA(ctx, r.GetCa())
	if err != nil {
		return nil, fmt.Errorf("role %.64q: %w", r.GetName(), err)
	}
	if r.CertType == pb.SSHCertType_SSH_CERT_TYPE_UNSPECIFIED {
		r.CertType = ca.GetCertType()
	}
	if r.GetCertType() != ca.GetCertType() {
		return nil, fmt.Errorf("%w: role %.64q is %v but CA %.64q is %v", ErrWrongType, r.GetName(), r.GetCertType(), ca.GetName(), ca.GetCertType())
	}
	host := r.GetCertType() == pb.SSHCertType_SSH_CERT_TYPE_HOST
	if len(r.GetAllowedPrincipals()) == 0 {
		return nil, bad("allowed_principals is empty")
	}
	for _, p := range r.GetAllowedPrincipals() {
		if _, err := parsePattern(p, true); err != nil {
			return nil, bad("allowed principal %.64q: %v", p, err)
		}
	}
	for _, p := range r.GetDefaultPrincipals() {
		if _, err := parsePattern(p, false); err != nil {
			return nil, bad("default principal %.64q: %v", p, err)
		}
	}
	if err := normalizeTTLs(r, host); err != nil {
		return nil, bad("%v", err)
	}
	if err := normalizeOptions(r, host); err != nil {
		return nil, bad("%v", err)
	}
	if err := normalizeKeyTypes(r); err != nil {
		return nil, bad("%v", err)
	}
	if r.GetKeyIdFormat() == "" {
		r.KeyIdFormat = DefaultKeyID
	}
	if _, err := expandKeyID(r.GetKeyIdFormat(), keyIDVars{}); err != nil {
		return nil, bad("key_id_format: %v", err)
	}
	return r, nil
}

// normalizeOptions checks the extensions and critical options of a role:
// none for host roles; known names and valid values for user roles.
func normalizeOptions(r *pb.SSHRole, host bool) error {
	if host && (len(r.GetAllowedExtensions()) > 0 || len(r.GetDefaultExtensions()) > 0 ||
		len(r.GetAllowedCriticalOptions()) > 0 || len(r.GetCriticalOptions()) > 0) {
		return errors.New("host certificates carry no extensions or critical options")
	}
	for _, x := range r.GetAllowedExtensions() {
		if x == "" || strings.ContainsAny(x, " \t\r\n") {
			return fmt.Errorf("extension name %.64q", x)
		}
	}
	slices.Sort(r.AllowedExtensions)
	r.AllowedExtensions = slices.Compact(r.AllowedExtensions)
	for name, v := range r.GetDefaultExtensions() {
		if !slices.Contains(r.GetAllowedExtensions(), name) {
			return fmt.Errorf("default extension %.64q is not in allowed_extensions", name)
		}
		if err := checkExtension(name, v); err != nil {
			return err
		}
	}
	for _, o := range r.GetAllowedCriticalOptions() {
		if !slices.Contains(criticalOptions, o) {
			return fmt.Errorf("critical option %.64q (allowed: %s)", o, strings.Join(criticalOptions, ", "))
		}
	}
	slices.Sort(r.AllowedCriticalOptions)
	r.AllowedCriticalOptions = slices.Compact(r.AllowedCriticalOptions)
	for name, v := range r.GetCriticalOptions() {
		if err := checkCriticalOption(name, v); err != nil {
			return err
		}
	}
	return nil
}

func normalizeTTLs(r *pb.SSHRole, host bool) error {
	for _, d := range []*durationpb.Duration{r.GetDefaultTtl(), r.GetMaxTtl(), r.GetBackdate()} {
		if d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
			return fmt.Errorf("invalid duration %v", d)
		}
	}
	maxTTL, defTTL := DefaultUserMaxTTL, DefaultUserTTL
	if host {
		maxTTL, defTTL = DefaultHostMaxTTL, DefaultHostTTL
	}
	if r.GetMaxTtl().AsDuration() > 0 {
		maxTTL = r.GetMaxTtl().AsDuration()
	}
	if r.GetDefaultTtl().AsDuration() > 0 {
		defTTL = r.GetDefaultTtl().AsDuration()
	} else {
		defTTL = min(defTTL, maxTTL)
	}
	if defTTL > maxTTL {
		return fmt.Errorf("default_ttl %v exceeds max_ttl %v", defTTL, maxTTL)
	}
	back := DefaultBackdate
	if r.GetBackdate() != nil {
		back = r.GetBackdate().AsDuration()
	}
	if back > MaxBackdate {
		return fmt.Errorf("backdate %v exceeds %v", back, MaxBackdate)
	}
	r.MaxTtl, r.DefaultTtl, r.Backdate = durationpb.New(maxTTL), durationpb.New(defTTL), durationpb.New(back)
	return nil
}

func normalizeKeyTypes(r *pb.SSHRole) error {
	if len(r.GetAllowedKeyTypes()) == 0 {
		r.AllowedKeyTypes = defaultKeyTypes()
		return nil
	}
	seen := map[string]bool{}
	for _, kt := range r.GetAllowedKeyTypes() {
		f, ok := keyFamilies[kt.GetType()]
		if !ok {
			return fmt.Errorf("key type %.64q (allowed: ed25519, ecdsa, rsa, sk-ecdsa, sk-ed25519)", kt.GetType())
		}
		if seen[kt.GetType()] {
			return fmt.Errorf("key type %.64q listed twice", kt.GetType())
		}
		seen[kt.GetType()] = true
		if kt.GetMinBits() == 0 {
			kt.MinBits = f.def
		}
		if kt.GetMinBits() < f.floor {
			return fmt.Errorf("key type %.64q: min_bits %d below %d", kt.GetType(), kt.GetMinBits(), f.floor)
		}
	}
	return nil
}

// checkExtension validates one extension value.
func checkExtension(name, value string) error {
	if slices.Contains(standardExtensions, name) && value != "" {
		return fmt.Errorf("extension %.64q takes no value", name)
	}
	return nil
}

// checkCriticalOption validates one critical option and its value.
func checkCriticalOption(name, value string) error {
	switch name {
	case optForceCommand:
		if strings.TrimSpace(value) == "" || strings.ContainsAny(value, "\x00\n\r") {
			return fmt.Errorf("force-command %.64q", value)
		}
	case optSourceAddress:
		if value == "" {
			return errors.New("source-address is empty")
		}
		for _, a := range strings.Split(value, ",") {
			if _, err := netip.ParsePrefix(a); err != nil {
				if _, err := netip.ParseAddr(a); err != nil {
					return fmt.Errorf("source-address %.64q: %.64q is not an address or CIDR", value, a)
				}
			}
		}
	case optVerifyRequired:
		if value != "" {
			return errors.New("verify-required takes no value")
		}
	default:
		return fmt.Errorf("critical option %.64q (allowed: %s)", name, strings.Join(criticalOptions, ", "))
	}
	return nil
}

// CreateRole validates, fills the defaults of and writes a new role: ErrInvalid
// for a malformed role, ErrCANotFound, ErrWrongType when its type differs from
// its CA's, ErrExists if the name is taken.
func (e *Engine) CreateRole(ctx context.Context, in *pb.SSHRole) (*pb.SSHRole, error) {
	r, err := e.normalizeRole(ctx, in)
	if err != nil {
		return nil, err
	}
	if _, err := e.putProto(ctx, prefixRoles+r.GetName(), r, keystore.MustNotExist); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			return nil, fmt.Errorf("%w: role %.64q", ErrExists, r.GetName())
		}
		return nil, fmt.Errorf("sshca: create role %.64q: %w", r.GetName(), err)
	}
	return r, nil
}

// UpdateRole replaces an existing role; ErrRoleNotFound if absent.
func (e *Engine) UpdateRole(ctx context.Context, in *pb.SSHRole) (*pb.SSHRole, error) {
	r, err := e.normalizeRole(ctx, in)
	if err != nil {
		return nil, err
	}
	_, rev, err := e.getRole(ctx, r.GetName())
	if err != nil {
		return nil, err
	}
	if _, err := e.putProto(ctx, prefixRoles+r.GetName(), r, rev); err != nil {
		return nil, fmt.Errorf("sshca: update role %.64q: %w", r.GetName(), err)
	}
	return r, nil
}

func (e *Engine) getRole(ctx context.Context, name string) (*pb.SSHRole, int64, error) {
	if !ValidName(name) {
		return nil, 0, fmt.Errorf("%w: role name %.64q", ErrInvalid, name)
	}
	r := &pb.SSHRole{}
	rev, err := e.getProto(ctx, prefixRoles+name, r)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: %.64q", ErrRoleNotFound, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("sshca: role %.64q: %w", name, err)
	}
	return r, rev, nil
}

// GetRole returns a role; ErrRoleNotFound if absent.
func (e *Engine) GetRole(ctx context.Context, name string) (*pb.SSHRole, error) {
	r, _, err := e.getRole(ctx, name)
	return r, err
}

// DeleteRole deletes a role; ErrRoleNotFound if absent.
func (e *Engine) DeleteRole(ctx context.Context, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: role name %.64q", ErrInvalid, name)
	}
	err := e.store.Delete(ctx, prefixRoles+name, keystore.AnyRevision)
	e.dropCached(prefixRoles + name)
	if errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("%w: %.64q", ErrRoleNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("sshca: delete role %.64q: %w", name, err)
	}
	return nil
}

// ListRoles returns every role, by name.
func (e *Engine) ListRoles(ctx context.Context) ([]*pb.SSHRole, error) {
	ents, err := e.store.List(ctx, prefixRoles)
	if err != nil {
		return nil, fmt.Errorf("sshca: list roles: %w", err)
	}
	out := make([]*pb.SSHRole, 0, len(ents))
	for _, ent := range ents {
		r := &pb.SSHRole{}
		if err := unmarshal(ent, r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func unmarshal(ent keystore.Entry, m proto.Message) error {
	if err := proto.Unmarshal(ent.Value, m); err != nil {
		return fmt.Errorf("sshca: decode %s: %w", ent.Key, err)
	}
	return nil
}

func cloneCA(ca *pb.SSHCA) *pb.SSHCA { return proto.Clone(ca).(*pb.SSHCA) }
