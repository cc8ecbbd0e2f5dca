package server

import (
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/devtls"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestReloadTLSClientCA: ReloadTLS swaps the client CA for the next
// connections, and a reload that fails (a CA file without a certificate, a
// missing key) changes nothing.
func TestReloadTLSClientCA(t *testing.T) {
	p := newPKI(t)
	h := start(t, p, func(c *Config) { c.ClientCAFile = p.files.CACert }, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(context.Context) (*hsmgatev1.GetStatusResponse, error) {
			return &hsmgatev1.GetStatusResponse{}, nil
		}})
	})
	dir := t.TempDir()
	now := time.Now()
	newCA, newCAKey, err := devtls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	newCAFile := filepath.Join(dir, "new-ca.pem")
	if err := os.WriteFile(newCAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: newCA.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	newClient := clientCert(t, newCA, newCAKey, "new-client", now)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	call := func(t *testing.T, which string) error {
		t.Helper()
		cert := &p.goodClient
		if which == "new" {
			cert = &newClient
		}
		_, err := callStatus(h.dial(t, cert))
		return err
	}
	if err := call(t, "old"); err != nil {
		t.Fatalf("old-CA client at start: %v", err)
	}
	if err := call(t, "new"); err == nil {
		t.Fatal("new-CA client at start: accepted, want refused")
	}
	t.Run("failed reloads change nothing", func(t *testing.T) {
		for _, tc := range []struct{ name, cert, key, ca string }{
			{"CA file without a certificate", p.files.Cert, p.files.Key, garbage},
			{"missing key", p.files.Cert, filepath.Join(dir, "nope.pem"), newCAFile},
		} {
			if _, err := h.srv.ReloadTLS(tc.cert, tc.key, tc.ca); err == nil {
				t.Errorf("%s: got no error", tc.name)
			}
			if err := call(t, "old"); err != nil {
				t.Errorf("%s: old-CA client after the failed reload: %v", tc.name, err)
			}
			if err := call(t, "new"); err == nil {
				t.Errorf("%s: new-CA client accepted after the failed reload", tc.name)
			}
		}
	})
	t.Run("new CA", func(t *testing.T) {
		ch, err := h.srv.ReloadTLS(p.files.Cert, p.files.Key, newCAFile)
		if err != nil || !ch.ClientCA || ch.Certificate {
			t.Fatalf("got %+v, %v; want ClientCA only", ch, err)
		}
		if err := call(t, "new"); err != nil {
			t.Errorf("new-CA client after reload: %v", err)
		}
		if err := call(t, "old"); err == nil {
			t.Error("old-CA client after reload: accepted, want refused")
		}
	})
	t.Run("same files: no change", func(t *testing.T) {
		ch, err := h.srv.ReloadTLS(p.files.Cert, p.files.Key, newCAFile)
		if err != nil || ch.ClientCA || ch.Certificate {
			t.Errorf("got %+v, %v; want no change", ch, err)
		}
	})
}
