package auth

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

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
	// Anonymous unary RPCs also admit a request that carries no credentials
	// at all: it runs without an identity, rate limited per client address
	// (RateLimitConfig.Anonymous), unaudited like public RPCs, and marked
	// (IsAnonymous) so that the handler answers its public part only. A
	// request with credentials is authenticated and authorised by
	// Capability and Path as usual; bad credentials are refused.
	Anonymous bool
	// Capability needed on Resource.
	Capability Capability
	// Resource returns the resource path the request acts on, e.g.
	// "transit/keys/payments". For client/bidi streams it is called on every
	// received message. A nil Resource means the fixed path in Path.
	Resource func(msg proto.Message) (string, error)
	// Path is the fixed resource when Resource is nil (e.g. "sys/status").
	Path string
	// ReadOnly unary RPCs change no stored state and hand out no key
	// material (encrypt, decrypt, sign, verify, MAC, reads): each leaves one
	// audit line of type "call", written after the handler with the status
	// and latency and before the answer leaves, instead of a "request" line
	// before the handler and a "response" line after it. Fail closed all the
	// same: a line that cannot be written fails the call and its result is
	// dropped. Every other RPC (it writes, or exports) keeps its request
	// line before the handler runs, so that nothing changes unaudited.
	ReadOnly bool
}

// Table maps full gRPC method names ("/hsmgate.v1.TransitService/Encrypt") to rules.
type Table map[string]Rule

// AllCapabilities lists every capability, in a stable order.
var AllCapabilities = []Capability{
	CapRead, CapList, CapCreate, CapUpdate, CapDelete, CapEncrypt, CapDecrypt,
	CapRewrap, CapDatakey, CapSign, CapVerify, CapHMAC, CapExport, CapRotate,
	CapIssue, CapRevoke, CapSSHSign, CapAdmin,
}

// Valid reports whether c is a known capability.
func (c Capability) Valid() bool {
	for _, k := range AllCapabilities {
		if c == k {
			return true
		}
	}
	return false
}

// Merge returns one table holding the rules of all tables. A method present in
// two tables is an error (two packages claiming one RPC is a wiring mistake).
func Merge(tables ...Table) (Table, error) {
	out := Table{}
	for _, t := range tables {
		for m, r := range t {
			if _, dup := out[m]; dup {
				return nil, fmt.Errorf("auth: method %s is in two tables", m)
			}
			out[m] = r
		}
	}
	return out, nil
}

// PublicTable marks grpc health and server reflection (v1 and v1alpha) public.
func PublicTable() Table {
	return Table{
		"/grpc.health.v1.Health/Check":                                   {Public: true},
		"/grpc.health.v1.Health/Watch":                                   {Public: true},
		"/grpc.health.v1.Health/List":                                    {Public: true},
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {Public: true},
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {Public: true},
	}
}

// ServiceInfoProvider is what CheckTableCovers needs of a *grpc.Server.
type ServiceInfoProvider interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
}

// CheckTableCovers returns an error naming every method registered on srv
// that has no rule in t, and every rule that is neither public, nor
// authenticated-only, nor has a valid capability and a resource.
func CheckTableCovers(srv ServiceInfoProvider, t Table) error {
	var missing []string
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			r, ok := t[full]
			if !ok {
				missing = append(missing, full+" (no rule)")
				continue
			}
			if err := r.check(); err != nil {
				missing = append(missing, full+" ("+err.Error()+")")
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return fmt.Errorf("auth: table does not cover: %s", strings.Join(missing, ", "))
}

func (r Rule) check() error {
	if r.Public || r.AuthenticatedOnly {
		return nil
	}
	if !r.Capability.Valid() {
		return fmt.Errorf("unknown capability %q", r.Capability)
	}
	if r.Resource == nil && r.Path == "" {
		return fmt.Errorf("no resource")
	}
	return nil
}

// resource returns the resource a message acts on under r.
func (r Rule) resource(msg proto.Message) (string, error) {
	if r.Resource == nil || msg == nil {
		return r.Path, nil
	}
	return r.Resource(msg)
}
