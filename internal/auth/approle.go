package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// AppRole login (Vault's approle method, as cert-manager's Vault issuer uses
// it): a role has a public-ish random role_id and any number of secret IDs.
//
// Store layout:
//
//	auth/approle/roles/<name>                  hsmgate.v1.AppRole
//	auth/approle/role-ids/<role_id>            the role's name (index for login)
//	auth/approle/secret-ids/<name>/<hash>      hsmgate.v1.SecretIDRecord
//
// A secret ID is 32 random bytes (unpadded base64url), shown once by
// CreateSecretID; only its domain-separated SHA-256 is stored (a 256-bit
// random secret needs no slow hash). Each record also holds the role_id of
// the role it was made for, so a role deleted and made again under the same
// name does not accept its predecessor's secret IDs. A limited secret ID's
// uses are counted down with the store's compare-and-swap: of concurrent
// logins, exactly as many succeed as it had uses, and the last one deletes it.
const (
	AppRolePrefix  = "auth/approle/roles/"
	appRoleIDIndex = "auth/approle/role-ids/"
	SecretIDPrefix = "auth/approle/secret-ids/"

	secretIDBytes = 32
	secretIDLen   = 43 // unpadded base64url of 32 bytes
	accessorBytes = 16
	maxRoleIDLen  = 128
	casRetries    = 16
)

// errBadAppRoleLogin is the one answer to every wrong role_id or secret_id
// (unknown, destroyed, expired, used up, of another role): a caller learns
// nothing about which part was wrong.
var errBadAppRoleLogin = fmt.Errorf("%w: invalid role_id or secret_id", ErrUnauthenticated)

// AppRoleConfig tunes AppRoles; the zero value is ready for production.
type AppRoleConfig struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand is the randomness of role IDs, secret IDs and accessors (default crypto/rand).
	Rand io.Reader
	// MaxSecretIDs bounds the live secret IDs of one role (default 10000).
	MaxSecretIDs int
}

// ErrTooManySecretIDs: a role has as many live secret IDs as it may.
var ErrTooManySecretIDs = errs.New(errs.ResourceExhausted, "auth: too many secret ids for the role")

// AppRoles manages AppRoles and their secret IDs, and logs them in.
type AppRoles struct {
	store  keystore.Store
	tokens *Tokens
	roles  records[*hsmgatev1.AppRole]
	now    func() time.Time
	rand   io.Reader
	max    int
}

