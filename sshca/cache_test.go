package sshca

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestSignFollowsRoleAndCAChanges: Sign keeps roles and CAs in memory; a
// change made by the same engine shows in its next signature, one made by
// another engine on the same store (a replica) once the store's Watch
// delivers it.
func TestSignFollowsRoleAndCAChanges(t *testing.T) {
	a := newEnv(t)
	b := newEnvOn(t, a.store, a.hsm)
	ctx := context.Background()
	a.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	role := &pb.SSHRole{Name: "eng", Ca: "users", CertType: userCT, AllowedPrincipals: []string{"alice", "bob"}}
	a.createRole(t, role)
	_, key := ed25519Key(t)
	// sign returns the certificate for principal p, or the item's gRPC code.
	sign := func(env *testEnv, p string) (*ssh.Certificate, codes.Code) {
		t.Helper()
		res, err := env.e.Sign(ctx, userCT, "eng", []*pb.SSHSignItem{{PublicKey: key, Principals: []string{p}}})
		if errors.Is(err, ErrRoleNotFound) {
			return nil, codes.NotFound
		}
		if err != nil {
			t.Fatal(err)
		}
		if res[0].GetError() != nil {
			return nil, codes.Code(res[0].GetError().GetCode())
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(res[0].GetCertificate()))
		if err != nil {
			t.Fatal(err)
		}
		return pub.(*ssh.Certificate), codes.OK
	}
	// eventually waits until f holds (the other engine's Watch has run).
	eventually := func(what string, f func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !f(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen after 20 s", what)
			}
		}
	}
	// Both engines have the role and the CA in memory now.
	for _, env := range []*testEnv{a, b} {
		if _, code := sign(env, "bob"); code != codes.OK {
			t.Fatalf("bob before the change: got %v, want OK", code)
		}
	}

	role.AllowedPrincipals = []string{"alice"}
	if _, err := a.e.UpdateRole(ctx, role); err != nil {
		t.Fatal(err)
	}
	if _, code := sign(a, "bob"); code != codes.InvalidArgument {
		t.Fatalf("bob right after the same engine's update: got %v, want InvalidArgument (not allowed)", code)
	}
	eventually("the update on the other engine", func() bool { _, code := sign(b, "bob"); return code == codes.InvalidArgument })

	cert, _ := sign(a, "alice")
	old := string(cert.SignatureKey.Marshal())
	if _, err := b.e.RotateCA(ctx, "users", pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256); err != nil {
		t.Fatal(err)
	}
	if cert, _ := sign(b, "alice"); string(cert.SignatureKey.Marshal()) == old {
		t.Fatal("the rotating engine still signs with the old CA key")
	}
	eventually("the rotation on the other engine", func() bool {
		cert, _ := sign(a, "alice")
		return string(cert.SignatureKey.Marshal()) != old
	})

	if err := b.e.DeleteRole(ctx, "eng"); err != nil {
		t.Fatal(err)
	}
	eventually("the deletion on the other engine", func() bool { _, code := sign(a, "alice"); return code == codes.NotFound })
}
