package sshca

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/auth"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// AuthTable maps every SSHCAService method to the capability it needs and
// the resource it acts on: ssh/cas/<name> for CAs, ssh/roles/<name> for
// roles (signing needs ssh-sign on the role), ssh/krl for revocations that
// name no CA. Listing the published public keys and reading the KRL need only
// an identity: both are public over HTTP anyway.
func AuthTable() auth.Table {
	const svc = "/hsmgate.v1.SSHCAService/"
	caRes := func(m proto.Message) (string, error) {
		var name string
		switch r := m.(type) {
		case *pb.CreateSSHCARequest:
			name = r.GetName()
		case *pb.GetSSHCARequest:
			name = r.GetName()
		case *pb.RotateSSHCARequest:
			name = r.GetName()
		case *pb.RetireSSHCAKeyRequest:
			name = r.GetName()
		default:
			return "", fmt.Errorf("sshca: unexpected %T", m)
		}
		if !ValidName(name) {
			return "", fmt.Errorf("%w: CA name %.64q", ErrInvalid, name)
		}
		return "ssh/cas/" + name, nil
	}
	roleRes := func(m proto.Message) (string, error) {
		var name string
		switch r := m.(type) {
		case *pb.CreateSSHRoleRequest:
			name = r.GetRole().GetName()
		case *pb.UpdateSSHRoleRequest:
			name = r.GetRole().GetName()
		case *pb.GetSSHRoleRequest:
			name = r.GetName()
		case *pb.DeleteSSHRoleRequest:
			name = r.GetName()
		case *pb.SignUserKeyRequest:
			name = r.GetRole()
		case *pb.SignHostKeyRequest:
			name = r.GetRole()
		default:
			return "", fmt.Errorf("sshca: unexpected %T", m)
		}
		if !ValidName(name) {
			return "", fmt.Errorf("%w: role name %.64q", ErrInvalid, name)
		}
		return "ssh/roles/" + name, nil
	}
	revokeRes := func(m proto.Message) (string, error) {
		r, ok := m.(*pb.RevokeSSHRequest)
		if !ok {
			return "", fmt.Errorf("sshca: unexpected %T", m)
		}
		if r.GetCa() == "" {
			return "ssh/krl", nil
		}
		if !ValidName(r.GetCa()) {
			return "", fmt.Errorf("%w: CA name %.64q", ErrInvalid, r.GetCa())
		}
		return "ssh/cas/" + r.GetCa(), nil
	}
	return auth.Table{
		svc + "CreateSSHCA":         {Capability: auth.CapCreate, Resource: caRes},
		svc + "GetSSHCA":            {Capability: auth.CapRead, Resource: caRes},
		svc + "ListSSHCAs":          {Capability: auth.CapList, Path: "ssh/cas"},
		svc + "RotateSSHCA":         {Capability: auth.CapRotate, Resource: caRes},
		svc + "RetireSSHCAKey":      {Capability: auth.CapRotate, Resource: caRes},
		svc + "ListSSHCAPublicKeys": {AuthenticatedOnly: true},
		svc + "CreateSSHRole":       {Capability: auth.CapCreate, Resource: roleRes},
		svc + "GetSSHRole":          {Capability: auth.CapRead, Resource: roleRes},
		svc + "UpdateSSHRole":       {Capability: auth.CapUpdate, Resource: roleRes},
		svc + "DeleteSSHRole":       {Capability: auth.CapDelete, Resource: roleRes},
		svc + "ListSSHRoles":        {Capability: auth.CapList, Path: "ssh/roles"},
		svc + "SignUserKey":         {Capability: auth.CapSSHSign, Resource: roleRes},
		svc + "SignHostKey":         {Capability: auth.CapSSHSign, Resource: roleRes},
		svc + "RevokeSSH":           {Capability: auth.CapRevoke, Resource: revokeRes},
		svc + "GetKRL":              {AuthenticatedOnly: true},
	}
}
