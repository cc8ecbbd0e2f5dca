package sshca

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca/krl"
)

// An attacker with ssh-sign on any role asks for a certificate whose subject
// key is a CA's own public key (public by nature: TrustedUserCAKeys,
// known_hosts). Revoking that certificate by key, as documented, would put
// the CA key in the KRL and switch the CA off in sshd. Every CA key, of every
// CA and version, and every key revoked by key or fingerprint, is refused as
// a subject key on both sign paths; revoking a CA key by key is refused.
func TestCAAndRevokedKeysAreNeverSubjectKeys(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	svc := NewService(env.e)
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	env.createCA(t, "hosts", hostCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	if _, err := env.e.RotateCA(ctx, "users", pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P384); err != nil {
		t.Fatal(err)
	}
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}})
	env.createRole(t, &pb.SSHRole{Name: "web", Ca: "hosts", CertType: hostCT, AllowedPrincipals: []string{"*.example.com"}})
	var caKeys []*pb.SSHCAKey
	for _, name := range []string{"users", "hosts"} {
		ca, err := env.e.GetCA(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		caKeys = append(caKeys, ca.GetKeys()...)
	}
	if len(caKeys) != 3 {
		t.Fatalf("got %d CA keys, want 3", len(caKeys))
	}
	signUser := func(key string) (*pb.SSHSignResult, error) {
		res, err := svc.SignUserKey(ctx, &pb.SignUserKeyRequest{Role: "eng", Items: []*pb.SSHSignItem{{PublicKey: key, Principals: []string{"alice"}}}})
		if err != nil {
			return nil, err
		}
		return res.GetResults()[0], nil
	}
	signHost := func(key string) (*pb.SSHSignResult, error) {
		res, err := svc.SignHostKey(ctx, &pb.SignHostKeyRequest{Role: "web", Items: []*pb.SSHSignItem{{PublicKey: key, Principals: []string{"a.example.com"}}}})
		if err != nil {
			return nil, err
		}
		return res.GetResults()[0], nil
	}
	paths := map[string]func(string) (*pb.SSHSignResult, error){"user": signUser, "host": signHost}
	refused := func(t *testing.T, sign func(string) (*pb.SSHSignResult, error), key string) {
		t.Helper()
		r, err := sign(key)
		if err != nil {
			t.Fatalf("got call error %v, want a refused item", err)
		}
		if r.GetCertificate() != "" || codes.Code(r.GetError().GetCode()) != codes.InvalidArgument {
			t.Errorf("got certificate %q, error %v; want no certificate and InvalidArgument", r.GetCertificate(), r.GetError())
		}
	}
	for _, k := range caKeys {
		for path, sign := range paths {
			t.Run("CA key "+k.GetFingerprint()+" on the "+path+" path", func(t *testing.T) {
				refused(t, sign, k.GetPublicKey())
			})
		}
		t.Run("revoke CA key "+k.GetFingerprint(), func(t *testing.T) {
			for _, r := range []*pb.RevokeSSHRequest{
				{Target: &pb.RevokeSSHRequest_PublicKey{PublicKey: k.GetPublicKey()}},
				{Target: &pb.RevokeSSHRequest_Sha256Fingerprint{Sha256Fingerprint: k.GetFingerprint()}},
			} {
				if _, err := env.e.Revoke(ctx, r); !errors.Is(err, ErrInvalid) {
					t.Errorf("%v: got %v, want ErrInvalid", r, err)
				}
			}
			data, _, _, err := env.e.KRL(ctx)
			if err != nil {
				t.Fatal(err)
			}
			k2, err := krl.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(k2.ExplicitKeys) != 0 || len(k2.SHA256) != 0 {
				t.Errorf("KRL holds %d keys and %d fingerprints, want none", len(k2.ExplicitKeys), len(k2.SHA256))
			}
		})
	}
	for _, how := range []string{"key", "fingerprint"} {
		t.Run("key revoked by "+how, func(t *testing.T) {
			_, key := ed25519Key(t)
			for path, sign := range paths {
				if r, err := sign(key); err != nil || r.GetError() != nil {
					t.Fatalf("%s path before revocation: %v %v", path, err, r.GetError())
				}
			}
			pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
			if err != nil {
				t.Fatal(err)
			}
			r := &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_PublicKey{PublicKey: key}}
			if how == "fingerprint" {
				r = &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_Sha256Fingerprint{Sha256Fingerprint: ssh.FingerprintSHA256(pub)}}
			}
			if _, err := env.e.Revoke(ctx, r); err != nil {
				t.Fatal(err)
			}
			for path, sign := range paths {
				t.Run(path, func(t *testing.T) { refused(t, sign, key) })
			}
		})
	}
}

// Errors quote the caller's input truncated: a 100 KB principal, role name
// or fingerprint is not echoed back (nor logged) whole.
func TestErrorsTruncateEchoedInput(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}})
	huge := strings.Repeat("p", 100<<10)
	_, key := ed25519Key(t)
	res, err := env.e.Sign(ctx, userCT, "eng", []*pb.SSHSignItem{{PublicKey: key, Principals: []string{huge}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err2 := env.e.Revoke(ctx, &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_Sha256Fingerprint{Sha256Fingerprint: huge}})
	_, err3 := env.e.GetRole(ctx, huge)
	for name, msg := range map[string]string{
		"principal": res[0].GetError().GetMessage(), "fingerprint": fmt.Sprint(err2), "role name": fmt.Sprint(err3),
	} {
		if msg == "" || len(msg) > 512 {
			t.Errorf("%s: got a message of %d bytes, want a short refusal", name, len(msg))
		}
	}
}
