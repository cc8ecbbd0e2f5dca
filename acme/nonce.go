package acme

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// Nonces (RFC 8555 6.5) live in the keystore, so that any replica can
// check one another replica handed out: acme/nonces/<nonce> holds its
// expiry. Using a nonce deletes its key with compare-and-swap on the
// revision read, so of two requests racing with one nonce only one wins.

// addNonce makes a fresh nonce and sets it as the Replay-Nonce header.
func (s *Server) addNonce(ctx context.Context, w http.ResponseWriter) error {
	n, err := s.newID()
	if err != nil {
		return err
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(s.cfg.Now().Add(s.cfg.NonceLifetime).UnixNano()))
	if _, err := s.cfg.Store.Put(ctx, prefixNonces+n, v, keystore.MustNotExist); err != nil {
		return fmt.Errorf("acme: store nonce: %w", err)
	}
	w.Header().Set("Replay-Nonce", n)
	w.Header().Set("Cache-Control", "no-store")
	return nil
}

// useNonce consumes a nonce: badNonce if it is unknown, used or expired.
func (s *Server) useNonce(ctx context.Context, n string) error {
	if !validID(n) {
		return errBadNonce("malformed or missing nonce")
	}
	e, err := s.cfg.Store.Get(ctx, prefixNonces+n)
	if errors.Is(err, keystore.ErrNotFound) {
		return errBadNonce("unknown or used nonce")
	}
	if err != nil {
		return fmt.Errorf("acme: read nonce: %w", err)
	}
	err = s.cfg.Store.Delete(ctx, e.Key, e.Revision)
	if errors.Is(err, keystore.ErrNotFound) || errors.Is(err, keystore.ErrConflict) {
		return errBadNonce("used nonce")
	}
	if err != nil {
		return fmt.Errorf("acme: use nonce: %w", err)
	}
	if len(e.Value) != 8 || !s.cfg.Now().Before(time.Unix(0, int64(binary.BigEndian.Uint64(e.Value)))) {
		return errBadNonce("expired nonce")
	}
	return nil
}

// sweepNonces deletes expired nonces.
func (s *Server) sweepNonces(ctx context.Context) error {
	es, err := s.cfg.Store.List(ctx, prefixNonces)
	if err != nil {
		return fmt.Errorf("acme: list nonces: %w", err)
	}
	now := s.cfg.Now()
	for _, e := range es {
		if len(e.Value) == 8 && now.Before(time.Unix(0, int64(binary.BigEndian.Uint64(e.Value)))) {
			continue
		}
		if err := s.cfg.Store.Delete(ctx, e.Key, e.Revision); err != nil &&
			!errors.Is(err, keystore.ErrNotFound) && !errors.Is(err, keystore.ErrConflict) {
			return fmt.Errorf("acme: delete nonce: %w", err)
		}
	}
	return nil
}
