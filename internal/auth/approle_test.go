package auth

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// methodsEnv is a real gRPC server (startServer) with the login methods over
// its store and token service, and a clock the methods share.
type methodsEnv struct {
	*testEnv
	m     *Methods
	store keystore.Store
	clock atomic.Pointer[time.Time]
}

func newMethodsEnv(t *testing.T, certCfg CertAuthConfig) *methodsEnv {
	t.Helper()
	return newMethodsEnvWith(t, MethodsConfig{Cert: certCfg})
}

func newMethodsEnvWith(t *testing.T, cfg MethodsConfig) *methodsEnv {
	t.Helper()
	env := &methodsEnv{testEnv: startServer(t, "")}
	env.store = env.a.Tokens.store
	now := time.Now()
	env.clock.Store(&now)
	clock := func() time.Time { return *env.clock.Load() }
	if cfg.Cert.Now == nil {
		cfg.Cert.Now = clock
	}
	cfg.AppRole.Now, cfg.Kubernetes.Now = clock, clock
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, err := NewMethods(ctx, cfg, env.store, env.a.Tokens)
	if err != nil {
		t.Fatal(err)
	}
	env.m = m
	return env
}

func (env *methodsEnv) advance(d time.Duration) {
	n := env.clock.Load().Add(d)
	env.clock.Store(&n)
}

// checkLoginToken checks that a login's token is an ordinary token with the
// vouched identity and the role's policies, and that it authenticates a
// gRPC call allowed by those policies.
func (env *methodsEnv) checkLoginToken(t *testing.T, l *Login, wantName, wantMethod string, wantPolicies []string) {
	t.Helper()
	id, err := env.a.Tokens.Authenticate(context.Background(), l.Token)
	if err != nil {
		t.Fatalf("Authenticate(login token): %v", err)
	}
	if id.Name != wantName || id.Kind != KindToken || l.Entity != wantName {
		t.Errorf("identity: got %q (%s), want %q (token)", id.Name, id.Kind, wantName)
	}
	if strings.Join(id.Policies, ",") != strings.Join(wantPolicies, ",") || strings.Join(l.Policies, ",") != strings.Join(wantPolicies, ",") {
		t.Errorf("policies: got %v (login %v), want %v", id.Policies, l.Policies, wantPolicies)
	}
	if id.Metadata[MetaAuthMethod] != wantMethod || l.Metadata[MetaAuthMethod] != wantMethod {
		t.Errorf("metadata %s: got %q, want %q", MetaAuthMethod, id.Metadata[MetaAuthMethod], wantMethod)
	}
	if id.Accessor != l.Accessor || !l.Renewable {
		t.Errorf("accessor %q renewable %v: want %q and renewable", l.Accessor, l.Renewable, id.Accessor)
	}
	_, err = healthpb.NewHealthClient(env.dial(t, nil)).Check(withToken(l.Token), &healthpb.HealthCheckRequest{})
	want := codes.PermissionDenied
	for _, p := range wantPolicies {
		if p == "health-read" || p == "payments" { // both grant read on sys/health
			want = codes.OK
		}
	}
	if got := codeOf(err); got != want {
		t.Errorf("gRPC call with the login token: got %v (%v), want %v", got, err, want)
	}
}

func (env *methodsEnv) writeAppRole(t *testing.T, r *hsmgatev1.AppRole) *hsmgatev1.AppRole {
	t.Helper()
	out, err := env.m.AppRoles.Write(context.Background(), r)
	if err != nil {
		t.Fatalf("Write(%s): %v", r.GetName(), err)
	}
	return out
}

func (env *methodsEnv) secretID(t *testing.T, role string, cidrs ...string) (string, *hsmgatev1.SecretIDInfo) {
	t.Helper()
	s, info, err := env.m.AppRoles.CreateSecretID(context.Background(), role, map[string]string{"host": "build-1"}, cidrs)
	if err != nil {
		t.Fatalf("CreateSecretID(%s): %v", role, err)
	}
	return s, info
}

