package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/keystore"
)

// Login methods (AppRole, Kubernetes, client certificates) turn a machine's
// own credential into an ordinary hsmgate token: the same record, the same
// Authenticate, renewal and revocation as a token made by CreateToken. The
// method vouches for the token's identity (it is never chosen by the caller):
//
//   - AppRole: the role name;
//   - Kubernetes: "system:serviceaccount:<namespace>:<name>" from the verified JWT;
//   - client certificate: the first URI SAN of the verified certificate, else
//     its subject CN (the same rule as mTLS identities).
//
// Every login token is an orphan (it has no parent token), renewable up to
// its role's max TTL, and carries the metadata "auth_method" and "role".

// Login is the result of a successful login: the token's secret (shown once)
// and what the Vault door answers in its "auth" object.
type Login struct {
	Token     string
	Accessor  string
	Policies  []string
	TTL       time.Duration
	Renewable bool
	Metadata  map[string]string
	// Entity is the identity the method vouched for (the token's identity).
	Entity string
}

// Metadata keys that every login token carries; a login's own metadata
// (secret ID metadata, JWT or certificate facts) cannot override them.
const (
	MetaAuthMethod = "auth_method"
	MetaRole       = "role"
)

const (
	maxRolePolicies = 64
	maxRoleCIDRs    = 32
	maxRoleGlobs    = 64
	maxGlobLen      = 512
	maxMetaEntries  = 32
	maxMetaKey      = 128
	maxMetaValue    = 512
)

// grant is what a login method vouches for.
type grant struct {
	method, role, entity string
	policies             []string
	ttl, maxTTL          time.Duration
	// vouched: facts the method checked (the service account, the
	// certificate, the role): with entity, the token's vouched identity.
	vouched map[string]string
	// metadata: informational facts (secret ID metadata, chosen by whoever
	// could create the secret ID): token metadata only, never vouched.
	metadata map[string]string
}

// entityMetadata is the vouched metadata of the login's token: the method's
// checked facts, its name and the role.
func (g grant) entityMetadata() map[string]string {
	m := make(map[string]string, len(g.vouched)+2)
	for k, v := range g.vouched {
		m[k] = v
	}
	m[MetaAuthMethod] = g.method
	m[MetaRole] = g.role
	return m
}

// issueLogin makes the login's token. It is the one place where a method's
// vouched identity enters a token: the token's display name is the entity,
// and its metadata holds the vouched facts (over any informational ones),
// the method and the role.
func issueLogin(ctx context.Context, tokens *Tokens, g grant) (*Login, error) {
	if tokens == nil {
		return nil, fmt.Errorf("%w: tokens are not enabled", ErrUnauthenticated)
	}
	meta := make(map[string]string, len(g.metadata)+len(g.vouched)+2)
	for k, v := range g.metadata {
		meta[k] = v
	}
	for k, v := range g.entityMetadata() {
		meta[k] = v
	}
	// The login method itself grants the role's policies: it acts as a root
	// creator that makes an orphan (no parent token to bind to).
	creator := &Identity{Name: "auth/" + g.method + "/" + g.role, Kind: KindRoot}
	secret, info, err := tokens.Create(ctx, creator, TokenRequest{
		DisplayName: g.entity,
		Policies:    g.policies,
		TTL:         g.ttl,
		MaxTTL:      g.maxTTL,
		Renewable:   true,
		Metadata:    meta,
		Orphan:      true,
		// The vouched identity is the token's entity (SSH principals and
		// rate limits follow it, never the display name).
		Entity: g.entity, EntityMetadata: g.entityMetadata(),
	})
	if err != nil {
		return nil, fmt.Errorf("auth: %s login: %w", g.method, err)
	}
	l := &Login{Token: secret, Accessor: info.GetAccessor(), Policies: info.GetPolicies(), Renewable: info.GetRenewable(), Metadata: info.GetMetadata(), Entity: g.entity}
	if e := info.GetExpireTime(); e != nil {
		l.TTL = e.AsTime().Sub(info.GetCreateTime().AsTime())
	}
	return l, nil
}

// checkPolicies validates a role's policy names.
func checkPolicies(ps []string) error {
	if len(ps) > maxRolePolicies {
		return fmt.Errorf("%w: more than %d policies", ErrInvalid, maxRolePolicies)
	}
	for _, p := range ps {
		if !ValidName(p) {
			return fmt.Errorf("%w: policy name %q", ErrInvalid, p)
		}
	}
	return nil
}

// checkTTLs validates a role's token TTLs.
func checkTTLs(ttl, maxTTL *durationpb.Duration) error {
	for _, d := range []*durationpb.Duration{ttl, maxTTL} {
		if d == nil {
			continue
		}
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return fmt.Errorf("%w: negative or invalid TTL", ErrInvalid)
		}
	}
	if ttl.AsDuration() > 0 && maxTTL.AsDuration() > 0 && ttl.AsDuration() > maxTTL.AsDuration() {
		return fmt.Errorf("%w: token TTL above token max TTL", ErrInvalid)
	}
	return nil
}

