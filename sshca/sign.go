package sshca

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Sign issues certificates of type ct under the named role, one result per
// item in order. A caller's mistake in one item (ErrInvalid, ErrNotAllowed)
// is that item's error; a missing role or CA, a role of the other type, an
// HSM or store fault fails the call and returns no certificate. Every
// certificate returned has been recorded in the store.
func (e *Engine) Sign(ctx context.Context, ct pb.SSHCertType, roleName string, items []*pb.SSHSignItem) (_ []*pb.SSHSignResult, err error) {
	var usedRole string
	var why []string // refused items' reasons (metrics.go)
	defer func() { e.metrics.observe(usedRole, ct, len(items), why, err) }()
	if len(items) > e.maxItems {
		return nil, fmt.Errorf("%w: %d items, limit %d", ErrTooManyItems, len(items), e.maxItems)
	}
	iss, err := e.issuerFor(ctx, ct, roleName)
	if err != nil {
		return nil, err
	}
	usedRole = iss.role.GetName()
	caller, err := e.caller(ctx)
	if err != nil {
		return nil, fmt.Errorf("sshca: caller: %w", err)
	}
	denied, err := e.deniedSubjectKeys(ctx)
	if err != nil {
		return nil, err
	}
	p := newPolicy(iss.role, caller)
	now := e.now()
	results := make([]*pb.SSHSignResult, len(items))
	certs := make([]*ssh.Certificate, len(items))
	// Each certificate's serial and nonce, drawn in one read.
	rnd := make([]byte, randPerCert*len(items))
	if _, err := io.ReadFull(e.rand, rnd); err != nil {
		return nil, fmt.Errorf("sshca: random serials and nonces: %w", err)
	}
	for i, it := range items {
		results[i] = &pb.SSHSignResult{Reference: it.GetReference()}
		c, err := p.certificate(it, now)
		if err == nil {
			err = denied.check(c.Key)
		}
		if err == nil {
			err = e.fillIdentity(c, iss.role, iss.ca, caller, rnd[i*randPerCert:(i+1)*randPerCert])
		}
		switch {
		case err == nil:
			certs[i] = c
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrNotAllowed):
			results[i].Error = errs.GRPCStatus(err).Proto()
			why = itemRefused(why, len(items), i, err)
		default:
			return nil, err
		}
	}
	lines, err := e.signAll(ctx, iss.signer, iss.caBlob, certs)
	if err != nil {
		return nil, fmt.Errorf("sshca: sign with CA %.64q version %d: %w", iss.ca.GetName(), iss.key.GetVersion(), err)
	}
	if err := e.record(ctx, iss, caller, now, certs, lines, results); err != nil {
		return nil, err
	}
	return results, nil
}

// issuer is what signs for one role: the role, its CA and the CA's active key.
type issuer struct {
	role   *pb.SSHRole
	ca     *pb.SSHCA
	key    *pb.SSHCAKey
	signer ssh.MultiAlgorithmSigner
	caBlob []byte // the signer's public key in wire form
}

// issuerFor loads a role of type ct, its CA and the CA's active signer.
func (e *Engine) issuerFor(ctx context.Context, ct pb.SSHCertType, roleName string) (*issuer, error) {
	role, err := e.cachedRole(ctx, roleName) // shared with other requests: read only
	if err != nil {
		return nil, err
	}
	if role.GetCertType() != ct {
		return nil, fmt.Errorf("%w: role %.64q issues %v certificates", ErrWrongType, roleName, role.GetCertType())
	}
	ca, err := e.cachedCA(ctx, role.GetCa()) // shared: e.view below returns a copy
	if err != nil {
		return nil, fmt.Errorf("role %.64q: %w", roleName, err)
	}
	if ca.GetCertType() != ct {
		return nil, fmt.Errorf("%w: CA %.64q issues %v certificates", ErrWrongType, ca.GetName(), ca.GetCertType())
	}
	ca = e.view(ca)
	active := activeKey(ca)
	if active == nil {
		return nil, fmt.Errorf("%w: CA %.64q has no active key", ErrState, ca.GetName())
	}
	signer, err := e.signerFor(ctx, ca, active.GetHsmLabel())
	if err != nil {
		return nil, err
	}
	return &issuer{role: role, ca: ca, key: active, signer: signer, caBlob: signer.PublicKey().Marshal()}, nil
}

