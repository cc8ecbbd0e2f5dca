// Package kwp implements AES Key Wrap with Padding (RFC 5649), which Go's
// standard library lacks. It is used by transit's ImportKey, where callers
// wrap key material as AWS KMS and Vault specify (RSA-OAEP of an ephemeral
// AES key, then KWP of the material under it), and by tests. The deployment
// KEK never uses this package: its wrapping runs inside the HSM.
package kwp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// ErrInvalid is returned by Unwrap when the input is malformed or does not
// authenticate under the key. It says nothing more, on purpose.
var ErrInvalid = errors.New("kwp: invalid wrapped key")

// maxLen bounds plaintext length (RFC 5649 allows up to 2^32 bytes).
const maxLen = 1 << 31

var aivPrefix = [4]byte{0xA6, 0x59, 0x59, 0xA6}

// Wrap wraps plaintext (1 byte or more) under kek (16, 24 or 32 bytes).
func Wrap(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 || len(plaintext) > maxLen {
		return nil, errors.New("kwp: plaintext length out of range")
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	padded := (len(plaintext) + 7) &^ 7
	out := make([]byte, 8+padded)
	copy(out[:4], aivPrefix[:])
	binary.BigEndian.PutUint32(out[4:8], uint32(len(plaintext)))
	copy(out[8:], plaintext)
	if padded == 8 {
		b.Encrypt(out, out)
		return out, nil
	}
	wrap(b, out)
	return out, nil
}

// Unwrap reverses Wrap; ErrInvalid if wrapped is malformed or does not authenticate.
func Unwrap(kek, wrapped []byte) ([]byte, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < 16 || len(wrapped)%8 != 0 || len(wrapped) > maxLen+8 {
		return nil, ErrInvalid
	}
	buf := make([]byte, len(wrapped))
	copy(buf, wrapped)
	if len(buf) == 16 {
		b.Decrypt(buf, buf)
	} else {
		unwrap(b, buf)
	}
	n := len(buf) - 8
	mli := binary.BigEndian.Uint32(buf[4:8])
	ok := subtle.ConstantTimeCompare(buf[:4], aivPrefix[:])
	// MLI must be in (n-8, n].
	if int(mli) > n || int(mli) <= n-8 {
		ok = 0
	}
	if ok == 1 {
		var pad byte
		for _, c := range buf[8+int(mli):] {
			pad |= c
		}
		ok &= subtle.ConstantTimeByteEq(pad, 0)
	}
	if ok != 1 {
		clear(buf)
		return nil, ErrInvalid
	}
	return buf[8 : 8+int(mli)], nil
}

// wrap runs RFC 3394's W over buf = A | R1..Rn in place (A already set).
func wrap(b cipher.Block, buf []byte) {
	n := len(buf)/8 - 1
	var blk [16]byte
	copy(blk[:8], buf[:8])
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(blk[8:], buf[8*i:8*i+8])
			b.Encrypt(blk[:], blk[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(blk[:8], binary.BigEndian.Uint64(blk[:8])^t)
			copy(buf[8*i:8*i+8], blk[8:])
		}
	}
	copy(buf[:8], blk[:8])
}

// unwrap runs RFC 3394's W^-1 over buf in place.
func unwrap(b cipher.Block, buf []byte) {
	n := len(buf)/8 - 1
	var blk [16]byte
	copy(blk[:8], buf[:8])
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(blk[:8], binary.BigEndian.Uint64(blk[:8])^t)
			copy(blk[8:], buf[8*i:8*i+8])
			b.Decrypt(blk[:], blk[:])
			copy(buf[8*i:8*i+8], blk[8:])
		}
	}
	copy(buf[:8], blk[:8])
}
