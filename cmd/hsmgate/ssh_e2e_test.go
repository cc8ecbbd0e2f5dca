package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/internal/sshtest"
	"github.com/hsmgate/hsmgate/sshca"
)

// TestSSHE2E is issue 6's "Checked by" on the full binary: a real `hsmgate
// dev` process, every step through the CLI (each verb its own process) and
// the HTTPS endpoints, and real OpenSSH. sshd on 127.0.0.1 takes
// TrustedUserCAKeys, RevokedKeys (the empty KRL from the start) and the
// host certificate from hsmgate; `ssh` trusts the host through the
// @cert-authority line of /v1/ssh/known-hosts. Each refusal is checked
// against the reason sshd logs for it where sshd logs one at VERBOSE.
func TestSSHE2E(t *testing.T) {
	requireSoftHSM(t)
	x := startSSHE2E(t)
	hg := x.hg

	t.Run("right principal logs in", func(t *testing.T) {
		// Also shows sshd accepts the KRL fetched before any revocation
		// (with RevokedKeys unreadable it refuses every key).
		key, c := x.sign(t, "right", "--role", "eng", "--principal", "alice")
		out := x.mustLogin(t, key, c, "id", "-un")
		if strings.TrimSpace(out) != "root" {
			t.Errorf("remote id -un: got %q, want root (alice is root's authorized principal)", out)
		}
	})
	t.Run("wrong principal refused", func(t *testing.T) {
		key, c := x.sign(t, "wrong", "--role", "eng", "--principal", "bob")
		if got := strings.Join(c.ValidPrincipals, ","); got != "bob" {
			t.Fatalf("principals: got %q, want bob", got)
		}
		x.mustRefuse(t, key, "Certificate does not contain an authorized principal")
	})
	t.Run("expired certificate refused", func(t *testing.T) {
		key, c := x.sign(t, "expired", "--role", "eng", "--ttl", "1s")
		expiry := time.Unix(int64(c.ValidBefore), 0)
		// Wait for the certificate's own end of validity, bounded by a deadline.
		for deadline := time.Now().Add(10 * time.Second); !time.Now().After(expiry); {
			if time.Now().After(deadline) {
				t.Fatalf("valid_before %v is not within 10s of issuance", expiry)
			}
			time.Sleep(50 * time.Millisecond)
		}
		x.mustRefuse(t, key, "Certificate invalid: expired")
	})
	t.Run("revoked by serial refused", func(t *testing.T) {
		key, c := x.sign(t, "byserial", "--role", "eng")
		x.mustLogin(t, key, c, "true")
		if out := hg(t, "ssh", "revoke", "--serial", strconv.FormatUint(c.Serial, 10), "--reason", "e2e"); !strings.Contains(out, "revoked; KRL version") {
			t.Errorf("ssh revoke --serial: output %q", out)
		}
		x.fetchKRL(t)
		x.mustRefuse(t, key, "revoked by file")
	})
	t.Run("revoked by key ID refused", func(t *testing.T) {
		key, c := x.sign(t, "bykeyid", "--role", "eng")
		other, oc := x.sign(t, "bykeyid-other", "--role", "eng")
		x.mustLogin(t, key, c, "true")
		hg(t, "ssh", "revoke", "--key-id", c.KeyId)
		x.fetchKRL(t)
		x.mustRefuse(t, key, "revoked by file")
		x.mustLogin(t, other, oc, "true") // another key ID of the same CA still works
	})
	t.Run("force-command honoured", func(t *testing.T) {
		key, c := x.sign(t, "forced", "--role", "forced")
		out := x.mustLogin(t, key, c, "echo", "asked-for-this")
		if !strings.Contains(out, "forced-command-ran") || strings.Contains(out, "asked-for-this") {
			t.Errorf("ssh output %q: want only the role's forced command's", out)
		}
	})
	t.Run("source-address honoured", func(t *testing.T) {
		key, c := x.sign(t, "srcok", "--role", "src-ok")
		x.mustLogin(t, key, c, "true")
		key, _ = x.sign(t, "srcbad", "--role", "src-bad")
		x.mustRefuse(t, key, "not from a permitted source address")
	})
	t.Run("host certificate via @cert-authority", func(t *testing.T) {
		key, c := x.sign(t, "hostcheck", "--role", "eng")
		x.mustLogin(t, key, c, "true") // known_hosts holds nothing but @cert-authority lines
		other := filepath.Join(x.dir, "known_hosts_other")
		x.fetch(t, sshca.PathKnownHosts+"?ca=otherhosts", other)
		if out, ok := x.login(t, key, other, "true"); ok || !strings.Contains(out, "Host key verification failed") {
			t.Errorf("with another host CA in known_hosts: success=%v, output %q; want host key verification failure", ok, out)
		}
	})
	t.Run("ssh-keygen -L shows what the role allows", x.checkKeygenL)
	// Last: rotation changes the trusted keys for every later subtest.
	t.Run("CA rotated out refused", x.checkRotation)
}

