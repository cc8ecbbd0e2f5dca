package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// p11KitServer is a running `p11-kit server` exporting one token.
type p11KitServer struct {
	// Address is its P11_KIT_SERVER_ADDRESS (unix:path=...).
	Address string
	// Client is the path of p11-kit-client.so, the PKCS#11 module that
	// forwards every call to the server named by P11_KIT_SERVER_ADDRESS.
	Client string
}

// p11KitClientPaths are where Debian's p11-kit-modules puts the client.
var p11KitClientPaths = []string{
	"/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
	"/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
	"/usr/lib/pkcs11/p11-kit-client.so",
	"/usr/lib64/pkcs11/p11-kit-client.so",
}

// startP11Kit starts `p11-kit server` (p11-kit 0.24.1: `p11-kit server
// --provider MODULE -n SOCKET -f pkcs11:token=LABEL`) exporting the SoftHSM
// token with this label, made by hsmtest in this process's SoftHSM
// configuration (SOFTHSM2_CONF, which the server inherits). Without p11-kit
// it fails the test in CI and skips it elsewhere. The server is killed in
// t.Cleanup.
func startP11Kit(t *testing.T, softhsmLib, label string) *p11KitServer {
	t.Helper()
	bin, err := exec.LookPath("p11-kit")
	client := ""
	for _, p := range p11KitClientPaths {
		if _, err := os.Stat(p); err == nil {
			client = p
			break
		}
	}
	if err != nil || client == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("p11-kit (Debian p11-kit) and p11-kit-client.so (p11-kit-modules) are required in CI: p11-kit %v, client %q", err, client)
		}
		t.Skipf("p11-kit or p11-kit-client.so not installed (apt-get install p11-kit p11-kit-modules)")
	}
	sock := filepath.Join(t.TempDir(), "p11kit.sock")
	cmd := exec.Command(bin, "server", "-f", "-n", sock, "--provider", softhsmLib, "pkcs11:token="+label)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+os.Getenv("SOFTHSM2_CONF"))
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("p11-kit server: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	})
	// It prints, in the foreground too, the shell lines
	// "P11_KIT_SERVER_ADDRESS=unix:path=...; export P11_KIT_SERVER_ADDRESS;".
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "P11_KIT_SERVER_ADDRESS="); ok {
				v, _, _ = strings.Cut(v, ";")
				addr <- v
			}
		}
	}()
	select {
	case a := <-addr:
		return &p11KitServer{Address: a, Client: client}
	case err := <-waited:
		t.Fatalf("p11-kit server exited (%v) before printing its address; stderr:\n%s", err, stderr)
	case <-time.After(time.Minute): // a hang guard
		t.Fatalf("p11-kit server printed no address in a minute; stderr:\n%s", stderr)
	}
	return nil
}