// record fills the results of the signed certificates and writes one
// issuance record for them; nothing is returned to the caller if it fails.
func (e *Engine) record(ctx context.Context, iss *issuer, caller Caller, now time.Time, certs []*ssh.Certificate, lines []string, results []*pb.SSHSignResult) error {
	n := 0
	for _, c := range certs {
		if c != nil {
			n++
		}
	}
	batch := &pb.SSHIssuedBatch{
		Certs: make([]*pb.SSHIssuedCert, 0, n),
		Common: &pb.SSHIssuedCert{
			Ca: iss.ca.GetName(), CaVersion: iss.key.GetVersion(), CaPublicKey: iss.caBlob,
			CertType: iss.role.GetCertType(), Role: iss.role.GetName(),
			Identity: caller.label(), RequestId: caller.RequestID, IssueTime: timestamppb.New(now),
		},
	}
	recs := make([]pb.SSHIssuedCert, n)
	for i, c := range certs {
		if c == nil {
			continue
		}
		r := results[i]
		r.Certificate = lines[i]
		r.Serial, r.KeyId, r.Principals = c.Serial, c.KeyId, c.ValidPrincipals
		r.ValidAfter = timestamppb.New(time.Unix(int64(c.ValidAfter), 0))
		r.ValidBefore = timestamppb.New(time.Unix(int64(c.ValidBefore), 0))
		r.Ca, r.CaVersion = iss.ca.GetName(), iss.key.GetVersion()
		rec := &recs[len(batch.Certs)]
		rec.Serial, rec.KeyId, rec.Principals = c.Serial, c.KeyId, c.ValidPrincipals
		rec.ValidAfter, rec.ValidBefore = r.ValidAfter, r.ValidBefore
		rec.PublicKeyFingerprint = ssh.FingerprintSHA256(c.Key)
		batch.Certs = append(batch.Certs, rec)
	}
	if len(batch.Certs) == 0 {
		return nil
	}
	if _, err := e.putProto(ctx, issuedKey(now, batch.Certs[0].GetSerial()), batch, keystore.MustNotExist); err != nil {
		for _, r := range results {
			r.Certificate = ""
		}
		return fmt.Errorf("sshca: record issued certificates: %w", err)
	}
	return nil
}

// issuedKey is the store key of a batch record: partitioned by UTC day, so
// that a serial is looked up newest day first, over a bounded horizon.
func issuedKey(t time.Time, firstSerial uint64) string {
	return fmt.Sprintf("%s%s/%020d-%016x", prefixIssued, t.UTC().Format(time.DateOnly), t.UnixNano(), firstSerial)
}

// randPerCert is the random bytes a certificate takes: an 8-byte serial and
// a 32-byte nonce.
const randPerCert = 8 + 32

// fillIdentity sets the serial, nonce and key ID of c from rnd (randPerCert
// random bytes; a zero serial is drawn again).
func (e *Engine) fillIdentity(c *ssh.Certificate, role *pb.SSHRole, ca *pb.SSHCA, caller Caller, rnd []byte) error {
	serial := binary.BigEndian.Uint64(rnd[:8])
	if serial == 0 {
		var err error
		if serial, err = randomSerial(e.rand); err != nil {
			return err
		}
	}
	c.Serial, c.Nonce = serial, rnd[8:randPerCert]
	id, err := expandKeyID(role.GetKeyIdFormat(), keyIDVars{
		identity: caller.label(), requestID: caller.RequestID, role: role.GetName(), ca: ca.GetName(),
		principals: strings.Join(c.ValidPrincipals, ","), serial: serial,
	})
	if err != nil {
		return fmt.Errorf("%w: key ID: %v", ErrInvalid, err)
	}
	c.KeyId = id
	return nil
}

// randomSerial returns a random nonzero 64-bit serial.
func randomSerial(r io.Reader) (uint64, error) {
	var b [8]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("sshca: random serial: %w", err)
		}
		if s := binary.BigEndian.Uint64(b[:]); s != 0 {
			return s, nil
		}
	}
}

