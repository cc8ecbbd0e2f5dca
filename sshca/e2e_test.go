package sshca

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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

// e2e is one sshd on 127.0.0.1 configured from hsmgate's HTTP endpoints.
type e2e struct {
	env   *testEnv
	dir   string
	tools sshtest.Tools
	http  *httptest.Server
	sshd  *sshtest.SSHD
	n     int // request ids
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// fetch GETs one of hsmgate's HTTP endpoints into a file.
func (x *e2e) fetch(t *testing.T, path, file string) {
	t.Helper()
	resp, err := http.Get(x.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	writeFile(t, file, b, 0o644)
}

// refresh reloads sshd's TrustedUserCAKeys and RevokedKeys files from the
// HTTP endpoints (sshd reads both on every authentication).
func (x *e2e) refresh(t *testing.T) {
	x.fetch(t, PathTrustedUserCAKeys, filepath.Join(x.dir, "trusted_user_ca_keys"))
	x.fetch(t, PathKRL, filepath.Join(x.dir, "revoked.krl"))
}

func startE2E(t *testing.T) *e2e {
	x := &e2e{tools: sshtest.Require(t), env: newEnv(t), dir: t.TempDir()}
	x.http = httptest.NewServer(x.env.e.HTTPHandler())
	t.Cleanup(x.http.Close)
	x.env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	x.env.createCA(t, "hosts", hostCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	x.env.createCA(t, "otherhosts", hostCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	x.env.createRole(t, &pb.SSHRole{Name: "web", Ca: "hosts", AllowedPrincipals: []string{"127.0.0.1", "localhost"}})

	// Host key and its certificate from hsmgate.
	hostKey := filepath.Join(x.dir, "host_ed25519")
	hostPub := writePrivateKey(t, hostKey)
	res, err := x.env.e.Sign(context.Background(), hostCT, "web", []*pb.SSHSignItem{{PublicKey: hostPub, Principals: []string{"127.0.0.1"}}})
	if err != nil || res[0].GetError() != nil {
		t.Fatalf("host certificate: %v %v", err, res)
	}
	writeFile(t, hostKey+"-cert.pub", []byte(res[0].GetCertificate()+"\n"), 0o644)
	if err := os.MkdirAll(filepath.Join(x.dir, "principals"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(x.dir, "principals", "root"), []byte("alice\n"), 0o644)
	x.refresh(t)
	x.fetch(t, PathKnownHosts, filepath.Join(x.dir, "known_hosts"))

	x.sshd = sshtest.Start(t, x.tools, x.dir, hostKey)
	return x
}

// writePrivateKey writes a new Ed25519 private key (OpenSSH format, 0600)
// and returns its public key in authorized_keys form.
func writePrivateKey(t *testing.T, path string) string {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, pem.EncodeToMemory(blk), 0o600)
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	s := authorized(t, sp)
	writeFile(t, path+".pub", []byte(s+"\n"), 0o644)
	return s
}

// userKey makes a key, has role sign it (as identity name, with item's
// options) and writes key-cert.pub; it returns the key path and certificate.
func (x *e2e) userKey(t *testing.T, name, role string, it *pb.SSHSignItem) (string, *ssh.Certificate) {
	t.Helper()
	path := filepath.Join(x.dir, "id_"+name)
	it.PublicKey = writePrivateKey(t, path)
	x.n++
	x.env.caller.set(Caller{Name: name, RequestID: fmt.Sprintf("req-%d", x.n)})
	c, res, err := x.env.signOne(t, userCT, role, it)
	if err != nil {
		t.Fatalf("sign %s: %v", name, err)
	}
	writeFile(t, path+"-cert.pub", []byte(res.GetCertificate()+"\n"), 0o644)
	return path, c
}

// login runs `ssh ... root@127.0.0.1 true` with key and known_hosts file kh;
// it returns the output and whether ssh exited 0.
func (x *e2e) login(t *testing.T, key, kh string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, x.tools.SSH, "-F", "/dev/null",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+kh, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "CertificateFile="+key+"-cert.pub", "-i", key,
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(x.sshd.Port), "root@127.0.0.1", "true")
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

func TestEndToEndOpenSSH(t *testing.T) {
	x := startE2E(t)
	kh := filepath.Join(x.dir, "known_hosts")
	ctx := context.Background()
	x.env.createRole(t, &pb.SSHRole{
		Name: "eng", Ca: "users",
		AllowedPrincipals: []string{"{{identity.name}}"}, DefaultPrincipals: []string{"{{identity.name}}"},
		MaxTtl: durationpb.New(8 * time.Hour), DefaultTtl: durationpb.New(time.Hour),
		AllowedExtensions: []string{"permit-pty", "permit-agent-forwarding"},
		DefaultExtensions: map[string]string{"permit-pty": ""},
	})
	x.env.createRole(t, &pb.SSHRole{Name: "forced", Ca: "users", AllowedPrincipals: []string{"alice"}, DefaultPrincipals: []string{"alice"},
		CriticalOptions: map[string]string{"force-command": "echo forced-command-ran"}})
	x.env.createRole(t, &pb.SSHRole{Name: "src-ok", Ca: "users", AllowedPrincipals: []string{"alice"}, DefaultPrincipals: []string{"alice"},
		CriticalOptions: map[string]string{"source-address": "127.0.0.1/32"}})
	x.env.createRole(t, &pb.SSHRole{Name: "src-bad", Ca: "users", AllowedPrincipals: []string{"alice"}, DefaultPrincipals: []string{"alice"},
		CriticalOptions: map[string]string{"source-address": "10.9.9.9/32"}})

	must := func(t *testing.T, key string, want bool) string {
		t.Helper()
		out, ok := x.login(t, key, kh)
		if ok != want {
			t.Fatalf("login: got success=%v, want %v; ssh output: %s", ok, want, out)
		}
		return out
	}

	t.Run("right principal logs in", func(t *testing.T) {
		key, _ := x.userKey(t, "alice", "eng", &pb.SSHSignItem{})
		must(t, key, true)
	})
	t.Run("wrong principal refused", func(t *testing.T) {
		key, c := x.userKey(t, "bob", "eng", &pb.SSHSignItem{})
		if c.ValidPrincipals[0] != "bob" {
			t.Fatalf("principals %v", c.ValidPrincipals)
		}
		must(t, key, false)
	})
	t.Run("expired certificate refused", func(t *testing.T) {
		now := x.env.clock.Now()
		x.env.clock.Set(now.Add(-48 * time.Hour))
		key, _ := x.userKey(t, "alice", "eng", &pb.SSHSignItem{Ttl: durationpb.New(time.Hour)})
		x.env.clock.Set(now)
		must(t, key, false)
	})
	t.Run("revoked by serial refused", func(t *testing.T) {
		key, c := x.userKey(t, "alice", "eng", &pb.SSHSignItem{})
		must(t, key, true)
		if _, err := x.env.e.Revoke(ctx, &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_Serial{Serial: c.Serial}}); err != nil {
			t.Fatal(err)
		}
		x.refresh(t)
		must(t, key, false)
	})
	t.Run("revoked by key ID refused", func(t *testing.T) {
		key, c := x.userKey(t, "alice", "eng", &pb.SSHSignItem{})
		must(t, key, true)
		if _, err := x.env.e.Revoke(ctx, &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_KeyId{KeyId: c.KeyId}}); err != nil {
			t.Fatal(err)
		}
		x.refresh(t)
		must(t, key, false)
	})
	t.Run("force-command honoured", func(t *testing.T) {
		key, _ := x.userKey(t, "alice", "forced", &pb.SSHSignItem{})
		if out := must(t, key, true); !strings.Contains(out, "forced-command-ran") {
			t.Errorf("output %q, want the forced command's", out)
		}
	})
	t.Run("source-address honoured", func(t *testing.T) {
		key, _ := x.userKey(t, "alice", "src-ok", &pb.SSHSignItem{})
		must(t, key, true)
		key, _ = x.userKey(t, "alice", "src-bad", &pb.SSHSignItem{})
		must(t, key, false)
	})
	t.Run("host certificate via @cert-authority", func(t *testing.T) {
		key, _ := x.userKey(t, "alice", "eng", &pb.SSHSignItem{})
		must(t, key, true)
		other := filepath.Join(x.dir, "known_hosts_other")
		x.fetch(t, PathKnownHosts+"?ca=otherhosts", other)
		if out, ok := x.login(t, key, other); ok || !strings.Contains(out, "erification failed") {
			t.Errorf("with another CA in known_hosts: success=%v, output %q; want host key verification failure", ok, out)
		}
	})
	t.Run("ssh-keygen -L shows what the role allows", func(t *testing.T) {
		key, c := x.userKey(t, "alice", "eng", &pb.SSHSignItem{})
		out, err := exec.Command(x.tools.Keygen, "-L", "-f", key+"-cert.pub").CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen -L: %v: %s", err, out)
		}
		got := sshtest.ParseKeygenL(string(out))
		from := time.Unix(int64(c.ValidAfter), 0).Format("2006-01-02T15:04:05")
		to := time.Unix(int64(c.ValidBefore), 0).Format("2006-01-02T15:04:05")
		want := map[string]string{
			"Type":             "ssh-ed25519-cert-v01@openssh.com user certificate",
			"Key ID":           fmt.Sprintf(`"alice:eng:req-%d"`, x.n),
			"Serial":           strconv.FormatUint(c.Serial, 10),
			"Valid":            "from " + from + " to " + to,
			"Principals":       "alice",
			"Critical Options": "(none)",
			"Extensions":       "permit-pty",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: got %q, want %q", k, got[k], v)
			}
		}
		if !strings.HasPrefix(got["Signing CA"], "ECDSA SHA256:") {
			t.Errorf("Signing CA: got %q, want the ECDSA user CA", got["Signing CA"])
		}
		if d := c.ValidBefore - c.ValidAfter; d != uint64((time.Hour + DefaultBackdate).Seconds()) {
			t.Errorf("validity of %ds, want the role's 1h plus the 1m backdate", d)
		}
	})
	// Last: rotation changes the trusted keys for every later subtest.
	t.Run("CA rotated out refused", func(t *testing.T) {
		oldKey, _ := x.userKey(t, "alice", "eng", &pb.SSHSignItem{})
		if _, err := x.env.e.RotateCA(ctx, "users", 0); err != nil {
			t.Fatal(err)
		}
		x.refresh(t)
		must(t, oldKey, true) // overlap: the retiring key is still trusted
		newKey, _ := x.userKey(t, "alice2", "eng", &pb.SSHSignItem{Principals: []string{"alice2"}})
		writeFile(t, filepath.Join(x.dir, "principals", "root"), []byte("alice\nalice2\n"), 0o644)
		must(t, newKey, true)
		if _, err := x.env.e.RetireCAKey(ctx, "users", 1); err != nil {
			t.Fatal(err)
		}
		x.refresh(t)
		must(t, oldKey, false)
		must(t, newKey, true)
	})
}
