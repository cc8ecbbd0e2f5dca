package krl

import (
	"encoding/binary"
	"math/big"
)

type buf []byte

func (b *buf) u8(v byte)    { *b = append(*b, v) }
func (b *buf) u32(v uint32) { *b = binary.BigEndian.AppendUint32(*b, v) }
func (b *buf) u64(v uint64) { *b = binary.BigEndian.AppendUint64(*b, v) }
func (b *buf) str(s []byte) { b.u32(uint32(len(s))); *b = append(*b, s...) }
func (b *buf) section(t byte, body []byte) {
	b.u8(t)
	b.str(body)
}

// Marshal returns the binary KRL. It normalises k first (see Normalize).
func (k *KRL) Marshal() []byte {
	k.Normalize()
	var b buf
	b = append(b, Magic...)
	b.u32(FormatVersion)
	b.u64(k.Version)
	var date uint64
	if !k.GeneratedDate.IsZero() && k.GeneratedDate.Unix() > 0 {
		date = uint64(k.GeneratedDate.Unix())
	}
	b.u64(date)
	b.u64(k.Flags)
	b.str(nil) // reserved
	b.str([]byte(k.Comment))
	for _, s := range k.Certs {
		b.section(sectionCertificates, s.marshal())
	}
	for _, list := range []struct {
		t     byte
		blobs [][]byte
	}{
		{sectionExplicitKey, k.ExplicitKeys},
		{sectionFingerprintSHA1, k.SHA1},
		{sectionFingerprintSHA256, k.SHA256},
	} {
		if len(list.blobs) == 0 {
			continue
		}
		var body buf
		for _, bl := range list.blobs {
			body.str(bl)
		}
		b.section(list.t, body)
	}
	return b
}

// marshal encodes one certificate section: header, serial subsections, key IDs.
func (s *CertSection) marshal() []byte {
	var b buf
	b.str(s.CAKey)
	b.str(nil) // reserved
	var list buf
	rs := s.Serials
	for i := 0; i < len(rs); {
		if j, ok := bestBitmap(rs, i); ok {
			b.section(certSectionSerialBitmap, bitmapBody(rs[i:j+1]))
			i = j + 1
			continue
		}
		if r := rs[i]; r.Hi > r.Lo {
			var body buf
			body.u64(r.Lo)
			body.u64(r.Hi)
			b.section(certSectionSerialRange, body)
		} else {
			list.u64(r.Lo)
		}
		i++
	}
	if len(list) > 0 {
		b.section(certSectionSerialList, list)
	}
	if len(s.KeyIDs) > 0 {
		var body buf
		for _, id := range s.KeyIDs {
			body.str([]byte(id))
		}
		b.section(certSectionKeyID, body)
	}
	return b
}

// sectionOverhead is the type byte and length of a subsection.
const sectionOverhead = 5

// plainCost is the number of bytes r costs outside a bitmap: 8 in the shared
// serial list if it is one serial, a range section otherwise.
func plainCost(r SerialRange) uint64 {
	if r.Hi == r.Lo {
		return 8
	}
	return sectionOverhead + 16
}

// bestBitmap finds the run rs[i..j] that saves the most bytes when written
// as one bitmap section rather than as lists and ranges; ok is false when no
// run starting at i saves anything.
func bestBitmap(rs []SerialRange, i int) (best int, ok bool) {
	lo := rs[i].Lo
	var plain uint64
	var saving uint64
	for j := i; j < len(rs); j++ {
		span := rs[j].Hi - lo
		if span >= maxBitmapBits {
			break
		}
		plain += plainCost(rs[j])
		// offset, mpint length, at most one leading zero byte, the bits.
		bitmap := sectionOverhead + 8 + 4 + 1 + (span+1+7)/8
		if plain > bitmap && plain-bitmap > saving {
			saving, best, ok = plain-bitmap, j, true
		}
	}
	return best, ok
}

// bitmapBody encodes rs (all within maxBitmapBits of rs[0].Lo) as
// uint64 offset | mpint bitmap, bit N meaning serial offset+N.
func bitmapBody(rs []SerialRange) []byte {
	lo := rs[0].Lo
	n := new(big.Int)
	for _, r := range rs {
		for s := r.Lo; ; s++ {
			n.SetBit(n, int(s-lo), 1)
			if s == r.Hi {
				break
			}
		}
	}
	var b buf
	b.u64(lo)
	mag := n.Bytes()
	if len(mag) > 0 && mag[0]&0x80 != 0 {
		mag = append([]byte{0}, mag...)
	}
	b.str(mag)
	return b
}
