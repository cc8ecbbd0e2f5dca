package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"
	"math/big"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
)

// zlint's e_ecdsa_small_private_key refuses an ECDSA public key whose
// private scalar d is tiny: 0 < d <= 2^Bits, or n - d is (anyone recovers
// such a key from the certificate). It walks from the key toward a table of
// 2^12 known points, 32 point additions a certificate through crypto/elliptic's
// generic API, each with a field inversion: about 90 µs of a P-256
// certificate's ~1 ms here, for every certificate of a role that lints with
// the community source.
//
// The same verdict comes from one map lookup when the table holds every
// point d·G for 1 <= d <= 2^Bits: the X coordinate of d·G is also that of
// (n-d)·G, so a key is refused exactly when its X is in the table. The table
// (65,536 points a curve, about 2 MiB) is built once per curve, on its first
// key, in about a third of a second; a hit is checked in full (a scalar
// multiplication), since the table keys on 64 bits of X.
//
// Bits is zlint's default, 16; hsmgate does not pass zlint a configuration
// that could change it.

const (
	smallKeyLintName = "e_ecdsa_small_private_key"
	smallKeyBits     = 16
)

// smallKeyLint returns the registered lint c (zlint's
// e_ecdsa_small_private_key) with its check replaced by smallKeyCheck; its
// name, source, citation and dates are c's.
func smallKeyLint(c *lint.CertificateLint) *lint.CertificateLint {
	fast := *c
	fast.Lint = func() lint.LintInterface { return smallKeyCheck{} }
	return &fast
}

type smallKeyCheck struct{}

func (smallKeyCheck) CheckApplies(c *zx509.Certificate) bool {
	k := ecdsaKeyOf(c)
	return k != nil && k.Curve != nil && k.X != nil && k.Y != nil && k.Curve.IsOnCurve(k.X, k.Y)
}

func (smallKeyCheck) Execute(c *zx509.Certificate) *lint.LintResult {
	if d := smallScalar(ecdsaKeyOf(c)); d != nil {
		return &lint.LintResult{Status: lint.Error, Details: fmt.Sprintf(
			"the ECDSA private key is %s, or its negation modulo the group order, and so can be trivially recovered by anyone", d)}
	}
	return &lint.LintResult{Status: lint.Pass}
}

func ecdsaKeyOf(c *zx509.Certificate) *ecdsa.PublicKey {
	if c.PublicKeyAlgorithm != zx509.ECDSA {
		return nil
	}
	switch k := c.PublicKey.(type) {
	case *zx509.AugmentedECDSA:
		return k.Pub
	case *ecdsa.PublicKey:
		return k
	}
	return nil
}

// smallScalar returns d when pub is d·G or (n-d)·G for 1 <= d <= 2^smallKeyBits, else nil.
func smallScalar(pub *ecdsa.PublicKey) *big.Int {
	t := smallKeyTableFor(pub.Curve)
	for _, d := range t.candidates(pub.X) {
		k := big.NewInt(int64(d))
		if x, _ := pub.Curve.ScalarBaseMult(k.Bytes()); x.Cmp(pub.X) == 0 {
			return k // Y is that of d·G or of -(d·G): the point is on the curve
		}
	}
	return nil
}

// smallKeyTable maps the low 64 bits of the X coordinate of d·G to d.
type smallKeyTable struct {
	once  sync.Once
	byX   map[uint64]uint32
	extra map[uint64][]uint32 // further d of an X already in byX (never seen; kept exact)
}

func (t *smallKeyTable) candidates(x *big.Int) []uint32 {
	k := x.Uint64()
	d, ok := t.byX[k]
	if !ok {
		return nil
	}
	return append([]uint32{d}, t.extra[k]...)
}

var smallKeyTables sync.Map // curve name → *smallKeyTable

func smallKeyTableFor(c elliptic.Curve) *smallKeyTable {
	p := c.Params()
	v, _ := smallKeyTables.LoadOrStore(p.Name, &smallKeyTable{})
	t := v.(*smallKeyTable)
	t.once.Do(func() {
		const n = 1 << smallKeyBits
		t.byX = make(map[uint64]uint32, n)
		t.extra = map[uint64][]uint32{}
		x, y := p.Gx, p.Gy
		for d := uint32(1); d <= n; d++ {
			k := x.Uint64()
			if _, dup := t.byX[k]; dup {
				t.extra[k] = append(t.extra[k], d)
			} else {
				t.byX[k] = d
			}
			x, y = c.Add(x, y, p.Gx, p.Gy)
		}
	})
	return t
}
