package errs_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/errs"
)

var errNotFound = errs.New(errs.NotFound, "transit: key not found")

func TestGRPCStatus(t *testing.T) {
	long := strings.Repeat("k", 100<<10)
	auditPath := "/var/log/hsmgate/audit.log"
	// What audit.Log.Write returns on a full disk, as the auth interceptor wraps it.
	auditErr := fmt.Errorf("auth: %w", fmt.Errorf("audit: write: %w: %v", audit.ErrUnavailable,
		&fs.PathError{Op: "write", Path: auditPath, Err: syscall.ENOSPC}))
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantMsg  string
	}{
		{"nil", nil, codes.OK, ""},
		{"kind keeps its text", fmt.Errorf("transit: key %q: %w", "k1", errNotFound), codes.NotFound, `transit: key "k1": transit: key not found`},
		{"internal hides its text", errors.New("open /secret/path: denied"), codes.Internal, "internal error"},
		{"audit failure hides the path", auditErr, codes.Unavailable, "audit: log unavailable"},
		{"unavailable kind alone", fmt.Errorf("x: %w: /some/path", errs.Unavailable), codes.Unavailable, "unavailable"},
		{"status passes", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied, "no"},
		{"long status is cut", status.Error(codes.InvalidArgument, long), codes.InvalidArgument, strings.Repeat("k", errs.MaxMessageBytes) + errs.TruncatedMarker},
		{"long key name is cut", fmt.Errorf("transit: key %q: %w", long, errNotFound), codes.NotFound, `transit: key "` + strings.Repeat("k", errs.MaxMessageBytes-len(`transit: key "`)) + errs.TruncatedMarker},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := errs.GRPCStatus(tc.err)
			if st.Code() != tc.wantCode {
				t.Errorf("code: got %v, want %v", st.Code(), tc.wantCode)
			}
			if st.Message() != tc.wantMsg {
				t.Errorf("message: got %.300q, want %.300q", st.Message(), tc.wantMsg)
			}
			if strings.Contains(st.Message(), auditPath) {
				t.Errorf("message %q names the audit file", st.Message())
			}
			if n := len(st.Message()); n > errs.MaxMessageBytes+len(errs.TruncatedMarker) {
				t.Errorf("message is %d bytes, want at most %d", n, errs.MaxMessageBytes+len(errs.TruncatedMarker))
			}
		})
	}
	t.Run("the cause still matches", func(t *testing.T) {
		if !errors.Is(auditErr, audit.ErrUnavailable) || !strings.Contains(auditErr.Error(), auditPath) {
			t.Errorf("the error for the server log lost its cause: %v", auditErr)
		}
	})
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc" + errs.TruncatedMarker},
		{"", 0, ""},
		{"ab", 0, errs.TruncatedMarker},
		{"aé", 2, "a" + errs.TruncatedMarker}, // never half a character
		{"日本語", 4, "日" + errs.TruncatedMarker},
		{"x", -1, errs.TruncatedMarker},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q/%d", tc.s, tc.n), func(t *testing.T) {
			got := errs.Truncate(tc.s, tc.n)
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("got invalid UTF-8 %q", got)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	if got, want := errs.Quote(`a "b"`), `"a \"b\""`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	got := errs.Quote(strings.Repeat("z", 100<<10) + "\n")
	if want := `"` + strings.Repeat("z", errs.MaxQuoteBytes) + errs.TruncatedMarker + `"`; got != want {
		t.Errorf("got %.100s (%d bytes), want %.100s", got, len(got), want)
	}
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		err      error
		wantCode int
		wantMsg  string
	}{
		{fmt.Errorf("x: %w", errNotFound), 404, "x: transit: key not found"},
		{errs.New(errs.ResourceExhausted, "rate limited"), 429, "rate limited"},
		{fmt.Errorf("write /var/log/a: %w", errs.New(errs.Unavailable, "audit: log unavailable")), 503, "audit: log unavailable"},
		{errors.New("boom at /secret"), 500, "internal error"},
		{status.Error(codes.PermissionDenied, "no"), 403, "no"},
		{errs.New(errs.InvalidArgument, strings.Repeat("n", 10000)), 400, strings.Repeat("n", errs.MaxMessageBytes) + errs.TruncatedMarker},
		// A status whose code the table does not name is an internal fault:
		// its message (perhaps a backend's) is not passed on.
		{status.Error(codes.DataLoss, "disk /dev/sda1 corrupt"), 500, "internal error"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d", tc.wantCode), func(t *testing.T) {
			code, msg := errs.HTTPStatus(tc.err)
			if code != tc.wantCode || msg != tc.wantMsg {
				t.Errorf("got %d %.80q, want %d %.80q", code, msg, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

// TestVaultHTTPStatus: the Vault door's table answers as Vault does where
// it differs from hsmgate's own (403 for a bad token, 400 for a failed
// precondition, 412 for a lost race), from the same GRPCStatus.
func TestVaultHTTPStatus(t *testing.T) {
	tests := []struct {
		err      error
		wantCode int
		wantMsg  string
	}{
		{errs.New(errs.Unauthenticated, "bad token"), 403, "bad token"},
		{errs.New(errs.PermissionDenied, "no"), 403, "no"},
		{fmt.Errorf("x: %w", errs.New(errs.FailedPrecondition, "key disabled")), 400, "x: key disabled"},
		{errs.New(errs.Aborted, "lost race"), 412, "lost race"},
		{errs.New(errs.Unimplemented, "no such path"), 404, "no such path"},
		{context.DeadlineExceeded, 503, "deadline exceeded"},
		{errors.New("boom at /secret"), 500, "internal error"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d %s", tc.wantCode, tc.wantMsg), func(t *testing.T) {
			code, msg := errs.VaultHTTPStatus(tc.err)
			if code != tc.wantCode || msg != tc.wantMsg {
				t.Errorf("got %d %q, want %d %q", code, msg, tc.wantCode, tc.wantMsg)
			}
		})
	}
}
