package vaultdoor

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Logins are the auth methods behind auth/<method>/login. Each returns an
// ordinary hsmgate token bound to the role's policies and TTL. Errors are
// domain errors (internal/errs kinds): a refused login is Unauthenticated
// or PermissionDenied (403), a malformed one InvalidArgument (400), an
// unknown role NotFound or PermissionDenied, a rate limit ResourceExhausted.
type Logins interface {
	// AppRole logs in with a role ID and a secret ID from remote.
	AppRole(ctx context.Context, roleID, secretID string, remote netip.Addr) (*Login, error)
	// Kubernetes logs in with a service-account JWT under role.
	Kubernetes(ctx context.Context, role, jwt string) (*Login, error)
	// Cert logs in with the client certificate chain the TLS layer received
	// (leaf first, NOT verified by the door: the method verifies it against
	// the named cert role's trust anchors, or any role's when name is "").
	Cert(ctx context.Context, chain []*x509.Certificate, name string) (*Login, error)
}

// Login is a successful login.
type Login struct {
	Token, Accessor string
	Policies        []string
	TTL             time.Duration
	Renewable       bool
	Metadata        map[string]string
	// Name names the identity in the audit line (e.g. "approle:<role>").
	Name string
}

// Auditor is what the door needs of the audit log (*audit.Log) for login lines.
type Auditor interface {
	Write(e *audit.Entry) error
	HMAC(s string) string
}

var errNoMethod = errs.New(errs.Unimplemented, "vaultdoor: auth method not enabled")

// health answers sys/health as Vault does: 200 when the HSM and the store
// answer, else the sealedcode (503). hsmgate replicas are all active, so
// standbyok and perfstandbyok change nothing; they and the *code
// parameters are accepted.
func (d *Door) health(w http.ResponseWriter, c *call, _ *fields, _ []string) error {
	q := c.r.URL.Query()
	code := func(name string, def int) (int, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 || n > 599 {
			return 0, invalidf("%s: want an HTTP status code", name)
		}
		return n, nil
	}
	for _, b := range []string{"standbyok", "perfstandbyok"} {
		if v := q.Get(b); v != "" {
			if _, err := strconv.ParseBool(v); err != nil {
				return invalidf("%s: want a boolean", b)
			}
		}
	}
	active, err := code("activecode", http.StatusOK)
	if err != nil {
		return err
	}
	sealed, err := code("sealedcode", http.StatusServiceUnavailable)
	if err != nil {
		return err
	}
	healthy := true
	if d.cfg.Health != nil {
		ctx, cancel := context.WithTimeout(c.r.Context(), 3*time.Second)
		defer cancel()
		if herr := d.cfg.Health(ctx); herr != nil {
			healthy = false
			d.log.Warn("vaultdoor: sys/health: unhealthy", "request_id", c.reqID, "error", herr)
		}
	}
	st := active
	if !healthy {
		st = sealed
	}
	writeJSON(w, st, map[string]any{
		"initialized":                  true,
		"sealed":                       !healthy,
		"standby":                      false,
		"performance_standby":          false,
		"replication_performance_mode": "disabled",
		"replication_dr_mode":          "disabled",
		"server_time_utc":              d.cfg.Now().Unix(),
		"version":                      d.cfg.Version,
		"cluster_name":                 "hsmgate",
		"cluster_id":                   "",
	})
	return nil
}

func (d *Door) lookupSelf(w http.ResponseWriter, c *call, f *fields, _ []string) error {
	if err := f.done(); err != nil {
		return err
	}
	out, err := d.invoke(c.r.Context(), c, pb.AuthService_LookupSelf_FullMethodName, &pb.LookupSelfRequest{}, nil)
	if err != nil {
		return err
	}
	resp := out.(*pb.LookupSelfResponse)
	tok := resp.GetToken()
	now := d.cfg.Now()
	data := map[string]any{
		"accessor":         tok.GetAccessor(),
		"display_name":     resp.GetName(),
		"policies":         nonNil(resp.GetPolicies()),
		"meta":             resp.GetMetadata(),
		"path":             "auth/token/create",
		"type":             "service",
		"entity_id":        "",
		"num_uses":         0,
		"orphan":           tok.GetParent() == "",
		"renewable":        tok.GetRenewable(),
		"explicit_max_ttl": 0,
		"id":               c.token,
	}
	if resp.GetKind() == "root" {
		data["policies"] = []string{"root"}
	}
	if t := tok.GetCreateTime(); t != nil {
		data["creation_time"] = t.AsTime().Unix()
		data["issue_time"] = t.AsTime().Format(time.RFC3339Nano)
	}
	data["creation_ttl"] = int64(tok.GetTtl().AsDuration() / time.Second)
	data["ttl"] = 0
	data["expire_time"] = nil
	if e := tok.GetExpireTime(); e != nil {
		data["ttl"] = max(int64(e.AsTime().Sub(now)/time.Second), 0)
		data["expire_time"] = e.AsTime().Format(time.RFC3339Nano)
	}
	if m := tok.GetMaxExpireTime(); m != nil && tok.GetCreateTime() != nil {
		data["explicit_max_ttl"] = int64(m.AsTime().Sub(tok.GetCreateTime().AsTime()) / time.Second)
	}
	writeData(w, c, http.StatusOK, data)
	return nil
}

