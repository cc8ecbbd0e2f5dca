package pki

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Roles used by the name tests, each with one switch on.
var (
	bareRole = &pb.Role{Name: "bare", AllowedDomains: []string{"example.com"}, AllowBareDomains: true}
	subRole  = &pb.Role{Name: "sub", AllowedDomains: []string{"example.com"}, AllowSubdomains: true}
	globRole = &pb.Role{Name: "glob", AllowedDomains: []string{"*.example.com"}, AllowGlobDomains: true, AllowWildcardCertificates: true}
	wildRole = &pb.Role{Name: "wild", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, AllowWildcardCertificates: true}
	ipRole   = &pb.Role{Name: "ip", AllowedDomains: []string{"example.com"}, AllowBareDomains: true, AllowIpSans: true, AllowedIpRanges: []string{"10.0.0.0/8"}}
)

const labelChars = "abcdefghijklmnopqrstuvwxyz0123456789-"

func randLabel(r *rand.Rand) string {
	n := 1 + r.IntN(12)
	b := make([]byte, n)
	for i := range b {
		b[i] = labelChars[r.IntN(len(labelChars))]
	}
	b[0], b[n-1] = 'a'+byte(r.IntN(26)), '0'+byte(r.IntN(10))
	if n >= 4 && b[2] == '-' && b[3] == '-' {
		b[2] = 'a' // "--" in positions 3-4 is reserved for A-labels
	}
	return string(b)
}

// nameCase is a generated name with the verdict each role must give.
type nameCase struct {
	name string
	ok   map[string]bool // role name → allowed
}

// genName makes a name of a random category whose verdicts are known by construction.
func genName(r *rand.Rand) nameCase {
	l1, l2 := randLabel(r), randLabel(r)
	none := map[string]bool{}
	switch r.IntN(9) {
	case 0:
		return nameCase{"example.com", map[string]bool{"bare": true, "ip": true}}
	case 1: // one level below
		return nameCase{l1 + ".example.com", map[string]bool{"sub": true, "glob": true, "wild": true}}
	case 2: // deeper subdomain
		return nameCase{l1 + "." + l2 + ".example.com", map[string]bool{"sub": true, "wild": true}}
	case 3: // sibling domains sharing a suffix
		return nameCase{[]string{l1 + "example.com", l1 + "-example.com", "example.com." + l1, "example.co", "example.com" + l1 + ".net", l1 + ".example.org"}[r.IntN(6)], none}
	case 4: // wildcard directly below
		return nameCase{"*.example.com", map[string]bool{"glob": true, "wild": true}}
	case 5: // deeper wildcard
		return nameCase{"*." + l1 + ".example.com", map[string]bool{"wild": true}}
	case 6: // partial or misplaced wildcards: never
		return nameCase{[]string{l1 + "*.example.com", "*" + l1 + ".example.com", l1 + ".*.example.com", "*", "*.com"}[r.IntN(5)], none}
	case 7: // IP addresses in place of DNS names: never as DNS names
		return nameCase{fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256)), none}
	default: // invalid syntax
		return nameCase{[]string{"-" + l1 + ".example.com", l1 + "-.example.com", l1 + "..example.com", l1 + "_x.example.com", strings.Repeat("a", 64) + ".example.com", l1 + ".example.com/x"}[r.IntN(6)], none}
	}
}

// TestNamesProperty checks thousands of generated names against every role.
func TestNamesProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	roles := []*pb.Role{bareRole, subRole, globRole, wildRole, ipRole}
	for i := range 5000 {
		c := genName(r)
		for _, role := range roles {
			err := checkDNSName(role, normalizeDNS(c.name))
			if got, want := err == nil, c.ok[role.Name]; got != want {
				t.Fatalf("case %d: role %s, name %q: allowed %v (err %v), want %v", i, role.Name, c.name, got, err, want)
			}
		}
	}
}

func TestIPAndURIChecks(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		a := netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		_, err := checkIP(ipRole, a.String())
		if got, want := err == nil, a.As4()[0] == 10; got != want {
			t.Fatalf("ip role, %s: allowed %v (%v), want %v", a, got, err, want)
		}
		if _, err := checkIP(bareRole, a.String()); err == nil {
			t.Fatalf("bare role (no IP SANs) allowed %s", a)
		}
	}
	uriRole := &pb.Role{AllowedUriSans: []string{"spiffe://cluster.local/ns/*/sa/*"}}
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"spiffe://cluster.local/ns/default/sa/web", true},
		{"spiffe://cluster.local/ns/default/sa/web/extra", false},
		{"spiffe://other.local/ns/default/sa/web", false},
		{"https://cluster.local/ns/default/sa/web", false},
		{"not a uri", false},
	} {
		if _, err := checkURI(uriRole, tc.uri); (err == nil) != tc.ok {
			t.Errorf("URI %q: allowed %v (%v), want %v", tc.uri, err == nil, err, tc.ok)
		}
	}
}

