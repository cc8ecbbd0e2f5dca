// Package sshtest runs OpenSSH's sshd, ssh and ssh-keygen for end-to-end
// tests (sshca's and the CLI's): it finds the programs, starts an sshd on
// loopback configured from files in a directory, and reads `ssh-keygen -L`.
// Only tests import it.
package sshtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/syncbuf"
)

// Tools are the paths of the OpenSSH programs.
type Tools struct {
	SSH, SSHD, Keygen string
}

// Require returns the OpenSSH programs. When one is missing, or the test
// does not run as root (sshd must setuid), it fails the test under CI (CI set)
// and skips it elsewhere.
func Require(t testing.TB) Tools {
	t.Helper()
	miss := func(format string, a ...any) {
		if os.Getenv("CI") != "" {
			t.Fatalf(format, a...)
		}
		t.Skipf(format, a...)
	}
	var tools Tools
	var err error
	if tools.SSH, err = exec.LookPath("ssh"); err != nil {
		miss("ssh not installed (Debian openssh-client)")
	}
	if tools.Keygen, err = exec.LookPath("ssh-keygen"); err != nil {
		miss("ssh-keygen not installed (Debian openssh-client)")
	}
	tools.SSHD = "/usr/sbin/sshd"
	if _, err := os.Stat(tools.SSHD); err != nil {
		miss("sshd not installed (Debian openssh-server)")
	}
	if os.Geteuid() != 0 {
		miss("the sshd end-to-end test must run as root")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		miss("cannot create /run/sshd: %v", err)
	}
	return tools
}

// SSHD is a running sshd on 127.0.0.1.
type SSHD struct {
	Port int
	Log  *syncbuf.Buffer // sshd's own log (-e, LogLevel VERBOSE)
}

// Start runs sshd on a free loopback port, configured from files in dir:
// trusted_user_ca_keys (TrustedUserCAKeys), principals/USER
// (AuthorizedPrincipalsFile), revoked.krl (RevokedKeys; sshd refuses every
// key when it is missing), with hostKey and hostKey-cert.pub as its host key
// and certificate. It waits for sshd's own "listening" line (so that another
// process that took the port is not mistaken for it), tries three ports, and
// stops sshd when the test ends (printing its log if the test failed).
func Start(t testing.TB, tools Tools, dir, hostKey string) *SSHD {
	t.Helper()
	s := &SSHD{Log: &syncbuf.Buffer{}}
	extra := penaltiesOff(t, tools.SSH)
	for attempt := 1; ; attempt++ {
		s.Port = freePort(t)
		err := s.start(t, tools.SSHD, dir, hostKey, extra)
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("sshd: %v\n%s", err, s.Log.String())
		}
	}
}

func (s *SSHD) start(t testing.TB, sshdBin, dir, hostKey, extra string) error {
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %[4]s
HostCertificate %[4]s-cert.pub
TrustedUserCAKeys %[2]s/trusted_user_ca_keys
AuthorizedPrincipalsFile %[2]s/principals/%%u
AuthorizedKeysFile none
RevokedKeys %[2]s/revoked.krl
PidFile %[2]s/sshd.pid
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
%[3]s`, s.Port, dir, extra, hostKey)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshdBin, "-D", "-e", "-f", cfg)
	cmd.Stdout, cmd.Stderr = s.Log, s.Log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log.String())
		}
	})
	want := fmt.Sprintf("Server listening on 127.0.0.1 port %d", s.Port)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.Log.String(), want) {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited before listening on %d", s.Port)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd did not listen on %d within 20s", s.Port)
		}
		time.Sleep(20 * time.Millisecond) // polling sshd's log, bounded by the deadline
	}
	return nil
}

// penaltiesOff turns off OpenSSH >= 9.8's PerSourcePenalties, which would
// refuse a test's connections for a while after the refusals it provokes
// (older sshd refuses the unknown option).
func penaltiesOff(t testing.TB, sshBin string) string {
	t.Helper()
	out, _ := exec.Command(sshBin, "-V").CombinedOutput()
	m := regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("ssh -V: unexpected %q", out)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major > 9 || (major == 9 && minor >= 8) {
		return "PerSourcePenalties no\n"
	}
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var keygenField = regexp.MustCompile(`^\s+([A-Za-z ]+):\s?(.*)$`)

// ParseKeygenL turns `ssh-keygen -L` output into field → value; list fields
// (Principals, Critical Options, Extensions) are joined with commas.
func ParseKeygenL(out string) map[string]string {
	m := map[string]string{}
	var list string
	for _, line := range strings.Split(out, "\n") {
		if sm := keygenField.FindStringSubmatch(line); sm != nil && !strings.HasPrefix(line, "                ") {
			list = ""
			if sm[2] == "" {
				list = sm[1]
				continue
			}
			m[sm[1]] = sm[2]
			continue
		}
		if v := strings.TrimSpace(line); list != "" && v != "" {
			if m[list] != "" {
				m[list] += ","
			}
			m[list] += v
		}
	}
	return m
}
