package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca"
	"github.com/hsmgate/hsmgate/sshca/krl"
)

// sshTestClient serves a real SSH CA (SoftHSM, bbolt) in process and returns a client.
func sshTestClient(t *testing.T) *client.SSH {
	t.Helper()
	st, err := bbolt.Open(filepath.Join(t.TempDir(), "s.db"), bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e, err := sshca.New(context.Background(), sshca.Config{
		Store: st, Keys: hsmtest.Module(t),
		Caller: func(context.Context) (sshca.Caller, error) { return sshca.Caller{Name: "alice", RequestID: "r1"}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	hsmgatev1.RegisterSSHCAServiceServer(srv, sshca.NewService(e))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	// The public client over the in-process listener (plaintext: bufconn).
	c, err := client.New(context.Background(), client.Options{Addr: "passthrough:///bufnet", ServerName: "bufnet",
		DialOptions: []grpc.DialOption{
			grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.SSH
}

func TestSSHSignWritesCertificate(t *testing.T) {
	s := sshTestClient(t)
	c := s.Stub()
	ctx := context.Background()
	if _, err := c.CreateSSHCA(ctx, &hsmgatev1.CreateSSHCARequest{Name: "users", CertType: hsmgatev1.SSHCertType_SSH_CERT_TYPE_USER}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSSHRole(ctx, &hsmgatev1.CreateSSHRoleRequest{Role: &hsmgatev1.SSHRole{
		Name: "default", Ca: "users", AllowedPrincipals: []string{"{{identity.name}}", "deploy"}, DefaultPrincipals: []string{"{{identity.name}}"},
	}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	keyFile := filepath.Join(dir, "id_ed25519.pub")
	if err := os.WriteFile(keyFile, ssh.MarshalAuthorizedKey(sp), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	o := &signOptions{role: "default", principals: []string{"alice", "deploy"}, ttl: 2 * time.Hour}
	if err := sshSignVia(ctx, s, o, keyFile, &out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "id_ed25519-cert.pub"))
	if err != nil {
		t.Fatalf("certificate not written next to the key: %v", err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	cert := k.(*ssh.Certificate)
	if got, want := strings.Join(cert.ValidPrincipals, ","), "alice,deploy"; got != want {
		t.Errorf("principals: got %q, want %q", got, want)
	}
	if got, want := time.Duration(cert.ValidBefore-cert.ValidAfter)*time.Second, 2*time.Hour+sshca.DefaultBackdate; got != want {
		t.Errorf("validity: got %v, want %v", got, want)
	}
	for _, want := range []string{"principals:   alice, deploy", "valid:", "(2h1m0s)", "serial:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q lacks %q", out.String(), want)
		}
	}
	o = &signOptions{role: "default", principals: []string{"root"}}
	if err := sshSignVia(ctx, s, o, keyFile, &out); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("principal root: got %v, want a refusal", err)
	}
	// A negative lifetime is refused, not silently the role's default.
	o = &signOptions{role: "default", principals: []string{"deploy"}, ttl: -time.Hour}
	if err := sshSignVia(ctx, s, o, keyFile, &out); err == nil || !strings.Contains(err.Error(), "positive") {
		t.Errorf("--ttl -1h: got %v, want a refusal", err)
	}

	// Revoke by key file and describe the KRL.
	ro := &revokeOptions{keyFile: filepath.Join(dir, "id_ed25519-cert.pub")}
	req, err := ro.request(&cobra.Command{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeSSH(ctx, req); err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetKRL(ctx, &hsmgatev1.GetKRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	parsed, err := krl.Parse(resp.GetKrl())
	if err != nil {
		t.Fatal(err)
	}
	parsed.Normalize()
	if err := describeKRL(&out, parsed); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "# KRL version 2") || !strings.Contains(out.String(), "key: ssh-ed25519 ") {
		t.Errorf("KRL description:\n%s", out.String())
	}
}

// sshSignVia is `hsmgate ssh sign` over the client s: the request, the
// call, the certificate file and the table.
func sshSignVia(ctx context.Context, s *client.SSH, o *signOptions, keyFile string, w io.Writer) error {
	pub, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	req, err := sshSignRequest(o, false, keyFile, pub)
	if err != nil {
		return err
	}
	c, err := s.Sign(ctx, req)
	if err != nil {
		return err
	}
	path, err := sshWriteCert(o, keyFile, c)
	if err != nil {
		return err
	}
	return sshPrintSigned(w, path, sshCertDoc(c))
}

func TestSSHCommandTree(t *testing.T) {
	cmd := newSSHCmd()
	for _, path := range [][]string{{"sign"}, {"host", "sign"}, {"ca", "pub"}, {"ca", "create"}, {"ca", "rotate"}, {"ca", "retire"}, {"role", "write"}, {"revoke"}, {"krl"}} {
		c, _, err := cmd.Find(path)
		if err != nil || c.Name() != path[len(path)-1] {
			t.Errorf("hsmgate ssh %s: %v", strings.Join(path, " "), err)
		}
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	if _, err := userKeyFile(nil); err == nil {
		t.Error("userKeyFile with no keys: no error")
	}
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "id_rsa.pub"), nil, 0o644)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ecdsa.pub"), nil, 0o644)
	if got, err := userKeyFile(nil); err != nil || got != filepath.Join(home, ".ssh", "id_ecdsa.pub") {
		t.Errorf("userKeyFile: got %q, %v; want id_ecdsa.pub", got, err)
	}
	if got := certPath("/home/a/.ssh/id_ed25519.pub"); got != "/home/a/.ssh/id_ed25519-cert.pub" {
		t.Errorf("certPath: got %q", got)
	}
}