// TestIssueRefusesNamesOutsideRole runs generated names through Issue end to
// end (a sample: each issuance is an HSM signature).
func TestIssueRefusesNamesOutsideRole(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	for _, role := range []*pb.Role{bareRole, subRole, globRole, wildRole, ipRole} {
		rr := clonedRole(role)
		rr.ServerFlag, rr.LintSources = true, []string{"RFC5280"}
		e.role(t, rr)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 150 {
		c := genName(r)
		for _, role := range []string{"bare", "sub", "glob", "wild", "ip"} {
			_, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: role, DnsNames: []string{c.name}})
			if got, want := err == nil, c.ok[role]; got != want {
				t.Fatalf("case %d: Issue(role %s, %q): issued %v (err %v), want %v", i, role, c.name, got, err, want)
			}
			if err != nil && !errors.Is(err, ErrNotAllowed) {
				t.Fatalf("Issue(role %s, %q): error %v, want ErrNotAllowed", role, c.name, err)
			}
		}
	}
	// IP SANs: outside the range, and on a role without IP SANs.
	for _, tc := range []struct {
		role, ip string
		ok       bool
	}{{"ip", "10.1.2.3", true}, {"ip", "192.168.1.1", false}, {"bare", "10.1.2.3", false}, {"ip", "::1", false}} {
		_, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: tc.role, CommonName: "example.com", IpAddresses: []string{tc.ip}})
		if (err == nil) != tc.ok {
			t.Errorf("Issue(role %s, IP %s): err %v, want ok=%v", tc.role, tc.ip, err, tc.ok)
		}
	}
}

func clonedRole(r *pb.Role) *pb.Role { return proto.Clone(r).(*pb.Role) }

// FuzzDNSNameChecks: whatever the name, an allowed one is syntactically
// valid and lies where the role's switches say.
func FuzzDNSNameChecks(f *testing.F) {
	for _, s := range []string{"example.com", "a.example.com", "a.b.example.com", "*.example.com", "xexample.com",
		"example.com.evil", "*.*.example.com", "a*.example.com", "10.0.0.1", "EXAMPLE.COM.", "a..example.com", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		n := normalizeDNS(name)
		if checkDNSName(bareRole, n) == nil && n != "example.com" {
			t.Fatalf("bare role allowed %q", name)
		}
		if checkDNSName(subRole, n) == nil && (!strings.HasSuffix(n, ".example.com") || strings.Contains(n, "*")) {
			t.Fatalf("sub role allowed %q", name)
		}
		if checkDNSName(globRole, n) == nil {
			if head, ok := strings.CutSuffix(n, ".example.com"); !ok || strings.Contains(head, ".") || (strings.Contains(head, "*") && head != "*") {
				t.Fatalf("glob role allowed %q", name)
			}
		}
		if checkDNSName(wildRole, n) == nil {
			if _, err := checkDNSSyntax(n); err != nil || !strings.HasSuffix(n, ".example.com") {
				t.Fatalf("wild role allowed %q", name)
			}
			if i := strings.LastIndex(n, "*"); i > 0 {
				t.Fatalf("wild role allowed a non-leftmost wildcard in %q", name)
			}
		}
	})
}

// TestALabels: labels with "--" in positions 3-4 pass only as valid IDNA2008
// A-labels.
func TestALabels(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"xn--bcher-kva.example.com", true}, // bücher
		{"www.xn--mnchen-3ya.de", true},     // münchen
		{"xn--a.example.com", false},
		{"xn--a", false},
		{"xn--.example.com", false},
		{"xn--zca.example.com", true}, // "ß": valid in IDNA2008 (not mapped to "ss")
		{"ab--cd.example.com", false},
		{"xn--bcher-kva-.example.com", false},
		{"a--b.example.com", true}, // "--" elsewhere is fine
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := checkDNSSyntax(normalizeDNS(c.name))
			if (err == nil) != c.ok {
				t.Errorf("checkDNSSyntax(%q) = %v, want ok %v", c.name, err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrNotAllowed) {
				t.Errorf("err %v, want ErrNotAllowed", err)
			}
		})
	}
}
