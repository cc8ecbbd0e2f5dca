package sshca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca/krl"
)

// checkCert verifies c as sshd would: signed by a trusted CA key, valid now,
// for principal.
func checkCert(t *testing.T, c *ssh.Certificate, ca ssh.PublicKey, principal string, now time.Time) error {
	t.Helper()
	checker := &ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool { return string(auth.Marshal()) == string(ca.Marshal()) },
		Clock:           func() time.Time { return now },
	}
	return checker.CheckCert(principal, c)
}

func TestCAKeyTypesAndSignatureAlgorithms(t *testing.T) {
	env := newEnv(t)
	_, subject := ed25519Key(t)
	tests := []struct {
		kt     pb.SSHKeyType
		rsaAlg string
		want   string // certificate signature format
		long   bool
	}{
		{pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256, "", ssh.KeyAlgoECDSA256, false},
		{pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P384, "", ssh.KeyAlgoECDSA384, false},
		{pb.SSHKeyType_SSH_KEY_TYPE_ED25519, "", ssh.KeyAlgoED25519, false},
		{pb.SSHKeyType_SSH_KEY_TYPE_RSA_3072, "", ssh.KeyAlgoRSASHA512, false},
		{pb.SSHKeyType_SSH_KEY_TYPE_RSA_3072, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA256, false},
		{pb.SSHKeyType_SSH_KEY_TYPE_RSA_4096, "", ssh.KeyAlgoRSASHA512, true},
	}
	for i, tc := range tests {
		t.Run(tc.kt.String()+"/"+tc.want, func(t *testing.T) {
			if tc.long && testing.Short() {
				t.Skip("RSA-4096 key generation is slow in SoftHSM")
			}
			name := "ca" + string(rune('a'+i))
			ca, err := env.e.CreateCA(context.Background(), &pb.CreateSSHCARequest{
				Name: name, CertType: userCT, KeyType: tc.kt, RsaSignatureAlgorithm: tc.rsaAlg,
			})
			if err != nil {
				t.Fatal(err)
			}
			env.createRole(t, &pb.SSHRole{Name: name, Ca: name, AllowedPrincipals: []string{"alice"}})
			c, _, err := env.signOne(t, userCT, name, &pb.SSHSignItem{PublicKey: subject, Principals: []string{"alice"}})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Signature.Format; got != tc.want {
				t.Errorf("signature format: got %q, want %q", got, tc.want)
			}
			if c.Signature.Format == ssh.KeyAlgoRSA {
				t.Error("RSA CA signed with ssh-rsa (SHA-1)")
			}
			caPub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ca.GetKeys()[0].GetPublicKey()))
			if err != nil {
				t.Fatal(err)
			}
			if err := checkCert(t, c, caPub, "alice", env.clock.Now()); err != nil {
				t.Errorf("certificate does not verify: %v", err)
			}
		})
	}
	t.Run("sha1 algorithm refused", func(t *testing.T) {
		_, err := env.e.CreateCA(context.Background(), &pb.CreateSSHCARequest{
			Name: "sha1", CertType: userCT, KeyType: pb.SSHKeyType_SSH_KEY_TYPE_RSA_3072, RsaSignatureAlgorithm: ssh.KeyAlgoRSA,
		})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("got %v, want ErrInvalid", err)
		}
	})
	t.Run("duplicate name", func(t *testing.T) {
		_, err := env.e.CreateCA(context.Background(), &pb.CreateSSHCARequest{Name: "caa", CertType: userCT})
		if !errors.Is(err, ErrExists) {
			t.Errorf("got %v, want ErrExists", err)
		}
	})
}

