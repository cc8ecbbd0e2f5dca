package sshca

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// The engine keeps the decoded roles and CAs that signing requests use,
// and the set of denied subject keys derived from every CA and the
// revocation record, in one keystore.Cache: a request reads nothing from
// the store (with etcd, a round trip each) unless one changed. Any change,
// by this engine or another process on the same store, drops the entry:
// this engine's own writes at once, the others' when the store's Watch
// delivers them; after a watch gap nothing is trusted until the cache is
// rebuilt. Cached messages are shared: callers must not change them.

// watchedPrefixes are the store prefixes the cache follows (the revocation
// record only through the derived deniedKeys).
var watchedPrefixes = []string{prefixRoles, prefixCAs, keyKRL}

// cacheDenied is the cache key of the deniedKeys set, derived from every
// CA and the revocation record: dropped whenever one of them changes.
const cacheDenied = "\x00denied-subject-keys"

// newCache starts the cache of roles, CAs and denied keys.
func newCache(store keystore.Store, opts keystore.CacheOptions) (*keystore.Cache[any], error) {
	return keystore.NewCache(keystore.CacheConfig[any]{
		CacheOptions: opts,
		Name:         "ssh roles and CAs",
		Store:        store,
		Prefixes:     watchedPrefixes,
		Decode:       decodeCached,
		Dependents: func(key string) []string {
			if strings.HasPrefix(key, prefixCAs) || key == keyKRL {
				return []string{cacheDenied}
			}
			return nil
		},
	})
}

// decodeCached decodes a role or a CA (the revocation record is only read
// through loadDenied).
func decodeCached(_ context.Context, ent keystore.Entry, _ any, _ bool) (any, error) {
	var m proto.Message
	switch {
	case strings.HasPrefix(ent.Key, prefixRoles):
		m = &pb.SSHRole{}
	case strings.HasPrefix(ent.Key, prefixCAs):
		m = &pb.SSHCA{}
	default:
		return nil, fmt.Errorf("sshca: %s is not cached", ent.Key)
	}
	if err := unmarshal(ent, m); err != nil {
		return nil, err
	}
	return m, nil
}

// cachedRole returns a role from the cache (shared: read only).
func (e *Engine) cachedRole(ctx context.Context, name string) (*pb.SSHRole, error) {
	return cached[*pb.SSHRole](ctx, e, prefixRoles, "role", name, ErrRoleNotFound)
}

// cachedCA returns a CA from the cache (shared: read only).
func (e *Engine) cachedCA(ctx context.Context, name string) (*pb.SSHCA, error) {
	return cached[*pb.SSHCA](ctx, e, prefixCAs, "CA", name, ErrCANotFound)
}

// cached returns the message of what name under prefix; notFound if absent.
func cached[M proto.Message](ctx context.Context, e *Engine, prefix, what, name string, notFound error) (M, error) {
	var zero M
	if !ValidName(name) {
		return zero, fmt.Errorf("%w: %s name %.64q", ErrInvalid, what, name)
	}
	m, err := e.cache.Get(ctx, prefix+name)
	if errors.Is(err, keystore.ErrNotFound) {
		return zero, fmt.Errorf("%w: %.64q", notFound, name)
	}
	if err != nil {
		return zero, fmt.Errorf("sshca: %s %.64q: %w", what, name, err)
	}
	return m.(M), nil
}
