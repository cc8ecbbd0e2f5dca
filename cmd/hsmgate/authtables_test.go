package main

import (
	"testing"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/pki"
	"github.com/hsmgate/hsmgate/sshca"
	"github.com/hsmgate/hsmgate/transit"
)

// TestAuthTablesMerge: every package's rule table merges without a method
// claimed twice, and every rule is well formed (a known capability and a
// resource, or public, or authenticated-only), as the interceptor requires.
func TestAuthTablesMerge(t *testing.T) {
	tables := map[string]auth.Table{
		"server": server.SystemRules(), "auth": auth.AuthTable(),
		"transit": transit.AuthTable(), "pki": pki.AuthTable(), "sshca": sshca.AuthTable(),
	}
	var all []auth.Table
	for name, tab := range tables {
		if len(tab) == 0 {
			t.Errorf("%s: empty table", name)
		}
		all = append(all, tab)
	}
	merged, err := auth.Merge(all...)
	if err != nil {
		t.Fatalf("Merge: %v", err)
	}
	if _, err := auth.NewInterceptor(auth.Options{Table: merged, Authenticator: &auth.Authenticator{}, Policies: &auth.Policies{}}); err != nil {
		t.Errorf("NewInterceptor: %v", err)
	}
}
