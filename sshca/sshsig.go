package sshca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ssh"
)

// ecdsaSigner is an ssh.AlgorithmSigner for an ECDSA CA key. It does what
// ssh.NewSignerFromSigner does for ECDSA (hash, sign, turn the ASN.1
// signature into the SSH r, s mpints) without encoding/asn1's reflection and
// math/big, which showed in the ssh-sign profile.
type ecdsaSigner struct {
	cs   crypto.Signer
	pub  ssh.PublicKey
	hash crypto.Hash
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
	return &ecdsaSigner{cs: cs, pub: pub, hash: h}, nil
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
	der, err := s.cs.Sign(rand, h.Sum(nil), s.hash)
	if err != nil {
		return nil, err
	}
	blob, err := sshECDSASignature(der)
	if err != nil {
		return nil, err
	}
	return &ssh.Signature{Format: s.pub.Type(), Blob: blob}, nil
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
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) == 0 {
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

// capturingSigner remembers the bytes a certificate signature covers, so
// that the signed certificate's wire form is those bytes plus the signature,
// not a second ssh.Certificate.Marshal.
type capturingSigner struct {
	ssh.MultiAlgorithmSigner
	tbs []byte
}

func (c *capturingSigner) SignWithAlgorithm(rand io.Reader, data []byte, alg string) (*ssh.Signature, error) {
	sig, err := c.MultiAlgorithmSigner.SignWithAlgorithm(rand, data, alg)
	if err == nil {
		c.tbs = data
	}
	return sig, err
}

// signCert signs c with signer and returns its authorized_keys line
// (without the trailing newline), what ssh.MarshalAuthorizedKey gives.
func signCert(rand io.Reader, signer ssh.MultiAlgorithmSigner, c *ssh.Certificate) (string, error) {
	cs := &capturingSigner{MultiAlgorithmSigner: signer}
	if err := c.SignCert(rand, cs); err != nil {
		return "", err
	}
	if cs.tbs == nil || c.Signature == nil {
		return authorizedKeyLine(c.Type(), c.Marshal()), nil
	}
	// The wire form is the signed bytes followed by the signature as an SSH
	// string (ssh.Certificate.Marshal; bytesForSigning drops that string).
	sig := c.Signature
	sigLen := 4 + len(sig.Format) + 4 + len(sig.Blob) + len(sig.Rest)
	wire := make([]byte, 0, len(cs.tbs)+4+sigLen)
	wire = append(wire, cs.tbs...)
	wire = binary.BigEndian.AppendUint32(wire, uint32(sigLen))
	wire = binary.BigEndian.AppendUint32(wire, uint32(len(sig.Format)))
	wire = append(wire, sig.Format...)
	wire = binary.BigEndian.AppendUint32(wire, uint32(len(sig.Blob)))
	wire = append(wire, sig.Blob...)
	wire = append(wire, sig.Rest...)
	return authorizedKeyLine(c.Type(), wire), nil
}

// authorizedKeyLine formats "TYPE BASE64" in one allocation.
func authorizedKeyLine(typ string, wire []byte) string {
	enc := base64.StdEncoding
	b := make([]byte, len(typ)+1+enc.EncodedLen(len(wire)))
	copy(b, typ)
	b[len(typ)] = ' '
	enc.Encode(b[len(typ)+1:], wire)
	return string(b)
}