// snapshot returns every store entry's key and revision.
func snapshot(t *testing.T, s keystore.Store) map[string]int64 {
	t.Helper()
	es, err := s.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range es {
		out[e.Key] = e.Revision
	}
	return out
}

func sameSnapshot(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

var loopback = netip.MustParseAddr("127.0.0.1")

// incoming is a server-side context carrying a bearer token.
func incoming(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
}

func TestAppRoleLogin(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	role := env.writeAppRole(t, &hsmgatev1.AppRole{
		Name: "cert-manager", Policies: []string{"health-read"},
		TokenTtl: durationpb.New(time.Hour), TokenMaxTtl: durationpb.New(2 * time.Hour),
	})
	if len(role.GetRoleId()) != 36 {
		t.Fatalf("role_id: got %q, want a UUID", role.GetRoleId())
	}
	secret, info := env.secretID(t, "cert-manager")
	l, err := env.m.AppRoles.Login(ctx, role.GetRoleId(), secret, loopback)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	env.checkLoginToken(t, l, "cert-manager", "approle", []string{"health-read"})
	if l.TTL != time.Hour {
		t.Errorf("TTL: got %v, want 1h", l.TTL)
	}
	if l.Metadata["secret_id_accessor"] != info.GetAccessor() || l.Metadata["host"] != "build-1" || l.Metadata["role_name"] != "cert-manager" {
		t.Errorf("metadata: got %v", l.Metadata)
	}
	t.Run("secret id metadata cannot override vouched facts", func(t *testing.T) {
		s, info, err := env.m.AppRoles.CreateSecretID(ctx, "cert-manager", map[string]string{"role_name": "root"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer env.m.AppRoles.DestroySecretID(ctx, "cert-manager", info.GetAccessor())
		l, err := env.m.AppRoles.Login(ctx, role.GetRoleId(), s, loopback)
		if err != nil || l.Metadata["role_name"] != "cert-manager" {
			t.Errorf("got %v, %v, want role_name cert-manager", l, err)
		}
	})
	t.Run("unlimited secret id logs in again", func(t *testing.T) {
		if _, err := env.m.AppRoles.Login(ctx, role.GetRoleId(), secret, loopback); err != nil {
			t.Errorf("second login: %v", err)
		}
	})
	t.Run("rewrite keeps the role_id", func(t *testing.T) {
		r := env.writeAppRole(t, &hsmgatev1.AppRole{Name: "cert-manager", RoleId: "chosen-by-caller", Policies: []string{"health-read", "payments"}})
		if r.GetRoleId() != role.GetRoleId() {
			t.Fatalf("role_id: got %q, want %q", r.GetRoleId(), role.GetRoleId())
		}
		l, err := env.m.AppRoles.Login(ctx, role.GetRoleId(), secret, loopback)
		if err != nil {
			t.Fatal(err)
		}
		env.checkLoginToken(t, l, "cert-manager", "approle", []string{"health-read", "payments"})
	})
	t.Run("the secret is stored only as a hash", func(t *testing.T) {
		es, err := env.store.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if strings.Contains(string(e.Value), secret) || strings.Contains(e.Key, secret) {
				t.Errorf("store entry %s holds the secret id", e.Key)
			}
		}
		ids, err := env.m.AppRoles.ListSecretIDs(ctx, "cert-manager")
		if err != nil || len(ids) != 1 || ids[0].GetAccessor() != info.GetAccessor() {
			t.Fatalf("ListSecretIDs: got %v, %v, want the one accessor", ids, err)
		}
		b, _ := proto.Marshal(ids[0])
		if strings.Contains(string(b), secret) || strings.Contains(string(b), SecretIDHash(secret)) {
			t.Errorf("ListSecretIDs shows the secret or its hash")
		}
	})
}

func TestAppRoleLoginRefusals(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	a := env.writeAppRole(t, &hsmgatev1.AppRole{Name: "a", Policies: []string{"health-read"}, SecretIdNumUses: 2, SecretIdTtl: durationpb.New(time.Hour)})
	b := env.writeAppRole(t, &hsmgatev1.AppRole{Name: "b", Policies: []string{"payments"}})
	bound := env.writeAppRole(t, &hsmgatev1.AppRole{Name: "bound", Policies: []string{"health-read"}, BoundCidrs: []string{"10.0.0.0/8"}})
	secretA, _ := env.secretID(t, "a")
	secretB, _ := env.secretID(t, "b")
	secretBound, _ := env.secretID(t, "bound")
	secretCIDR, _ := env.secretID(t, "a", "192.0.2.0/24")
	destroyed, dinfo := env.secretID(t, "a")
	if err := env.m.AppRoles.DestroySecretID(ctx, "a", dinfo.GetAccessor()); err != nil {
		t.Fatalf("DestroySecretID: %v", err)
	}
	if err := env.m.AppRoles.DestroySecretID(ctx, "a", dinfo.GetAccessor()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DestroySecretID twice: got %v, want ErrNotFound", err)
	}
	forged := secretA[:len(secretA)-1] + "A"
	if forged == secretA {
		forged = secretA[:len(secretA)-1] + "B"
	}
	cases := []struct {
		name             string
		roleID, secretID string
		remote           netip.Addr
		want             codes.Code
	}{
		{"wrong secret id", a.GetRoleId(), forged, loopback, codes.Unauthenticated},
		{"empty secret id", a.GetRoleId(), "", loopback, codes.Unauthenticated},
		{"unknown role id", "00000000-0000-4000-8000-000000000000", secretA, loopback, codes.Unauthenticated},
		{"role id with a path", "../roles/a", secretA, loopback, codes.Unauthenticated},
		{"secret id of another role", a.GetRoleId(), secretB, loopback, codes.Unauthenticated},
		{"role id of another role", b.GetRoleId(), secretA, loopback, codes.Unauthenticated},
		{"destroyed secret id", a.GetRoleId(), destroyed, loopback, codes.Unauthenticated},
		{"role CIDR mismatch", bound.GetRoleId(), secretBound, loopback, codes.PermissionDenied},
		{"role CIDR without an address", bound.GetRoleId(), secretBound, netip.Addr{}, codes.PermissionDenied},
		{"secret id CIDR mismatch", a.GetRoleId(), secretCIDR, netip.MustParseAddr("198.51.100.7"), codes.PermissionDenied},
		{"secret id CIDR mismatch (IPv4-mapped)", a.GetRoleId(), secretCIDR, netip.MustParseAddr("::ffff:198.51.100.7"), codes.PermissionDenied},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, env.store)
			l, err := env.m.AppRoles.Login(ctx, c.roleID, c.secretID, c.remote)
			if got := errs.Code(err); got != c.want || l != nil {
				t.Fatalf("got %v (%v), want %v", got, err, c.want)
			}
			if !sameSnapshot(before, snapshot(t, env.store)) {
				t.Errorf("a refused login changed the store")
			}
		})
	}
	t.Run("CIDRs that match log in", func(t *testing.T) {
		if _, err := env.m.AppRoles.Login(ctx, bound.GetRoleId(), secretBound, netip.MustParseAddr("10.1.2.3")); err != nil {
			t.Errorf("role CIDR match: %v", err)
		}
		if _, err := env.m.AppRoles.Login(ctx, a.GetRoleId(), secretCIDR, netip.MustParseAddr("::ffff:192.0.2.9")); err != nil {
			t.Errorf("secret id CIDR match (IPv4-mapped): %v", err)
		}
	})
	t.Run("uses are spent and the last one deletes", func(t *testing.T) {
		s, _ := env.secretID(t, "a")
		for i := range 2 {
			if _, err := env.m.AppRoles.Login(ctx, a.GetRoleId(), s, loopback); err != nil {
				t.Fatalf("login %d of 2: %v", i+1, err)
			}
		}
		if _, err := env.m.AppRoles.Login(ctx, a.GetRoleId(), s, loopback); errs.Code(err) != codes.Unauthenticated {
			t.Fatalf("third login: got %v, want Unauthenticated", err)
		}
		if _, err := env.store.Get(ctx, SecretIDPrefix+"a/"+SecretIDHash(s)); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("used-up secret id record: got %v, want deleted", err)
		}
	})
	t.Run("expired secret id", func(t *testing.T) {
		s, _ := env.secretID(t, "a")
		env.advance(time.Hour + time.Second)
		defer env.advance(-time.Hour - time.Second)
		tokensBefore, _ := env.store.List(ctx, TokenStorePrefix)
		if _, err := env.m.AppRoles.Login(ctx, a.GetRoleId(), s, loopback); errs.Code(err) != codes.Unauthenticated {
			t.Fatalf("got %v, want Unauthenticated", err)
		}
		if tokensAfter, _ := env.store.List(ctx, TokenStorePrefix); len(tokensAfter) != len(tokensBefore) {
			t.Errorf("an expired login made a token")
		}
		if ids, _ := env.m.AppRoles.ListSecretIDs(ctx, "a"); len(ids) != 0 {
			t.Errorf("ListSecretIDs after expiry: got %d, want 0", len(ids))
		}
	})
	t.Run("a role made again does not take its predecessor's secret ids", func(t *testing.T) {
		old, _ := env.secretID(t, "b")
		if err := env.m.AppRoles.Delete(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if _, err := env.m.AppRoles.Login(ctx, b.GetRoleId(), old, loopback); errs.Code(err) != codes.Unauthenticated {
			t.Fatalf("login to a deleted role: got %v, want Unauthenticated", err)
		}
		// A secret id written for the old role (e.g. by a CreateSecretID that
		// raced the delete) is still refused by the new role.
		stale := &hsmgatev1.SecretIDRecord{Info: &hsmgatev1.SecretIDInfo{Accessor: strings.Repeat("ab", 16)}, Hash: SecretIDHash(old), RoleId: b.GetRoleId()}
		raw, _ := proto.Marshal(stale)
		if _, err := env.store.Put(ctx, SecretIDPrefix+"b/"+stale.GetHash(), raw, keystore.AnyRevision); err != nil {
			t.Fatal(err)
		}
		nb := env.writeAppRole(t, &hsmgatev1.AppRole{Name: "b", Policies: []string{"payments"}})
		if nb.GetRoleId() == b.GetRoleId() {
			t.Fatalf("a re-made role got the same role_id")
		}
		if _, err := env.m.AppRoles.Login(ctx, nb.GetRoleId(), old, loopback); errs.Code(err) != codes.Unauthenticated {
			t.Errorf("old secret id on the new role: got %v, want Unauthenticated", err)
		}
		if n, err := env.m.AppRoles.Tidy(ctx); err != nil || n != 1 {
			t.Errorf("Tidy: got %d, %v, want the stale record deleted", n, err)
		}
	})
}