// TestP11KitRemoting: `p11-kit server` exports one SoftHSM token on a unix
// socket, as a network HSM's server would; three replica processes on etcd
// load p11-kit-client.so with P11_KIT_SERVER_ADDRESS set (each its own
// client connection), and share that token.
//
// What p11-kit 0.24.1 (Debian bookworm) forwards, and so what works: the
// KEK and audit key made by `hsmgate init` over the socket, the servers
// start, a CA key made through one replica signs certificates through the
// others, transit keys of hsm residency (ECDSA) sign on one replica and
// verify on another, the HSM's random numbers. What it does not: its RPC
// filters the mechanism list and refuses every AES mechanism with a
// parameter or that it does not know (CKM_AES_KEY_WRAP_PAD, the KEK's KWP;
// CKM_AES_GCM; CKM_AES_KEY_WRAP; CKM_AES_CBC) with CKR_MECHANISM_INVALID,
// so wrapped transit keys (the default) cannot be made. The test checks that
// such a create fails cleanly and leaves nothing behind; the multi-replica
// fault test shares a SoftHSM token directory instead (deploy/README.md,
// "Trying replicas without a network HSM").
func TestP11KitRemoting(t *testing.T) {
	hc := hsmtest.Config(t)
	srv := startP11Kit(t, hc.Library, hc.TokenLabel)
	rs := startReplicas(t, replicaOpts{
		members: 1, library: srv.Client, tokenLabel: hc.TokenLabel, pin: hc.PIN,
		env: []string{"P11_KIT_SERVER_ADDRESS=" + srv.Address},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r0, r1, r2 := rs.Replicas[0], rs.Replicas[1], rs.Replicas[2]

	t.Run("PKI: a CA key made through one replica issues through the others", func(t *testing.T) {
		root, err := r0.PKI.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{
			Name: "root", KeyType: "ecdsa-p256", Subject: &hsmgatev1.Subject{CommonName: "p11-kit Root"},
			Ttl: durationpb.New(24 * time.Hour), MakeDefault: true,
		})
		if err != nil {
			t.Fatalf("CreateRootIssuer on %s: %v", r0.Name, err)
		}
		roots := x509.NewCertPool()
		rootCert, err := x509.ParseCertificate(root.GetIssuer().GetCertificate())
		if err != nil {
			t.Fatalf("root certificate: %v", err)
		}
		roots.AddCert(rootCert)
		if _, err := r0.PKI.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: &hsmgatev1.Role{
			Name: "web", AllowedDomains: []string{"p11kit.example.com"}, AllowSubdomains: true, ServerFlag: true,
			Ttl: durationpb.New(time.Hour), MaxTtl: durationpb.New(time.Hour),
		}}); err != nil {
			t.Fatalf("CreateRole: %v", err)
		}
		for _, r := range []*replica{r1, r2} {
			resp, err := r.PKI.Issue(ctx, &hsmgatev1.IssueRequest{Role: "web", CommonName: r.Name + ".p11kit.example.com"})
			if err != nil {
				t.Fatalf("Issue on %s: %v", r.Name, err)
			}
			cert, err := x509.ParseCertificate(resp.GetCertificate())
			if err != nil {
				t.Fatalf("Issue on %s: %v", r.Name, err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: r.Name + ".p11kit.example.com"}); err != nil {
				t.Errorf("certificate issued on %s: %v, want it to chain to the root made on %s", r.Name, err, r0.Name)
			}
		}
	})

	t.Run("transit: an hsm-resident key signs on one replica, verifies on another", func(t *testing.T) {
		if _, err := r1.Transit.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{
			Name: "signer", Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256, Residency: hsmgatev1.TransitResidency_TRANSIT_RESIDENCY_HSM,
		}); err != nil {
			t.Fatalf("CreateKey (hsm residency) on %s: %v", r1.Name, err)
		}
		msg := []byte("signed through p11-kit")
		sr, err := r2.Transit.SignData(ctx, &hsmgatev1.SignDataRequest{Name: "signer", Items: []*hsmgatev1.SignItem{{Input: msg}}})
		if err != nil || len(sr.GetResults()) != 1 || sr.GetResults()[0].GetError() != nil {
			t.Fatalf("SignData on %s: %v %v", r2.Name, err, sr.GetResults())
		}
		vr, err := r0.Transit.VerifySignature(ctx, &hsmgatev1.VerifySignatureRequest{Name: "signer", Items: []*hsmgatev1.VerifyItem{{Input: msg, Signature: sr.GetResults()[0].GetSignature()}}})
		if err != nil || len(vr.GetResults()) != 1 || !vr.GetResults()[0].GetValid() {
			t.Errorf("VerifySignature on %s of a signature made on %s: got %v %v, want valid", r0.Name, r2.Name, err, vr.GetResults())
		}
		rr, err := r0.Transit.GenerateRandom(ctx, &hsmgatev1.GenerateRandomRequest{Bytes: 32})
		if err != nil || len(rr.GetRandom()) != 32 {
			t.Errorf("GenerateRandom: got %d bytes, %v; want 32", len(rr.GetRandom()), err)
		}
	})

	t.Run("transit: a wrapped key needs KWP, which p11-kit 0.24.1 does not forward", func(t *testing.T) {
		_, err := r1.Transit.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: "wrapped", Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
		if err == nil {
			// A p11-kit that forwards KWP: then encrypt on one replica,
			// decrypt on another works over it too.
			t.Logf("this p11-kit forwards CKM_AES_KEY_WRAP_PAD: wrapped keys work over it")
			er, err := r1.Transit.Encrypt(ctx, &hsmgatev1.EncryptRequest{Name: "wrapped", Items: []*hsmgatev1.EncryptItem{{Plaintext: []byte("x")}}})
			if err != nil {
				t.Fatalf("Encrypt on %s: %v", r1.Name, err)
			}
			dr, err := r2.Transit.Decrypt(ctx, &hsmgatev1.DecryptRequest{Name: "wrapped", Items: []*hsmgatev1.DecryptItem{{Ciphertext: er.GetResults()[0].GetCiphertext()}}})
			if err != nil || string(dr.GetResults()[0].GetPlaintext()) != "x" {
				t.Errorf("Decrypt on %s: %v %v", r2.Name, err, dr.GetResults())
			}
			return
		}
		t.Logf("CreateKey aes256-gcm (wrapped) over p11-kit-client: %v (the KEK's CKM_AES_KEY_WRAP_PAD: CKR_MECHANISM_INVALID)", err)
		if c := status.Code(err); c == codes.OK || c == codes.DeadlineExceeded || c == codes.Unknown {
			t.Errorf("CreateKey over p11-kit without KWP: got code %v, want a mapped error", c)
		}
		for _, r := range rs.Replicas {
			if _, err := r.Transit.GetKey(ctx, &hsmgatev1.GetKeyRequest{Name: "wrapped"}); status.Code(err) != codes.NotFound {
				t.Errorf("GetKey of the failed create on %s: got %v, want NotFound (a failed create leaves nothing)", r.Name, err)
			}
		}
	})
}
