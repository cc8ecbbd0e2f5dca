package auth

import (
	"errors"
	"strings"
	"testing"
)

// TestPolicyDocumentErrorsNameFieldAndLine: a mistake in a policy file is
// reported with its line and the field in words, never as a Go type.
func TestPolicyDocumentErrorsNameFieldAndLine(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"misspelled field", "rules:\n  - resource: transit/keys/x\n    capabilites: [encrypt]\n",
			[]string{`line 3`, `unknown field "capabilites" in rule 1`, `did you mean "capabilities"?`}},
		{"misspelled top field", "rule:\n  - resource: a\n    capabilities: [read]\n",
			[]string{`line 1`, `unknown field "rule" in the policy`, `did you mean "rules"?`}},
		{"capabilities not a list", "rules:\n  - resource: a\n    capabilities: read\n",
			[]string{`line 3`, `field "capabilities" of rule 1 must be a list`}},
		{"rules not a list", "rules: transit\n", []string{`line 1`, `field "rules" must be a list`}},
		{"unknown capability", "rules:\n  - resource: a\n    capabilities: [read]\n  - resource: b\n    capabilities:\n      - read\n      - launch\n",
			[]string{`line 7`, `unknown capability "launch" in rule 2`}},
		{"field twice", "rules:\n  - resource: a\n    resource: b\n    capabilities: [read]\n", []string{`line 3`, `field "resource" given twice in rule 1`}},
		{"rule without capabilities", "rules:\n  - resource: a\n", []string{`line 2`, `rule 1: no capabilities`}},
		{"unknown effect", "rules:\n  - resource: a\n    capabilities: [read]\n    effect: maybe\n", []string{`line 4`, `effect "maybe" of rule 1`}},
		{"alias", "rules:\n  - &r\n    resource: a\n    capabilities: [read]\n  - *r\n", []string{`line 5`, `rule 2 must be a mapping`}},
		{"json misspelled", "{\"rules\": [{\"resource\": \"a\",\n \"capabilitys\": [\"read\"]}]}", []string{`line 2`, `unknown field "capabilitys" in rule 1`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePolicyDocument("p", []byte(c.doc))
			if err == nil {
				t.Fatalf("got no error, want one containing %q", c.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
			for _, bad := range []string{"struct {", "yaml:\"", "[]string"} {
				if strings.Contains(err.Error(), bad) {
					t.Errorf("got %q: a Go type in the message", err)
				}
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"capabilites", "capabilities", 1}, {"rule", "rules", 1}, {"abc", "xyz", 3}, {"effect", "effect", 0}} {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q): got %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
