package sshca

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// HTTP paths served by RegisterHTTP. All are public (public keys and the KRL).
const (
	PathTrustedUserCAKeys = "/v1/ssh/trusted-user-ca-keys"
	PathKnownHosts        = "/v1/ssh/known-hosts"
	PathKRL               = "/v1/ssh/krl"
)

// RegisterHTTP adds the SSH CA's HTTP endpoints to mux:
//
//   - GET /v1/ssh/trusted-user-ca-keys[?ca=NAME]: sshd's TrustedUserCAKeys file,
//     one published user CA key per line;
//   - GET /v1/ssh/known-hosts[?ca=NAME][&hosts=PATTERN]: "@cert-authority PATTERN KEY"
//     lines for ssh's known_hosts (PATTERN defaults to "*");
//   - GET /v1/ssh/krl: the binary KRL for sshd's RevokedKeys.
func (e *Engine) RegisterHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathTrustedUserCAKeys, e.serveTrustedUserCAKeys)
	mux.HandleFunc("GET "+PathKnownHosts, e.serveKnownHosts)
	mux.HandleFunc("GET "+PathKRL, e.serveKRL)
}

// HTTPHandler returns a handler serving only the SSH CA's endpoints.
func (e *Engine) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	e.RegisterHTTP(mux)
	return mux
}

// httpError answers err through the one error map (errs.HTTPStatus); the
// cause of a server-side failure goes to the log.
func (e *Engine) httpError(w http.ResponseWriter, err error) {
	code, msg := errs.HTTPStatus(err)
	if code >= http.StatusInternalServerError {
		e.log.Error("sshca: http", "err", err)
	}
	http.Error(w, msg, code)
}

func (e *Engine) keyLines(ctx context.Context, ca string, ct pb.SSHCertType, prefix string) (string, error) {
	keys, err := e.PublicKeys(ctx, ca, ct)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s%s hsmgate:%s:v%d\n", prefix, k.GetPublicKey(), k.GetCa(), k.GetVersion())
	}
	return b.String(), nil
}

func (e *Engine) serveTrustedUserCAKeys(w http.ResponseWriter, r *http.Request) {
	s, err := e.keyLines(r.Context(), r.URL.Query().Get("ca"), pb.SSHCertType_SSH_CERT_TYPE_USER, "")
	if err != nil {
		e.httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write([]byte(s))
}

func (e *Engine) serveKnownHosts(w http.ResponseWriter, r *http.Request) {
	hosts := r.URL.Query().Get("hosts")
	if hosts == "" {
		hosts = "*"
	}
	if strings.ContainsAny(hosts, " \t\r\n#@") {
		e.httpError(w, invalid("hosts pattern %.64q", hosts))
		return
	}
	s, err := e.keyLines(r.Context(), r.URL.Query().Get("ca"), pb.SSHCertType_SSH_CERT_TYPE_HOST, "@cert-authority "+hosts+" ")
	if err != nil {
		e.httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write([]byte(s))
}

func (e *Engine) serveKRL(w http.ResponseWriter, r *http.Request) {
	data, v, t, err := e.KRL(r.Context())
	if err != nil {
		e.httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", `"krl-`+strconv.FormatUint(v, 10)+`"`)
	http.ServeContent(w, r, "krl", t, bytes.NewReader(data))
}