// NewAppRoles returns the AppRole method over store, issuing tokens with tokens.
func NewAppRoles(cfg AppRoleConfig, store keystore.Store, tokens *Tokens) (*AppRoles, error) {
	if store == nil || tokens == nil {
		return nil, fmt.Errorf("auth: approle needs a store and tokens")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.MaxSecretIDs <= 0 {
		cfg.MaxSecretIDs = 10000
	}
	return &AppRoles{
		store: store, tokens: tokens, now: cfg.Now, rand: cfg.Rand, max: cfg.MaxSecretIDs,
		roles: records[*hsmgatev1.AppRole]{store: store, prefix: AppRolePrefix, what: "approle", newT: func() *hsmgatev1.AppRole { return &hsmgatev1.AppRole{} }},
	}, nil
}

// SecretIDHash returns the stored form of a secret ID: hex SHA-256 of the
// secret, domain-separated from token accessors.
func SecretIDHash(secretID string) string {
	h := sha256.Sum256([]byte("hsmgate approle secret-id\x00" + secretID))
	return hex.EncodeToString(h[:])
}

func (a *AppRoles) random(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(a.rand, b); err != nil {
		return nil, fmt.Errorf("auth: approle randomness: %w", err)
	}
	return b, nil
}

// newRoleID returns a random UUID (version 4), the form Vault gives role IDs.
func (a *AppRoles) newRoleID() (string, error) {
	b, err := a.random(16)
	if err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

func validateAppRole(r *hsmgatev1.AppRole) (*hsmgatev1.AppRole, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: role is required", ErrInvalid)
	}
	if err := checkRoleName(r.GetName()); err != nil {
		return nil, err
	}
	if err := checkPolicies(r.GetPolicies()); err != nil {
		return nil, err
	}
	if err := checkTTLs(r.GetTokenTtl(), r.GetTokenMaxTtl()); err != nil {
		return nil, err
	}
	if d := r.GetSecretIdTtl(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return nil, fmt.Errorf("%w: negative or invalid secret_id_ttl", ErrInvalid)
	}
	_, cidrs, err := parseCIDRs(r.GetBoundCidrs())
	if err != nil {
		return nil, err
	}
	out := proto.Clone(r).(*hsmgatev1.AppRole)
	out.BoundCidrs = cidrs
	return out, nil
}

// Write creates or updates an AppRole. A new role gets a random role_id; an
// existing one keeps its own (the role_id field of r is ignored).
func (a *AppRoles) Write(ctx context.Context, r *hsmgatev1.AppRole) (*hsmgatev1.AppRole, error) {
	role, err := validateAppRole(r)
	if err != nil {
		return nil, err
	}
	for range casRetries {
		old, rev, err := a.roles.get(ctx, role.GetName())
		switch {
		case err == nil:
			role.RoleId = old.GetRoleId()
			role.UpdateTime = timestamppb.New(a.now())
			err = a.roles.put(ctx, role.GetName(), role, rev)
		case errors.Is(err, ErrNotFound):
			err = a.create(ctx, role)
		}
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return role, nil
	}
	return nil, fmt.Errorf("auth: write approle: %w", keystore.ErrConflict)
}

// create stores a new role: its role_id index first (so a stored role always
// has one), then the role; a lost race removes the index again.
func (a *AppRoles) create(ctx context.Context, role *hsmgatev1.AppRole) error {
	id, err := a.newRoleID()
	if err != nil {
		return err
	}
	role.RoleId = id
	role.UpdateTime = timestamppb.New(a.now())
	if _, err := a.store.Put(ctx, appRoleIDIndex+id, []byte(role.GetName()), keystore.MustNotExist); err != nil {
		return fmt.Errorf("auth: write approle role_id: %w", err)
	}
	if err := a.roles.put(ctx, role.GetName(), role, keystore.MustNotExist); err != nil {
		_ = a.store.Delete(ctx, appRoleIDIndex+id, keystore.AnyRevision)
		return err
	}
	return nil
}

// Read returns an AppRole (with its role_id); ErrNotFound if absent.
func (a *AppRoles) Read(ctx context.Context, name string) (*hsmgatev1.AppRole, error) {
	if err := checkRoleName(name); err != nil {
		return nil, err
	}
	r, _, err := a.roles.get(ctx, name)
	return r, err
}

// List returns the AppRole names, sorted.
func (a *AppRoles) List(ctx context.Context) ([]string, error) { return a.roles.list(ctx) }

// Delete removes an AppRole, its role_id and its secret IDs; ErrNotFound if absent.
func (a *AppRoles) Delete(ctx context.Context, name string) error {
	if err := checkRoleName(name); err != nil {
		return err
	}
	r, rev, err := a.roles.get(ctx, name)
	if err != nil {
		return err
	}
	// The role first: from here on no login can succeed with it.
	if err := a.roles.delete(ctx, name, rev); err != nil {
		return err
	}
	if err := a.store.Delete(ctx, appRoleIDIndex+r.GetRoleId(), keystore.AnyRevision); err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("auth: delete approle role_id: %w", err)
	}
	es, err := a.store.List(ctx, SecretIDPrefix+name+"/")
	if err != nil {
		return fmt.Errorf("auth: delete approle secret ids: %w", err)
	}
	for _, e := range es {
		if err := a.store.Delete(ctx, e.Key, keystore.AnyRevision); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return fmt.Errorf("auth: delete approle secret id: %w", err)
		}
	}
	return nil
}

// CreateSecretID makes a secret ID for the role named roleName and returns
// the secret (to be shown once) and its description. Its TTL and number of
// uses are the role's secret_id_ttl and secret_id_num_uses at this moment.
func (a *AppRoles) CreateSecretID(ctx context.Context, roleName string, metadata map[string]string, cidrs []string) (string, *hsmgatev1.SecretIDInfo, error) {
	if err := checkRoleName(roleName); err != nil {
		return "", nil, err
	}
	if err := checkMetadata(metadata); err != nil {
		return "", nil, err
	}
	_, canon, err := parseCIDRs(cidrs)
	if err != nil {
		return "", nil, err
	}
	role, _, err := a.roles.get(ctx, roleName)
	if err != nil {
		return "", nil, err
	}
	live, err := a.ListSecretIDs(ctx, roleName)
	if err != nil {
		return "", nil, err
	}
	if len(live) >= a.max {
		return "", nil, fmt.Errorf("%w: %d live (destroy some, or let them expire)", ErrTooManySecretIDs, len(live))
	}
	sb, err := a.random(secretIDBytes)
	if err != nil {
		return "", nil, err
	}
	ab, err := a.random(accessorBytes)
	if err != nil {
		return "", nil, err
	}
	secret := base64.RawURLEncoding.EncodeToString(sb)
	now := a.now()
	info := &hsmgatev1.SecretIDInfo{
		Accessor:   hex.EncodeToString(ab),
		Metadata:   metadata,
		Cidrs:      canon,
		CreateTime: timestamppb.New(now),
		UsesLeft:   role.GetSecretIdNumUses(),
	}
	if ttl := role.GetSecretIdTtl().AsDuration(); ttl > 0 {
		info.ExpireTime = timestamppb.New(now.Add(ttl))
	}
	rec := &hsmgatev1.SecretIDRecord{Info: info, Hash: SecretIDHash(secret), RoleId: role.GetRoleId()}
	b, err := proto.Marshal(rec)
	if err != nil {
		return "", nil, fmt.Errorf("auth: encode secret id: %w", err)
	}
	if _, err := a.store.Put(ctx, SecretIDPrefix+roleName+"/"+rec.GetHash(), b, keystore.MustNotExist); err != nil {
		return "", nil, fmt.Errorf("auth: write secret id: %w", err)
	}
	return secret, info, nil
}

