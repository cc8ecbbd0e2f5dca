package client

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// SSH is the client of the SSH CA.
type SSH struct{ c pb.SSHCAServiceClient }

// Stub is the generated client, for CA and role management and KRLs.
func (s *SSH) Stub() pb.SSHCAServiceClient { return s.c }

// SSHSignRequest asks for a certificate of PublicKey under Role.
type SSHSignRequest struct {
	Role            string
	PublicKey       ssh.PublicKey
	Principals      []string          // default: the role's
	TTL             time.Duration     // 0: the role's default
	Extensions      map[string]string // only those the role allows
	CriticalOptions map[string]string
	Host            bool // a host certificate (SignHostKey) instead of a user one
}

// SSHCertificate is a signed certificate.
type SSHCertificate struct {
	Cert *ssh.Certificate
	// AuthorizedKey is the certificate in the one-line form of a
	// -cert.pub file, without the newline.
	AuthorizedKey string
	CA            string
	CAVersion     uint32
}

// Sign has the SSH CA sign req.PublicKey.
func (s *SSH) Sign(ctx context.Context, req SSHSignRequest) (*SSHCertificate, error) {
	if req.PublicKey == nil {
		return nil, fmt.Errorf("client: ssh sign: no public key: %w", ErrInvalidArgument)
	}
	if req.TTL < 0 {
		return nil, fmt.Errorf("client: ssh sign: negative TTL: %w", ErrInvalidArgument)
	}
	item := &pb.SSHSignItem{
		PublicKey:       strings.TrimSpace(string(ssh.MarshalAuthorizedKey(req.PublicKey))),
		Principals:      req.Principals,
		Extensions:      req.Extensions,
		CriticalOptions: req.CriticalOptions,
	}
	if req.TTL > 0 {
		item.Ttl = durationpb.New(req.TTL)
	}
	var results []*pb.SSHSignResult
	if req.Host {
		r, err := s.c.SignHostKey(ctx, &pb.SignHostKeyRequest{Role: req.Role, Items: []*pb.SSHSignItem{item}})
		if err != nil {
			return nil, err
		}
		results = r.GetResults()
	} else {
		r, err := s.c.SignUserKey(ctx, &pb.SignUserKeyRequest{Role: req.Role, Items: []*pb.SSHSignItem{item}})
		if err != nil {
			return nil, err
		}
		results = r.GetResults()
	}
	if len(results) != 1 {
		return nil, fmt.Errorf("client: ssh sign: %d results for 1 item: %w", len(results), ErrInternal)
	}
	res := results[0]
	if err := itemErr(res.GetError()); err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(res.GetCertificate()))
	if err != nil {
		return nil, fmt.Errorf("client: ssh sign: server sent a certificate that does not parse: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("client: ssh sign: server sent a %s, not a certificate: %w", pub.Type(), ErrInternal)
	}
	if !bytes.Equal(cert.Key.Marshal(), req.PublicKey.Marshal()) {
		return nil, fmt.Errorf("client: ssh sign: the certificate returned is not for the key sent: %w", ErrInternal)
	}
	return &SSHCertificate{Cert: cert, AuthorizedKey: strings.TrimSpace(res.GetCertificate()), CA: res.GetCa(), CAVersion: res.GetCaVersion()}, nil
}

// CertPath is where OpenSSH looks for the certificate of a key file:
// id_ed25519 and id_ed25519.pub give id_ed25519-cert.pub.
func CertPath(keyPath string) string {
	return strings.TrimSuffix(keyPath, ".pub") + "-cert.pub"
}

// SignKeyFile signs the public key of keyPath and writes the certificate
// to CertPath(keyPath), beside the key, where ssh and ssh-add find it.
// keyPath may name the public key (id_ed25519.pub), or the private key
// (id_ed25519), in which case id_ed25519.pub is read; the private key is
// never read. req.PublicKey is ignored. It returns the certificate and the
// path written.
func (s *SSH) SignKeyFile(ctx context.Context, keyPath string, req SSHSignRequest) (*SSHCertificate, string, error) {
	pubPath := keyPath
	if !strings.HasSuffix(pubPath, ".pub") {
		pubPath += ".pub"
	}
	b, err := os.ReadFile(pubPath)
	if err != nil {
		return nil, "", fmt.Errorf("client: ssh sign: %w", err)
	}
	req.PublicKey, _, _, _, err = ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("client: ssh sign: %s is not a public key: %w", pubPath, ErrInvalidArgument)
	}
	c, err := s.Sign(ctx, req)
	if err != nil {
		return nil, "", err
	}
	out := CertPath(keyPath)
	if err := os.WriteFile(out, []byte(c.AuthorizedKey+"\n"), 0o644); err != nil {
		return nil, "", fmt.Errorf("client: ssh sign: %w", err)
	}
	return c, out, nil
}
