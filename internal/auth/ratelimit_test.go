package auth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRateLimitThroughput: a limit of N/s lets through N per second (plus the
// initial burst) over a few seconds of a fake clock, counted through the real
// interceptor; refusals are ResourceExhausted. The clock is the limiter's, so
// the count does not depend on how busy the machine is.
func TestRateLimitThroughput(t *testing.T) {
	// The bucket starts full: the burst is added to the expected count.
	const n, burst = 100.0, 20
	a, _ := newAuth(t, Config{RateLimits: RateLimitConfig{Identity: Limit{Rate: n, Burst: burst}}})
	ic, err := a.Interceptor(Table{"/test.Pipe/Echo": {Capability: CapEncrypt, Resource: pipeResource}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writePolicy(t, a.Policies, "payments", "rules:\n  - resource: transit/keys/payments-*\n    capabilities: [encrypt]\n")
	secret, _, err := a.Tokens.Create(context.Background(), rootID, TokenRequest{Policies: []string{"payments"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+secret))
	info := &grpc.UnaryServerInfo{FullMethod: "/test.Pipe/Echo"}
	var handled, ok, refused int
	h := func(context.Context, any) (any, error) { handled++; return nil, nil }
	req := wrapperspb.String("payments-eu")
	unary := ic.Unary()
	t0 := time.Unix(1000, 0)
	var now time.Time
	a.Limiter.now = func() time.Time { return now }
	// Every millisecond of three fake seconds, ask until refused.
	const secs = 3
	for step := 0; step <= secs*1000; step++ {
		now = t0.Add(time.Duration(step) * time.Millisecond)
		for {
			_, err := unary(ctx, req, info, h)
			if code := status.Code(err); code == codes.ResourceExhausted {
				refused++
				break
			} else if code != codes.OK {
				t.Fatalf("got %v, want OK or ResourceExhausted", err)
			}
			ok++
			if ok > 10*(n*secs+burst) {
				t.Fatalf("over %d allowed: the limit is not applied", ok)
			}
		}
	}
	want := n*secs + burst
	if math.Abs(float64(ok)-want) > 1 {
		t.Errorf("got %d allowed in %ds, want %.0f", ok, secs, want)
	}
	if refused == 0 {
		t.Errorf("got no refusals, want some (attempts outpaced the limit)")
	}
	if handled != ok {
		t.Errorf("handler ran %d times, want %d", handled, ok)
	}
}

func TestRateLimiterRules(t *testing.T) {
	cfg := RateLimitConfig{
		Identity:  Limit{Rate: 1, Burst: 2},
		Policies:  map[string]Limit{"bulk": {Rate: 1000, Burst: 50}},
		Resources: []ResourceLimit{{Match: "transit/keys/hot-*", Limit: Limit{Rate: 1, Burst: 3}}},
	}
	burst := func(r *RateLimiter, id *Identity, res string) int {
		n := 0
		for range 100 {
			if err := r.Allow(id, res); err != nil {
				if !errors.Is(err, ErrRateLimited) {
					t.Fatalf("got %v, want ErrRateLimited", err)
				}
				break
			}
			n++
		}
		return n
	}
	cases := []struct {
		name string
		id   *Identity
		res  string
		want int
	}{
		{"default identity limit", &Identity{Name: "a", Kind: KindToken}, "x", 2},
		{"policy override", &Identity{Name: "b", Kind: KindToken, Policies: []string{"other", "bulk"}}, "x", 50},
		{"resource limit", &Identity{Name: "c", Kind: KindToken, Policies: []string{"bulk"}}, "transit/keys/hot-1", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewRateLimiter(cfg)
			r.now = func() time.Time { return time.Unix(1000, 0) } // frozen: only the burst passes
			if got := burst(r, c.id, c.res); got != c.want {
				t.Errorf("got %d allowed, want %d", got, c.want)
			}
		})
	}
	t.Run("bounded buckets", func(t *testing.T) {
		c := cfg
		c.MaxBuckets = 10
		r := NewRateLimiter(c)
		for i := range 1000 {
			r.Allow(&Identity{Name: fmt.Sprint(i)}, "x")
		}
		if got := r.lru.Len(); got != 10 {
			t.Errorf("got %d buckets, want 10", got)
		}
	})
}

func TestHTTPMiddleware(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ic, err := a.Interceptor(Table{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writePolicy(t, a.Policies, "web", "rules:\n  - resource: pki/roles/web\n    capabilities: [issue]\n")
	good, _, _ := a.Tokens.Create(context.Background(), rootID, TokenRequest{Policies: []string{"web"}})
	other, _, _ := a.Tokens.Create(context.Background(), rootID, TokenRequest{})
	var who string
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := FromContext(r.Context())
		who = id.Name
		w.WriteHeader(http.StatusNoContent)
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/pki/sign/", ic.HTTP(HTTPRule{Capability: CapIssue, Resource: func(r *http.Request) (string, error) {
		return "pki/roles/" + r.URL.Path[len("/v1/pki/sign/"):], nil
	}}, next))
	mux.Handle("/v1/pki/ca", ic.HTTP(HTTPRule{Public: true}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	cases := []struct {
		name, path, header, value string
		want                      int
	}{
		{"no credentials", "/v1/pki/sign/web", "", "", http.StatusUnauthorized},
		{"bearer allowed", "/v1/pki/sign/web", "Authorization", "Bearer " + good, http.StatusNoContent},
		{"vault header allowed", "/v1/pki/sign/web", "X-Vault-Token", good, http.StatusNoContent},
		{"other role denied", "/v1/pki/sign/db", "Authorization", "Bearer " + good, http.StatusForbidden},
		{"token without policy", "/v1/pki/sign/web", "Authorization", "Bearer " + other, http.StatusForbidden},
		{"basic auth refused", "/v1/pki/sign/web", "Authorization", "Basic Zm9vOmJhcg==", http.StatusUnauthorized},
		{"public endpoint", "/v1/pki/ca", "", "", http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
			if c.header != "" {
				req.Header.Set(c.header, c.value)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("got %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
	if who == "" {
		t.Errorf("handler saw no identity")
	}
}

func TestHTTPGate(t *testing.T) {
	a, _ := newAuth(t, Config{})
	var gate HTTPGate
	h := gate.Wrap(HTTPRule{Capability: CapRead, Path: "x"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before Set: got %d, want 503", rec.Code)
	}
	ic, err := a.Interceptor(Table{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gate.Set(ic)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("after Set, no credentials: got %d, want 401", rec.Code)
	}
}