// signAll signs the non-nil certificates and returns their authorized_keys
// lines by index. Workers take the certificates in turn; each worker holds
// one of the engine's slots, shared by all requests, so concurrent batches
// do not pile more threads on the HSM than it serves. A batch waits for its
// first slot and takes more only while they are free.
func (e *Engine) signAll(ctx context.Context, signer ssh.MultiAlgorithmSigner, caBlob []byte, certs []*ssh.Certificate) ([]string, error) {
	n := 0
	for _, c := range certs {
		if c != nil {
			n++
		}
	}
	lines := make([]string, len(certs))
	if n == 0 {
		return lines, nil
	}
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		mu   sync.Mutex
		ferr error
	)
	var failed atomic.Bool // once set, the other workers stop: the batch fails whole
	fail := func(err error) {
		mu.Lock()
		if ferr == nil {
			ferr = err
		}
		mu.Unlock()
		failed.Store(true)
	}
	work := func() {
		defer wg.Done()
		defer func() { <-e.slots }()
		var memo tuplesMemo
		for {
			i := int(next.Add(1)) - 1
			if i >= len(certs) || failed.Load() {
				return
			}
			c := certs[i]
			if c == nil {
				continue
			}
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			line, err := signCert(e.rand, signer, caBlob, c, &memo)
			if err != nil {
				fail(err)
				return
			}
			lines[i] = line
		}
	}
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	wg.Add(1)
	go work()
more:
	for w := 1; w < n; w++ {
		select {
		case e.slots <- struct{}{}:
			wg.Add(1)
			go work()
		default:
			break more
		}
	}
	wg.Wait()
	if ferr != nil {
		return nil, ferr
	}
	return lines, nil
}

// policy applies one role for one caller.
type policy struct {
	role     *pb.SSHRole
	allowed  [][]token // expanded allowed patterns (unusable ones dropped)
	defaults []string  // expanded default principals
}

func newPolicy(role *pb.SSHRole, c Caller) *policy {
	p := &policy{role: role}
	for _, s := range role.GetAllowedPrincipals() {
		toks, err := parsePattern(s, true)
		if err != nil {
			continue
		}
		if x, ok := expand(toks, c); ok {
			p.allowed = append(p.allowed, x)
		}
	}
	for _, s := range role.GetDefaultPrincipals() {
		toks, err := parsePattern(s, false)
		if err != nil {
			continue
		}
		if x, ok := expand(toks, c); ok {
			p.defaults = append(p.defaults, literal(x))
		}
	}
	return p
}

func notAllowed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrNotAllowed, fmt.Sprintf(format, a...))
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// certificate builds the unsigned certificate for one item, or the caller's mistake.
func (p *policy) certificate(it *pb.SSHSignItem, now time.Time) (*ssh.Certificate, error) {
	key, err := p.subjectKey(it.GetPublicKey())
	if err != nil {
		return nil, err
	}
	principals, err := p.principals(it.GetPrincipals())
	if err != nil {
		return nil, err
	}
	ttl := p.role.GetDefaultTtl().AsDuration()
	if it.GetTtl() != nil {
		if it.GetTtl().CheckValid() != nil || it.GetTtl().AsDuration() <= 0 {
			return nil, invalid("ttl %v", it.GetTtl())
		}
		ttl = it.GetTtl().AsDuration()
	}
	if maxTTL := p.role.GetMaxTtl().AsDuration(); ttl > maxTTL {
		return nil, notAllowed("ttl %v exceeds the role's max_ttl %v", ttl, maxTTL)
	}
	c := &ssh.Certificate{
		Key:             key,
		ValidPrincipals: principals,
		ValidAfter:      uint64(now.Add(-p.role.GetBackdate().AsDuration()).Unix()),
		ValidBefore:     uint64(now.Add(ttl).Unix()),
		CertType:        ssh.UserCert,
	}
	if p.role.GetCertType() == pb.SSHCertType_SSH_CERT_TYPE_HOST {
		c.CertType = ssh.HostCert
		if len(it.GetExtensions()) > 0 || len(it.GetCriticalOptions()) > 0 {
			return nil, invalid("host certificates carry no extensions or critical options")
		}
		return c, nil
	}
	if c.Extensions, err = p.extensions(it.GetExtensions()); err != nil {
		return nil, err
	}
	if c.CriticalOptions, err = p.criticalOptions(it.GetCriticalOptions()); err != nil {
		return nil, err
	}
	return c, nil
}

// subjectKey parses the key to certify and checks its type and size.
func (p *policy) subjectKey(s string) (ssh.PublicKey, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, invalid("public key: %v", err)
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return nil, invalid("public key is a certificate")
	}
	family, bits, err := keyFamily(key)
	if err != nil {
		return nil, notAllowed("%v", err)
	}
	for _, r := range p.role.GetAllowedKeyTypes() {
		if r.GetType() != family {
			continue
		}
		if bits < r.GetMinBits() {
			return nil, notAllowed("%s key of %d bits, role requires at least %d", family, bits, r.GetMinBits())
		}
		return marshaledKey{PublicKey: key, wire: key.Marshal()}, nil
	}
	return nil, notAllowed("key type %s not allowed by role %.64q", family, p.role.GetName())
}

