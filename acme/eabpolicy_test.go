package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestEABPolicy: an account bound with an EAB key made with a policy may
// only order names under the key's allowed domains (rejectedIdentifier
// otherwise, even for names the role allows) and at most max_orders_per_day
// new orders per UTC day (rateLimited past it; refused orders do not count).
func TestEABPolicy(t *testing.T) {
	clock := clocktest.New(time.Now().UTC())
	e := newEnv(t, envOpts{eab: true, modify: func(c *Config) { c.Now = clock.Now }})
	ctx := context.Background()
	svc := NewService(e.srv)

	t.Run("bad policies refused", func(t *testing.T) {
		for name, req := range map[string]*pb.CreateEABKeyRequest{
			"not a DNS name": {Directory: "main", AllowedDomains: []string{"exa mple.com"}},
			"wildcard":       {Directory: "main", AllowedDomains: []string{"*.example.com"}},
			"empty label":    {Directory: "main", AllowedDomains: []string{"example..com"}},
			"too many":       {Directory: "main", AllowedDomains: strings.Split(strings.Repeat("a.com,", maxAllowedDomains+1), ",")[:maxAllowedDomains+1]},
			"too many/day":   {Directory: "main", MaxOrdersPerDay: maxOrdersPerDayCap + 1},
		} {
			t.Run(name, func(t *testing.T) {
				if _, err := svc.CreateEABKey(ctx, req); !errors.Is(err, ErrInvalid) {
					t.Fatalf("got %v, want ErrInvalid", err)
				}
			})
		}
	})

	r, err := svc.CreateEABKey(ctx, &pb.CreateEABKeyRequest{
		Directory: "main", AllowedDomains: []string{"Shop.Example.com", ".shop.example.com"}, MaxOrdersPerDay: 2,
	})
	if err != nil {
		t.Fatalf("CreateEABKey: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := e.acmeClient(t, key)
	// x/crypto/acme retries 429 after Retry-After (here: next midnight); see the problem instead.
	c.RetryBackoff = func(int, *http.Request, *http.Response) time.Duration { return -1 }
	hkey, _ := base64.RawURLEncoding.DecodeString(r.HmacKey)
	if _, err := c.Register(ctx, &acme.Account{
		ExternalAccountBinding: &acme.ExternalAccountBinding{KID: r.KeyId, Key: hkey},
	}, acme.AcceptTOS); err != nil {
		t.Fatalf("Register: %v", err)
	}

	for name, ids := range map[string][]acme.AuthzID{
		"name the role allows, outside the policy": acme.DomainIDs("www.example.com"),
		"suffix without a dot boundary":            acme.DomainIDs("badshop.example.com"),
		"parent of the allowed domain":             acme.DomainIDs("example.com"),
		"one name outside among allowed ones":      acme.DomainIDs("a.shop.example.com", "www.example.com"),
		"IP identifier":                            acme.IPIDs("127.0.0.1"),
	} {
		t.Run("refused: "+name, func(t *testing.T) {
			before := e.snapshot(t)
			_, err := c.AuthorizeOrder(ctx, ids)
			wantProblem(t, err, "rejectedIdentifier")
			if after := e.snapshot(t); len(after) != len(before) {
				t.Errorf("keystore entries: got %d, want %d (unchanged)", len(after), len(before))
			}
		})
	}

	t.Run("allowed names, then the daily cap", func(t *testing.T) {
		e.orderCert(t, c, "shop.example.com", "www.shop.example.com")
		if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("deep.www.shop.example.com")); err != nil {
			t.Fatalf("second order of the day: %v", err)
		}
		_, err := c.AuthorizeOrder(ctx, acme.DomainIDs("api.shop.example.com"))
		wantProblem(t, err, "rateLimited")
		var ae *acme.Error
		errors.As(err, &ae)
		if ra := ae.Header.Get("Retry-After"); ra == "" {
			t.Errorf("rateLimited without Retry-After")
		}
	})

	t.Run("next UTC day", func(t *testing.T) {
		clock.Advance(24 * time.Hour)
		c := e.acmeClient(t, key) // the old client's cached nonces have expired
		if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("api.shop.example.com")); err != nil {
			t.Fatalf("order on the next day: %v", err)
		}
	})

	t.Run("a key without policy limits nothing", func(t *testing.T) {
		r2, err := svc.CreateEABKey(ctx, &pb.CreateEABKeyRequest{Directory: "main"})
		if err != nil {
			t.Fatal(err)
		}
		k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c2 := e.acmeClient(t, k2)
		h2, _ := base64.RawURLEncoding.DecodeString(r2.HmacKey)
		if _, err := c2.Register(ctx, &acme.Account{
			ExternalAccountBinding: &acme.ExternalAccountBinding{KID: r2.KeyId, Key: h2},
		}, acme.AcceptTOS); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := c2.AuthorizeOrder(ctx, acme.DomainIDs("www.example.com")); err != nil {
				t.Fatalf("order: %v", err)
			}
		}
	})
}
