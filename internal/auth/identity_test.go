package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// login authenticates a token secret.
func login(t *testing.T, a *Auth, secret string) *Identity {
	t.Helper()
	id, err := a.Tokens.Authenticate(context.Background(), secret)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return id
}

// mint creates a token on behalf of creator and logs it in.
func mint(t *testing.T, a *Auth, creator *Identity, req TokenRequest) *Identity {
	t.Helper()
	secret, _, err := a.Tokens.Create(context.Background(), creator, req)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return login(t, a, secret)
}

// A token allowed to create tokens mints children named "root" or with
// metadata user=root: their vouched identity stays the parent's, whatever
// display name and metadata they carry; only root (or admin on
// auth/entities/<name>) binds an entity.
func TestChildTokensCannotChooseTheirIdentity(t *testing.T) {
	a, _ := newAuth(t, Config{})
	writePolicy(t, a.Policies, "minter", "rules:\n  - resource: auth/tokens\n    capabilities: [create]\n")
	writePolicy(t, a.Policies, "entity-admin", "rules:\n  - resource: auth/entities/svc-*\n    capabilities: [admin]\n")
	alice := mint(t, a, rootID, TokenRequest{Policies: []string{"minter"}, Entity: "alice", EntityMetadata: map[string]string{"user": "alice"}})
	anon := mint(t, a, rootID, TokenRequest{Policies: []string{"minter"}})
	hostile := TokenRequest{DisplayName: "root", Metadata: map[string]string{"user": "root"}}

	t.Run("child of a bound token", func(t *testing.T) {
		child := mint(t, a, alice, hostile)
		if child.Entity != "alice" || child.EntityMetadata["user"] != "alice" {
			t.Errorf("got entity %q metadata %v, want alice, user=alice", child.Entity, child.EntityMetadata)
		}
		grandchild := mint(t, a, child, hostile)
		if grandchild.Entity != "alice" || grandchild.EntityMetadata["user"] != "alice" {
			t.Errorf("grandchild: got entity %q metadata %v, want alice, user=alice", grandchild.Entity, grandchild.EntityMetadata)
		}
		if child.Name != "root" {
			t.Errorf("display name: got %q, want it kept (informational) as root", child.Name)
		}
	})
	t.Run("child of an unbound token", func(t *testing.T) {
		child := mint(t, a, anon, hostile)
		if child.Entity != "" || len(child.EntityMetadata) != 0 {
			t.Errorf("got entity %q metadata %v, want none", child.Entity, child.EntityMetadata)
		}
	})
	for _, req := range []TokenRequest{
		{Entity: "root"},
		{Entity: "alice"},
		{EntityMetadata: map[string]string{"user": "root"}},
		{Entity: "alice", EntityMetadata: map[string]string{"user": "root"}},
	} {
		for _, creator := range []*Identity{alice, anon} {
			if _, _, err := a.Tokens.Create(context.Background(), creator, req); !errors.Is(err, ErrPermissionDenied) {
				t.Errorf("%+v by %q: got %v, want ErrPermissionDenied", req, creator.Entity, err)
			}
		}
	}
	t.Run("through the service", func(t *testing.T) {
		svc := a.Service
		ctx := WithIdentity(context.Background(), alice)
		_, err := svc.CreateToken(ctx, &hsmgatev1.CreateTokenRequest{Entity: "root"})
		if !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("entity root without admin: got %v, want ErrPermissionDenied", err)
		}
		admin := mint(t, a, rootID, TokenRequest{Policies: []string{"entity-admin"}})
		ctx = WithIdentity(context.Background(), admin)
		resp, err := svc.CreateToken(ctx, &hsmgatev1.CreateTokenRequest{Entity: "svc-billing"})
		if err != nil {
			t.Fatalf("entity svc-billing with admin on auth/entities/svc-*: %v", err)
		}
		if got := resp.GetInfo().GetEntity(); got != "svc-billing" {
			t.Errorf("got entity %q, want svc-billing", got)
		}
		if _, err := svc.CreateToken(ctx, &hsmgatev1.CreateTokenRequest{Entity: "root"}); !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("entity root with admin on svc-* only: got %v, want ErrPermissionDenied", err)
		}
	})
	t.Run("bad entities", func(t *testing.T) {
		for _, req := range []TokenRequest{
			{Entity: "a b"}, {Entity: "a*"}, {Entity: "x\n"}, {Entity: string(make([]byte, 300))},
			{Entity: "ok", EntityMetadata: map[string]string{"": "v"}},
		} {
			if _, _, err := a.Tokens.Create(context.Background(), rootID, req); !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: got %v, want ErrInvalid", req.Entity, err)
			}
		}
	})
}

