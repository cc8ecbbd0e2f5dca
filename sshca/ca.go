package sshca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether s can name a CA or a role.
func ValidName(s string) bool { return nameRE.MatchString(s) }

var keyTypes = map[pb.SSHKeyType]hsm.KeyType{
	pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256: hsm.ECDSAP256,
	pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P384: hsm.ECDSAP384,
	pb.SSHKeyType_SSH_KEY_TYPE_ED25519:    hsm.Ed25519,
	pb.SSHKeyType_SSH_KEY_TYPE_RSA_3072:   hsm.RSA3072,
	pb.SSHKeyType_SSH_KEY_TYPE_RSA_4096:   hsm.RSA4096,
}

// CreateCA makes a CA with one ACTIVE key version generated in the HSM.
// ErrInvalid for a bad name, type or algorithm; ErrExists if the name is taken;
// an HSM failure (hsm.ErrUnavailable) as is.
func (e *Engine) CreateCA(ctx context.Context, req *pb.CreateSSHCARequest) (*pb.SSHCA, error) {
	if !ValidName(req.GetName()) {
		return nil, fmt.Errorf("%w: CA name %q", ErrInvalid, req.GetName())
	}
	if req.GetCertType() == pb.SSHCertType_SSH_CERT_TYPE_UNSPECIFIED {
		return nil, fmt.Errorf("%w: CA %q: cert_type is required (user or host)", ErrInvalid, req.GetName())
	}
	if _, ok := pb.SSHCertType_name[int32(req.GetCertType())]; !ok {
		return nil, fmt.Errorf("%w: CA %q: cert_type %v", ErrInvalid, req.GetName(), req.GetCertType())
	}
	kt := req.GetKeyType()
	if kt == pb.SSHKeyType_SSH_KEY_TYPE_UNSPECIFIED && req.GetKeyUri() == "" {
		kt = pb.SSHKeyType_SSH_KEY_TYPE_ED25519
	}
	if _, ok := keyTypes[kt]; !ok && (kt != pb.SSHKeyType_SSH_KEY_TYPE_UNSPECIFIED || req.GetKeyUri() == "") {
		return nil, fmt.Errorf("%w: CA %q: key type %v", ErrInvalid, req.GetName(), kt)
	}
	alg := req.GetRsaSignatureAlgorithm()
	switch alg {
	case "":
		alg = ssh.KeyAlgoRSASHA512
	case ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256:
	default:
		return nil, fmt.Errorf("%w: CA %q: RSA signature algorithm %q (rsa-sha2-512 or rsa-sha2-256)", ErrInvalid, req.GetName(), alg)
	}
	if d := req.GetRotationOverlap(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return nil, fmt.Errorf("%w: CA %q: rotation_overlap", ErrInvalid, req.GetName())
	}
	key := prefixCAs + req.GetName()
	if _, err := e.store.Get(ctx, key); err == nil {
		return nil, fmt.Errorf("%w: CA %q", ErrExists, req.GetName())
	} else if !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("sshca: create CA %q: %w", req.GetName(), err)
	}
	now := e.now()
	ca := &pb.SSHCA{
		Name:                  req.GetName(),
		CertType:              req.GetCertType(),
		RotationOverlap:       req.GetRotationOverlap(),
		RsaSignatureAlgorithm: alg,
		CreateTime:            timestamppb.New(now),
	}
	var v *pb.SSHCAKey
	var err error
	if req.GetKeyUri() != "" {
		v, err = e.adoptVersion(ctx, ca, kt, req.GetKeyUri())
	} else {
		v, err = e.newVersion(ctx, ca, 1, kt)
	}
	if err != nil {
		return nil, err
	}
	ca.Keys = append(ca.Keys, v)
	if _, err := e.putProto(ctx, key, ca, keystore.MustNotExist); err != nil {
		e.destroy(v.GetHsmLabel())
		if errors.Is(err, keystore.ErrConflict) {
			return nil, fmt.Errorf("%w: CA %q", ErrExists, req.GetName())
		}
		return nil, fmt.Errorf("sshca: create CA %q: %w", req.GetName(), err)
	}
	return e.view(ca), nil
}

