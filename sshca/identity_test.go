package sshca

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/auth"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// identityEnv is an engine with the default caller behind the real auth
// interceptor (tokens, policies, audit log) over the test store.
type identityEnv struct {
	*testEnv
	a        *auth.Auth
	unary    grpc.UnaryServerInterceptor
	svc      *Service
	auditLog string
}

func newIdentityEnv(t *testing.T) *identityEnv {
	t.Helper()
	env := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a, err := auth.New(ctx, auth.Config{}, env.store)
	if err != nil {
		t.Fatal(err)
	}
	x := &identityEnv{testEnv: env, a: a, auditLog: filepath.Join(t.TempDir(), "audit.log")}
	l, err := audit.Open(audit.Config{Path: x.auditLog, MaxBytes: -1}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ic, err := a.Interceptor(AuthTable(), l)
	if err != nil {
		t.Fatal(err)
	}
	x.unary = ic.Unary()
	e, err := New(ctx, Config{Store: env.store, Keys: env.e.keys, Now: env.clock.Now}) // DefaultCaller
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	x.svc = NewService(e)
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users",
		AllowedPrincipals: []string{"{{identity.name}}", "{{identity.metadata.user}}"},
		DefaultPrincipals: []string{"{{identity.name}}"}})
	pol, err := auth.ParsePolicyDocument("ssh", []byte("rules:\n  - resource: ssh/roles/eng\n    capabilities: [ssh-sign]\n  - resource: auth/tokens\n    capabilities: [create]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Policies.Put(ctx, pol); err != nil {
		t.Fatal(err)
	}
	return x
}

// sign calls SignUserKey through the interceptor with a token and an
// optional x-request-id.
func (x *identityEnv) sign(t *testing.T, secret, reqID string, principals ...string) *pb.SSHSignResult {
	t.Helper()
	md := metadata.Pairs("authorization", "Bearer "+secret)
	if reqID != "" {
		md.Set("x-request-id", reqID)
	}
	_, key := ed25519Key(t)
	req := &pb.SignUserKeyRequest{Role: "eng", Items: []*pb.SSHSignItem{{PublicKey: key, Principals: principals}}}
	resp, err := x.unary(metadata.NewIncomingContext(context.Background(), md), req,
		&grpc.UnaryServerInfo{FullMethod: "/hsmgate.v1.SSHCAService/SignUserKey"},
		func(ctx context.Context, req any) (any, error) {
			return x.svc.SignUserKey(ctx, req.(*pb.SignUserKeyRequest))
		})
	if err != nil {
		t.Fatalf("SignUserKey: %v", err)
	}
	return resp.(*pb.SignUserKeyResponse).GetResults()[0]
}

func (x *identityEnv) token(t *testing.T, creator *auth.Identity, req auth.TokenRequest) (string, *auth.Identity) {
	t.Helper()
	req.Policies = []string{"ssh"}
	secret, _, err := x.a.Tokens.Create(context.Background(), creator, req)
	if err != nil {
		t.Fatal(err)
	}
	id, err := x.a.Tokens.Authenticate(context.Background(), secret)
	if err != nil {
		t.Fatal(err)
	}
	return secret, id
}

func parseCert(t *testing.T, r *pb.SSHSignResult) *ssh.Certificate {
	t.Helper()
	if r.GetError() != nil {
		t.Fatalf("item refused: %v", r.GetError())
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(r.GetCertificate()))
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*ssh.Certificate)
}

// A token that may create tokens mints a child with display_name=root and
// metadata user=root: principal templates use the vouched entity only, so
// the child gets no certificate for root, and one for its lineage's
// entity; an unbound token's display name fills no template.
func TestPrincipalsComeFromTheVouchedIdentity(t *testing.T) {
	x := newIdentityEnv(t)
	root := &auth.Identity{Name: "admin", Kind: auth.KindRoot}
	_, alice := x.token(t, root, auth.TokenRequest{Entity: "alice", EntityMetadata: map[string]string{"user": "alice"}})
	hostile := auth.TokenRequest{DisplayName: "root", Metadata: map[string]string{"user": "root"}}
	child, _ := x.token(t, alice, hostile)
	unbound, _ := x.token(t, root, hostile)
	for name, secret := range map[string]string{"child of alice": child, "unbound token": unbound} {
		t.Run(name+" asks for root", func(t *testing.T) {
			r := x.sign(t, secret, "", "root")
			if r.GetCertificate() != "" || codes.Code(r.GetError().GetCode()) != codes.InvalidArgument {
				t.Errorf("got certificate %q, error %v; want a refusal", r.GetCertificate(), r.GetError())
			}
		})
	}
	t.Run("child of alice gets alice by default", func(t *testing.T) {
		c := parseCert(t, x.sign(t, child, ""))
		if got, want := c.ValidPrincipals, []string{"alice"}; !reflect.DeepEqual(got, want) {
			t.Errorf("got principals %v, want %v", got, want)
		}
		if !strings.HasPrefix(c.KeyId, "alice:eng:") {
			t.Errorf("got key ID %q, want alice:eng:<request id>", c.KeyId)
		}
	})
	t.Run("unbound token has no default principal", func(t *testing.T) {
		if r := x.sign(t, unbound, ""); r.GetCertificate() != "" {
			t.Errorf("got a certificate for %q", r.GetCertificate())
		}
	})
}

// A hostile x-request-id (quotes, spaces, 150 characters) never reaches a
// key ID: the key ID carries the request id the interceptor chose, the same
// as the audit log's.
func TestKeyIDCarriesTheInterceptorsRequestID(t *testing.T) {
	x := newIdentityEnv(t)
	secret, _ := x.token(t, &auth.Identity{Name: "admin", Kind: auth.KindRoot}, auth.TokenRequest{Entity: "alice"})
	for _, tc := range []struct{ name, sent, want string }{
		{"hostile", `x" , evil id ` + strings.Repeat("y", 150), ""},
		{"too long", strings.Repeat("a", 150), ""},
		{"valid", "trace-01HZX.42_a", "trace-01HZX.42_a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parseCert(t, x.sign(t, secret, tc.sent))
			got, ok := strings.CutPrefix(c.KeyId, "alice:eng:")
			if !ok {
				t.Fatalf("got key ID %q, want alice:eng:<request id>", c.KeyId)
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("got request id %q, want %q", got, tc.want)
			}
			if got == "" || len(got) > auth.MaxRequestIDLen || strings.ContainsAny(got, "\" ,") {
				t.Errorf("got request id %q in the key ID: not a validated one", got)
			}
			if a := lastAuditRequestID(t, x.auditLog); a != got {
				t.Errorf("key ID request id %q, audit request id %q: want the same", got, a)
			}
		})
	}
}

// lastAuditRequestID returns the request_id of the last line of the audit log.
func lastAuditRequestID(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.RequestID != "" {
			last = e.RequestID
		}
	}
	return last
}
