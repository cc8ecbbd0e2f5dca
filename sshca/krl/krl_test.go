package krl

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newCert(t testing.TB, ca ssh.Signer, key ssh.PublicKey, serial uint64, keyID string) *ssh.Certificate {
	t.Helper()
	c := &ssh.Certificate{
		Key:             key,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: []string{"alice"},
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNormalizeMergesRanges(t *testing.T) {
	ca := newSigner(t).PublicKey()
	var k KRL
	for _, r := range []SerialRange{{5, 5}, {1, 3}, {4, 4}, {10, 20}, {15, 30}, {0, 0}, {40, 40}, {math.MaxUint64, math.MaxUint64}, {math.MaxUint64 - 1, math.MaxUint64}} {
		k.RevokeSerialRange(ca, r.Lo, r.Hi)
	}
	k.RevokeKeyID(ca, "b")
	k.RevokeKeyID(ca, "a")
	k.RevokeKeyID(ca, "b")
	k.Normalize()
	want := []SerialRange{{1, 5}, {10, 30}, {40, 40}, {math.MaxUint64 - 1, math.MaxUint64}}
	if got := k.Certs[0].Serials; !reflect.DeepEqual(got, want) {
		t.Errorf("serials: got %v, want %v", got, want)
	}
	if got, want := k.Certs[0].KeyIDs, []string{"a", "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("key IDs: got %v, want %v", got, want)
	}
}

func TestEncodingChoice(t *testing.T) {
	ca := newSigner(t).PublicKey()
	tests := []struct {
		name   string
		ranges []SerialRange
		want   []byte // subsection types in order
	}{
		{"sparse singletons: list", []SerialRange{{1 << 40, 1 << 40}, {1 << 50, 1 << 50}}, []byte{certSectionSerialList}},
		{"one long range", []SerialRange{{100, 100000}}, []byte{certSectionSerialRange}},
		{"dense singletons: bitmap", []SerialRange{{1000, 1000}, {1002, 1002}, {1005, 1005}, {1007, 1007}, {1010, 1010}}, []byte{certSectionSerialBitmap}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var k KRL
			for _, r := range tc.ranges {
				k.RevokeSerialRange(ca, r.Lo, r.Hi)
			}
			got, err := Parse(k.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			if types := subsectionTypes(t, k.Marshal()); !bytes.Equal(types, tc.want) {
				t.Errorf("subsections: got %x, want %x", types, tc.want)
			}
			got.Normalize()
			if !reflect.DeepEqual(got.Certs[0].Serials, k.Certs[0].Serials) {
				t.Errorf("round trip: got %v, want %v", got.Certs[0].Serials, k.Certs[0].Serials)
			}
		})
	}
}

// subsectionTypes lists the certificate subsection types of all certificate sections.
func subsectionTypes(t *testing.T, data []byte) []byte {
	t.Helper()
	r := &reader{b: data[len(Magic)+4+24:]}
	r.str()
	r.str()
	var out []byte
	for !r.empty() {
		typ, _ := r.u8()
		body, _ := r.str()
		if typ != sectionCertificates {
			continue
		}
		br := &reader{b: body}
		br.str()
		br.str()
		for !br.empty() {
			st, _ := br.u8()
			br.str()
			out = append(out, st)
		}
	}
	return out
}

func randomKRL(r *mrand.Rand, cas []ssh.PublicKey) *KRL {
	k := &KRL{Version: r.Uint64N(100), GeneratedDate: time.Unix(int64(r.Uint32()), 0).UTC(), Comment: "c"}
	for range r.IntN(50) {
		ca := cas[r.IntN(len(cas))]
		if r.IntN(5) == 0 {
			ca = nil
		}
		switch r.IntN(4) {
		case 0:
			k.RevokeSerial(ca, r.Uint64())
		case 1:
			lo := r.Uint64N(5000)
			k.RevokeSerialRange(ca, lo, lo+r.Uint64N(40))
		case 2:
			k.RevokeSerial(ca, 1000+r.Uint64N(3000))
		case 3:
			k.RevokeKeyID(ca, string(rune('a'+r.IntN(26))))
		}
	}
	for range r.IntN(3) {
		k.RevokeKey(cas[r.IntN(len(cas))])
		var h [32]byte
		for i := range h {
			h[i] = byte(r.Uint32())
		}
		k.RevokeSHA256(h[:])
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	cas := []ssh.PublicKey{newSigner(t).PublicKey(), newSigner(t).PublicKey(), newSigner(t).PublicKey()}
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := range 300 {
		k := randomKRL(r, cas)
		data := k.Marshal()
		got, err := Parse(data)
		if err != nil {
			t.Fatalf("case %d: parse: %v", i, err)
		}
		got.Normalize()
		if !reflect.DeepEqual(got, k) {
			t.Fatalf("case %d: round trip differs:\n got %+v\nwant %+v", i, got, k)
		}
		if again := got.Marshal(); !bytes.Equal(again, data) {
			t.Fatalf("case %d: re-marshal differs", i)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := (&KRL{}).Marshal()
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("SSHKRL\n\x01"), good[8:]...)},
		{"bad version", func() []byte { b := bytes.Clone(good); b[11] = 2; return b }()},
		{"truncated header", good[:20]},
		{"unknown section", append(bytes.Clone(good), 9, 0, 0, 0, 0)},
		{"critical extension", append(bytes.Clone(good), func() []byte {
			var b, body buf
			body.str([]byte("x@example.com"))
			body.u8(1)
			body.str(nil)
			b.section(sectionExtension, body)
			return b
		}()...)},
		{"short sha256", append(bytes.Clone(good), func() []byte {
			var b, body buf
			body.str([]byte("short"))
			b.section(sectionFingerprintSHA256, body)
			return b
		}()...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.data); !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := Parse(good); err != nil {
		t.Errorf("empty KRL: %v", err)
	}
}

func TestIsRevoked(t *testing.T) {
	ca, other := newSigner(t), newSigner(t)
	key := newSigner(t).PublicKey()
	var k KRL
	k.RevokeSerial(ca.PublicKey(), 7)
	k.RevokeKeyID(nil, "any-ca-id")
	tests := []struct {
		name string
		key  ssh.PublicKey
		want bool
	}{
		{"serial", newCert(t, ca, key, 7, "x"), true},
		{"serial other CA", newCert(t, other, key, 7, "x"), false},
		{"key ID any CA", newCert(t, other, key, 8, "any-ca-id"), true},
		{"plain key", key, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := k.IsRevoked(tc.key); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func sshKeygen(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ssh-keygen")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen not installed")
		}
		t.Skip("ssh-keygen not installed")
	}
	return p
}

func writeKey(t *testing.T, dir, name string, key ssh.PublicKey) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, ssh.MarshalAuthorizedKey(key), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSSHKeygenQuery checks our KRLs with OpenSSH's own reader: `ssh-keygen -Q`
// exits 1 and prints REVOKED for a revoked key, 0 and "ok" otherwise.
func TestSSHKeygenQuery(t *testing.T) {
	keygen := sshKeygen(t)
	dir := t.TempDir()
	ca, ca2 := newSigner(t), newSigner(t)
	keys := make([]ssh.PublicKey, 6)
	for i := range keys {
		keys[i] = newSigner(t).PublicKey()
	}
	var k KRL
	k.Version, k.Comment, k.GeneratedDate = 3, "test", time.Now()
	k.RevokeSerial(ca.PublicKey(), 0x8000_0000_0000_0001)
	k.RevokeSerialRange(ca.PublicKey(), 100, 200)
	for _, s := range []uint64{1000, 1003, 1004, 1009, 1012, 1020} {
		k.RevokeSerial(ca.PublicKey(), s) // becomes a bitmap
	}
	k.RevokeKeyID(ca.PublicKey(), "bad-id")
	k.RevokeKeyID(nil, "bad-everywhere")
	k.RevokeKey(keys[1])
	k.RevokeKeySHA256(keys[2])
	data := k.Marshal()
	if got := subsectionTypes(t, data); !bytes.Contains(got, []byte{certSectionSerialBitmap}) {
		t.Fatalf("expected a bitmap subsection, got %x", got)
	}
	krlPath := filepath.Join(dir, "krl")
	if err := os.WriteFile(krlPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  ssh.PublicKey
		want bool
	}{
		{"serial in list", newCert(t, ca, keys[0], 0x8000_0000_0000_0001, "id"), true},
		{"serial in range low end", newCert(t, ca, keys[0], 100, "id"), true},
		{"serial in range high end", newCert(t, ca, keys[0], 200, "id"), true},
		{"serial after range", newCert(t, ca, keys[0], 201, "id"), false},
		{"serial in bitmap", newCert(t, ca, keys[0], 1009, "id"), true},
		{"serial in bitmap gap", newCert(t, ca, keys[0], 1010, "id"), false},
		{"serial revoked for another CA", newCert(t, ca2, keys[0], 150, "id"), false},
		{"key ID", newCert(t, ca, keys[0], 5, "bad-id"), true},
		{"key ID of another CA", newCert(t, ca2, keys[0], 5, "bad-id"), false},
		{"key ID for any CA", newCert(t, ca2, keys[0], 5, "bad-everywhere"), true},
		{"explicit key", keys[1], true},
		{"certificate of explicit key", newCert(t, ca, keys[1], 5, "id"), true},
		{"sha256 fingerprint", keys[2], true},
		{"certificate of fingerprinted key", newCert(t, ca, keys[2], 5, "id"), true},
		{"unrevoked key", keys[3], false},
		{"unrevoked certificate", newCert(t, ca, keys[3], 5, "good-id"), false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := k.IsRevoked(tc.key); got != tc.want {
				t.Errorf("IsRevoked: got %v, want %v", got, tc.want)
			}
			p := writeKey(t, dir, "key"+string(rune('a'+i))+".pub", tc.key)
			out, err := exec.Command(keygen, "-Q", "-f", krlPath, p).CombinedOutput()
			var ee *exec.ExitError
			revoked := errors.As(err, &ee) && ee.ExitCode() == 1
			if err != nil && !revoked {
				t.Fatalf("ssh-keygen -Q: %v: %s", err, out)
			}
			if revoked != tc.want || strings.Contains(string(out), "REVOKED") != tc.want {
				t.Errorf("ssh-keygen -Q: revoked=%v (%s), want %v", revoked, out, tc.want)
			}
		})
	}
}

// TestParseSSHKeygenKRL parses a KRL written by ssh-keygen -k (which uses
// bitmaps, ranges and lists by its own cost model) and compares.
func TestParseSSHKeygenKRL(t *testing.T) {
	keygen := sshKeygen(t)
	dir := t.TempDir()
	ca := newSigner(t)
	caPath := writeKey(t, dir, "ca.pub", ca.PublicKey())
	key := newSigner(t).PublicKey()
	keyPath := writeKey(t, dir, "key.pub", key)
	sum := sha256.Sum256(key.Marshal())
	spec := "serial: 1-500\nserial: 600\nserial: 602\nserial: 605\nserial: 610\nserial: 99999999\nid: someone\n"
	specKeys := "hash: SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "spec"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "spec2"), []byte(specKeys), 0o644); err != nil {
		t.Fatal(err)
	}
	krlPath := filepath.Join(dir, "krl")
	for _, args := range [][]string{
		{"-k", "-f", krlPath, "-s", caPath, filepath.Join(dir, "spec")},
		{"-k", "-u", "-f", krlPath, filepath.Join(dir, "spec2")},
		{"-k", "-u", "-f", krlPath, keyPath},
	} {
		if out, err := exec.Command(keygen, args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %v: %v: %s", args, err, out)
		}
	}
	data, err := os.ReadFile(krlPath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	got.Normalize()
	want := KRL{Version: got.Version, GeneratedDate: got.GeneratedDate}
	want.RevokeSerialRange(ca.PublicKey(), 1, 500)
	for _, s := range []uint64{600, 602, 605, 610, 99999999} {
		want.RevokeSerial(ca.PublicKey(), s)
	}
	want.RevokeKeyID(ca.PublicKey(), "someone")
	want.RevokeSHA256(sum[:])
	want.RevokeKey(key)
	want.Normalize()
	if !reflect.DeepEqual(got, &want) {
		t.Errorf("got %+v\nwant %+v", got, &want)
	}
}

func FuzzParse(f *testing.F) {
	cas := []ssh.PublicKey{newSigner(f).PublicKey(), newSigner(f).PublicKey()}
	r := mrand.New(mrand.NewPCG(3, 4))
	f.Add([]byte(Magic))
	f.Add((&KRL{}).Marshal())
	for range 8 {
		f.Add(randomKRL(r, cas).Marshal())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := Parse(data)
		if err != nil {
			return
		}
		k.Normalize()
		out := k.Marshal()
		k2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of our own output: %v", err)
		}
		k2.Normalize()
		if !reflect.DeepEqual(k, k2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", k, k2)
		}
	})
}

func BenchmarkMarshal(b *testing.B) {
	ca := newSigner(b).PublicKey()
	var k KRL
	r := mrand.New(mrand.NewPCG(5, 6))
	for range 10000 {
		k.RevokeSerial(ca, r.Uint64())
	}
	b.ReportAllocs()
	for b.Loop() {
		k.Marshal()
	}
}
