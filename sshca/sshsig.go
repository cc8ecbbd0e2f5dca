package sshca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"unsafe"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/hsm"
)

// ecdsaSigner is an ssh.AlgorithmSigner for an ECDSA CA key. It does what
// ssh.NewSignerFromSigner does for ECDSA (hash, sign, turn the ASN.1
// signature into the SSH r, s mpints) without encoding/asn1's reflection and
// math/big, which showed in the ssh-sign profile.
type ecdsaSigner struct {
	cs   crypto.Signer
	pub  ssh.PublicKey
	hash crypto.Hash
	// raw, if set, signs a digest and returns r||s (each as long as the
	// curve's order): the HSM's own form, which skips the DER round trip.
	raw func(digest []byte, h crypto.Hash) ([]byte, error)
}

// rawSigner is a signer that gives ECDSA signatures as r||s (*hsm.Signer).
type rawSigner interface {
	SignRawContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

var _ ssh.AlgorithmSigner = (*ecdsaSigner)(nil)

func newECDSASigner(cs crypto.Signer, pk *ecdsa.PublicKey) (*ecdsaSigner, error) {
	pub, err := ssh.NewPublicKey(pk)
	if err != nil {
		return nil, err
	}
	var h crypto.Hash
	switch pk.Curve {
	case elliptic.P256():
		h = crypto.SHA256
	case elliptic.P384():
		h = crypto.SHA384
	case elliptic.P521():
		h = crypto.SHA512
	default:
		return nil, fmt.Errorf("unsupported ECDSA curve %s", pk.Curve.Params().Name)
	}
	es := &ecdsaSigner{cs: cs, pub: pub, hash: h}
	if b, ok := cs.(hsm.BoundSigner); ok {
		if rs, ok := b.ContextSigner.(rawSigner); ok {
			es.raw = func(digest []byte, h crypto.Hash) ([]byte, error) { return rs.SignRawContext(b.Ctx, digest, h) }
		}
	}
	return es, nil
}

func (s *ecdsaSigner) PublicKey() ssh.PublicKey { return s.pub }

func (s *ecdsaSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return s.SignWithAlgorithm(rand, data, "")
}

// SignWithAlgorithm signs with the key's own algorithm, the only one an
// ECDSA key has.
func (s *ecdsaSigner) SignWithAlgorithm(rand io.Reader, data []byte, alg string) (*ssh.Signature, error) {
	if alg != "" && alg != s.pub.Type() {
		return nil, fmt.Errorf("ssh: unsupported signature algorithm %q for key type %s", alg, s.pub.Type())
	}
	h := s.hash.New()
	h.Write(data)
	var blob []byte
	if s.raw != nil {
		rs, err := s.raw(h.Sum(nil), s.hash)
		if err != nil {
			return nil, err
		}
		if blob, err = sshECDSARawSignature(rs); err != nil {
			return nil, err
		}
	} else {
		der, err := s.cs.Sign(rand, h.Sum(nil), s.hash)
		if err != nil {
			return nil, err
		}
		if blob, err = sshECDSASignature(der); err != nil {
			return nil, err
		}
	}
	return &ssh.Signature{Format: s.pub.Type(), Blob: blob}, nil
}

// sshECDSARawSignature turns r||s (two halves of equal length, big-endian)
// into the SSH signature blob; r and s must not be zero.
func sshECDSARawSignature(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("sshca: ECDSA signature of %d bytes", len(raw))
	}
	r, s := trimZeros(raw[:len(raw)/2]), trimZeros(raw[len(raw)/2:])
	if len(r) == 0 || len(s) == 0 {
		return nil, errors.New("sshca: zero ECDSA signature integer")
	}
	out := make([]byte, 0, 8+2+len(r)+len(s))
	out = appendMpint(out, r)
	return appendMpint(out, s), nil
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// sshECDSASignature turns an ASN.1 ECDSA-Sig-Value into the SSH signature
// blob: mpint r, mpint s (RFC 5656 section 3.1.2). r and s must be positive.
func sshECDSASignature(der []byte) ([]byte, error) {
	var seq, r, s cryptobyte.String
	in := cryptobyte.String(der)
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1(&r, cbasn1.INTEGER) || !seq.ReadASN1(&s, cbasn1.INTEGER) || !seq.Empty() {
		return nil, errors.New("sshca: malformed ECDSA signature")
	}
	rb, err := positiveInt(r)
	if err != nil {
		return nil, err
	}
	sb, err := positiveInt(s)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 8+2+len(rb)+len(sb))
	out = appendMpint(out, rb)
	return appendMpint(out, sb), nil
}

// positiveInt returns the magnitude of a DER INTEGER (minimal encoding),
// without leading zeros; zero and negative values are errors.
func positiveInt(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0]&0x80 != 0 || (len(b) > 1 && b[0] == 0 && b[1]&0x80 == 0) {
		return nil, errors.New("sshca: malformed ECDSA signature integer")
	}
	if b = trimZeros(b); len(b) == 0 {
		return nil, errors.New("sshca: zero ECDSA signature integer")
	}
	return b, nil
}

// appendMpint appends a positive magnitude (no leading zeros) as an SSH mpint.
func appendMpint(out, mag []byte) []byte {
	n := len(mag)
	if mag[0]&0x80 != 0 {
		n++
	}
	out = binary.BigEndian.AppendUint32(out, uint32(n))
	if n > len(mag) {
		out = append(out, 0)
	}
	return append(out, mag...)
}

