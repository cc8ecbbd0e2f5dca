package acme

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Validation limits.
const (
	maxRedirects = 10
	// maxChallengeBody bounds what is read of an http-01 response (a key
	// authorization is 87 characters).
	maxChallengeBody = 1 << 10
)

// job is one challenge to validate.
type job struct {
	dir, authz, typ string
	thumbprint      string
}

// worker validates challenges from the queue until ctx is done.
func (s *Server) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.jobs:
			s.validate(ctx, j)
		}
	}
}

// validate runs one job and records the outcome on the authorization.
func (s *Server) validate(ctx context.Context, j job) {
	az := new(authz)
	_, found, err := s.get(ctx, prefixAuthz+j.dir+"/"+j.authz, az)
	if err != nil || !found {
		s.cfg.Logger.Error("acme: validate: read authz", "authz", j.authz, "found", found, "err", err)
		return
	}
	i := slices.IndexFunc(az.Challenges, func(c challenge) bool { return c.Type == j.typ })
	if i < 0 || az.Challenges[i].Status != "processing" {
		return
	}
	keyAuth := az.Challenges[i].Token + "." + j.thumbprint
	var perr *Problem
	for attempt := 1; ; attempt++ {
		perr = s.attempt(ctx, j.typ, az.Identifier, az.Challenges[i].Token, keyAuth)
		if perr == nil || attempt >= s.cfg.ValidationAttempts || !transient(perr) {
			break
		}
		select { // back off before trying again: the name's server may be starting
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	s.record(ctx, j, perr)
}

// transient problems are worth another attempt.
func transient(p *Problem) bool {
	switch p.Type {
	case ProblemNS + "connection", ProblemNS + "dns", ProblemNS + "tls":
		return true
	}
	return false
}

// attempt validates once, bounded by ValidationTimeout.
func (s *Server) attempt(ctx context.Context, typ string, id Ident, token, keyAuth string) *Problem {
	vctx, cancel := context.WithTimeout(ctx, s.cfg.ValidationTimeout)
	defer cancel()
	switch typ {
	case HTTP01:
		return s.validateHTTP01(vctx, id, token, keyAuth)
	case TLSALPN01:
		return s.validateTLSALPN01(vctx, id, keyAuth)
	case DNS01:
		return s.validateDNS01(vctx, id, keyAuth)
	}
	return errMalformed("challenge type %s is not validated here", typ)
}

// record writes a validation's outcome on its authorization.
func (s *Server) record(ctx context.Context, j job, perr *Problem) {
	now := s.cfg.Now().UTC()
	var final *authz
	err := s.updateAuthz(context.WithoutCancel(ctx), j.dir, j.authz, func(a *authz) bool {
		k := slices.IndexFunc(a.Challenges, func(c challenge) bool { return c.Type == j.typ })
		if k < 0 || a.Challenges[k].Status != "processing" || a.Status != "pending" {
			return false
		}
		c := &a.Challenges[k]
		if perr == nil {
			c.Status, c.Validated, a.Status = "valid", now.Truncate(time.Second), "valid"
			if reuse := now.Add(s.cfg.Limits.AuthzReuse).Truncate(time.Second); reuse.After(a.Expires) {
				a.Expires = reuse // a reusable authorization lives as long as the reuse window
			}
		} else {
			perr.Status = 0
			c.Status, c.Error, a.Status = "invalid", perr, "invalid"
		}
		final = a
		return true
	})
	if err != nil {
		s.cfg.Logger.Error("acme: validate: record outcome", "authz", j.authz, "err", err)
		return
	}
	switch {
	case final == nil:
	case perr != nil:
		s.recordFailedValidation(j.dir, final.Account)
	default:
		s.indexValidAuthz(context.WithoutCancel(ctx), j.dir, final)
	}
}

// forbiddenTarget says whether validation must never connect to a: the
// unspecified, multicast and link-local addresses (cloud metadata services
// live at 169.254.169.254). Loopback and private addresses stay allowed: an
// internal CA validates internal names.
func forbiddenTarget(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()
}

// dialer connects for validation, redirected by the test-only
// ValidationTarget when it is set.
func (s *Server) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: s.cfg.ValidationTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		if ap, err := netip.ParseAddrPort(address); err == nil && forbiddenTarget(ap.Addr()) {
			return fmt.Errorf("validation target %s is not allowed", ap.Addr())
		}
		return nil
	}}
	if t := s.cfg.Validation; t.Host != "" {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		switch port {
		case "80":
			addr = net.JoinHostPort(t.Host, strconv.Itoa(t.HTTPPort))
		case "443":
			addr = net.JoinHostPort(t.Host, strconv.Itoa(t.TLSPort))
		default:
			return nil, fmt.Errorf("port %s", port)
		}
	}
	return d.DialContext(ctx, network, addr)
}

// validateHTTP01 fetches http://<name>/.well-known/acme-challenge/<token>
// (RFC 8555 8.3): redirects followed only to http or https on the default
// ports, at most maxRedirects; the body (at most maxChallengeBody) must be
// the key authorization, surrounding whitespace allowed.
func (s *Server) validateHTTP01(ctx context.Context, id Ident, token, keyAuth string) *Problem {
	host := id.Value
	if id.Type == "ip" && strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u := "http://" + host + "/.well-known/acme-challenge/" + token
	tr := &http.Transport{
		DialContext:            s.dialContext,
		DisableKeepAlives:      true,
		TLSHandshakeTimeout:    s.cfg.ValidationTimeout,
		ResponseHeaderTimeout:  s.cfg.ValidationTimeout,
		MaxResponseHeaderBytes: 16 << 10,
		Proxy:                  nil,
	}
	tr.TLSClientConfig = insecureTLS()
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return errors.New("too many redirects")
			}
			if a, err := netip.ParseAddr(r.URL.Hostname()); err == nil && forbiddenTarget(a) {
				return fmt.Errorf("redirect to %s is not allowed", a)
			}
			switch {
			case r.URL.Scheme == "http" && (r.URL.Port() == "" || r.URL.Port() == "80"):
			case r.URL.Scheme == "https" && (r.URL.Port() == "" || r.URL.Port() == "443"):
			default:
				return fmt.Errorf("redirect to %s://...:%s is not allowed", r.URL.Scheme, r.URL.Port())
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return errMalformed("bad challenge URL")
	}
	req.Header.Set("User-Agent", "hsmgate-acme-validator")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return errConnection("fetching %s: %s", u, truncate(err.Error()))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errUnauthorized("fetching %s: status %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxChallengeBody+1))
	if err != nil {
		return errConnection("reading %s: %s", u, truncate(err.Error()))
	}
	if len(body) > maxChallengeBody {
		return errUnauthorized("response of %s is over %d bytes", u, maxChallengeBody)
	}
	// The body is not quoted back: the fetched host may be internal.
	if got := strings.TrimSpace(string(body)); subtle.ConstantTimeCompare([]byte(got), []byte(keyAuth)) != 1 {
		return errIncorrectResponse("the response from %s is not the expected key authorization", u)
	}
	return nil
}
