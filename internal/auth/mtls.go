package auth

import (
	"crypto/x509"
	"fmt"
	"os"
)

// MTLSConfig is the client-certificate section of the server config.
type MTLSConfig struct {
	// ClientCAFile: PEM bundle of the CAs whose client certificates are
	// trusted. The server gives ClientCAs() to its tls.Config with
	// tls.VerifyClientCertIfGiven; the TLS layer verifies chains.
	ClientCAFile string `yaml:"client_ca_file"`
	// Mappings give policies to certificate identities; the first whose
	// glob matches the identity name wins. A verified certificate matching
	// none authenticates with no policies.
	Mappings []CertMapping `yaml:"mappings"`
}

// CertMapping maps identity names matching Match (a glob, see Match) to policies.
type CertMapping struct {
	Match    string   `yaml:"match"`
	Policies []string `yaml:"policies"`
}

// ClientCAs loads ClientCAFile (nil when unset).
func (c MTLSConfig) ClientCAs() (*x509.CertPool, error) {
	if c.ClientCAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("auth: client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("auth: client CA file %s holds no PEM certificate", c.ClientCAFile)
	}
	return pool, nil
}

// CertIdentity maps a client certificate verified by the TLS layer (the leaf
// of a verified chain) to an identity: the first URI SAN, else the subject CN.
func (c MTLSConfig) CertIdentity(leaf *x509.Certificate) (*Identity, error) {
	name := ""
	if len(leaf.URIs) > 0 {
		name = leaf.URIs[0].String()
	} else {
		name = leaf.Subject.CommonName
	}
	if name == "" {
		return nil, fmt.Errorf("%w: client certificate has neither a URI SAN nor a CN", ErrUnauthenticated)
	}
	// The CA vouches for the subject and its facts.
	md := map[string]string{
		"cert_serial": leaf.SerialNumber.Text(16),
		"cert_issuer": leaf.Issuer.String(),
	}
	id := &Identity{Name: name, Kind: KindMTLS, Metadata: md, Entity: name, EntityMetadata: md}
	for _, m := range c.Mappings {
		if Match(m.Match, name) {
			id.Policies = m.Policies
			break
		}
	}
	return id, nil
}