// signCert signs c with signer, whose public key in wire form is caBlob, and
// returns the certificate's authorized_keys line without the trailing
// newline. It does what ssh.Certificate.SignCert does for a
// MultiAlgorithmSigner (nonce unless c has a 32-byte one, signature key,
// the signer's first algorithm)
// and then ssh.MarshalAuthorizedKey, but marshals the certificate once,
// without reflection: the wire form is the signed bytes plus the signature.
//
// memo, if not nil, keeps the encoding of the options and extensions of the
// previous certificate for the next one (the certificates of a request
// usually share the role's); it belongs to one goroutine.
func signCert(rand io.Reader, signer ssh.MultiAlgorithmSigner, caBlob []byte, c *ssh.Certificate, memo *tuplesMemo) (string, error) {
	algs := signer.Algorithms()
	if len(algs) == 0 {
		return "", errors.New("sshca: the CA signer has no signature algorithm")
	}
	pub := signer.PublicKey()
	if _, ok := pub.(*ssh.Certificate); ok {
		return "", errors.New("sshca: a certificate cannot sign certificates")
	}
	if len(c.Nonce) != 32 { // the caller may have drawn it (with others, in one read)
		c.Nonce = make([]byte, 32)
		if _, err := io.ReadFull(rand, c.Nonce); err != nil {
			return "", fmt.Errorf("sshca: nonce: %w", err)
		}
	}
	c.SignatureKey = pub
	typ := c.Type()
	tbs := marshalTBS(c, typ, caBlob, memo)
	sig, err := signer.SignWithAlgorithm(rand, tbs, algs[0])
	if err != nil {
		return "", err
	}
	c.Signature = sig
	sigLen := 4 + len(sig.Format) + 4 + len(sig.Blob) + len(sig.Rest)
	wire := make([]byte, 0, len(tbs)+4+sigLen)
	wire = append(wire, tbs...)
	wire = binary.BigEndian.AppendUint32(wire, uint32(sigLen))
	wire = appendString(wire, sig.Format)
	wire = appendString(wire, string(sig.Blob))
	wire = append(wire, sig.Rest...)
	return authorizedKeyLine(typ, wire), nil
}

// marshalTBS is the part of c a CA signs (PROTOCOL.certkeys): everything up
// to, without, the signature; what ssh.Certificate.Marshal writes before it.
// typ is c.Type().
func marshalTBS(c *ssh.Certificate, typ string, caBlob []byte, memo *tuplesMemo) []byte {
	if memo == nil {
		memo = new(tuplesMemo)
	}
	opts, exts := memo.options.encode(c.CriticalOptions), memo.extensions.encode(c.Extensions)
	key := c.Key.Marshal()
	keyRest := key[4+binary.BigEndian.Uint32(key):] // drop the key type name
	b := make([]byte, 0, 128+len(typ)+len(key)+len(caBlob)+len(c.KeyId)+len(opts)+len(exts)+16*len(c.ValidPrincipals))
	b = appendString(b, typ)
	b = appendString(b, string(c.Nonce))
	b = append(b, keyRest...)
	b = binary.BigEndian.AppendUint64(b, c.Serial)
	b = binary.BigEndian.AppendUint32(b, c.CertType)
	b = appendString(b, c.KeyId)
	b = appendLengthPrefixed(b, func(b []byte) []byte {
		for _, p := range c.ValidPrincipals {
			b = appendString(b, p)
		}
		return b
	})
	b = binary.BigEndian.AppendUint64(b, c.ValidAfter)
	b = binary.BigEndian.AppendUint64(b, c.ValidBefore)
	b = appendString(b, string(opts))
	b = appendString(b, string(exts))
	b = appendString(b, string(c.Reserved))
	return appendString(b, string(caBlob))
}

// tuplesMemo keeps the wire form of the last critical options and
// extensions maps encoded, by map identity: a map reaching a certificate is
// never changed afterwards.
type tuplesMemo struct{ options, extensions tuplesWire }

type tuplesWire struct {
	p    unsafe.Pointer // the map's identity (and a reference keeping it alive)
	wire []byte
}

// encode returns the tuples of m (sorted by name) in wire form, without the
// outer length.
func (t *tuplesWire) encode(m map[string]string) []byte {
	if len(m) == 0 {
		return nil
	}
	if p := reflect.ValueOf(m).UnsafePointer(); p != t.p || t.wire == nil {
		t.p, t.wire = p, appendTuples(nil, m)
	}
	return t.wire
}

// appendTuples writes options or extensions sorted by name; a non-empty
// value is a string inside a string, an empty one an empty string.
func appendTuples(b []byte, m map[string]string) []byte {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b = appendString(b, k)
		if v := m[k]; v != "" {
			b = binary.BigEndian.AppendUint32(b, uint32(4+len(v)))
			b = appendString(b, v)
		} else {
			b = binary.BigEndian.AppendUint32(b, 0)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendLengthPrefixed appends what f writes as an SSH string.
func appendLengthPrefixed(b []byte, f func([]byte) []byte) []byte {
	at := len(b)
	b = append(b, 0, 0, 0, 0)
	b = f(b)
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

// authorizedKeyLine formats "TYPE BASE64" in one allocation (the string
// takes the buffer, as strings.Builder does: nothing else refers to it).
func authorizedKeyLine(typ string, wire []byte) string {
	enc := base64.StdEncoding
	b := make([]byte, len(typ)+1+enc.EncodedLen(len(wire)))
	copy(b, typ)
	b[len(typ)] = ' '
	enc.Encode(b[len(typ)+1:], wire)
	return unsafe.String(unsafe.SliceData(b), len(b))
}
