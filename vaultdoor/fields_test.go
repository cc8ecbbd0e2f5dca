package vaultdoor

import (
	"slices"
	"testing"
	"time"
)

func TestFieldForms(t *testing.T) {
	f, err := parseFields([]byte(`{"ttl":"2160h","n":7200,"s":"7200","d":"30d","list":"a, b,,c","arr":["x","y"],
		"b1":"true","b2":1,"b3":false,"num":"12","m":{"k":"v","n":1,"b":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Duration("ttl"); got != 2160*time.Hour {
		t.Errorf("ttl: got %s", got)
	}
	if got := f.Duration("n"); got != 2*time.Hour {
		t.Errorf("n: got %s", got)
	}
	if got := f.Duration("s"); got != 2*time.Hour {
		t.Errorf("s: got %s", got)
	}
	if got := f.Duration("d"); got != 30*24*time.Hour {
		t.Errorf("d: got %s", got)
	}
	if got := f.List("list"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("list: got %q", got)
	}
	if got := f.List("arr"); !slices.Equal(got, []string{"x", "y"}) {
		t.Errorf("arr: got %q", got)
	}
	if !f.Bool("b1") || !f.Bool("b2") || f.Bool("b3") {
		t.Error("bools")
	}
	if got := f.Int("num", 100); got != 12 {
		t.Errorf("num: got %d", got)
	}
	if got := f.Map("m"); got["k"] != "v" || got["n"] != "1" || got["b"] != "true" {
		t.Errorf("m: got %v", got)
	}
	if err := f.done(); err != nil {
		t.Errorf("done: %v", err)
	}
	for name, body := range map[string]string{
		"negative ttl": `{"ttl":"-1h"}`, "huge ttl": `{"ttl":"1000000000000"}`, "word": `{"ttl":"soon"}`,
	} {
		f, err := parseFields([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		f.Duration("ttl")
		if f.done() == nil {
			t.Errorf("%s: got no error", name)
		}
	}
	f, _ = parseFields([]byte(`{"a":1,"b":2}`))
	f.Int("a", 10)
	if err := f.done(); err == nil {
		t.Error("unread field b: got no error")
	}
}

// FuzzParseFields: any body parses or is refused, and reading every field
// in every form never panics.
func FuzzParseFields(f *testing.F) {
	for _, s := range []string{`{}`, `{"ttl":"2160h","alt_names":"a,b"}`, `{"batch_input":[{"plaintext":"aGk="}]}`, `null`, `{"m":"{\"a\":1}"}`, `[]`, `{"x":1e999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, err := parseFields(b)
		if err != nil {
			return
		}
		for k := range fl.m {
			fl.String(k)
			fl.Bool(k)
			fl.Int(k, 1<<20)
			fl.Duration(k)
			fl.List(k)
			fl.Map(k)
			for _, it := range fl.Objects(k, 10) {
				_ = it.done()
			}
		}
		_ = fl.done()
	})
}