// destroy removes a key whose store record could not be written; a failure
// leaves an orphan HSM object that nothing refers to. An adopted key
// (hsm.IsRef) is never destroyed.
func (e *Engine) destroy(label string) {
	if hsm.IsRef(label) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.keys.DestroyKey(ctx, label)
}

// newVersion generates the HSM key of one CA version.
func (e *Engine) newVersion(ctx context.Context, ca *pb.SSHCA, version uint32, kt pb.SSHKeyType) (*pb.SSHCAKey, error) {
	var suffix [4]byte
	if _, err := io.ReadFull(e.rand, suffix[:]); err != nil {
		return nil, fmt.Errorf("sshca: random: %w", err)
	}
	label := fmt.Sprintf("sshca/%s/v%d-%s", ca.GetName(), version, hex.EncodeToString(suffix[:]))
	if err := e.keys.GenerateKey(ctx, label, keyTypes[kt]); err != nil {
		return nil, fmt.Errorf("sshca: CA %q: generate key: %w", ca.GetName(), err)
	}
	return e.versionOf(ctx, ca, version, kt, label)
}

// adoptVersion makes version 1 of a CA from the existing HSM key that uri
// names (of type kt unless kt is unspecified). Its HsmLabel is the key's
// reference (hsm.IsRef), which records that hsmgate does not own it.
func (e *Engine) adoptVersion(ctx context.Context, ca *pb.SSHCA, kt pb.SSHKeyType, uri string) (*pb.SSHCAKey, error) {
	var allowed []hsm.KeyType
	for k, t := range keyTypes {
		if kt == pb.SSHKeyType_SSH_KEY_TYPE_UNSPECIFIED || k == kt {
			allowed = append(allowed, t)
		}
	}
	a, err := e.keys.AdoptKey(ctx, uri, allowed...)
	if err != nil {
		return nil, fmt.Errorf("sshca: CA %q: adopt key: %w", ca.GetName(), err)
	}
	for k, t := range keyTypes {
		if t == a.KeyType {
			kt = k
		}
	}
	return e.versionOf(ctx, ca, 1, kt, a.Ref)
}

// versionOf describes the CA version whose key has this label.
func (e *Engine) versionOf(ctx context.Context, ca *pb.SSHCA, version uint32, kt pb.SSHKeyType, label string) (*pb.SSHCAKey, error) {
	signer, err := e.signerFor(ctx, ca, label)
	if err != nil {
		e.destroy(label)
		return nil, err
	}
	pub := signer.PublicKey()
	return &pb.SSHCAKey{
		Version:     version,
		KeyType:     kt,
		State:       pb.SSHCAKeyState_SSHCA_KEY_STATE_ACTIVE,
		PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		Fingerprint: ssh.FingerprintSHA256(pub),
		CreateTime:  timestamppb.New(e.now()),
		HsmLabel:    label,
	}, nil
}

// signerFor returns the ssh.Signer of an HSM key, bound to ctx (its
// deadline and cancellation reach every HSM call when the key supports
// SignContext), offering exactly one signature algorithm: for RSA the CA's
// rsa-sha2-512 or rsa-sha2-256, never ssh-rsa.
func (e *Engine) signerFor(ctx context.Context, ca *pb.SSHCA, label string) (ssh.MultiAlgorithmSigner, error) {
	e.mu.Lock()
	cs, ok := e.signers[label]
	e.mu.Unlock()
	if !ok {
		var err error
		if cs, err = e.keys.SigningKey(ctx, label); err != nil {
			return nil, fmt.Errorf("sshca: CA %q: key %s: %w", ca.GetName(), label, err)
		}
		e.mu.Lock()
		e.signers[label] = cs
		e.mu.Unlock()
	}
	ms, err := newSSHSigner(hsm.WithContext(ctx, cs), ca.GetRsaSignatureAlgorithm())
	if err != nil {
		return nil, fmt.Errorf("sshca: CA %q: key %s: %w", ca.GetName(), label, err)
	}
	return ms, nil
}

