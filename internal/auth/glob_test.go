package auth

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "transit/keys/a", true},
		{"transit/keys/payments-*", "transit/keys/payments-eu", true},
		{"transit/keys/payments-*", "transit/keys/payments-", true},
		{"transit/keys/payments-*", "transit/keys/payment", false},
		{"transit/keys/payments-*", "transit/keys/orders", false},
		{"transit/*", "transit/keys/a", true},     // '*' crosses '/'
		{"transit/*/a", "transit/keys/x/a", true}, // '*' crosses '/'
		{"transit/*/a", "transit/keys/b", false},
		{"pki/roles/web", "pki/roles/web", true},
		{"pki/roles/web", "pki/roles/web2", false},
		{"pki/roles/web", "pki/roles/we", false},
		{"*web*", "pki/roles/website", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXcYb", false},
		{"a**", "a", true},
		{"", "", true},
		{"", "a", false},
		{"ssh/roles/eng", "ssh/roles/ENG", false}, // case-sensitive
	}
	for _, c := range cases {
		t.Run(c.pattern+"~"+c.name, func(t *testing.T) {
			if got := Match(c.pattern, c.name); got != c.want {
				t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
			}
		})
	}
}

// globRegexp is the reference semantics: '*' is (?s:.*), all else literal.
func globRegexp(pattern string) *regexp.Regexp {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`^(?s:` + strings.Join(parts, ".*") + `)$`)
}

func FuzzMatch(f *testing.F) {
	f.Add("transit/keys/payments-*", "transit/keys/payments-eu")
	f.Add("*a*b*", "xxaybz")
	f.Add("a*", "b")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if len(pattern) > 64 || len(name) > 256 || !utf8.ValidString(pattern) || !utf8.ValidString(name) {
			return // the regexp reference needs UTF-8; resources are printable ASCII anyway
		}
		got := Match(pattern, name)
		want := globRegexp(pattern).MatchString(name)
		if got != want {
			t.Errorf("Match(%q, %q) = %v, want %v (regexp)", pattern, name, got, want)
		}
	})
}

func FuzzBearerValue(f *testing.F) {
	f.Add("Bearer hgs.abc")
	f.Add("bearer   x")
	f.Add("Basic Zm9v")
	f.Fuzz(func(t *testing.T, h string) {
		v, err := bearerValue(h)
		if err == nil && (len(h) < 7 || !strings.EqualFold(h[:7], "bearer ")) {
			t.Fatalf("accepted %q as %q", h, v)
		}
	})
}