// Rate-limit buckets are keyed by vouched identity: a token and every token
// it mints share one bucket (four children do not get four times the
// limit), tokens bound to one entity share it, and two unrelated tokens
// that happen to have the same display name do not.
func TestRateLimitBucketsFollowVouchedIdentity(t *testing.T) {
	const burst = 4
	a, _ := newAuth(t, Config{RateLimits: RateLimitConfig{Identity: Limit{Rate: 1, Burst: burst}}})
	ic, err := a.Interceptor(Table{"/test.Pipe/Echo": {Capability: CapEncrypt, Resource: pipeResource}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	a.Limiter.now = func() time.Time { return now } // frozen: only the burst passes
	writePolicy(t, a.Policies, "payments", "rules:\n  - resource: transit/keys/payments-*\n    capabilities: [encrypt]\n")
	create := func(creator *Identity, req TokenRequest) string {
		t.Helper()
		req.Policies = []string{"payments"}
		secret, _, err := a.Tokens.Create(context.Background(), creator, req)
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	// allowed sends rounds of one request per token, round-robin, and
	// returns how many were let through.
	allowed := func(secrets ...string) int {
		t.Helper()
		n := 0
		for range 2 * burst {
			for _, s := range secrets {
				ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+s))
				_, err := ic.Unary()(ctx, wrapperspb.String("payments-eu"), &grpc.UnaryServerInfo{FullMethod: "/test.Pipe/Echo"},
					func(context.Context, any) (any, error) { return nil, nil })
				switch status.Code(err) {
				case codes.OK:
					n++
				case codes.ResourceExhausted:
				default:
					t.Fatalf("got %v, want OK or ResourceExhausted", err)
				}
			}
		}
		return n
	}
	t.Run("a parent and four children share one bucket", func(t *testing.T) {
		parent := create(rootID, TokenRequest{DisplayName: "ci"})
		pid := login(t, a, parent)
		secrets := []string{parent}
		for i := range 4 {
			secrets = append(secrets, create(pid, TokenRequest{DisplayName: "child-" + string(rune('a'+i))}))
		}
		if got := allowed(secrets...); got != burst {
			t.Errorf("got %d requests allowed for the lineage, want %d", got, burst)
		}
	})
	t.Run("unrelated tokens with one display name have their own buckets", func(t *testing.T) {
		one := create(rootID, TokenRequest{DisplayName: "svc"})
		two := create(rootID, TokenRequest{DisplayName: "svc"})
		if got := allowed(one); got != burst {
			t.Errorf("first: got %d allowed, want %d", got, burst)
		}
		if got := allowed(two); got != burst {
			t.Errorf("second: got %d allowed, want %d (its own bucket)", got, burst)
		}
	})
	t.Run("tokens of one entity share its bucket", func(t *testing.T) {
		one := create(rootID, TokenRequest{Entity: "bob"})
		two := create(rootID, TokenRequest{Entity: "bob", DisplayName: "laptop"})
		if got := allowed(one, two); got != burst {
			t.Errorf("got %d allowed, want %d", got, burst)
		}
	})
}
