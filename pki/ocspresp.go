package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP responses are built here rather than by ocsp.CreateResponse because
// the latter cannot carry responseExtensions, where RFC 6960 4.4.1 (and
// RFC 8954) put the nonce that a client asked for: openssl ocsp checks it
// there. The structures are RFC 6960 4.2.1's.

// oidOCSPNonce is id-pkix-ocsp-nonce.
var oidOCSPNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}

// maxOCSPNonce bounds the nonce extension value echoed (RFC 8954 allows
// 1..32 octets of nonce; with its OCTET STRING header that is 34).
const maxOCSPNonce = 64

// ocspRequestNonce returns the raw value of a request's nonce extension, or
// nil when it has none (or one that is empty or too long: not echoed).
func ocspRequestNonce(der []byte) []byte {
	var req struct {
		TBSRequest struct {
			Version           int           `asn1:"explicit,tag:0,default:0,optional"`
			RequestorName     asn1.RawValue `asn1:"explicit,tag:1,optional"`
			RequestList       []asn1.RawValue
			RequestExtensions []pkix.Extension `asn1:"explicit,tag:2,optional"`
		}
		OptionalSignature asn1.RawValue `asn1:"explicit,tag:0,optional"`
	}
	if _, err := asn1.Unmarshal(der, &req); err != nil {
		return nil
	}
	for _, e := range req.TBSRequest.RequestExtensions {
		if e.Id.Equal(oidOCSPNonce) && len(e.Value) > 0 && len(e.Value) <= maxOCSPNonce {
			return e.Value
		}
	}
	return nil
}

type ocspCertID struct {
	HashAlgorithm pkix.AlgorithmIdentifier
	NameHash      []byte
	IssuerKeyHash []byte
	SerialNumber  *big.Int
}

type ocspRevokedInfo struct {
	RevocationTime time.Time       `asn1:"generalized"`
	Reason         asn1.Enumerated `asn1:"explicit,tag:0,optional"`
}

type ocspSingleResponse struct {
	CertID     ocspCertID
	Good       asn1.Flag       `asn1:"tag:0,optional"`
	Revoked    ocspRevokedInfo `asn1:"tag:1,optional"`
	Unknown    asn1.Flag       `asn1:"tag:2,optional"`
	ThisUpdate time.Time       `asn1:"generalized"`
	NextUpdate time.Time       `asn1:"generalized,explicit,tag:0,optional"`
}

type ocspResponseData struct {
	RawResponderID     asn1.RawValue
	ProducedAt         time.Time `asn1:"generalized"`
	Responses          []ocspSingleResponse
	ResponseExtensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

type ocspBasicResponse struct {
	TBSResponseData    asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          asn1.BitString
	Certificates       []asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

var (
	oidOCSPBasic  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	oidHashOIDs   = map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA1: {1, 3, 14, 3, 2, 26}, crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1}, crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2}, crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3}}
	oidECDSA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidRSA256     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidEd25519Sig = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// ocspSigningParams picks the signature algorithm for a responder key.
func ocspSigningParams(pub crypto.PublicKey) (crypto.Hash, pkix.AlgorithmIdentifier, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return crypto.SHA384, pkix.AlgorithmIdentifier{Algorithm: oidECDSA384}, nil
		}
		return crypto.SHA256, pkix.AlgorithmIdentifier{Algorithm: oidECDSA256}, nil
	case *rsa.PublicKey:
		return crypto.SHA256, pkix.AlgorithmIdentifier{Algorithm: oidRSA256, Parameters: asn1.NullRawValue}, nil
	case ed25519.PublicKey:
		return crypto.Hash(0), pkix.AlgorithmIdentifier{Algorithm: oidEd25519Sig}, nil
	}
	return 0, pkix.AlgorithmIdentifier{}, fmt.Errorf("pki: OCSP responder key of type %T", pub)
}

// createOCSPResponse signs a successful basic OCSP response for one
// certificate, as ocsp.CreateResponse does (same fields, same certID from
// the issuer), plus, when nonce is set, the nonce extension in
// responseExtensions. producedAt is now.
func createOCSPResponse(issuer, responder *x509.Certificate, t ocsp.Response, nonce []byte, now time.Time, signer crypto.Signer) ([]byte, error) {
	hashOID, ok := oidHashOIDs[t.IssuerHash]
	if !ok {
		return nil, fmt.Errorf("pki: OCSP issuer hash %v", t.IssuerHash)
	}
	nameHash, keyHash, err := issuerHashes(issuer, t.IssuerHash)
	if err != nil {
		return nil, err
	}
	single := ocspSingleResponse{
		CertID: ocspCertID{
			HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: hashOID, Parameters: asn1.NullRawValue},
			NameHash:      nameHash, IssuerKeyHash: keyHash, SerialNumber: t.SerialNumber,
		},
		ThisUpdate: t.ThisUpdate.UTC(),
		NextUpdate: t.NextUpdate.UTC(),
	}
	switch t.Status {
	case ocsp.Good:
		single.Good = true
	case ocsp.Revoked:
		single.Revoked = ocspRevokedInfo{RevocationTime: t.RevokedAt.UTC(), Reason: asn1.Enumerated(t.RevocationReason)}
	default:
		single.Unknown = true
	}
	data := ocspResponseData{
		RawResponderID: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: responder.RawSubject},
		ProducedAt:     now.UTC().Truncate(time.Second),
		Responses:      []ocspSingleResponse{single},
	}
	if nonce != nil {
		data.ResponseExtensions = []pkix.Extension{{Id: oidOCSPNonce, Value: nonce}}
	}
	tbs, err := asn1.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("pki: OCSP response data: %v", err)
	}
	hash, alg, err := ocspSigningParams(signer.Public())
	if err != nil {
		return nil, err
	}
	digest, opts := tbs, crypto.SignerOpts(crypto.Hash(0))
	if hash != 0 {
		h := hash.New()
		h.Write(tbs)
		digest, opts = h.Sum(nil), hash
	}
	sig, err := signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, err
	}
	basic := ocspBasicResponse{
		TBSResponseData:    asn1.RawValue{FullBytes: tbs},
		SignatureAlgorithm: alg,
		Signature:          asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	}
	if t.Certificate != nil {
		basic.Certificates = []asn1.RawValue{{FullBytes: t.Certificate.Raw}}
	}
	basicDER, err := asn1.Marshal(basic)
	if err != nil {
		return nil, fmt.Errorf("pki: OCSP basic response: %v", err)
	}
	type responseBytes struct {
		ResponseType asn1.ObjectIdentifier
		Response     []byte
	}
	return asn1.Marshal(struct {
		Status   asn1.Enumerated
		Response responseBytes `asn1:"explicit,tag:0,optional"`
	}{Status: asn1.Enumerated(ocsp.Success), Response: responseBytes{ResponseType: oidOCSPBasic, Response: basicDER}})
}
