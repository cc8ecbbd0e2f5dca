package auth

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/audit"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func openAudit(t *testing.T) (*audit.Log, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(audit.Config{Path: path, MaxBytes: -1}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func auditLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// A flood of unauthenticated requests (and of requests over a rate limit)
// costs a bounded number of audit bytes: refusals are counted in a metric
// and sampled in the audit log, and the next line written says how many were
// left out. 10,000 refusals in one second of a frozen clock write at most
// DefaultRefusalAuditRate lines.
func TestRefusalFloodWritesBoundedAudit(t *testing.T) {
	const flood = 10000
	a, _ := newAuth(t, Config{RateLimits: RateLimitConfig{Identity: Limit{Rate: 1, Burst: 1}}})
	l, path := openAudit(t)
	ic, err := a.Interceptor(Table{"/test.Pipe/Echo": {Capability: CapEncrypt, Resource: pipeResource}}, l)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(5000, 0)
	ic.now = func() time.Time { return now }
	a.Limiter.now = ic.now
	reg := prometheus.NewRegistry()
	if err := reg.Register(ic); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, a.Policies, "payments", "rules:\n  - resource: transit/keys/payments-*\n    capabilities: [encrypt]\n")
	secret, _, err := a.Tokens.Create(context.Background(), rootID, TokenRequest{Policies: []string{"payments"}})
	if err != nil {
		t.Fatal(err)
	}
	call := func(ctx context.Context) error {
		_, err := ic.Unary()(ctx, wrapperspb.String("payments-eu"), &grpc.UnaryServerInfo{FullMethod: "/test.Pipe/Echo"},
			func(context.Context, any) (any, error) { return nil, nil })
		return err
	}
	anon := context.Background()
	bad := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer hgs.forged"))
	withTok := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+secret))
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}

	t.Run("unauthenticated", func(t *testing.T) {
		before := size()
		for n := range flood {
			ctx := anon
			if n%2 == 1 {
				ctx = bad
			}
			if err := call(ctx); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("got %v, want Unauthenticated", err)
			}
		}
		written := size() - before
		if max := int64(DefaultRefusalAuditRate * 1024); written > max {
			t.Errorf("got %d audit bytes for %d refusals, want at most %d", written, flood, max)
		}
		t.Logf("%d unauthenticated refusals: %d audit bytes", flood, written)
		if got := counterValue(t, ic.ref.total.WithLabelValues("unauthenticated")); got != flood {
			t.Errorf("refusals counted: got %v, want %d", got, flood)
		}
		if got, want := counterValue(t, ic.ref.suppressed.WithLabelValues("unauthenticated")), float64(flood-DefaultRefusalAuditRate); got != want {
			t.Errorf("suppressed counted: got %v, want %v", got, want)
		}
		now = now.Add(time.Second)
		if err := call(anon); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("got %v, want Unauthenticated", err)
		}
		lines := auditLines(t, path)
		last := lines[len(lines)-1]
		extra, _ := last["extra"].(map[string]any)
		if got, want := extra["suppressed"], fmt.Sprint(flood-DefaultRefusalAuditRate); got != want {
			t.Errorf("next line's extra.suppressed: got %v, want %v (line %v)", got, want, last)
		}
	})
	t.Run("rate limited", func(t *testing.T) {
		before := size()
		refused := 0
		for range flood {
			switch err := call(withTok); status.Code(err) {
			case codes.ResourceExhausted:
				refused++
			case codes.OK:
			default:
				t.Fatalf("got %v", err)
			}
		}
		written := size() - before
		// The allowed request writes two lines; the refusals at most the sampled ones.
		if max := int64((DefaultRefusalAuditRate + 2) * 1024); written > max {
			t.Errorf("got %d audit bytes for %d refusals, want at most %d", written, refused, max)
		}
		t.Logf("%d rate-limited refusals: %d audit bytes", refused, written)
		if got := counterValue(t, ic.ref.total.WithLabelValues("rate_limited")); got != float64(refused) {
			t.Errorf("refusals counted: got %v, want %d", got, refused)
		}
	})
	t.Run("HTTP unauthenticated", func(t *testing.T) {
		now = now.Add(time.Hour)
		before := size()
		h := ic.HTTP(HTTPRule{Capability: CapRead, Path: "sys/x"}, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		for range 1000 {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401", w.Code)
			}
		}
		if written, max := size()-before, int64(DefaultRefusalAuditRate*1024); written > max {
			t.Errorf("got %d audit bytes, want at most %d", written, max)
		}
	})
}