func (a *AppRoles) expired(info *hsmgatev1.SecretIDInfo) bool {
	return info.GetExpireTime() != nil && !a.now().Before(info.GetExpireTime().AsTime())
}

// secretIDs returns the decodable secret ID records of a role with their entries.
func (a *AppRoles) secretIDs(ctx context.Context, roleName string) ([]keystore.Entry, []*hsmgatev1.SecretIDRecord, error) {
	es, err := a.store.List(ctx, SecretIDPrefix+roleName+"/")
	if err != nil {
		return nil, nil, fmt.Errorf("auth: list secret ids: %w", err)
	}
	var keep []keystore.Entry
	var recs []*hsmgatev1.SecretIDRecord
	for _, e := range es {
		rec := &hsmgatev1.SecretIDRecord{}
		if proto.Unmarshal(e.Value, rec) != nil {
			continue
		}
		keep = append(keep, e)
		recs = append(recs, rec)
	}
	return keep, recs, nil
}

// ListSecretIDs describes the live secret IDs of a role (never a secret or
// its hash), sorted by accessor; ErrNotFound if the role is absent.
func (a *AppRoles) ListSecretIDs(ctx context.Context, roleName string) ([]*hsmgatev1.SecretIDInfo, error) {
	if err := checkRoleName(roleName); err != nil {
		return nil, err
	}
	role, _, err := a.roles.get(ctx, roleName)
	if err != nil {
		return nil, err
	}
	_, recs, err := a.secretIDs(ctx, roleName)
	if err != nil {
		return nil, err
	}
	var out []*hsmgatev1.SecretIDInfo
	for _, r := range recs {
		if r.GetRoleId() == role.GetRoleId() && !a.expired(r.GetInfo()) {
			out = append(out, r.GetInfo())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetAccessor() < out[j].GetAccessor() })
	return out, nil
}

// DestroySecretID deletes a role's secret ID by its accessor; ErrNotFound if
// there is none.
func (a *AppRoles) DestroySecretID(ctx context.Context, roleName, accessor string) error {
	if err := checkRoleName(roleName); err != nil {
		return err
	}
	if b, err := hex.DecodeString(accessor); err != nil || len(b) != accessorBytes {
		return fmt.Errorf("%w: secret id accessor", ErrInvalid)
	}
	es, recs, err := a.secretIDs(ctx, roleName)
	if err != nil {
		return err
	}
	for i, r := range recs {
		if r.GetInfo().GetAccessor() != accessor {
			continue
		}
		err := a.store.Delete(ctx, es[i].Key, keystore.AnyRevision)
		if errors.Is(err, keystore.ErrNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("auth: destroy secret id: %w", err)
		}
		return nil
	}
	return fmt.Errorf("%w: secret id", ErrNotFound)
}

// validRoleID bounds what a caller's role_id may look like before it names a store key.
func validRoleID(s string) bool {
	if s == "" || len(s) > maxRoleIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Login checks roleID and secretID, spends one use of the secret ID, and
// returns a token with the role's policies and TTL. remote is the caller's
// address, checked against the role's and the secret ID's CIDRs.
//
// Every wrong credential is ErrUnauthenticated with one message; a caller
// outside the allowed CIDRs is ErrPermissionDenied. A refused login changes nothing.
func (a *AppRoles) Login(ctx context.Context, roleID, secretID string, remote netip.Addr) (*Login, error) {
	if !validRoleID(roleID) || len(secretID) != secretIDLen {
		return nil, errBadAppRoleLogin
	}
	e, err := a.store.Get(ctx, appRoleIDIndex+roleID)
	if errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrInvalidKey) {
		return nil, errBadAppRoleLogin
	}
	if err != nil {
		return nil, fmt.Errorf("auth: approle login: %w", err)
	}
	name := string(e.Value)
	role, _, err := a.roles.get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, errBadAppRoleLogin
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(role.GetRoleId()), []byte(roleID)) != 1 {
		return nil, errBadAppRoleLogin
	}
	if !addrAllowed(role.GetBoundCidrs(), remote) {
		return nil, fmt.Errorf("%w: source address not allowed by the role", ErrPermissionDenied)
	}
	info, err := a.spend(ctx, role, SecretIDHash(secretID), remote)
	if err != nil {
		return nil, err
	}
	meta := map[string]string{"secret_id_accessor": info.GetAccessor()}
	for k, v := range info.GetMetadata() {
		if _, taken := meta[k]; !taken {
			meta[k] = v
		}
	}
	return issueLogin(ctx, a.tokens, grant{
		method: "approle", role: name, entity: name,
		policies: role.GetPolicies(), ttl: role.GetTokenTtl().AsDuration(), maxTTL: role.GetTokenMaxTtl().AsDuration(),
		vouched: map[string]string{"role_name": name}, metadata: meta,
	})
}

