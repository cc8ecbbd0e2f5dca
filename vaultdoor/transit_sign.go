package vaultdoor

import (
	"net/http"

	"google.golang.org/protobuf/proto"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

var hashes = map[string]pb.TransitHashAlgorithm{
	"":         pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_UNSPECIFIED,
	"sha2-256": pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_256,
	"sha2-384": pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_384,
	"sha2-512": pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_512,
}

// hmacSizes is the MAC size of each algorithm an hmac/verify path may name:
// an hsmgate HMAC key has one hash, so a request naming another is refused.
var hmacSizes = map[string]int{"sha2-256": 32, "sha2-384": 48, "sha2-512": 64}

// signParams are the request-level fields of sign and verify.
type signParams struct {
	hash      pb.TransitHashAlgorithm
	hashName  string
	prehashed bool
	sigAlg    pb.TransitSignatureAlgorithm
	version   uint32
}

func readSignParams(f *fields, pathHash string) (*signParams, error) {
	p := &signParams{hashName: f.String("hash_algorithm"), prehashed: f.Bool("prehashed")}
	if alg := f.String("algorithm"); alg != "" { // hmac's name for it
		p.hashName = alg
	}
	if pathHash != "" {
		p.hashName = pathHash
	}
	h, ok := hashes[p.hashName]
	if !ok {
		return nil, invalidf("hash algorithm %q: want sha2-256, sha2-384 or sha2-512", p.hashName)
	}
	p.hash = h
	switch s := f.String("signature_algorithm"); s {
	case "":
	case "pss":
		p.sigAlg = pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PSS
	case "pkcs1v15":
		p.sigAlg = pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PKCS1V15
	default:
		return nil, invalidf("signature_algorithm %q: want pss or pkcs1v15", s)
	}
	if m := f.String("marshaling_algorithm"); m != "" && m != "asn1" {
		return nil, invalidf("marshaling_algorithm %q: only asn1 is supported", m)
	}
	if s := f.String("salt_length"); s != "" && s != "auto" && s != "hash" {
		return nil, invalidf("salt_length %q: the salt is the hash's length here", s)
	}
	p.version = uint32(f.Int("key_version", 1<<32-1))
	return p, nil
}

// transitSignVerify serves sign, verify and hmac.
func (d *Door) transitSignVerify(op string) handler {
	return func(w http.ResponseWriter, c *call, f *fields, args []string) error {
		key, pathHash := args[0], ""
		if len(args) == 2 {
			pathHash = args[1]
		}
		b := d.readBatch(f)
		p, err := readSignParams(f, pathHash)
		if err != nil {
			return err
		}
		if b.isBatch {
			if err := f.done(); err != nil {
				return err
			}
		}
		results := make([]result, len(b.items))
		var sent []int
		var signItems []*pb.SignItem
		var verItems []*pb.VerifyItem
		var macItems []*pb.HmacItem
		var vmacItems []*pb.VerifyHmacItem
		useHMAC := false
		for i, it := range b.items {
			ref := it.String("reference")
			results[i] = result{}
			if b.isBatch {
				results[i]["reference"] = ref
			}
			check := func() error { return nil }
			if b.isBatch {
				check = it.done
			}
			err := signItem(op, it, p, ref, check, &signItems, &verItems, &macItems, &vmacItems, &useHMAC)
			if err != nil {
				if !b.isBatch {
					return err
				}
				results[i]["_err"] = err
				continue
			}
			sent = append(sent, i)
		}
		if !b.isBatch {
			if err := f.done(); err != nil {
				return err
			}
		}
		if op == "verify" && len(verItems) > 0 && len(vmacItems) > 0 {
			return invalidf("a batch cannot mix signature and hmac")
		}
		if len(sent) > 0 {
			var (
				req    proto.Message
				method string
			)
			switch {
			case op == "sign":
				req, method = &pb.SignDataRequest{Name: key, KeyVersion: p.version, HashAlgorithm: p.hash, Prehashed: p.prehashed, SignatureAlgorithm: p.sigAlg, Items: signItems}, pb.TransitService_SignData_FullMethodName
			case op == "hmac":
				req, method = &pb.ComputeHmacRequest{Name: key, KeyVersion: p.version, Items: macItems}, pb.TransitService_ComputeHmac_FullMethodName
			case useHMAC:
				req, method = &pb.VerifyHmacRequest{Name: key, Items: vmacItems}, pb.TransitService_VerifyHmac_FullMethodName
			default:
				req, method = &pb.VerifySignatureRequest{Name: key, HashAlgorithm: p.hash, Prehashed: p.prehashed, SignatureAlgorithm: p.sigAlg, Items: verItems}, pb.TransitService_VerifySignature_FullMethodName
			}
			out, err := d.invoke(c.r.Context(), c, method, req, nil)
			if err != nil {
				return err
			}
			for j, i := range sent {
				r := results[i]
				switch resp := out.(type) {
				case *pb.SignDataResponse:
					res := resp.GetResults()[j]
					if err := itemError(res.GetError()); err != nil {
						r["_err"] = err
						continue
					}
					r["signature"], r["key_version"] = versioned(res.GetKeyVersion(), res.GetSignature()), res.GetKeyVersion()
				case *pb.ComputeHmacResponse:
					res := resp.GetResults()[j]
					if err := itemError(res.GetError()); err != nil {
						r["_err"] = err
						continue
					}
					if n, ok := hmacSizes[p.hashName]; ok && n != len(res.GetHmac()) {
						r["_err"] = invalidf("the key's hash is not %s", p.hashName)
						continue
					}
					r["hmac"], r["key_version"] = versioned(res.GetKeyVersion(), res.GetHmac()), res.GetKeyVersion()
				case *pb.VerifySignatureResponse:
					res := resp.GetResults()[j]
					if err := itemError(res.GetError()); err != nil {
						r["_err"] = err
						continue
					}
					r["valid"] = res.GetValid()
				case *pb.VerifyHmacResponse:
					res := resp.GetResults()[j]
					if err := itemError(res.GetError()); err != nil {
						r["_err"] = err
						continue
					}
					r["valid"] = res.GetValid()
				}
			}
		}
		return d.finish(w, c, b, results)
	}
}

// signItem parses one item of sign, verify or hmac and queues it.
func signItem(op string, it *fields, p *signParams, ref string, check func() error,
	signItems *[]*pb.SignItem, verItems *[]*pb.VerifyItem, macItems *[]*pb.HmacItem, vmacItems *[]*pb.VerifyHmacItem, useHMAC *bool) error {
	in, err := b64(it, "input")
	if err != nil {
		return err
	}
	if ctx, err := b64(it, "context"); err != nil || len(ctx) > 0 {
		return invalidf("context is not supported for signing keys here")
	}
	sig, mac := "", ""
	if op == "verify" {
		sig, mac = it.String("signature"), it.String("hmac")
	}
	if err := check(); err != nil {
		return err
	}
	switch op {
	case "sign":
		*signItems = append(*signItems, &pb.SignItem{Input: in, Reference: ref})
	case "hmac":
		*macItems = append(*macItems, &pb.HmacItem{Input: in, Reference: ref})
	default:
		switch {
		case sig != "" && mac != "":
			return invalidf("give signature or hmac, not both")
		case mac != "":
			v, m, err := parseVersioned("hmac", mac)
			if err != nil {
				return err
			}
			if n, ok := hmacSizes[p.hashName]; ok && n != len(m) {
				return invalidf("hmac is not a %s MAC", p.hashName)
			}
			*useHMAC = true
			*vmacItems = append(*vmacItems, &pb.VerifyHmacItem{Input: in, Hmac: m, KeyVersion: v, Reference: ref})
		case sig != "":
			v, s, err := parseVersioned("signature", sig)
			if err != nil {
				return err
			}
			*verItems = append(*verItems, &pb.VerifyItem{Input: in, Signature: s, KeyVersion: v, Reference: ref})
		default:
			return invalidf("signature or hmac is required")
		}
	}
	return nil
}
