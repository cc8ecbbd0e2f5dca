package acme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// maxContacts bounds an account's contact list.
const maxContacts = 10

type accountPayload struct {
	Contact              *[]string       `json:"contact"`
	TermsOfServiceAgreed bool            `json:"termsOfServiceAgreed"`
	OnlyReturnExisting   bool            `json:"onlyReturnExisting"`
	EAB                  json.RawMessage `json:"externalAccountBinding"`
	Status               string          `json:"status"`
}

func (s *Server) accountObject(dir string, a *account) map[string]any {
	o := map[string]any{
		"status": a.Status,
		"orders": s.url(dir, "acct", a.ID, "orders"),
	}
	if len(a.Contact) > 0 {
		o["contact"] = a.Contact
	}
	return o
}

func checkContacts(cs []string) error {
	if len(cs) > maxContacts {
		return errInvalidContact("more than %d contacts", maxContacts)
	}
	for _, c := range cs {
		addr, ok := strings.CutPrefix(c, "mailto:")
		if !ok {
			return errUnsupportedContact("only mailto: contacts are supported")
		}
		if strings.ContainsAny(addr, "?,") || len(addr) > 254 {
			return errInvalidContact("contact %q: one address, no hfields", truncate(c))
		}
		if a, err := mail.ParseAddress(addr); err != nil || a.Address != addr {
			return errInvalidContact("contact %q is not an email address", truncate(c))
		}
	}
	return nil
}

// newAccount creates an account, or finds the one of this key (RFC 8555 7.3).
func (s *Server) newAccount(ctx context.Context, rq *request) (int, any, error) {
	var p accountPayload
	if err := decodePayload(rq.jws.Payload, &p); err != nil {
		return 0, nil, err
	}
	tp, err := thumbprint(rq.jws.JWK)
	if err != nil {
		return 0, nil, err
	}
	dir := rq.dir.Name
	var id string
	if _, found, err := s.get(ctx, prefixAcctKeys+dir+"/"+tp, &id); err != nil {
		return 0, nil, err
	} else if found {
		a := new(account)
		if _, found, err := s.get(ctx, prefixAccounts+dir+"/"+id, a); err != nil || !found {
			return 0, nil, fmt.Errorf("acme: account %s of key %s: found=%v: %w", id, tp, found, err)
		}
		rq.w.Header().Set("Location", s.url(dir, "acct", id))
		rq.audit.account = id
		return http.StatusOK, s.accountObject(dir, a), nil
	}
	if p.OnlyReturnExisting {
		return 0, nil, errAccountDoesNotExist("no account for this key")
	}
	if err := s.allow("new accounts from this address", s.limits.accountsIP.get(dir+"/"+clientIP(rq.r))); err != nil {
		return 0, nil, err
	}
	var contact []string
	if p.Contact != nil {
		contact = *p.Contact
	}
	if err := checkContacts(contact); err != nil {
		return 0, nil, err
	}
	if rq.dir.TermsOfService != "" && !p.TermsOfServiceAgreed {
		return 0, nil, problem("userActionRequired", http.StatusForbidden, "the terms of service must be agreed")
	}
	if id, err = s.newID(); err != nil {
		return 0, nil, err
	}
	keyJSON, err := rq.jws.JWK.MarshalJSON()
	if err != nil {
		return 0, nil, fmt.Errorf("acme: encode account key: %v", err)
	}
	a := &account{ID: id, Status: "valid", Key: keyJSON, Thumbprint: tp, Contact: contact, Created: s.cfg.Now().UTC()}
	var release func()
	switch {
	case len(p.EAB) > 0 && string(p.EAB) != "null":
		if a.EABKID, a.Policy, release, err = s.claimEAB(ctx, rq, p.EAB, tp, id); err != nil {
			return 0, nil, err
		}
	case rq.dir.EABRequired:
		return 0, nil, errEABRequired("this directory requires an external account binding")
	}
	if _, err := s.put(ctx, prefixAcctKeys+dir+"/"+tp, id, keystore.MustNotExist); err != nil {
		if release != nil {
			release()
		}
		if errors.Is(err, keystore.ErrConflict) {
			return 0, nil, problem("malformed", http.StatusConflict, "an account for this key was created meanwhile")
		}
		return 0, nil, err
	}
	if _, err := s.put(ctx, prefixAccounts+dir+"/"+id, a, keystore.MustNotExist); err != nil {
		return 0, nil, err
	}
	rq.w.Header().Set("Location", s.url(dir, "acct", id))
	rq.audit.account = id
	return http.StatusCreated, s.accountObject(dir, a), nil
}

