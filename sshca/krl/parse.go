package krl

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"time"
)

type reader struct{ b []byte }

func (r *reader) empty() bool { return len(r.b) == 0 }

func (r *reader) u8() (byte, error) {
	if len(r.b) < 1 {
		return 0, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v, nil
}

func (r *reader) u32() (uint32, error) {
	if len(r.b) < 4 {
		return 0, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v, nil
}

func (r *reader) u64() (uint64, error) {
	if len(r.b) < 8 {
		return 0, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v, nil
}

func (r *reader) str() ([]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: string of %d bytes, %d left", ErrMalformed, n, len(r.b))
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, nil
}

// maxSerials bounds how many serials Parse expands from bitmaps, so that a
// hostile KRL cannot make it allocate without limit.
const maxBitmapBytes = 2049

// Parse decodes a binary KRL. Byte slices in the result alias data.
func Parse(data []byte) (*KRL, error) {
	if len(data) < len(Magic) || string(data[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	r := &reader{b: data[len(Magic):]}
	ver, err := r.u32()
	if err != nil {
		return nil, err
	}
	if ver != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d", ErrMalformed, ver)
	}
	k := &KRL{}
	var date uint64
	if k.Version, err = r.u64(); err != nil {
		return nil, err
	}
	if date, err = r.u64(); err != nil {
		return nil, err
	}
	if date > 1<<40 {
		return nil, fmt.Errorf("%w: generated date %d", ErrMalformed, date)
	}
	k.GeneratedDate = time.Unix(int64(date), 0).UTC()
	if k.Flags, err = r.u64(); err != nil {
		return nil, err
	}
	if _, err = r.str(); err != nil { // reserved
		return nil, err
	}
	comment, err := r.str()
	if err != nil {
		return nil, err
	}
	k.Comment = string(comment)
	sigSeen := false
	for !r.empty() {
		t, err := r.u8()
		if err != nil {
			return nil, err
		}
		body, err := r.str()
		if err != nil {
			return nil, err
		}
		if t == sectionSignature {
			// signature_key was body; the signature itself follows.
			if _, err := r.str(); err != nil {
				return nil, err
			}
			sigSeen = true
			continue
		}
		if sigSeen {
			return nil, fmt.Errorf("%w: section %d after a signature", ErrMalformed, t)
		}
		if err := k.parseSection(t, body); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (k *KRL) parseSection(t byte, body []byte) error {
	br := &reader{b: body}
	switch t {
	case sectionCertificates:
		s, err := parseCertSection(br)
		if err != nil {
			return err
		}
		k.Certs = append(k.Certs, s)
		return nil
	case sectionExplicitKey, sectionFingerprintSHA1, sectionFingerprintSHA256:
		if br.empty() {
			return fmt.Errorf("%w: empty key section %d", ErrMalformed, t)
		}
		for !br.empty() {
			blob, err := br.str()
			if err != nil {
				return err
			}
			switch {
			case t == sectionFingerprintSHA1 && len(blob) != 20,
				t == sectionFingerprintSHA256 && len(blob) != 32:
				return fmt.Errorf("%w: hash of %d bytes in section %d", ErrMalformed, len(blob), t)
			}
			switch t {
			case sectionExplicitKey:
				k.ExplicitKeys = append(k.ExplicitKeys, blob)
			case sectionFingerprintSHA1:
				k.SHA1 = append(k.SHA1, blob)
			default:
				k.SHA256 = append(k.SHA256, blob)
			}
		}
		return nil
	case sectionExtension:
		return parseExtension(br)
	}
	return fmt.Errorf("%w: unknown section type %d", ErrMalformed, t)
}

// parseExtension accepts a non-critical extension (ignored) and refuses a critical one.
func parseExtension(r *reader) error {
	name, err := r.str()
	if err != nil {
		return err
	}
	crit, err := r.u8()
	if err != nil {
		return err
	}
	if _, err := r.str(); err != nil {
		return err
	}
	if !r.empty() {
		return fmt.Errorf("%w: trailing data in extension %q", ErrMalformed, name)
	}
	if crit != 0 {
		return fmt.Errorf("%w: unsupported critical extension %q", ErrMalformed, name)
	}
	return nil
}

func parseCertSection(r *reader) (CertSection, error) {
	var s CertSection
	ca, err := r.str()
	if err != nil {
		return s, err
	}
	if len(ca) > 0 {
		s.CAKey = ca
	}
	if _, err := r.str(); err != nil { // reserved
		return s, err
	}
	for !r.empty() {
		t, err := r.u8()
		if err != nil {
			return s, err
		}
		body, err := r.str()
		if err != nil {
			return s, err
		}
		if err := s.parseSub(t, &reader{b: body}); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (s *CertSection) parseSub(t byte, r *reader) error {
	switch t {
	case certSectionSerialList:
		for !r.empty() {
			v, err := r.u64()
			if err != nil {
				return err
			}
			if v == 0 {
				return fmt.Errorf("%w: serial 0 in list", ErrMalformed)
			}
			s.Serials = append(s.Serials, SerialRange{v, v})
		}
	case certSectionSerialRange:
		lo, err := r.u64()
		if err != nil {
			return err
		}
		hi, err := r.u64()
		if err != nil {
			return err
		}
		if lo == 0 || lo > hi {
			return fmt.Errorf("%w: serial range %d-%d", ErrMalformed, lo, hi)
		}
		s.Serials = append(s.Serials, SerialRange{lo, hi})
	case certSectionSerialBitmap:
		return s.parseBitmap(r)
	case certSectionKeyID:
		if r.empty() {
			return fmt.Errorf("%w: empty key ID section", ErrMalformed)
		}
		for !r.empty() {
			id, err := r.str()
			if err != nil {
				return err
			}
			s.KeyIDs = append(s.KeyIDs, string(id))
		}
	case certSectionExtension:
		return parseExtension(r)
	default:
		return fmt.Errorf("%w: unknown certificate section type %#x", ErrMalformed, t)
	}
	if !r.empty() {
		return fmt.Errorf("%w: trailing data in certificate section %#x", ErrMalformed, t)
	}
	return nil
}

func (s *CertSection) parseBitmap(r *reader) error {
	off, err := r.u64()
	if err != nil {
		return err
	}
	mag, err := r.str()
	if err != nil {
		return err
	}
	if !r.empty() {
		return fmt.Errorf("%w: trailing data in bitmap section", ErrMalformed)
	}
	if len(mag) > maxBitmapBytes {
		return fmt.Errorf("%w: bitmap of %d bytes", ErrMalformed, len(mag))
	}
	if len(mag) > 0 && mag[0]&0x80 != 0 {
		return fmt.Errorf("%w: negative bitmap", ErrMalformed)
	}
	n := new(big.Int).SetBytes(mag)
	bits := n.BitLen()
	if bits > 0 && off+uint64(bits-1) < off {
		return fmt.Errorf("%w: bitmap wraps past 2^64", ErrMalformed)
	}
	for i := 0; i < bits; {
		if n.Bit(i) == 0 {
			i++
			continue
		}
		j := i
		for j+1 < bits && n.Bit(j+1) == 1 {
			j++
		}
		lo, hi := off+uint64(i), off+uint64(j)
		if lo == 0 {
			return fmt.Errorf("%w: serial 0 in bitmap", ErrMalformed)
		}
		s.Serials = append(s.Serials, SerialRange{lo, hi})
		i = j + 1
	}
	return nil
}
