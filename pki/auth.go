package pki

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/auth"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// AuthTable maps every PKIService method to the capability it needs and
// the resource it acts on: pki/issuers/<name>, pki/roles/<name>,
// pki/certs/<serial>, pki/tidy.
func AuthTable() auth.Table {
	const svc = "/hsmgate.v1.PKIService/"
	issuer := func(get func(proto.Message) string) func(proto.Message) (string, error) {
		return resource("pki/issuers/", get)
	}
	role := func(get func(proto.Message) string) func(proto.Message) (string, error) {
		return resource("pki/roles/", get)
	}
	cert := func(get func(proto.Message) string) func(proto.Message) (string, error) {
		return func(m proto.Message) (string, error) {
			s, err := parseSerial(get(m))
			if err != nil {
				return "", err
			}
			return "pki/certs/" + s, nil
		}
	}
	return auth.Table{
		svc + "CreateRootIssuer": {Capability: auth.CapCreate, Resource: issuer(func(m proto.Message) string { return m.(*pb.CreateRootIssuerRequest).GetName() })},
		svc + "CreateIntermediateIssuer": {Capability: auth.CapCreate, Resource: issuer(func(m proto.Message) string {
			return m.(*pb.CreateIntermediateIssuerRequest).GetName()
		})},
		svc + "ImportIssuerCertificate": {Capability: auth.CapUpdate, Resource: issuer(func(m proto.Message) string {
			return m.(*pb.ImportIssuerCertificateRequest).GetName()
		})},
		// Cross-signing uses the signer's key: update on the signer.
		svc + "CrossSignIssuer": {Capability: auth.CapUpdate, Resource: issuer(func(m proto.Message) string { return m.(*pb.CrossSignIssuerRequest).GetSigner() })},
		svc + "GetIssuer":       {Capability: auth.CapRead, Resource: issuer(func(m proto.Message) string { return m.(*pb.GetIssuerRequest).GetName() })},
		svc + "ListIssuers":     {Capability: auth.CapList, Path: "pki/issuers"},
		svc + "UpdateIssuer":    {Capability: auth.CapUpdate, Resource: issuer(func(m proto.Message) string { return m.(*pb.UpdateIssuerRequest).GetName() })},
		svc + "DeleteIssuer":    {Capability: auth.CapDelete, Resource: issuer(func(m proto.Message) string { return m.(*pb.DeleteIssuerRequest).GetName() })},

		svc + "CreateRole": {Capability: auth.CapCreate, Resource: role(func(m proto.Message) string { return m.(*pb.CreateRoleRequest).GetRole().GetName() })},
		svc + "GetRole":    {Capability: auth.CapRead, Resource: role(func(m proto.Message) string { return m.(*pb.GetRoleRequest).GetName() })},
		svc + "ListRoles":  {Capability: auth.CapList, Path: "pki/roles"},
		svc + "UpdateRole": {Capability: auth.CapUpdate, Resource: role(func(m proto.Message) string { return m.(*pb.UpdateRoleRequest).GetRole().GetName() })},
		svc + "DeleteRole": {Capability: auth.CapDelete, Resource: role(func(m proto.Message) string { return m.(*pb.DeleteRoleRequest).GetName() })},

		svc + "Issue":            {Capability: auth.CapIssue, Resource: role(func(m proto.Message) string { return m.(*pb.IssueRequest).GetRole() })},
		svc + "Sign":             {Capability: auth.CapIssue, Resource: role(func(m proto.Message) string { return m.(*pb.SignRequest).GetRole() })},
		svc + "Revoke":           {Capability: auth.CapRevoke, Resource: cert(func(m proto.Message) string { return m.(*pb.RevokeRequest).GetSerial() })},
		svc + "GetCertificate":   {Capability: auth.CapRead, Resource: cert(func(m proto.Message) string { return m.(*pb.GetCertificateRequest).GetSerial() })},
		svc + "ListCertificates": {Capability: auth.CapList, Path: "pki/certs"},
		svc + "Tidy":             {Capability: auth.CapAdmin, Path: "pki/tidy"},
	}
}

// resource builds a Resource func that checks the name and prefixes it.
func resource(prefix string, get func(proto.Message) string) func(proto.Message) (string, error) {
	return func(m proto.Message) (string, error) {
		name := get(m)
		if name == "" && prefix == "pki/issuers/" {
			name = "default"
		}
		if !nameRE.MatchString(name) {
			return "", fmt.Errorf("%w: name %q", ErrInvalid, name)
		}
		return prefix + name, nil
	}
}
