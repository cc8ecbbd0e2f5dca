package sshca

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestCreateCAAdoptsKey: a CA created with key_uri signs with the existing
// key (made outside hsmgate); an extractable key is refused; the adopted key
// is never destroyed by hsmgate.
func TestCreateCAAdoptsKey(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	token := env.hsm.TokenLabel()
	hsmtest.ForeignECKey(t, token, "ssh-ceremony", []byte{7, 7}, false)
	hsmtest.ForeignECKey(t, token, "ssh-leaky", []byte{8}, true)

	ca, err := env.e.CreateCA(ctx, &pb.CreateSSHCARequest{
		Name: "adopted", CertType: userCT, KeyUri: "pkcs11:token=" + token + ";object=ssh-ceremony;id=%07%07",
	})
	if err != nil {
		t.Fatalf("CreateCA with key_uri: %v", err)
	}
	k := ca.GetKeys()[0]
	if k.GetKeyType() != pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256 || !hsm.IsRef(k.GetHsmLabel()) {
		t.Fatalf("CA key: got type %v label %q, want ECDSA P-256 and an adopted-key reference", k.GetKeyType(), k.GetHsmLabel())
	}
	s, err := env.hsm.Signer(ctx, "pkcs11:object=ssh-ceremony;id=%07%07")
	if err != nil {
		t.Fatal(err)
	}
	want, err := ssh.NewPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	env.createRole(t, &pb.SSHRole{Name: "r", Ca: "adopted", AllowedPrincipals: []string{"alice"}})
	_, subject := ed25519Key(t)
	c, _, err := env.signOne(t, userCT, "r", &pb.SSHSignItem{PublicKey: subject, Principals: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.SignatureKey.Marshal(), want.Marshal()) {
		t.Fatalf("certificate signed by %s, want the adopted key %s", ssh.FingerprintSHA256(c.SignatureKey), ssh.FingerprintSHA256(want))
	}
	if err := checkCert(t, c, want, "alice", env.clock.Now()); err != nil {
		t.Fatalf("certificate does not verify with the adopted key: %v", err)
	}
	env.e.destroy(k.GetHsmLabel())
	if _, err := env.hsm.AdoptKey(ctx, "pkcs11:object=ssh-ceremony"); err != nil {
		t.Fatalf("adopted key gone after destroy: %v", err)
	}

	t.Run("extractable refused", func(t *testing.T) {
		_, err := env.e.CreateCA(ctx, &pb.CreateSSHCARequest{Name: "leaky", CertType: userCT, KeyUri: "pkcs11:object=ssh-leaky"})
		if !errors.Is(err, hsm.ErrNotAdoptable) {
			t.Fatalf("got %v, want ErrNotAdoptable", err)
		}
	})
	t.Run("type mismatch refused", func(t *testing.T) {
		_, err := env.e.CreateCA(ctx, &pb.CreateSSHCARequest{
			Name: "mismatch", CertType: userCT, KeyType: pb.SSHKeyType_SSH_KEY_TYPE_ED25519, KeyUri: "pkcs11:object=ssh-ceremony",
		})
		if !errors.Is(err, hsm.ErrUnsupported) {
			t.Fatalf("got %v, want ErrUnsupported", err)
		}
	})
}
