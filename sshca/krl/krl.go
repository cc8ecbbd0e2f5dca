// Package krl reads and writes OpenSSH key revocation lists (KRLs), the
// binary format of OpenSSH's PROTOCOL.krl that sshd loads with RevokedKeys
// and that `ssh-keygen -Q` checks keys against.
//
// A KRL revokes certificates by (CA key, serial), by (CA key, serial range),
// by (CA key or any CA, key ID), and plain keys by their full public key blob
// or by the SHA-1 / SHA-256 hash of that blob. A revoked plain key also
// revokes every certificate for it, and a revoked CA key every certificate it
// signed, exactly as OpenSSH's krl.c checks them (see IsRevoked).
//
// The writer (Marshal) emits a canonical encoding: serials are merged into
// sorted, disjoint ranges and each run is written as whichever of a serial
// list, a serial range or a serial bitmap section is smallest; key IDs,
// explicit keys and fingerprints are sorted and deduplicated (fingerprint
// sections must be in numeric order). Marshal never writes signature sections:
// OpenSSH >= 9.4 refuses signed KRLs, and ours is delivered over TLS.
//
// Parse accepts everything PROTOCOL.krl defines. Non-critical extension
// sections are skipped, critical ones are an error (as the spec requires),
// and signature sections are skipped unverified: the KRL is trusted through
// the channel it came by.
package krl

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"slices"
	"sort"
	"time"

	"golang.org/x/crypto/ssh"
)

// Magic is the first 8 bytes of every KRL.
const Magic = "SSHKRL\n\x00"

// FormatVersion is the only KRL format version.
const FormatVersion = 1

// Section types (PROTOCOL.krl §1, §2).
const (
	sectionCertificates      = 1
	sectionExplicitKey       = 2
	sectionFingerprintSHA1   = 3
	sectionSignature         = 4
	sectionFingerprintSHA256 = 5
	sectionExtension         = 255

	certSectionSerialList   = 0x20
	certSectionSerialRange  = 0x21
	certSectionSerialBitmap = 0x22
	certSectionKeyID        = 0x23
	certSectionExtension    = 0x39
)

// maxBitmapBits bounds one bitmap section. OpenSSH reads the bitmap as an
// mpint of at most 16384 bits (SSHBUF_MAX_BIGNUM); stay well below.
const maxBitmapBits = 8192

// ErrMalformed is returned (wrapped) by Parse for any input that is not a valid KRL.
var ErrMalformed = errors.New("krl: malformed")

// SerialRange is an inclusive range of certificate serial numbers, Lo <= Hi.
type SerialRange struct{ Lo, Hi uint64 }

// CertSection revokes certificates signed by one CA key.
type CertSection struct {
	// CAKey is the CA's public key in SSH wire format; empty means the
	// section applies to certificates from any CA (useful for key IDs).
	CAKey []byte
	// Serials are the revoked serial numbers. Serial 0 is never revoked by
	// serial (OpenSSH ignores it); Normalize drops it.
	Serials []SerialRange
	// KeyIDs are revoked certificate key IDs.
	KeyIDs []string
}

// KRL is a key revocation list.
type KRL struct {
	// Version increases each time the KRL is modified.
	Version uint64
	// GeneratedDate is when the KRL was generated (whole seconds are written).
	GeneratedDate time.Time
	// Flags: none are defined.
	Flags uint64
	// Comment is free text.
	Comment string
	// Certs holds at most one section per CA key after Normalize.
	Certs []CertSection
	// ExplicitKeys are plain public keys in SSH wire format.
	ExplicitKeys [][]byte
	// SHA1 and SHA256 are hashes of plain public key blobs.
	SHA1   [][]byte
	SHA256 [][]byte
}

// RevokeSerial revokes the certificate with this serial signed by ca.
func (k *KRL) RevokeSerial(ca ssh.PublicKey, serial uint64) {
	k.RevokeSerialRange(ca, serial, serial)
}

// RevokeSerialRange revokes serials lo..hi (inclusive) signed by ca.
func (k *KRL) RevokeSerialRange(ca ssh.PublicKey, lo, hi uint64) {
	if lo > hi {
		lo, hi = hi, lo
	}
	s := k.section(ca)
	s.Serials = append(s.Serials, SerialRange{lo, hi})
}

// RevokeKeyID revokes certificates with this key ID signed by ca; a nil ca
// revokes the key ID for every CA.
func (k *KRL) RevokeKeyID(ca ssh.PublicKey, keyID string) {
	s := k.section(ca)
	s.KeyIDs = append(s.KeyIDs, keyID)
}

// RevokeKey revokes a plain key (and every certificate for it) by its full
// blob. A certificate is reduced to its plain key.
func (k *KRL) RevokeKey(key ssh.PublicKey) {
	k.ExplicitKeys = append(k.ExplicitKeys, plainBlob(key))
}

// RevokeKeySHA256 revokes a plain key (and every certificate for it) by the
// SHA-256 hash of its blob.
func (k *KRL) RevokeKeySHA256(key ssh.PublicKey) {
	h := sha256.Sum256(plainBlob(key))
	k.SHA256 = append(k.SHA256, h[:])
}

