package acme

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"
)

// minRSABits is the smallest RSA account key accepted.
const minRSABits = 2048

// JWS is a parsed flattened JWS (RFC 7515 7.2.2) as RFC 8555 6.2 allows it:
// one signature, a protected header only, no unprotected "header".
type JWS struct {
	Header    Header
	Payload   []byte // decoded; empty for POST-as-GET
	Signature []byte
	// signingInput is protected "." payload, as received.
	signingInput []byte
	// JWK is the parsed "jwk" header (nil when "kid" is used).
	JWK *jose.JSONWebKey
}

// Header is the protected header.
type Header struct {
	Alg   string          `json:"alg"`
	Nonce string          `json:"nonce"`
	URL   string          `json:"url"`
	KID   string          `json:"kid"`
	JWK   json.RawMessage `json:"jwk"`
	Crit  []string        `json:"crit"`
	B64   *bool           `json:"b64"`
}

// flattened is the wire form; any other member is refused.
type flattened struct {
	Protected string `json:"protected"`
	Payload   string `json:"payload"`
	Signature string `json:"signature"`
}

var b64 = base64.RawURLEncoding

// ParseJWS parses a flattened JWS with an ACME protected header. It checks
// the form (one signature, protected header only, exactly one of jwk and
// kid, a known algorithm matching the key) but not the signature: that is
// Verify's job once the key is known. Errors are *Problem.
func ParseJWS(body []byte) (*JWS, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var f flattened
	if err := dec.Decode(&f); err != nil {
		return nil, errMalformed("request body is not a flattened JWS: %s", truncate(err.Error()))
	}
	if dec.More() {
		return nil, errMalformed("trailing data after the JWS")
	}
	if f.Protected == "" || f.Signature == "" {
		return nil, errMalformed("JWS without protected header or signature")
	}
	ph, err := b64.DecodeString(f.Protected)
	if err != nil {
		return nil, errMalformed("protected header is not base64url")
	}
	payload, err := b64.DecodeString(f.Payload)
	if err != nil {
		return nil, errMalformed("payload is not base64url")
	}
	sig, err := b64.DecodeString(f.Signature)
	if err != nil {
		return nil, errMalformed("signature is not base64url")
	}
	j := &JWS{Payload: payload, Signature: sig, signingInput: []byte(f.Protected + "." + f.Payload)}
	if err := json.Unmarshal(ph, &j.Header); err != nil {
		return nil, errMalformed("protected header: %s", truncate(err.Error()))
	}
	h := &j.Header
	if len(h.Crit) > 0 || h.B64 != nil {
		return nil, errMalformed("crit and b64 are not supported")
	}
	if h.URL == "" {
		return nil, errMalformed("protected header has no url")
	}
	hasJWK := len(h.JWK) > 0 && !bytes.Equal(h.JWK, []byte("null"))
	if hasJWK == (h.KID != "") {
		return nil, errMalformed("the protected header needs exactly one of jwk and kid")
	}
	switch h.Alg {
	case "ES256", "ES384", "RS256", "EdDSA":
	default:
		return nil, errBadSigAlg("algorithm %q is not accepted", truncate(h.Alg))
	}
	if hasJWK {
		k, err := parseJWK(h.JWK)
		if err != nil {
			return nil, err
		}
		if err := checkKeyAlg(k.Key, h.Alg); err != nil {
			return nil, err
		}
		j.JWK = k
	}
	return j, nil
}

// parseJWK parses a public account key of an accepted type.
func parseJWK(raw []byte) (*jose.JSONWebKey, error) {
	k := new(jose.JSONWebKey)
	if err := k.UnmarshalJSON(raw); err != nil {
		return nil, errBadPublicKey("jwk: %s", truncate(err.Error()))
	}
	if !k.Valid() || !k.IsPublic() {
		return nil, errBadPublicKey("jwk is not a valid public key")
	}
	switch p := k.Key.(type) {
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() && p.Curve != elliptic.P384() {
			return nil, errBadPublicKey("EC keys must be P-256 or P-384")
		}
	case *rsa.PublicKey:
		if p.N.BitLen() < minRSABits {
			return nil, errBadPublicKey("RSA keys must have at least %d bits", minRSABits)
		}
		if p.E < 3 || p.E%2 == 0 {
			return nil, errBadPublicKey("RSA public exponent")
		}
	case ed25519.PublicKey:
	default:
		return nil, errBadPublicKey("key type %T is not accepted", k.Key)
	}
	return k, nil
}

