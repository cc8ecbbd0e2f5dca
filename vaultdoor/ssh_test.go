package vaultdoor_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/sshtest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// writeSSHKey writes a new Ed25519 private key (OpenSSH format, 0600) and
// returns its public key in authorized_keys form.
func writeSSHKey(t *testing.T, path string) string {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

func (e *env) fetchTo(t *testing.T, path, file string) []byte {
	t.Helper()
	code, body := e.do("GET", path, "", nil)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return body
}

// TestSSHSignKeyWithSSHD: vault/api's SSH helper signs a host key and a user
// key through the door; a real sshd trusting the door's ssh/public_key
// accepts the user certificate.
func TestSSHSignKeyWithSSHD(t *testing.T) {
	tools := sshtest.Require(t)
	e := newEnv(t)
	ctx := e.rootCtx
	sc := e.sshService()
	for _, ca := range []*pb.CreateSSHCARequest{
		{Name: "users", CertType: pb.SSHCertType_SSH_CERT_TYPE_USER, KeyType: pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256},
		{Name: "hosts", CertType: pb.SSHCertType_SSH_CERT_TYPE_HOST, KeyType: pb.SSHKeyType_SSH_KEY_TYPE_ED25519},
	} {
		if _, err := sc.CreateSSHCA(ctx, ca); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*pb.SSHRole{
		{Name: "eng", Ca: "users", CertType: pb.SSHCertType_SSH_CERT_TYPE_USER, AllowedPrincipals: []string{"alice", "bob"},
			DefaultTtl: durationpb.New(time.Hour), MaxTtl: durationpb.New(8 * time.Hour),
			AllowedExtensions: []string{"permit-pty"}},
		{Name: "web", Ca: "hosts", CertType: pb.SSHCertType_SSH_CERT_TYPE_HOST, AllowedPrincipals: []string{"127.0.0.1"}},
	} {
		if _, err := sc.CreateSSHRole(ctx, &pb.CreateSSHRoleRequest{Role: r}); err != nil {
			t.Fatal(err)
		}
	}
	e.policy("ssh-user", map[string][]string{"ssh/roles/eng": {"ssh-sign"}})
	e.policy("ssh-host", map[string][]string{"ssh/roles/web": {"ssh-sign"}})
	dir := t.TempDir()

	// The host certificate, through the door with cert_type=host.
	hostKey := filepath.Join(dir, "host_ed25519")
	hostPub := writeSSHKey(t, hostKey)
	hs, err := e.vaultClient(e.token("ssh-host")).SSHWithMountPoint("ssh").SignKey("web", map[string]any{
		"public_key": hostPub, "cert_type": "host", "valid_principals": "127.0.0.1",
	})
	if err != nil {
		t.Fatalf("host SignKey: %v", err)
	}
	if err := os.WriteFile(hostKey+"-cert.pub", []byte(hs.Data["signed_key"].(string)), 0o644); err != nil {
		t.Fatal(err)
	}
	// sshd trusts the user CA key the door publishes (unauthenticated, as Vault).
	e.fetchTo(t, "/v1/ssh/public_key", filepath.Join(dir, "trusted_user_ca_keys"))
	e.fetchTo(t, "/v1/ssh/krl", filepath.Join(dir, "revoked.krl"))
	e.fetchTo(t, "/v1/ssh/known-hosts", filepath.Join(dir, "known_hosts"))
	if err := os.MkdirAll(filepath.Join(dir, "principals"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "principals", "root"), []byte("alice\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sshd := sshtest.Start(t, tools, dir, hostKey)

	userSSH := e.vaultClient(e.token("ssh-user")).SSHWithMountPoint("ssh")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	login := func(t *testing.T, name, principal string) (string, bool) {
		t.Helper()
		key := filepath.Join(dir, "id_"+name)
		pub := writeSSHKey(t, key)
		s, err := userSSH.SignKey("eng", map[string]any{
			"public_key": pub, "valid_principals": principal, "ttl": "30m", "cert_type": "user",
			"extensions": map[string]string{"permit-pty": ""},
		})
		if err != nil {
			t.Fatalf("SignKey: %v", err)
		}
		signed := s.Data["signed_key"].(string)
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(signed))
		if err != nil {
			t.Fatal(err)
		}
		cert := pk.(*ssh.Certificate)
		if got := strconv.FormatUint(cert.Serial, 16); got != s.Data["serial_number"] {
			t.Errorf("serial_number: got %v, want %s", s.Data["serial_number"], got)
		}
		if d := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; d < 30*time.Minute || d > 31*time.Minute {
			t.Errorf("validity: got %s, want 30m (plus backdate)", d)
		}
		if err := os.WriteFile(key+"-cert.pub", []byte(signed), 0o644); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(cctx, tools.SSH, "-F", empty,
			"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile="+filepath.Join(dir, "known_hosts"), "-o", "GlobalKnownHostsFile="+empty,
			"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
			"-o", "CertificateFile="+key+"-cert.pub", "-i", key,
			"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
			"-p", strconv.Itoa(sshd.Port), "root@127.0.0.1", "true").CombinedOutput()
		return string(out), err == nil
	}
	t.Run("signed user key logs in", func(t *testing.T) {
		if out, ok := login(t, "alice", "alice"); !ok {
			t.Fatalf("got refused (%s), want sshd to accept the certificate", out)
		}
	})
	t.Run("principal sshd does not map is refused", func(t *testing.T) {
		out, ok := login(t, "bob", "bob")
		if ok || !strings.Contains(out, "Permission denied") {
			t.Fatalf("got success=%v (%s), want sshd's Permission denied", ok, out)
		}
	})
	t.Run("principal outside the role answers 400", func(t *testing.T) {
		_, err := userSSH.SignKey("eng", map[string]any{"public_key": writeSSHKey(t, filepath.Join(dir, "id_x")), "valid_principals": "root"})
		if err == nil || !strings.Contains(err.Error(), "Code: 400") {
			t.Fatalf("got %v, want 400", err)
		}
	})
}