// newSSHSigner wraps a crypto.Signer for certificate signing with one algorithm.
func newSSHSigner(cs crypto.Signer, rsaAlg string) (ssh.MultiAlgorithmSigner, error) {
	if pk, ok := cs.Public().(*ecdsa.PublicKey); ok {
		es, err := newECDSASigner(cs, pk)
		if err != nil {
			return nil, err
		}
		return ssh.NewSignerWithAlgorithms(es, []string{es.PublicKey().Type()})
	}
	s, err := ssh.NewSignerFromSigner(cs)
	if err != nil {
		return nil, err
	}
	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		return nil, fmt.Errorf("signer %T cannot choose its algorithm", s)
	}
	var alg string
	switch cs.Public().(type) {
	case *rsa.PublicKey:
		alg = rsaAlg
		if alg != ssh.KeyAlgoRSASHA256 {
			alg = ssh.KeyAlgoRSASHA512
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
		alg = s.PublicKey().Type()
	default:
		return nil, fmt.Errorf("unsupported CA key %T", cs.Public())
	}
	return ssh.NewSignerWithAlgorithms(as, []string{alg})
}

// view returns a copy of ca with the states the clock implies: a RETIRING
// version past its retire_time is RETIRED.
func (e *Engine) view(ca *pb.SSHCA) *pb.SSHCA {
	out := cloneCA(ca)
	now := e.now()
	for _, k := range out.Keys {
		if k.GetState() == pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRING && k.GetRetireTime() != nil && !now.Before(k.GetRetireTime().AsTime()) {
			k.State = pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRED
		}
	}
	return out
}

// getCA reads a CA (raw, without view) and its revision.
func (e *Engine) getCA(ctx context.Context, name string) (*pb.SSHCA, int64, error) {
	if !ValidName(name) {
		return nil, 0, fmt.Errorf("%w: CA name %q", ErrInvalid, name)
	}
	ca := &pb.SSHCA{}
	rev, err := e.getProto(ctx, prefixCAs+name, ca)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: %q", ErrCANotFound, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("sshca: CA %q: %w", name, err)
	}
	return ca, rev, nil
}

// GetCA returns a CA with its key versions; ErrCANotFound if absent.
func (e *Engine) GetCA(ctx context.Context, name string) (*pb.SSHCA, error) {
	ca, _, err := e.getCA(ctx, name)
	if err != nil {
		return nil, err
	}
	return e.view(ca), nil
}

// ListCAs returns every CA, by name.
func (e *Engine) ListCAs(ctx context.Context) ([]*pb.SSHCA, error) {
	ents, err := e.store.List(ctx, prefixCAs)
	if err != nil {
		return nil, fmt.Errorf("sshca: list CAs: %w", err)
	}
	out := make([]*pb.SSHCA, 0, len(ents))
	for _, ent := range ents {
		ca := &pb.SSHCA{}
		if err := unmarshal(ent, ca); err != nil {
			return nil, err
		}
		out = append(out, e.view(ca))
	}
	return out, nil
}

// RotateCA adds a new ACTIVE version (of type kt, or the current type when
// unspecified); the previous ACTIVE one becomes RETIRING, published until
// RetireCAKey or the end of the CA's rotation overlap. ErrCANotFound;
// keystore.ErrConflict (Aborted) when another rotation won the race.
func (e *Engine) RotateCA(ctx context.Context, name string, kt pb.SSHKeyType) (*pb.SSHCA, error) {
	ca, rev, err := e.getCA(ctx, name)
	if err != nil {
		return nil, err
	}
	ca = e.view(ca)
	active := activeKey(ca)
	if kt == pb.SSHKeyType_SSH_KEY_TYPE_UNSPECIFIED && active != nil {
		kt = active.GetKeyType()
	}
	if _, ok := keyTypes[kt]; !ok {
		return nil, fmt.Errorf("%w: CA %q: key type %v", ErrInvalid, name, kt)
	}
	var last uint32
	for _, k := range ca.Keys {
		last = max(last, k.GetVersion())
	}
	v, err := e.newVersion(ctx, ca, last+1, kt)
	if err != nil {
		return nil, err
	}
	now := e.now()
	if active != nil {
		active.State = pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRING
		active.RetiringTime = timestamppb.New(now)
		if d := ca.GetRotationOverlap().AsDuration(); ca.GetRotationOverlap() != nil && d > 0 {
			active.RetireTime = timestamppb.New(now.Add(d))
		}
	}
	ca.Keys = append(ca.Keys, v)
	if _, err := e.putProto(ctx, prefixCAs+name, ca, rev); err != nil {
		e.destroy(v.GetHsmLabel())
		return nil, fmt.Errorf("sshca: rotate CA %q: %w", name, err)
	}
	return e.view(ca), nil
}