// RevokeSHA256 revokes the plain key whose blob hashes to sum (32 bytes,
// as in a "SHA256:..." fingerprint).
func (k *KRL) RevokeSHA256(sum []byte) {
	k.SHA256 = append(k.SHA256, bytes.Clone(sum))
}

func (k *KRL) section(ca ssh.PublicKey) *CertSection {
	var blob []byte
	if ca != nil {
		blob = plainBlob(ca)
	}
	for i := range k.Certs {
		if bytes.Equal(k.Certs[i].CAKey, blob) {
			return &k.Certs[i]
		}
	}
	k.Certs = append(k.Certs, CertSection{CAKey: blob})
	return &k.Certs[len(k.Certs)-1]
}

// plainBlob is the wire form of key, with a certificate reduced to its key.
func plainBlob(key ssh.PublicKey) []byte {
	if c, ok := key.(*ssh.Certificate); ok {
		key = c.Key
	}
	return key.Marshal()
}

// Normalize puts k in canonical form: one section per CA key (sections with
// nothing revoked dropped, CA keys sorted, the any-CA section first), serial
// ranges merged and sorted with serial 0 dropped, and key IDs, keys and hashes
// sorted and deduplicated.
func (k *KRL) Normalize() {
	merged := map[string]*CertSection{}
	var order []string
	for _, s := range k.Certs {
		key := string(s.CAKey)
		m, ok := merged[key]
		if !ok {
			m = &CertSection{CAKey: bytes.Clone(s.CAKey)}
			merged[key] = m
			order = append(order, key)
		}
		m.Serials = append(m.Serials, s.Serials...)
		m.KeyIDs = append(m.KeyIDs, s.KeyIDs...)
	}
	sort.Strings(order)
	k.Certs = k.Certs[:0]
	for _, key := range order {
		s := merged[key]
		s.Serials = mergeRanges(s.Serials)
		slices.Sort(s.KeyIDs)
		s.KeyIDs = slices.Compact(s.KeyIDs)
		if len(s.Serials) == 0 && len(s.KeyIDs) == 0 {
			continue
		}
		k.Certs = append(k.Certs, *s)
	}
	if len(k.Certs) == 0 {
		k.Certs = nil
	}
	k.ExplicitKeys = sortBlobs(k.ExplicitKeys)
	k.SHA1 = sortBlobs(k.SHA1)
	k.SHA256 = sortBlobs(k.SHA256)
}

func mergeRanges(in []SerialRange) []SerialRange {
	rs := make([]SerialRange, 0, len(in))
	for _, r := range in {
		if r.Lo > r.Hi {
			r.Lo, r.Hi = r.Hi, r.Lo
		}
		if r.Lo == 0 {
			if r.Hi == 0 {
				continue
			}
			r.Lo = 1
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b SerialRange) int {
		switch {
		case a.Lo < b.Lo:
			return -1
		case a.Lo > b.Lo:
			return 1
		}
		return 0
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].Hi == ^uint64(0) || r.Lo <= out[n-1].Hi+1) {
			if r.Hi > out[n-1].Hi {
				out[n-1].Hi = r.Hi
			}
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sortBlobs sorts like OpenSSH's blob_cmp (memcmp, then shorter first) and deduplicates.
func sortBlobs(in [][]byte) [][]byte {
	slices.SortFunc(in, bytes.Compare)
	in = slices.CompactFunc(in, bytes.Equal)
	if len(in) == 0 {
		return nil
	}
	return in
}

// IsRevoked reports whether key (a plain key or a certificate) is revoked by
// k, with the checks of OpenSSH's ssh_krl_check_key: the plain key by blob or
// hash; for a certificate also its CA key by blob or hash, and its key ID and
// (nonzero) serial in the sections of its CA and of any CA.
func (k *KRL) IsRevoked(key ssh.PublicKey) bool {
	if k.plainRevoked(plainBlob(key)) {
		return true
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return false
	}
	ca := plainBlob(cert.SignatureKey)
	if k.plainRevoked(ca) {
		return true
	}
	for _, s := range k.Certs {
		if len(s.CAKey) != 0 && !bytes.Equal(s.CAKey, ca) {
			continue
		}
		if slices.Contains(s.KeyIDs, cert.KeyId) {
			return true
		}
		if cert.Serial == 0 {
			continue
		}
		for _, r := range s.Serials {
			if r.Lo <= cert.Serial && cert.Serial <= r.Hi {
				return true
			}
		}
	}
	return false
}

func (k *KRL) plainRevoked(blob []byte) bool {
	if slices.ContainsFunc(k.ExplicitKeys, func(b []byte) bool { return bytes.Equal(b, blob) }) {
		return true
	}
	if len(k.SHA1) > 0 {
		h := sha1.Sum(blob)
		if slices.ContainsFunc(k.SHA1, func(b []byte) bool { return bytes.Equal(b, h[:]) }) {
			return true
		}
	}
	if len(k.SHA256) > 0 {
		h := sha256.Sum256(blob)
		if slices.ContainsFunc(k.SHA256, func(b []byte) bool { return bytes.Equal(b, h[:]) }) {
			return true
		}
	}
	return false
}
