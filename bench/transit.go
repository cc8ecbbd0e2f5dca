package bench

import (
	"cmp"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/hsm"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func init() {
	register(&scenario{name: "transit-encrypt", summary: "TransitService.Encrypt, one request of --batch plaintexts of --payload bytes",
		keyTypes: []string{"aes256-gcm"}, residency: true, prepare: prepareTransitAEAD(true)})
	register(&scenario{name: "transit-decrypt", summary: "TransitService.Decrypt of ciphertexts made by Encrypt",
		keyTypes: []string{"aes256-gcm"}, residency: true, prepare: prepareTransitAEAD(false)})
	register(&scenario{name: "transit-sign", summary: "TransitService.SignData (SHA-256 of --payload bytes; ECDSA DER, RSA PSS, Ed25519 pure)",
		keyTypes: []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072"}, residency: true, prepare: prepareTransitSign})
	register(&scenario{name: "transit-hmac", summary: "TransitService.ComputeHmac",
		keyTypes: []string{"hmac-sha256", "hmac-sha512"}, residency: true, prepare: prepareTransitHMAC})
}

var transitKeyTypes = map[string]hsmgatev1.TransitKeyType{
	"aes256-gcm":  hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM,
	"hmac-sha256": hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256,
	"hmac-sha512": hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA512,
	"ecdsa-p256":  hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256,
	"ecdsa-p384":  hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P384,
	"ed25519":     hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_ED25519,
	"rsa-2048":    hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_RSA_2048,
	"rsa-3072":    hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_RSA_3072,
}

func residencyOf(s string) (hsmgatev1.TransitResidency, error) {
	switch s {
	case "", "wrapped":
		return hsmgatev1.TransitResidency_TRANSIT_RESIDENCY_WRAPPED, nil
	case "hsm":
		return hsmgatev1.TransitResidency_TRANSIT_RESIDENCY_HSM, nil
	}
	return 0, fmt.Errorf("bench: --residency %q: want wrapped or hsm", s)
}

// createTransitKey makes the run's key on the server.
func createTransitKey(ctx context.Context, env *Env, p Params) (string, error) {
	res, err := residencyOf(p.Residency)
	if err != nil {
		return "", err
	}
	name := "bench-" + env.Prefix
	_, err = hsmgatev1.NewTransitServiceClient(env.Conns[0]).CreateKey(ctx, &hsmgatev1.CreateKeyRequest{
		Name: name, Type: transitKeyTypes[p.KeyType], Residency: res, DeletionAllowed: true,
	})
	if err != nil {
		return "", fmt.Errorf("bench: create transit key: %w", err)
	}
	return name, nil
}

func deleteTransitKey(env *Env, name string) {
	_, _ = hsmgatev1.NewTransitServiceClient(env.Conns[0]).DeleteKey(context.Background(), &hsmgatev1.DeleteKeyRequest{Name: name})
}

// itemErr is the first failed item's error.
func itemErr(sts ...*spb.Status) error {
	for _, st := range sts {
		if st != nil && st.GetCode() != 0 {
			return status.FromProto(st).Err()
		}
	}
	return nil
}

func payload(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func prepareTransitAEAD(encrypt bool) func(ctx context.Context, env *Env, p Params) (*workload, error) {
	return func(ctx context.Context, env *Env, p Params) (*workload, error) {
		name, err := createTransitKey(ctx, env, p)
		if err != nil {
			return nil, err
		}
		pt := payload(p.Payload)
		w := &workload{Close: func() { deleteTransitKey(env, name) }}
		tc := hsmgatev1.NewTransitServiceClient(env.Conns[0])
		if encrypt {
			w.Describe = fmt.Sprintf("Encrypt aes256-gcm (%s), %d-byte plaintexts", p.Residency, p.Payload)
			w.VaultSetup = func(n VaultNames) *vaultRequest { return vaultCreateKey(n, cmp.Or(n.Key, name), "aes256-gcm") }
			w.Vault = func(batch int, n VaultNames) (*vaultRequest, error) {
				return vaultTransit(n.TransitMount+"/encrypt/"+cmp.Or(n.Key, name), "plaintext", "ciphertext", pt, batch), nil
			}
			w.Request = func(batch int) (request, error) {
				req := &hsmgatev1.EncryptRequest{Name: name, Items: make([]*hsmgatev1.EncryptItem, batch)}
				for i := range req.Items {
					req.Items[i] = &hsmgatev1.EncryptItem{Plaintext: pt}
				}
				return request{Msg: req, Call: func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
					resp, err := hsmgatev1.NewTransitServiceClient(cc).Encrypt(ctx, req)
					if err != nil {
						return nil, err
					}
					for _, r := range resp.Results {
						if err := itemErr(r.Error); err != nil {
							return nil, err
						}
					}
					return resp, nil
				}}, nil
			}
		} else {
			w.Describe = fmt.Sprintf("Decrypt aes256-gcm (%s), %d-byte plaintexts", p.Residency, p.Payload)
			w.Request = func(batch int) (request, error) {
				// Encrypt the batch once (in chunks the server accepts), then decrypt it over and over.
				req := &hsmgatev1.DecryptRequest{Name: name}
				for len(req.Items) < batch {
					n := min(batch-len(req.Items), 1000)
					ereq := &hsmgatev1.EncryptRequest{Name: name, Items: make([]*hsmgatev1.EncryptItem, n)}
					for i := range ereq.Items {
						ereq.Items[i] = &hsmgatev1.EncryptItem{Plaintext: pt}
					}
					resp, err := tc.Encrypt(ctx, ereq)
					if err != nil {
						return request{}, fmt.Errorf("bench: encrypt for decrypt: %w", err)
					}
					for _, r := range resp.Results {
						if err := itemErr(r.Error); err != nil {
							return request{}, err
						}
						req.Items = append(req.Items, &hsmgatev1.DecryptItem{Ciphertext: r.Ciphertext})
					}
				}
				return request{Msg: req, Call: func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
					resp, err := hsmgatev1.NewTransitServiceClient(cc).Decrypt(ctx, req)
					if err != nil {
						return nil, err
					}
					for _, r := range resp.Results {
						if err := itemErr(r.Error); err != nil {
							return nil, err
						}
					}
					return resp, nil
				}}, nil
			}
		}
		// Software: Go's AES-256-GCM with a random 12-byte nonce, as the wrapped path does.
		key := payload(32)
		blk, _ := aes.NewCipher(key)
		gcm, _ := cipher.NewGCM(blk)
		nonce0 := payload(12)
		ct0 := gcm.Seal(nil, nonce0, pt, nil)
		if encrypt {
			w.SoftwareOp = "Go AES-256-GCM Seal (random nonce)"
			w.Software = func(context.Context) error {
				var nonce [12]byte
				_, _ = rand.Read(nonce[:])
				gcm.Seal(nil, nonce[:], pt, nil)
				return nil
			}
		} else {
			w.SoftwareOp = "Go AES-256-GCM Open"
			w.Software = func(context.Context) error {
				_, err := gcm.Open(nil, nonce0, ct0, nil)
				return err
			}
		}
		if env.HSM != nil {
			label := env.hsmLabel("aes")
			if err := env.HSM.GenerateKey(ctx, label, hsm.AES256); err != nil {
				return nil, fmt.Errorf("bench: HSM key: %w", err)
			}
			prev := w.Close
			w.Close = func() { prev(); _ = env.HSM.DestroyKey(context.Background(), label) }
			a, err := env.HSM.AEAD(ctx, label)
			if err != nil {
				return nil, fmt.Errorf("bench: HSM key: %w", err)
			}
			hct, err := a.SealContext(ctx, nil, nonce0, pt, nil)
			if err != nil {
				return nil, fmt.Errorf("bench: HSM seal: %w", err)
			}
			if encrypt {
				w.HSMOp = "PKCS#11 CKM_AES_GCM encrypt (hsm.AEAD.SealContext)"
				w.HSM = func(ctx context.Context) error {
					var nonce [12]byte
					_, _ = rand.Read(nonce[:])
					_, err := a.SealContext(ctx, nil, nonce[:], pt, nil)
					return err
				}
			} else {
				w.HSMOp = "PKCS#11 CKM_AES_GCM decrypt (hsm.AEAD.OpenContext)"
				w.HSM = func(ctx context.Context) error {
					_, err := a.OpenContext(ctx, nil, nonce0, hct, nil)
					return err
				}
			}
		}
		return w, nil
	}
}

// goSigner makes a Go key of a transit/ssh/pki key type name.
func goSigner(kt string) (crypto.Signer, crypto.SignerOpts, error) {
	switch kt {
	case "ecdsa-p256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return k, crypto.SHA256, err
	case "ecdsa-p384":
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		return k, crypto.SHA384, err
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, crypto.Hash(0), err
	case "rsa-2048", "rsa-3072", "rsa-4096":
		bits := map[string]int{"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}[kt]
		k, err := rsa.GenerateKey(rand.Reader, bits)
		return k, crypto.SHA256, err
	}
	return nil, nil, fmt.Errorf("bench: key type %q", kt)
}

var hsmKeyTypes = map[string]hsm.KeyType{
	"ecdsa-p256": hsm.ECDSAP256, "ecdsa-p384": hsm.ECDSAP384, "ed25519": hsm.Ed25519,
	"rsa-2048": hsm.RSA2048, "rsa-3072": hsm.RSA3072, "rsa-4096": hsm.RSA4096,
}

// digestFor is what a signer of this kind signs for msg: the hash, or the
// message itself for Ed25519.
func digestFor(opts crypto.SignerOpts, msg []byte) []byte {
	switch opts.HashFunc() {
	case crypto.SHA256:
		d := sha256.Sum256(msg)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(msg)
		return d[:]
	}
	return msg
}

// signLimits sets w's software and HSM limits to signing msg with a key of
// type kt (opts overrides the hash when not nil: RSA PSS, SSH's SHA-512).
func signLimits(ctx context.Context, env *Env, w *workload, kt string, msg []byte, opts crypto.SignerOpts) error {
	gk, defOpts, err := goSigner(kt)
	if err != nil {
		return err
	}
	if opts == nil {
		opts = defOpts
	}
	digest := digestFor(opts, msg)
	w.SoftwareOp = fmt.Sprintf("Go %s sign (%T)", kt, gk)
	w.Software = func(context.Context) error {
		_, err := gk.Sign(rand.Reader, digest, opts)
		return err
	}
	if env.HSM == nil {
		return nil
	}
	label := env.hsmLabel(kt)
	if err := env.HSM.GenerateKey(ctx, label, hsmKeyTypes[kt]); err != nil {
		return fmt.Errorf("bench: HSM key: %w", err)
	}
	prev := w.Close
	w.Close = func() {
		if prev != nil {
			prev()
		}
		_ = env.HSM.DestroyKey(context.Background(), label)
	}
	s, err := env.HSM.Signer(ctx, label)
	if err != nil {
		return fmt.Errorf("bench: HSM key: %w", err)
	}
	w.HSMOp = fmt.Sprintf("PKCS#11 %s sign (hsm.Signer.SignContext)", kt)
	w.HSM = func(ctx context.Context) error {
		_, err := s.SignContext(ctx, digest, opts)
		return err
	}
	return w.HSM(ctx)
}

func prepareTransitSign(ctx context.Context, env *Env, p Params) (*workload, error) {
	name, err := createTransitKey(ctx, env, p)
	if err != nil {
		return nil, err
	}
	msg := payload(p.Payload)
	w := &workload{Close: func() { deleteTransitKey(env, name) },
		Describe: fmt.Sprintf("SignData %s (%s), %d-byte messages", p.KeyType, p.Residency, p.Payload)}
	w.VaultSetup = func(n VaultNames) *vaultRequest { return vaultCreateKey(n, cmp.Or(n.Key, name), p.KeyType) }
	w.Vault = func(batch int, n VaultNames) (*vaultRequest, error) {
		return vaultTransit(n.TransitMount+"/sign/"+cmp.Or(n.Key, name), "input", "signature", msg, batch), nil
	}
	w.Request = func(batch int) (request, error) {
		req := &hsmgatev1.SignDataRequest{Name: name, Items: make([]*hsmgatev1.SignItem, batch)}
		for i := range req.Items {
			req.Items[i] = &hsmgatev1.SignItem{Input: msg}
		}
		return request{Msg: req, Call: func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
			resp, err := hsmgatev1.NewTransitServiceClient(cc).SignData(ctx, req)
			if err != nil {
				return nil, err
			}
			for _, r := range resp.Results {
				if err := itemErr(r.Error); err != nil {
					return nil, err
				}
			}
			return resp, nil
		}}, nil
	}
	var opts crypto.SignerOpts
	if p.KeyType == "rsa-2048" || p.KeyType == "rsa-3072" {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	}
	if err := signLimits(ctx, env, w, p.KeyType, msg, opts); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

func prepareTransitHMAC(ctx context.Context, env *Env, p Params) (*workload, error) {
	name, err := createTransitKey(ctx, env, p)
	if err != nil {
		return nil, err
	}
	msg := payload(p.Payload)
	w := &workload{Close: func() { deleteTransitKey(env, name) },
		Describe: fmt.Sprintf("ComputeHmac %s (%s), %d-byte messages", p.KeyType, p.Residency, p.Payload)}
	w.Request = func(batch int) (request, error) {
		req := &hsmgatev1.ComputeHmacRequest{Name: name, Items: make([]*hsmgatev1.HmacItem, batch)}
		for i := range req.Items {
			req.Items[i] = &hsmgatev1.HmacItem{Input: msg}
		}
		return request{Msg: req, Call: func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
			resp, err := hsmgatev1.NewTransitServiceClient(cc).ComputeHmac(ctx, req)
			if err != nil {
				return nil, err
			}
			for _, r := range resp.Results {
				if err := itemErr(r.Error); err != nil {
					return nil, err
				}
			}
			return resp, nil
		}}, nil
	}
	h := sha256.New
	if p.KeyType == "hmac-sha512" {
		h = sha512.New
	}
	key := payload(32)
	w.SoftwareOp = "Go HMAC (" + p.KeyType + ")"
	w.Software = func(context.Context) error {
		m := hmac.New(h, key)
		m.Write(msg)
		m.Sum(nil)
		return nil
	}
	if env.HSM == nil {
		return w, nil
	}
	// The HSM limit: the same MAC on a token key of the same type.
	label, kt, ch := env.hsmLabel(p.KeyType), hsm.HMACSHA256, crypto.SHA256
	if p.KeyType == "hmac-sha512" {
		kt, ch = hsm.HMACSHA512, crypto.SHA512
	}
	if err := env.HSM.GenerateKey(ctx, label, kt); err != nil {
		return nil, fmt.Errorf("bench: HSM key: %w", err)
	}
	prev := w.Close
	w.Close = func() { prev(); _ = env.HSM.DestroyKey(context.Background(), label) }
	mac, err := env.HSM.MAC(ctx, label, ch)
	if err != nil {
		return nil, fmt.Errorf("bench: HSM key: %w", err)
	}
	w.HSMOp = fmt.Sprintf("PKCS#11 %s (hsm.MAC.SumContext)", p.KeyType)
	w.HSM = func(ctx context.Context) error {
		_, err := mac.SumContext(ctx, msg)
		return err
	}
	return w, nil
}

func isRSA(kt string) bool { return len(kt) > 4 && kt[:4] == "rsa-" }
