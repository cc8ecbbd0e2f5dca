package auth

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzKubernetesSubject: serviceAccount never panics, and whatever it accepts
// is a plain namespace and name that rebuild the subject exactly.
func FuzzKubernetesSubject(f *testing.F) {
	for _, s := range []string{"system:serviceaccount:cert-manager:cert-manager", "system:serviceaccount:a:b:c", "system:serviceaccount::x", "system:serviceaccount:*:x", "builder"} {
		f.Add(s, "cert-manager", "cert-manager")
	}
	f.Fuzz(func(t *testing.T, sub, ns, name string) {
		c := saClaims{}
		if ns != "" || name != "" {
			c.Kubernetes = &struct {
				Namespace      string `json:"namespace"`
				ServiceAccount struct {
					Name string `json:"name"`
					UID  string `json:"uid"`
				} `json:"serviceaccount"`
				Pod *struct {
					Name string `json:"name"`
				} `json:"pod"`
			}{Namespace: ns}
			c.Kubernetes.ServiceAccount.Name = name
		}
		gotNS, gotName, err := serviceAccount(sub, c)
		if err != nil {
			return
		}
		if saSubjectPrefix+gotNS+":"+gotName != sub || strings.ContainsAny(gotNS+gotName, ":*/ ") {
			t.Errorf("serviceAccount(%q) = %q, %q", sub, gotNS, gotName)
		}
		if c.Kubernetes != nil && (gotNS != ns || gotName != name) {
			t.Errorf("serviceAccount(%q) = %q, %q despite kubernetes.io %q, %q", sub, gotNS, gotName, ns, name)
		}
	})
}

// FuzzAppRoleCIDRs: parseCIDRs never panics; what it accepts is canonical
// (parsing its output again gives the same) and contains its own address.
func FuzzAppRoleCIDRs(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.1.2.3", "::ffff:10.0.0.0/104", "2001:db8::/32", "::ffff:1.2.3.4", "300.0.0.0/8", "::ffff:0:0/90"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, canon, err := parseCIDRs([]string{s})
		if err != nil {
			return
		}
		again, canon2, err := parseCIDRs(canon)
		if err != nil || canon2[0] != canon[0] || again[0] != ps[0] {
			t.Fatalf("parseCIDRs(%q) = %v, not canonical (%v, %v)", s, canon, canon2, err)
		}
		if a := ps[0].Addr(); a.Is4In6() || !addrAllowed(canon, a) || !addrAllowed(canon, netip.AddrFrom16(a.As16())) && a.Is4() {
			t.Errorf("parseCIDRs(%q) = %v: its own address is not allowed", s, canon)
		}
	})
}
