package sshca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca/krl"
)

// krlSnapshot is the KRL generated from one revision of the revocation record.
type krlSnapshot struct {
	rev     int64
	data    []byte
	version uint64
	time    time.Time
}

// ensureRevocationList creates the empty revocation record if there is none.
func (e *Engine) ensureRevocationList(ctx context.Context) error {
	_, err := e.store.Get(ctx, keyKRL)
	if err == nil {
		return nil
	}
	if !errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("sshca: revocation list: %w", err)
	}
	l := &pb.SSHRevocationList{KrlVersion: 1, UpdateTime: timestamppb.New(e.now())}
	if _, err := e.putProto(ctx, keyKRL, l, keystore.MustNotExist); err != nil && !errors.Is(err, keystore.ErrConflict) {
		return fmt.Errorf("sshca: create revocation list: %w", err)
	}
	return nil
}

// Revoke adds a revocation and returns the new KRL version. By serial: under
// the CA key recorded at issuance, or under every key of req.Ca when given
// (ErrSerialNotFound if neither); by key ID: for req.Ca's keys, or for every
// CA; by public key or SHA-256 fingerprint: the key and all its certificates.
// ErrInvalid for a malformed request, ErrCANotFound for an unknown CA.
func (e *Engine) Revoke(ctx context.Context, req *pb.RevokeSSHRequest) (uint64, error) {
	caller, err := e.caller(ctx)
	if err != nil {
		return 0, fmt.Errorf("sshca: caller: %w", err)
	}
	r := &pb.SSHRevocation{Reason: req.GetReason(), Identity: caller.label(), RevokeTime: timestamppb.New(e.now())}
	var caKeys [][]byte
	if req.GetCa() != "" {
		ca, _, err := e.getCA(ctx, req.GetCa())
		if err != nil {
			return 0, err
		}
		if caKeys, err = caPublicKeys(ca); err != nil {
			return 0, err
		}
	}
	switch t := req.GetTarget().(type) {
	case *pb.RevokeSSHRequest_Serial:
		if t.Serial == 0 {
			return 0, invalid("serial 0 cannot be revoked")
		}
		r.Target = &pb.SSHRevocation_Serial{Serial: t.Serial}
		if caKeys == nil {
			rec, err := e.findIssued(ctx, t.Serial)
			if err != nil {
				return 0, err
			}
			caKeys = [][]byte{rec.GetCaPublicKey()}
			r.ExpireTime = rec.GetValidBefore()
		}
		r.CaPublicKeys = caKeys
	case *pb.RevokeSSHRequest_KeyId:
		if t.KeyId == "" {
			return 0, invalid("empty key ID")
		}
		r.Target = &pb.SSHRevocation_KeyId{KeyId: t.KeyId}
		r.CaPublicKeys = caKeys
	case *pb.RevokeSSHRequest_PublicKey:
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(t.PublicKey))
		if err != nil {
			return 0, invalid("public key: %v", err)
		}
		if c, ok := key.(*ssh.Certificate); ok {
			key = c.Key
		}
		if err := e.checkRevokeTarget(ctx, sha256.Sum256(key.Marshal())); err != nil {
			return 0, err
		}
		r.Target = &pb.SSHRevocation_PublicKey{PublicKey: key.Marshal()}
	case *pb.RevokeSSHRequest_Sha256Fingerprint:
		sum, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(strings.TrimPrefix(t.Sha256Fingerprint, "SHA256:"), "="))
		if err != nil || len(sum) != 32 {
			return 0, invalid("fingerprint %.64q: want SHA256:<base64 of 32 bytes>", t.Sha256Fingerprint)
		}
		if err := e.checkRevokeTarget(ctx, [32]byte(sum)); err != nil {
			return 0, err
		}
		r.Target = &pb.SSHRevocation_Sha256{Sha256: sum}
	default:
		return 0, invalid("revocation needs a serial, key ID, public key or fingerprint")
	}
	v, err := e.appendRevocation(ctx, r)
	if err != nil {
		return 0, err
	}
	// Regenerate now, so the next fetch of the KRL is served from memory.
	if _, _, _, err := e.KRL(ctx); err != nil {
		return 0, err
	}
	return v, nil
}

// appendRevocation adds r to the record by compare-and-swap, retrying lost races.
func (e *Engine) appendRevocation(ctx context.Context, r *pb.SSHRevocation) (uint64, error) {
	for range 20 {
		l := &pb.SSHRevocationList{}
		rev, err := e.getProto(ctx, keyKRL, l)
		if errors.Is(err, keystore.ErrNotFound) {
			rev = keystore.MustNotExist
		} else if err != nil {
			return 0, fmt.Errorf("sshca: revoke: %w", err)
		}
		l.Revocations = append(pruneExpired(l.GetRevocations(), e.now()), r)
		l.KrlVersion++
		l.UpdateTime = timestamppb.New(e.now())
		_, err = e.putProto(ctx, keyKRL, l, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("sshca: revoke: %w", err)
		}
		return l.GetKrlVersion(), nil
	}
	return 0, fmt.Errorf("sshca: revoke: %w", keystore.ErrConflict)
}