func (d *Door) renewSelf(w http.ResponseWriter, c *call, f *fields, _ []string) error {
	inc := f.Duration("increment")
	if err := f.done(); err != nil {
		return err
	}
	req := &pb.RenewSelfRequest{}
	if inc > 0 {
		req.Increment = durationpb.New(inc)
	}
	out, err := d.invoke(c.r.Context(), c, pb.AuthService_RenewSelf_FullMethodName, req, nil)
	if err != nil {
		return err
	}
	info := out.(*pb.RenewSelfResponse).GetInfo()
	var ttl int64
	if e := info.GetExpireTime(); e != nil {
		ttl = max(int64(e.AsTime().Sub(d.cfg.Now())/time.Second), 0)
	}
	writeJSON(w, http.StatusOK, &response{RequestID: c.reqID, Auth: &authInfo{
		ClientToken: c.token, Accessor: info.GetAccessor(), Policies: nonNil(info.GetPolicies()),
		TokenPolicies: nonNil(info.GetPolicies()), Metadata: info.GetMetadata(), LeaseDuration: ttl,
		Renewable: info.GetRenewable(), TokenType: "service", Orphan: info.GetParent() == "",
	}})
	return nil
}

func (d *Door) revokeSelf(w http.ResponseWriter, c *call, f *fields, _ []string) error {
	if err := f.done(); err != nil {
		return err
	}
	if _, err := d.invoke(c.r.Context(), c, pb.AuthService_RevokeSelf_FullMethodName, &pb.RevokeSelfRequest{}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// login serves auth/<method>/login.
func (d *Door) login(method string) handler {
	return func(w http.ResponseWriter, c *call, f *fields, _ []string) error {
		logins := d.loginsOf()
		if logins == nil {
			return errNoMethod
		}
		ctx := c.r.Context()
		var (
			l   *Login
			err error
		)
		switch method {
		case "approle":
			roleID, secretID := f.String("role_id"), f.String("secret_id")
			if err := f.done(); err != nil {
				return err
			}
			remote, _ := netip.ParseAddrPort(c.r.RemoteAddr)
			l, err = logins.AppRole(ctx, roleID, secretID, remote.Addr().Unmap())
		case "kubernetes":
			role, jwt := f.String("role"), f.String("jwt")
			if err := f.done(); err != nil {
				return err
			}
			l, err = logins.Kubernetes(ctx, role, jwt)
		case "cert":
			name := f.String("name")
			if err := f.done(); err != nil {
				return err
			}
			var chain []*x509.Certificate
			if c.r.TLS != nil {
				chain = c.r.TLS.PeerCertificates
			}
			if len(chain) == 0 {
				err = errs.New(errs.Unauthenticated, "vaultdoor: cert login needs a client certificate")
			} else {
				l, err = logins.Cert(ctx, chain, name)
			}
		}
		if err == nil && (l == nil || l.Token == "") {
			err = errs.New(errs.Unavailable, "vaultdoor: login returned no token")
		}
		d.auditLogin(c, method, l, err)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, &response{RequestID: c.reqID, Auth: &authInfo{
			ClientToken: l.Token, Accessor: l.Accessor, Policies: nonNil(l.Policies), TokenPolicies: nonNil(l.Policies),
			Metadata: l.Metadata, LeaseDuration: int64(l.TTL / time.Second), Renewable: l.Renewable,
			TokenType: "service", Orphan: true,
		}})
		return nil
	}
}

// auditLogin writes one line per login attempt (the token never appears;
// its accessor only HMAC'd).
func (d *Door) auditLogin(c *call, method string, l *Login, err error) {
	a := d.auditorOf()
	if a == nil {
		return
	}
	e := &audit.Entry{
		Type: "response", RequestID: c.reqID, Remote: c.r.RemoteAddr + " via vault " + c.r.Method + " " + c.r.URL.Path,
		Method: "vault auth/" + method + "/login", Resource: "auth/" + method, Items: 1, Code: errs.Code(err).String(),
	}
	if l != nil && err == nil {
		e.Identity = &audit.Identity{Name: l.Name, Kind: "token", Policies: l.Policies, Accessor: a.HMAC(l.Accessor)}
	}
	if werr := a.Write(e); werr != nil {
		d.log.Error("vaultdoor: audit login", "request_id", c.reqID, "error", werr)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
