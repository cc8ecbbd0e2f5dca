package hsm

import "context"

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
	s, err := m.acquire(ctx)
	if err != nil {
		return nil, err
	}
	return func() { m.release(s) }, nil
}
