// Package transithsm adapts *hsm.Module to transit's small HSM interface
// (the methods return hsm's concrete types; transit wants its interfaces).
package transithsm

import (
	"context"
	"crypto"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/transit"
)

// Module is an *hsm.Module seen as a transit.HSM.
type Module struct{ M *hsm.Module }

// New adapts m.
func New(m *hsm.Module) transit.HSM { return Module{M: m} }

var _ transit.HSM = Module{}
var _ transit.Wrapper = (*hsm.KEK)(nil)

func (a Module) GenerateKey(ctx context.Context, label, keyType string) error {
	return a.M.GenerateKey(ctx, label, hsm.KeyType(keyType))
}

func (a Module) DestroyKey(ctx context.Context, label string) error {
	return a.M.DestroyKey(ctx, label)
}

func (a Module) AEAD(ctx context.Context, label string) (transit.AEAD, error) {
	x, err := a.M.AEAD(ctx, label)
	if err != nil {
		return nil, err
	}
	return x, nil
}

func (a Module) Signer(ctx context.Context, label string) (transit.Signer, error) {
	x, err := a.M.Signer(ctx, label)
	if err != nil {
		return nil, err
	}
	return x, nil
}

func (a Module) MAC(ctx context.Context, label string, h crypto.Hash) (transit.MAC, error) {
	x, err := a.M.MAC(ctx, label, h)
	if err != nil {
		return nil, err
	}
	return x, nil
}

// AdoptKey adopts the existing key that uri names, of keyType (see
// hsm.Module.AdoptKey), and returns its reference.
func (a Module) AdoptKey(ctx context.Context, uri, keyType string) (string, error) {
	ad, err := a.M.AdoptKey(ctx, uri, hsm.KeyType(keyType))
	if err != nil {
		return "", err
	}
	return ad.Ref, nil
}

var _ transit.KeyAdopter = Module{}

func (a Module) Random(ctx context.Context, n int) ([]byte, error) { return a.M.Random(ctx, n) }
