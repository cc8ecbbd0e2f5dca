package bench

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func init() {
	register(&scenario{name: "ssh-sign", summary: "SSHCAService.SignUserKey, --batch Ed25519 user keys per request (CA key type: --key-type)",
		keyTypes: []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", "rsa-4096"}, minBatch: 16, prepare: prepareSSHSign})
}

var sshKeyTypes = map[string]hsmgatev1.SSHKeyType{
	"ecdsa-p256": hsmgatev1.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256,
	"ecdsa-p384": hsmgatev1.SSHKeyType_SSH_KEY_TYPE_ECDSA_P384,
	"ed25519":    hsmgatev1.SSHKeyType_SSH_KEY_TYPE_ED25519,
	"rsa-3072":   hsmgatev1.SSHKeyType_SSH_KEY_TYPE_RSA_3072,
	"rsa-4096":   hsmgatev1.SSHKeyType_SSH_KEY_TYPE_RSA_4096,
}

func prepareSSHSign(ctx context.Context, env *Env, p Params) (*workload, error) {
	c := hsmgatev1.NewSSHCAServiceClient(env.Conns[0])
	ca, role := "bench-"+env.Prefix, "bench-"+env.Prefix
	if _, err := c.CreateSSHCA(ctx, &hsmgatev1.CreateSSHCARequest{
		Name: ca, CertType: hsmgatev1.SSHCertType_SSH_CERT_TYPE_USER, KeyType: sshKeyTypes[p.KeyType],
	}); err != nil {
		return nil, fmt.Errorf("bench: create SSH CA: %w", err)
	}
	if _, err := c.CreateSSHRole(ctx, &hsmgatev1.CreateSSHRoleRequest{Role: &hsmgatev1.SSHRole{
		Name: role, Ca: ca, CertType: hsmgatev1.SSHCertType_SSH_CERT_TYPE_USER,
		AllowedPrincipals: []string{"bench"}, DefaultPrincipals: []string{"bench"},
		DefaultTtl: durationpb.New(time.Hour), MaxTtl: durationpb.New(24 * time.Hour),
		AllowedExtensions: []string{"permit-pty"}, DefaultExtensions: map[string]string{"permit-pty": ""},
	}}); err != nil {
		return nil, fmt.Errorf("bench: create SSH role: %w", err)
	}
	// A pool of distinct subject keys, cycled through the batch.
	const nkeys = 64
	keys := make([]string, nkeys)
	var subject ssh.PublicKey
	for i := range keys {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		sp, err := ssh.NewPublicKey(pub)
		if err != nil {
			return nil, err
		}
		subject = sp
		keys[i] = string(ssh.MarshalAuthorizedKey(sp))
	}
	w := &workload{
		Describe: fmt.Sprintf("SignUserKey, CA %s, Ed25519 subject keys", p.KeyType),
		Close: func() {
			_, _ = c.DeleteSSHRole(context.Background(), &hsmgatev1.DeleteSSHRoleRequest{Name: role})
		},
	}
	w.Vault = func(batch int, n VaultNames) (*vaultRequest, error) {
		// Vault signs one key per request: there is no batch form.
		return &vaultRequest{Path: n.SSHMount + "/sign/" + cmp.Or(n.Role, role), Items: 1,
			Body:  vaultBody(map[string]string{"public_key": keys[0], "valid_principals": "bench"}),
			Check: checkField("signed_key")}, nil
	}
	w.Request = func(batch int) (request, error) {
		req := &hsmgatev1.SignUserKeyRequest{Role: role, Items: make([]*hsmgatev1.SSHSignItem, batch)}
		for i := range req.Items {
			req.Items[i] = &hsmgatev1.SSHSignItem{PublicKey: keys[i%nkeys]}
		}
		return request{Msg: req, Call: func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
			resp, err := hsmgatev1.NewSSHCAServiceClient(cc).SignUserKey(ctx, req)
			if err != nil {
				return nil, err
			}
			for _, r := range resp.Results {
				if err := itemErr(r.Error); err != nil {
					return nil, err
				}
			}
			return resp, nil
		}}, nil
	}
	// The software limit is the whole certificate signature in Go
	// (ssh.Certificate.SignCert with a Go key of the CA's type); the HSM
	// limit is the signature alone, over the digest of a certificate body of
	// the same size, on the token.
	gk, _, err := goSigner(p.KeyType)
	if err != nil {
		return nil, err
	}
	var signer ssh.Signer
	if isRSA(p.KeyType) {
		s, err := ssh.NewSignerFromSigner(gk)
		if err != nil {
			return nil, err
		}
		signer, err = ssh.NewSignerWithAlgorithms(s.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSASHA512})
		if err != nil {
			return nil, err
		}
	} else if signer, err = ssh.NewSignerFromSigner(gk); err != nil {
		return nil, err
	}
	tmpl := ssh.Certificate{Key: subject, CertType: ssh.UserCert, KeyId: "bench:bench:0123456789abcdef",
		ValidPrincipals: []string{"bench"}, ValidAfter: uint64(time.Now().Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}}}
	w.SoftwareOp = "Go ssh.Certificate.SignCert (" + p.KeyType + ")"
	w.Software = func(context.Context) error {
		cert := tmpl
		cert.Serial = uint64(time.Now().UnixNano())
		return cert.SignCert(rand.Reader, signer)
	}
	probe := tmpl
	if err := probe.SignCert(rand.Reader, signer); err != nil {
		return nil, err
	}
	body := probe.Marshal()
	var opts = sshSignOpts(p.KeyType)
	hw := &workload{}
	if err := signLimits(ctx, env, hw, p.KeyType, body[:len(body)-len(probe.Signature.Blob)], opts); err != nil {
		return nil, err
	}
	w.HSM, w.HSMOp = hw.HSM, hw.HSMOp
	if hw.Close != nil {
		prev := w.Close
		w.Close = func() { prev(); hw.Close() }
	}
	return w, nil
}
