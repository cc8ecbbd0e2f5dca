package transit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/client"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	*h = d
	return err
}

type vectors struct {
	AEAD []struct {
		Name, Type                   string
		Key, Nonce, AAD, PT, CT, Tag hexBytes
	}
	HMAC []struct {
		Name, Type     string
		Key, Data, MAC hexBytes
	}
	Ed25519 []struct {
		Name                string
		Seed, Pub, Msg, Sig hexBytes
	}
	ECDSA []struct {
		Name, Type   string
		D, Msg, R, S hexBytes
	}
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// importKey brings known material into the engine through ImportKey
// (RSA-OAEP + KWP, as a client would).
func (f *fixture) importKey(name string, typ pb.TransitKeyType, material []byte, mod ...func(*pb.ImportKeyRequest)) {
	f.t.Helper()
	ctx := context.Background()
	p, err := f.e.GetWrappingKey(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	pub, err := client.ParseWrappingKey(p)
	if err != nil {
		f.t.Fatal(err)
	}
	w, err := client.WrapForImport(pub, material, rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	req := &pb.ImportKeyRequest{Name: name, Type: typ, WrappedMaterial: w}
	for _, m := range mod {
		m(req)
	}
	if _, err := f.e.ImportKey(ctx, req); err != nil {
		f.t.Fatalf("ImportKey(%s): %v", name, err)
	}
}

// fixedReader returns its bytes, then fails.
type fixedReader struct{ b []byte }

func (r *fixedReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	if n < len(p) {
		return n, os.ErrClosed
	}
	return n, nil
}

// TestKnownAnswers passes published vectors through the engine: keys come
// in by ImportKey; encryption uses the vector's nonce (injected as the
// engine's randomness) and must give the vector's ciphertext; decryption of
// the vector's ciphertext must give its plaintext; HMACs and Ed25519
// signatures must equal the vectors'; ECDSA vector signatures must verify.
func TestKnownAnswers(t *testing.T) {
	vs := loadVectors(t)
	f := newFixture(t)
	ctx := context.Background()
	for _, v := range vs.AEAD {
		t.Run(v.Name, func(t *testing.T) {
			typ := ParseKeyType(v.Type)
			f.importKey(v.Name, typ, v.Key)
			f.e.rand = &fixedReader{b: bytes.Clone(v.Nonce)}
			ct := f.encrypt(v.Name, v.PT, v.AAD, nil)
			f.e.rand = rand.Reader
			want := append(append(append([]byte{1, 1}, v.Nonce...), v.CT...), v.Tag...)
			if !bytes.Equal(ct, want) {
				t.Fatalf("Encrypt = %x, want %x", ct, want)
			}
			got, c := f.decrypt(v.Name, want, v.AAD, nil)
			if c != codes.OK || !bytes.Equal(got, v.PT) {
				t.Fatalf("Decrypt = %x %v, want %x", got, c, v.PT)
			}
			bad := bytes.Clone(want)
			bad[len(bad)-1] ^= 1
			if _, c := f.decrypt(v.Name, bad, v.AAD, nil); c != codes.InvalidArgument {
				t.Fatalf("tampered tag: %v, want InvalidArgument", c)
			}
		})
	}
	for _, v := range vs.HMAC {
		t.Run(v.Name, func(t *testing.T) {
			f.importKey(v.Name, ParseKeyType(v.Type), v.Key)
			r, err := f.e.ComputeHmac(ctx, &pb.ComputeHmacRequest{Name: v.Name, Items: []*pb.HmacItem{{Input: v.Data}}})
			if err != nil || !bytes.Equal(r.Results[0].Hmac, v.MAC) {
				t.Fatalf("ComputeHmac = %x, %v; want %x", r.GetResults()[0].GetHmac(), err, v.MAC)
			}
			vr, err := f.e.VerifyHmac(ctx, &pb.VerifyHmacRequest{Name: v.Name, Items: []*pb.VerifyHmacItem{{Input: v.Data, Hmac: v.MAC}}})
			if err != nil || !vr.Results[0].Valid {
				t.Fatalf("VerifyHmac of the vector: %v %v", err, vr.GetResults())
			}
		})
	}
	for _, v := range vs.Ed25519 {
		t.Run(v.Name, func(t *testing.T) {
			der, err := x509.MarshalPKCS8PrivateKey(ed25519.NewKeyFromSeed(v.Seed))
			if err != nil {
				t.Fatal(err)
			}
			f.importKey(v.Name, pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519, der)
			r, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: v.Name, Items: []*pb.SignItem{{Input: v.Msg}}})
			if err != nil || !bytes.Equal(r.Results[0].Signature, v.Sig) {
				t.Fatalf("SignData = %x, %v; want %x", r.GetResults()[0].GetSignature(), err, v.Sig)
			}
			k, _ := f.e.GetKey(ctx, v.Name)
			if !bytes.Contains([]byte(k.Versions[0].PublicKeyPem), []byte("PUBLIC KEY")) {
				t.Fatal("no public key")
			}
			vr, err := f.e.VerifySignature(ctx, &pb.VerifySignatureRequest{Name: v.Name, Items: []*pb.VerifyItem{{Input: v.Msg, Signature: v.Sig}}})
			if err != nil || !vr.Results[0].Valid {
				t.Fatalf("VerifySignature of the vector: %v %v", err, vr.GetResults())
			}
		})
	}
	for _, v := range vs.ECDSA {
		t.Run(v.Name, func(t *testing.T) {
			typ := ParseKeyType(v.Type)
			curve := elliptic.P256()
			if typ == pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P384 {
				curve = elliptic.P384()
			}
			priv, err := ecdsa.ParseRawPrivateKey(curve, v.D)
			if err != nil {
				t.Fatal(err)
			}
			der, _ := x509.MarshalPKCS8PrivateKey(priv)
			f.importKey(v.Name, typ, der)
			sig, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(v.R), new(big.Int).SetBytes(v.S)})
			bad := bytes.Clone(sig)
			bad[len(bad)-1] ^= 1
			vr, err := f.e.VerifySignature(ctx, &pb.VerifySignatureRequest{Name: v.Name, Items: []*pb.VerifyItem{
				{Input: v.Msg, Signature: sig}, {Input: v.Msg, Signature: bad}, {Input: []byte("other"), Signature: sig}}})
			if err != nil || !vr.Results[0].Valid || vr.Results[1].Valid || vr.Results[2].Valid {
				t.Fatalf("VerifySignature: %v %v; want true false false", err, vr.GetResults())
			}
		})
	}
}

