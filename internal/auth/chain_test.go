package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
)

// failDesc is a one-method service whose handler fails with an internal
// fault carrying a cause that must never reach the client.
var failDesc = grpc.ServiceDesc{
	ServiceName: "test.Fail",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Do", Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(context.Context, any) (any, error) {
			return nil, fmt.Errorf("test: read record: %w", errors.New("bolt: page 42 checksum mismatch"))
		}
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Fail/Do"}, h)
	}}},
}

// Through the server's real interceptor chain (metrics, logging, recovery,
// error mapping, auth), an Internal error is logged exactly once, with its
// cause and the request id; the client sees "internal error" only, and the
// server's call log line carries the same request id.
func TestInternalErrorThroughServerChain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	files, _, err := devtls.Ensure(dir, devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, _, err := devtls.Load(files.CACert, files.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bbolt.Open(filepath.Join(dir, "store.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := auth.New(ctx, auth.Config{}, st)
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := a.Tokens.Create(ctx, &auth.Identity{Kind: auth.KindRoot}, auth.TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	srv, err := server.New(server.Config{GRPCAddr: "127.0.0.1:0", CertFile: files.Cert, KeyFile: files.Key, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ic, err := auth.NewInterceptor(auth.Options{
		Table:         auth.Table{"/test.Fail/Do": {AuthenticatedOnly: true}},
		Authenticator: a.Authenticator, Policies: a.Policies, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Use(ic.Unary(), ic.Stream()); err != nil {
		t.Fatal(err)
	}
	srv.RegisterService(&failDesc, struct{}{})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret, "x-request-id", "chain-req-1")
	err = cc.Invoke(cctx, "/test.Fail/Do", wrapperspb.String("x"), new(wrapperspb.StringValue))
	if s, _ := status.FromError(err); s.Code() != codes.Internal || s.Message() != "internal error" {
		t.Errorf("client got %v %q, want Internal \"internal error\"", s.Code(), s.Message())
	}
	// The call's log line is written when the call finishes, before the
	// response reaches the client.
	var internal, calls []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		switch {
		case m["msg"] == "internal error":
			internal = append(internal, m)
		case m["grpc.method"] == "Do" || m["grpc.service"] == "test.Fail":
			calls = append(calls, m)
		}
	}
	if len(internal) != 1 {
		t.Fatalf("got %d \"internal error\" lines, want 1:\n%s", len(internal), logs.String())
	}
	if got := fmt.Sprint(internal[0]["error"]); !strings.Contains(got, "checksum mismatch") {
		t.Errorf("logged error %q lacks the cause", got)
	}
	if got := internal[0]["request_id"]; got != "chain-req-1" {
		t.Errorf("logged request id: got %v, want chain-req-1", got)
	}
	if len(calls) != 1 || calls[0]["request_id"] != "chain-req-1" {
		t.Errorf("call log lines %v: want one with request_id chain-req-1", calls)
	}
}