// pruneExpired drops revocations of certificates that have expired: sshd
// refuses them anyway, and the KRL stays small.
func pruneExpired(rs []*pb.SSHRevocation, now time.Time) []*pb.SSHRevocation {
	out := rs[:0]
	for _, r := range rs {
		if r.GetExpireTime() != nil && now.After(r.GetExpireTime().AsTime()) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// findIssued finds the issuance record of a serial, newest day first, over
// the days in which a certificate still valid now can have been issued (the
// longest max_ttl of the current roles, plus a day). Revocation is rare and
// issuance is the hot path, which writes one record per request and no index.
func (e *Engine) findIssued(ctx context.Context, serial uint64) (*pb.SSHIssuedCert, error) {
	roles, err := e.ListRoles(ctx)
	if err != nil {
		return nil, err
	}
	horizon := 24 * time.Hour
	for _, r := range roles {
		horizon = max(horizon, r.GetMaxTtl().AsDuration()+r.GetBackdate().AsDuration()+24*time.Hour)
	}
	now := e.now().UTC()
	for d := time.Duration(0); d <= horizon; d += 24 * time.Hour {
		day := now.Add(-d).Format(time.DateOnly)
		ents, err := e.store.List(ctx, prefixIssued+day+"/")
		if err != nil {
			return nil, fmt.Errorf("sshca: find serial: %w", err)
		}
		for i := len(ents) - 1; i >= 0; i-- {
			b := &pb.SSHIssuedBatch{}
			if err := unmarshal(ents[i], b); err != nil {
				return nil, err
			}
			for _, c := range b.GetCerts() {
				if c.GetSerial() == serial {
					return issuedRecord(b, c), nil
				}
			}
		}
	}
	return nil, fmt.Errorf("%w: %d was not issued by a CA here within %v (name the CA to revoke it anyway)", ErrSerialNotFound, serial, horizon)
}

// issuedRecord is the whole record of one certificate of batch b: the
// batch's common fields merged with the certificate's own.
func issuedRecord(b *pb.SSHIssuedBatch, c *pb.SSHIssuedCert) *pb.SSHIssuedCert {
	out := &pb.SSHIssuedCert{}
	if b.GetCommon() != nil {
		proto.Merge(out, b.GetCommon())
	}
	proto.Merge(out, c)
	return out
}

// KRL returns the current KRL, its version and generation time. The bytes
// are shared: do not modify them.
func (e *Engine) KRL(ctx context.Context) ([]byte, uint64, time.Time, error) {
	ent, err := e.store.Get(ctx, keyKRL)
	if errors.Is(err, keystore.ErrNotFound) {
		if err := e.ensureRevocationList(ctx); err != nil {
			return nil, 0, time.Time{}, err
		}
		ent, err = e.store.Get(ctx, keyKRL)
	}
	if err != nil {
		return nil, 0, time.Time{}, fmt.Errorf("sshca: KRL: %w", err)
	}
	if s := e.krl.Load(); s != nil && s.rev == ent.Revision {
		return s.data, s.version, s.time, nil
	}
	l := &pb.SSHRevocationList{}
	if err := unmarshal(ent, l); err != nil {
		return nil, 0, time.Time{}, err
	}
	k, err := buildKRL(l)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	s := &krlSnapshot{rev: ent.Revision, data: k.Marshal(), version: k.Version, time: k.GeneratedDate}
	e.krl.Store(s)
	return s.data, s.version, s.time, nil
}

// buildKRL turns the revocation record into a KRL.
func buildKRL(l *pb.SSHRevocationList) (*krl.KRL, error) {
	k := &krl.KRL{Version: l.GetKrlVersion(), GeneratedDate: l.GetUpdateTime().AsTime(), Comment: "hsmgate"}
	parse := func(b []byte) (ssh.PublicKey, error) {
		pk, err := ssh.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("sshca: stored revocation key: %w", err)
		}
		return pk, nil
	}
	for _, r := range l.GetRevocations() {
		switch t := r.GetTarget().(type) {
		case *pb.SSHRevocation_Serial:
			for _, b := range r.GetCaPublicKeys() {
				ca, err := parse(b)
				if err != nil {
					return nil, err
				}
				k.RevokeSerial(ca, t.Serial)
			}
		case *pb.SSHRevocation_KeyId:
			if len(r.GetCaPublicKeys()) == 0 {
				k.RevokeKeyID(nil, t.KeyId)
			}
			for _, b := range r.GetCaPublicKeys() {
				ca, err := parse(b)
				if err != nil {
					return nil, err
				}
				k.RevokeKeyID(ca, t.KeyId)
			}
		case *pb.SSHRevocation_PublicKey:
			pk, err := parse(t.PublicKey)
			if err != nil {
				return nil, err
			}
			k.RevokeKey(pk)
		case *pb.SSHRevocation_Sha256:
			k.RevokeSHA256(bytes.Clone(t.Sha256))
		}
	}
	return k, nil
}
