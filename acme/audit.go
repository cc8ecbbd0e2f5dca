package acme

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/internal/audit"
)

// Auditor is the audit log (*audit.Log). Every ACME request is audited:
// a "request" line once the JWS is authenticated, written before anything
// changes (if it cannot be written the request fails: fail closed), and a
// "response" line with the HTTP status, the account and the order.
// Refused and unauthenticated requests get a response line.
type Auditor interface {
	// Write appends one line; an error means the request must fail.
	Write(e *audit.Entry) error
}

// auditCall is the audit state of one HTTP request.
type auditCall struct {
	reqID   string
	start   time.Time
	method  string
	dir     string
	account string
	order   string
}

func (s *Server) newAuditCall(r *http.Request, dir string) *auditCall {
	id := r.Header.Get("X-Request-Id")
	if len(id) == 0 || len(id) > 64 || strings.ContainsAny(id, " \t\r\n\"\\") {
		b := make([]byte, 8)
		rand.Read(b)
		id = hex.EncodeToString(b)
	}
	return &auditCall{reqID: id, start: s.cfg.Now(), method: "ACME " + r.Method + " " + truncate(r.URL.Path), dir: dir}
}

func (s *Server) auditEntry(c *auditCall, typ string, r *http.Request) *audit.Entry {
	e := &audit.Entry{
		Type: typ, RequestID: c.reqID, Remote: r.RemoteAddr, Method: c.method,
		Resource: "acme/directories/" + c.dir, Items: 1, Extra: map[string]string{},
	}
	if c.account != "" {
		e.Identity = &audit.Identity{Name: "acme/" + c.dir + "/accounts/" + c.account, Kind: "acme-account"}
		e.Extra["account"] = c.account
	}
	if c.order != "" {
		e.Extra["order"] = c.order
	}
	return e
}

// auditRequest writes the request line; a 503 problem if it cannot be written.
func (s *Server) auditRequest(c *auditCall, r *http.Request) error {
	if s.cfg.Audit == nil {
		return nil
	}
	if err := s.cfg.Audit.Write(s.auditEntry(c, "request", r)); err != nil {
		s.cfg.Logger.Error("acme: audit", "request_id", c.reqID, "err", err)
		p := problem("serverInternal", http.StatusServiceUnavailable, "audit log unavailable")
		p.retryAfter = 5
		return p
	}
	return nil
}

// auditFailed writes the response line of a refused request.
func (s *Server) auditFailed(c *auditCall, r *http.Request, p *Problem) {
	s.auditResponse(c, r, p.Status, p.Type)
}

// auditResponse writes the response line (best effort: the answer is decided).
func (s *Server) auditResponse(c *auditCall, r *http.Request, status int, problemType string) {
	if s.cfg.Audit == nil {
		return
	}
	e := s.auditEntry(c, "response", r)
	e.Code = strconv.Itoa(status)
	if problemType != "" {
		e.Extra["problem"] = strings.TrimPrefix(problemType, ProblemNS)
	}
	e.LatencyMS = float64(s.cfg.Now().Sub(c.start).Microseconds()) / 1000
	if err := s.cfg.Audit.Write(e); err != nil {
		s.cfg.Logger.Error("acme: audit response", "request_id", c.reqID, "err", err)
	}
}
