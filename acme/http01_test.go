package acme

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// TestHTTP01Fetch: what validateHTTP01 follows and refuses.
func TestHTTP01Fetch(t *testing.T) {
	const token, keyAuth = "tok", "tok.thumb"
	mux := http.NewServeMux()
	hs := httptest.NewServer(mux)
	defer hs.Close()
	u, _ := url.Parse(hs.URL)
	port, _ := strconv.Atoi(u.Port())
	e := newEnv(t, envOpts{httpPort: port, noWorkers: true})
	var target string
	mux.HandleFunc("/.well-known/acme-challenge/", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Host == "ok.example.com":
			w.Write([]byte(keyAuth + "\n"))
		case r.Host == "127.0.0.1":
			w.Write([]byte(keyAuth))
		case r.Host == "big.example.com":
			w.Write([]byte(keyAuth + strings.Repeat(" ", 2000)))
		case r.Host == "wrong.example.com":
			w.Write([]byte("tok.other"))
		case strings.HasPrefix(r.Host, "redir"):
			http.Redirect(w, r, target, http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	})
	cases := []struct {
		name, host, redirect, want string
	}{
		{"good", "ok.example.com", "", ""},
		{"IP identifier (RFC 8738)", "127.0.0.1", "", ""},
		{"wrong key authorization", "wrong.example.com", "", "incorrectResponse"},
		{"oversized body", "big.example.com", "", "unauthorized"},
		{"not found", "none.example.com", "", "unauthorized"},
		{"redirect to http port 80", "redir1.example.com", "http://ok.example.com/.well-known/acme-challenge/" + token, ""},
		{"redirect to port 8080", "redir2.example.com", "http://ok.example.com:8080/.well-known/acme-challenge/" + token, "connection"},
		{"redirect to the metadata address", "redir3.example.com", "http://169.254.169.254/latest/meta-data/", "connection"},
		{"redirect to ftp", "redir4.example.com", "ftp://ok.example.com/x", "connection"},
		{"redirect loop", "redir5.example.com", "http://redir5.example.com/.well-known/acme-challenge/" + token, "connection"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target = tc.redirect
			typ := "dns"
			if tc.host == "127.0.0.1" {
				typ = "ip"
			}
			p := e.srv.validateHTTP01(context.Background(), Ident{typ, tc.host}, token, keyAuth)
			got := ""
			if p != nil {
				got = strings.TrimPrefix(p.Type, ProblemNS)
			}
			if got != tc.want {
				t.Errorf("got %q (%v), want %q", got, p, tc.want)
			}
		})
	}
}
