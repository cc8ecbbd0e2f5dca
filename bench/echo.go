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

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/server"
)

// echoMethod is the one RPC of the echo service.
const echoMethod = "/hsmgate.bench.v1.Echo/Echo"

// echoServer is the transport limit's server. In "messages" mode (the
// default) it decodes each request as the scenario's request type and
// answers with a response the scenario's server returned: the very messages
// of the scenario, byte for byte, with none of the server's work (auth,
// audit, crypto). In "bytes" mode requests and responses are BytesValues of
// the same encoded sizes (cheaper to decode than many small items: an upper
// bound of gRPC and TLS alone). In "work" mode it is "messages" plus the
// scenario's software operation once per item of the request, in the
// handler: what any server of the same messages must at least do, so the
// ratio to it is what hsmgate's own layers (auth, audit, the engine's
// bookkeeping) cost.
type echoServer struct {
	gs     *grpc.Server
	addr   string
	caFile string
	dir    string
	cur    atomic.Pointer[echoShape]
}

// echoShape is what the echo server expects and answers.
type echoShape struct {
	newReq func() proto.Message
	resp   proto.Message
	// work, if set, runs items times in the handler of every call.
	work  itemOp
	items int
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
	e.set(&echoShape{newReq: func() proto.Message { return new(wrapperspb.BytesValue) }, resp: &wrapperspb.BytesValue{}})
	e.gs = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})),
		grpc.MaxRecvMsgSize(config.DefaultMaxRecvBytes),
		grpc.MaxSendMsgSize(config.DefaultMaxSendBytes),
		grpc.MaxConcurrentStreams(config.DefaultMaxConcurrentStreams),
		grpc.NumStreamWorkers(server.StreamWorkers()),
	)
	e.gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "hsmgate.bench.v1.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Echo",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				sh := e.cur.Load()
				if err := dec(sh.newReq()); err != nil {
					return nil, err
				}
				for range sh.items {
					if err := sh.work(ctx); err != nil {
						return nil, err
					}
				}
				return sh.resp, nil
			},
		}},
	}, struct{}{})
	go e.gs.Serve(ln)
	return e, nil
}

func (e *echoServer) set(sh *echoShape) { e.cur.Store(sh) }

// dial connects to the echo server the way the bench client connects to
// hsmgate (TLS, a bearer token on every call).
func (e *echoServer) dial(token string) (*grpc.ClientConn, error) {
	return client.Dial(client.Options{Addr: e.addr, CACert: e.caFile, Token: token})
}

func (e *echoServer) stop() {
	e.gs.Stop()
	os.RemoveAll(filepath.Join(e.dir, "echo-tls"))
}

// Echo modes.
const (
	EchoMessages = "messages"
	EchoBytes    = "bytes"
	EchoWork     = "work"
)

// echoFor returns the server's shape and the client's call for rq in mode;
// in EchoWork mode the handler runs work items times a call.
func echoFor(mode string, rq request, work itemOp, items int) (*echoShape, func(ctx context.Context, cc grpc.ClientConnInterface) error) {
	if mode == EchoBytes {
		req, resp := bytesValueOfSize(proto.Size(rq.Msg)), bytesValueOfSize(proto.Size(rq.Resp))
		sh := &echoShape{newReq: func() proto.Message { return new(wrapperspb.BytesValue) }, resp: resp}
		return sh, func(ctx context.Context, cc grpc.ClientConnInterface) error {
			return cc.Invoke(ctx, echoMethod, req, new(wrapperspb.BytesValue))
		}
	}
	reqType, respType := rq.Msg.ProtoReflect().Type(), rq.Resp.ProtoReflect().Type()
	sh := &echoShape{newReq: func() proto.Message { return reqType.New().Interface() }, resp: rq.Resp}
	if mode == EchoWork {
		sh.work, sh.items = work, items
	}
	return sh, func(ctx context.Context, cc grpc.ClientConnInterface) error {
		return cc.Invoke(ctx, echoMethod, rq.Msg, respType.New().Interface())
	}
}
