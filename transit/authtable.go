package transit

import (
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/auth"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Fixed resources of the TransitService methods that name no key.
const (
	// ResourceKeys is what ListKeys needs CapList on.
	ResourceKeys = "transit/keys"
	// ResourceRandom is what GenerateRandom needs CapRead on: it reads the
	// HSM's RNG and changes nothing.
	ResourceRandom = "transit/random"
	// ResourceWrappingKey is what GetWrappingKey needs CapRead on (its
	// public half only).
	ResourceWrappingKey = "transit/wrapping-key"
)

// AuthTable maps every TransitService method to the capability it needs on
// the resource "transit/keys/<name>" taken from the request (for
// EncryptStream/DecryptStream: from every message). The choices beyond the
// obvious ones: RotateKey needs "rotate"; UpdateKeyConfig and
// Disable/EnableKeyVersion "update"; TrimKey and DeleteKey "delete" (both
// destroy material); BackupKey "export" like ExportKey (a backup is key
// material, if wrapped); RestoreKey and ImportKey (also with new_version)
// "create" on the target name; VerifyHmac "verify", like VerifySignature;
// ListKeys "list" on transit/keys; GetWrappingKey "read" on
// transit/wrapping-key (a public key); GenerateRandom "read" on
// transit/random (it reads the HSM's RNG and changes nothing).
func AuthTable() auth.Table {
	const svc = "/hsmgate.v1.TransitService/"
	key := func(get func(proto.Message) string) func(proto.Message) (string, error) {
		return func(m proto.Message) (string, error) {
			name := get(m)
			if err := checkName(name); err != nil {
				return "", err
			}
			return KeyPrefix + name, nil
		}
	}
	type named interface{ GetName() string }
	byName := key(func(m proto.Message) string {
		if n, ok := m.(named); ok {
			return n.GetName()
		}
		return ""
	})
	rule := func(c auth.Capability) auth.Rule { return auth.Rule{Capability: c, Resource: byName} }
	// The data plane changes no stored state and returns no key material
	// (a data key leaves wrapped, or as the caller's own plaintext key): one
	// audit line per call (auth.Rule.ReadOnly).
	readOnly := func(c auth.Capability) auth.Rule {
		r := rule(c)
		r.ReadOnly = true
		return r
	}
	return auth.Table{
		svc + "CreateKey":         rule(auth.CapCreate),
		svc + "GetKey":            readOnly(auth.CapRead),
		svc + "ListKeys":          {Capability: auth.CapList, Path: ResourceKeys, ReadOnly: true},
		svc + "UpdateKeyConfig":   rule(auth.CapUpdate),
		svc + "RotateKey":         rule(auth.CapRotate),
		svc + "DisableKeyVersion": rule(auth.CapUpdate),
		svc + "EnableKeyVersion":  rule(auth.CapUpdate),
		svc + "TrimKey":           rule(auth.CapDelete),
		svc + "DeleteKey":         rule(auth.CapDelete),
		svc + "ExportKey":         rule(auth.CapExport),
		svc + "BackupKey":         rule(auth.CapExport),
		svc + "RestoreKey": {Capability: auth.CapCreate, Resource: func(m proto.Message) (string, error) {
			r := m.(*pb.RestoreKeyRequest)
			name := r.GetName()
			if name == "" {
				name = BackupName(r.GetBackup())
			}
			return key(func(proto.Message) string { return name })(m)
		}},
		svc + "GetWrappingKey":  {Capability: auth.CapRead, Path: ResourceWrappingKey, ReadOnly: true},
		svc + "ImportKey":       rule(auth.CapCreate),
		svc + "Encrypt":         readOnly(auth.CapEncrypt),
		svc + "Decrypt":         readOnly(auth.CapDecrypt),
		svc + "Rewrap":          readOnly(auth.CapRewrap),
		svc + "GenerateDataKey": readOnly(auth.CapDatakey),
		svc + "SignData":        readOnly(auth.CapSign),
		svc + "VerifySignature": readOnly(auth.CapVerify),
		svc + "ComputeHmac":     readOnly(auth.CapHMAC),
		svc + "VerifyHmac":      readOnly(auth.CapVerify),
		svc + "GenerateRandom":  {Capability: auth.CapRead, Path: ResourceRandom, ReadOnly: true},
		svc + "EncryptStream": {Capability: auth.CapEncrypt, Resource: key(func(m proto.Message) string {
			return m.(*pb.EncryptStreamRequest).GetRequest().GetName()
		})},
		svc + "DecryptStream": {Capability: auth.CapDecrypt, Resource: key(func(m proto.Message) string {
			return m.(*pb.DecryptStreamRequest).GetRequest().GetName()
		})},
	}
}
