package pki

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Sentinel errors. Match with errors.Is; the server maps their kinds to codes.
var (
	// ErrIssuerNotFound: no issuer with that name (or no default issuer).
	ErrIssuerNotFound = errs.New(errs.NotFound, "pki: issuer not found")
	// ErrIssuerExists: the issuer name is taken.
	ErrIssuerExists = errs.New(errs.AlreadyExists, "pki: issuer exists")
	// ErrIssuerNotActive: the issuer is pending, retired or expired.
	ErrIssuerNotActive = errs.New(errs.FailedPrecondition, "pki: issuer cannot sign")
	// ErrRoleNotFound: no role with that name.
	ErrRoleNotFound = errs.New(errs.NotFound, "pki: role not found")
	// ErrRoleExists: the role name is taken.
	ErrRoleExists = errs.New(errs.AlreadyExists, "pki: role exists")
	// ErrCertNotFound: no certificate recorded with that serial.
	ErrCertNotFound = errs.New(errs.NotFound, "pki: certificate not found")
	// ErrInvalid: a malformed request or role.
	ErrInvalid = errs.New(errs.InvalidArgument, "pki: invalid request")
	// ErrNotAllowed: the request asks for something the role does not allow.
	ErrNotAllowed = errs.New(errs.InvalidArgument, "pki: not allowed by role")
	// ErrLint: the certificate would have an error-level zlint finding.
	ErrLint = errs.New(errs.InvalidArgument, "pki: certificate failed lint")
	// ErrParentConstraint: the CAs above do not allow this CA certificate
	// (path length or name constraints).
	ErrParentConstraint = errs.New(errs.FailedPrecondition, "pki: not allowed by the constraints of the CAs above")
	// ErrInUse: the issuer still has unexpired certificates, or is the default.
	ErrInUse = errs.New(errs.FailedPrecondition, "pki: issuer in use")
)

const (
	prefixIssuers = "pki/issuers/"
	keyDefault    = "pki/default-issuer"
	prefixRoles   = "pki/roles/"
	prefixCerts   = "pki/certs/"
	prefixRevoked = "pki/revoked/"
	prefixCRL     = "pki/crl/"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func checkName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %s name %q: want 1-64 of [a-z0-9._-], starting with a letter or digit", ErrInvalid, kind, name)
	}
	return nil
}

// serialHex is the canonical text of a serial: lowercase hex, no colons, no leading zeros.
func serialHex(n *big.Int) string { return n.Text(16) }

// parseSerial accepts hex with optional colons or spaces, any case.
func parseSerial(s string) (string, error) {
	t := strings.ToLower(strings.NewReplacer(":", "", " ", "", "-", "").Replace(strings.TrimSpace(s)))
	t = strings.TrimPrefix(t, "0x")
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || n.Sign() <= 0 || n.BitLen() > 160 {
		return "", fmt.Errorf("%w: serial %q is not a positive hex number", ErrInvalid, s)
	}
	return serialHex(n), nil
}

func getProto(ctx context.Context, st keystore.Store, key string, m proto.Message, notFound error) (int64, error) {
	e, err := st.Get(ctx, key)
	if errors.Is(err, keystore.ErrNotFound) {
		return 0, notFound
	}
	if err != nil {
		return 0, fmt.Errorf("pki: read %s: %w", key, err)
	}
	if err := proto.Unmarshal(e.Value, m); err != nil {
		return 0, fmt.Errorf("pki: decode %s: %v", key, err)
	}
	return e.Revision, nil
}

func putProto(ctx context.Context, st keystore.Store, key string, m proto.Message, expect int64) (int64, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("pki: encode %s: %v", key, err)
	}
	rev, err := st.Put(ctx, key, b, expect)
	if err != nil {
		return 0, fmt.Errorf("pki: write %s: %w", key, err)
	}
	return rev, nil
}

func (s *Service) getIssuerRecord(ctx context.Context, name string) (*pb.Issuer, int64, error) {
	if name == "" || name == "default" {
		def, err := s.defaultIssuer(ctx)
		if err != nil {
			return nil, 0, err
		}
		name = def
	}
	iss := new(pb.Issuer)
	rev, err := getProto(ctx, s.cfg.Store, prefixIssuers+name, iss, fmt.Errorf("%w: %q", ErrIssuerNotFound, name))
	return iss, rev, err
}

func (s *Service) defaultIssuer(ctx context.Context) (string, error) {
	e, err := s.cfg.Store.Get(ctx, keyDefault)
	if errors.Is(err, keystore.ErrNotFound) {
		return "", fmt.Errorf("%w: no default issuer", ErrIssuerNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("pki: read default issuer: %w", err)
	}
	return string(e.Value), nil
}

func (s *Service) setDefaultIssuer(ctx context.Context, name string) error {
	if _, err := s.cfg.Store.Put(ctx, keyDefault, []byte(name), keystore.AnyRevision); err != nil {
		return fmt.Errorf("pki: set default issuer: %w", err)
	}
	return nil
}

func (s *Service) getRole(ctx context.Context, name string) (*pb.Role, int64, error) {
	if err := checkName("role", name); err != nil {
		return nil, 0, err
	}
	r := new(pb.Role)
	rev, err := getProto(ctx, s.cfg.Store, prefixRoles+name, r, fmt.Errorf("%w: %q", ErrRoleNotFound, name))
	return r, rev, err
}

func (s *Service) getCertRecord(ctx context.Context, serial string) (*pb.CertificateRecord, int64, error) {
	rec := new(pb.CertificateRecord)
	rev, err := getProto(ctx, s.cfg.Store, prefixCerts+serial, rec, fmt.Errorf("%w: %s", ErrCertNotFound, serial))
	return rec, rev, err
}
