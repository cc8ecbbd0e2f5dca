package server

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/internal/syncbuf"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestCallLogLevels: a call that succeeds is logged at debug (the audit log
// is the record), a failed one at its code's level, with the same fields.
func TestCallLogLevels(t *testing.T) {
	logs := &syncbuf.Buffer{}
	level := new(slog.LevelVar) // info
	var fail atomic.Uint32      // codes.Code
	h := start(t, newPKI(t), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	}, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(ctx context.Context) (*hsmgatev1.GetStatusResponse, error) {
			if c := codes.Code(fail.Load()); c != codes.OK {
				return nil, status.Error(c, "no")
			}
			return &hsmgatev1.GetStatusResponse{}, nil
		}})
	})
	cc := h.dial(t, nil)
	finished := func(from int) []string {
		var out []string
		for _, l := range strings.Split(logs.String()[from:], "\n") {
			if strings.Contains(l, `msg="finished call"`) && strings.Contains(l, "grpc.method=GetStatus") {
				out = append(out, l)
			}
		}
		return out
	}
	for _, c := range []struct {
		name  string
		level slog.Level
		code  codes.Code
		want  string // the line's level, "" for no line
	}{
		{"success at info", slog.LevelInfo, codes.OK, ""},
		{"caller's mistake at info", slog.LevelInfo, codes.InvalidArgument, "level=INFO"},
		{"refusal at info", slog.LevelInfo, codes.PermissionDenied, "level=WARN"},
		{"internal at info", slog.LevelInfo, codes.Internal, "level=ERROR"},
		{"success at debug", slog.LevelDebug, codes.OK, "level=DEBUG"},
	} {
		t.Run(c.name, func(t *testing.T) {
			from := len(logs.String())
			level.Set(c.level)
			fail.Store(uint32(c.code))
			if _, err := callStatus(cc); status.Code(err) != c.code {
				t.Fatalf("got %v, want %v", err, c.code)
			}
			lines := finished(from)
			if c.want == "" {
				if len(lines) != 0 {
					t.Errorf("got %q, want no line", lines)
				}
				return
			}
			if len(lines) != 1 {
				t.Fatalf("got %d lines %q, want 1", len(lines), lines)
			}
			for _, f := range []string{c.want, "grpc.code=" + c.code.String(), "grpc.service=hsmgate.v1.SystemService",
				"grpc.component=server", "protocol=grpc", "grpc.method_type=unary", "peer.address=127.0.0.1:", "grpc.duration="} {
				if !strings.Contains(lines[0], f) {
					t.Errorf("line lacks %q: %s", f, lines[0])
				}
			}
		})
	}
}
