package devtls

import (
	"bytes"
	"crypto/x509"
	"os"
	"testing"
	"time"
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	f, created, err := Ensure(dir, DefaultHosts, now)
	if err != nil || !created {
		t.Fatalf("first Ensure: created=%v err=%v", created, err)
	}
	ca1, leaf1 := read(t, f.CACert), read(t, f.Cert)

	t.Run("reuses", func(t *testing.T) {
		_, created, err := Ensure(dir, DefaultHosts, now.Add(time.Hour))
		if err != nil || created {
			t.Fatalf("created=%v err=%v, want reuse", created, err)
		}
		if !bytes.Equal(read(t, f.CACert), ca1) || !bytes.Equal(read(t, f.Cert), leaf1) {
			t.Error("files changed on reuse")
		}
	})
	t.Run("renews an expiring leaf, keeps the CA", func(t *testing.T) {
		_, created, err := Ensure(dir, DefaultHosts, now.Add(350*24*time.Hour))
		if err != nil || created {
			t.Fatalf("created=%v err=%v", created, err)
		}
		if !bytes.Equal(read(t, f.CACert), ca1) {
			t.Error("CA changed")
		}
		if bytes.Equal(read(t, f.Cert), leaf1) {
			t.Error("leaf within 30 days of expiry not renewed")
		}
	})
	t.Run("new hosts", func(t *testing.T) {
		if _, _, err := Ensure(dir, []string{"localhost", "hsmgate.test"}, now); err != nil {
			t.Fatal(err)
		}
		leaf, _, err := Load(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.VerifyHostname("hsmgate.test"); err != nil {
			t.Error(err)
		}
	})
	t.Run("leaf verifies for 127.0.0.1 and localhost", func(t *testing.T) {
		if _, _, err := Ensure(dir, DefaultHosts, now); err != nil {
			t.Fatal(err)
		}
		ca, _, err := Load(f.CACert, f.CAKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _, err := Load(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		for _, h := range DefaultHosts {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h, CurrentTime: now}); err != nil {
				t.Errorf("%s: %v", h, err)
			}
		}
	})
	t.Run("key files are private", func(t *testing.T) {
		for _, p := range []string{f.CAKey, f.Key} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %o, want 600", p, st.Mode().Perm())
			}
		}
	})
}
