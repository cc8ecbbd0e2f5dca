package transit

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// serve runs the service on an in-memory gRPC connection, with interceptors
// that map domain errors the way the server does (errs.ToGRPC).
func serve(t *testing.T, svc *Service) pb.TransitServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			return resp, errs.ToGRPC(err)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return errs.ToGRPC(h(srv, ss))
		}),
	)
	pb.RegisterTransitServiceServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return lis.DialContext(ctx)
	}), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewTransitServiceClient(conn)
}

func TestServiceOverGRPC(t *testing.T) {
	f := newFixture(t)
	c := serve(t, NewService(f.e, ServiceConfig{MaxItems: 3, MaxItemBytes: 64}))
	ctx := context.Background()
	if _, err := c.CreateKey(ctx, &pb.CreateKeyRequest{Name: "k", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM}); err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: []*pb.EncryptItem{{Plaintext: []byte("a"), Reference: "1"}, {Plaintext: []byte("b"), Reference: "2"}}})
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), enc.Results[1].Ciphertext...)
	bad[len(bad)-1] ^= 1
	dec, err := c.Decrypt(ctx, &pb.DecryptRequest{Name: "k", Items: []*pb.DecryptItem{{Ciphertext: enc.Results[0].Ciphertext, Reference: "x"}, {Ciphertext: bad, Reference: "y"}}})
	if err != nil {
		t.Fatal(err)
	}
	if string(dec.Results[0].Plaintext) != "a" || dec.Results[0].Reference != "x" || dec.Results[0].Error != nil {
		t.Fatalf("item 0: %v", dec.Results[0])
	}
	if dec.Results[1].Error == nil || codes.Code(dec.Results[1].Error.Code) != codes.InvalidArgument || dec.Results[1].Reference != "y" {
		t.Fatalf("item 1: %v, want InvalidArgument", dec.Results[1])
	}
	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"too many items", func() error {
			_, err := c.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: make([]*pb.EncryptItem, 4)})
			return err
		}, codes.ResourceExhausted},
		{"item too large", func() error {
			_, err := c.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: []*pb.EncryptItem{{Plaintext: make([]byte, 65)}}})
			return err
		}, codes.ResourceExhausted},
		{"no items", func() error { _, err := c.Encrypt(ctx, &pb.EncryptRequest{Name: "k"}); return err }, codes.InvalidArgument},
		{"unknown key", func() error { _, err := c.GetKey(ctx, &pb.GetKeyRequest{Name: "nope"}); return err }, codes.NotFound},
		{"exists", func() error {
			_, err := c.CreateKey(ctx, &pb.CreateKeyRequest{Name: "k", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
			return err
		}, codes.AlreadyExists},
		{"export", func() error { _, err := c.ExportKey(ctx, &pb.ExportKeyRequest{Name: "k"}); return err }, codes.FailedPrecondition},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
		})
	}

	// Streams: batches in, batches out, in order; a bad batch ends the stream.
	es, err := c.EncryptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := c.DecryptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		pt := []byte{byte(i)}
		if err := es.Send(&pb.EncryptStreamRequest{Request: &pb.EncryptRequest{Name: "k", Items: []*pb.EncryptItem{{Plaintext: pt}}}}); err != nil {
			t.Fatal(err)
		}
		r, err := es.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := ds.Send(&pb.DecryptStreamRequest{Request: &pb.DecryptRequest{Name: "k", Items: []*pb.DecryptItem{{Ciphertext: r.Response.Results[0].Ciphertext}}}}); err != nil {
			t.Fatal(err)
		}
		d, err := ds.Recv()
		if err != nil || !proto.Equal(&pb.DecryptResult{Plaintext: pt, KeyVersion: 1}, d.Response.Results[0]) {
			t.Fatalf("stream round trip %d: %v %v", i, err, d)
		}
	}
	es.CloseSend()
	if _, err := es.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
	if err := ds.Send(&pb.DecryptStreamRequest{Request: &pb.DecryptRequest{Name: "nope", Items: []*pb.DecryptItem{{}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Recv(); status.Code(err) != codes.NotFound {
		t.Fatalf("stream with unknown key: %v, want NotFound", err)
	}
}

// TestAuthTable: every TransitService method has a rule, and the resources
// come from the request.
func TestAuthTable(t *testing.T) {
	tab := AuthTable()
	for _, m := range pb.TransitService_ServiceDesc.Methods {
		if _, ok := tab["/hsmgate.v1.TransitService/"+m.MethodName]; !ok {
			t.Errorf("no rule for %s", m.MethodName)
		}
	}
	for _, s := range pb.TransitService_ServiceDesc.Streams {
		if _, ok := tab["/hsmgate.v1.TransitService/"+s.StreamName]; !ok {
			t.Errorf("no rule for %s", s.StreamName)
		}
	}
	if n := len(pb.TransitService_ServiceDesc.Methods) + len(pb.TransitService_ServiceDesc.Streams); len(tab) != n {
		t.Errorf("table has %d rules, service %d methods", len(tab), n)
	}
	backup, _ := proto.Marshal(&pb.TransitKeyBackup{Key: &pb.TransitKeyRecord{Name: "orig"}})
	cases := []struct {
		method string
		msg    proto.Message
		cap    auth.Capability
		res    string
	}{
		{"Encrypt", &pb.EncryptRequest{Name: "pay"}, auth.CapEncrypt, "transit/keys/pay"},
		{"Decrypt", &pb.DecryptRequest{Name: "pay"}, auth.CapDecrypt, "transit/keys/pay"},
		{"RotateKey", &pb.RotateKeyRequest{Name: "pay"}, auth.CapRotate, "transit/keys/pay"},
		{"ExportKey", &pb.ExportKeyRequest{Name: "pay"}, auth.CapExport, "transit/keys/pay"},
		{"EncryptStream", &pb.EncryptStreamRequest{Request: &pb.EncryptRequest{Name: "s"}}, auth.CapEncrypt, "transit/keys/s"},
		{"RestoreKey", &pb.RestoreKeyRequest{Backup: backup}, auth.CapCreate, "transit/keys/orig"},
		{"RestoreKey", &pb.RestoreKeyRequest{Backup: backup, Name: "new"}, auth.CapCreate, "transit/keys/new"},
		{"GenerateRandom", &pb.GenerateRandomRequest{}, auth.CapRead, "transit/random"},
		{"ListKeys", &pb.ListKeysRequest{}, auth.CapList, "transit/keys"},
	}
	for _, c := range cases {
		r := tab["/hsmgate.v1.TransitService/"+c.method]
		res := r.Path
		if r.Resource != nil {
			var err error
			if res, err = r.Resource(c.msg); err != nil {
				t.Fatalf("%s: %v", c.method, err)
			}
		}
		if r.Capability != c.cap || res != c.res {
			t.Errorf("%s: %s on %s, want %s on %s", c.method, r.Capability, res, c.cap, c.res)
		}
	}
	if _, err := tab["/hsmgate.v1.TransitService/Encrypt"].Resource(&pb.EncryptRequest{Name: "../etc"}); err == nil {
		t.Error("bad key name accepted as a resource")
	}
}
