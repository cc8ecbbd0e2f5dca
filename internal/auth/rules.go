package auth

// CONTRACT (written first so that engine packages can declare their RPC
// table while the auth package is being built; the auth helper owns this file
// and may extend it, keeping these names).

import "google.golang.org/protobuf/proto"

// Capability is one right a policy rule can grant or deny.
type Capability string

const (
	CapRead    Capability = "read"
	CapList    Capability = "list"
	CapCreate  Capability = "create"
	CapUpdate  Capability = "update"
	CapDelete  Capability = "delete"
	CapEncrypt Capability = "encrypt"
	CapDecrypt Capability = "decrypt"
	CapRewrap  Capability = "rewrap"
	CapDatakey Capability = "datakey"
	CapSign    Capability = "sign"
	CapVerify  Capability = "verify"
	CapHMAC    Capability = "hmac"
	CapExport  Capability = "export"
	CapRotate  Capability = "rotate"
	CapIssue   Capability = "issue"
	CapRevoke  Capability = "revoke"
	CapSSHSign Capability = "ssh-sign"
	CapAdmin   Capability = "admin"
)

// Rule says what one RPC needs. The interceptor refuses any RPC that has no Rule.
type Rule struct {
	// Public RPCs need no identity (grpc health, reflection). Use sparingly.
	Public bool
	// Authenticated-only RPCs need an identity but no capability (e.g. token self-lookup).
	AuthenticatedOnly bool
	// Capability needed on Resource.
	Capability Capability
	// Resource returns the resource path the request acts on, e.g.
	// "transit/keys/payments". For client/bidi streams it is called on every
	// received message. A nil Resource means the fixed path in Path.
	Resource func(msg proto.Message) (string, error)
	// Path is the fixed resource when Resource is nil (e.g. "sys/status").
	Path string
}

// Table maps full gRPC method names ("/hsmgate.v1.TransitService/Encrypt") to rules.
type Table map[string]Rule
