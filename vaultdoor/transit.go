package vaultdoor

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
)

// VaultTextPrefix starts a ciphertext, signature or HMAC in Vault's text form.
const VaultTextPrefix = "vault:v"

// vaultText turns a binary ciphertext into vault:v<N>:<base64>.
func vaultText(ct []byte) (string, error) {
	s, err := transit.FormatText(ct)
	if err != nil {
		return "", err
	}
	return VaultTextPrefix + strings.TrimPrefix(s, transit.TextPrefix), nil
}

// parseCiphertext accepts vault:v<N>:<base64> and hsmgate:v<N>:<base64>
// (the same envelope).
func parseCiphertext(s string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(s, VaultTextPrefix); ok {
		s = transit.TextPrefix + rest
	}
	b, err := transit.ParseText(s)
	if err != nil {
		return nil, invalidf("invalid ciphertext: %v", err)
	}
	return b, nil
}

// versioned formats vault:v<N>:<base64(b)> (signatures, HMACs).
func versioned(v uint32, b []byte) string {
	return VaultTextPrefix + strconv.FormatUint(uint64(v), 10) + ":" + base64.StdEncoding.EncodeToString(b)
}

// parseVersioned reads vault:v<N>:<base64>.
func parseVersioned(what, s string) (uint32, []byte, error) {
	rest, ok := strings.CutPrefix(s, VaultTextPrefix)
	if !ok {
		return 0, nil, invalidf("%s: want vault:v<N>:<base64>", what)
	}
	num, body, ok := strings.Cut(rest, ":")
	v, err := strconv.ParseUint(num, 10, 32)
	if !ok || err != nil || v == 0 {
		return 0, nil, invalidf("%s: bad version", what)
	}
	b, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return 0, nil, invalidf("%s: bad base64", what)
	}
	return uint32(v), b, nil
}

func b64(f *fields, name string) ([]byte, error) {
	s := f.String(name)
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, invalidf("failed to base64-decode %s", name)
	}
	return b, nil
}

// batch is a request's items: batch_input, or the top-level fields as one
// item. Item field errors fail only their item, as Vault does.
type batch struct {
	items   []*fields
	isBatch bool
	partial int // partial_failure_response_code (0: none)
}

func (d *Door) readBatch(f *fields) *batch {
	b := &batch{partial: int(f.Int("partial_failure_response_code", 599))}
	if b.partial != 0 && b.partial < 200 {
		f.fail("partial_failure_response_code", "an HTTP status from 200 to 599")
	}
	if f.Has("batch_input") {
		b.items, b.isBatch = f.Objects("batch_input", d.cfg.MaxBatchItems), true
	} else {
		b.items = []*fields{f}
	}
	return b
}

// result is one item's answer.
type result map[string]any

// finish answers the batch: one result's data (or its error) for a single
// request; batch_results otherwise, with 400 (or partial_failure_response_code
// when some succeeded) if any item failed.
func (d *Door) finish(w http.ResponseWriter, c *call, b *batch, results []result) error {
	if !b.isBatch {
		r := results[0]
		if err, ok := r["_err"].(error); ok {
			return err
		}
		writeData(w, c, http.StatusOK, r)
		return nil
	}
	failed, ok := 0, 0
	for _, r := range results {
		if err, isErr := r["_err"].(error); isErr {
			_, msg := statusOf(err)
			delete(r, "_err")
			r["error"] = msg
			failed++
		} else {
			ok++
		}
	}
	code := http.StatusOK
	if failed > 0 {
		code = http.StatusBadRequest
		if ok > 0 && b.partial != 0 {
			code = b.partial
		}
	}
	writeData(w, c, code, map[string]any{"batch_results": results})
	return nil
}

func itemError(st *spb.Status) error {
	if st == nil || st.GetCode() == 0 {
		return nil
	}
	return status.ErrorProto(st)
}

// transitCrypt serves encrypt, decrypt and rewrap.
func (d *Door) transitCrypt(op string) handler {
	return func(w http.ResponseWriter, c *call, f *fields, args []string) error {
		key := args[0]
		b := d.readBatch(f)
		keyVersion := uint32(f.Int("key_version", 1<<32-1))
		if op == "encrypt" {
			// Vault's upsert fields: the key must exist here (create it with keys/<name>).
			if t := f.String("type"); t != "" {
				return invalidf("type: create the key with POST transit/keys/%s first", key)
			}
		}
		if b.isBatch {
			if err := f.done(); err != nil {
				return err
			}
		}
		results := make([]result, len(b.items))
		var sent []int
		var encItems []*pb.EncryptItem
		var decItems []*pb.DecryptItem
		var rewItems []*pb.RewrapItem
		for i, it := range b.items {
			ref := it.String("reference")
			results[i] = result{}
			if b.isBatch {
				results[i]["reference"] = ref
			}
			item, err := parseCryptItem(op, it, ref)
			if err == nil && b.isBatch {
				err = it.done()
			}
			if err != nil {
				if !b.isBatch {
					return err
				}
				results[i]["_err"] = err
				continue
			}
			switch x := item.(type) {
			case *pb.EncryptItem:
				encItems = append(encItems, x)
			case *pb.DecryptItem:
				decItems = append(decItems, x)
			case *pb.RewrapItem:
				rewItems = append(rewItems, x)
			}
			sent = append(sent, i)
		}
		if !b.isBatch {
			if err := f.done(); err != nil {
				return err
			}
		}
		if len(sent) > 0 {
			var (
				req    proto.Message
				method string
			)
			switch op {
			case "encrypt":
				req, method = &pb.EncryptRequest{Name: key, KeyVersion: keyVersion, Items: encItems}, pb.TransitService_Encrypt_FullMethodName
			case "decrypt":
				req, method = &pb.DecryptRequest{Name: key, Items: decItems}, pb.TransitService_Decrypt_FullMethodName
			default:
				req, method = &pb.RewrapRequest{Name: key, KeyVersion: keyVersion, Items: rewItems}, pb.TransitService_Rewrap_FullMethodName
			}
			out, err := d.invoke(c.r.Context(), c, method, req, nil)
			if err != nil {
				return err
			}
			for j, i := range sent {
				r := results[i]
				switch resp := out.(type) {
				case *pb.EncryptResponse:
					res := resp.GetResults()[j]
					if err := itemError(res.GetError()); err != nil {
						r["_err"] = err
						continue
					}
					if r["ciphertext"], err = vaultText(res.GetCiphertext()); err != nil {
						return err
					}
					r["key_version"] = res.GetKeyVersion()
				case *pb.DecryptResponse:
					res := resp.GetResults()[j]
					if err := itemError(res.GetError()); err != nil {
						r["_err"] = err
						continue
					}
					r["plaintext"] = base64.StdEncoding.EncodeToString(res.GetPlaintext())
				case *pb.RewrapResponse:
					res := resp.GetResults()[j]
					if err := itemError(res.GetError()); err != nil {
						r["_err"] = err
						continue
					}
					if r["ciphertext"], err = vaultText(res.GetCiphertext()); err != nil {
						return err
					}
					r["key_version"] = res.GetKeyVersion()
				}
			}
		}
		return d.finish(w, c, b, results)
	}
}

