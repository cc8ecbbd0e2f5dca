package vaultdoor

import (
	"strings"
)

// maxPathSegments bounds the parsed path.
const maxPathSegments = 8

// route matches a path under /v1/ to an endpoint, or nil (404).
func (d *Door) route(path string) *endpoint {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok || len(rest) > 1024 {
		return nil
	}
	rest = strings.TrimSuffix(rest, "/")
	seg := strings.Split(rest, "/")
	if len(seg) > maxPathSegments {
		return nil
	}
	for _, s := range seg {
		if s == "" || s == "." || s == ".." {
			return nil
		}
	}
	get := func(h handler) map[string]handler { return map[string]handler{"GET": h} }
	post := func(h handler) map[string]handler { return map[string]handler{"POST": h} }
	switch seg[0] {
	case "sys":
		if rest == "sys/health" {
			return &endpoint{methods: get(d.health), public: true}
		}
		return nil
	case "auth":
		switch rest {
		case "auth/token/lookup-self":
			return &endpoint{methods: get(d.lookupSelf)}
		case "auth/token/renew-self":
			return &endpoint{methods: post(d.renewSelf)}
		case "auth/token/revoke-self":
			return &endpoint{methods: post(d.revokeSelf)}
		case "auth/approle/login", "auth/kubernetes/login", "auth/cert/login":
			return &endpoint{methods: post(d.login(seg[1])), public: true}
		}
		return nil
	case d.cfg.TransitMount:
		return d.transitRoute(seg[1:])
	case d.cfg.SSHMount:
		return d.sshRoute(seg[1:])
	}
	if issuer, ok := d.cfg.PKIMounts[seg[0]]; ok {
		return d.pkiRoute(issuer, seg[1:])
	}
	return nil
}

func (d *Door) sshRoute(seg []string) *endpoint {
	switch {
	case len(seg) == 1 && seg[0] == "public_key":
		return &endpoint{methods: map[string]handler{"GET": d.sshPublicKey}, public: true}
	case len(seg) == 2 && seg[0] == "sign":
		return &endpoint{methods: map[string]handler{"POST": d.sshSign}, args: seg[1:]}
	}
	return nil
}

func (d *Door) pkiRoute(issuer string, seg []string) *endpoint {
	pub := func(h handler) *endpoint {
		return &endpoint{methods: map[string]handler{"GET": h}, public: true, args: []string{issuer}}
	}
	p := strings.Join(seg, "/")
	switch p {
	case "ca":
		return pub(d.pkiCA(false))
	case "ca/pem":
		return pub(d.pkiCA(true))
	case "ca_chain", "cert/ca_chain":
		return pub(d.pkiCAChain)
	case "crl":
		return pub(d.pkiCRL(false))
	case "crl/pem":
		return pub(d.pkiCRL(true))
	case "cert/ca":
		return pub(d.pkiCertCA)
	case "root/sign-intermediate":
		return &endpoint{methods: map[string]handler{"POST": d.pkiSignIntermediate}, args: []string{issuer}}
	case "revoke":
		return &endpoint{methods: map[string]handler{"POST": d.pkiRevoke}, args: []string{issuer}}
	}
	switch {
	case len(seg) == 2 && seg[0] == "sign":
		return &endpoint{methods: map[string]handler{"POST": d.pkiSign}, args: []string{issuer, seg[1]}}
	case len(seg) == 2 && seg[0] == "issue":
		return &endpoint{methods: map[string]handler{"POST": d.pkiIssue}, args: []string{issuer, seg[1]}}
	case len(seg) == 2 && seg[0] == "cert":
		return &endpoint{methods: map[string]handler{"GET": d.pkiCert}, public: true, args: []string{issuer, seg[1]}}
	}
	return nil
}

func (d *Door) transitRoute(seg []string) *endpoint {
	post := func(h handler, args ...string) *endpoint {
		return &endpoint{methods: map[string]handler{"POST": h}, args: args}
	}
	if len(seg) == 0 {
		return nil
	}
	switch seg[0] {
	case "encrypt", "decrypt", "rewrap":
		if len(seg) == 2 {
			return post(d.transitCrypt(seg[0]), seg[1])
		}
	case "datakey":
		if len(seg) == 3 && (seg[1] == "plaintext" || seg[1] == "wrapped") {
			return post(d.transitDatakey, seg[1], seg[2])
		}
	case "sign", "verify", "hmac":
		if len(seg) == 2 || len(seg) == 3 {
			return post(d.transitSignVerify(seg[0]), seg[1:]...)
		}
	case "random":
		if len(seg) <= 3 {
			return post(d.transitRandom, seg[1:]...)
		}
	case "keys":
		switch {
		case len(seg) == 1:
			return &endpoint{methods: map[string]handler{"LIST": d.transitListKeys}}
		case len(seg) == 2:
			return &endpoint{methods: map[string]handler{
				"GET": d.transitReadKey, "POST": d.transitCreateKey, "DELETE": d.transitDeleteKey,
			}, args: seg[1:]}
		case len(seg) == 3 && seg[2] == "rotate":
			return post(d.transitRotate, seg[1])
		case len(seg) == 3 && seg[2] == "config":
			return post(d.transitConfig, seg[1])
		}
	}
	return nil
}
