package pki

import (
	"context"
	"errors"
	"testing"
)

func TestCheckNames(t *testing.T) {
	e := newEnv(t)
	e.root(t, "root", KeyECDSAP256)
	r := webRole("web")
	r.AllowIpSans, r.AllowedIpRanges = true, []string{"10.0.0.0/8"}
	e.role(t, r)
	cases := []struct {
		name     string
		dns, ips []string
		ok       bool
	}{
		{"allowed names", []string{"example.com", "a.example.com"}, []string{"10.1.2.3"}, true},
		{"outside the domains", []string{"a.example.org"}, nil, false},
		{"wildcard off", []string{"*.example.com"}, nil, false},
		{"IP outside the ranges", nil, []string{"192.168.1.1"}, false},
		{"bad syntax", []string{"a..example.com"}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := e.svc.CheckNames(context.Background(), "web", tc.dns, tc.ips)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrNotAllowed)) {
				t.Errorf("got %v, want ok=%v (ErrNotAllowed otherwise)", err, tc.ok)
			}
		})
	}
	if err := e.svc.CheckNames(context.Background(), "nope", []string{"example.com"}, nil); !errors.Is(err, ErrRoleNotFound) {
		t.Errorf("unknown role: got %v, want ErrRoleNotFound", err)
	}
}
