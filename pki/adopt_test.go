package pki

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestAdoptedRootIssuer: a root created with key_uri uses the ceremony's
// key (no new key is made), issues a leaf that openssl verifies, and its
// key survives DeleteIssuer with destroy_key.
func TestAdoptedRootIssuer(t *testing.T) {
	e := newEnv(t, realClock)
	ctx := context.Background()
	m := e.keys.(*hsm.Module)
	token := m.TokenLabel()
	hsmtest.ForeignECKey(t, token, "ceremony-root", []byte{1, 2}, false)
	hsmtest.ForeignECKey(t, token, "ceremony-2", []byte{3}, false)
	hsmtest.ForeignECKey(t, token, "leaky", []byte{4}, true)
	subject := func(cn string) *pb.Subject {
		return &pb.Subject{CommonName: cn, Organization: []string{"hsmgate test"}}
	}

	r, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{
		Name: "adopted", Subject: subject("Adopted Root"),
		KeyUri: "pkcs11:token=" + token + ";object=ceremony-root;id=%01%02",
	})
	if err != nil {
		t.Fatalf("CreateRootIssuer with key_uri: %v", err)
	}
	root := r.Issuer
	if root.KeyType != KeyECDSAP256 || !hsm.IsRef(root.KeyLabel) {
		t.Fatalf("issuer: got key type %q label %q, want ecdsa-p256 and an adopted-key reference", root.KeyType, root.KeyLabel)
	}
	s, err := m.Signer(ctx, "pkcs11:object=ceremony-root;id=%01%02")
	if err != nil {
		t.Fatal(err)
	}
	if !parseCert(t, root.Certificate).PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()) {
		t.Fatalf("the root's public key is not the ceremony key's")
	}
	e.role(t, webRole("web"))
	leaf, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, err := openssl(t, "verify", "-CAfile", writeFile(t, dir, "root.pem", pemCerts(root.Certificate)),
		writeFile(t, dir, "leaf.pem", pemCerts(leaf.Certificate)))
	if err != nil || !strings.Contains(out, "leaf.pem: OK") {
		t.Fatalf("openssl verify of a leaf under the adopted root: %v\n%s", err, out)
	}

	t.Run("intermediate with an adopted key", func(t *testing.T) {
		r, err := e.svc.CreateIntermediateIssuer(ctx, &pb.CreateIntermediateIssuerRequest{
			Name: "adopted-int", Parent: "adopted", Subject: subject("Adopted Intermediate"), KeyUri: "pkcs11:object=ceremony-2",
		})
		if err != nil {
			t.Fatalf("CreateIntermediateIssuer with key_uri: %v", err)
		}
		out, err := openssl(t, "verify", "-CAfile", writeFile(t, dir, "root.pem", pemCerts(root.Certificate)),
			writeFile(t, dir, "int.pem", pemCerts(r.Issuer.Certificate)))
		if err != nil || !strings.Contains(out, "int.pem: OK") {
			t.Fatalf("openssl verify of the adopted intermediate: %v\n%s", err, out)
		}
		if _, err := e.svc.DeleteIssuer(ctx, &pb.DeleteIssuerRequest{Name: "adopted-int", DestroyKey: true}); err != nil {
			t.Fatalf("DeleteIssuer: %v", err)
		}
		if _, err := m.AdoptKey(ctx, "pkcs11:object=ceremony-2"); err != nil {
			t.Fatalf("the adopted key is gone after DeleteIssuer with destroy_key: %v", err)
		}
	})
	t.Run("extractable key refused, nothing recorded", func(t *testing.T) {
		_, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{Name: "leaky", Subject: subject("Leaky"), KeyUri: "pkcs11:object=leaky"})
		if !errors.Is(err, hsm.ErrNotAdoptable) {
			t.Fatalf("got %v, want ErrNotAdoptable", err)
		}
		if _, err := e.svc.GetIssuer(ctx, &pb.GetIssuerRequest{Name: "leaky"}); !errors.Is(err, ErrIssuerNotFound) {
			t.Fatalf("GetIssuer(leaky): got %v, want ErrIssuerNotFound", err)
		}
	})
	t.Run("key type mismatch refused", func(t *testing.T) {
		_, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{Name: "mismatch", KeyType: KeyRSA4096, Subject: subject("M"), KeyUri: "pkcs11:object=ceremony-2"})
		if !errors.Is(err, hsm.ErrUnsupported) {
			t.Fatalf("got %v, want ErrUnsupported", err)
		}
	})
	t.Run("other token refused", func(t *testing.T) {
		_, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{Name: "other", Subject: subject("O"), KeyUri: "pkcs11:token=elsewhere;object=ceremony-2"})
		if !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("got %v, want ErrInvalidInput", err)
		}
	})
}