// checkKeygenL checks that `ssh-keygen -L` shows exactly what the roles allow
// and that requests outside the allow-lists get no certificate.
func (x *sshE2E) checkKeygenL(t *testing.T) {
	for _, tc := range []struct {
		name, role string
		args       []string
		principals string
		extensions string
		options    string
		validity   time.Duration
	}{
		{"role defaults", "eng", nil, "alice", "permit-pty", "(none)", time.Hour + sshca.DefaultBackdate},
		{"all allowed", "eng", []string{"--principal", "alice", "--principal", "bob", "--extension", "permit-pty", "--extension", "permit-agent-forwarding", "--ttl", "2h"},
			"alice,bob", "permit-agent-forwarding,permit-pty", "(none)", 2*time.Hour + sshca.DefaultBackdate},
		{"forced command", "forced", nil, "alice", "(none)", "force-command echo forced-command-ran", time.Hour + sshca.DefaultBackdate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, c := x.sign(t, "keygenl", append([]string{"--role", tc.role}, tc.args...)...)
			got := x.keygenL(t, key+"-cert.pub")
			want := map[string]string{
				"Type":             "ssh-ed25519-cert-v01@openssh.com user certificate",
				"Key ID":           strconv.Quote(c.KeyId),
				"Serial":           strconv.FormatUint(c.Serial, 10),
				"Principals":       tc.principals,
				"Critical Options": tc.options,
				"Extensions":       tc.extensions,
				"Valid": "from " + time.Unix(int64(c.ValidAfter), 0).Format("2006-01-02T15:04:05") +
					" to " + time.Unix(int64(c.ValidBefore), 0).Format("2006-01-02T15:04:05"),
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: got %q, want %q", k, got[k], v)
				}
			}
			if !strings.HasPrefix(got["Signing CA"], "ECDSA SHA256:") {
				t.Errorf("Signing CA: got %q, want the ECDSA P-256 user CA", got["Signing CA"])
			}
			if d := time.Duration(c.ValidBefore-c.ValidAfter) * time.Second; d != tc.validity {
				t.Errorf("validity: got %v, want %v", d, tc.validity)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"principal not allowed", []string{"--role", "eng", "--principal", "root"}},
		{"extension not allowed", []string{"--role", "eng", "--extension", "permit-port-forwarding"}},
		{"critical option not allowed", []string{"--role", "eng", "--option", "force-command=/bin/sh"}},
		{"ttl over max", []string{"--role", "eng", "--ttl", "9h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := x.newKey(t, "refused") + ".pub"
			_, errOut, code := run(t, x.env, append(append([]string{"ssh", "sign"}, tc.args...), pub)...)
			if code != 1 || !strings.Contains(errOut, "not allowed by role") {
				t.Fatalf("ssh sign %v: exit %d, stderr %q; want exit 1 and a role refusal", tc.args, code, errOut)
			}
			if fileExists(certPath(pub)) {
				t.Errorf("a certificate was written despite the refusal (%s)", strings.TrimSpace(errOut))
			}
		})
	}
}

// checkRotation rotates the user CA: during the overlap both keys are
// trusted; once the old key is retired its certificates are refused.
func (x *sshE2E) checkRotation(t *testing.T) {
	oldKey, oc := x.sign(t, "before-rotation", "--role", "eng")
	x.hg(t, "ssh", "ca", "rotate", "users")
	x.fetch(t, sshca.PathTrustedUserCAKeys, filepath.Join(x.dir, "trusted_user_ca_keys"))
	if n := x.trustedKeys(t); n != 2 {
		t.Fatalf("during the overlap TrustedUserCAKeys has %d keys, want old and new", n)
	}
	x.mustLogin(t, oldKey, oc, "true") // overlap: the retiring key is still trusted
	newKey, nc := x.sign(t, "after-rotation", "--role", "eng")
	if ssh.FingerprintSHA256(nc.SignatureKey) == ssh.FingerprintSHA256(oc.SignatureKey) {
		t.Fatal("the certificate signed after rotation is signed by the old key")
	}
	x.mustLogin(t, newKey, nc, "true")
	x.hg(t, "ssh", "ca", "retire", "users", "--version", "1")
	x.fetch(t, sshca.PathTrustedUserCAKeys, filepath.Join(x.dir, "trusted_user_ca_keys"))
	if n := x.trustedKeys(t); n != 1 {
		t.Fatalf("after retiring v1 TrustedUserCAKeys has %d keys, want 1", n)
	}
	x.mustRefuse(t, oldKey, "") // sshd says why only at DEBUG2 ("not listed in TrustedUserCAKeys")
	x.mustLogin(t, newKey, nc, "true")
}

