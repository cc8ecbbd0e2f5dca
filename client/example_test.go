package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/client/internal/hsmgatetest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestMain runs every test and example of this package against a real
// `hsmgate dev` server with the keys, issuer and roles the examples use.
func TestMain(m *testing.M) { os.Exit(hsmgatetest.Main(m, Setup)) }

// Setup creates what the examples use: transit keys "example"
// (aes256-gcm) and "example-signing" (ed25519), a default root issuer with
// a role "web" for localhost, an SSH user CA "users" with a role
// "engineers" for principal alice.
func Setup(ctx context.Context, c *client.Client) error {
	for name, typ := range map[string]pb.TransitKeyType{
		"example":         pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM,
		"example-signing": pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519,
	} {
		if _, err := c.Transit.Stub().CreateKey(ctx, &pb.CreateKeyRequest{Name: name, Type: typ}); err != nil {
			return err
		}
	}
	if _, err := c.PKI.Stub().CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{Name: "root",
		Subject: &pb.Subject{CommonName: "Example Root"}, MakeDefault: true}); err != nil {
		return err
	}
	if _, err := c.PKI.Stub().CreateRole(ctx, &pb.CreateRoleRequest{Role: &pb.Role{Name: "web",
		AllowLocalhost: true, AllowIpSans: true, ServerFlag: true, AllowedDomains: []string{"example.com"}, AllowSubdomains: true}}); err != nil {
		return err
	}
	if _, err := c.SSH.Stub().CreateSSHCA(ctx, &pb.CreateSSHCARequest{Name: "users",
		CertType: pb.SSHCertType_SSH_CERT_TYPE_USER, KeyType: pb.SSHKeyType_SSH_KEY_TYPE_ED25519}); err != nil {
		return err
	}
	_, err := c.SSH.Stub().CreateSSHRole(ctx, &pb.CreateSSHRoleRequest{Role: &pb.SSHRole{Name: "engineers", Ca: "users",
		CertType: pb.SSHCertType_SSH_CERT_TYPE_USER, AllowedPrincipals: []string{"alice"}, DefaultPrincipals: []string{"alice"}}})
	return err
}

// Encrypt and decrypt with a transit key; the key never leaves the server.
// FromEnv reads HSMGATE_ADDR, HSMGATE_CACERT and HSMGATE_TOKEN, which
// `eval "$(hsmgate dev)"` sets.
func Example() {
	ctx := context.Background()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	aad := client.WithAAD([]byte("order 42"))
	ct, err := c.Transit.EncryptText(ctx, "example", []byte("card 4111-1111"), aad)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ct[:len("hsmgate:v1:")])

	pt, err := c.Transit.DecryptText(ctx, "example", ct, aad)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(pt))

	_, err = c.Transit.DecryptText(ctx, "example", ct) // without the AAD
	fmt.Println(errors.Is(err, client.ErrInvalidArgument))

	_, err = c.Transit.Encrypt(ctx, "no-such-key", []byte("x"))
	fmt.Println(errors.Is(err, client.ErrNotFound))
	// Output:
	// hsmgate:v1:
	// card 4111-1111
	// true
	// true
}

// Many goroutines each encrypting one item share batch RPCs.
func ExampleTransit_Batcher() {
	ctx := context.Background()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	b := c.Transit.Batcher("example", client.BatcherOptions{MaxItems: 64, MaxWait: 5 * time.Millisecond})
	defer b.Close()

	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 64 {
		wg.Go(func() {
			msg := fmt.Appendf(nil, "message %d", i)
			ct, err := b.Encrypt(ctx, msg, nil)
			if err != nil {
				log.Print(err)
				return
			}
			pt, err := b.Decrypt(ctx, ct, nil)
			if err != nil || string(pt) != string(msg) {
				log.Print("round trip failed: ", err)
				return
			}
			mu.Lock()
			ok++
			mu.Unlock()
		})
	}
	wg.Wait()
	fmt.Println(ok, "round trips")
	// Output: 64 round trips
}

// Envelope encryption: the data is sealed locally under a fresh data key,
// which is stored wrapped by the transit key beside it.
func ExampleTransit_Envelope() {
	ctx := context.Background()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	env := c.Transit.Envelope("example")
	blob, err := env.Encrypt(ctx, []byte("a large document"), []byte("doc-7"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(blob[:4]))
	pt, err := env.Decrypt(ctx, blob, []byte("doc-7"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(pt))
	blob[len(blob)-1] ^= 1
	_, err = env.Decrypt(ctx, blob, []byte("doc-7"))
	fmt.Println(errors.Is(err, client.ErrInvalidArgument))
	// Output:
	// HGE1
	// a large document
	// true
}

// Sign with a transit key and verify the signature.
func ExampleTransit_Sign() {
	ctx := context.Background()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sig, err := c.Transit.Sign(ctx, "example-signing", []byte("release 1.2.3"))
	if err != nil {
		log.Fatal(err)
	}
	text := sig.String() // hsmgate:v1:<base64>
	parsed, err := client.ParseVersioned(text)
	if err != nil {
		log.Fatal(err)
	}
	valid, err := c.Transit.Verify(ctx, "example-signing", []byte("release 1.2.3"), parsed)
	fmt.Println(valid, err)
	valid, err = c.Transit.Verify(ctx, "example-signing", []byte("release 6.6.6"), parsed)
	fmt.Println(valid, err)
	// Output:
	// true <nil>
	// false <nil>
}

// Issue a certificate with a key generated here (it never leaves this
// process), serve HTTPS with it, and reach that server trusting the CA
// chain fetched through the client.
func ExamplePKI_Issue() {
	ctx := context.Background()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	cert, err := c.PKI.Issue(ctx, client.CertificateRequest{
		Role: "web", CommonName: "localhost", DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, TTL: time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	tlsCert, err := cert.TLSCertificate()
	if err != nil {
		log.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{tlsCert}})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over TLS")
	})}
	go srv.Serve(ln)
	defer srv.Close()

	roots, err := c.PKI.RootPool(ctx, "") // the default issuer's root
	if err != nil {
		log.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Get("https://" + ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(cert.Leaf.Subject.CommonName, resp.Status, string(body))
	// Output: localhost 200 OK hello over TLS
}

// Sign an SSH public key; the certificate is written beside the key, where
// ssh finds it.
func ExampleSSH_SignKeyFile() {
	ctx := context.Background()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	dir, err := os.MkdirTemp("", "ssh-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		log.Fatal(err)
	}
	key := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(key+".pub", ssh.MarshalAuthorizedKey(sshPub), 0o644); err != nil {
		log.Fatal(err)
	}

	cert, path, err := c.SSH.SignKeyFile(ctx, key, client.SSHSignRequest{Role: "engineers", TTL: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(path), cert.Cert.ValidPrincipals, cert.Cert.CertType == ssh.UserCert)
	// Output: id_ed25519-cert.pub [alice] true
}
