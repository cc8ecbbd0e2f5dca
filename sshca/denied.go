package sshca

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// deniedKeys are the keys that are never certified, by the SHA-256 of their
// wire form (the KRL's fingerprint form): the public key of every version of
// every CA here (a certificate for a CA key, once revoked by key as
// documented, would put the CA key in the KRL and switch the whole CA off in
// sshd; and a CA key has no business being a user or host key), and every
// key revoked by key or fingerprint (a certificate for it would be refused
// by sshd anyway, and issuing one hides the revocation).
type deniedKeys struct {
	ca      map[[32]byte]string // fingerprint -> "CA <name> version <n>"
	revoked map[[32]byte]bool
}

// check returns ErrInvalid when key may not be a subject key.
func (d *deniedKeys) check(key ssh.PublicKey) error {
	sum := sha256.Sum256(key.Marshal())
	if ca, ok := d.ca[sum]; ok {
		return invalid("public key is the key of %s: a CA key is never a subject key", ca)
	}
	if d.revoked[sum] {
		return invalid("public key %s is revoked (in the KRL)", ssh.FingerprintSHA256(key))
	}
	return nil
}

// deniedSubjectKeys returns the current deniedKeys, from memory unless a CA
// or the revocation record changed (see cache.go).
func (e *Engine) deniedSubjectKeys(ctx context.Context) (*deniedKeys, error) {
	d, err := e.cache.Lookup(ctx, cacheDenied, func(ctx context.Context) (any, error) { return e.loadDenied(ctx) })
	if err != nil {
		return nil, err
	}
	return d.(*deniedKeys), nil
}

// loadDenied reads every CA and the revocation record.
func (e *Engine) loadDenied(ctx context.Context) (*deniedKeys, error) {
	d := &deniedKeys{ca: map[[32]byte]string{}, revoked: map[[32]byte]bool{}}
	if err := e.addCAKeys(ctx, d); err != nil {
		return nil, err
	}
	l := &pb.SSHRevocationList{}
	if _, err := e.getProto(ctx, keyKRL, l); err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("sshca: revocation list: %w", err)
	}
	for _, r := range l.GetRevocations() {
		switch t := r.GetTarget().(type) {
		case *pb.SSHRevocation_PublicKey:
			d.revoked[sha256.Sum256(t.PublicKey)] = true
		case *pb.SSHRevocation_Sha256:
			if len(t.Sha256) == sha256.Size {
				d.revoked[[32]byte(t.Sha256)] = true
			}
		}
	}
	return d, nil
}

// addCAKeys adds the key of every version (whatever its state) of every CA.
func (e *Engine) addCAKeys(ctx context.Context, d *deniedKeys) error {
	ents, err := e.store.List(ctx, prefixCAs)
	if err != nil {
		return fmt.Errorf("sshca: list CAs: %w", err)
	}
	for _, ent := range ents {
		ca := &pb.SSHCA{}
		if err := unmarshal(ent, ca); err != nil {
			return err
		}
		blobs, err := caPublicKeys(ca)
		if err != nil {
			return err
		}
		for i, b := range blobs {
			d.ca[sha256.Sum256(b)] = fmt.Sprintf("SSH CA %q version %d", ca.GetName(), ca.GetKeys()[i].GetVersion())
		}
	}
	return nil
}

// checkRevokeTarget refuses to revoke a CA's own key by key or fingerprint:
// that would put the CA key in the KRL and switch the whole CA off in sshd
// (retire or rotate the CA instead).
func (e *Engine) checkRevokeTarget(ctx context.Context, sum [32]byte) error {
	d := &deniedKeys{ca: map[[32]byte]string{}}
	if err := e.addCAKeys(ctx, d); err != nil {
		return err
	}
	if ca, ok := d.ca[sum]; ok {
		return invalid("the key is the key of %s: revoking it would switch the CA off in sshd; rotate and retire the CA key instead", ca)
	}
	return nil
}
