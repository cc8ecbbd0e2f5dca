package callinfo

import (
	"context"
	"testing"
	"time"
)

type otherKey struct{}

func TestInfoRidesTheContext(t *testing.T) {
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), otherKey{}, "v"))
	ctx, info := New(parent, "svc", "M")
	info.RequestID = "r1"
	inner, stop := context.WithTimeout(context.WithValue(ctx, otherKey{}, "w"), time.Minute)
	defer stop()
	if got := From(inner); got != info || got.RequestID != "r1" || got.Method != "M" {
		t.Fatalf("From: got %+v, want the call's info", got)
	}
	if ctx.Value(otherKey{}) != "v" {
		t.Error("the parent's values are lost")
	}
	if From(parent) != nil || From(nil) != nil {
		t.Error("an Info outside the call")
	}
	cancel()
	select {
	case <-inner.Done():
	case <-time.After(time.Second):
		t.Fatal("the parent's cancellation did not reach a child context")
	}
}

func BenchmarkNew(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, i := New(ctx, "svc", "M")
		i.RequestID = "r"
		if From(c) == nil {
			b.Fatal("no info")
		}
	}
}
