package hsm

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// URI is the part of an RFC 7512 PKCS#11 URI that names a key on a token:
// the token (by label, and optionally manufacturer, model and serial) and
// the object (by label, CKA_ID and class). Empty fields were not given.
type URI struct {
	Token        string // token= (CK_TOKEN_INFO.label)
	Manufacturer string // manufacturer=
	Model        string // model=
	Serial       string // serial=
	Object       string // object= (CKA_LABEL)
	ID           []byte // id= (CKA_ID), any bytes
	Type         string // type=: "private" or "secret-key" (others are refused)
}

// Limits of ParseURI.
const (
	maxURILen   = 4096
	maxURIValue = 1024 // decoded bytes of one attribute
)

// ParseURI parses an RFC 7512 PKCS#11 URI such as
// "pkcs11:token=ca;object=root-2026;id=%01%02". Attribute values are
// percent-decoded. Only the path attributes token, manufacturer, model,
// serial, object, id and type are accepted: an unknown or repeated
// attribute, a query part (pin-value, pin-source, module-path: hsmgate
// uses its configured module and PIN, and a PIN never travels in a
// request), a malformed percent escape, or a value that is empty or too
// long is refused with ErrInvalidInput. Text attributes must be UTF-8
// without NUL; id may be any bytes. The URI must name an object (object,
// id or both).
func ParseURI(s string) (URI, error) {
	var u URI
	if len(s) > maxURILen {
		return u, fmt.Errorf("hsm: PKCS#11 URI longer than %d bytes: %w", maxURILen, ErrInvalidInput)
	}
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return u, fmt.Errorf("hsm: not a PKCS#11 URI (want the scheme \"pkcs11:\"): %w", ErrInvalidInput)
	}
	if strings.ContainsAny(rest, "?#") {
		return u, fmt.Errorf("hsm: PKCS#11 URI: query and fragment are not accepted (hsmgate uses its own module and PIN): %w", ErrInvalidInput)
	}
	seen := map[string]bool{}
	for attrText := range strings.SplitSeq(rest, ";") {
		if attrText == "" {
			return u, fmt.Errorf("hsm: PKCS#11 URI: empty attribute: %w", ErrInvalidInput)
		}
		name, raw, ok := strings.Cut(attrText, "=")
		if !ok {
			return u, fmt.Errorf("hsm: PKCS#11 URI: attribute %q has no value: %w", clip(name), ErrInvalidInput)
		}
		if seen[name] {
			return u, fmt.Errorf("hsm: PKCS#11 URI: attribute %q repeated: %w", clip(name), ErrInvalidInput)
		}
		seen[name] = true
		v, err := pctDecode(raw)
		if err != nil {
			return u, fmt.Errorf("hsm: PKCS#11 URI: attribute %q: %w", clip(name), err)
		}
		if len(v) == 0 {
			return u, fmt.Errorf("hsm: PKCS#11 URI: attribute %q is empty: %w", clip(name), ErrInvalidInput)
		}
		if len(v) > maxURIValue {
			return u, fmt.Errorf("hsm: PKCS#11 URI: attribute %q longer than %d bytes: %w", clip(name), maxURIValue, ErrInvalidInput)
		}
		if name == "id" {
			u.ID = v
			continue
		}
		if !utf8.Valid(v) || bytes.IndexByte(v, 0) >= 0 {
			return u, fmt.Errorf("hsm: PKCS#11 URI: attribute %q is not UTF-8 text: %w", name, ErrInvalidInput)
		}
		text := string(v)
		switch name {
		case "token":
			u.Token = text
		case "manufacturer":
			u.Manufacturer = text
		case "model":
			u.Model = text
		case "serial":
			u.Serial = text
		case "object":
			u.Object = text
		case "type":
			if text != "private" && text != "secret-key" {
				return u, fmt.Errorf("hsm: PKCS#11 URI: type %q: only \"private\" and \"secret-key\" name a key to adopt: %w", clip(text), ErrInvalidInput)
			}
			u.Type = text
		default:
			return u, fmt.Errorf("hsm: PKCS#11 URI: unknown or unsupported attribute %q: %w", clip(name), ErrInvalidInput)
		}
	}
	if u.Object == "" && u.ID == nil {
		return u, fmt.Errorf("hsm: PKCS#11 URI names no object (want object= or id=): %w", ErrInvalidInput)
	}
	return u, nil
}

// clip bounds attacker-chosen text quoted in an error.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// pctDecode decodes an attribute value: %XX escapes, and literal
// printable ASCII other than the delimiters ; ? # % and space.
func pctDecode(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("truncated percent escape: %w", ErrInvalidInput)
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("bad percent escape: %w", ErrInvalidInput)
			}
			out = append(out, hi<<4|lo)
			i += 2
		case c <= ' ' || c >= 0x7f || c == ';' || c == '?' || c == '#':
			return nil, fmt.Errorf("character %#x must be percent-encoded: %w", c, ErrInvalidInput)
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String formats the URI with its attributes in a fixed order (token,
// manufacturer, model, serial, object, id, type) and every byte outside
// RFC 3986's unreserved set percent-encoded, so that ParseURI(u.String())
// gives u back.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString("pkcs11:")
	first := true
	add := func(name string, v []byte) {
		if v == nil {
			return
		}
		if !first {
			b.WriteByte(';')
		}
		first = false
		b.WriteString(name)
		b.WriteByte('=')
		pctEncode(&b, v, name == "id")
	}
	str := func(s string) []byte {
		if s == "" {
			return nil
		}
		return []byte(s)
	}
	add("token", str(u.Token))
	add("manufacturer", str(u.Manufacturer))
	add("model", str(u.Model))
	add("serial", str(u.Serial))
	add("object", str(u.Object))
	add("id", u.ID)
	add("type", str(u.Type))
	return b.String()
}

func pctEncode(b *strings.Builder, v []byte, all bool) {
	const hexdig = "0123456789ABCDEF"
	for _, c := range v {
		unreserved := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~'
		if unreserved && !all {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
}
