package acme

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ProblemNS is the namespace of ACME error types (RFC 8555 6.7).
const ProblemNS = "urn:ietf:params:acme:error:"

// Problem is an RFC 7807 problem document with an ACME error type. It is
// also the error type of this package's request handling: a handler that
// returns a *Problem answers with it; any other error is a serverInternal
// problem, logged with its cause.
type Problem struct {
	Type        string    `json:"type"`
	Detail      string    `json:"detail,omitempty"`
	Status      int       `json:"status,omitempty"`
	Identifier  *Ident    `json:"identifier,omitempty"`
	Subproblems []Problem `json:"subproblems,omitempty"`
	Algorithms  []string  `json:"algorithms,omitempty"`
	// retryAfter, when set, becomes a Retry-After header (seconds).
	retryAfter int
}

func (p *Problem) Error() string { return "acme: " + p.Type + ": " + p.Detail }

// Is makes errors.Is(err, &Problem{Type: T}) match any problem of type T.
func (p *Problem) Is(target error) bool {
	t, ok := target.(*Problem)
	return ok && t.Type == p.Type
}

// problem makes a problem of type typ (without the namespace) and HTTP status.
func problem(typ string, status int, format string, args ...any) *Problem {
	return &Problem{Type: ProblemNS + typ, Status: status, Detail: fmt.Sprintf(format, args...)}
}

// Constructors of the problems this server answers with, each with its
// RFC 8555 HTTP status.
func errMalformed(f string, a ...any) *Problem {
	return problem("malformed", http.StatusBadRequest, f, a...)
}
func errBadNonce(f string, a ...any) *Problem {
	return problem("badNonce", http.StatusBadRequest, f, a...)
}
func errUnauthorized(f string, a ...any) *Problem {
	return problem("unauthorized", http.StatusForbidden, f, a...)
}
func errNotFound(f string, a ...any) *Problem {
	return problem("malformed", http.StatusNotFound, f, a...)
}
func errBadCSR(f string, a ...any) *Problem { return problem("badCSR", http.StatusBadRequest, f, a...) }
func errRejectedIdent(f string, a ...any) *Problem {
	return problem("rejectedIdentifier", http.StatusBadRequest, f, a...)
}
func errUnsupportedIdent(f string, a ...any) *Problem {
	return problem("unsupportedIdentifier", http.StatusBadRequest, f, a...)
}
func errAccountDoesNotExist(f string, a ...any) *Problem {
	return problem("accountDoesNotExist", http.StatusBadRequest, f, a...)
}
func errOrderNotReady(f string, a ...any) *Problem {
	return problem("orderNotReady", http.StatusForbidden, f, a...)
}
func errEABRequired(f string, a ...any) *Problem {
	return problem("externalAccountRequired", http.StatusBadRequest, f, a...)
}
func errBadPublicKey(f string, a ...any) *Problem {
	return problem("badPublicKey", http.StatusBadRequest, f, a...)
}
func errAlreadyRevoked(f string, a ...any) *Problem {
	return problem("alreadyRevoked", http.StatusBadRequest, f, a...)
}
func errBadRevocationReason(f string, a ...any) *Problem {
	return problem("badRevocationReason", http.StatusBadRequest, f, a...)
}
func errIncorrectResponse(f string, a ...any) *Problem {
	return problem("incorrectResponse", http.StatusForbidden, f, a...)
}
func errConnection(f string, a ...any) *Problem {
	return problem("connection", http.StatusBadRequest, f, a...)
}
func errTLS(f string, a ...any) *Problem { return problem("tls", http.StatusBadRequest, f, a...) }
func errDNS(f string, a ...any) *Problem { return problem("dns", http.StatusBadRequest, f, a...) }
func errUnsupportedContact(f string, a ...any) *Problem {
	return problem("unsupportedContact", http.StatusBadRequest, f, a...)
}
func errInvalidContact(f string, a ...any) *Problem {
	return problem("invalidContact", http.StatusBadRequest, f, a...)
}
func errRateLimited(retry int, f string, a ...any) *Problem {
	p := problem("rateLimited", http.StatusTooManyRequests, f, a...)
	p.retryAfter = retry
	return p
}
func errBadSigAlg(f string, a ...any) *Problem {
	p := problem("badSignatureAlgorithm", http.StatusBadRequest, f, a...)
	p.Algorithms = []string{"ES256", "ES384", "RS256", "EdDSA"}
	return p
}
func errServerInternal() *Problem {
	return problem("serverInternal", http.StatusInternalServerError, "internal error")
}

// write sends p as application/problem+json.
func (p *Problem) write(w http.ResponseWriter) {
	if p.retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(p.retryAfter))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}