// spend finds the secret ID by its hash, checks it, and takes one use (the
// last use deletes it), all with compare-and-swap on the record's revision.
func (a *AppRoles) spend(ctx context.Context, role *hsmgatev1.AppRole, hash string, remote netip.Addr) (*hsmgatev1.SecretIDInfo, error) {
	key := SecretIDPrefix + role.GetName() + "/" + hash
	for range casRetries {
		e, err := a.store.Get(ctx, key)
		if errors.Is(err, keystore.ErrNotFound) {
			return nil, errBadAppRoleLogin
		}
		if err != nil {
			return nil, fmt.Errorf("auth: approle login: %w", err)
		}
		rec := &hsmgatev1.SecretIDRecord{}
		if err := proto.Unmarshal(e.Value, rec); err != nil {
			return nil, fmt.Errorf("auth: decode secret id: %w", err)
		}
		// The record was found by the hash; compare anyway in constant time so
		// that no path compares secret-derived bytes with an early exit.
		okHash := subtle.ConstantTimeCompare([]byte(rec.GetHash()), []byte(hash))
		okRole := subtle.ConstantTimeCompare([]byte(rec.GetRoleId()), []byte(role.GetRoleId()))
		if okHash&okRole != 1 {
			return nil, errBadAppRoleLogin
		}
		info := rec.GetInfo()
		if a.expired(info) {
			_ = a.store.Delete(ctx, key, e.Revision) // tidy; Tidy gets it otherwise
			return nil, errBadAppRoleLogin
		}
		if !addrAllowed(info.GetCidrs(), remote) {
			return nil, fmt.Errorf("%w: source address not allowed by the secret id", ErrPermissionDenied)
		}
		switch n := info.GetUsesLeft(); {
		case n == 0: // unlimited
			return info, nil
		case n == 1:
			err = a.store.Delete(ctx, key, e.Revision)
		default:
			info.UsesLeft = n - 1
			var b []byte
			if b, err = proto.Marshal(rec); err == nil {
				_, err = a.store.Put(ctx, key, b, e.Revision)
			}
		}
		switch {
		case err == nil:
			return info, nil
		case errors.Is(err, keystore.ErrConflict), errors.Is(err, keystore.ErrNotFound):
			continue // another login spent a use first: read again
		default:
			return nil, fmt.Errorf("auth: approle login: %w", err)
		}
	}
	return nil, fmt.Errorf("auth: approle login: %w", keystore.ErrConflict)
}

// Tidy deletes expired secret IDs and those of roles that are gone (or were
// made again), and returns how many it deleted.
func (a *AppRoles) Tidy(ctx context.Context) (int, error) {
	es, err := a.store.List(ctx, SecretIDPrefix)
	if err != nil {
		return 0, fmt.Errorf("auth: tidy secret ids: %w", err)
	}
	roleIDs := map[string]string{}
	n := 0
	for _, e := range es {
		rec := &hsmgatev1.SecretIDRecord{}
		if proto.Unmarshal(e.Value, rec) != nil {
			continue
		}
		name := e.Key[len(SecretIDPrefix):]
		if i := len(name) - len(rec.GetHash()) - 1; i > 0 {
			name = name[:i]
		}
		id, seen := roleIDs[name]
		if !seen {
			if r, _, err := a.roles.get(ctx, name); err == nil {
				id = r.GetRoleId()
			} else if !errors.Is(err, ErrNotFound) {
				return n, err
			}
			roleIDs[name] = id
		}
		if !a.expired(rec.GetInfo()) && id == rec.GetRoleId() {
			continue
		}
		if err := a.store.Delete(ctx, e.Key, e.Revision); err == nil {
			n++
		}
	}
	return n, nil
}

// TidyEvery runs Tidy every interval until ctx is done.
func (a *AppRoles) TidyEvery(ctx context.Context, interval time.Duration) {
	every(ctx, interval, a.Tidy)
}