// An Internal error from a handler is logged once by the interceptor, with
// its cause and the request id; the client sees "internal error" only.
func TestInternalErrorLoggedWithCauseAndRequestID(t *testing.T) {
	a, _ := newAuth(t, Config{})
	var buf bytes.Buffer
	l, _ := openAudit(t)
	ic, err := NewInterceptor(Options{
		Table:         Table{"/test.Pipe/Echo": {AuthenticatedOnly: true}},
		Authenticator: a.Authenticator, Policies: a.Policies, Audit: l,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := a.Tokens.Create(context.Background(), rootID, TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("bolt: page 42 checksum mismatch")
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+secret, "x-request-id", "req-internal-1"))
	var seen string
	_, err = ic.Unary()(ctx, wrapperspb.String("k"), &grpc.UnaryServerInfo{FullMethod: "/test.Pipe/Echo"},
		func(ctx context.Context, _ any) (any, error) {
			seen, _ = RequestID(ctx)
			return nil, fmt.Errorf("transit: load key: %w", cause)
		})
	st, _ := status.FromError(err)
	if st.Code() != codes.Internal || strings.Contains(st.Message(), "checksum") {
		t.Errorf("client got %v %q, want Internal without the cause", st.Code(), st.Message())
	}
	if seen != "req-internal-1" {
		t.Errorf("handler's request id: got %q, want req-internal-1", seen)
	}
	var lines []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if s != "" && json.Unmarshal([]byte(s), &m) == nil && m["msg"] == "internal error" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("got %d internal error log lines, want 1: %s", len(lines), buf.String())
	}
	if got := lines[0]["error"]; !strings.Contains(fmt.Sprint(got), "checksum mismatch") {
		t.Errorf("logged error: got %v, want the cause", got)
	}
	if got := lines[0]["request_id"]; got != "req-internal-1" {
		t.Errorf("logged request id: got %v, want req-internal-1", got)
	}
	if got := lines[0]["grpc.method"]; got != "/test.Pipe/Echo" {
		t.Errorf("logged method: got %v", got)
	}
}

func TestValidRequestID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"trace-01HZX.42_a", true},
		{"0f8fad5b-d9cb-469f-a165-70867728950e", true},
		{strings.Repeat("a", MaxRequestIDLen), true},
		{strings.Repeat("a", MaxRequestIDLen+1), false},
		{"", false},
		{"a b", false},
		{`a"b`, false},
		{"a:b", false},
		{"a\nb", false},
		{"é", false},
	} {
		if got := validRequestID(tc.id); got != tc.want {
			t.Errorf("%q: got %v, want %v", tc.id, got, tc.want)
		}
	}
}

// The HTTP door applies the same check: a hostile X-Request-Id is replaced,
// a valid one kept, and the id used is returned in the response.
func TestHTTPRequestID(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ic, err := a.Interceptor(Table{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := a.Tokens.Create(context.Background(), rootID, TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seen string
	h := ic.HTTP(HTTPRule{AuthenticatedOnly: true, Path: "sys/x"}, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen, _ = RequestID(r.Context())
	}))
	for _, tc := range []struct{ sent string }{{`x" evil ` + strings.Repeat("z", 150)}, {"req-7"}} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.Header.Set("Authorization", "Bearer "+secret)
		r.Header.Set("X-Request-Id", tc.sent)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		got := w.Header().Get("X-Request-Id")
		if !validRequestID(got) || got != seen {
			t.Errorf("sent %.20q: got header %q, handler saw %q; want one valid id", tc.sent, got, seen)
		}
		if valid := validRequestID(tc.sent); valid != (got == tc.sent) {
			t.Errorf("sent %.20q: got %q", tc.sent, got)
		}
	}
}

// An audit log that cannot be written fails the request Unavailable with the
// sentinel's message only (no path or cause reaches the client), and the
// cause is logged once with the request id.
func TestAuditFailureCauseLoggedNotAnswered(t *testing.T) {
	a, _ := newAuth(t, Config{})
	var buf bytes.Buffer
	l, path := openAudit(t)
	ic, err := NewInterceptor(Options{
		Table:         Table{"/test.Pipe/Echo": {AuthenticatedOnly: true}},
		Authenticator: a.Authenticator, Policies: a.Policies, Audit: l,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := a.Tokens.Create(context.Background(), rootID, TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil { // the log treats it as a full disk
		t.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+secret, "x-request-id", "req-audit-1"))
	ran := false
	_, err = ic.Unary()(ctx, wrapperspb.String("k"), &grpc.UnaryServerInfo{FullMethod: "/test.Pipe/Echo"},
		func(context.Context, any) (any, error) { ran = true; return nil, nil })
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable || strings.Contains(st.Message(), filepath.Dir(path)) || strings.Contains(st.Message(), "deleted") || ran {
		t.Errorf("client got %v %q (handler ran: %v), want Unavailable without the path, handler not run", st.Code(), st.Message(), ran)
	}
	var found bool
	for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) == nil && m["msg"] == "unavailable" && m["request_id"] == "req-audit-1" &&
			strings.Contains(fmt.Sprint(m["error"]), "deleted or replaced") {
			found = true
		}
	}
	if !found {
		t.Errorf("no log line with the cause (the audit path) and the request id:\n%s", buf.String())
	}
}