// TestSignatureEdgeCases: malformed signatures of the kinds Wycheproof
// lists, made from the RFC vectors, are invalid (valid=false, never an
// error or a panic): r or s zero, equal to the group order, r+n; DER with
// trailing bytes or a long-form length; Ed25519 with S >= L.
func TestSignatureEdgeCases(t *testing.T) {
	vs := loadVectors(t)
	f := newFixture(t)
	ctx := context.Background()
	v := vs.ECDSA[0]
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), v.D)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	f.importKey("ec", pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256, der)
	n := elliptic.P256().Params().N
	r, s := new(big.Int).SetBytes(v.R), new(big.Int).SetBytes(v.S)
	sig := func(r, s *big.Int) []byte {
		b, _ := asn1.Marshal(struct{ R, S *big.Int }{r, s})
		return b
	}
	good := sig(r, s)
	longForm := append([]byte{0x30, 0x81, byte(len(good) - 2)}, good[2:]...)
	cases := map[string][]byte{
		"r=0":            sig(big.NewInt(0), s),
		"s=0":            sig(r, big.NewInt(0)),
		"r=n":            sig(n, s),
		"s=n":            sig(r, n),
		"r+n":            sig(new(big.Int).Add(r, n), s),
		"trailing bytes": append(bytes.Clone(good), 0),
		"long-form DER":  longForm,
		"empty":          nil,
		"not DER":        []byte("garbage"),
	}
	items := []*pb.VerifyItem{{Input: v.Msg, Signature: good, Reference: "good"}}
	for name, b := range cases {
		items = append(items, &pb.VerifyItem{Input: v.Msg, Signature: b, Reference: name})
	}
	res, err := f.e.VerifySignature(ctx, &pb.VerifySignatureRequest{Name: "ec", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Results {
		if want := r.Reference == "good"; r.Valid != want || r.Error != nil {
			t.Errorf("%s: valid=%v err=%v, want valid=%v", r.Reference, r.Valid, r.Error, want)
		}
	}

	e := vs.Ed25519[0]
	edDER, _ := x509.MarshalPKCS8PrivateKey(ed25519.NewKeyFromSeed(e.Seed))
	f.importKey("ed", pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519, edDER)
	// S + L: the same value mod L, not canonical.
	L, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	sLE := bytes.Clone(e.Sig[32:])
	for i, j := 0, len(sLE)-1; i < j; i, j = i+1, j-1 {
		sLE[i], sLE[j] = sLE[j], sLE[i]
	}
	sPlusL := new(big.Int).Add(new(big.Int).SetBytes(sLE), L).FillBytes(make([]byte, 32))
	for i, j := 0, len(sPlusL)-1; i < j; i, j = i+1, j-1 {
		sPlusL[i], sPlusL[j] = sPlusL[j], sPlusL[i]
	}
	nonCanonical := append(bytes.Clone(e.Sig[:32]), sPlusL...)
	res, err = f.e.VerifySignature(ctx, &pb.VerifySignatureRequest{Name: "ed", Items: []*pb.VerifyItem{
		{Input: e.Msg, Signature: e.Sig}, {Input: e.Msg, Signature: nonCanonical}, {Input: e.Msg, Signature: e.Sig[:63]}}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Results[0].Valid || res.Results[1].Valid || res.Results[2].Valid {
		t.Fatalf("ed25519 edge cases: %v %v %v, want true false false", res.Results[0].Valid, res.Results[1].Valid, res.Results[2].Valid)
	}
}
