package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/client"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/devtls"
)

// echoMethod is the one RPC of the echo service.
const echoMethod = "/hsmgate.bench.v1.Echo/Echo"

// echoServer answers every request with a BytesValue whose encoded size is
// respSize; with the request's own size that makes the transport limit's
// messages byte-for-byte as large as the scenario's.
type echoServer struct {
	gs       *grpc.Server
	addr     string
	caFile   string
	dir      string
	respSize atomic.Int64
	resp     atomic.Pointer[wrapperspb.BytesValue]
}

// bytesValueOfSize is a BytesValue whose encoding is exactly n bytes
// (n >= 2; smaller n give the empty message, 0 bytes).
func bytesValueOfSize(n int) *wrapperspb.BytesValue {
	if n < 2 {
		return &wrapperspb.BytesValue{}
	}
	// 1 tag byte, the length varint, the value.
	for l := n - 2; l >= 0; l-- {
		v := &wrapperspb.BytesValue{Value: make([]byte, l)}
		if s := proto.Size(v); s == n {
			return v
		} else if s < n {
			// A varint length boundary: pad can't be hit exactly; take the closest below.
			return v
		}
	}
	return &wrapperspb.BytesValue{}
}

// startEcho serves the echo service on 127.0.0.1:0 with TLS from a dev CA
// and an ECDSA P-256 certificate made in dir (the kind `hsmgate dev` uses),
// with the default server limits of hsmgate.
func startEcho(dir string) (*echoServer, error) {
	files, _, err := devtls.Ensure(filepath.Join(dir, "echo-tls"), []string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		return nil, fmt.Errorf("bench: echo TLS: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, fmt.Errorf("bench: echo TLS: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: echo: %w", err)
	}
	e := &echoServer{addr: ln.Addr().String(), caFile: files.CACert, dir: dir}
	e.setResponseSize(0)
	e.gs = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})),
		grpc.MaxRecvMsgSize(config.DefaultMaxRecvBytes),
		grpc.MaxSendMsgSize(config.DefaultMaxSendBytes),
		grpc.MaxConcurrentStreams(config.DefaultMaxConcurrentStreams),
	)
	e.gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "hsmgate.bench.v1.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Echo",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return e.resp.Load(), nil
			},
		}},
	}, struct{}{})
	go e.gs.Serve(ln)
	return e, nil
}

func (e *echoServer) setResponseSize(n int) {
	e.respSize.Store(int64(n))
	e.resp.Store(bytesValueOfSize(n))
}

// dial connects to the echo server the way the bench client connects to
// hsmgate (TLS, a bearer token on every call).
func (e *echoServer) dial(token string) (*grpc.ClientConn, error) {
	return client.Dial(client.Config{Addr: e.addr, CACert: e.caFile, Token: token})
}

func (e *echoServer) stop() {
	e.gs.Stop()
	os.RemoveAll(filepath.Join(e.dir, "echo-tls"))
}

// echoCall is one echo RPC with a request of reqSize bytes.
func echoCall(reqSize int) func(ctx context.Context, cc grpc.ClientConnInterface) error {
	req := bytesValueOfSize(reqSize)
	return func(ctx context.Context, cc grpc.ClientConnInterface) error {
		out := new(wrapperspb.BytesValue)
		return cc.Invoke(ctx, echoMethod, req, out)
	}
}