// parseCryptItem reads one item of encrypt, decrypt or rewrap.
func parseCryptItem(op string, it *fields, ref string) (proto.Message, error) {
	if it.String("nonce") != "" {
		return nil, invalidf("nonce is not supported (nonces are random)")
	}
	ctxb, err := b64(it, "context")
	if err != nil {
		return nil, err
	}
	aad, err := b64(it, "associated_data")
	if err != nil {
		return nil, err
	}
	if op == "encrypt" {
		pt, err := b64(it, "plaintext")
		if err != nil {
			return nil, err
		}
		return &pb.EncryptItem{Plaintext: pt, Context: ctxb, AssociatedData: aad, Reference: ref}, nil
	}
	ct, err := parseCiphertext(it.String("ciphertext"))
	if err != nil {
		return nil, err
	}
	if op == "decrypt" {
		return &pb.DecryptItem{Ciphertext: ct, Context: ctxb, AssociatedData: aad, Reference: ref}, nil
	}
	return &pb.RewrapItem{Ciphertext: ct, Context: ctxb, AssociatedData: aad, Reference: ref}, nil
}

func (d *Door) transitDatakey(w http.ResponseWriter, c *call, f *fields, args []string) error {
	kind, key := args[0], args[1]
	ctxb, err := b64(f, "context")
	if err != nil {
		return err
	}
	if f.String("nonce") != "" {
		return invalidf("nonce is not supported (nonces are random)")
	}
	bits := uint32(f.Int("bits", 512))
	keyVersion := uint32(f.Int("key_version", 1<<32-1))
	if err := f.done(); err != nil {
		return err
	}
	out, err := d.invoke(c.r.Context(), c, pb.TransitService_GenerateDataKey_FullMethodName, &pb.GenerateDataKeyRequest{
		Name: key, Bits: bits, WrappedOnly: kind == "wrapped", KeyVersion: keyVersion,
		Items: []*pb.DataKeyItem{{Context: ctxb}},
	}, nil)
	if err != nil {
		return err
	}
	res := out.(*pb.GenerateDataKeyResponse).GetResults()
	if len(res) != 1 {
		return errs.New(errs.Unavailable, "vaultdoor: transit answered no data key")
	}
	if err := itemError(res[0].GetError()); err != nil {
		return err
	}
	ct, err := vaultText(res[0].GetCiphertext())
	if err != nil {
		return err
	}
	data := map[string]any{"ciphertext": ct, "key_version": res[0].GetKeyVersion()}
	if kind == "plaintext" {
		data["plaintext"] = base64.StdEncoding.EncodeToString(res[0].GetPlaintext())
	}
	writeData(w, c, http.StatusOK, data)
	return nil
}

func (d *Door) transitRandom(w http.ResponseWriter, c *call, f *fields, args []string) error {
	n := f.Int("bytes", 65536)
	format := f.String("format")
	source := f.String("source")
	for _, a := range args {
		if v, err := strconv.Atoi(a); err == nil {
			if v < 1 || v > 65536 {
				return invalidf("bytes: want 1 to 65536")
			}
			n = int64(v)
		} else {
			source = a
		}
	}
	if err := f.done(); err != nil {
		return err
	}
	switch source {
	case "", "platform", "seal", "all": // every source is the HSM's RNG here
	default:
		return invalidf("source %q: want platform, seal or all", source)
	}
	if n == 0 {
		n = 32
	}
	out, err := d.invoke(c.r.Context(), c, pb.TransitService_GenerateRandom_FullMethodName, &pb.GenerateRandomRequest{Bytes: uint32(n)}, nil)
	if err != nil {
		return err
	}
	rb := out.(*pb.GenerateRandomResponse).GetRandom()
	var s string
	switch format {
	case "", "base64":
		s = base64.StdEncoding.EncodeToString(rb)
	case "hex":
		s = hex.EncodeToString(rb)
	default:
		return invalidf("format %q: want base64 or hex", format)
	}
	writeData(w, c, http.StatusOK, map[string]any{"random_bytes": s})
	return nil
}