func TestRotation(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	ca, err := env.e.CreateCA(ctx, &pb.CreateSSHCARequest{
		Name: "users", CertType: userCT, KeyType: pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256,
		RotationOverlap: durationpb.New(48 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	v1 := ca.GetKeys()[0].GetPublicKey()
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}})
	_, subject := ed25519Key(t)
	sign := func() *ssh.Certificate {
		c, _, err := env.signOne(t, userCT, "eng", &pb.SSHSignItem{PublicKey: subject, Principals: []string{"alice"}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	published := func() []string {
		keys, err := env.e.PublicKeys(ctx, "", userCT)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range keys {
			out = append(out, k.GetState().String()+" "+k.GetPublicKey())
		}
		return out
	}
	c1 := sign()
	ca, err = env.e.RotateCA(ctx, "users", pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	if err != nil {
		t.Fatal(err)
	}
	v2 := ca.GetKeys()[1].GetPublicKey()
	if got, want := published(), []string{"SSHCA_KEY_STATE_RETIRING " + v1, "SSHCA_KEY_STATE_ACTIVE " + v2}; !reflect.DeepEqual(got, want) {
		t.Errorf("after rotation: got %v, want %v", got, want)
	}
	c2 := sign()
	if got, want := authorized(t, c2.SignatureKey), v2; got != want {
		t.Errorf("signed by %s, want the new key %s", got, want)
	}
	if authorized(t, c1.SignatureKey) != v1 {
		t.Error("first certificate not signed by v1")
	}
	if _, err := env.e.RetireCAKey(ctx, "users", 2); !errors.Is(err, ErrState) {
		t.Errorf("retiring the active version: got %v, want ErrState", err)
	}
	// The overlap ends by itself.
	env.clock.Advance(49 * time.Hour)
	if got, want := published(), []string{"SSHCA_KEY_STATE_ACTIVE " + v2}; !reflect.DeepEqual(got, want) {
		t.Errorf("after the overlap: got %v, want %v", got, want)
	}
	// Explicit retirement.
	if _, err := env.e.RotateCA(ctx, "users", 0); err != nil {
		t.Fatal(err)
	}
	ca, err = env.e.RetireCAKey(ctx, "users", 2)
	if err != nil {
		t.Fatal(err)
	}
	states := []pb.SSHCAKeyState{}
	for _, k := range ca.GetKeys() {
		states = append(states, k.GetState())
	}
	want := []pb.SSHCAKeyState{pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRED, pb.SSHCAKeyState_SSHCA_KEY_STATE_RETIRED, pb.SSHCAKeyState_SSHCA_KEY_STATE_ACTIVE}
	if !reflect.DeepEqual(states, want) {
		t.Errorf("states: got %v, want %v", states, want)
	}
	if ca.GetKeys()[2].GetKeyType() != pb.SSHKeyType_SSH_KEY_TYPE_ED25519 {
		t.Errorf("rotation without a type kept %v, want the current ed25519", ca.GetKeys()[2].GetKeyType())
	}
}

func TestRevocationAndKRL(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}})
	parse := func() *krl.KRL {
		data, _, _, err := env.e.KRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k, err := krl.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k := parse()
	if k.Version != 1 || len(k.Certs) != 0 || len(k.ExplicitKeys) != 0 {
		t.Fatalf("initial KRL: got %+v, want an empty version 1", k)
	}
	certs := make([]*ssh.Certificate, 5)
	for i := range certs {
		env.caller.set(Caller{Name: "alice", RequestID: "req-" + string(rune('a'+i))})
		_, subject := ed25519Key(t)
		c, _, err := env.signOne(t, userCT, "eng", &pb.SSHSignItem{PublicKey: subject, Principals: []string{"alice"}})
		if err != nil {
			t.Fatal(err)
		}
		certs[i] = c
	}
	revs := []*pb.RevokeSSHRequest{
		{Target: &pb.RevokeSSHRequest_Serial{Serial: certs[0].Serial}},
		{Target: &pb.RevokeSSHRequest_KeyId{KeyId: certs[1].KeyId}, Ca: "users"},
		{Target: &pb.RevokeSSHRequest_PublicKey{PublicKey: authorized(t, certs[2].Key)}},
		{Target: &pb.RevokeSSHRequest_Sha256Fingerprint{Sha256Fingerprint: ssh.FingerprintSHA256(certs[3].Key)}},
	}
	for i, r := range revs {
		v, err := env.e.Revoke(ctx, r)
		if err != nil {
			t.Fatalf("revoke %d: %v", i, err)
		}
		if want := uint64(i + 2); v != want {
			t.Errorf("revoke %d: KRL version %d, want %d", i, v, want)
		}
	}
	k = parse()
	for i, c := range certs {
		if got, want := k.IsRevoked(c), i < 4; got != want {
			t.Errorf("certificate %d: revoked %v, want %v", i, got, want)
		}
	}
	t.Run("expired revocations are pruned", func(t *testing.T) {
		env.clock.Advance(2 * time.Hour) // past the certificates' 1h default TTL
		defer env.clock.Advance(-2 * time.Hour)
		if _, err := env.e.Revoke(ctx, &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_KeyId{KeyId: "someone"}}); err != nil {
			t.Fatal(err)
		}
		k := parse()
		if k.IsRevoked(certs[0]) {
			t.Error("the expired certificate revoked by serial is still in the KRL")
		}
		if !k.IsRevoked(certs[1]) || !k.IsRevoked(certs[2]) || !k.IsRevoked(certs[3]) {
			t.Error("revocations without an expiry were pruned")
		}
	})
	t.Run("unknown serial", func(t *testing.T) {
		_, err := env.e.Revoke(ctx, &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_Serial{Serial: 12345}})
		if !errors.Is(err, ErrSerialNotFound) {
			t.Errorf("got %v, want ErrSerialNotFound", err)
		}
		if _, err := env.e.Revoke(ctx, &pb.RevokeSSHRequest{Target: &pb.RevokeSSHRequest_Serial{Serial: 12345}, Ca: "users"}); err != nil {
			t.Errorf("with the CA named: %v", err)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, r := range []*pb.RevokeSSHRequest{
			{},
			{Target: &pb.RevokeSSHRequest_Serial{Serial: 0}},
			{Target: &pb.RevokeSSHRequest_PublicKey{PublicKey: "nope"}},
			{Target: &pb.RevokeSSHRequest_Sha256Fingerprint{Sha256Fingerprint: "SHA256:abc"}},
		} {
			if _, err := env.e.Revoke(ctx, r); !errors.Is(err, ErrInvalid) {
				t.Errorf("%v: got %v, want ErrInvalid", r, err)
			}
		}
	})
}

func TestHTTP(t *testing.T) {
	env := newEnv(t)
	users := env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	hosts := env.createCA(t, "hosts", hostCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	srv := httptest.NewServer(env.e.HTTPHandler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path, want string
		code       int
	}{
		{PathTrustedUserCAKeys, users.GetKeys()[0].GetPublicKey() + " hsmgate:users:v1\n", 200},
		{PathKnownHosts, "@cert-authority * " + hosts.GetKeys()[0].GetPublicKey() + " hsmgate:hosts:v1\n", 200},
		{PathKnownHosts + "?hosts=*.example.com", "@cert-authority *.example.com " + hosts.GetKeys()[0].GetPublicKey() + " hsmgate:hosts:v1\n", 200},
		{PathTrustedUserCAKeys + "?ca=hosts", "", 200},
		{PathTrustedUserCAKeys + "?ca=nope", "", 404},
		{PathKnownHosts + "?hosts=a%20b", "", 400},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(tc.path)
			if code != tc.code || (code == 200 && body != tc.want) {
				t.Errorf("got %d %q, want %d %q", code, body, tc.code, tc.want)
			}
		})
	}
	code, body := get(PathKRL)
	if code != 200 {
		t.Fatalf("krl: %d", code)
	}
	if _, err := krl.Parse([]byte(body)); err != nil {
		t.Errorf("krl: %v", err)
	}
}

