package auth

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/audit"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// pipeDesc is a tiny test service: Echo (unary) and Run (bidi echo), both
// carrying a key name in a StringValue.
var pipeDesc = grpc.ServiceDesc{
	ServiceName: "test.Pipe",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: pipeUnary("/test.Pipe/Echo")}, {MethodName: "Peek", Handler: pipeUnary("/test.Pipe/Peek")}},
	Streams: []grpc.StreamDesc{{StreamName: "Run", ServerStreams: true, ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
		for {
			m := new(wrapperspb.StringValue)
			if err := st.RecvMsg(m); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
			if err := st.SendMsg(m); err != nil {
				return err
			}
		}
	}}},
}

// pipeUnary is a unary echo of a StringValue (Echo is in no rule table; Peek
// is read-only).
func pipeUnary(method string) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req any) (any, error) { return req, nil }
		if ic == nil {
			return h(ctx, in)
		}
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, h)
	}
}

func pipeResource(m proto.Message) (string, error) {
	s, ok := m.(*wrapperspb.StringValue)
	if !ok || s.GetValue() == "" {
		return "", errors.New("no key name")
	}
	return "transit/keys/" + s.GetValue(), nil
}

// testTable: health Check needs read on sys/health; the rest of health and
// reflection are public; AuthService; Pipe/Run needs encrypt on the key of
// each message. Pipe/Echo is deliberately missing.
func testTable(t testing.TB) Table {
	t.Helper()
	pub := PublicTable()
	delete(pub, "/grpc.health.v1.Health/Check")
	tab, err := Merge(pub, AuthTable(), Table{
		"/grpc.health.v1.Health/Check": {Capability: CapRead, Path: "sys/health"},
		"/test.Pipe/Run":               {Capability: CapEncrypt, Resource: pipeResource},
		"/test.Pipe/Peek":              {Capability: CapEncrypt, Resource: pipeResource, ReadOnly: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

type testEnv struct {
	a        *Auth
	trusted  *testCA
	server   tls.Certificate
	addr     string
	handled  atomic.Int64 // unary handlers reached
	auditLog string
	srv      *grpc.Server
}

// startServer runs a real gRPC server over TLS on loopback with the
// interceptor in front of grpc health, AuthService and the Pipe service.
func startServer(t *testing.T, auditPath string) *testEnv {
	t.Helper()
	env := &testEnv{trusted: newTestCA(t, "trusted client CA"), auditLog: auditPath}
	env.server = env.trusted.issue(t, "server", "", true)
	env.a, _ = newAuth(t, Config{MTLS: MTLSConfig{Mappings: []CertMapping{
		{Match: "spiffe://test/ns/payments/*", Policies: []string{"health-read"}},
	}}})
	var auditor Auditor
	if auditPath != "" {
		l, err := audit.Open(audit.Config{Path: auditPath, MaxBytes: -1}, make([]byte, 32))
		if err != nil {
			t.Fatalf("audit.Open: %v", err)
		}
		t.Cleanup(func() { l.Close() })
		auditor = l
	}
	ic, err := env.a.Interceptor(testTable(t), auditor)
	if err != nil {
		t.Fatal(err)
	}
	counter := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		env.handled.Add(1)
		return h(ctx, req)
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{env.server},
		ClientCAs:    env.trusted.pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS13,
	})
	env.srv = grpc.NewServer(grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(ic.Unary(), counter), grpc.ChainStreamInterceptor(ic.Stream()))
	healthpb.RegisterHealthServer(env.srv, health.NewServer())
	hsmgatev1.RegisterAuthServiceServer(env.srv, env.a.Service)
	env.srv.RegisterService(&pipeDesc, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.addr = lis.Addr().String()
	go env.srv.Serve(lis)
	t.Cleanup(env.srv.Stop)
	ctx := context.Background()
	writePolicy(t, env.a.Policies, "health-read", "rules:\n  - resource: sys/health\n    capabilities: [read]\n")
	writePolicy(t, env.a.Policies, "payments", "rules:\n  - resource: transit/keys/payments-*\n    capabilities: [encrypt]\n  - resource: sys/health\n    capabilities: [read]\n")
	_ = ctx
	return env
}

// dial connects with an optional client certificate.
func (env *testEnv) dial(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: env.trusted.pool(), MinVersion: tls.VersionTLS13}
	if cert != nil {
		// Always send the certificate: Go's client would otherwise withhold
		// one whose issuer is not among the CAs the server names.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	cc, err := grpc.NewClient(env.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func withToken(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func (env *testEnv) token(t *testing.T, policies ...string) string {
	t.Helper()
	secret, _, err := env.a.Tokens.Create(context.Background(), rootID, TokenRequest{Policies: policies, Renewable: true})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func codeOf(err error) codes.Code { return status.Code(err) }

func TestGRPCAuthentication(t *testing.T) {
	env := startServer(t, filepath.Join(t.TempDir(), "audit.log"))
	untrusted := newTestCA(t, "untrusted CA")
	goodCert := env.trusted.issue(t, "payments-api", "spiffe://test/ns/payments/sa/api", false)
	cnCert := env.trusted.issue(t, "someone", "", false)
	rogueCert := untrusted.issue(t, "payments-api", "spiffe://test/ns/payments/sa/api", false)
	root, _ := GenerateToken(nil)
	if err := env.a.Tokens.EnsureRoot(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	check := &healthpb.HealthCheckRequest{}
	cases := []struct {
		name string
		cert *tls.Certificate
		ctx  context.Context
		want codes.Code
	}{
		{"no credentials", nil, context.Background(), codes.Unauthenticated},
		{"malformed bearer", nil, withToken("hgs.nope"), codes.Unauthenticated},
		{"unknown token", nil, withToken(mustToken(t)), codes.Unauthenticated},
		{"jwt without oidc configured", nil, withToken("a.b.c"), codes.Unauthenticated},
		{"token with policy", nil, withToken(env.token(t, "health-read")), codes.OK},
		{"token without policy", nil, withToken(env.token(t, "payments-other")), codes.PermissionDenied},
		{"root token", nil, withToken(root), codes.OK},
		{"cert with URI SAN mapped to policy", &goodCert, context.Background(), codes.OK},
		{"cert with CN and no mapping", &cnCert, context.Background(), codes.PermissionDenied},
		// The TLS handshake fails: the connection never carries an RPC.
		{"cert from untrusted CA", &rogueCert, context.Background(), codes.Unavailable},
		{"cert from untrusted CA with a token", &rogueCert, withToken(root), codes.Unavailable},
		{"bad token beside a good cert", &goodCert, withToken("hgs.nope"), codes.Unauthenticated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := env.handled.Load()
			var hdr metadata.MD
			_, err := healthpb.NewHealthClient(env.dial(t, c.cert)).Check(c.ctx, check, grpc.Header(&hdr))
			if c.want != codes.Unavailable && len(hdr.Get("x-request-id")) != 1 {
				t.Errorf("got x-request-id header %v, want one", hdr.Get("x-request-id"))
			}
			if got := codeOf(err); got != c.want {
				t.Fatalf("got %v (%v), want %v", got, err, c.want)
			}
			ran := env.handled.Load() != before
			if ran != (c.want == codes.OK) {
				t.Errorf("handler ran: got %v, want %v", ran, c.want == codes.OK)
			}
		})
	}
	t.Run("public method needs no credentials", func(t *testing.T) {
		_, err := healthpb.NewHealthClient(env.dial(t, nil)).List(context.Background(), &healthpb.HealthListRequest{})
		if err != nil {
			t.Errorf("got %v, want success", err)
		}
	})
	t.Run("method missing from table refused", func(t *testing.T) {
		cc := env.dial(t, nil)
		err := cc.Invoke(withToken(root), "/test.Pipe/Echo", wrapperspb.String("x"), new(wrapperspb.StringValue))
		if got := codeOf(err); got != codes.PermissionDenied {
			t.Errorf("got %v (%v), want PermissionDenied", got, err)
		}
	})
	t.Run("request id reaches the handler", func(t *testing.T) {
		tab := testTable(t)
		tab["/test.Pipe/Echo"] = Rule{Capability: CapEncrypt, Resource: pipeResource}
		ic, err := env.a.Interceptor(tab, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+root, "x-request-id", "req-42"))
		resp, err := ic.Unary()(ctx, wrapperspb.String("payments-eu"), &grpc.UnaryServerInfo{FullMethod: "/test.Pipe/Echo"},
			func(ctx context.Context, _ any) (any, error) {
				rid, _ := RequestID(ctx)
				return rid, nil
			})
		if err != nil || resp != "req-42" {
			t.Errorf("got %v, %v, want req-42", resp, err)
		}
	})
	t.Run("CheckTableCovers", func(t *testing.T) {
		err := CheckTableCovers(env.srv, testTable(t))
		if err == nil || !strings.Contains(err.Error(), "/test.Pipe/Echo") {
			t.Fatalf("got %v, want an error naming /test.Pipe/Echo", err)
		}
		tab := testTable(t)
		tab["/test.Pipe/Echo"] = Rule{Capability: CapEncrypt, Resource: pipeResource}
		if err := CheckTableCovers(env.srv, tab); err != nil {
			t.Errorf("with Echo: got %v, want nil", err)
		}
	})
	t.Run("audit log verifies and holds no token", func(t *testing.T) {
		b, err := os.ReadFile(env.auditLog)
		if err != nil {
			t.Fatal(err)
		}
		n, err := audit.Verify(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if n < 10 {
			t.Errorf("got %d lines, want at least 10", n)
		}
		if strings.Contains(string(b), root) || strings.Contains(string(b), "hgs.") || strings.Contains(string(b), Accessor(root)) {
			t.Errorf("audit log holds a token or a raw accessor")
		}
		if !strings.Contains(string(b), `"code":"Unauthenticated"`) || !strings.Contains(string(b), `"name":"spiffe://test/ns/payments/sa/api"`) {
			t.Errorf("audit log lacks the refusal or the certificate identity")
		}
	})
}

func mustToken(t *testing.T) string {
	s, err := GenerateToken(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAuditUnwritable: once the audit log cannot be written (here: its
// file was deleted, which the log treats as a full disk) every request fails
// with Unavailable and the handler never runs.
func TestAuditUnwritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	env := startServer(t, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	tok := env.token(t, "health-read", "payments")
	before := env.handled.Load()
	_, err := healthpb.NewHealthClient(env.dial(t, nil)).Check(withToken(tok), &healthpb.HealthCheckRequest{})
	if got := codeOf(err); got != codes.Unavailable {
		t.Fatalf("got %v (%v), want Unavailable", got, err)
	}
	if env.handled.Load() != before {
		t.Errorf("handler ran, want it never to run")
	}
	t.Run("stream message", func(t *testing.T) {
		st, err := env.dial(t, nil).NewStream(withToken(tok), &pipeDesc.Streams[0], "/test.Pipe/Run")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SendMsg(wrapperspb.String("payments-eu")); err != nil {
			t.Fatal(err)
		}
		err = st.RecvMsg(new(wrapperspb.StringValue))
		if got := codeOf(err); got != codes.Unavailable {
			t.Errorf("got %v (%v), want Unavailable", got, err)
		}
	})
}

// TestStreamPerMessage: the Resource func runs on every received message.
func TestStreamPerMessage(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "audit.log")
	env := startServer(t, logPath)
	tok := env.token(t, "payments")
	st, err := env.dial(t, nil).NewStream(withToken(tok), &pipeDesc.Streams[0], "/test.Pipe/Run")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"payments-eu", "payments-us"} {
		if err := st.SendMsg(wrapperspb.String(k)); err != nil {
			t.Fatal(err)
		}
		got := new(wrapperspb.StringValue)
		if err := st.RecvMsg(got); err != nil || got.GetValue() != k {
			t.Fatalf("%s: got %q, %v, want echo", k, got.GetValue(), err)
		}
	}
	if err := st.SendMsg(wrapperspb.String("orders")); err != nil {
		t.Fatal(err)
	}
	err = st.RecvMsg(new(wrapperspb.StringValue))
	if got := codeOf(err); got != codes.PermissionDenied {
		t.Fatalf("third message on transit/keys/orders: got %v (%v), want PermissionDenied", got, err)
	}
	env.srv.GracefulStop()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var reqs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"method":"/test.Pipe/Run"`) && strings.Contains(sc.Text(), `"type":"request"`) {
			reqs = append(reqs, sc.Text())
		}
	}
	if len(reqs) != 2 || !strings.Contains(reqs[0], "transit/keys/payments-eu") || !strings.Contains(reqs[1], "transit/keys/payments-us") {
		t.Errorf("got request lines %q, want one per allowed message", reqs)
	}
}

// TestAuthServiceOverGRPC drives AuthService through the interceptor.
func TestAuthServiceOverGRPC(t *testing.T) {
	env := startServer(t, filepath.Join(t.TempDir(), "audit.log"))
	root := mustToken(t)
	if err := env.a.Tokens.EnsureRoot(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	cl := hsmgatev1.NewAuthServiceClient(env.dial(t, nil))
	rctx := withToken(root)
	pol, err := ParsePolicyDocument("ops", []byte("rules:\n  - resource: sys/health\n    capabilities: [read]\n  - resource: \"auth/tokens*\"\n    capabilities: [create, read]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.WritePolicy(rctx, &hsmgatev1.WritePolicyRequest{Policy: pol}); err != nil {
		t.Fatalf("WritePolicy: %v", err)
	}
	list, err := cl.ListPolicies(rctx, &hsmgatev1.ListPoliciesRequest{})
	if err != nil || !contains(list.GetNames(), "ops") {
		t.Fatalf("ListPolicies: got %v, %v, want ops listed", list.GetNames(), err)
	}
	created, err := cl.CreateToken(rctx, &hsmgatev1.CreateTokenRequest{DisplayName: "ops-bot", Policies: []string{"ops"}, Renewable: true, Ttl: durationpb.New(3600e9)})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	tctx := withToken(created.GetToken())
	all, err := cl.ListTokens(rctx, &hsmgatev1.ListTokensRequest{})
	if err != nil || len(all.GetTokens()) != 2 {
		t.Fatalf("ListTokens: got %d tokens, %v, want 2 (root and ops-bot)", len(all.GetTokens()), err)
	}
	for _, ti := range all.GetTokens() {
		if strings.Contains(ti.String(), created.GetToken()) || strings.Contains(ti.String(), root) {
			t.Errorf("ListTokens shows a secret")
		}
	}
	if _, err := cl.ListTokens(tctx, &hsmgatev1.ListTokensRequest{}); codeOf(err) != codes.PermissionDenied {
		t.Errorf("ListTokens without list on auth/tokens: got %v, want PermissionDenied", err)
	}
	self, err := cl.LookupSelf(tctx, &hsmgatev1.LookupSelfRequest{})
	if err != nil || self.GetName() != "ops-bot" || self.GetToken().GetAccessor() != created.GetInfo().GetAccessor() {
		t.Fatalf("LookupSelf: got %v, %v", self, err)
	}
	if _, err := cl.RenewSelf(tctx, &hsmgatev1.RenewSelfRequest{}); err != nil {
		t.Errorf("RenewSelf: %v", err)
	}
	t.Run("a token cannot grant what it lacks", func(t *testing.T) {
		_, err := cl.CreateToken(tctx, &hsmgatev1.CreateTokenRequest{Policies: []string{"payments"}})
		if got := codeOf(err); got != codes.PermissionDenied {
			t.Errorf("got %v, want PermissionDenied", got)
		}
	})
	t.Run("policy write needs admin", func(t *testing.T) {
		_, err := cl.WritePolicy(tctx, &hsmgatev1.WritePolicyRequest{Policy: pol})
		if got := codeOf(err); got != codes.PermissionDenied {
			t.Errorf("got %v, want PermissionDenied", got)
		}
	})
	t.Run("invalid policy", func(t *testing.T) {
		_, err := cl.WritePolicy(rctx, &hsmgatev1.WritePolicyRequest{Policy: &hsmgatev1.Policy{Name: "x", Rules: []*hsmgatev1.PolicyRule{{Resource: "a", Capabilities: []string{"fly"}}}}})
		if got := codeOf(err); got != codes.InvalidArgument {
			t.Errorf("got %v, want InvalidArgument", got)
		}
	})
	if _, err := cl.RevokeSelf(tctx, &hsmgatev1.RevokeSelfRequest{}); err != nil {
		t.Fatalf("RevokeSelf: %v", err)
	}
	if _, err := cl.LookupSelf(tctx, &hsmgatev1.LookupSelfRequest{}); codeOf(err) != codes.Unauthenticated {
		t.Errorf("after RevokeSelf: got %v, want Unauthenticated", err)
	}
	if _, err := cl.LookupToken(rctx, &hsmgatev1.LookupTokenRequest{Accessor: created.GetInfo().GetAccessor()}); codeOf(err) != codes.NotFound {
		t.Errorf("LookupToken after revoke: got %v, want NotFound", err)
	}
	if _, err := cl.DeletePolicy(rctx, &hsmgatev1.DeletePolicyRequest{Name: "ops"}); err != nil {
		t.Errorf("DeletePolicy: %v", err)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// TestReadOnlyOneLine: a ReadOnly RPC leaves one "call" line after its
// handler, with the status and latency, and no request line; a refusal
// leaves its response line as before. Once the line cannot be written the
// call fails Unavailable and its result does not leave, although the
// handler ran.
func TestReadOnlyOneLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	env := startServer(t, path)
	cc := env.dial(t, nil)
	tok := env.token(t, "payments")
	echo := func(key string) (*wrapperspb.StringValue, error) {
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(withToken(tok), "/test.Pipe/Peek", wrapperspb.String(key), out)
		return out, err
	}
	if got, err := echo("payments-eu"); err != nil || got.GetValue() != "payments-eu" {
		t.Fatalf("Peek: got %v, %v", got, err)
	}
	if _, err := echo("orders"); codeOf(err) != codes.PermissionDenied {
		t.Fatalf("Peek on orders: got %v, want PermissionDenied", err)
	}
	var lines []map[string]any
	for _, l := range auditLines(t, path) {
		if l["method"] == "/test.Pipe/Peek" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("got %d lines for two calls, want 2: %v", len(lines), lines)
	}
	ok, refused := lines[0], lines[1]
	if ok["type"] != audit.TypeCall || ok["code"] != "OK" || ok["latency_ms"] == nil || ok["resource"] != "transit/keys/payments-eu" || ok["identity"] == nil {
		t.Errorf("the allowed call's line: %v, want type call, code OK, a latency, the resource and the identity", ok)
	}
	if refused["type"] != audit.TypeResponse || refused["code"] != "PermissionDenied" {
		t.Errorf("the refusal's line: %v, want a response line with PermissionDenied", refused)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	before := env.handled.Load()
	got, err := echo("payments-eu")
	if codeOf(err) != codes.Unavailable || got.GetValue() != "" {
		t.Fatalf("with the audit log gone: got %q, %v, want Unavailable and no result", got.GetValue(), err)
	}
	if env.handled.Load() != before+1 {
		t.Errorf("handler runs: got %d, want 1 (a read-only call runs, then its result is dropped)", env.handled.Load()-before)
	}
}
