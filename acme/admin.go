package acme

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Admin errors.
var (
	// ErrInvalid: a bad directory name, role or challenge type.
	ErrInvalid = errs.New(errs.InvalidArgument, "acme: invalid request")
	// ErrDirectoryNotFound: no directory of that name.
	ErrDirectoryNotFound = errs.New(errs.NotFound, "acme: directory not found")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// eabKeySize is the size of an EAB HMAC key (HS256).
const eabKeySize = 32

// WriteDirectory creates or replaces a directory's configuration; its role must exist.
func (s *Server) WriteDirectory(ctx context.Context, d *Directory) error {
	if !nameRE.MatchString(d.Name) {
		return fmt.Errorf("%w: directory name %q", ErrInvalid, truncate(d.Name))
	}
	for _, c := range d.AllowedChallenges {
		if !slices.Contains(supportedChallenges, c) {
			return fmt.Errorf("%w: challenge type %q (supported: %v)", ErrInvalid, truncate(c), supportedChallenges)
		}
	}
	if _, err := s.cfg.CA.GetRole(ctx, &pb.GetRoleRequest{Name: d.Role}); err != nil {
		return fmt.Errorf("acme: directory %q: role %q: %w", d.Name, d.Role, err)
	}
	_, err := s.put(ctx, prefixDirs+d.Name, d, keystore.AnyRevision)
	return err
}

// ListDirectories returns every directory's configuration.
func (s *Server) ListDirectories(ctx context.Context) ([]*Directory, error) {
	var out []*Directory
	es, err := s.cfg.Store.List(ctx, prefixDirs)
	if err != nil {
		return nil, fmt.Errorf("acme: list directories: %w", err)
	}
	for _, e := range es {
		d := new(Directory)
		if _, found, err := s.get(ctx, e.Key, d); err != nil {
			return nil, err
		} else if found {
			out = append(out, d)
		}
	}
	return out, nil
}

// CreateEAB makes a single-use External Account Binding key for dir and
// returns its key ID and the HMAC key (base64url), which are shown once:
// the store keeps the key only wrapped by the HSM KEK. The account it binds
// inherits policy (nil: no limits beyond the directory's role).
func (s *Server) CreateEAB(ctx context.Context, dir string, policy *EABPolicy) (kid, hmacKey string, err error) {
	if policy, err = policy.normalize(); err != nil {
		return "", "", err
	}
	if _, found, err := s.GetDirectory(ctx, dir); err != nil {
		return "", "", err
	} else if !found {
		return "", "", fmt.Errorf("%w: %q", ErrDirectoryNotFound, truncate(dir))
	}
	if kid, err = s.newID(); err != nil {
		return "", "", err
	}
	k := make([]byte, eabKeySize)
	if _, err := io.ReadFull(s.cfg.Rand, k); err != nil {
		return "", "", fmt.Errorf("acme: random: %w", err)
	}
	defer clear(k)
	w, err := s.cfg.Wrapper.Wrap(ctx, k)
	if err != nil {
		return "", "", fmt.Errorf("acme: wrap EAB key: %w", err)
	}
	rec := &eabKey{KID: kid, WrappedKey: w, Created: s.cfg.Now().UTC(), Policy: policy}
	if _, err := s.put(ctx, prefixEAB+dir+"/"+kid, rec, keystore.MustNotExist); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			return "", "", fmt.Errorf("acme: EAB key id collision: %w", err)
		}
		return "", "", err
	}
	return kid, b64.EncodeToString(k), nil
}
