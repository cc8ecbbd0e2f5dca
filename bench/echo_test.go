package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestEchoWork: in "work" mode the echo's handler runs the scenario's
// software operation once per item of every call (and a failure of it fails
// the call); the other modes run nothing.
func TestEchoWork(t *testing.T) {
	e, err := startEcho(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.stop()
	cc, err := e.dial("any-token")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var ran atomic.Int64
	var fail atomic.Bool
	work := func(context.Context) error {
		ran.Add(1)
		if fail.Load() {
			return errors.New("work failed")
		}
		return nil
	}
	rq := request{Msg: wrapperspb.Bytes(make([]byte, 300)), Resp: wrapperspb.Bytes(make([]byte, 80))}
	ctx := context.Background()
	for _, tc := range []struct {
		mode string
		want int64
	}{{EchoMessages, 0}, {EchoBytes, 0}, {EchoWork, 7}} {
		ran.Store(0)
		shape, call := echoFor(tc.mode, rq, work, 7)
		e.set(shape)
		for range 3 {
			if err := call(ctx, cc); err != nil {
				t.Fatalf("%s: %v", tc.mode, err)
			}
		}
		if got := ran.Load(); got != 3*tc.want {
			t.Errorf("%s: work ran %d times for 3 calls, want %d", tc.mode, got, 3*tc.want)
		}
	}
	fail.Store(true)
	shape, call := echoFor(EchoWork, rq, work, 7)
	e.set(shape)
	if err := call(ctx, cc); status.Code(err) != codes.Unknown {
		t.Errorf("work failing: got %v, want the call to fail", err)
	}
}
