package sshca

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

const (
	userCT = pb.SSHCertType_SSH_CERT_TYPE_USER
	hostCT = pb.SSHCertType_SSH_CERT_TYPE_HOST
)

func TestRoleValidation(t *testing.T) {
	env := newEnv(t)
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	env.createCA(t, "hosts", hostCT, pb.SSHKeyType_SSH_KEY_TYPE_ED25519)
	base := func() *pb.SSHRole {
		return &pb.SSHRole{Name: "r", Ca: "users", AllowedPrincipals: []string{"{{identity.name}}"}}
	}
	tests := []struct {
		name string
		mod  func(r *pb.SSHRole)
		want error
	}{
		{"bad name", func(r *pb.SSHRole) { r.Name = "Bad Name" }, ErrInvalid},
		{"unknown CA", func(r *pb.SSHRole) { r.Ca = "nope" }, ErrCANotFound},
		{"type differs from CA", func(r *pb.SSHRole) { r.CertType = hostCT }, ErrWrongType},
		{"no allowed principals", func(r *pb.SSHRole) { r.AllowedPrincipals = nil }, ErrInvalid},
		{"unknown template variable", func(r *pb.SSHRole) { r.AllowedPrincipals = []string{"{{identity.email}}"} }, ErrInvalid},
		{"unterminated template", func(r *pb.SSHRole) { r.AllowedPrincipals = []string{"{{identity.name"} }, ErrInvalid},
		{"comma in principal", func(r *pb.SSHRole) { r.AllowedPrincipals = []string{"a,b"} }, ErrInvalid},
		{"wildcard default principal", func(r *pb.SSHRole) { r.DefaultPrincipals = []string{"*"} }, ErrInvalid},
		{"default ttl above max", func(r *pb.SSHRole) {
			r.DefaultTtl, r.MaxTtl = durationpb.New(2*time.Hour), durationpb.New(time.Hour)
		}, ErrInvalid},
		{"backdate too long", func(r *pb.SSHRole) { r.Backdate = durationpb.New(2 * time.Hour) }, ErrInvalid},
		{"default extension not allowed", func(r *pb.SSHRole) { r.DefaultExtensions = map[string]string{"permit-pty": ""} }, ErrInvalid},
		{"standard extension with value", func(r *pb.SSHRole) {
			r.AllowedExtensions = []string{"permit-pty"}
			r.DefaultExtensions = map[string]string{"permit-pty": "yes"}
		}, ErrInvalid},
		{"unknown critical option", func(r *pb.SSHRole) { r.AllowedCriticalOptions = []string{"no-pty"} }, ErrInvalid},
		{"bad source-address", func(r *pb.SSHRole) { r.CriticalOptions = map[string]string{"source-address": "10.0.0.0/8,nope"} }, ErrInvalid},
		{"verify-required with value", func(r *pb.SSHRole) { r.CriticalOptions = map[string]string{"verify-required": "x"} }, ErrInvalid},
		{"rsa below floor", func(r *pb.SSHRole) { r.AllowedKeyTypes = []*pb.SSHKeyTypeRule{{Type: "rsa", MinBits: 1024}} }, ErrInvalid},
		{"dsa key type", func(r *pb.SSHRole) { r.AllowedKeyTypes = []*pb.SSHKeyTypeRule{{Type: "dsa"}} }, ErrInvalid},
		{"bad key id variable", func(r *pb.SSHRole) { r.KeyIdFormat = "{{secret}}" }, ErrInvalid},
		{"host role with extensions", func(r *pb.SSHRole) {
			r.Ca, r.AllowedExtensions = "hosts", []string{"permit-pty"}
		}, ErrInvalid},
		{"host role with critical options", func(r *pb.SSHRole) {
			r.Ca, r.CriticalOptions = "hosts", map[string]string{"force-command": "true"}
		}, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.mod(r)
			_, err := env.e.CreateRole(context.Background(), r)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("defaults filled", func(t *testing.T) {
		r := env.createRole(t, base())
		if got, want := r.GetCertType(), userCT; got != want {
			t.Errorf("cert type: got %v, want %v", got, want)
		}
		if got, want := r.GetMaxTtl().AsDuration(), DefaultUserMaxTTL; got != want {
			t.Errorf("max ttl: got %v, want %v", got, want)
		}
		if got, want := r.GetKeyIdFormat(), DefaultKeyID; got != want {
			t.Errorf("key id format: got %q, want %q", got, want)
		}
		if len(r.GetAllowedKeyTypes()) != 5 {
			t.Errorf("key types: got %v, want the 5 defaults", r.GetAllowedKeyTypes())
		}
		if _, err := env.e.CreateRole(context.Background(), base()); !errors.Is(err, ErrExists) {
			t.Errorf("second create: got %v, want ErrExists", err)
		}
	})
	t.Run("crud", func(t *testing.T) {
		ctx := context.Background()
		r := base()
		r.Name = "crud"
		env.createRole(t, r)
		r.DefaultPrincipals = []string{"{{identity.name}}"}
		if _, err := env.e.UpdateRole(ctx, r); err != nil {
			t.Fatal(err)
		}
		got, err := env.e.GetRole(ctx, "crud")
		if err != nil || !slices.Equal(got.GetDefaultPrincipals(), r.GetDefaultPrincipals()) {
			t.Fatalf("get after update: got %v, %v", got, err)
		}
		roles, err := env.e.ListRoles(ctx)
		if err != nil || len(roles) != 2 {
			t.Fatalf("list: got %d roles, %v; want 2", len(roles), err)
		}
		if err := env.e.DeleteRole(ctx, "crud"); err != nil {
			t.Fatal(err)
		}
		if _, err := env.e.GetRole(ctx, "crud"); !errors.Is(err, ErrRoleNotFound) || errs.Code(err).String() != "NotFound" {
			t.Errorf("get after delete: got %v, want ErrRoleNotFound", err)
		}
		if _, err := env.e.UpdateRole(ctx, r); !errors.Is(err, ErrRoleNotFound) {
			t.Errorf("update after delete: got %v, want ErrRoleNotFound", err)
		}
	})
}

func TestSignPolicy(t *testing.T) {
	env := newEnv(t)
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	env.createRole(t, &pb.SSHRole{
		Name: "eng", Ca: "users",
		AllowedPrincipals:      []string{"{{identity.name}}", "deploy", "team-{{identity.metadata.team}}", "svc-*"},
		DefaultPrincipals:      []string{"{{identity.name}}"},
		DefaultTtl:             durationpb.New(time.Hour),
		MaxTtl:                 durationpb.New(8 * time.Hour),
		Backdate:               durationpb.New(2 * time.Minute),
		AllowedExtensions:      []string{"permit-pty", "permit-port-forwarding", "permit-agent-forwarding"},
		DefaultExtensions:      map[string]string{"permit-pty": ""},
		AllowedCriticalOptions: []string{"source-address", "verify-required"},
		CriticalOptions:        map[string]string{"force-command": "/usr/bin/id"},
		AllowedKeyTypes: []*pb.SSHKeyTypeRule{
			{Type: "ed25519"}, {Type: "rsa", MinBits: 3072}, {Type: "sk-ed25519"}, {Type: "sk-ecdsa"},
		},
		KeyIdFormat: "{{identity.name}}/{{request_id}}/{{serial}}",
	})
	env.createRole(t, &pb.SSHRole{Name: "nodefault", Ca: "users", AllowedPrincipals: []string{"ops"}})
	_, edKey := ed25519Key(t)
	now := env.clock.Now()

	t.Run("defaults", func(t *testing.T) {
		c, res, err := env.signOne(t, userCT, "eng", &pb.SSHSignItem{PublicKey: edKey, Reference: "r1"})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.ValidPrincipals, []string{"alice"}; !reflect.DeepEqual(got, want) {
			t.Errorf("principals: got %v, want %v", got, want)
		}
		if got, want := c.ValidAfter, uint64(now.Add(-2*time.Minute).Unix()); got != want {
			t.Errorf("valid after: got %d, want %d", got, want)
		}
		if got, want := c.ValidBefore, uint64(now.Add(time.Hour).Unix()); got != want {
			t.Errorf("valid before: got %d, want %d", got, want)
		}
		if got, want := c.Extensions, map[string]string{"permit-pty": ""}; !reflect.DeepEqual(got, want) {
			t.Errorf("extensions: got %v, want %v", got, want)
		}
		if got, want := c.CriticalOptions, map[string]string{"force-command": "/usr/bin/id"}; !reflect.DeepEqual(got, want) {
			t.Errorf("critical options: got %v, want %v", got, want)
		}
		if c.Serial == 0 {
			t.Error("serial is 0")
		}
		if got, want := c.KeyId, "alice/req-1/"+strconv.FormatUint(c.Serial, 10); got != want {
			t.Errorf("key id: got %q, want %q", got, want)
		}
		if c.CertType != ssh.UserCert {
			t.Errorf("cert type: got %d, want user", c.CertType)
		}
		if res.GetReference() != "r1" || res.GetSerial() != c.Serial || res.GetCa() != "users" || res.GetCaVersion() != 1 {
			t.Errorf("result fields: %v", res)
		}
		rec, err := env.e.findIssued(context.Background(), c.Serial)
		if err != nil {
			t.Fatalf("issuance record: %v", err)
		}
		if rec.GetIdentity() != "alice" || rec.GetRequestId() != "req-1" || rec.GetRole() != "eng" || rec.GetKeyId() != c.KeyId {
			t.Errorf("issuance record: %v", rec)
		}
		// The request's shared fields (stored once per batch) and the certificate's own, merged.
		if rec.GetCa() != "users" || rec.GetCaVersion() != 1 || !bytes.Equal(rec.GetCaPublicKey(), c.SignatureKey.Marshal()) ||
			rec.GetPublicKeyFingerprint() != ssh.FingerprintSHA256(c.Key) || rec.GetValidBefore().AsTime().Unix() != int64(c.ValidBefore) {
			t.Errorf("issuance record CA, key and validity: %v", rec)
		}
	})

	tests := []struct {
		name   string
		caller *Caller
		item   *pb.SSHSignItem
		role   string
		want   error // nil: accepted
		check  func(t *testing.T, c *ssh.Certificate)
	}{
		{name: "literal principal", item: &pb.SSHSignItem{Principals: []string{"deploy", "alice"}},
			check: func(t *testing.T, c *ssh.Certificate) {
				if got, want := c.ValidPrincipals, []string{"alice", "deploy"}; !reflect.DeepEqual(got, want) {
					t.Errorf("principals: got %v, want %v", got, want)
				}
			}},
		{name: "metadata template", item: &pb.SSHSignItem{Principals: []string{"team-infra"}}},
		{name: "other team refused", item: &pb.SSHSignItem{Principals: []string{"team-sales"}}, want: ErrNotAllowed},
		{name: "wildcard", item: &pb.SSHSignItem{Principals: []string{"svc-payments"}}},
		{name: "another identity's name refused", item: &pb.SSHSignItem{Principals: []string{"bob"}}, want: ErrNotAllowed},
		{name: "root refused", item: &pb.SSHSignItem{Principals: []string{"root"}}, want: ErrNotAllowed},
		{name: "no identity and no principals: never an empty list", caller: &Caller{},
			item: &pb.SSHSignItem{}, want: ErrInvalid},
		{name: "no defaults and no principals", role: "nodefault", item: &pb.SSHSignItem{}, want: ErrInvalid},
		{name: "bad principal characters", item: &pb.SSHSignItem{Principals: []string{"alice,root"}}, want: ErrInvalid},
		{name: "ttl at max", item: &pb.SSHSignItem{Ttl: durationpb.New(8 * time.Hour)}},
		{name: "ttl above max", item: &pb.SSHSignItem{Ttl: durationpb.New(9 * time.Hour)}, want: ErrNotAllowed},
		{name: "negative ttl", item: &pb.SSHSignItem{Ttl: durationpb.New(-time.Hour)}, want: ErrInvalid},
		{name: "requested extensions replace defaults",
			item: &pb.SSHSignItem{Extensions: map[string]string{"permit-port-forwarding": ""}},
			check: func(t *testing.T, c *ssh.Certificate) {
				if got, want := c.Extensions, map[string]string{"permit-port-forwarding": ""}; !reflect.DeepEqual(got, want) {
					t.Errorf("extensions: got %v, want %v", got, want)
				}
			}},
		{name: "extension not allowed", item: &pb.SSHSignItem{Extensions: map[string]string{"permit-X11-forwarding": ""}}, want: ErrNotAllowed},
		{name: "custom extension not allowed", item: &pb.SSHSignItem{Extensions: map[string]string{"login@github.com": "alice"}}, want: ErrNotAllowed},
		{name: "allowed critical option added",
			item: &pb.SSHSignItem{CriticalOptions: map[string]string{"source-address": "10.1.0.0/16", "verify-required": ""}},
			check: func(t *testing.T, c *ssh.Certificate) {
				want := map[string]string{"force-command": "/usr/bin/id", "source-address": "10.1.0.0/16", "verify-required": ""}
				if !reflect.DeepEqual(c.CriticalOptions, want) {
					t.Errorf("critical options: got %v, want %v", c.CriticalOptions, want)
				}
			}},
		{name: "forced critical option cannot change", item: &pb.SSHSignItem{CriticalOptions: map[string]string{"force-command": "/bin/sh"}}, want: ErrNotAllowed},
		{name: "bad source-address", item: &pb.SSHSignItem{CriticalOptions: map[string]string{"source-address": "anywhere"}}, want: ErrInvalid},
		{name: "rsa 3072", item: &pb.SSHSignItem{PublicKey: rsaKey(t, 3072)}},
		{name: "rsa 2048 below role minimum", item: &pb.SSHSignItem{PublicKey: rsaKey(t, 2048)}, want: ErrNotAllowed},
		{name: "ecdsa not in role", item: &pb.SSHSignItem{PublicKey: ecdsaKey(t, elliptic.P256())}, want: ErrNotAllowed},
		{name: "sk-ed25519", item: &pb.SSHSignItem{PublicKey: skKey(t, false)},
			check: func(t *testing.T, c *ssh.Certificate) {
				if c.Key.Type() != ssh.KeyAlgoSKED25519 || c.Type() != ssh.CertAlgoSKED25519v01 {
					t.Errorf("got key %s cert %s", c.Key.Type(), c.Type())
				}
			}},
		{name: "sk-ecdsa", item: &pb.SSHSignItem{PublicKey: skKey(t, true)}},
		{name: "garbage key", item: &pb.SSHSignItem{PublicKey: "ssh-ed25519 AAAA"}, want: ErrInvalid},
		{name: "certificate as key", item: &pb.SSHSignItem{PublicKey: "CERT"}, want: ErrInvalid},
	}
	// A certificate to submit as a key.
	cert, _, err := env.signOne(t, userCT, "eng", &pb.SSHSignItem{PublicKey: edKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.caller != nil {
				env.caller.set(*tc.caller)
				defer env.caller.set(Caller{Name: "alice", RequestID: "req-1", Metadata: map[string]string{"team": "infra"}})
			}
			it := tc.item
			switch it.PublicKey {
			case "":
				it.PublicKey = edKey
			case "CERT":
				it.PublicKey = authorized(t, cert)
			}
			role := tc.role
			if role == "" {
				role = "eng"
			}
			c, _, err := env.signOne(t, userCT, role, it)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got error %v, want a certificate", err)
				}
				if len(c.ValidPrincipals) == 0 {
					t.Fatal("certificate without principals")
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("got a certificate for %v, want %v", c.ValidPrincipals, tc.want)
			}
		})
	}
	t.Run("identity wildcard characters are refused in templates", func(t *testing.T) {
		env.caller.set(Caller{Name: "*"})
		defer env.caller.set(Caller{Name: "alice", RequestID: "req-1", Metadata: map[string]string{"team": "infra"}})
		if _, _, err := env.signOne(t, userCT, "eng", &pb.SSHSignItem{PublicKey: edKey, Principals: []string{"root"}}); err == nil {
			t.Fatal("identity name * allowed principal root")
		}
	})
	t.Run("per-item errors keep other items", func(t *testing.T) {
		res, err := env.e.Sign(context.Background(), userCT, "eng", []*pb.SSHSignItem{
			{PublicKey: edKey, Reference: "ok"},
			{PublicKey: edKey, Principals: []string{"root"}, Reference: "bad"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].GetError() != nil || res[0].GetCertificate() == "" || res[0].GetReference() != "ok" {
			t.Errorf("item 0: %v", res[0])
		}
		if res[1].GetError().GetCode() != 3 || res[1].GetCertificate() != "" || res[1].GetReference() != "bad" {
			t.Errorf("item 1: got %v, want INVALID_ARGUMENT", res[1])
		}
	})
	t.Run("whole-call errors", func(t *testing.T) {
		if _, err := env.e.Sign(context.Background(), userCT, "missing", nil); !errors.Is(err, ErrRoleNotFound) {
			t.Errorf("missing role: got %v", err)
		}
		if _, err := env.e.Sign(context.Background(), hostCT, "eng", nil); !errors.Is(err, ErrWrongType) {
			t.Errorf("user role for host keys: got %v", err)
		}
		many := make([]*pb.SSHSignItem, 1001)
		if _, err := env.e.Sign(context.Background(), userCT, "eng", many); !errors.Is(err, ErrTooManyItems) {
			t.Errorf("too many items: got %v", err)
		}
	})
}

func TestTemplates(t *testing.T) {
	tests := []struct {
		pattern string
		caller  Caller
		in      string
		want    bool
	}{
		{"{{identity.name}}", Caller{Name: "alice"}, "alice", true},
		{"{{identity.name}}", Caller{Name: "alice"}, "alice2", false},
		{"{{ identity.name }}-adm", Caller{Name: "alice"}, "alice-adm", true},
		{"*.example.com", Caller{}, "web1.example.com", true},
		{"*.example.com", Caller{}, "example.com", false},
		{"*.example.com", Caller{}, "evil.com.example.org", false},
		// `*` stays within one label, as PKI's globs; `**` crosses labels.
		{"*.example.com", Caller{}, "a.b.example.com", false},
		{"*.example.com", Caller{}, ".example.com", true}, // an empty label is the principal check's business
		{"**.example.com", Caller{}, "a.b.example.com", true},
		{"**.example.com", Caller{}, "evil.example.com.attacker.net", false},
		{"web-*", Caller{}, "web-1.prod", false},
		{"web-**", Caller{}, "web-1.prod", true},
		{"db*.*.internal", Caller{}, "db1.eu.internal", true},
		{"db*.*.internal", Caller{}, "db1.eu.x.internal", false},
		{"{{identity.name}}", Caller{Name: "a*"}, "ab", false},
		{"{{identity.name}}", Caller{}, "", false},
		{"{{identity.metadata.team}}-*", Caller{Metadata: map[string]string{"team": "db"}}, "db-ro", true},
		{"*a*a*a*a*a*a*a*a*a*a*b", Caller{}, strings.Repeat("a", 255), false}, // linear, not exponential
		{"*a*a*a*a*a*a*a*a*a*a*b", Caller{}, strings.Repeat("a", 250) + "b", true},
	}
	if _, err := parsePattern("a***b", true); err == nil {
		t.Errorf(`parsePattern("a***b"): no error, want one (* or ** only)`)
	}
	for _, tc := range tests {
		t.Run(tc.pattern+"/"+tc.in[:min(len(tc.in), 20)], func(t *testing.T) {
			toks, err := parsePattern(tc.pattern, true)
			if err != nil {
				t.Fatal(err)
			}
			x, ok := expand(toks, tc.caller)
			got := ok && match(x, tc.in)
			if got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzPattern checks the principal pattern parser: no panics; a parsed
// pattern without wildcards matches exactly its own expansion; an expanded
// identity value is always literal.
func FuzzPattern(f *testing.F) {
	for _, s := range []string{"{{identity.name}}", "*.example.com", "**.example.com", "team-{{identity.metadata.team}}-*", "{{", "}}", "a{{identity.name}}b", "***"} {
		f.Add(s, "alice")
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		toks, err := parsePattern(pattern, true)
		if err != nil {
			return
		}
		x, ok := expand(toks, Caller{Name: name, Metadata: map[string]string{"team": name}})
		if !ok {
			return
		}
		wild := false
		for _, tk := range x {
			wild = wild || tk.kind == tokWild || tk.kind == tokWildAny
		}
		if !wild && !match(x, literal(x)) {
			t.Fatalf("%q does not match its own expansion %q", pattern, literal(x))
		}
		if strings.Contains(name, "*") && validPrincipal(name) == nil {
			t.Fatalf("name %q with a wildcard was accepted as a principal", name)
		}
	})
}
