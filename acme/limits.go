package acme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/hsmgate/hsmgate/keystore"
)

// Limits bound what one account or one client address can make. Rates are
// kept per replica (in memory); the order cap and authorization reuse are
// in the keystore, so they hold across replicas.
type Limits struct {
	// OrdersPerHour and OrderBurst: new orders per account and per IP
	// address (default 300/h, burst 50).
	OrdersPerHour, OrderBurst int
	// FailedValidationsPerHour and FailedValidationBurst: failed
	// validations per account before challenges are refused (default 60/h, burst 10).
	FailedValidationsPerHour, FailedValidationBurst int
	// AccountsPerHour: new accounts per IP address (default 50/h, burst 20).
	AccountsPerHour, AccountBurst int
	// MaxOpenOrders: unexpired, unfinished orders per account (default 100).
	MaxOpenOrders int
	// AuthzReuse: a valid authorization of the account for the same
	// identifier, validated at most this long ago, is reused by new orders
	// (default 0: never).
	AuthzReuse time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.OrdersPerHour, 300)
	def(&l.OrderBurst, 50)
	def(&l.FailedValidationsPerHour, 60)
	def(&l.FailedValidationBurst, 10)
	def(&l.AccountsPerHour, 50)
	def(&l.AccountBurst, 20)
	def(&l.MaxOpenOrders, 100)
	return l
}

// maxLimiterKeys bounds each limiter table; past it the table starts over
// (a client gains at most one fresh burst from that).
const maxLimiterKeys = 100_000

type limiterTable struct {
	mu    sync.Mutex
	m     map[string]*rate.Limiter
	r     rate.Limit
	burst int
}

func newLimiterTable(perHour, burst int) *limiterTable {
	return &limiterTable{m: map[string]*rate.Limiter{}, r: rate.Limit(float64(perHour) / 3600), burst: burst}
}

func (t *limiterTable) get(key string) *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.m[key]
	if l == nil {
		if len(t.m) >= maxLimiterKeys {
			t.m = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(t.r, t.burst)
		t.m[key] = l
	}
	return l
}

// retryAfter is how long until l has a token again, in whole seconds.
func retryAfter(l *rate.Limiter, now time.Time) int {
	need := 1 - l.TokensAt(now)
	if need <= 0 || l.Limit() <= 0 {
		return 1
	}
	return int(math.Ceil(need / float64(l.Limit())))
}

type limiters struct {
	ordersAcct, ordersIP, failedAcct, accountsIP *limiterTable
}

func newLimiters(l Limits) *limiters {
	return &limiters{
		ordersAcct: newLimiterTable(l.OrdersPerHour, l.OrderBurst),
		ordersIP:   newLimiterTable(l.OrdersPerHour, l.OrderBurst),
		failedAcct: newLimiterTable(l.FailedValidationsPerHour, l.FailedValidationBurst),
		accountsIP: newLimiterTable(l.AccountsPerHour, l.AccountBurst),
	}
}

func clientIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// allow takes a token from each limiter, or none and a rateLimited problem.
func (s *Server) allow(what string, ls ...*rate.Limiter) error {
	now := s.cfg.Now()
	for i, l := range ls {
		if !l.AllowN(now, 1) {
			for _, back := range ls[:i] { // give back what was taken
				back.AllowN(now, -1)
			}
			return errRateLimited(retryAfter(l, now), "too many %s; retry later", what)
		}
	}
	return nil
}

// checkFailedValidations refuses new validations of an account that failed too many.
func (s *Server) checkFailedValidations(dir, acct string) error {
	l := s.limits.failedAcct.get(dir + "/" + acct)
	now := s.cfg.Now()
	if l.TokensAt(now) < 1 {
		return errRateLimited(retryAfter(l, now), "too many failed validations; retry later")
	}
	return nil
}

func (s *Server) recordFailedValidation(dir, acct string) {
	s.limits.failedAcct.get(dir+"/"+acct).AllowN(s.cfg.Now(), 1)
}

// Account order index: acme/acctorders/<dir>/<account>/<order> → expiry.
const prefixAcctOrders = "acme/acctorders/"

// checkOrderCap counts the account's open orders (unexpired entries of its index).
func (s *Server) checkOrderCap(ctx context.Context, dir, acct string) error {
	es, err := s.cfg.Store.List(ctx, prefixAcctOrders+dir+"/"+acct+"/")
	if err != nil {
		return fmt.Errorf("acme: list orders of %s: %w", acct, err)
	}
	now, open := s.cfg.Now(), 0
	for _, e := range es {
		var exp time.Time
		if json.Unmarshal(e.Value, &exp) == nil && now.Before(exp) {
			open++
		}
	}
	if open >= s.cfg.Limits.MaxOpenOrders {
		return errRateLimited(60, "account has %d open orders (limit %d)", open, s.cfg.Limits.MaxOpenOrders)
	}
	return nil
}

// closeOrder drops an order from its account's open orders.
func (s *Server) closeOrder(ctx context.Context, dir string, o *order) {
	err := s.cfg.Store.Delete(context.WithoutCancel(ctx), prefixAcctOrders+dir+"/"+o.Account+"/"+o.ID, keystore.AnyRevision)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		s.cfg.Logger.Warn("acme: close order index", "order", o.ID, "err", err)
	}
}

// Authorization reuse index: acme/acctauthz/<dir>/<account>/<type>:<value> → authz id.
const prefixAcctAuthz = "acme/acctauthz/"

func authzIndexKey(dir, acct string, az *authz) string {
	v := az.Identifier.Value
	if az.Wildcard {
		v = "*." + v
	}
	return prefixAcctAuthz + dir + "/" + acct + "/" + az.Identifier.Type + ":" + v
}

// reusableAuthz returns a valid authorization of the account for id,
// validated within Limits.AuthzReuse and still valid; nil if none.
func (s *Server) reusableAuthz(ctx context.Context, dir, acct string, id Ident) (*authz, error) {
	if s.cfg.Limits.AuthzReuse <= 0 {
		return nil, nil
	}
	probe := &authz{Identifier: id}
	if v, ok := cutWildcard(id); ok {
		probe.Identifier.Value, probe.Wildcard = v, true
	}
	var azID string
	if _, found, err := s.get(ctx, authzIndexKey(dir, acct, probe), &azID); err != nil || !found {
		return nil, err
	}
	az := new(authz)
	if _, found, err := s.get(ctx, prefixAuthz+dir+"/"+azID, az); err != nil || !found {
		return nil, err
	}
	now := s.cfg.Now()
	if az.Account != acct || az.status(now) != "valid" {
		return nil, nil
	}
	for _, c := range az.Challenges {
		if c.Status == "valid" && now.Sub(c.Validated) <= s.cfg.Limits.AuthzReuse {
			return az, nil
		}
	}
	return nil, nil
}

// indexValidAuthz records a newly valid authorization for reuse.
func (s *Server) indexValidAuthz(ctx context.Context, dir string, az *authz) {
	if s.cfg.Limits.AuthzReuse <= 0 {
		return
	}
	if _, err := s.put(ctx, authzIndexKey(dir, az.Account, az), az.ID, keystore.AnyRevision); err != nil {
		s.cfg.Logger.Warn("acme: index authz", "authz", az.ID, "err", err)
	}
}

// cutWildcard returns the base name of a wildcard DNS identifier.
func cutWildcard(id Ident) (string, bool) {
	if id.Type != "dns" {
		return "", false
	}
	return strings.CutPrefix(id.Value, "*.")
}
