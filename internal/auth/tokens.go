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
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TokenPrefix starts every hsmgate token; TokenStorePrefix is the keystore prefix of token records.
const (
	TokenPrefix      = "hgs."
	TokenStorePrefix = "auth/tokens/"
	tokenBytes       = 32
	tokenLen         = len(TokenPrefix) + 43 // unpadded base64url of 32 bytes
)

// TokenConfig is the token section of the server config.
type TokenConfig struct {
	// DefaultTTL of a token created without one (default 24h).
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// MaxTTL: no token lives longer than this from its creation, renewals included
	// (default 768h). Root tokens are exempt.
	MaxTTL time.Duration `yaml:"max_ttl"`
	// Cache configures the token cache (grace period, clock); set by New
	// from Config.Cache when zero.
	Cache keystore.CacheOptions `yaml:"-"`
}

func (c TokenConfig) withDefaults() TokenConfig {
	if c.DefaultTTL <= 0 {
		c.DefaultTTL = 24 * time.Hour
	}
	if c.MaxTTL <= 0 {
		c.MaxTTL = 768 * time.Hour
	}
	if c.DefaultTTL > c.MaxTTL {
		c.DefaultTTL = c.MaxTTL
	}
	return c
}

// GenerateToken returns a new random token "hgs.<43 base64url chars>" read from r
// (crypto/rand.Reader when nil).
func GenerateToken(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [tokenBytes]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("auth: token randomness: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ParseToken checks the form of a token and returns its accessor (hex SHA-256
// of the whole token string). It returns ErrUnauthenticated for anything that
// is not "hgs." followed by exactly 32 bytes in unpadded base64url.
func ParseToken(s string) (accessor string, err error) {
	if len(s) != tokenLen || !strings.HasPrefix(s, TokenPrefix) {
		return "", fmt.Errorf("%w: malformed token", ErrUnauthenticated)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s[len(TokenPrefix):])
	if err != nil || len(b) != tokenBytes {
		return "", fmt.Errorf("%w: malformed token", ErrUnauthenticated)
	}
	return Accessor(s), nil
}

// Accessor returns the hex SHA-256 of a token: the name of its record.
func Accessor(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func validAccessor(a string) bool {
	if len(a) != 64 {
		return false
	}
	_, err := hex.DecodeString(a)
	return err == nil && strings.ToLower(a) == a
}

// Tokens stores and checks bearer tokens.
type Tokens struct {
	store keystore.Store
	cfg   TokenConfig
	now   func() time.Time
	rand  io.Reader
	cache *keystore.Cache[*hsmgatev1.TokenInfo] // by TokenStorePrefix + accessor

	// memo holds what Authenticate made of a token (its identity, its
	// record's key), by the SHA-256 of the token, reused while the cache
	// hands out the same record: a request with a cached token then costs a
	// hash, a map read and the cache's check, and no allocation. A record
	// that changes (renewed, revoked, expired, rebuilt) is a new pointer or
	// an error, and the token takes the full path again. At most
	// maxCachedTokens entries; past it, it empties.
	memoMu sync.RWMutex
	memo   map[[sha256.Size]byte]*tokenMemo
}

// tokenMemo is Authenticate's result for one token record.
type tokenMemo struct {
	info *hsmgatev1.TokenInfo // the record it was made from
	key  string               // TokenStorePrefix + accessor
	id   *Identity            // shared by the token's requests: read-only
}

// tokenSum is the memo key of a well-formed token: its SHA-256, hashed from
// a copy on the stack (hashing the string's bytes directly allocates them).
func tokenSum(secret string) [sha256.Size]byte {
	var b [tokenLen]byte
	copy(b[:], secret)
	return sha256.Sum256(b[:len(secret)])
}

// maxCachedTokens bounds the token cache (past it, it empties).
const maxCachedTokens = 100000

// NewTokens returns a token store over s; its cache watches s until ctx is
// done. While the store is out of reach, tokens checked before are still
// accepted for cfg.Cache.Grace (see keystore.Cache), the request marked
// degraded; a revocation this process saw is never undone by that.
func NewTokens(ctx context.Context, s keystore.Store, cfg TokenConfig) (*Tokens, error) {
	c, err := keystore.NewCache(keystore.CacheConfig[*hsmgatev1.TokenInfo]{
		CacheOptions: cfg.Cache,
		Name:         "tokens",
		Store:        s,
		Prefixes:     []string{TokenStorePrefix},
		MaxEntries:   maxCachedTokens,
		Decode: func(_ context.Context, e keystore.Entry, _ *hsmgatev1.TokenInfo, _ bool) (*hsmgatev1.TokenInfo, error) {
			rec := &hsmgatev1.TokenRecord{}
			if err := proto.Unmarshal(e.Value, rec); err != nil {
				return nil, fmt.Errorf("auth: decode token: %w", err)
			}
			return rec.GetInfo(), nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: watch tokens: %w", err)
	}
	context.AfterFunc(ctx, c.Close)
	return &Tokens{store: s, cfg: cfg.withDefaults(), now: time.Now, rand: rand.Reader, cache: c}, nil
}

// CacheStats describes the token cache (in sync, degraded counts).
func (t *Tokens) CacheStats() keystore.CacheStats { return t.cache.Stats() }

// SetClock replaces the clock (tests).
func (t *Tokens) SetClock(now func() time.Time) { t.now = now }

// TokenRequest describes a token to create.
type TokenRequest struct {
	DisplayName string
	Policies    []string
	TTL         time.Duration // 0: the configured default
	MaxTTL      time.Duration // 0: the configured maximum
	Renewable   bool
	Root        bool
	Metadata    map[string]string
	// Orphan: do not record the creator's token as parent (root creators only).
	Orphan bool
	// Entity and EntityMetadata bind the token to a vouched identity (see
	// Identity.Entity). Empty: the token inherits the creator's. Setting them
	// needs a root creator, or EntityAdmin.
	Entity         string
	EntityMetadata map[string]string
	// EntityAdmin: the caller was found to hold admin on
	// auth/entities/<Entity> (Service.CreateToken checks it).
	EntityAdmin bool
}

// Bounds of a token's entity fields.
const (
	maxEntityLen      = 256
	maxEntityMetadata = 64
	maxEntityMetaKey  = 128
	maxEntityMetaVal  = 1024
)

// EntityResource is the resource whose admin capability lets a non-root
// caller bind tokens to entity.
func EntityResource(entity string) string { return "auth/entities/" + entity }

// checkEntity validates the entity fields of a request.
func checkEntity(req TokenRequest) error {
	if req.Entity == "" {
		if len(req.EntityMetadata) > 0 {
			return fmt.Errorf("%w: entity metadata needs an entity", ErrInvalid)
		}
		return nil
	}
	if len(req.Entity) > maxEntityLen || !printableNoSpace(req.Entity) || strings.Contains(req.Entity, "*") {
		return fmt.Errorf("%w: entity must be 1-%d printable characters without spaces or '*'", ErrInvalid, maxEntityLen)
	}
	if len(req.EntityMetadata) > maxEntityMetadata {
		return fmt.Errorf("%w: more than %d entity metadata entries", ErrInvalid, maxEntityMetadata)
	}
	for k, v := range req.EntityMetadata {
		if k == "" || len(k) > maxEntityMetaKey || !printableNoSpace(k) || len(v) > maxEntityMetaVal || strings.ContainsFunc(v, unicode.IsControl) {
			return fmt.Errorf("%w: entity metadata key %.32q: keys 1-%d printable characters, values up to %d without control characters", ErrInvalid, k, maxEntityMetaKey, maxEntityMetaVal)
		}
	}
	return nil
}

func printableNoSpace(s string) bool {
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return s != ""
}

// Create makes a token on behalf of creator and returns its secret (to be shown
// once) and its description. A non-root creator may only bind policies it holds
// and may not create root tokens (ErrPermissionDenied).
func (t *Tokens) Create(ctx context.Context, creator *Identity, req TokenRequest) (string, *hsmgatev1.TokenInfo, error) {
	if err := checkGrant(creator, req); err != nil {
		return "", nil, err
	}
	if err := checkEntity(req); err != nil {
		return "", nil, err
	}
	for _, p := range req.Policies {
		if !ValidName(p) {
			return "", nil, fmt.Errorf("%w: policy name %.64q", ErrInvalid, p)
		}
	}
	if req.TTL < 0 || req.MaxTTL < 0 || len(req.DisplayName) > 256 {
		return "", nil, fmt.Errorf("%w: negative TTL or display name over 256 bytes", ErrInvalid)
	}
	secret, err := GenerateToken(t.rand)
	if err != nil {
		return "", nil, err
	}
	now := t.now()
	info := &hsmgatev1.TokenInfo{
		Accessor:    Accessor(secret),
		DisplayName: req.DisplayName,
		Policies:    req.Policies,
		Root:        req.Root,
		Renewable:   req.Renewable,
		CreateTime:  timestamppb.New(now),
		Metadata:    req.Metadata,
	}
	if creator != nil {
		info.CreatedBy = creator.Name
	}
	// The vouched identity: the one the request binds (checked by
	// checkGrant), else the creator's, which a child can never shed.
	switch {
	case req.Entity != "":
		info.Entity, info.EntityMetadata = req.Entity, req.EntityMetadata
	case creator != nil:
		info.Entity, info.EntityMetadata = creator.Entity, creator.EntityMetadata
	}
	// The lineage: a token made by a non-root token stays in its creator's
	// (one rate-limit bucket for a token and every token it mints).
	info.Lineage = info.GetAccessor()
	if creator != nil && creator.Accessor != "" && !creator.Root() {
		info.Lineage = creator.Lineage
		if info.Lineage == "" {
			info.Lineage = creator.Accessor
		}
	}
	maxTTL := t.cfg.MaxTTL
	if req.MaxTTL > 0 && req.MaxTTL < maxTTL {
		maxTTL = req.MaxTTL
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = t.cfg.DefaultTTL
	}
	if ttl > maxTTL {
		ttl = maxTTL
	}
	if !req.Root || req.TTL > 0 {
		info.Ttl = durationpb.New(ttl)
		info.ExpireTime = timestamppb.New(now.Add(ttl))
		info.MaxExpireTime = timestamppb.New(now.Add(maxTTL))
	}
	if creator != nil && creator.Accessor != "" && !req.Orphan {
		if err := t.bindParent(ctx, info, creator.Accessor); err != nil {
			return "", nil, err
		}
	}
	if err := t.write(ctx, info, keystore.MustNotExist); err != nil {
		return "", nil, err
	}
	return secret, info, nil
}

// bindParent records the creator's token as parent and keeps the child's
// expiry and max expiry within the parent's, so a child never outlives it.
func (t *Tokens) bindParent(ctx context.Context, info *hsmgatev1.TokenInfo, parent string) error {
	p, _, err := t.read(ctx, parent)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: the caller's token is gone", ErrUnauthenticated)
	}
	if err != nil {
		return err
	}
	info.Parent = parent
	capAt := func(child **timestamppb.Timestamp, limit *timestamppb.Timestamp) {
		if limit != nil && (*child == nil || (*child).AsTime().After(limit.AsTime())) {
			*child = limit
		}
	}
	capAt(&info.ExpireTime, p.GetExpireTime())
	capAt(&info.MaxExpireTime, p.GetMaxExpireTime())
	if info.ExpireTime != nil && info.Ttl == nil {
		info.Ttl = durationpb.New(info.ExpireTime.AsTime().Sub(info.CreateTime.AsTime()))
	}
	return nil
}

func checkGrant(creator *Identity, req TokenRequest) error {
	if creator.Root() {
		return nil
	}
	if req.Root || req.Orphan {
		return fmt.Errorf("%w: only a root identity can create a root or orphan token", ErrPermissionDenied)
	}
	if (req.Entity != "" || len(req.EntityMetadata) > 0) && !req.EntityAdmin {
		return fmt.Errorf("%w: binding a token to an entity needs a root identity or admin on %s", ErrPermissionDenied, EntityResource(req.Entity))
	}
	have := map[string]bool{}
	if creator != nil {
		for _, p := range creator.Policies {
			have[p] = true
		}
	}
	for _, p := range req.Policies {
		if !have[p] {
			return fmt.Errorf("%w: cannot grant policy %.64q that the caller does not hold", ErrPermissionDenied, p)
		}
	}
	return nil
}

// EnsureRoot stores secret (a token from GenerateToken) as a root token that
// never expires, if it is not stored already. Used by `hsmgate dev` and `init`.
func (t *Tokens) EnsureRoot(ctx context.Context, secret string) error {
	acc, err := ParseToken(secret)
	if err != nil {
		return fmt.Errorf("%w: root token must come from GenerateToken", ErrInvalid)
	}
	info := &hsmgatev1.TokenInfo{Accessor: acc, DisplayName: "root", Root: true, CreateTime: timestamppb.New(t.now()), CreatedBy: "bootstrap"}
	err = t.write(ctx, info, keystore.MustNotExist)
	if errors.Is(err, keystore.ErrConflict) {
		return nil
	}
	return err
}

func (t *Tokens) write(ctx context.Context, info *hsmgatev1.TokenInfo, expect int64) error {
	b, err := proto.Marshal(&hsmgatev1.TokenRecord{Info: info})
	if err != nil {
		return fmt.Errorf("auth: encode token: %w", err)
	}
	if _, err := t.store.Put(ctx, TokenStorePrefix+info.GetAccessor(), b, expect); err != nil {
		return fmt.Errorf("auth: write token: %w", err)
	}
	t.cache.Invalidate(TokenStorePrefix + info.GetAccessor())
	return nil
}

// read returns the record and its revision; ErrNotFound if absent.
func (t *Tokens) read(ctx context.Context, accessor string) (*hsmgatev1.TokenInfo, int64, error) {
	if !validAccessor(accessor) {
		return nil, 0, fmt.Errorf("%w: accessor", ErrInvalid)
	}
	e, err := t.store.Get(ctx, TokenStorePrefix+accessor)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: token", ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("auth: read token: %w", err)
	}
	rec := &hsmgatev1.TokenRecord{}
	if err := proto.Unmarshal(e.Value, rec); err != nil {
		return nil, 0, fmt.Errorf("auth: decode token: %w", err)
	}
	return rec.GetInfo(), e.Revision, nil
}

func (t *Tokens) expired(info *hsmgatev1.TokenInfo) bool {
	return info.GetExpireTime() != nil && !t.now().Before(info.GetExpireTime().AsTime())
}

// Authenticate returns the identity of a token, or ErrUnauthenticated when it
// is malformed, unknown, revoked or expired. Errors reading the store are
// returned as they are (Unavailable).
func (t *Tokens) Authenticate(ctx context.Context, secret string) (*Identity, error) {
	if len(secret) != tokenLen {
		return nil, fmt.Errorf("%w: malformed token", ErrUnauthenticated)
	}
	sum := tokenSum(secret)
	t.memoMu.RLock()
	m := t.memo[sum]
	t.memoMu.RUnlock()
	if m != nil {
		// The memo was made by the full path below from this same token
		// (same SHA-256): parsed, found and compared then.
		if info, err := t.cache.Get(ctx, m.key); err == nil && info == m.info && !t.expired(info) {
			return m.id, nil
		}
		t.memoMu.Lock()
		if t.memo[sum] == m {
			delete(t.memo, sum)
		}
		t.memoMu.Unlock()
	}
	m, err := t.authenticate(ctx, secret)
	if err != nil {
		return nil, err
	}
	t.memoMu.Lock()
	if t.memo == nil || len(t.memo) >= maxCachedTokens {
		t.memo = make(map[[sha256.Size]byte]*tokenMemo)
	}
	t.memo[sum] = m
	t.memoMu.Unlock()
	return m.id, nil
}

// authenticate is Authenticate without the memo: it parses the token, reads
// its record through the cache and makes the identity, returned in the memo
// entry to keep.
func (t *Tokens) authenticate(ctx context.Context, secret string) (*tokenMemo, error) {
	acc, err := ParseToken(secret)
	if err != nil {
		return nil, err
	}
	key := TokenStorePrefix + acc
	info, err := t.cache.Get(ctx, key)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown or revoked token", ErrUnauthenticated)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: read token: %w", err)
	}
	// The record was found by the hash; compare it in constant time anyway so
	// that no path compares secret-derived bytes with an early exit.
	if subtle.ConstantTimeCompare([]byte(info.GetAccessor()), []byte(acc)) != 1 {
		return nil, fmt.Errorf("%w: unknown or revoked token", ErrUnauthenticated)
	}
	if t.expired(info) {
		return nil, fmt.Errorf("%w: token expired", ErrUnauthenticated)
	}
	id := &Identity{
		Name: info.GetDisplayName(), Kind: KindToken, Policies: info.GetPolicies(), Metadata: info.GetMetadata(), Accessor: acc,
		Entity: info.GetEntity(), EntityMetadata: info.GetEntityMetadata(), Lineage: info.GetLineage(),
	}
	if id.Lineage == "" { // a record from before lineages
		id.Lineage = acc
	}
	if id.Name == "" {
		id.Name = "token-" + acc[:12]
	}
	if info.GetRoot() {
		id.Kind = KindRoot
	}
	id.rateKey = id.RateKey()
	return &tokenMemo{info: info, key: key, id: id}, nil
}

// Lookup describes a live token; ErrNotFound if absent or expired.
func (t *Tokens) Lookup(ctx context.Context, accessor string) (*hsmgatev1.TokenInfo, error) {
	info, _, err := t.read(ctx, accessor)
	if err != nil {
		return nil, err
	}
	if t.expired(info) {
		return nil, fmt.Errorf("%w: token expired", ErrNotFound)
	}
	return info, nil
}

// Renew sets a renewable token's expiry to now+increment (the token's TTL
// when increment is 0), capped at its max expiry. ErrNotRenewable for a token
// that is not renewable; ErrNotFound for an absent or expired one.
func (t *Tokens) Renew(ctx context.Context, accessor string, increment time.Duration) (*hsmgatev1.TokenInfo, error) {
	if increment < 0 {
		return nil, fmt.Errorf("%w: negative increment", ErrInvalid)
	}
	for range 5 {
		info, rev, err := t.read(ctx, accessor)
		if err != nil {
			return nil, err
		}
		if t.expired(info) {
			return nil, fmt.Errorf("%w: token expired", ErrNotFound)
		}
		if !info.GetRenewable() || info.GetExpireTime() == nil {
			return nil, ErrNotRenewable
		}
		if increment == 0 {
			increment = info.GetTtl().AsDuration()
		}
		exp := t.now().Add(increment)
		if m := info.GetMaxExpireTime(); m != nil && exp.After(m.AsTime()) {
			exp = m.AsTime()
		}
		info.ExpireTime = timestamppb.New(exp)
		err = t.write(ctx, info, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return info, nil
	}
	return nil, fmt.Errorf("auth: renew token: %w", keystore.ErrConflict)
}

// Revoke deletes a token and every token descended from it; ErrNotFound if
// the token is absent.
func (t *Tokens) Revoke(ctx context.Context, accessor string) error {
	if !validAccessor(accessor) {
		return fmt.Errorf("%w: accessor", ErrInvalid)
	}
	err := t.store.Delete(ctx, TokenStorePrefix+accessor, keystore.AnyRevision)
	if errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("%w: token", ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("auth: revoke token: %w", err)
	}
	t.cache.Invalidate(TokenStorePrefix + accessor)
	return t.revokeDescendants(ctx, accessor)
}

func (t *Tokens) revokeDescendants(ctx context.Context, root string) error {
	es, err := t.store.List(ctx, TokenStorePrefix)
	if err != nil {
		return fmt.Errorf("auth: revoke descendants: %w", err)
	}
	children := map[string][]string{}
	for _, e := range es {
		rec := &hsmgatev1.TokenRecord{}
		if proto.Unmarshal(e.Value, rec) == nil && rec.GetInfo().GetParent() != "" {
			p := rec.GetInfo().GetParent()
			children[p] = append(children[p], rec.GetInfo().GetAccessor())
		}
	}
	queue := children[root]
	for len(queue) > 0 {
		acc := queue[0]
		queue = append(queue[1:], children[acc]...)
		err := t.store.Delete(ctx, TokenStorePrefix+acc, keystore.AnyRevision)
		if err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return fmt.Errorf("auth: revoke descendant: %w", err)
		}
		t.cache.Invalidate(TokenStorePrefix + acc)
	}
	return nil
}

// List describes every live token, sorted by accessor.
func (t *Tokens) List(ctx context.Context) ([]*hsmgatev1.TokenInfo, error) {
	es, err := t.store.List(ctx, TokenStorePrefix)
	if err != nil {
		return nil, fmt.Errorf("auth: list tokens: %w", err)
	}
	var out []*hsmgatev1.TokenInfo
	for _, e := range es {
		rec := &hsmgatev1.TokenRecord{}
		if proto.Unmarshal(e.Value, rec) != nil || t.expired(rec.GetInfo()) {
			continue
		}
		out = append(out, rec.GetInfo())
	}
	return out, nil
}

// TidyInterval is how often expired records are tidied: the server runs
// Tokens.Tidy and Methods.Tidy at this interval as jobs of internal/leader's
// Runner, on the elected replica only.
const TidyInterval = time.Hour

// TidyEvery runs Tidy every interval until ctx is done (a process without a
// leader runner). Several replicas may run it at once, and a pass may stop
// anywhere: a record is deleted at the revision read, so a record renewed
// meanwhile stays, and the next pass finishes the rest.
func (t *Tokens) TidyEvery(ctx context.Context, interval time.Duration) {
	every(ctx, interval, t.Tidy)
}

// every runs tidy every interval until ctx is done; a failed run (a store
// outage) is retried at the next tick.
func every(ctx context.Context, interval time.Duration, tidy func(context.Context) (int, error)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_, _ = tidy(ctx)
		}
	}
}

// Tidy deletes expired token records and returns how many it deleted.
func (t *Tokens) Tidy(ctx context.Context) (int, error) {
	es, err := t.store.List(ctx, TokenStorePrefix)
	if err != nil {
		return 0, fmt.Errorf("auth: list tokens: %w", err)
	}
	n := 0
	for _, e := range es {
		rec := &hsmgatev1.TokenRecord{}
		if proto.Unmarshal(e.Value, rec) != nil || !t.expired(rec.GetInfo()) {
			continue
		}
		if err := t.store.Delete(ctx, e.Key, e.Revision); err == nil {
			n++
		}
	}
	return n, nil
}
