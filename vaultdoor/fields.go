package vaultdoor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// fields is a request's JSON object, read field by field with Vault's
// lenient forms. Every field the handler does not read is refused by done,
// so a misspelt or unsupported field never passes silently.
type fields struct {
	m    map[string]json.RawMessage
	used map[string]bool
	err  error
}

// readFields reads a JSON object (or an empty body) of at most max bytes.
func readFields(r *http.Request, max int64) (*fields, error) {
	f := &fields{m: map[string]json.RawMessage{}, used: map[string]bool{}}
	if r.Body == nil {
		return f, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, invalidf("reading the body: %v", err)
	}
	if int64(len(b)) > max {
		return nil, invalidf("request body larger than %d bytes", max)
	}
	return parseFields(b)
}

// parseFields parses a body: empty, or one JSON object and nothing after it.
func parseFields(b []byte) (*fields, error) {
	f := &fields{m: map[string]json.RawMessage{}, used: map[string]bool{}}
	if len(bytes.TrimSpace(b)) == 0 {
		return f, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&f.m); err != nil {
		return nil, invalidf("malformed JSON body: %v", err)
	}
	if f.m == nil { // "null"
		f.m = map[string]json.RawMessage{}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalidf("malformed JSON body: data after the object")
	}
	return f, nil
}

func (f *fields) raw(name string) (json.RawMessage, bool) {
	f.used[name] = true
	v, ok := f.m[name]
	if !ok || string(v) == "null" {
		return nil, false
	}
	return v, true
}

func (f *fields) fail(name, want string) {
	if f.err == nil {
		f.err = invalidf("field %q: want %s", name, want)
	}
}

// scalar returns the field as text: a string's contents, a number's or a
// bool's literal.
func (f *fields) scalar(name string) (string, bool) {
	v, ok := f.raw(name)
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, true
	}
	t := strings.TrimSpace(string(v))
	if t == "true" || t == "false" {
		return t, true
	}
	var n json.Number
	if err := json.Unmarshal(v, &n); err == nil {
		return n.String(), true
	}
	f.fail(name, "a string")
	return "", false
}

// String reads a string (numbers and bools are accepted as their text).
func (f *fields) String(name string) string {
	s, _ := f.scalar(name)
	return s
}

// Bool reads true/false, "true"/"false"/"1"/"0"/"t"/"f", or 1/0.
func (f *fields) Bool(name string) bool {
	s, ok := f.scalar(name)
	if !ok || s == "" {
		return false
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		f.fail(name, "a boolean")
	}
	return b
}

// Int reads an integer in [0, max] from a number or a decimal string.
func (f *fields) Int(name string, max int64) int64 {
	s, ok := f.scalar(name)
	if !ok || s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > max {
		f.fail(name, fmt.Sprintf("an integer from 0 to %d", max))
		return 0
	}
	return n
}

// Duration reads Vault's duration forms: a number of seconds (JSON number
// or decimal string), a Go duration ("2160h", "90m30s"), or whole days
// ("30d").
func (f *fields) Duration(name string) time.Duration {
	s, ok := f.scalar(name)
	if !ok || s == "" {
		return 0
	}
	d, err := parseDuration(s)
	if err != nil {
		f.fail(name, `a duration such as "2160h", "30d" or a number of seconds`)
	}
	return d
}

// maxDuration bounds every duration a request may carry (100 years).
const maxDuration = 100 * 365 * 24 * time.Hour

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(maxDuration/time.Second) {
			return 0, fmt.Errorf("out of range")
		}
		return time.Duration(n) * time.Second, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > int64(maxDuration/(24*time.Hour)) {
			return 0, fmt.Errorf("bad days")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxDuration {
		return 0, fmt.Errorf("bad duration")
	}
	return d, nil
}

// List reads Vault's comma string slice: a JSON array of strings or one
// comma-separated string; items are trimmed and empty ones dropped.
func (f *fields) List(name string) []string {
	v, ok := f.raw(name)
	if !ok {
		return nil
	}
	var arr []string
	if err := json.Unmarshal(v, &arr); err != nil {
		s, ok := f.scalar(name)
		if !ok {
			return nil // scalar recorded the error
		}
		arr = strings.Split(s, ",")
	}
	out := arr[:0]
	for _, s := range arr {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Map reads an object of string values (numbers and bools as their text),
// or a JSON object encoded in a string.
func (f *fields) Map(name string) map[string]string {
	v, ok := f.raw(name)
	if !ok {
		return nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if strings.TrimSpace(s) == "" {
			return nil
		}
		v = json.RawMessage(s)
	}
	var m map[string]any
	if err := json.Unmarshal(v, &m); err != nil {
		f.fail(name, "an object of strings")
		return nil
	}
	out := make(map[string]string, len(m))
	for k, x := range m {
		switch x := x.(type) {
		case string:
			out[k] = x
		case bool:
			out[k] = strconv.FormatBool(x)
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			f.fail(name, "an object of strings")
			return nil
		}
	}
	return out
}

// Objects reads a JSON array of objects (batch_input), each as fields.
func (f *fields) Objects(name string, maxItems int) []*fields {
	v, ok := f.raw(name)
	if !ok {
		return nil
	}
	var arr []map[string]json.RawMessage
	if err := json.Unmarshal(v, &arr); err != nil {
		f.fail(name, "a list of objects")
		return nil
	}
	if len(arr) > maxItems {
		if f.err == nil {
			f.err = invalidf("field %q: more than %d items", name, maxItems)
		}
		return nil
	}
	out := make([]*fields, len(arr))
	for i, m := range arr {
		if m == nil {
			m = map[string]json.RawMessage{}
		}
		out[i] = &fields{m: m, used: map[string]bool{}}
	}
	return out
}

// Has reports whether the field is present and not null (it marks it read).
func (f *fields) Has(name string) bool {
	_, ok := f.raw(name)
	return ok
}

// done returns the first error met, or one naming every unread field.
func (f *fields) done() error {
	if f.err != nil {
		return f.err
	}
	var unknown []string
	for k := range f.m {
		if !f.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return invalidf("unknown or unsupported field(s): %s", strings.Join(unknown, ", "))
}

// clampInt32 converts n (already bounded by the caller) to int32.
func clampInt32(n int64) int32 {
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(n)
}
