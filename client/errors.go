package client

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Every error a Client method returns for a gRPC status
// (whole-call or per item) matches exactly one of them with errors.Is, so
//
//	if errors.Is(err, client.ErrNotFound) { ... }
//
// works across the wire, as the server's own domain errors do on its side.
// Deadline and cancellation map to context.DeadlineExceeded and
// context.Canceled.
var (
	ErrInvalidArgument    = &Kind{codes.InvalidArgument, "invalid argument"}
	ErrNotFound           = &Kind{codes.NotFound, "not found"}
	ErrAlreadyExists      = &Kind{codes.AlreadyExists, "already exists"}
	ErrFailedPrecondition = &Kind{codes.FailedPrecondition, "failed precondition"}
	ErrAborted            = &Kind{codes.Aborted, "aborted"}
	ErrResourceExhausted  = &Kind{codes.ResourceExhausted, "resource exhausted"}
	ErrUnavailable        = &Kind{codes.Unavailable, "unavailable"}
	ErrUnauthenticated    = &Kind{codes.Unauthenticated, "unauthenticated"}
	ErrPermissionDenied   = &Kind{codes.PermissionDenied, "permission denied"}
	ErrUnimplemented      = &Kind{codes.Unimplemented, "unimplemented"}
	ErrOutOfRange         = &Kind{codes.OutOfRange, "out of range"}
	ErrDataLoss           = &Kind{codes.DataLoss, "data loss"}
	// ErrInternal is a server fault, and every code this table does not name
	// (Unknown among them).
	ErrInternal = &Kind{codes.Internal, "internal error"}
)

// Kind is the type of the sentinel errors: one per gRPC code.
type Kind struct {
	code codes.Code
	text string
}

func (k *Kind) Error() string { return "hsmgate: " + k.text }

// Code is the gRPC code of the kind.
func (k *Kind) Code() codes.Code { return k.code }

// GRPCStatus is the status of the kind, so that status.Code (and a CLI
// printing codes) classifies a local error that wraps a sentinel, such as
// a malformed argument refused before any call, as the server would.
func (k *Kind) GRPCStatus() *status.Status { return status.New(k.code, k.text) }

var kindByCode = func() map[codes.Code]*Kind {
	m := map[codes.Code]*Kind{}
	for _, k := range []*Kind{ErrInvalidArgument, ErrNotFound, ErrAlreadyExists, ErrFailedPrecondition,
		ErrAborted, ErrResourceExhausted, ErrUnavailable, ErrUnauthenticated, ErrPermissionDenied,
		ErrUnimplemented, ErrOutOfRange, ErrDataLoss, ErrInternal} {
		m[k.code] = k
	}
	return m
}()

// KindOf returns the sentinel for a gRPC code (ErrInternal for codes
// without one), or nil for OK, Canceled and DeadlineExceeded, whose errors
// match the context package's errors instead.
func KindOf(c codes.Code) *Kind {
	switch c {
	case codes.OK, codes.Canceled, codes.DeadlineExceeded:
		return nil
	}
	if k, ok := kindByCode[c]; ok {
		return k
	}
	return ErrInternal
}

// Error is a status from the server. Its text is the status's ("rpc
// error: code = NotFound desc = ..."); errors.Is matches its Kind (or
// context.DeadlineExceeded / context.Canceled), and status.FromError and
// status.Code still see the original status through GRPCStatus.
type Error struct {
	st *status.Status
}

func (e *Error) Error() string { return e.st.Err().Error() }

// GRPCStatus returns the status, for google.golang.org/grpc/status.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// Code is the status code.
func (e *Error) Code() codes.Code { return e.st.Code() }

// Message is the status message (already client-safe: the server never
// puts secrets or internal causes into it).
func (e *Error) Message() string { return e.st.Message() }

// Is matches the Kind of the code, or the context error for Canceled and
// DeadlineExceeded.
func (e *Error) Is(target error) bool {
	switch e.st.Code() {
	case codes.Canceled:
		return target == context.Canceled
	case codes.DeadlineExceeded:
		return target == context.DeadlineExceeded
	}
	k := KindOf(e.st.Code())
	return k != nil && target == error(k)
}

// FromStatus returns the error of a status: nil for OK, else an *Error.
// It is the inverse of the server's errs.GRPCStatus.
func FromStatus(st *status.Status) error {
	if st == nil || st.Code() == codes.OK {
		return nil
	}
	return &Error{st: st}
}

// FromError converts a gRPC status error (as returned by a generated stub)
// into an *Error; an error that is already one, nil, and errors that carry
// no status are returned unchanged. A context error of the caller's own
// ctx stays what it is.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if st, ok := status.FromError(err); ok {
		return FromStatus(st)
	}
	return err
}
