package errs

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/client"
)

// TestFromStatusRoundTrip: a domain error sent as a status comes back as
// an error of the same kind and of the client's sentinel for that code.
func TestFromStatusRoundTrip(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.code.String(), func(t *testing.T) {
			sent := GRPCStatus(New(k, "pkg: thing"))
			got := FromStatus(sent)
			if !errors.Is(got, k) {
				t.Errorf("errors.Is(FromStatus(%v), kind): got false, want true", sent)
			}
			if want := client.KindOf(k.code); !errors.Is(got, want) {
				t.Errorf("errors.Is(FromStatus(%v), %v): got false, want true", sent, want)
			}
			if c := status.Code(got); c != k.code {
				t.Errorf("status.Code: got %v, want %v", c, k.code)
			}
			if again := GRPCStatus(got); again.Code() != k.code || again.Message() != sent.Message() {
				t.Errorf("GRPCStatus(FromStatus(s)): got %v, want %v", again, sent)
			}
		})
	}
	if err := FromStatus(status.New(codes.OK, "")); err != nil {
		t.Errorf("FromStatus(OK): got %v, want nil", err)
	}
	if err := FromStatus(status.New(codes.DeadlineExceeded, "slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("FromStatus(DeadlineExceeded): got %v, want context.DeadlineExceeded", err)
	}
}
