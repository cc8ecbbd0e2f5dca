package errs

import (
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/client"
)

// FromStatus is GRPCStatus backwards, for code that calls an hsmgate
// server (the CLI, tests, a replica calling another): the error of a status,
// nil for OK. It matches with errors.Is both the kind of its code
// (errs.NotFound) and the public client's sentinel (client.ErrNotFound),
// whose table (client.KindOf) it reuses, and status.FromError still gives
// the original status.
func FromStatus(st *status.Status) error {
	err := client.FromStatus(st)
	if err == nil {
		return nil
	}
	for _, k := range kinds {
		if k.code == st.Code() {
			return &statusError{kind: k, err: err}
		}
	}
	return err
}

// statusError is a status matched to a Kind.
type statusError struct {
	kind *Kind
	err  error // a *client.Error
}

func (e *statusError) Error() string              { return e.err.Error() }
func (e *statusError) Is(target error) bool       { return target == e.kind }
func (e *statusError) Unwrap() error              { return e.err }
func (e *statusError) GRPCStatus() *status.Status { return status.Convert(e.err) }
