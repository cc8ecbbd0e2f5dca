// Package errs holds the kinds of domain error that hsmgate's packages return,
// and the one place where they become gRPC status codes.
//
// A domain package declares its sentinels with New, so that
//
//	var ErrNotFound = errs.New(errs.NotFound, "keystore: not found")
//
// is both matched by errors.Is(err, keystore.ErrNotFound) and classified by
// errors.Is(err, errs.NotFound). Wrapping with %w keeps both. GRPCStatus maps
// any error to a status: a kind found anywhere in the chain gives its code and
// the error's own text; anything else is Internal with a generic message so
// that no internal detail reaches a client.
//
// Two more rules keep internals and echoed input out of what a client sees
// (and out of the request log, which logs the status):
//
//   - Unavailable is a fault of the server's own dependencies (the HSM, the
//     store, the audit file): its status carries only the sentinel's message
//     ("audit: log unavailable"), never the wrapped cause (a file path, a
//     PKCS#11 return code). The cause is for the server log.
//   - Every status message is capped at MaxMessageBytes (Truncate), so a
//     100 KB key name is not echoed back. Quote is the helper for putting
//     caller-supplied strings into error messages in the first place.
package errs

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind classifies an error for clients. Kinds are compared with errors.Is.
type Kind struct{ code codes.Code }

func (k *Kind) Error() string { return k.code.String() }

// Code returns the gRPC code of the kind.
func (k *Kind) Code() codes.Code { return k.code }

// The kinds. Each is a distinct pointer, so errors.Is compares identity.
var (
	InvalidArgument    = &Kind{codes.InvalidArgument}
	NotFound           = &Kind{codes.NotFound}
	AlreadyExists      = &Kind{codes.AlreadyExists}
	FailedPrecondition = &Kind{codes.FailedPrecondition}
	Aborted            = &Kind{codes.Aborted} // lost a compare-and-swap race; retryable
	ResourceExhausted  = &Kind{codes.ResourceExhausted}
	Unavailable        = &Kind{codes.Unavailable}
	Unauthenticated    = &Kind{codes.Unauthenticated}
	PermissionDenied   = &Kind{codes.PermissionDenied}
	Unimplemented      = &Kind{codes.Unimplemented}
)

type kindError struct {
	kind *Kind
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

// New returns a sentinel error of the given kind with the given message.
func New(kind *Kind, msg string) error { return &kindError{kind: kind, msg: msg} }

// Code returns the gRPC code for err: the code of the first kind in its chain,
// codes.Canceled/DeadlineExceeded for context errors, codes.OK for nil, and
// codes.Internal otherwise. A *status.Status error keeps its own code.
func Code(err error) codes.Code { return GRPCStatus(err).Code() }

var kinds = []*Kind{
	InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Aborted,
	ResourceExhausted, Unavailable, Unauthenticated, PermissionDenied, Unimplemented,
}

// GRPCStatus converts err to a status for a client. It is the only mapping
// from domain errors to codes in hsmgate. Its message is at most
// MaxMessageBytes long (plus the truncation marker).
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if s := se.GRPCStatus(); s != nil && s.Code() != codes.Unknown {
			return capStatus(s)
		}
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			if k == Unavailable {
				return status.New(k.code, unavailableMessage(err))
			}
			return status.New(k.code, Truncate(err.Error(), MaxMessageBytes))
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "canceled")
	}
	return status.New(codes.Internal, internalMessage)
}

// ToGRPC returns err as a gRPC status error (nil stays nil).
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	return GRPCStatus(err).Err()
}

// HTTPStatus is GRPCStatus for HTTP protocols: the HTTP status code of err's
// kind and the same client-safe message (capped, causes of Unavailable and
// Internal hidden). Handlers answer errors through it, never err.Error().
// hsmgate's own HTTP endpoints (PKI, SSH CA, auth, the in-flight limiter)
// use this table; the Vault door uses VaultHTTPStatus.
func HTTPStatus(err error) (int, string) { return httpCodes.status(err) }

// VaultHTTPStatus is HTTPStatus with Vault's table, for the Vault door:
// 400 for bad input and failed preconditions, 403 for an unauthenticated
// caller as for a denied one (Vault answers a bad token so), 404 for
// unknown and unimplemented paths, 412 for a lost race to retry, 503 for
// an expired deadline.
func VaultHTTPStatus(err error) (int, string) { return vaultHTTPCodes.status(err) }

// httpTable maps gRPC codes to HTTP status codes. A code it does not name
// is 500 with the generic message, whatever the status said.
type httpTable map[codes.Code]int

func (t httpTable) status(err error) (int, string) {
	st := GRPCStatus(err)
	code, ok := t[st.Code()]
	if !ok || code == http.StatusInternalServerError {
		return http.StatusInternalServerError, internalMessage
	}
	return code, st.Message()
}

// internalMessage is all a client learns of an internal fault.
const internalMessage = "internal error"

var httpCodes = httpTable{
	codes.OK:                 http.StatusOK,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.FailedPrecondition: http.StatusConflict,
	codes.Aborted:            http.StatusConflict,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.Unauthenticated:    http.StatusUnauthorized,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.Canceled:           http.StatusBadRequest,
}

var vaultHTTPCodes = httpTable{
	codes.OK:                 http.StatusOK,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.AlreadyExists:      http.StatusBadRequest,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.Unauthenticated:    http.StatusForbidden,
	codes.NotFound:           http.StatusNotFound,
	codes.Unimplemented:      http.StatusNotFound,
	codes.Aborted:            http.StatusPreconditionFailed,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DeadlineExceeded:   http.StatusServiceUnavailable,
	codes.Canceled:           http.StatusServiceUnavailable,
}

// MaxMessageBytes caps the message of every status GRPCStatus returns (and so
// of every HTTP error built from it).
const MaxMessageBytes = 256

// MaxQuoteBytes caps a caller-supplied string quoted by Quote.
const MaxQuoteBytes = 64

// TruncatedMarker ends a string cut by Truncate.
const TruncatedMarker = "…(truncated)"

// Truncate returns s if it is at most n bytes long; otherwise its first n
// bytes (cut back to a whole UTF-8 character) followed by TruncatedMarker.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n < 0 {
		n = 0
	}
	cut := n
	for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + TruncatedMarker
}

// Quote returns a caller-supplied string (a key or role name, a header) in
// Go quoted form, cut to MaxQuoteBytes first, for error and log messages:
// fmt.Errorf("transit: key %s: %w", errs.Quote(name), ErrNotFound).
func Quote(s string) string {
	if len(s) <= MaxQuoteBytes {
		return strconv.Quote(s)
	}
	return strconv.Quote(Truncate(s, MaxQuoteBytes))
}

// unavailableMessage is the client's text for an Unavailable error: the
// message of the outermost sentinel made with New (e.g. "audit: log
// unavailable"), without the causes wrapped around or under it.
func unavailableMessage(err error) string {
	var ke *kindError
	if errors.As(err, &ke) && ke.kind == Unavailable {
		return Truncate(ke.msg, MaxMessageBytes)
	}
	return "unavailable"
}

// capStatus returns s, or a copy with its message truncated (details kept).
func capStatus(s *status.Status) *status.Status {
	if len(s.Message()) <= MaxMessageBytes {
		return s
	}
	p := s.Proto()
	p.Message = Truncate(p.GetMessage(), MaxMessageBytes)
	return status.FromProto(p)
}
