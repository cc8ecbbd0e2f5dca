package acme

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// maxIdentifiers bounds the identifiers of one order.
const maxIdentifiers = 100

// Challenge types.
const (
	HTTP01    = "http-01"
	DNS01     = "dns-01"
	TLSALPN01 = "tls-alpn-01"
)

// supportedChallenges are the types this server validates.
var supportedChallenges = []string{HTTP01, DNS01, TLSALPN01}

type orderPayload struct {
	Identifiers []Ident `json:"identifiers"`
	NotBefore   string  `json:"notBefore"`
	NotAfter    string  `json:"notAfter"`
	Replaces    string  `json:"replaces"`
}

// normalizeIdent checks an identifier's syntax and returns its canonical form.
func normalizeIdent(id Ident) (Ident, error) {
	switch id.Type {
	case "dns":
		v := strings.ToLower(strings.TrimSpace(id.Value))
		if v == "" || len(v) > 253 || strings.HasSuffix(v, ".") {
			return id, errRejectedIdent("DNS identifier %q", truncate(id.Value))
		}
		if _, err := netip.ParseAddr(v); err == nil {
			return id, errMalformed("IP address %q as a dns identifier", truncate(v))
		}
		return Ident{Type: "dns", Value: v}, nil
	case "ip":
		a, err := netip.ParseAddr(id.Value)
		if err != nil || a.Zone() != "" {
			return id, errMalformed("IP identifier %q", truncate(id.Value))
		}
		return Ident{Type: "ip", Value: a.Unmap().String()}, nil
	}
	return id, errUnsupportedIdent("identifier type %q", truncate(id.Type))
}

// challengeTypes are the challenges offered for an identifier.
func (s *Server) challengeTypes(d *Directory, id Ident, wildcard bool) []string {
	var out []string
	for _, t := range supportedChallenges {
		if len(d.AllowedChallenges) > 0 && !slices.Contains(d.AllowedChallenges, t) {
			continue
		}
		switch {
		case wildcard && t != DNS01, id.Type == "ip" && t == DNS01:
			continue
		}
		out = append(out, t)
	}
	return out
}

// newOrder (RFC 8555 7.4).
func (s *Server) newOrder(ctx context.Context, rq *request) (int, any, error) {
	var p orderPayload
	if err := decodePayload(rq.jws.Payload, &p); err != nil {
		return 0, nil, err
	}
	if len(p.Identifiers) == 0 || len(p.Identifiers) > maxIdentifiers {
		return 0, nil, errMalformed("an order needs 1 to %d identifiers", maxIdentifiers)
	}
	if err := s.checkOrderCap(ctx, rq.dir.Name, rq.acct.ID); err != nil {
		return 0, nil, err
	}
	if err := s.allow("new orders", s.limits.ordersAcct.get(rq.dir.Name+"/"+rq.acct.ID),
		s.limits.ordersIP.get(rq.dir.Name+"/"+clientIP(rq.r))); err != nil {
		return 0, nil, err
	}
	now := s.cfg.Now().UTC()
	o := &order{Account: rq.acct.ID, Status: "pending", Expires: now.Add(s.cfg.OrderLifetime).Truncate(time.Second)}
	var err error
	if o.ID, err = s.newID(); err != nil {
		return 0, nil, err
	}
	rq.audit.order = o.ID
	var dns, ips []string
	for _, raw := range p.Identifiers {
		id, err := normalizeIdent(raw)
		if err != nil {
			return 0, nil, err
		}
		if err := rq.acct.Policy.allowsIdent(id); err != nil {
			return 0, nil, err
		}
		if slices.Contains(o.Identifiers, id) {
			continue
		}
		o.Identifiers = append(o.Identifiers, id)
		if id.Type == "dns" {
			dns = append(dns, id.Value)
		} else {
			ips = append(ips, id.Value)
		}
	}
	if err := s.cfg.CA.CheckNames(ctx, rq.dir.Role, dns, ips); err != nil {
		if errors.Is(err, errs.InvalidArgument) {
			return 0, nil, errRejectedIdent("%s", truncate(err.Error()))
		}
		return 0, nil, err
	}
	if err := s.orderValidity(ctx, rq.dir, o, p, now); err != nil {
		return 0, nil, err
	}
	if err := s.takeDailyOrder(ctx, rq.dir.Name, rq.acct); err != nil {
		return 0, nil, err
	}
	if p.Replaces != "" {
		if err := s.claimReplaces(ctx, rq, p.Replaces, o); err != nil {
			return 0, nil, err
		}
		o.Replaces = p.Replaces
	}
	for _, id := range o.Identifiers {
		if az, err := s.reusableAuthz(ctx, rq.dir.Name, rq.acct.ID, id); err != nil {
			return 0, nil, err
		} else if az != nil {
			o.Authzs = append(o.Authzs, az.ID)
			continue
		}
		az, err := s.newAuthz(rq, id, o.Expires)
		if err != nil {
			return 0, nil, err
		}
		if len(az.Challenges) == 0 {
			return 0, nil, errRejectedIdent("no challenge of this directory can validate %q", id.Value)
		}
		if _, err := s.put(ctx, prefixAuthz+rq.dir.Name+"/"+az.ID, az, keystore.MustNotExist); err != nil {
			return 0, nil, err
		}
		o.Authzs = append(o.Authzs, az.ID)
	}
	if _, err := s.put(ctx, prefixAcctOrders+rq.dir.Name+"/"+o.Account+"/"+o.ID, o.Expires, keystore.MustNotExist); err != nil {
		return 0, nil, err
	}
	if _, err := s.put(ctx, prefixOrders+rq.dir.Name+"/"+o.ID, o, keystore.MustNotExist); err != nil {
		return 0, nil, err
	}
	rq.w.Header().Set("Location", s.url(rq.dir.Name, "order", o.ID))
	return http.StatusCreated, s.orderObject(rq.dir.Name, o), nil
}