// checkGlobs validates a list of name globs.
func checkGlobs(what string, gs []string) error {
	if len(gs) > maxRoleGlobs {
		return fmt.Errorf("%w: more than %d %s", ErrInvalid, maxRoleGlobs, what)
	}
	for _, g := range gs {
		if g == "" || len(g) > maxGlobLen {
			return fmt.Errorf("%w: %s entry must be 1..%d bytes", ErrInvalid, what, maxGlobLen)
		}
	}
	return nil
}

// matchAny reports whether name matches one of the globs.
func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if Match(g, name) {
			return true
		}
	}
	return false
}

// parseCIDRs parses CIDRs (a bare address is a one-address prefix) and
// returns them in canonical form.
func parseCIDRs(ss []string) ([]netip.Prefix, []string, error) {
	if len(ss) > maxRoleCIDRs {
		return nil, nil, fmt.Errorf("%w: more than %d CIDRs", ErrInvalid, maxRoleCIDRs)
	}
	var ps []netip.Prefix
	var out []string
	for _, s := range ss {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, nil, fmt.Errorf("%w: CIDR %q", ErrInvalid, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return nil, nil, fmt.Errorf("%w: CIDR %q", ErrInvalid, s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		ps = append(ps, p)
		out = append(out, p.String())
	}
	return ps, out, nil
}

// addrAllowed reports whether remote lies in one of cidrs; an empty list
// allows any address, and an invalid address is never allowed by a list.
func addrAllowed(cidrs []string, remote netip.Addr) bool {
	if len(cidrs) == 0 {
		return true
	}
	if !remote.IsValid() {
		return false
	}
	remote = remote.Unmap()
	ps, _, err := parseCIDRs(cidrs)
	if err != nil {
		return false
	}
	for _, p := range ps {
		if p.Contains(remote) {
			return true
		}
	}
	return false
}

// checkMetadata bounds free-form metadata.
func checkMetadata(m map[string]string) error {
	if len(m) > maxMetaEntries {
		return fmt.Errorf("%w: more than %d metadata entries", ErrInvalid, maxMetaEntries)
	}
	for k, v := range m {
		if k == "" || len(k) > maxMetaKey || len(v) > maxMetaValue {
			return fmt.Errorf("%w: metadata keys must be 1..%d bytes, values at most %d", ErrInvalid, maxMetaKey, maxMetaValue)
		}
		if k == MetaAuthMethod || k == MetaRole {
			return fmt.Errorf("%w: metadata key %q is reserved", ErrInvalid, k)
		}
	}
	return nil
}

// records stores protobuf messages by name under a keystore prefix: the roles
// of the login methods.
type records[T proto.Message] struct {
	store  keystore.Store
	prefix string
	what   string
	newT   func() T
}

// get returns the record and its revision; ErrNotFound if absent.
func (r records[T]) get(ctx context.Context, name string) (T, int64, error) {
	var zero T
	e, err := r.store.Get(ctx, r.prefix+name)
	if errors.Is(err, keystore.ErrNotFound) {
		return zero, 0, fmt.Errorf("%w: %s %q", ErrNotFound, r.what, name)
	}
	if err != nil {
		return zero, 0, fmt.Errorf("auth: read %s: %w", r.what, err)
	}
	m := r.newT()
	if err := proto.Unmarshal(e.Value, m); err != nil {
		return zero, 0, fmt.Errorf("auth: decode %s %q: %w", r.what, name, err)
	}
	return m, e.Revision, nil
}

// put writes the record at expect (keystore.MustNotExist, AnyRevision or a revision).
func (r records[T]) put(ctx context.Context, name string, m T, expect int64) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("auth: encode %s: %w", r.what, err)
	}
	if _, err := r.store.Put(ctx, r.prefix+name, b, expect); err != nil {
		return fmt.Errorf("auth: write %s %q: %w", r.what, name, err)
	}
	return nil
}

// list returns the names of the records directly under the prefix, sorted.
func (r records[T]) list(ctx context.Context) ([]string, error) {
	es, err := r.store.List(ctx, r.prefix)
	if err != nil {
		return nil, fmt.Errorf("auth: list %ss: %w", r.what, err)
	}
	names := make([]string, 0, len(es))
	for _, e := range es {
		n := strings.TrimPrefix(e.Key, r.prefix)
		if !strings.Contains(n, "/") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// delete removes the record; ErrNotFound if absent.
func (r records[T]) delete(ctx context.Context, name string, expect int64) error {
	err := r.store.Delete(ctx, r.prefix+name, expect)
	if errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("%w: %s %q", ErrNotFound, r.what, name)
	}
	if err != nil {
		return fmt.Errorf("auth: delete %s %q: %w", r.what, name, err)
	}
	return nil
}

// checkRoleName validates a role name (the policy-name alphabet).
func checkRoleName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: role name %q", ErrInvalid, truncate(name, 64))
	}
	return nil
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
