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
package errs

import (
	"context"
	"errors"

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
// from domain errors to codes in hsmgate.
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if s := se.GRPCStatus(); s != nil && s.Code() != codes.Unknown {
			return s
		}
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return status.New(k.code, err.Error())
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "canceled")
	}
	return status.New(codes.Internal, "internal error")
}

// ToGRPC returns err as a gRPC status error (nil stays nil).
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	return GRPCStatus(err).Err()
}