// orderValidity checks notBefore/notAfter against the role: notAfter at
// most the role's max_ttl away; notBefore, if given, not in the future
// (certificates start when signed, back-dated as the role says).
func (s *Server) orderValidity(ctx context.Context, d *Directory, o *order, p orderPayload, now time.Time) error {
	if p.NotBefore != "" {
		t, err := time.Parse(time.RFC3339, p.NotBefore)
		if err != nil {
			return errMalformed("notBefore is not an RFC 3339 time")
		}
		if t.After(now) {
			return errMalformed("notBefore in the future is not supported")
		}
		o.NotBefore = t
	}
	if p.NotAfter == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339, p.NotAfter)
	if err != nil {
		return errMalformed("notAfter is not an RFC 3339 time")
	}
	if !t.After(now) || (!o.NotBefore.IsZero() && !t.After(o.NotBefore)) {
		return errMalformed("notAfter must be after now and notBefore")
	}
	role, err := s.cfg.CA.GetRole(ctx, &pb.GetRoleRequest{Name: d.Role})
	if err != nil {
		return fmt.Errorf("acme: role %q of directory %q: %w", d.Role, d.Name, err)
	}
	if max := role.GetRole().GetMaxTtl().AsDuration(); max > 0 && t.Sub(now) > max {
		return errMalformed("notAfter is more than the role's max_ttl (%s) away", max)
	}
	o.NotAfter = t
	return nil
}

func (s *Server) newAuthz(rq *request, id Ident, expires time.Time) (*authz, error) {
	az := &authz{Account: rq.acct.ID, Identifier: id, Status: "pending", Expires: expires}
	if v, ok := strings.CutPrefix(id.Value, "*."); ok && id.Type == "dns" {
		az.Identifier.Value, az.Wildcard = v, true
	}
	var err error
	if az.ID, err = s.newID(); err != nil {
		return nil, err
	}
	for _, t := range s.challengeTypes(rq.dir, id, az.Wildcard) {
		tok := make([]byte, 32)
		if _, err := s.cfg.Rand.Read(tok); err != nil {
			return nil, fmt.Errorf("acme: token: %w", err)
		}
		az.Challenges = append(az.Challenges, challenge{Type: t, Token: b64.EncodeToString(tok), Status: "pending"})
	}
	return az, nil
}

func (s *Server) orderObject(dir string, o *order) map[string]any {
	urls := make([]string, len(o.Authzs))
	for i, a := range o.Authzs {
		urls[i] = s.url(dir, "authz", a)
	}
	m := map[string]any{
		"status": o.Status, "expires": o.Expires.Format(time.RFC3339), "identifiers": o.Identifiers,
		"authorizations": urls, "finalize": s.url(dir, "order", o.ID, "finalize"),
	}
	if !o.NotBefore.IsZero() {
		m["notBefore"] = o.NotBefore.Format(time.RFC3339)
	}
	if !o.NotAfter.IsZero() {
		m["notAfter"] = o.NotAfter.Format(time.RFC3339)
	}
	if o.Replaces != "" {
		m["replaces"] = o.Replaces
	}
	if o.Error != nil {
		m["error"] = o.Error
	}
	if o.Cert != "" {
		m["certificate"] = s.url(dir, "cert", o.Cert)
	}
	return m
}