// checkKeyAlg says whether alg goes with the key.
func checkKeyAlg(key any, alg string) error {
	ok := false
	switch p := key.(type) {
	case *ecdsa.PublicKey:
		ok = (alg == "ES256" && p.Curve == elliptic.P256()) || (alg == "ES384" && p.Curve == elliptic.P384())
	case *rsa.PublicKey:
		ok = alg == "RS256"
	case ed25519.PublicKey:
		ok = alg == "EdDSA"
	}
	if !ok {
		return errBadSigAlg("algorithm %q does not go with the key", alg)
	}
	return nil
}

// Verify checks the signature with key (the jwk of the header, or the
// account's key for kid).
func (j *JWS) Verify(key any) error {
	if err := checkKeyAlg(key, j.Header.Alg); err != nil {
		return err
	}
	if !verifySig(key, j.Header.Alg, j.signingInput, j.Signature) {
		return errMalformed("JWS signature is invalid")
	}
	return nil
}

func verifySig(key any, alg string, in, sig []byte) bool {
	switch p := key.(type) {
	case *ecdsa.PublicKey:
		var d []byte
		var n int
		switch alg {
		case "ES256":
			s := sha256.Sum256(in)
			d, n = s[:], 32
		case "ES384":
			s := sha512.Sum384(in)
			d, n = s[:], 48
		default:
			return false
		}
		if len(sig) != 2*n {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		return ecdsa.Verify(p, d, r, s)
	case *rsa.PublicKey:
		s := sha256.Sum256(in)
		return alg == "RS256" && rsa.VerifyPKCS1v15(p, crypto.SHA256, s[:], sig) == nil
	case ed25519.PublicKey:
		return alg == "EdDSA" && len(sig) == ed25519.SignatureSize && ed25519.Verify(p, in, sig)
	}
	return false
}

// verifyMAC checks an HMAC JWS (External Account Binding) with key, in constant time.
func (j *JWS) verifyMAC(key []byte) bool {
	var h func() hash.Hash
	switch j.Header.Alg {
	case "HS256":
		h = sha256.New
	case "HS384":
		h = sha512.New384
	case "HS512":
		h = sha512.New
	default:
		return false
	}
	m := hmac.New(h, key)
	m.Write(j.signingInput)
	return hmac.Equal(m.Sum(nil), j.Signature)
}

// parseEAB parses the externalAccountBinding member of newAccount: a
// flattened JWS with an HMAC alg, a kid, a url and no nonce (RFC 8555 7.3.4).
func parseEAB(raw json.RawMessage) (*JWS, error) {
	var f flattened
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, errMalformed("externalAccountBinding is not a flattened JWS")
	}
	ph, err1 := b64.DecodeString(f.Protected)
	payload, err2 := b64.DecodeString(f.Payload)
	sig, err3 := b64.DecodeString(f.Signature)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, errMalformed("externalAccountBinding: bad base64url")
	}
	j := &JWS{Payload: payload, Signature: sig, signingInput: []byte(f.Protected + "." + f.Payload)}
	if err := json.Unmarshal(ph, &j.Header); err != nil {
		return nil, errMalformed("externalAccountBinding: protected header")
	}
	h := j.Header
	if h.KID == "" || h.URL == "" || h.Nonce != "" || len(h.JWK) > 0 || len(h.Crit) > 0 || h.B64 != nil {
		return nil, errMalformed("externalAccountBinding: header needs kid and url, and no nonce or jwk")
	}
	switch h.Alg {
	case "HS256", "HS384", "HS512":
	default:
		return nil, errBadSigAlg("externalAccountBinding: algorithm %q (want HS256, HS384 or HS512)", truncate(h.Alg))
	}
	return j, nil
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of k, base64url.
func thumbprint(k *jose.JSONWebKey) (string, error) {
	t, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", errBadPublicKey("thumbprint: %v", err)
	}
	return b64.EncodeToString(t), nil
}

// truncate bounds caller text quoted in problems and logs.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// keyThumbprint is the RFC 7638 thumbprint of a public key (of a CSR or a certificate).
func keyThumbprint(pub any) (string, error) {
	return thumbprint(&jose.JSONWebKey{Key: pub})
}
