package pki

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/crypto/ocsp"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// RegisterHTTP adds the public PKI endpoints to mux (all unauthenticated by nature):
//
//	GET  /pki/ca, /pki/ca/der, /pki/ca_chain        the default issuer (PEM, DER, PEM chain to the root)
//	GET  /pki/issuer/{name}/pem|der|chain           one issuer
//	GET  /pki/issuer/{name}/crl[/pem]               its full CRL (DER or PEM)
//	GET  /pki/issuer/{name}/crl/delta[/pem]         its delta CRL
//	GET  /pki/ocsp/{base64 request}, POST /pki/ocsp OCSP (RFC 6960 appendix A)
func (s *Service) RegisterHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /pki/ca", s.certHandler("default", "pem"))
	mux.HandleFunc("GET /pki/ca/der", s.certHandler("default", "der"))
	mux.HandleFunc("GET /pki/ca_chain", s.certHandler("default", "chain"))
	for _, f := range []string{"pem", "der", "chain"} {
		mux.HandleFunc("GET /pki/issuer/{name}/"+f, s.certHandler("", f))
	}
	mux.HandleFunc("GET /pki/issuer/{name}/crl", s.crlHandler(false, false))
	mux.HandleFunc("GET /pki/issuer/{name}/crl/pem", s.crlHandler(false, true))
	mux.HandleFunc("GET /pki/issuer/{name}/crl/delta", s.crlHandler(true, false))
	mux.HandleFunc("GET /pki/issuer/{name}/crl/delta/pem", s.crlHandler(true, true))
	mux.HandleFunc("GET /pki/ocsp/{req...}", func(w http.ResponseWriter, r *http.Request) { s.ocspGET(w, r, r.PathValue("req")) })
	mux.HandleFunc("POST /pki/ocsp", s.ocspPOST)
}

// OCSPGETPrefix is the path an OCSP GET request's base64 follows.
const OCSPGETPrefix = "/pki/ocsp/"

// Handler returns the public endpoints as one handler. It answers an OCSP
// GET from the path as sent, before its mux cleans it: mount it also for
// OCSPGETPrefix where paths reach it uncleaned (server.HandleHTTPPrefix), so
// that a base64 holding "//" that the client did not URL-encode is read
// whole.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	s.RegisterHTTP(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if req, ok := strings.CutPrefix(r.URL.EscapedPath(), OCSPGETPrefix); ok {
				s.ocspGET(w, r, req)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// httpError answers err through the one error map (errs.HTTPStatus: capped
// message, no cause of an Unavailable); the cause of a server-side failure
// goes to the log.
func (s *Service) httpError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := errs.HTTPStatus(err)
	if code >= http.StatusInternalServerError {
		s.cfg.Logger.Error("pki: http", "path", r.URL.Path, "err", err)
	}
	http.Error(w, msg, code)
}

func (s *Service) certHandler(fixed, format string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := fixed
		if name == "" {
			name = r.PathValue("name")
		}
		rec, _, err := s.getIssuerRecord(r.Context(), name)
		if err == nil && len(rec.Certificate) == 0 {
			err = ErrIssuerNotActive
		}
		if err != nil {
			s.httpError(w, r, err)
			return
		}
		switch format {
		case "der":
			w.Header().Set("Content-Type", "application/pkix-cert")
			w.Write(rec.Certificate)
		case "pem":
			w.Header().Set("Content-Type", "application/x-pem-file")
			pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: rec.Certificate})
		default:
			w.Header().Set("Content-Type", "application/pem-certificate-chain")
			for _, c := range append([][]byte{rec.Certificate}, rec.Chain...) {
				pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c})
			}
		}
	}
}

func (s *Service) crlHandler(delta, asPEM bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		der, err := s.CRL(r.Context(), r.PathValue("name"), delta)
		if err != nil {
			s.httpError(w, r, err)
			return
		}
		if asPEM {
			w.Header().Set("Content-Type", "application/x-pem-file")
			pem.Encode(w, &pem.Block{Type: "X509 CRL", Bytes: der})
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(der)
	}
}

// ocspGET answers the OCSP request raw: base64 (standard alphabet,
// URL-encoded or not, or base64url) from the path.
func (s *Service) ocspGET(w http.ResponseWriter, r *http.Request, raw string) {
	if u, err := url.PathUnescape(raw); err == nil {
		raw = u
	}
	raw = strings.TrimSpace(raw)
	der, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		der, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(raw, "="))
	}
	if err != nil {
		s.writeOCSP(w, ocsp.MalformedRequestErrorResponse)
		return
	}
	s.answerOCSP(w, r, der)
}

func (s *Service) ocspPOST(w http.ResponseWriter, r *http.Request) {
	der, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPRequest+1))
	if err != nil {
		s.writeOCSP(w, ocsp.MalformedRequestErrorResponse)
		return
	}
	s.answerOCSP(w, r, der)
}

func (s *Service) answerOCSP(w http.ResponseWriter, r *http.Request, der []byte) {
	req, err := parseOCSPRequest(der)
	if err != nil {
		s.writeOCSP(w, ocsp.MalformedRequestErrorResponse)
		return
	}
	resp, err := s.OCSPResponse(r.Context(), req, ocspRequestNonce(der))
	if err != nil {
		s.cfg.Logger.Error("pki: OCSP", "err", err)
		s.writeOCSP(w, ocsp.InternalErrorErrorResponse)
		return
	}
	if r.Method == http.MethodGet && !bytes.Equal(resp, ocsp.UnauthorizedErrorResponse) {
		// RFC 5019 6.2: signed GET responses may be cached for part of their validity.
		age := int((s.cfg.OCSPValidity / 2).Seconds())
		w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d, public, no-transform, must-revalidate", age))
	}
	s.writeOCSP(w, resp)
}

func (s *Service) writeOCSP(w http.ResponseWriter, der []byte) {
	w.Header().Set("Content-Type", "application/ocsp-response")
	if w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(der)
}