// RetireCAKey stops publishing a RETIRING version now. Retiring the ACTIVE
// version is ErrState: rotate first. ErrCANotFound; ErrInvalid for an
// unknown version.
func (e *Engine) RetireCAKey(ctx context.Context, name string, version uint32) (*pb.SSHCA, error) {
	ca, rev, err := e.getCA(ctx, name)
	if err != nil {
		return nil, err
	}
	ca = e.view(ca)
	var k *pb.SSHCAKey
	for _, c := range ca.Keys {
		if c.GetVersion() == version {
			k = c
		}
	}
	switch {
	case k == nil:
		return nil, fmt.Errorf("%w: CA %q has no version %d", ErrInvalid, name, version)
	case k.GetState() == pb.SSHCAKeyState_SSHCA_KEY_STATE_ACTIVE:
		return nil, fmt.Errorf("%w: CA %q version %d is active; rotate first", ErrState, name, version)
	case k.GetState() == pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRED:
		return ca, nil
	}
	k.State = pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRED
	k.RetireTime = timestamppb.New(e.now())
	if _, err := e.putProto(ctx, prefixCAs+name, ca, rev); err != nil {
		return nil, fmt.Errorf("sshca: retire CA %q version %d: %w", name, version, err)
	}
	return e.view(ca), nil
}

// PublicKeys lists the published (ACTIVE and RETIRING) keys of the CA
// named (every CA if name is empty) of the given type (both if unspecified),
// by CA name then version. ErrCANotFound for an unknown name.
func (e *Engine) PublicKeys(ctx context.Context, name string, ct pb.SSHCertType) ([]*pb.SSHCAPublicKey, error) {
	var cas []*pb.SSHCA
	if name != "" {
		ca, err := e.GetCA(ctx, name)
		if err != nil {
			return nil, err
		}
		cas = []*pb.SSHCA{ca}
	} else {
		var err error
		if cas, err = e.ListCAs(ctx); err != nil {
			return nil, err
		}
	}
	var out []*pb.SSHCAPublicKey
	for _, ca := range cas {
		if ct != pb.SSHCertType_SSH_CERT_TYPE_UNSPECIFIED && ca.GetCertType() != ct {
			continue
		}
		for _, k := range ca.Keys {
			if k.GetState() != pb.SSHCAKeyState_SSHCA_KEY_STATE_ACTIVE && k.GetState() != pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRING {
				continue
			}
			out = append(out, &pb.SSHCAPublicKey{
				Ca: ca.GetName(), Version: k.GetVersion(), CertType: ca.GetCertType(),
				State: k.GetState(), PublicKey: k.GetPublicKey(), Fingerprint: k.GetFingerprint(),
			})
		}
	}
	return out, nil
}

func activeKey(ca *pb.SSHCA) *pb.SSHCAKey {
	for _, k := range ca.Keys {
		if k.GetState() == pb.SSHCAKeyState_SSHCA_KEY_STATE_ACTIVE {
			return k
		}
	}
	return nil
}

// caPublicKeys returns the SSH wire blobs of every version of ca.
func caPublicKeys(ca *pb.SSHCA) ([][]byte, error) {
	var out [][]byte
	for _, k := range ca.Keys {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.GetPublicKey()))
		if err != nil {
			return nil, fmt.Errorf("sshca: CA %q version %d: stored public key: %w", ca.GetName(), k.GetVersion(), err)
		}
		out = append(out, pub.Marshal())
	}
	return out, nil
}
