package sshca

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// A pattern is an allowed or default principal after parsing: literal text,
// wildcards and identity variables. `*` matches within one DNS label (no
// '.'), as PKI's globs do: "*.example.com" matches "web.example.com", not
// "a.b.example.com". `**` matches across labels, for roles that mean it.
type token struct {
	kind int // tokLiteral, tokWild, tokWildAny, tokVar
	text string
}

const (
	tokLiteral = iota
	tokWild    // `*`: any run of characters other than '.'
	tokVar
	tokWildAny // `**`: any run of characters
)

// parseTemplate splits s into literal text and {{var}} references. vars
// checks each variable name.
func parseTemplate(s string, vars func(string) error) ([]token, error) {
	var out []token
	for s != "" {
		i := strings.Index(s, "{{")
		j := strings.Index(s, "}}")
		if i < 0 {
			if j >= 0 {
				return nil, errors.New("unmatched }}")
			}
			out = append(out, token{tokLiteral, s})
			break
		}
		if j >= 0 && j < i {
			return nil, errors.New("unmatched }}")
		}
		if i > 0 {
			out = append(out, token{tokLiteral, s[:i]})
		}
		s = s[i+2:]
		j = strings.Index(s, "}}")
		if j < 0 {
			return nil, errors.New("unterminated {{")
		}
		name := strings.TrimSpace(s[:j])
		if err := vars(name); err != nil {
			return nil, err
		}
		out = append(out, token{tokVar, name})
		s = s[j+2:]
	}
	return out, nil
}

func identityVar(name string) error {
	if name == "identity.name" {
		return nil
	}
	if k, ok := strings.CutPrefix(name, "identity.metadata."); ok && k != "" {
		return nil
	}
	return fmt.Errorf("unknown variable {{%s}} (use identity.name or identity.metadata.<key>)", name)
}

// parsePattern parses a principal pattern; wildcards only when wild is set.
func parsePattern(s string, wild bool) ([]token, error) {
	toks, err := parseTemplate(s, identityVar)
	if err != nil {
		return nil, err
	}
	var out []token
	for _, t := range toks {
		if t.kind != tokLiteral {
			out = append(out, t)
			continue
		}
		for _, part := range splitKeep(t.text, '*') {
			if part == "*" {
				if !wild {
					return nil, errors.New("wildcard not allowed here")
				}
				switch n := len(out); {
				case n > 0 && out[n-1].kind == tokWild:
					out[n-1].kind = tokWildAny // "**"
				case n > 0 && out[n-1].kind == tokWildAny:
					return nil, errors.New("*** is not a wildcard (use * within a label, ** across labels)")
				default:
					out = append(out, token{tokWild, ""})
				}
				continue
			}
			if err := checkPrincipalChars(part); err != nil {
				return nil, err
			}
			out = append(out, token{tokLiteral, part})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty pattern")
	}
	return out, nil
}

// splitKeep splits s around sep, keeping each sep as its own element.
func splitKeep(s string, sep byte) []string {
	var out []string
	for s != "" {
		i := strings.IndexByte(s, sep)
		switch {
		case i < 0:
			return append(out, s)
		case i > 0:
			out = append(out, s[:i])
		}
		out = append(out, string(sep))
		s = s[i+1:]
	}
	return out
}

func checkPrincipalChars(s string) error {
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == ',' || r == '*' || r == '?' || r == '"' || r == '\'' || r == '\\' {
			return fmt.Errorf("character %q not allowed in a principal", r)
		}
	}
	return nil
}

// validPrincipal reports whether p may appear in a certificate.
func validPrincipal(p string) error {
	if p == "" {
		return errors.New("empty principal")
	}
	if len(p) > maxPrincipalLen {
		return fmt.Errorf("principal of %d bytes (limit %d)", len(p), maxPrincipalLen)
	}
	return checkPrincipalChars(p)
}

// expand fills the identity variables of toks from c. ok is false when a
// variable has no value or a value that cannot be a principal: such a
// pattern allows nothing.
func expand(toks []token, c Caller) (out []token, ok bool) {
	out = make([]token, 0, len(toks))
	for _, t := range toks {
		if t.kind != tokVar {
			out = append(out, t)
			continue
		}
		var v string
		if t.text == "identity.name" {
			v = c.Name
		} else {
			v = c.Metadata[strings.TrimPrefix(t.text, "identity.metadata.")]
		}
		if v == "" || validPrincipal(v) != nil {
			return nil, false
		}
		out = append(out, token{tokLiteral, v}) // literal: a "*" in a name never becomes a wildcard
	}
	return out, true
}

// literal returns the text of an expanded pattern with no wildcards.
func literal(toks []token) string {
	var b strings.Builder
	for _, t := range toks {
		b.WriteString(t.text)
	}
	return b.String()
}

// match reports whether s matches the expanded pattern toks: `*` matches
// any run without '.', `**` any run. Dynamic programming over the pattern's
// characters and s, O(len(pattern) * len(s)) whatever the wildcards.
func match(toks []token, s string) bool {
	const (
		wild    = -1
		wildAny = -2
	)
	var p []int
	for _, t := range toks {
		switch t.kind {
		case tokWild:
			p = append(p, wild)
		case tokWildAny:
			p = append(p, wildAny)
		default:
			for i := 0; i < len(t.text); i++ {
				p = append(p, int(t.text[i]))
			}
		}
	}
	// prev[j]: p[:i] matches s[:j]; cur: p[:i+1].
	prev, cur := make([]bool, len(s)+1), make([]bool, len(s)+1)
	prev[0] = true
	for _, c := range p {
		cur[0] = prev[0] && c < 0
		for j := 1; j <= len(s); j++ {
			switch c {
			case wildAny:
				cur[j] = prev[j] || cur[j-1]
			case wild:
				cur[j] = prev[j] || (cur[j-1] && s[j-1] != '.')
			default:
				cur[j] = prev[j-1] && c == int(s[j-1])
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(s)]
}

// keyIDVars are the values a key ID template may use.
type keyIDVars struct {
	identity, requestID, role, ca, principals string
	serial                                    uint64
}

func keyIDVar(name string) error {
	switch name {
	case "identity.name", "request_id", "role", "ca", "serial", "principals":
		return nil
	}
	return fmt.Errorf("unknown variable {{%s}} (use identity.name, request_id, role, ca, serial, principals)", name)
}

// expandKeyID fills a key ID template.
func expandKeyID(format string, v keyIDVars) (string, error) {
	toks, err := parseTemplate(format, keyIDVar)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, t := range toks {
		switch {
		case t.kind == tokLiteral:
			b.WriteString(t.text)
		case t.text == "identity.name":
			b.WriteString(v.identity)
		case t.text == "request_id":
			b.WriteString(v.requestID)
		case t.text == "role":
			b.WriteString(v.role)
		case t.text == "ca":
			b.WriteString(v.ca)
		case t.text == "serial":
			b.WriteString(strconv.FormatUint(v.serial, 10))
		case t.text == "principals":
			b.WriteString(v.principals)
		}
	}
	s := b.String()
	if len(s) > maxKeyIDLen {
		return "", fmt.Errorf("key ID of %d bytes (limit %d)", len(s), maxKeyIDLen)
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "", errors.New("key ID contains control characters")
	}
	return s, nil
}
