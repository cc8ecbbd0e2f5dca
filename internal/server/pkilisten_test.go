package server

import (
	"io"
	"net/http"
	"testing"
)

// TestPKIListener: the plain-HTTP PKI listener (PKIAddr) serves what
// HandlePKI added and nothing else (no health, no metrics, none of the
// HTTPS listener's handlers), in plain HTTP; the HTTPS listener keeps its own.
func TestPKIListener(t *testing.T) {
	h := start(t, newPKI(t), func(c *Config) { c.PKIAddr = "127.0.0.1:0" }, func(s *Server) {
		s.HandlePKI("GET /pki/ca", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ca") }))
		s.HandleHTTP("GET /v1/secret", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "secret") }))
	})
	addr := h.srv.PKIAddr()
	if addr == "" {
		t.Fatal("PKIAddr: empty with PKIAddr configured")
	}
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/pki/ca", http.StatusOK, "ca"},
		{"/healthz", http.StatusNotFound, ""},
		{"/readyz", http.StatusNotFound, ""},
		{"/metrics", http.StatusNotFound, ""},
		{"/v1/secret", http.StatusNotFound, ""},
	} {
		t.Run(c.path, func(t *testing.T) {
			resp, err := http.Get("http://" + addr + c.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.code || (c.body != "" && string(b) != c.body) {
				t.Errorf("GET %s: got %d %q, want %d %q", c.path, resp.StatusCode, b, c.code, c.body)
			}
		})
	}
	t.Run("none by default", func(t *testing.T) {
		h := start(t, newPKI(t), nil, nil)
		if a := h.srv.PKIAddr(); a != "" {
			t.Errorf("PKIAddr without the listener: got %q, want \"\"", a)
		}
	})
}
