package acme

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
)

// TestFailMapsThroughErrs: an error that is not a *Problem gets its status
// from errs.HTTPStatus (the one error map), its client-safe message for a
// caller's mistake, and nothing of an internal fault's cause.
func TestFailMapsThroughErrs(t *testing.T) {
	s := &Server{cfg: Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantType   string
		wantDetail string
		wantRetry  string
	}{
		{"store unavailable", fmt.Errorf("acme: load order: %w", keystore.ErrUnavailable), 503, "serverInternal", "keystore: unavailable", "5"},
		{"caller's mistake", errs.New(errs.InvalidArgument, "acme: bad thing"), 400, "malformed", "acme: bad thing", ""},
		{"not found", errs.New(errs.NotFound, "acme: no such order"), 404, "malformed", "acme: no such order", ""},
		{"rate limited", errs.New(errs.ResourceExhausted, "acme: slow down"), 429, "rateLimited", "acme: slow down", ""},
		{"internal fault", errors.New("open /var/lib/hsmgate/secret: permission denied"), 500, "serverInternal", "internal error", ""},
		{"a problem as is", errBadCSR("no SAN"), 400, "badCSR", "no SAN", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			s.fail(w, httptest.NewRequest(http.MethodPost, "/acme/x", nil), tc.err)
			var p Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if w.Code != tc.wantStatus || p.Type != ProblemNS+tc.wantType || p.Detail != tc.wantDetail {
				t.Errorf("got %d %s %q, want %d %s %q", w.Code, strings.TrimPrefix(p.Type, ProblemNS), p.Detail, tc.wantStatus, tc.wantType, tc.wantDetail)
			}
			if got := w.Header().Get("Retry-After"); got != tc.wantRetry {
				t.Errorf("Retry-After: got %q, want %q", got, tc.wantRetry)
			}
		})
	}
}