// claimEAB checks an External Account Binding (RFC 8555 7.3.4) and marks
// its key used by account id; it returns the key's ID and policy. release
// undoes the claim when the account cannot be written after all.
func (s *Server) claimEAB(ctx context.Context, rq *request, raw json.RawMessage, tp, id string) (string, *EABPolicy, func(), error) {
	e, err := parseEAB(raw)
	if err != nil {
		return "", nil, nil, err
	}
	if e.Header.URL != rq.jws.Header.URL {
		return "", nil, nil, errUnauthorized("externalAccountBinding url is not the newAccount URL")
	}
	inner, err := parseJWK(e.Payload)
	if err != nil {
		return "", nil, nil, errMalformed("externalAccountBinding payload is not the account key")
	}
	if itp, err := thumbprint(inner); err != nil || itp != tp {
		return "", nil, nil, errUnauthorized("externalAccountBinding binds another key")
	}
	kid := e.Header.KID
	if !validID(kid) {
		return "", nil, nil, errUnauthorized("unknown external account key")
	}
	k := new(eabKey)
	key := prefixEAB + rq.dir.Name + "/" + kid
	rev, found, err := s.get(ctx, key, k)
	if err != nil {
		return "", nil, nil, err
	}
	if !found {
		return "", nil, nil, errUnauthorized("unknown external account key")
	}
	if k.Account != "" {
		return "", nil, nil, errUnauthorized("external account key already used")
	}
	hk, err := s.cfg.Wrapper.Unwrap(ctx, k.WrappedKey)
	if err != nil {
		return "", nil, nil, fmt.Errorf("acme: unwrap EAB key %s: %w", kid, err)
	}
	ok := e.verifyMAC(hk)
	clear(hk)
	if !ok {
		return "", nil, nil, errUnauthorized("externalAccountBinding MAC is invalid")
	}
	k.Account, k.Used = id, s.cfg.Now().UTC()
	newRev, err := s.put(ctx, key, k, rev)
	if errors.Is(err, keystore.ErrConflict) {
		return "", nil, nil, errUnauthorized("external account key already used")
	}
	if err != nil {
		return "", nil, nil, err
	}
	release := func() {
		k.Account, k.Used = "", time.Time{}
		if _, err := s.put(context.WithoutCancel(ctx), key, k, newRev); err != nil {
			s.cfg.Logger.Warn("acme: release EAB key", "kid", kid, "err", err)
		}
	}
	return kid, k.Policy, release, nil
}

// accountUpdate serves POST to an account URL: POST-as-GET, contact update, deactivation.
func (s *Server) accountUpdate(ctx context.Context, rq *request, id string) (int, any, error) {
	if rq.acct.ID != id {
		return 0, nil, errUnauthorized("an account can only be read or changed by itself")
	}
	a := rq.acct
	rq.w.Header().Set("Location", s.url(rq.dir.Name, "acct", id))
	if len(rq.jws.Payload) == 0 {
		return http.StatusOK, s.accountObject(rq.dir.Name, a), nil
	}
	var p accountPayload
	if err := decodePayload(rq.jws.Payload, &p); err != nil {
		return 0, nil, err
	}
	switch p.Status {
	case "":
	case "deactivated":
		a.Status = "deactivated"
	default:
		return 0, nil, errMalformed("status can only become deactivated")
	}
	if p.Contact != nil {
		if err := checkContacts(*p.Contact); err != nil {
			return 0, nil, err
		}
		a.Contact = *p.Contact
	}
	if _, err := s.put(ctx, prefixAccounts+rq.dir.Name+"/"+id, a, rq.accRev); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			return 0, nil, problem("malformed", http.StatusConflict, "account changed meanwhile; retry")
		}
		return 0, nil, err
	}
	return http.StatusOK, s.accountObject(rq.dir.Name, a), nil
}