func TestAuthTable(t *testing.T) {
	table := AuthTable()
	for _, m := range pb.SSHCAService_ServiceDesc.Methods {
		full := "/" + pb.SSHCAService_ServiceDesc.ServiceName + "/" + m.MethodName
		rule, ok := table[full]
		if !ok {
			t.Errorf("%s has no rule", full)
			continue
		}
		if rule.Public {
			t.Errorf("%s is public", full)
		}
	}
	if len(table) != len(pb.SSHCAService_ServiceDesc.Methods) {
		t.Errorf("table has %d rules for %d methods", len(table), len(pb.SSHCAService_ServiceDesc.Methods))
	}
	tests := []struct {
		method string
		req    proto.Message
		want   string
	}{
		{"SignUserKey", &pb.SignUserKeyRequest{Role: "eng"}, "ssh/roles/eng"},
		{"SignHostKey", &pb.SignHostKeyRequest{Role: "web"}, "ssh/roles/web"},
		{"CreateSSHRole", &pb.CreateSSHRoleRequest{Role: &pb.SSHRole{Name: "eng"}}, "ssh/roles/eng"},
		{"RotateSSHCA", &pb.RotateSSHCARequest{Name: "users"}, "ssh/cas/users"},
		{"RevokeSSH", &pb.RevokeSSHRequest{}, "ssh/krl"},
		{"RevokeSSH", &pb.RevokeSSHRequest{Ca: "users"}, "ssh/cas/users"},
	}
	for _, tc := range tests {
		got, err := table["/hsmgate.v1.SSHCAService/"+tc.method].Resource(tc.req)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.method, got, err, tc.want)
		}
	}
	if _, err := table["/hsmgate.v1.SSHCAService/SignUserKey"].Resource(&pb.SignUserKeyRequest{Role: "../x"}); err == nil {
		t.Error("bad role name accepted as a resource")
	}
}

