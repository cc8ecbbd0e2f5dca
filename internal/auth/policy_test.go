package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func TestParsePolicyDocument(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		wantErr bool
		rules   int
	}{
		{"yaml", "rules:\n  - resource: transit/keys/payments-*\n    capabilities: [encrypt, decrypt]\n  - resource: transit/keys/payments-legacy\n    capabilities: [encrypt]\n    effect: deny\n", false, 2},
		{"json", `{"rules":[{"resource":"pki/roles/web","capabilities":["issue"]}]}`, false, 1},
		{"empty document", "", false, 0},
		{"unknown capability", "rules:\n  - resource: a\n    capabilities: [launch]\n", true, 0},
		{"unknown effect", "rules:\n  - resource: a\n    capabilities: [read]\n    effect: maybe\n", true, 0},
		{"unknown field", "rules:\n  - resource: a\n    capabilities: [read]\n    path: b\n", true, 0},
		{"no capabilities", "rules:\n  - resource: a\n", true, 0},
		{"empty resource", "rules:\n  - resource: \"\"\n    capabilities: [read]\n", true, 0},
		{"space in resource", "rules:\n  - resource: \"a b\"\n    capabilities: [read]\n", true, 0},
		{"not yaml", "rules: [", true, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParsePolicyDocument("p1", []byte(c.doc))
			if (err != nil) != c.wantErr {
				t.Fatalf("got err %v, want error %v", err, c.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("got %v, want ErrInvalid", err)
				}
				return
			}
			if got := len(p.GetRules()); got != c.rules {
				t.Errorf("got %d rules, want %d", got, c.rules)
			}
			// Round trip through the YAML form.
			back, err := ParsePolicyDocument("p1", FormatPolicyDocument(p))
			if err != nil || len(back.GetRules()) != c.rules {
				t.Errorf("round trip: got %v (%d rules), want %d rules", err, len(back.GetRules()), c.rules)
			}
		})
	}
	t.Run("bad name", func(t *testing.T) {
		if _, err := ParsePolicyDocument("Bad Name", nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("got %v, want ErrInvalid", err)
		}
	})
}

func FuzzParsePolicyDocument(f *testing.F) {
	f.Add([]byte("rules:\n  - resource: transit/keys/*\n    capabilities: [encrypt]\n    effect: deny\n"))
	f.Add([]byte(`{"rules":[{"resource":"*","capabilities":["admin"]}]}`))
	f.Add([]byte("rules: &a [*a]"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := ParsePolicyDocument("fuzz", doc)
		if err != nil {
			return
		}
		if err := ValidatePolicy(p); err != nil {
			t.Fatalf("parsed policy does not validate: %v", err)
		}
		c := compile(p)
		c.decide(CapRead, "transit/keys/x")
	})
}

func writePolicy(t *testing.T, p *Policies, name, doc string) {
	t.Helper()
	pol, err := ParsePolicyDocument(name, []byte(doc))
	if err != nil {
		t.Fatalf("ParsePolicyDocument(%s): %v", name, err)
	}
	if _, err := p.Put(context.Background(), pol); err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
}

// TestEveryCapability: for each capability, a policy granting exactly it on
// one resource allows it there, and denies every other capability, and it on
// other resources.
func TestEveryCapability(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ctx := context.Background()
	for _, c := range AllCapabilities {
		name := "cap-" + strings.ReplaceAll(string(c), "-", "")
		writePolicy(t, a.Policies, name, "rules:\n  - resource: transit/keys/payments-*\n    capabilities: ["+string(c)+"]\n")
	}
	for _, c := range AllCapabilities {
		name := "cap-" + strings.ReplaceAll(string(c), "-", "")
		t.Run(string(c), func(t *testing.T) {
			for _, other := range AllCapabilities {
				got, err := a.Policies.Allowed(ctx, []string{name}, other, "transit/keys/payments-eu")
				if err != nil {
					t.Fatal(err)
				}
				if want := other == c; got != want {
					t.Errorf("%s asking %s on transit/keys/payments-eu: got %v, want %v", name, other, got, want)
				}
			}
			if got, _ := a.Policies.Allowed(ctx, []string{name}, c, "transit/keys/orders"); got {
				t.Errorf("%s on transit/keys/orders: got allowed, want denied", c)
			}
			if got, _ := a.Policies.Allowed(ctx, nil, c, "transit/keys/payments-eu"); got {
				t.Errorf("no policies: got allowed, want denied (deny by default)")
			}
		})
	}
}

func TestDenyWins(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ctx := context.Background()
	writePolicy(t, a.Policies, "broad", "rules:\n  - resource: \"transit/*\"\n    capabilities: [encrypt, decrypt]\n")
	writePolicy(t, a.Policies, "no-legacy", "rules:\n  - resource: transit/keys/legacy\n    capabilities: [decrypt]\n    effect: deny\n")
	writePolicy(t, a.Policies, "self-contradiction", "rules:\n  - resource: \"*\"\n    capabilities: [sign]\n    effect: deny\n  - resource: \"*\"\n    capabilities: [sign]\n")
	cases := []struct {
		name     string
		policies []string
		cap      Capability
		resource string
		want     bool
	}{
		{"allow alone", []string{"broad"}, CapDecrypt, "transit/keys/legacy", true},
		{"deny in another policy wins", []string{"broad", "no-legacy"}, CapDecrypt, "transit/keys/legacy", false},
		{"deny first in list still wins", []string{"no-legacy", "broad"}, CapDecrypt, "transit/keys/legacy", false},
		{"deny is per capability", []string{"broad", "no-legacy"}, CapEncrypt, "transit/keys/legacy", true},
		{"deny is per resource", []string{"broad", "no-legacy"}, CapDecrypt, "transit/keys/other", true},
		{"deny before allow in one policy", []string{"self-contradiction"}, CapSign, "x", false},
		{"unknown policy grants nothing", []string{"nope"}, CapEncrypt, "transit/keys/a", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := a.Policies.Allowed(ctx, c.policies, c.cap, c.resource)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// TestPolicyCacheWatch: a change written by another Policies over the same
// store (another replica) reaches this one's cache through Watch.
func TestPolicyCacheWatch(t *testing.T) {
	a, s := newAuth(t, Config{})
	ctx := context.Background()
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	other, err := NewPolicies(wctx, s, keystore.CacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writePolicy(t, other, "p", "rules:\n  - resource: k\n    capabilities: [read]\n")
	if got, _ := a.Policies.Allowed(ctx, []string{"p"}, CapRead, "k"); !got {
		t.Fatalf("before change: got denied, want allowed")
	}
	writePolicy(t, other, "p", "rules:\n  - resource: k\n    capabilities: [list]\n")
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := a.Policies.Allowed(ctx, []string{"p"}, CapRead, "k")
		if !got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after change: still allowed after 5s, want denied")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := other.Delete(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	for {
		got, _ := a.Policies.Allowed(ctx, []string{"p"}, CapList, "k")
		if !got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after delete: still allowed, want denied")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := a.Policies.Get(ctx, "p"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after delete: got %v, want ErrNotFound", err)
	}
	names, err := a.Policies.List(ctx)
	if err != nil || len(names) != 0 {
		t.Errorf("List after delete: got %v, %v, want none", names, err)
	}
	_ = hsmgatev1.PolicyEffect_POLICY_EFFECT_DENY
}
