package sshca

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// A pattern is an allowed or default principal after parsing: literal text,
// `*` wildcards and identity variables.
type token struct {
	kind int // tokLiteral, tokWild, tokVar
	text string
}

const (
	tokLiteral = iota
	tokWild
	tokVar
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
				out = append(out, token{tokWild, ""})
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

// match reports whether s matches the expanded pattern toks, in
// O(len(pattern) * len(s)) whatever the number of wildcards (the classic
// greedy match with backtracking to the last wildcard).
func match(toks []token, s string) bool {
	const wild = -1
	var p []int
	for _, t := range toks {
		if t.kind == tokWild {
			p = append(p, wild)
			continue
		}
		for i := 0; i < len(t.text); i++ {
			p = append(p, int(t.text[i]))
		}
	}
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] != wild && p[pi] == int(s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == wild:
			star, mark = pi, si
			pi++
		case star >= 0:
			mark++
			pi, si = star+1, mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == wild {
		pi++
	}
	return pi == len(p)
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