func TestService(t *testing.T) {
	env := newEnv(t)
	svc := NewService(env.e)
	ctx := context.Background()
	_, err := svc.SignUserKey(ctx, &pb.SignUserKeyRequest{Role: "missing"})
	if got := errs.Code(err); got != codes.NotFound {
		t.Errorf("missing role: got %v, want NotFound", got)
	}
	_, err = svc.CreateSSHCA(ctx, &pb.CreateSSHCARequest{Name: "x"})
	if got := errs.Code(err); got != codes.InvalidArgument {
		t.Errorf("CA without type: got %v, want InvalidArgument", got)
	}
	if _, err := svc.CreateSSHCA(ctx, &pb.CreateSSHCARequest{Name: "hosts", CertType: hostCT}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateSSHRole(ctx, &pb.CreateSSHRoleRequest{Role: &pb.SSHRole{Name: "web", Ca: "hosts", AllowedPrincipals: []string{"*.example.com"}}}); err != nil {
		t.Fatal(err)
	}
	_, hostKey := ed25519Key(t)
	resp, err := svc.SignHostKey(ctx, &pb.SignHostKeyRequest{Role: "web", Items: []*pb.SSHSignItem{
		{PublicKey: hostKey, Principals: []string{"web1.example.com"}},
		{PublicKey: hostKey, Principals: []string{"web1.evil.com"}},
		{PublicKey: hostKey, Principals: []string{"web2.example.com"}, Extensions: map[string]string{"permit-pty": ""}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResults()[0]; r.GetError() != nil || !strings.HasPrefix(r.GetCertificate(), ssh.CertAlgoED25519v01) {
		t.Errorf("item 0: %v", r)
	}
	for i := 1; i < 3; i++ {
		if r := resp.GetResults()[i]; codes.Code(r.GetError().GetCode()) != codes.InvalidArgument {
			t.Errorf("item %d: got %v, want InvalidArgument", i, r.GetError())
		}
	}
	krlResp, err := svc.GetKRL(ctx, &pb.GetKRLRequest{})
	if err != nil || krlResp.GetKrlVersion() != 1 {
		t.Errorf("GetKRL: %v, %v", krlResp, err)
	}
}

func TestBatchSerialsDistinct(t *testing.T) {
	env := newEnv(t)
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}, DefaultPrincipals: []string{"alice"}})
	items := make([]*pb.SSHSignItem, 32)
	for i := range items {
		_, k := ed25519Key(t)
		items[i] = &pb.SSHSignItem{PublicKey: k}
	}
	res, err := env.e.Sign(context.Background(), userCT, "eng", items)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for i, r := range res {
		if r.GetError() != nil || r.GetSerial() == 0 || seen[r.GetSerial()] {
			t.Fatalf("item %d: %v", i, r)
		}
		seen[r.GetSerial()] = true
		if _, err := env.e.findIssued(context.Background(), r.GetSerial()); err != nil {
			t.Errorf("item %d not recorded: %v", i, err)
		}
	}
}

func TestFindIssuedHorizon(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}, MaxTtl: durationpb.New(8 * time.Hour)})
	_, key := ed25519Key(t)
	c, _, err := env.signOne(t, userCT, "eng", &pb.SSHSignItem{PublicKey: key, Principals: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		later time.Duration
		found bool
	}{
		{0, true},
		{25 * time.Hour, true},      // yesterday's partition, within max_ttl + a day
		{4 * 24 * time.Hour, false}, // long expired: not searched
	}
	start := env.clock.Now()
	for _, tc := range tests {
		env.clock.Set(start.Add(tc.later))
		rec, err := env.e.findIssued(ctx, c.Serial)
		if got := err == nil && rec.GetSerial() == c.Serial; got != tc.found {
			t.Errorf("%v later: found %v (%v), want %v", tc.later, got, err, tc.found)
		}
		if !tc.found && !errors.Is(err, ErrSerialNotFound) {
			t.Errorf("%v later: got %v, want ErrSerialNotFound", tc.later, err)
		}
	}
}

// failingStore refuses to write issuance records, as a store that went away would.
type failingStore struct{ keystore.Store }

func (f failingStore) Put(ctx context.Context, key string, value []byte, expect int64) (int64, error) {
	if strings.HasPrefix(key, prefixIssued) {
		return 0, fmt.Errorf("test: %w", keystore.ErrUnavailable)
	}
	return f.Store.Put(ctx, key, value, expect)
}

func TestSignFailsWholeCallWhenNotRecorded(t *testing.T) {
	env := newEnv(t)
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}, DefaultPrincipals: []string{"alice"}})
	e2, err := New(context.Background(), Config{Store: failingStore{env.e.store}, Keys: env.e.keys, Caller: env.caller.get, Now: env.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Close() })
	_, key := ed25519Key(t)
	res, err := NewService(e2).SignUserKey(context.Background(), &pb.SignUserKeyRequest{Role: "eng", Items: []*pb.SSHSignItem{{PublicKey: key}}})
	if errs.Code(err) != codes.Unavailable || res != nil {
		t.Errorf("got %v, %v; want Unavailable and no certificate", res, err)
	}
}