// keyChange rolls an account over to a new key (RFC 8555 7.3.5).
func (s *Server) keyChange(ctx context.Context, rq *request) (int, any, error) {
	inner, err := ParseJWS(rq.jws.Payload)
	if err != nil {
		return 0, nil, err
	}
	if inner.JWK == nil || inner.Header.Nonce != "" {
		return 0, nil, errMalformed("the inner JWS must carry the new key as jwk and no nonce")
	}
	if err := inner.Verify(inner.JWK.Key); err != nil {
		return 0, nil, err
	}
	if inner.Header.URL != rq.jws.Header.URL {
		return 0, nil, errMalformed("inner and outer url differ")
	}
	var p struct {
		Account string          `json:"account"`
		OldKey  json.RawMessage `json:"oldKey"`
	}
	if err := decodePayload(inner.Payload, &p); err != nil {
		return 0, nil, err
	}
	if p.Account != rq.jws.Header.KID {
		return 0, nil, errMalformed("inner account is not the outer kid")
	}
	old, err := parseJWK(p.OldKey)
	if err != nil {
		return 0, nil, errMalformed("oldKey is not a valid key")
	}
	if otp, err := thumbprint(old); err != nil || otp != rq.acct.Thumbprint {
		return 0, nil, errMalformed("oldKey is not the account's key")
	}
	ntp, err := thumbprint(inner.JWK)
	if err != nil {
		return 0, nil, err
	}
	dir, a := rq.dir.Name, rq.acct
	if ntp == a.Thumbprint {
		return 0, nil, errMalformed("the new key is the old key")
	}
	if _, err := s.put(ctx, prefixAcctKeys+dir+"/"+ntp, a.ID, keystore.MustNotExist); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			var other string
			s.get(ctx, prefixAcctKeys+dir+"/"+ntp, &other)
			if validID(other) {
				rq.w.Header().Set("Location", s.url(dir, "acct", other))
			}
			return 0, nil, problem("malformed", http.StatusConflict, "the new key belongs to an account")
		}
		return 0, nil, err
	}
	keyJSON, err := inner.JWK.MarshalJSON()
	if err != nil {
		return 0, nil, fmt.Errorf("acme: encode key: %v", err)
	}
	oldTP := a.Thumbprint
	a.Key, a.Thumbprint = keyJSON, ntp
	if _, err := s.put(ctx, prefixAccounts+dir+"/"+a.ID, a, rq.accRev); err != nil {
		s.cfg.Store.Delete(context.WithoutCancel(ctx), prefixAcctKeys+dir+"/"+ntp, keystore.AnyRevision)
		if errors.Is(err, keystore.ErrConflict) {
			return 0, nil, problem("malformed", http.StatusConflict, "account changed meanwhile; retry")
		}
		return 0, nil, err
	}
	if err := s.cfg.Store.Delete(ctx, prefixAcctKeys+dir+"/"+oldTP, keystore.AnyRevision); err != nil &&
		!errors.Is(err, keystore.ErrNotFound) {
		s.cfg.Logger.Warn("acme: drop old key index", "account", a.ID, "err", err)
	}
	rq.w.Header().Set("Location", s.url(dir, "acct", a.ID))
	return http.StatusOK, s.accountObject(dir, a), nil
}

// accountOrders lists an account's open orders (RFC 8555 7.1.2.1).
func (s *Server) accountOrders(ctx context.Context, rq *request, id string) (int, any, error) {
	if rq.acct.ID != id {
		return 0, nil, errUnauthorized("not this account's orders")
	}
	prefix := prefixAcctOrders + rq.dir.Name + "/" + id + "/"
	es, err := s.cfg.Store.List(ctx, prefix)
	if err != nil {
		return 0, nil, fmt.Errorf("acme: list orders: %w", err)
	}
	urls := []string{}
	now := s.cfg.Now()
	for _, e := range es {
		var exp time.Time
		if json.Unmarshal(e.Value, &exp) == nil && now.Before(exp) {
			urls = append(urls, s.url(rq.dir.Name, "order", e.Key[len(prefix):]))
		}
	}
	return http.StatusOK, map[string]any{"orders": urls}, nil
}