// marshaledKey is a subject key with its wire form computed once: the
// certificate's encoding and the issuance record's fingerprint both need it,
// and x/crypto/ssh marshals keys by reflection.
type marshaledKey struct {
	ssh.PublicKey
	wire []byte
}

func (k marshaledKey) Marshal() []byte { return k.wire }

// keyFamily names the family of a subject key and its size in bits.
func keyFamily(key ssh.PublicKey) (string, uint32, error) {
	switch key.Type() {
	case ssh.KeyAlgoED25519:
		return "ed25519", 256, nil
	case ssh.KeyAlgoSKED25519:
		return "sk-ed25519", 256, nil
	case ssh.KeyAlgoSKECDSA256:
		return "sk-ecdsa", 256, nil
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		cpk, ok := key.(ssh.CryptoPublicKey)
		if !ok {
			return "", 0, fmt.Errorf("key type %s", key.Type())
		}
		ek, ok := cpk.CryptoPublicKey().(*ecdsa.PublicKey)
		if !ok {
			return "", 0, fmt.Errorf("key type %s", key.Type())
		}
		return "ecdsa", uint32(ek.Curve.Params().BitSize), nil
	case ssh.KeyAlgoRSA:
		cpk, ok := key.(ssh.CryptoPublicKey)
		if !ok {
			return "", 0, fmt.Errorf("key type %s", key.Type())
		}
		rk, ok := cpk.CryptoPublicKey().(*rsa.PublicKey)
		if !ok {
			return "", 0, fmt.Errorf("key type %s", key.Type())
		}
		return "rsa", uint32(rk.N.BitLen()), nil
	}
	return "", 0, fmt.Errorf("key type %s is never accepted", key.Type())
}

// principals returns the certificate's principals: the requested ones or
// the role's defaults, each allowed, never none.
func (p *policy) principals(req []string) ([]string, error) {
	ps := req
	if len(ps) == 0 {
		ps = p.defaults
	}
	if len(ps) == 0 {
		return nil, invalid("no principals requested and the role has no default for this identity; a certificate without principals is never issued")
	}
	if len(ps) > maxPrincipals {
		return nil, invalid("%d principals, limit %d", len(ps), maxPrincipals)
	}
	out := slices.Clone(ps)
	slices.Sort(out)
	out = slices.Compact(out)
	for _, pr := range out {
		if err := validPrincipal(pr); err != nil {
			return nil, invalid("principal %.64q: %v", pr, err)
		}
		if !slices.ContainsFunc(p.allowed, func(t []token) bool { return match(t, pr) }) {
			return nil, notAllowed("principal %.64q not allowed by role %.64q", pr, p.role.GetName())
		}
	}
	return out, nil
}

// extensions returns the requested extensions (each allowed) or the role's defaults.
func (p *policy) extensions(req map[string]string) (map[string]string, error) {
	if len(req) == 0 {
		return p.role.GetDefaultExtensions(), nil // shared: never changed
	}
	out := make(map[string]string, len(req))
	for name, v := range req {
		if !slices.Contains(p.role.GetAllowedExtensions(), name) {
			return nil, notAllowed("extension %.64q not allowed by role %.64q", name, p.role.GetName())
		}
		if err := checkExtension(name, v); err != nil {
			return nil, invalid("%v", err)
		}
		out[name] = v
	}
	return out, nil
}

// criticalOptions returns the role's forced options plus the requested ones
// the role allows; a request cannot change a forced option.
func (p *policy) criticalOptions(req map[string]string) (map[string]string, error) {
	if len(req) == 0 {
		if len(p.role.GetCriticalOptions()) == 0 {
			return nil, nil
		}
		return p.role.GetCriticalOptions(), nil // shared: never changed
	}
	out := maps.Clone(p.role.GetCriticalOptions())
	if out == nil {
		out = map[string]string{}
	}
	for name, v := range req {
		if forced, ok := p.role.GetCriticalOptions()[name]; ok {
			if v != forced {
				return nil, notAllowed("critical option %.64q is fixed by role %.64q", name, p.role.GetName())
			}
			continue
		}
		if !slices.Contains(p.role.GetAllowedCriticalOptions(), name) {
			return nil, notAllowed("critical option %.64q not allowed by role %.64q", name, p.role.GetName())
		}
		if err := checkCriticalOption(name, v); err != nil {
			return nil, invalid("%v", err)
		}
		out[name] = v
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
