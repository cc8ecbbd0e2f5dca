package acme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// keepExpired is how long an expired order or authorization is kept
// (clients may still read it) before Sweep deletes it.
const keepExpired = 7 * 24 * time.Hour

// Sweep deletes expired nonces, the open-order index entries of expired
// orders, and orders, authorizations and reuse index entries that expired
// more than keepExpired ago. Every replica may run it: deletes are
// compare-and-swap, a lost race is skipped.
func (s *Server) Sweep(ctx context.Context) error {
	if err := s.sweepNonces(ctx); err != nil {
		return err
	}
	now := s.cfg.Now()
	expiredBy := func(v []byte, field func([]byte) (time.Time, bool), grace time.Duration) bool {
		t, ok := field(v)
		return ok && now.After(t.Add(grace))
	}
	timeValue := func(v []byte) (time.Time, bool) {
		var t time.Time
		return t, json.Unmarshal(v, &t) == nil
	}
	expiresField := func(v []byte) (time.Time, bool) {
		var x struct {
			Expires time.Time `json:"expires"`
		}
		return x.Expires, json.Unmarshal(v, &x) == nil && !x.Expires.IsZero()
	}
	for _, pass := range []struct {
		prefix string
		field  func([]byte) (time.Time, bool)
		grace  time.Duration
	}{
		{prefixAcctOrders, timeValue, 0},
		{prefixOrders, expiresField, keepExpired},
		{prefixAuthz, expiresField, keepExpired},
	} {
		es, err := s.cfg.Store.List(ctx, pass.prefix)
		if err != nil {
			return fmt.Errorf("acme: sweep %s: %w", pass.prefix, err)
		}
		for _, e := range es {
			if !expiredBy(e.Value, pass.field, pass.grace) {
				continue
			}
			if err := s.cfg.Store.Delete(ctx, e.Key, e.Revision); err != nil &&
				!errors.Is(err, keystore.ErrNotFound) && !errors.Is(err, keystore.ErrConflict) {
				return fmt.Errorf("acme: sweep %s: %w", e.Key, err)
			}
		}
	}
	// Reuse index entries whose authorization is gone.
	es, err := s.cfg.Store.List(ctx, prefixAcctAuthz)
	if err != nil {
		return fmt.Errorf("acme: sweep authz index: %w", err)
	}
	for _, e := range es {
		var id string
		rest := strings.TrimPrefix(e.Key, prefixAcctAuthz)
		dir, _, _ := strings.Cut(rest, "/")
		if json.Unmarshal(e.Value, &id) != nil {
			continue
		}
		if _, err := s.cfg.Store.Get(ctx, prefixAuthz+dir+"/"+id); errors.Is(err, keystore.ErrNotFound) {
			if err := s.cfg.Store.Delete(ctx, e.Key, e.Revision); err != nil &&
				!errors.Is(err, keystore.ErrNotFound) && !errors.Is(err, keystore.ErrConflict) {
				return fmt.Errorf("acme: sweep %s: %w", e.Key, err)
			}
		}
	}
	return nil
}
