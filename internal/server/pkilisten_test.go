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

// TestPrefixRoutes: a handler added with HandleHTTPPrefix or
// HandlePKIPrefix gets the path as the client sent it, "//" included, where
// the mux would redirect to the cleaned path and cut the data in it (an
// OCSP GET's base64); other paths still go to the mux. A ".." under the
// prefix stays with the prefix's handler: it never reaches another route.
func TestPrefixRoutes(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.Path) })
	h := start(t, newPKI(t), func(c *Config) { c.PKIAddr = "127.0.0.1:0" }, func(s *Server) {
		s.HandleHTTP("/raw/", echo)
		s.HandlePKI("/raw/", echo)
		secret := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "secret") })
		s.HandleHTTP("/v1/secret", secret)
		s.HandlePKI("/v1/secret", secret)
		s.HandleHTTPPrefix("/raw/", echo)
		s.HandlePKIPrefix("/raw/", echo)
	})
	noRedirect := func(c *http.Client) *http.Client {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return c
	}
	for _, c := range []struct {
		name   string
		client *http.Client
		base   string
	}{
		{"https", noRedirect(h.httpClient()), "https://" + h.srv.HTTPAddr()},
		{"pki", noRedirect(&http.Client{}), "http://" + h.srv.PKIAddr()},
	} {
		for _, p := range []struct{ path, want string }{
			{"/raw/AB//CD", "/raw/AB//CD"},
			{"/raw/AB/./CD//", "/raw/AB/./CD//"},
			{"/raw/../v1/secret", "/raw/../v1/secret"},
		} {
			resp, err := c.client.Get(c.base + p.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(b) != p.want {
				t.Errorf("%s GET %s: got %d %q, want 200 %q", c.name, p.path, resp.StatusCode, b, p.want)
			}
		}
	}
	resp, err := noRedirect(h.httpClient()).Get("https://" + h.srv.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200 from the mux", resp.StatusCode)
	}
}