// TestAppRoleConcurrentLogins: of many concurrent logins with one secret ID
// of N uses, exactly N succeed (uses are spent with compare-and-swap).
func TestAppRoleConcurrentLogins(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	for _, uses := range []uint32{1, 3} {
		t.Run(strings.Repeat("x", int(uses)), func(t *testing.T) {
			name := "race-" + string(rune('0'+uses))
			r := env.writeAppRole(t, &hsmgatev1.AppRole{Name: name, Policies: []string{"health-read"}, SecretIdNumUses: uses})
			s, _ := env.secretID(t, name)
			const n = 24
			var wg sync.WaitGroup
			var won, refused atomic.Int32
			start := make(chan struct{})
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := env.m.AppRoles.Login(ctx, r.GetRoleId(), s, loopback)
					switch {
					case err == nil:
						won.Add(1)
					case errors.Is(err, ErrUnauthenticated):
						refused.Add(1)
					default:
						t.Errorf("login: %v", err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if won.Load() != int32(uses) || refused.Load() != n-int32(uses) {
				t.Errorf("got %d logins and %d refusals, want %d and %d", won.Load(), refused.Load(), uses, n-int32(uses))
			}
		})
	}
}

func TestAppRoleValidation(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	cases := []struct {
		name string
		role *hsmgatev1.AppRole
	}{
		{"nil", nil},
		{"bad name", &hsmgatev1.AppRole{Name: "Bad/Name"}},
		{"bad policy", &hsmgatev1.AppRole{Name: "r", Policies: []string{"no such*"}}},
		{"bad CIDR", &hsmgatev1.AppRole{Name: "r", BoundCidrs: []string{"10.0.0.0/33"}}},
		{"negative TTL", &hsmgatev1.AppRole{Name: "r", TokenTtl: durationpb.New(-time.Second)}},
		{"TTL above max", &hsmgatev1.AppRole{Name: "r", TokenTtl: durationpb.New(2 * time.Hour), TokenMaxTtl: durationpb.New(time.Hour)}},
		{"negative secret id TTL", &hsmgatev1.AppRole{Name: "r", SecretIdTtl: durationpb.New(-time.Second)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, env.store)
			if _, err := env.m.AppRoles.Write(ctx, c.role); !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
			if !sameSnapshot(before, snapshot(t, env.store)) {
				t.Errorf("a refused write changed the store")
			}
		})
	}
	env.writeAppRole(t, &hsmgatev1.AppRole{Name: "r", BoundCidrs: []string{"10.1.2.3", "10.0.0.1/8"}})
	got, err := env.m.AppRoles.Read(ctx, "r")
	if err != nil || strings.Join(got.GetBoundCidrs(), ",") != "10.1.2.3/32,10.0.0.0/8" {
		t.Errorf("CIDRs: got %v, %v, want canonical prefixes", got.GetBoundCidrs(), err)
	}
	if _, _, err := env.m.AppRoles.CreateSecretID(ctx, "r", map[string]string{MetaRole: "admin"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("secret id metadata overriding %q: got %v, want ErrInvalid", MetaRole, err)
	}
	if _, _, err := env.m.AppRoles.CreateSecretID(ctx, "absent", nil, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("secret id for an absent role: got %v, want ErrNotFound", err)
	}
}

// TestAppRoleServiceAuthorisation drives AuthMethodService through the
// interceptor: each RPC needs its capability on its resource.
func TestAppRoleServiceAuthorisation(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	env.writeAppRole(t, &hsmgatev1.AppRole{Name: "ci", Policies: []string{"health-read"}})
	writePolicy(t, env.a.Policies, "ci-secrets", "rules:\n  - resource: auth/approle/roles/ci/secret-id\n    capabilities: [create, list]\n")
	tab, err := Merge(testTable(t), AuthMethodTable())
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hsmgatev1.RegisterAuthMethodServiceServer(srv, env.m.Service)
	if err := CheckTableCovers(srv, AuthMethodTable()); err != nil {
		t.Fatalf("CheckTableCovers: %v", err)
	}
	ic, err := env.a.Interceptor(tab, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := env.token(t, "ci-secrets")
	call := func(method string, req proto.Message, h func(context.Context, any) (any, error)) (any, error) {
		return ic.Unary()(incoming(tok), req, &grpc.UnaryServerInfo{FullMethod: method}, h)
	}
	svc := env.m.Service
	resp, err := call(hsmgatev1.AuthMethodService_CreateSecretID_FullMethodName, &hsmgatev1.CreateSecretIDRequest{RoleName: "ci"},
		func(ctx context.Context, r any) (any, error) {
			return svc.CreateSecretID(ctx, r.(*hsmgatev1.CreateSecretIDRequest))
		})
	if err != nil {
		t.Fatalf("CreateSecretID with create: %v", err)
	}
	secret := resp.(*hsmgatev1.CreateSecretIDResponse).GetSecretId()
	resp, err = call(hsmgatev1.AuthMethodService_ListSecretIDs_FullMethodName, &hsmgatev1.ListSecretIDsRequest{RoleName: "ci"},
		func(ctx context.Context, r any) (any, error) {
			return svc.ListSecretIDs(ctx, r.(*hsmgatev1.ListSecretIDsRequest))
		})
	if err != nil || len(resp.(*hsmgatev1.ListSecretIDsResponse).GetSecretIds()) != 1 {
		t.Fatalf("ListSecretIDs with list: got %v, %v", resp, err)
	}
	if b, _ := proto.Marshal(resp.(proto.Message)); strings.Contains(string(b), secret) {
		t.Errorf("ListSecretIDs answer holds the secret")
	}
	denied := []struct {
		method string
		req    proto.Message
	}{
		{hsmgatev1.AuthMethodService_ReadAppRole_FullMethodName, &hsmgatev1.ReadAppRoleRequest{Name: "ci"}},
		{hsmgatev1.AuthMethodService_WriteAppRole_FullMethodName, &hsmgatev1.WriteAppRoleRequest{Role: &hsmgatev1.AppRole{Name: "ci", Policies: []string{"root-ish"}}}},
		{hsmgatev1.AuthMethodService_CreateSecretID_FullMethodName, &hsmgatev1.CreateSecretIDRequest{RoleName: "other"}},
		{hsmgatev1.AuthMethodService_DestroySecretID_FullMethodName, &hsmgatev1.DestroySecretIDRequest{RoleName: "ci", Accessor: strings.Repeat("00", 16)}},
		{hsmgatev1.AuthMethodService_WriteKubernetesConfig_FullMethodName, &hsmgatev1.WriteKubernetesConfigRequest{}},
		{hsmgatev1.AuthMethodService_WriteCertRole_FullMethodName, &hsmgatev1.WriteCertRoleRequest{Role: &hsmgatev1.CertRole{Name: "x"}}},
	}
	for _, d := range denied {
		t.Run(d.method, func(t *testing.T) {
			before := snapshot(t, env.store)
			ran := false
			_, err := call(d.method, d.req, func(context.Context, any) (any, error) { ran = true; return nil, nil })
			if errs.Code(err) != codes.PermissionDenied || ran {
				t.Errorf("got %v (handler ran: %v), want PermissionDenied", err, ran)
			}
			if !sameSnapshot(before, snapshot(t, env.store)) {
				t.Errorf("a refused call changed the store")
			}
		})
	}
}

// TestAppRoleSecretIDLimit: a role's live secret IDs are bounded.
func TestAppRoleSecretIDLimit(t *testing.T) {
	env := newMethodsEnvWith(t, MethodsConfig{AppRole: AppRoleConfig{MaxSecretIDs: 2}})
	ctx := context.Background()
	env.writeAppRole(t, &hsmgatev1.AppRole{Name: "r", SecretIdTtl: durationpb.New(time.Hour)})
	env.secretID(t, "r")
	_, info := env.secretID(t, "r")
	if _, _, err := env.m.AppRoles.CreateSecretID(ctx, "r", nil, nil); errs.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third secret id: got %v, want ResourceExhausted", err)
	}
	if err := env.m.AppRoles.DestroySecretID(ctx, "r", info.GetAccessor()); err != nil {
		t.Fatal(err)
	}
	env.secretID(t, "r")
	env.advance(2 * time.Hour) // expired ones do not count
	env.secretID(t, "r")
	env.secretID(t, "r")
}
