package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// clientCA makes a client CA (its PEM written to path) and a client
// certificate from it for cn.
func clientCA(t *testing.T, path, cn string) tls.Certificate {
	t.Helper()
	now := time.Now()
	ca, caKey, err := devtls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, key, err := devtls.Issue(ca, caKey, devtls.Template{CommonName: cn}, now)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// waitLog waits (a hang guard, not a timing assertion) until stderr holds want.
func waitLog(t *testing.T, stderr *syncbuf.Buffer, waited chan error, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(stderr.String(), want) {
		select {
		case err := <-waited:
			waited <- err
			t.Fatalf("server exited (%v) before logging %q:\n%s", err, want, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never logged %q:\n%s", want, stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGHUPReload: after the certificate and client CA files are replaced,
// SIGHUP makes new connections see the new server certificate, accept a
// client certificate of the new CA and refuse one of the old, and the
// process stays up.
func TestSIGHUPReload(t *testing.T) {
	cfg, env := serverConfig(t, "audit:\n  path: audit.log\n  hmac_key_file: audit-key\n")
	dir := filepath.Dir(cfg)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "audit-key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "client-ca.pem")
	oldClient := clientCA(t, caFile, "old-client")
	body, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The key line is the only one ending in server-key.pem.
	withCA := strings.Replace(string(body), "server-key.pem\n", "server-key.pem\n  client_ca: client-ca.pem\n", 1)
	if withCA == string(body) {
		t.Fatalf("config has no tls.key line:\n%s", body)
	}
	if err := os.WriteFile(cfg, []byte(withCA), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(t, env, "init", "--config", cfg); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	p := startServerProcess(t, env, cfg) // init_test.go
	cmd, stderr, waited, grpcAddr := p.cmd, p.stderr, p.waited, p.grpcAddr

	tlsDir := filepath.Join(dir, "tls")
	// lookupSelf calls LookupSelf over a new connection trusting caCert,
	// presenting cert if not nil; it returns the identity name and the
	// server's leaf.
	lookupSelf := func(caCert string, cert *tls.Certificate) (string, []byte, error) {
		t.Helper()
		pemBytes, err := os.ReadFile(caCert)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		var served []byte
		tc := &tls.Config{RootCAs: pool, VerifyConnection: func(cs tls.ConnectionState) error {
			served = cs.PeerCertificates[0].Raw
			return nil
		}}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp, err := hsmgatev1.NewAuthServiceClient(conn).LookupSelf(ctx, &hsmgatev1.LookupSelfRequest{})
		if err != nil {
			return "", served, err
		}
		return resp.GetName(), served, nil
	}

	t.Run("before", func(t *testing.T) {
		name, _, err := lookupSelf(filepath.Join(tlsDir, "ca.pem"), &oldClient)
		if err != nil || name != "old-client" {
			t.Fatalf("old-CA client before reload: got %q, %v; want old-client", name, err)
		}
	})

	// Replace the server pair (a new dev CA and certificate) and the client CA.
	newTLS := filepath.Join(dir, "tls-new")
	files, _, err := devtls.Ensure(newTLS, devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{files.Cert: filepath.Join(tlsDir, "server.pem"), files.Key: filepath.Join(tlsDir, "server-key.pem")} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	newClient := clientCA(t, caFile, "new-client")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, stderr, waited, "reload: audit log rotated")
	for _, want := range []string{"reload: TLS certificate reloaded", "reload: TLS client CA reloaded"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log after SIGHUP lacks %q:\n%s", want, stderr)
		}
	}

	t.Run("new server certificate", func(t *testing.T) {
		newLeaf, _, err := devtls.Load(files.Cert, files.Key)
		if err != nil {
			t.Fatal(err)
		}
		_, served, err := lookupSelf(files.CACert, &newClient)
		if err != nil {
			t.Fatalf("new-CA client after reload: %v", err)
		}
		if !bytes.Equal(served, newLeaf.Raw) {
			t.Errorf("served certificate is not the new one")
		}
	})
	t.Run("new client CA accepted", func(t *testing.T) {
		name, _, err := lookupSelf(files.CACert, &newClient)
		if err != nil || name != "new-client" {
			t.Errorf("new-CA client: got %q, %v; want new-client", name, err)
		}
	})
	t.Run("old client CA refused", func(t *testing.T) {
		name, _, err := lookupSelf(files.CACert, &oldClient)
		if err == nil {
			t.Errorf("old-CA client after reload: got identity %q, want a refusal", name)
		}
	})
	// hup writes body as the config, sends SIGHUP and waits for its end.
	hups := 1
	hup := func(body string) string {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		before := len(stderr.String())
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		hups++
		deadline := time.Now().Add(2 * time.Minute)
		for strings.Count(stderr.String(), "reload: audit log rotated") < hups {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged:\n%s", stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return stderr.String()[before:]
	}
	t.Run("invalid config refused whole", func(t *testing.T) {
		// A valid log level change with an invalid field: nothing applies.
		out := hup(withCA + "log:\n  level: debug\nshutdown:\n  timeout: -1s\n")
		if !strings.Contains(out, "the new configuration is refused") || strings.Contains(out, "log level changed") {
			t.Errorf("invalid config: got log\n%s\nwant a refusal and no change", out)
		}
	})
	t.Run("restart needed reported, live part applied", func(t *testing.T) {
		out := hup(withCA + "log:\n  level: debug\nshutdown:\n  timeout: 7s\n")
		for _, want := range []string{"section=shutdown", "needs a restart", "log level changed"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("call log line at debug", func(t *testing.T) {
		// A call that succeeds is logged at debug (the level is debug
		// now); its line names its request and caller.
		before := len(stderr.String())
		if name, _, err := lookupSelf(files.CACert, &newClient); err != nil || name != "new-client" {
			t.Fatalf("new-CA client: got %q, %v; want new-client", name, err)
		}
		// The line is written before the answer, but reaches stderr's
		// buffer through a pipe: wait for it.
		deadline := time.Now().Add(2 * time.Minute)
		for found := false; !found; time.Sleep(20 * time.Millisecond) {
			for _, l := range strings.Split(stderr.String()[before:], "\n") {
				if strings.Contains(l, "grpc.method=LookupSelf") && strings.Contains(l, "identity=new-client") &&
					strings.Contains(l, "identity_kind=mtls") && strings.Contains(l, "request_id=") && strings.Contains(l, "level=DEBUG") {
					found = true
				}
			}
			if !found && time.Now().After(deadline) {
				t.Fatalf("no LookupSelf debug line with request_id and identity=new-client:\n%s", stderr)
			}
		}
	})
	t.Run("still up", func(t *testing.T) {
		select {
		case err := <-waited:
			waited <- err
			t.Fatalf("server exited after SIGHUP: %v\n%s", err, stderr)
		default:
		}
	})
}

// TestDevSurvivesSIGHUP: `hsmgate dev` has no config file to re-read, but
// SIGHUP rotates its audit log and does not stop it; it still serves and
// stops cleanly.
func TestDevSurvivesSIGHUP(t *testing.T) {
	p := startDev(t, filepath.Join(t.TempDir(), "state"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute) // a hang guard
	for !strings.Contains(p.stderr.String(), "reload: audit log rotated") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged after SIGHUP:\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.stderr.String(), "reload: no config file to re-read") {
		t.Errorf("dev reload: want the no-config line:\n%s", p.stderr)
	}
	if _, errOut, code := run(t, p.env(), "status"); code != 0 {
		t.Errorf("status after SIGHUP: exit %d: %s", code, errOut)
	}
	p.stop(t)
}

// TestRestartSectionsCoverConfig: a change to any section of the
// configuration is either applied live (tls files, log.level) or reported
// as needing a restart, so that a new section cannot be forgotten.
func TestRestartSectionsCoverConfig(t *testing.T) {
	live := config.Default()
	typ := reflect.TypeOf(*live)
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Name == "TLS" || f.Name == "Log" { // partly live: their other fields are listed by name
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			next := config.Default()
			v := reflect.ValueOf(next).Elem().Field(i)
			if !changeSomething(v) {
				t.Skipf("no settable field in %s", f.Name)
			}
			if got := restartSections(live, next); len(got) != 1 {
				t.Errorf("changing %s: got sections %v, want it named once", f.Name, got)
			}
		})
	}
}

// changeSomething changes the first field of v it can (a string, number or
// bool, or one inside a struct), reporting whether it did.
func changeSomething(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() && changeSomething(v.Field(i)) {
				return true
			}
		}
	case reflect.String:
		v.SetString(v.String() + "x")
		return true
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
		return true
	case reflect.Uint16, reflect.Uint32:
		v.SetUint(v.Uint() + 1)
		return true
	case reflect.Bool:
		v.SetBool(!v.Bool())
		return true
	}
	return false
}
