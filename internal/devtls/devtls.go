// Package devtls makes the throwaway TLS material of `hsmgate dev` and of
// tests: a self-signed CA and certificates it issues, ECDSA P-256, written as
// PEM files (keys 0600). Ensure reuses what a previous run left in the
// directory, so that a client's HSMGATE_CACERT stays valid across restarts.
//
// Not for production: the CA key sits in a file next to its certificate.
package devtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Validity periods; a certificate within renewBefore of its end is replaced.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	leafValidity   = 365 * 24 * time.Hour
	renewBefore    = 30 * 24 * time.Hour
	backdate       = 5 * time.Minute
	caFileName     = "ca.pem"
	caKeyFileName  = "ca-key.pem"
	srvFileName    = "server.pem"
	srvKeyFileName = "server-key.pem"
)

// Files names the PEM files under the directory given to Ensure.
type Files struct {
	CACert, CAKey string
	Cert, Key     string // the server certificate and its key
}

// DefaultHosts are the names of a dev server's certificate.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// Ensure makes sure dir holds a CA and a server certificate for hosts (DNS
// names or IP addresses), creating or renewing what is missing, expiring or
// not matching, and returns the file names. created reports whether the CA
// was made now (clients must then trust the new one).
func Ensure(dir string, hosts []string, now time.Time) (f Files, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, false, fmt.Errorf("devtls: %w", err)
	}
	f = Files{
		CACert: filepath.Join(dir, caFileName), CAKey: filepath.Join(dir, caKeyFileName),
		Cert: filepath.Join(dir, srvFileName), Key: filepath.Join(dir, srvKeyFileName),
	}
	ca, caKey, err := Load(f.CACert, f.CAKey)
	if err != nil || !valid(ca, now) {
		if ca, caKey, err = newCA(now); err != nil {
			return Files{}, false, err
		}
		if err := writePair(f.CACert, f.CAKey, ca, caKey); err != nil {
			return Files{}, false, err
		}
		created = true
	}
	leaf, _, err := Load(f.Cert, f.Key)
	if created || err != nil || !valid(leaf, now) || !coversHosts(leaf, hosts) || leaf.CheckSignatureFrom(ca) != nil {
		cert, key, err := Issue(ca, caKey, Template{CommonName: "hsmgate dev server", Hosts: hosts, Server: true}, now)
		if err != nil {
			return Files{}, false, err
		}
		if err := writePair(f.Cert, f.Key, cert, key); err != nil {
			return Files{}, false, err
		}
	}
	return f, created, nil
}

// Template describes a certificate to Issue.
type Template struct {
	CommonName string
	Hosts      []string // DNS names and IP addresses (SANs)
	Server     bool     // serverAuth usage (else clientAuth)
	Validity   time.Duration
}

// Issue makes a certificate signed by ca for a fresh P-256 key.
func Issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, t Template, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: %w", err)
	}
	if t.Validity == 0 {
		t.Validity = leafValidity
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: t.CommonName, Organization: []string{"hsmgate dev"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(t.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if t.Server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, h := range t.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: issue %q: %w", t.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: %w", err)
	}
	return cert, key, nil
}

// NewCA makes a self-signed P-256 CA valid from now.
func NewCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) { return newCA(now) }

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: %w", err)
	}
	ski := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "hsmgate dev CA", Organization: []string{"hsmgate dev"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: make CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: %w", err)
	}
	return cert, key, nil
}

// Load reads a PEM certificate and its PEM EC private key and checks that
// they match.
func Load(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("devtls: %s: not an ECDSA key", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("devtls: %w", err)
	}
	return cert, key, nil
}

// WritePair writes cert (0644) and key (0600, PKCS#8) as PEM files.
func WritePair(certFile, keyFile string, cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	return writePair(certFile, keyFile, cert, key)
}

func writePair(certFile, keyFile string, cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("devtls: %w", err)
	}
	if err := writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

// writeFile replaces path atomically (write to a temporary file, rename).
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("devtls: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("devtls: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("devtls: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("devtls: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("devtls: %w", err)
	}
	return nil
}

func valid(c *x509.Certificate, now time.Time) bool {
	return c != nil && now.After(c.NotBefore) && now.Add(renewBefore).Before(c.NotAfter)
}

func coversHosts(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(c.DNSNames, h) {
			return false
		}
	}
	return true
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}
