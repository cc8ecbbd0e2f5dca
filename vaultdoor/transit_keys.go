package vaultdoor

import (
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// keyTypes maps Vault's key type names (and hsmgate's own) to transit's.
// Vault's "hmac" takes key_size 32 (default) or 64.
var keyTypes = map[string]pb.TransitKeyType{
	"aes256-gcm96":       pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM,
	"aes256-gcm":         pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM,
	"xchacha20-poly1305": pb.TransitKeyType_TRANSIT_KEY_TYPE_XCHACHA20_POLY1305,
	"hmac-sha256":        pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256,
	"hmac-sha512":        pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA512,
	"ecdsa-p256":         pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256,
	"ecdsa-p384":         pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P384,
	"ed25519":            pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519,
	"rsa-2048":           pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_2048,
	"rsa-3072":           pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_3072,
	"rsa-4096":           pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_4096,
}

// vaultKeyType is the name Vault gives a transit key type.
func vaultKeyType(t pb.TransitKeyType) string {
	switch t {
	case pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM:
		return "aes256-gcm96"
	case pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256, pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA512:
		return "hmac"
	}
	for n, k := range keyTypes {
		if k == t && n != "aes256-gcm" {
			return n
		}
	}
	return "unknown"
}

func (d *Door) transitListKeys(w http.ResponseWriter, c *call, _ *fields, _ []string) error {
	var names []string
	token := ""
	for range 1000 { // bounded: 1000 pages of 1000 names
		out, err := d.invoke(c.r.Context(), c, pb.TransitService_ListKeys_FullMethodName, &pb.ListKeysRequest{PageToken: token}, nil)
		if err != nil {
			return err
		}
		resp := out.(*pb.ListKeysResponse)
		names = append(names, resp.GetNames()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(names) == 0 {
		return errs.New(errs.NotFound, "vaultdoor: no keys")
	}
	writeData(w, c, http.StatusOK, map[string]any{"keys": names})
	return nil
}

func (d *Door) transitReadKey(w http.ResponseWriter, c *call, _ *fields, args []string) error {
	out, err := d.invoke(c.r.Context(), c, pb.TransitService_GetKey_FullMethodName, &pb.GetKeyRequest{Name: args[0]}, nil)
	if err != nil {
		return err
	}
	writeData(w, c, http.StatusOK, keyData(out.(*pb.GetKeyResponse).GetKey()))
	return nil
}

// keyData shapes a key as Vault's keys/<name> read does.
func keyData(k *pb.TransitKey) map[string]any {
	t := k.GetType()
	asym := t >= pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256
	aead := t == pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM || t == pb.TransitKeyType_TRANSIT_KEY_TYPE_XCHACHA20_POLY1305
	keys := map[string]any{}
	for _, v := range k.GetVersions() {
		if v.GetState() == pb.TransitVersionState_TRANSIT_VERSION_STATE_DESTROYED {
			continue
		}
		n := strconv.FormatUint(uint64(v.GetVersion()), 10)
		if asym {
			keys[n] = map[string]any{
				"public_key": v.GetPublicKeyPem(), "creation_time": v.GetCreateTime().AsTime().UTC().Format(time.RFC3339Nano),
				"name": vaultKeyType(t),
			}
		} else {
			keys[n] = v.GetCreateTime().AsTime().Unix()
		}
	}
	data := map[string]any{
		"name": k.GetName(), "type": vaultKeyType(t), "keys": keys,
		"latest_version": k.GetLatestVersion(), "min_decryption_version": k.GetMinDecryptionVersion(),
		"min_encryption_version": k.GetMinEncryptionVersion(), "min_available_version": 0,
		"deletion_allowed": k.GetDeletionAllowed(), "derived": k.GetDerived(), "exportable": k.GetExportable(),
		"allow_plaintext_backup": false, "convergent_encryption": k.GetConvergent(), "imported_key": k.GetImported(),
		"supports_encryption": aead, "supports_decryption": aead, "supports_derivation": aead,
		"supports_signing": asym, "auto_rotate_period": int64(k.GetAutoRotatePeriod().AsDuration() / time.Second),
		"residency": residencyName(k.GetResidency()),
	}
	if t == pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256 {
		data["key_size"] = 32
	} else if t == pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA512 {
		data["key_size"] = 64
	}
	return data
}

func residencyName(r pb.TransitResidency) string {
	if r == pb.TransitResidency_TRANSIT_RESIDENCY_HSM {
		return "hsm"
	}
	return "wrapped"
}

// transitCreateKey serves POST keys/<name>: Vault's fields, plus hsmgate's
// residency ("wrapped" or "hsm"). Creating a key that exists answers the
// key, as Vault does, when the caller may read it.
func (d *Door) transitCreateKey(w http.ResponseWriter, c *call, f *fields, args []string) error {
	typ := f.String("type")
	if typ == "" {
		typ = "aes256-gcm96"
	}
	size := f.Int("key_size", 64)
	req := &pb.CreateKeyRequest{
		Name: args[0], Derived: f.Bool("derived"), Convergent: f.Bool("convergent_encryption"),
		Exportable: f.Bool("exportable"), DeletionAllowed: f.Bool("deletion_allowed"),
	}
	if p := f.Duration("auto_rotate_period"); p > 0 {
		req.AutoRotatePeriod = durationpb.New(p)
	}
	if f.Bool("allow_plaintext_backup") {
		return invalidf("allow_plaintext_backup: backups are always wrapped under the KEK here")
	}
	if f.String("managed_key_name") != "" || f.String("managed_key_id") != "" {
		return invalidf("managed keys are not supported (use residency hsm)")
	}
	switch r := f.String("residency"); r {
	case "", "wrapped":
	case "hsm":
		req.Residency = pb.TransitResidency_TRANSIT_RESIDENCY_HSM
	default:
		return invalidf("residency %q: want wrapped or hsm", r)
	}
	if err := f.done(); err != nil {
		return err
	}
	if typ == "hmac" {
		switch size {
		case 0, 32:
			req.Type = pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256
		case 64:
			req.Type = pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA512
		default:
			return invalidf("key_size %d: hmac keys are 32 or 64 bytes here", size)
		}
	} else {
		t, ok := keyTypes[typ]
		if !ok {
			return invalidf("key type %q is not supported", typ)
		}
		if size != 0 {
			return invalidf("key_size is for hmac keys")
		}
		req.Type = t
	}
	out, err := d.invoke(c.r.Context(), c, pb.TransitService_CreateKey_FullMethodName, req, nil)
	if errs.Code(err) == codes.AlreadyExists {
		if rerr := d.transitReadKey(w, c, nil, args); rerr == nil {
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	writeData(w, c, http.StatusOK, keyData(out.(*pb.CreateKeyResponse).GetKey()))
	return nil
}

func (d *Door) transitDeleteKey(w http.ResponseWriter, c *call, _ *fields, args []string) error {
	if _, err := d.invoke(c.r.Context(), c, pb.TransitService_DeleteKey_FullMethodName, &pb.DeleteKeyRequest{Name: args[0]}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (d *Door) transitRotate(w http.ResponseWriter, c *call, f *fields, args []string) error {
	if f.String("managed_key_name") != "" {
		return invalidf("managed keys are not supported")
	}
	if err := f.done(); err != nil {
		return err
	}
	out, err := d.invoke(c.r.Context(), c, pb.TransitService_RotateKey_FullMethodName, &pb.RotateKeyRequest{Name: args[0]}, nil)
	if err != nil {
		return err
	}
	writeData(w, c, http.StatusOK, keyData(out.(*pb.RotateKeyResponse).GetKey()))
	return nil
}

// transitConfig serves keys/<name>/config: only the fields present change.
func (d *Door) transitConfig(w http.ResponseWriter, c *call, f *fields, args []string) error {
	req := &pb.UpdateKeyConfigRequest{Name: args[0]}
	if f.Has("min_decryption_version") {
		v := uint32(f.Int("min_decryption_version", 1<<32-1))
		req.MinDecryptionVersion = &v
	}
	if f.Has("min_encryption_version") {
		v := uint32(f.Int("min_encryption_version", 1<<32-1))
		req.MinEncryptionVersion = &v
	}
	if f.Has("deletion_allowed") {
		v := f.Bool("deletion_allowed")
		req.DeletionAllowed = &v
	}
	if f.Has("exportable") {
		v := f.Bool("exportable")
		req.Exportable = &v
	}
	if f.Has("auto_rotate_period") {
		req.AutoRotatePeriod = durationpb.New(f.Duration("auto_rotate_period"))
	}
	if f.Bool("allow_plaintext_backup") {
		return invalidf("allow_plaintext_backup: backups are always wrapped under the KEK here")
	}
	if err := f.done(); err != nil {
		return err
	}
	out, err := d.invoke(c.r.Context(), c, pb.TransitService_UpdateKeyConfig_FullMethodName, req, nil)
	if err != nil {
		return err
	}
	writeData(w, c, http.StatusOK, keyData(out.(*pb.UpdateKeyConfigResponse).GetKey()))
	return nil
}
