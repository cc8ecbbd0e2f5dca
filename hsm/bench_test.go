package hsm_test

import (
	"crypto"
	"crypto/sha256"
	"testing"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// bench runs op serially and, as "parallel", from GOMAXPROCS goroutines.
func bench(b *testing.B, op func() error) {
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func benchKEK(b *testing.B) *hsm.KEK {
	m := hsmtest.Module(b)
	kek, _, err := m.EnsureKEK(ctx, "kek")
	if err != nil {
		b.Fatal(err)
	}
	return kek
}

func BenchmarkWrap(b *testing.B) {
	kek := benchKEK(b)
	key := make([]byte, 32)
	bench(b, func() error { _, err := kek.Wrap(ctx, key); return err })
}

func BenchmarkUnwrap(b *testing.B) {
	kek := benchKEK(b)
	blob, err := kek.Wrap(ctx, make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	bench(b, func() error { _, err := kek.Unwrap(ctx, blob); return err })
}

func BenchmarkGCMSeal256B(b *testing.B) {
	m := hsmtest.Module(b)
	if err := m.GenerateKey(ctx, "aes", hsm.AES256); err != nil {
		b.Fatal(err)
	}
	a, err := m.AEAD(ctx, "aes")
	if err != nil {
		b.Fatal(err)
	}
	nonce, msg := make([]byte, 12), make([]byte, 256)
	bench(b, func() error { _, err := a.SealContext(ctx, nil, nonce, msg, nil); return err })
}

func benchSign(b *testing.B, kt hsm.KeyType, digest []byte, opts crypto.SignerOpts) {
	m := hsmtest.Module(b)
	if err := m.GenerateKey(ctx, "k", kt); err != nil {
		b.Fatal(err)
	}
	s, err := m.Signer(ctx, "k")
	if err != nil {
		b.Fatal(err)
	}
	bench(b, func() error { _, err := s.SignContext(ctx, digest, opts); return err })
}

func BenchmarkSignECDSAP256(b *testing.B) {
	d := sha256.Sum256([]byte("m"))
	benchSign(b, hsm.ECDSAP256, d[:], crypto.SHA256)
}

func BenchmarkSignRSA2048(b *testing.B) {
	d := sha256.Sum256([]byte("m"))
	benchSign(b, hsm.RSA2048, d[:], crypto.SHA256)
}

func BenchmarkSignEd25519(b *testing.B) {
	benchSign(b, hsm.Ed25519, []byte("a 32-byte message to be signed.."), crypto.Hash(0))
}

func BenchmarkRandom32(b *testing.B) {
	m := hsmtest.Module(b)
	bench(b, func() error { _, err := m.Random(ctx, 32); return err })
}