// loadOrder reads an order of rq's account and brings its status up to
// date from its authorizations and the clock (RFC 8555 7.1.6).
func (s *Server) loadOrder(ctx context.Context, rq *request, id string) (*order, int64, error) {
	rq.audit.order = id
	key := prefixOrders + rq.dir.Name + "/" + id
	for range 5 {
		o := new(order)
		rev, found, err := s.get(ctx, key, o)
		if err != nil {
			return nil, 0, err
		}
		if !found || o.Account != rq.acct.ID {
			return nil, 0, errNotFound("no such order")
		}
		status := o.Status
		now := s.cfg.Now()
		switch {
		case (status == "pending" || status == "ready") && !now.Before(o.Expires):
			status = "invalid"
			o.Error = problem("malformed", 0, "order expired")
		case status == "pending":
			all := true
			for _, aid := range o.Authzs {
				az := new(authz)
				if _, found, err := s.get(ctx, prefixAuthz+rq.dir.Name+"/"+aid, az); err != nil {
					return nil, 0, err
				} else if !found {
					return nil, 0, fmt.Errorf("acme: order %s: authz %s missing", id, aid)
				}
				st := az.status(now)
				if st != "valid" {
					all = false
				}
				if st == "invalid" || st == "deactivated" || st == "expired" || st == "revoked" {
					status = "invalid"
					o.Error = problem("unauthorized", 0, "authorization for %s is %s", az.Identifier.Value, st)
					break
				}
			}
			if all && status == "pending" {
				status = "ready"
			}
		case status == "processing":
			settled, err := s.settleProcessing(ctx, rq.dir.Name, o, now)
			if err != nil {
				return nil, 0, err
			}
			status = settled
		}
		if status == o.Status {
			return o, rev, nil
		}
		o.Status = status
		if status == "ready" {
			o.Cert = "" // a finalize that recorded nothing: the client may finalize again
		}
		newRev, err := s.put(ctx, key, o, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil && status == "valid" {
			// The certificate is recorded: the order is valid whether or
			// not this write landed (the next read tries again).
			s.cfg.Logger.Warn("acme: settle order valid", "order", id, "err", err)
			return o, rev, nil
		}
		if err == nil && (status == "invalid" || status == "valid") {
			s.closeOrder(ctx, rq.dir.Name, o)
		}
		return o, newRev, err
	}
	return nil, 0, problem("serverInternal", http.StatusServiceUnavailable, "order busy; retry")
}

// status is an authorization's status now.
func (az *authz) status(now time.Time) string {
	if (az.Status == "pending" || az.Status == "valid") && !now.Before(az.Expires) {
		return "expired"
	}
	return az.Status
}

func (s *Server) getOrder(ctx context.Context, rq *request, id string) (int, any, error) {
	if len(rq.jws.Payload) != 0 {
		return 0, nil, errMalformed("an order is read with POST-as-GET (empty payload)")
	}
	o, _, err := s.loadOrder(ctx, rq, id)
	if err != nil {
		return 0, nil, err
	}
	if o.Status == "processing" {
		rq.w.Header().Set("Retry-After", "1")
	}
	return http.StatusOK, s.orderObject(rq.dir.Name, o), nil
}

func (s *Server) authzObject(dir string, az *authz, now time.Time) map[string]any {
	chs := make([]map[string]any, len(az.Challenges))
	for i, c := range az.Challenges {
		chs[i] = s.challengeObject(dir, az.ID, &c)
	}
	m := map[string]any{
		"identifier": az.Identifier, "status": az.status(now), "expires": az.Expires.Format(time.RFC3339),
		"challenges": chs,
	}
	if az.Wildcard {
		m["wildcard"] = true
	}
	return m
}

func (s *Server) challengeObject(dir, authzID string, c *challenge) map[string]any {
	m := map[string]any{"type": c.Type, "url": s.url(dir, "chall", authzID, c.Type), "token": c.Token, "status": c.Status}
	if !c.Validated.IsZero() {
		m["validated"] = c.Validated.Format(time.RFC3339)
	}
	if c.Error != nil {
		m["error"] = c.Error
	}
	return m
}

// loadAuthz reads an authorization of rq's account.
func (s *Server) loadAuthz(ctx context.Context, rq *request, id string) (*authz, int64, error) {
	az := new(authz)
	rev, found, err := s.get(ctx, prefixAuthz+rq.dir.Name+"/"+id, az)
	if err != nil {
		return nil, 0, err
	}
	if !found || az.Account != rq.acct.ID {
		return nil, 0, errNotFound("no such authorization")
	}
	return az, rev, nil
}

// getAuthz: POST-as-GET, or {"status":"deactivated"} (RFC 8555 7.5.2).
func (s *Server) getAuthz(ctx context.Context, rq *request, id string) (int, any, error) {
	az, rev, err := s.loadAuthz(ctx, rq, id)
	if err != nil {
		return 0, nil, err
	}
	if len(rq.jws.Payload) > 0 {
		var p struct {
			Status string `json:"status"`
		}
		if err := decodePayload(rq.jws.Payload, &p); err != nil {
			return 0, nil, err
		}
		if p.Status != "deactivated" {
			return 0, nil, errMalformed("an authorization can only become deactivated")
		}
		if st := az.status(s.cfg.Now()); st != "pending" && st != "valid" {
			return 0, nil, errMalformed("authorization is %s", st)
		}
		az.Status = "deactivated"
		if _, err := s.put(ctx, prefixAuthz+rq.dir.Name+"/"+id, az, rev); err != nil {
			if errors.Is(err, keystore.ErrConflict) {
				return 0, nil, problem("malformed", http.StatusConflict, "authorization changed meanwhile; retry")
			}
			return 0, nil, err
		}
	}
	return http.StatusOK, s.authzObject(rq.dir.Name, az, s.cfg.Now()), nil
}

// postChallenge: POST-as-GET reads a challenge; "{}" asks for validation,
// which a worker does later (RFC 8555 7.5.1).
func (s *Server) postChallenge(ctx context.Context, rq *request, authzID, typ string) (int, any, error) {
	az, rev, err := s.loadAuthz(ctx, rq, authzID)
	if err != nil {
		return 0, nil, err
	}
	i := slices.IndexFunc(az.Challenges, func(c challenge) bool { return c.Type == typ })
	if i < 0 {
		return 0, nil, errNotFound("no such challenge")
	}
	rq.w.Header().Add("Link", `<`+s.url(rq.dir.Name, "authz", authzID)+`>;rel="up"`)
	c := &az.Challenges[i]
	if len(rq.jws.Payload) == 0 {
		return http.StatusOK, s.challengeObject(rq.dir.Name, authzID, c), nil
	}
	var p map[string]any
	if err := decodePayload(rq.jws.Payload, &p); err != nil {
		return 0, nil, err
	}
	if c.Status != "pending" || az.status(s.cfg.Now()) != "pending" {
		return http.StatusOK, s.challengeObject(rq.dir.Name, authzID, c), nil
	}
	if err := s.checkFailedValidations(rq.dir.Name, rq.acct.ID); err != nil {
		return 0, nil, err
	}
	c.Status, c.Started = "processing", s.cfg.Now().UTC()
	if _, err := s.put(ctx, prefixAuthz+rq.dir.Name+"/"+authzID, az, rev); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			return 0, nil, problem("malformed", http.StatusConflict, "authorization changed meanwhile; retry")
		}
		return 0, nil, err
	}
	j := job{dir: rq.dir.Name, authz: authzID, typ: typ, thumbprint: rq.acct.Thumbprint}
	select {
	case s.jobs <- j:
	default:
		// Full queue: put the challenge back to pending and ask to come back.
		c.Status = "pending"
		if err := s.updateAuthz(context.WithoutCancel(ctx), rq.dir.Name, authzID, func(a *authz) bool {
			if k := slices.IndexFunc(a.Challenges, func(x challenge) bool { return x.Type == typ }); k >= 0 && a.Challenges[k].Status == "processing" {
				a.Challenges[k].Status = "pending"
				return true
			}
			return false
		}); err != nil {
			s.cfg.Logger.Warn("acme: reset challenge", "authz", authzID, "err", err)
		}
		return 0, nil, errRateLimited(5, "too many validations waiting; retry later")
	}
	rq.w.Header().Set("Retry-After", "1")
	return http.StatusOK, s.challengeObject(rq.dir.Name, authzID, c), nil
}

// updateAuthz applies fn to an authorization with compare-and-swap retries;
// fn returns false to write nothing.
func (s *Server) updateAuthz(ctx context.Context, dir, id string, fn func(*authz) bool) error {
	key := prefixAuthz + dir + "/" + id
	for range 10 {
		az := new(authz)
		rev, found, err := s.get(ctx, key, az)
		if err != nil {
			return err
		}
		if !found || !fn(az) {
			return nil
		}
		_, err = s.put(ctx, key, az, rev)
		if !errors.Is(err, keystore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("acme: authz %s: too many conflicts", id)
}
