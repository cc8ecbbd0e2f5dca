package transit

import (
	"context"
	"fmt"
	"testing"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// The benchmarks use 256-byte items (the bench/ targets' size) and report
// items/s. Every key type × residency × batch 1, 100, 1000 exists; run a
// subset with -bench 'Encrypt/aes256-gcm' etc.

var benchBatches = []int{1, 100, 1000}

const benchPayload = 256

func benchResidencies(ti typeInfo) []pb.TransitResidency {
	if ti.hsmType == "" {
		return []pb.TransitResidency{wrapped}
	}
	return []pb.TransitResidency{wrapped, inHSM}
}

func resName(r pb.TransitResidency) string {
	if r == inHSM {
		return "hsm"
	}
	return "wrapped"
}

// benchKeys runs fn for every type of kind, residency and batch size.
func benchKeys(b *testing.B, kind keyKind, fn func(b *testing.B, f *fixture, name string, batch int)) {
	f := newFixture(b, func(c *Config) { c.UsageBlock = DefaultUsageBlock })
	for _, typ := range allTypes {
		ti := keyTypes[typ]
		if ti.kind != kind {
			continue
		}
		for _, res := range benchResidencies(ti) {
			name := ti.name + "-" + resName(res)
			created := false
			for _, batch := range benchBatches {
				b.Run(fmt.Sprintf("%s/%s/batch=%d", ti.name, resName(res), batch), func(b *testing.B) {
					if !created {
						f.create(name, typ, res)
						created = true
					}
					fn(b, f, name, batch)
					b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "items/s")
				})
			}
		}
	}
}

func payload(i int) []byte {
	p := make([]byte, benchPayload)
	p[0] = byte(i)
	return p
}

func BenchmarkEncrypt(b *testing.B) {
	benchKeys(b, kindAEAD, func(b *testing.B, f *fixture, name string, batch int) {
		req := &pb.EncryptRequest{Name: name}
		for i := range batch {
			req.Items = append(req.Items, &pb.EncryptItem{Plaintext: payload(i)})
		}
		b.SetBytes(int64(batch * benchPayload))
		ctx := context.Background()
		b.ResetTimer()
		for range b.N {
			if _, err := f.e.Encrypt(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecrypt(b *testing.B) {
	benchKeys(b, kindAEAD, func(b *testing.B, f *fixture, name string, batch int) {
		ctx := context.Background()
		enc := &pb.EncryptRequest{Name: name}
		for i := range batch {
			enc.Items = append(enc.Items, &pb.EncryptItem{Plaintext: payload(i)})
		}
		r, err := f.e.Encrypt(ctx, enc)
		if err != nil {
			b.Fatal(err)
		}
		req := &pb.DecryptRequest{Name: name}
		for _, res := range r.Results {
			req.Items = append(req.Items, &pb.DecryptItem{Ciphertext: res.Ciphertext})
		}
		b.SetBytes(int64(batch * benchPayload))
		b.ResetTimer()
		for range b.N {
			if _, err := f.e.Decrypt(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSign(b *testing.B) {
	benchKeys(b, kindSign, func(b *testing.B, f *fixture, name string, batch int) {
		req := &pb.SignDataRequest{Name: name}
		for i := range batch {
			req.Items = append(req.Items, &pb.SignItem{Input: payload(i)})
		}
		ctx := context.Background()
		b.ResetTimer()
		for range b.N {
			if _, err := f.e.SignData(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	benchKeys(b, kindSign, func(b *testing.B, f *fixture, name string, batch int) {
		ctx := context.Background()
		sreq := &pb.SignDataRequest{Name: name, Items: []*pb.SignItem{{Input: payload(0)}}}
		r, err := f.e.SignData(ctx, sreq)
		if err != nil {
			b.Fatal(err)
		}
		req := &pb.VerifySignatureRequest{Name: name}
		for range batch {
			req.Items = append(req.Items, &pb.VerifyItem{Input: payload(0), Signature: r.Results[0].Signature})
		}
		b.ResetTimer()
		for range b.N {
			if _, err := f.e.VerifySignature(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkHMAC(b *testing.B) {
	benchKeys(b, kindHMAC, func(b *testing.B, f *fixture, name string, batch int) {
		req := &pb.ComputeHmacRequest{Name: name}
		for i := range batch {
			req.Items = append(req.Items, &pb.HmacItem{Input: payload(i)})
		}
		b.SetBytes(int64(batch * benchPayload))
		ctx := context.Background()
		b.ResetTimer()
		for range b.N {
			if _, err := f.e.ComputeHmac(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
