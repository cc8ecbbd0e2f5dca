package acme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// Keystore layout. Every value is a JSON document (the state objects below:
// they are the ACME objects of RFC 8555 7.1 plus what the server needs).
const (
	prefixDirs     = "acme/dirs/"     // <dir> → Directory
	prefixNonces   = "acme/nonces/"   // <nonce> → expiry (unix nanoseconds)
	prefixAccounts = "acme/accounts/" // <dir>/<id> → account
	prefixAcctKeys = "acme/acctkeys/" // <dir>/<thumbprint> → account id
	prefixOrders   = "acme/orders/"   // <dir>/<id> → order
	prefixAuthz    = "acme/authz/"    // <dir>/<id> → authz
	prefixCerts    = "acme/certs/"    // <dir>/<serial> → certRecord
	prefixEAB      = "acme/eab/"      // <dir>/<kid> → eabKey
)

// Ident is an ACME identifier (RFC 8555 9.7.7; "ip" from RFC 8738).
type Ident struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Directory is the configuration of one ACME directory.
type Directory struct {
	Name string `json:"name"`
	// Role is the PKI role that checks names and signs.
	Role string `json:"role"`
	// EABRequired makes newAccount demand an External Account Binding.
	EABRequired bool `json:"eab_required,omitempty"`
	// AllowedChallenges (default: every type the server validates).
	AllowedChallenges []string `json:"allowed_challenges,omitempty"`
	// TermsOfService URL (meta), optional.
	TermsOfService string `json:"terms_of_service,omitempty"`
}

type account struct {
	ID         string          `json:"id"`
	Status     string          `json:"status"`
	Key        json.RawMessage `json:"key"`
	Thumbprint string          `json:"thumbprint"`
	Contact    []string        `json:"contact,omitempty"`
	EABKID     string          `json:"eab_kid,omitempty"`
	// Policy is the EAB key's policy, copied at newAccount (EABPolicy).
	Policy  *EABPolicy `json:"policy,omitempty"`
	Created time.Time  `json:"created"`
}

type order struct {
	ID          string    `json:"id"`
	Account     string    `json:"account"`
	Status      string    `json:"status"`
	Expires     time.Time `json:"expires"`
	Identifiers []Ident   `json:"identifiers"`
	NotBefore   time.Time `json:"not_before,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	Authzs      []string  `json:"authzs"`
	Error       *Problem  `json:"error,omitempty"`
	Cert        string    `json:"cert,omitempty"` // serial
	// Finalizing is when finalize set the order processing: an order left
	// processing (a replica died, a write failed) is settled by loadOrder
	// once it is older than finalizeStale.
	Finalizing time.Time `json:"finalizing,omitzero"`
	Replaces   string    `json:"replaces,omitempty"`
}

type challenge struct {
	Type      string    `json:"type"`
	Token     string    `json:"token"`
	Status    string    `json:"status"`
	Validated time.Time `json:"validated,omitzero"`
	// Started is when validation was asked for (Sweep re-queues a
	// validation whose replica died).
	Started time.Time `json:"started,omitzero"`
	Error   *Problem  `json:"error,omitempty"`
}

type authz struct {
	ID         string      `json:"id"`
	Account    string      `json:"account"`
	Identifier Ident       `json:"identifier"`
	Status     string      `json:"status"`
	Expires    time.Time   `json:"expires"`
	Wildcard   bool        `json:"wildcard,omitempty"`
	Challenges []challenge `json:"challenges"`
}

type certRecord struct {
	Serial  string `json:"serial"`
	Account string `json:"account"`
	Order   string `json:"order"`
	Chain   []byte `json:"chain"` // PEM: leaf then issuers
	// Alternates are other PEM chains of the same leaf (the issuer
	// cross-signed by another of our CAs), served at .../cert/<serial>/<n>.
	Alternates [][]byte `json:"alternates,omitempty"`
	DER        []byte   `json:"der"` // leaf
	// ReplacedBy is the order that renews it (ARI "replaces").
	ReplacedBy string `json:"replaced_by,omitempty"`
}

// eabKey is an External Account Binding key. The HMAC key must be known to
// verify a binding, so it cannot be stored as a one-way hash: it is stored
// wrapped by the deployment's KEK in the HSM (Config.Wrapper), unwrapped
// only to check a MAC. It is single-use: Account is set when it binds one.
type eabKey struct {
	KID        string    `json:"kid"`
	WrappedKey []byte    `json:"wrapped_key"`
	Created    time.Time `json:"created"`
	Account    string    `json:"account,omitempty"`
	Used       time.Time `json:"used,omitzero"`
	// Policy limits the account it binds (EABPolicy); nil: no limits.
	Policy *EABPolicy `json:"policy,omitempty"`
}

// get reads key into v; found=false when absent.
func (s *Server) get(ctx context.Context, key string, v any) (rev int64, found bool, err error) {
	e, err := s.cfg.Store.Get(ctx, key)
	if errors.Is(err, keystore.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("acme: get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value, v); err != nil {
		return 0, false, fmt.Errorf("acme: decode %s: %v", key, err)
	}
	return e.Revision, true, nil
}

// put writes v at key if its revision is expect (keystore semantics).
func (s *Server) put(ctx context.Context, key string, v any, expect int64) (int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("acme: encode %s: %v", key, err)
	}
	rev, err := s.cfg.Store.Put(ctx, key, b, expect)
	if err != nil {
		return 0, fmt.Errorf("acme: put %s: %w", key, err)
	}
	return rev, nil
}

// GetDirectory returns a directory's configuration; found=false if absent.
func (s *Server) GetDirectory(ctx context.Context, name string) (*Directory, bool, error) {
	d := new(Directory)
	_, found, err := s.get(ctx, prefixDirs+name, d)
	return d, found, err
}
