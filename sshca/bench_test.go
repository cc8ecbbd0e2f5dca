package sshca

import (
	"context"
	"testing"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// BenchmarkSignUserCert signs user certificates in batches of 16 with each
// CA key type (SoftHSM, bbolt: one store write per batch). ns/op is per batch;
// certs/s is the throughput.
func BenchmarkSignUserCert(b *testing.B) {
	for _, kt := range []pb.SSHKeyType{
		pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256,
		pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P384,
		pb.SSHKeyType_SSH_KEY_TYPE_ED25519,
		pb.SSHKeyType_SSH_KEY_TYPE_RSA_3072,
		pb.SSHKeyType_SSH_KEY_TYPE_RSA_4096,
	} {
		b.Run(kt.String(), func(b *testing.B) {
			env := newEnv(b)
			env.createCA(b, "users", userCT, kt)
			env.createRole(b, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"{{identity.name}}"}, DefaultPrincipals: []string{"{{identity.name}}"}})
			_, key := ed25519Key(b)
			items := make([]*pb.SSHSignItem, 16)
			for i := range items {
				items[i] = &pb.SSHSignItem{PublicKey: key}
			}
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				res, err := env.e.Sign(ctx, userCT, "eng", items)
				if err != nil || res[0].GetError() != nil {
					b.Fatal(err, res[0].GetError())
				}
			}
			b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "certs/s")
		})
	}
}
