package vaultdoor

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// sshKeys is what GET ssh/public_key calls on the SSH CA service directly
// (published keys are public, in Vault and over the SSH engine's own HTTP).
type sshKeys interface {
	ListSSHCAPublicKeys(ctx context.Context, req *pb.ListSSHCAPublicKeysRequest) (*pb.ListSSHCAPublicKeysResponse, error)
}

// sshPublicKey answers the user CA's public key in authorized_keys form,
// as plain text (Vault's shape): the configured CA's published keys, or
// every published user CA key.
func (d *Door) sshPublicKey(w http.ResponseWriter, c *call, _ *fields, _ []string) error {
	_, impl, ok := d.cfg.Registry.RegisteredService(pb.SSHCAService_ServiceDesc.ServiceName)
	s, isSSH := impl.(sshKeys)
	if !ok || !isSSH {
		return errs.New(errs.Unimplemented, "vaultdoor: the SSH CA is not served here")
	}
	resp, err := s.ListSSHCAPublicKeys(c.r.Context(), &pb.ListSSHCAPublicKeysRequest{
		Name: d.cfg.SSHCA, CertType: pb.SSHCertType_SSH_CERT_TYPE_USER,
	})
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, k := range resp.GetKeys() {
		b.WriteString(strings.TrimSpace(k.GetPublicKey()))
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		return errs.New(errs.NotFound, "vaultdoor: no published SSH user CA key")
	}
	writeRaw(w, "text/plain; charset=utf-8", []byte(b.String()))
	return nil
}

// sshSign serves ssh/sign/<role> with Vault's fields: public_key,
// valid_principals, ttl, cert_type (user, the default, or host),
// critical_options, extensions. key_id is the role's key_id_format here.
func (d *Door) sshSign(w http.ResponseWriter, c *call, f *fields, args []string) error {
	item := &pb.SSHSignItem{
		PublicKey:       strings.TrimSpace(f.String("public_key")),
		Principals:      f.List("valid_principals"),
		Extensions:      f.Map("extensions"),
		CriticalOptions: f.Map("critical_options"),
	}
	if ttl := f.Duration("ttl"); ttl > 0 {
		item.Ttl = durationpb.New(ttl)
	}
	certType := f.String("cert_type")
	if kid := f.String("key_id"); kid != "" {
		return invalidf("key_id: certificates take their key ID from the role's key_id_format")
	}
	if err := f.done(); err != nil {
		return err
	}
	if item.PublicKey == "" {
		return invalidf("public_key is required")
	}
	var (
		results []*pb.SSHSignResult
		err     error
		out     any
	)
	switch certType {
	case "", "user":
		out, err = d.invoke(c.r.Context(), c, pb.SSHCAService_SignUserKey_FullMethodName,
			&pb.SignUserKeyRequest{Role: args[0], Items: []*pb.SSHSignItem{item}}, nil)
		if err == nil {
			results = out.(*pb.SignUserKeyResponse).GetResults()
		}
	case "host":
		out, err = d.invoke(c.r.Context(), c, pb.SSHCAService_SignHostKey_FullMethodName,
			&pb.SignHostKeyRequest{Role: args[0], Items: []*pb.SSHSignItem{item}}, nil)
		if err == nil {
			results = out.(*pb.SignHostKeyResponse).GetResults()
		}
	default:
		return invalidf("cert_type %q: want user or host", certType)
	}
	if err != nil {
		return err
	}
	if len(results) != 1 {
		return errs.New(errs.Unavailable, "vaultdoor: SSH CA answered no result")
	}
	res := results[0]
	if e := res.GetError(); e != nil && e.GetCode() != 0 {
		return status.ErrorProto(e)
	}
	writeData(w, c, http.StatusOK, map[string]any{
		"signed_key":    strings.TrimSpace(res.GetCertificate()) + "\n",
		"serial_number": strconv.FormatUint(res.GetSerial(), 16),
	})
	return nil
}
