package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// lyingServer answers with what a broken or impostor server might: too few
// results, a certificate for a key of its own choosing.
type lyingServer struct {
	pb.UnimplementedTransitServiceServer
	pb.UnimplementedPKIServiceServer
	pb.UnimplementedSSHCAServiceServer
	t *testing.T
}

func (lyingServer) Encrypt(context.Context, *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	return &pb.EncryptResponse{}, nil // no result for the item
}

func (s lyingServer) Sign(_ context.Context, r *pb.SignRequest) (*pb.SignResponse, error) {
	// A self-signed certificate for the server's own key, not the CSR's.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		s.t.Error(err)
	}
	return &pb.SignResponse{Certificate: der, Serial: "09"}, nil
}

func (s lyingServer) SignUserKey(_ context.Context, r *pb.SignUserKeyRequest) (*pb.SignUserKeyResponse, error) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ssh.NewPublicKey(&k.PublicKey)
	signer, _ := ssh.NewSignerFromKey(k)
	cert := &ssh.Certificate{Key: other, CertType: ssh.UserCert, ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		s.t.Error(err)
	}
	return &pb.SignUserKeyResponse{Results: []*pb.SSHSignResult{{Certificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))}}}, nil
}

// TestLyingServer: answers that do not fit the request fail the call with
// ErrInternal instead of panicking (a missing result) or pairing our key
// with somebody else's certificate.
func TestLyingServer(t *testing.T) {
	srv := lyingServer{t: t}
	o := serve(t, func(g *grpc.Server) {
		pb.RegisterTransitServiceServer(g, srv)
		pb.RegisterPKIServiceServer(g, srv)
		pb.RegisterSSHCAServiceServer(g, srv)
	})
	c, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	t.Run("missing result", func(t *testing.T) {
		if _, err := c.Transit.Encrypt(ctx, "k", []byte("x")); !errors.Is(err, ErrInternal) {
			t.Errorf("got %v, want ErrInternal", err)
		}
		b := c.Transit.Batcher("k", BatcherOptions{MaxItems: 1})
		defer b.Close()
		if _, err := b.Encrypt(ctx, []byte("x"), nil); !errors.Is(err, ErrInternal) {
			t.Errorf("batcher: got %v, want ErrInternal", err)
		}
	})
	t.Run("certificate for another key", func(t *testing.T) {
		cert, err := c.PKI.Issue(ctx, CertificateRequest{Role: "web", CommonName: "localhost"})
		if !errors.Is(err, ErrInternal) || cert != nil {
			t.Errorf("got %v, %v; want ErrInternal", cert, err)
		}
	})
	t.Run("SSH certificate for another key", func(t *testing.T) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := ssh.NewPublicKey(&k.PublicKey)
		cert, err := c.SSH.Sign(ctx, SSHSignRequest{Role: "r", PublicKey: pub})
		if !errors.Is(err, ErrInternal) || cert != nil {
			t.Errorf("got %v, %v; want ErrInternal", cert, err)
		}
	})
}
