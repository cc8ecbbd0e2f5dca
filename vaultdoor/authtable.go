package vaultdoor

import (
	"fmt"
	"regexp"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/errs"
)

var issuerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// AuthTable holds the rules of the door's own operations (those that map
// to no RPC), to merge into the server's table beside the engines' tables:
// root/sign-intermediate needs "update" on pki/issuers/<issuer> (it signs a
// CA certificate with the issuer's key, as CrossSignIssuer does).
func AuthTable() auth.Table {
	return auth.Table{
		MethodSignIntermediate: {Capability: auth.CapUpdate, Resource: func(m proto.Message) (string, error) {
			s, ok := m.(*wrapperspb.StringValue)
			if !ok {
				return "", fmt.Errorf("vaultdoor: unexpected %T", m)
			}
			if !issuerNameRE.MatchString(s.GetValue()) {
				return "", errs.New(errs.InvalidArgument, fmt.Sprintf("vaultdoor: issuer name %q", s.GetValue()))
			}
			return "pki/issuers/" + s.GetValue(), nil
		}},
	}
}
