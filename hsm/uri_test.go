package hsm_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hsmgate/hsmgate/hsm"
)

func TestParseURI(t *testing.T) {
	good := []struct {
		name, in string
		want     hsm.URI
	}{
		{"token object id", "pkcs11:token=ca;object=root%202026;id=%01%02", hsm.URI{Token: "ca", Object: "root 2026", ID: []byte{1, 2}}},
		{"id only, lower hex", "pkcs11:id=%ca%fe", hsm.URI{ID: []byte{0xca, 0xfe}}},
		{"all token attributes", "pkcs11:token=t;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=abc;object=k;type=private",
			hsm.URI{Token: "t", Manufacturer: "SoftHSM project", Model: "SoftHSM v2", Serial: "abc", Object: "k", Type: "private"}},
		{"literal id byte", "pkcs11:id=A", hsm.URI{ID: []byte("A")}},
		{"utf-8 label", "pkcs11:object=cl%C3%A9", hsm.URI{Object: "clé"}},
	}
	for _, c := range good {
		t.Run(c.name, func(t *testing.T) {
			got, err := hsm.ParseURI(c.in)
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", c.in, err)
			}
			if got.Token != c.want.Token || got.Object != c.want.Object || !bytes.Equal(got.ID, c.want.ID) ||
				got.Manufacturer != c.want.Manufacturer || got.Model != c.want.Model || got.Serial != c.want.Serial || got.Type != c.want.Type {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			again, err := hsm.ParseURI(got.String())
			if err != nil || again.String() != got.String() {
				t.Fatalf("round trip of %q: got %q, %v", got.String(), again.String(), err)
			}
		})
	}
	bad := []struct{ name, in string }{
		{"no scheme", "token=ca;object=x"},
		{"other scheme", "file:object=x"},
		{"unknown attribute", "pkcs11:object=x;colour=red"},
		{"slot-id not accepted", "pkcs11:object=x;slot-id=1"},
		{"pin-value query", "pkcs11:object=x?pin-value=1234"},
		{"module-path query", "pkcs11:object=x?module-path=/tmp/evil.so"},
		{"fragment", "pkcs11:object=x#frag"},
		{"repeated", "pkcs11:object=x;object=y"},
		{"no value", "pkcs11:object"},
		{"empty value", "pkcs11:object="},
		{"empty attribute", "pkcs11:object=x;;id=%01"},
		{"truncated escape", "pkcs11:id=%0"},
		{"bad escape", "pkcs11:id=%zz"},
		{"raw space", "pkcs11:object=a b"},
		{"raw non-ASCII", "pkcs11:object=clé"},
		{"NUL in label", "pkcs11:object=a%00b"},
		{"invalid UTF-8 label", "pkcs11:object=%ff"},
		{"no object", "pkcs11:token=ca"},
		{"public type", "pkcs11:object=x;type=public"},
		{"nothing", "pkcs11:"},
		{"too long", "pkcs11:object=" + string(bytes.Repeat([]byte("a"), 5000))},
		{"value too long", "pkcs11:object=" + string(bytes.Repeat([]byte("a"), 1025))},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			if _, err := hsm.ParseURI(c.in); !errors.Is(err, hsm.ErrInvalidInput) {
				t.Fatalf("ParseURI(%q): got %v, want ErrInvalidInput", c.in, err)
			}
		})
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=ca;object=root;id=%01%02", "pkcs11:id=%ca", "pkcs11:object=a%20b;type=secret-key",
		"pkcs11:object=x?pin-value=1", "pkcs11:serial=1;model=m;manufacturer=x;object=%C3%A9",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := hsm.ParseURI(s)
		if err != nil {
			if !errors.Is(err, hsm.ErrInvalidInput) {
				t.Fatalf("ParseURI(%q): error %v does not wrap ErrInvalidInput", s, err)
			}
			return
		}
		if u.Object == "" && u.ID == nil {
			t.Fatalf("ParseURI(%q) accepted a URI without an object", s)
		}
		out := u.String()
		v, err := hsm.ParseURI(out)
		if err != nil {
			t.Fatalf("ParseURI(String()) of %q = %q: %v", s, out, err)
		}
		if v.String() != out || !bytes.Equal(v.ID, u.ID) || v.Object != u.Object || v.Token != u.Token {
			t.Fatalf("round trip of %q: got %+v, want %+v", s, v, u)
		}
	})
}
