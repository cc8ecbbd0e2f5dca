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
	if err := s.requeueStale(ctx); err != nil {
		return err
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

// staleAfter is how long a challenge may stay "processing" before Sweep
// takes it for lost (its replica died with the job in memory) and queues it
// again: well past the longest validation (every attempt and back-off).
func (s *Server) staleAfter() time.Duration {
	n := time.Duration(s.cfg.ValidationAttempts)
	return n*s.cfg.ValidationTimeout + n*n*time.Second + time.Minute
}

// requeueStale queues again the validations that have been processing too long.
func (s *Server) requeueStale(ctx context.Context) error {
	es, err := s.cfg.Store.List(ctx, prefixAuthz)
	if err != nil {
		return fmt.Errorf("acme: sweep authz: %w", err)
	}
	now := s.cfg.Now()
	for _, e := range es {
		var az authz
		if json.Unmarshal(e.Value, &az) != nil || az.status(now) != "pending" {
			continue
		}
		for _, c := range az.Challenges {
			if c.Status != "processing" || now.Sub(c.Started) < s.staleAfter() {
				continue
			}
			dir, _, _ := strings.Cut(strings.TrimPrefix(e.Key, prefixAuthz), "/")
			a := new(account)
			if _, found, err := s.get(ctx, prefixAccounts+dir+"/"+az.Account, a); err != nil || !found {
				continue
			}
			// Restart the clock first, so that other replicas' sweeps leave it be.
			started, claimed := c.Started, false
			err := s.updateAuthz(ctx, dir, az.ID, func(x *authz) bool {
				for i := range x.Challenges {
					if x.Challenges[i].Type == c.Type && x.Challenges[i].Status == "processing" && x.Challenges[i].Started.Equal(started) {
						x.Challenges[i].Started, claimed = now.UTC(), true
						return true
					}
				}
				claimed = false
				return false
			})
			if err != nil {
				return err
			}
			if !claimed {
				continue
			}
			select {
			case s.jobs <- job{dir: dir, authz: az.ID, typ: c.Type, thumbprint: a.Thumbprint}:
				s.cfg.Logger.Info("acme: validation re-queued", "authz", az.ID, "type", c.Type)
			default: // queue full: the next sweep tries again
			}
		}
	}
	return nil
}
