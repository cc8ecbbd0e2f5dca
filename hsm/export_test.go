package hsm

import (
	"context"

	"github.com/miekg/pkcs11"
)

// GenerateExtractableAES makes an AES-256 data key whose value can be read,
// so that tests can compare the HSM's GCM with Go's. Tests only.
func GenerateExtractableAES(ctx context.Context, m *Module, label string) error {
	return m.create(ctx, label, func(m *Module, s *session, label string, id []byte) error {
		return m.genAES(s, label, id, aesUseExtractable)
	})
}

// Hold takes a session from the pool and keeps it until release is called,
// so that tests can fill the pool.
func Hold(ctx context.Context, m *Module) (release func(), err error) {
	if err := m.take(ctx); err != nil {
		return nil, err
	}
	s, err := m.session(ctx)
	if err != nil {
		<-m.sem
		return nil, err
	}
	return func() { m.release(s); <-m.sem }, nil
}

// OpenWith opens a Module that sees the library through wrap (a
// fault-injecting layer, hsm/hsmfault).
func OpenWith(ctx context.Context, cfg Config, wrap func(PKCS11) PKCS11) (*Module, error) {
	return open(ctx, cfg, wrap)
}

// Registered is the number of sessions the Module has opened and not closed
// (the pool's, the keeper's, and those that wait for a slot reset).
func Registered(m *Module) int {
	m.sessMu.Lock()
	defer m.sessMu.Unlock()
	return len(m.open)
}

// ImportHMACKey makes a generic secret with a known value (signing only),
// so that tests can check the HSM's HMAC against published vectors. Tests only.
func ImportHMACKey(ctx context.Context, m *Module, label string, key []byte) error {
	return m.create(ctx, label, func(m *Module, s *session, label string, id []byte) error {
		_, err := m.p.CreateObject(s.h, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			attr(pkcs11.CKA_VALUE, key),
			attr(pkcs11.CKA_LABEL, label),
			attr(pkcs11.CKA_ID, id),
			attr(pkcs11.CKA_TOKEN, true),
			attr(pkcs11.CKA_PRIVATE, true),
			attr(pkcs11.CKA_SIGN, true),
		})
		return err
	})
}

// Maintain runs pending maintenance (closing a failed key-copy session,
// resetting the slot) now, waiting for a maintenance already running, and
// reports whether some is still pending.
func Maintain(ctx context.Context, m *Module) (pending bool, err error) {
	if err := m.take(ctx); err != nil {
		return false, err
	}
	defer func() { <-m.sem }()
	m.maintMu.Lock() // waits for one that is running
	defer m.maintMu.Unlock()
	m.maintainLocked(true)
	return m.maint.Load(), nil
}