// sshE2E is a `hsmgate dev` and an sshd on 127.0.0.1 configured from it.
type sshE2E struct {
	env     []string // hsmgate client environment
	base    string   // https://HSMGATE_HTTP_ADDR
	http    *http.Client
	dir     string
	tools   sshtest.Tools
	hostKey string
	sshd    *sshtest.SSHD
}

func startSSHE2E(t *testing.T) *sshE2E {
	tools := sshtest.Require(t)
	dev := startDev(t, filepath.Join(t.TempDir(), "state"))
	x := &sshE2E{env: dev.env(), dir: t.TempDir(), tools: tools}
	x.base = "https://" + dev.exports[client.EnvHTTPAddr]
	pem, err := os.ReadFile(dev.exports[client.EnvCACert])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no certificate", dev.exports[client.EnvCACert])
	}
	x.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(x.http.CloseIdleConnections)

	x.hg(t, "ssh", "ca", "create", "users", "--type", "user", "--key-type", "ecdsa-p256")
	x.hg(t, "ssh", "ca", "create", "hosts", "--type", "host", "--key-type", "ed25519")
	x.hg(t, "ssh", "ca", "create", "otherhosts", "--type", "host", "--key-type", "ed25519")
	for name, role := range map[string]string{
		"eng": `{"ca":"users","allowedPrincipals":["alice","bob"],"defaultPrincipals":["alice"],"defaultTtl":"3600s","maxTtl":"28800s",
			"allowedExtensions":["permit-pty","permit-agent-forwarding"],"defaultExtensions":{"permit-pty":""}}`,
		"forced":  `{"ca":"users","allowedPrincipals":["alice"],"defaultPrincipals":["alice"],"criticalOptions":{"force-command":"echo forced-command-ran"}}`,
		"src-ok":  `{"ca":"users","allowedPrincipals":["alice"],"defaultPrincipals":["alice"],"criticalOptions":{"source-address":"127.0.0.1/32"}}`,
		"src-bad": `{"ca":"users","allowedPrincipals":["alice"],"defaultPrincipals":["alice"],"criticalOptions":{"source-address":"10.9.9.9/32"}}`,
		"web":     `{"ca":"hosts","allowedPrincipals":["127.0.0.1","localhost"]}`,
	} {
		f := filepath.Join(x.dir, "role-"+name+".json")
		writeTestFile(t, f, []byte(role), 0o644)
		x.hg(t, "ssh", "role", "write", name, "-f", f)
	}

	// The host key and its certificate, from `hsmgate ssh host sign`.
	x.hostKey = x.newKey(t, "host_ed25519")
	x.hg(t, "ssh", "host", "sign", "--role", "web", "--principal", "127.0.0.1", x.hostKey+".pub")
	if !fileExists(x.hostKey + "-cert.pub") {
		t.Fatal("ssh host sign wrote no certificate next to the key")
	}
	if err := os.MkdirAll(filepath.Join(x.dir, "principals"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(x.dir, "principals", "root"), []byte("alice\n"), 0o644)

	// Everything sshd and ssh trust comes from the HTTPS endpoints; the KRL
	// must exist before any revocation or sshd refuses every key.
	x.fetch(t, sshca.PathTrustedUserCAKeys, filepath.Join(x.dir, "trusted_user_ca_keys"))
	if n := x.trustedKeys(t); n != 1 {
		t.Fatalf("TrustedUserCAKeys: got %d keys, want the one user CA key", n)
	}
	x.fetchKRL(t)
	if b, _ := os.ReadFile(filepath.Join(x.dir, "revoked.krl")); !strings.HasPrefix(string(b), "SSHKRL\n\x00") {
		t.Fatalf("the KRL before any revocation: got %q, want an OpenSSH KRL", b)
	}
	x.fetch(t, sshca.PathKnownHosts, filepath.Join(x.dir, "known_hosts"))
	kh, _ := os.ReadFile(filepath.Join(x.dir, "known_hosts"))
	for _, l := range strings.Split(strings.TrimSpace(string(kh)), "\n") {
		if !strings.HasPrefix(l, "@cert-authority * ") {
			t.Fatalf("known_hosts line %q: want only @cert-authority lines", l)
		}
	}

	x.sshd = sshtest.Start(t, x.tools, x.dir, x.hostKey)
	return x
}

func writeTestFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// hg runs the hsmgate CLI against the dev server; it must succeed.
func (x *sshE2E) hg(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, x.env, args...)
	if code != 0 {
		t.Fatalf("hsmgate %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// fetch GETs one of hsmgate's HTTPS endpoints into file (replaced whole:
// sshd reads TrustedUserCAKeys and RevokedKeys on every authentication).
func (x *sshE2E) fetch(t *testing.T, path, file string) {
	t.Helper()
	resp, err := x.http.Get(x.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	writeTestFile(t, file+".tmp", b, 0o644)
	if err := os.Rename(file+".tmp", file); err != nil {
		t.Fatal(err)
	}
}

func (x *sshE2E) fetchKRL(t *testing.T) {
	t.Helper()
	x.fetch(t, sshca.PathKRL, filepath.Join(x.dir, "revoked.krl"))
}

// trustedKeys is the number of keys in the fetched TrustedUserCAKeys file.
func (x *sshE2E) trustedKeys(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(x.dir, "trusted_user_ca_keys"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rest := b; len(rest) > 0; n++ {
		var err error
		if _, _, _, rest, err = ssh.ParseAuthorizedKey(rest); err != nil {
			t.Fatalf("TrustedUserCAKeys %q: %v", b, err)
		}
	}
	return n
}

// newKey makes an Ed25519 key pair with ssh-keygen and returns the private key's path.
func (x *sshE2E) newKey(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command(x.tools.Keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	return path
}

// sign makes a key and runs `hsmgate ssh sign ARGS KEY.pub`, which must
// write KEY-cert.pub; it returns the key's path and the certificate.
func (x *sshE2E) sign(t *testing.T, name string, args ...string) (string, *ssh.Certificate) {
	t.Helper()
	key := x.newKey(t, name)
	out := x.hg(t, append(append([]string{"ssh", "sign"}, args...), key+".pub")...)
	b, err := os.ReadFile(key + "-cert.pub")
	if err != nil {
		t.Fatalf("ssh sign wrote no certificate next to the key: %v", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s-cert.pub holds a %s, not a certificate", key, pub.Type())
	}
	for _, want := range []string{
		"certificate:  " + key + "-cert.pub\n",
		"principals:   " + strings.Join(c.ValidPrincipals, ", ") + "\n",
		fmt.Sprintf("serial:       %d\n", c.Serial),
		"key id:       " + c.KeyId + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh sign output lacks %q:\n%s", want, out)
		}
	}
	return key, c
}

// login runs ssh root@127.0.0.1 COMMAND with key and its certificate,
// trusting only known_hosts file kh; it returns the output and whether ssh
// exited 0.
func (x *sshE2E) login(t *testing.T, key, kh string, command ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"-F", "/dev/null",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + kh, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "CertificateFile=" + key + "-cert.pub", "-i", key,
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(x.sshd.Port), "root@127.0.0.1"}
	out, err := exec.CommandContext(ctx, x.tools.SSH, append(args, command...)...).CombinedOutput()
	return string(out), err == nil
}

// mustLogin logs in with key (trusting the fetched known_hosts) and checks
// that sshd accepted certificate c; it returns ssh's output.
func (x *sshE2E) mustLogin(t *testing.T, key string, c *ssh.Certificate, command ...string) string {
	t.Helper()
	from := len(x.sshd.Log.String())
	out, ok := x.login(t, key, filepath.Join(x.dir, "known_hosts"), command...)
	if !ok {
		t.Fatalf("login with %s: refused, want success; ssh output: %s", filepath.Base(key), out)
	}
	x.waitLog(t, from, fmt.Sprintf("Accepted certificate ID %q (serial %d)", c.KeyId, c.Serial))
	return out
}

// mustRefuse checks that key does not log in and, if reason is not empty,
// that sshd logged reason for the attempt.
func (x *sshE2E) mustRefuse(t *testing.T, key, reason string) {
	t.Helper()
	from := len(x.sshd.Log.String())
	if out, ok := x.login(t, key, filepath.Join(x.dir, "known_hosts"), "true"); ok {
		t.Fatalf("login with %s: success, want refusal; ssh output: %s", filepath.Base(key), out)
	}
	if reason != "" {
		x.waitLog(t, from, reason)
	}
	if strings.Contains(x.sshd.Log.String()[from:], "Accepted certificate") {
		t.Errorf("sshd accepted a certificate during a refused login:\n%s", x.sshd.Log.String()[from:])
	}
}

// waitLog waits for want in sshd's log after offset from (sshd's children
// write it before answering, but it reaches the buffer through a pipe).
func (x *sshE2E) waitLog(t *testing.T, from int, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if strings.Contains(x.sshd.Log.String()[from:], want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not log %q; its log for the attempt:\n%s", want, x.sshd.Log.String()[from:])
		}
		time.Sleep(20 * time.Millisecond) // polling the log, bounded by the deadline
	}
}

// keygenL runs `ssh-keygen -L -f cert` and returns field → value; list
// fields (principals, options, extensions) are joined with commas.
func (x *sshE2E) keygenL(t *testing.T, cert string) map[string]string {
	t.Helper()
	out, err := exec.Command(x.tools.Keygen, "-L", "-f", cert).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v: %s", err, out)
	}
	return sshtest.ParseKeygenL(string(out))
}
