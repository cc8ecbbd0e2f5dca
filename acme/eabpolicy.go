package acme

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// EABPolicy limits what the account bound with an EAB key may order, on
// top of the directory's PKI role (which still checks every name). It is
// chosen when the key is made, copied into the account at newAccount and
// enforced at every newOrder of that account:
//
//   - AllowedDomains: DNS identifiers must be one of these names or under
//     one of them ("example.com" allows example.com, www.example.com and
//     *.example.com, not badexample.com); IP identifiers are refused. A
//     name outside the list is rejectedIdentifier (403).
//   - MaxOrdersPerDay: new orders per UTC day, counted in the keystore (so
//     the count holds across replicas); past it, rateLimited (429) with
//     Retry-After until the next UTC midnight.
//
// The zero value limits nothing.
type EABPolicy struct {
	AllowedDomains  []string `json:"allowed_domains,omitempty"`
	MaxOrdersPerDay int      `json:"max_orders_per_day,omitempty"`
}

// Bounds of an EAB policy.
const (
	maxAllowedDomains  = 100
	maxOrdersPerDayCap = 1_000_000
)

// prefixOrderQuota: acme/orderquota/<dir>/<account> → orderQuota.
const prefixOrderQuota = "acme/orderquota/"

type orderQuota struct {
	Day   string `json:"day"` // YYYY-MM-DD, UTC
	Count int    `json:"count"`
}

// normalize checks p and returns it in canonical form (lowercase suffixes
// without a leading dot, in the order given, duplicates dropped); nil if empty.
func (p *EABPolicy) normalize() (*EABPolicy, error) {
	if p == nil {
		return nil, nil
	}
	if len(p.AllowedDomains) > maxAllowedDomains {
		return nil, fmt.Errorf("%w: more than %d allowed domains", ErrInvalid, maxAllowedDomains)
	}
	if p.MaxOrdersPerDay < 0 || p.MaxOrdersPerDay > maxOrdersPerDayCap {
		return nil, fmt.Errorf("%w: max orders per day must be 0 (no limit) to %d", ErrInvalid, maxOrdersPerDayCap)
	}
	out := &EABPolicy{MaxOrdersPerDay: p.MaxOrdersPerDay}
	for _, d := range p.AllowedDomains {
		n := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(d)), ".")
		if !validDomainSuffix(n) {
			return nil, fmt.Errorf("%w: allowed domain %q is not a DNS name", ErrInvalid, truncate(d))
		}
		if !slices.Contains(out.AllowedDomains, n) {
			out.AllowedDomains = append(out.AllowedDomains, n)
		}
	}
	if len(out.AllowedDomains) == 0 && out.MaxOrdersPerDay == 0 {
		return nil, nil
	}
	return out, nil
}

// validDomainSuffix accepts a DNS name of LDH labels (no wildcard, no
// trailing dot).
func validDomainSuffix(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// allowsIdent reports whether a normalized identifier is within the policy.
func (p *EABPolicy) allowsIdent(id Ident) error {
	if p == nil || len(p.AllowedDomains) == 0 {
		return nil
	}
	if id.Type != "dns" {
		return errRejectedIdent("this account may only order DNS names under %s", strings.Join(p.AllowedDomains, ", "))
	}
	name := strings.TrimPrefix(id.Value, "*.")
	for _, d := range p.AllowedDomains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return nil
		}
	}
	return errRejectedIdent("%q is not under a domain this account may order (%s)", truncate(id.Value), strings.Join(p.AllowedDomains, ", "))
}

// takeDailyOrder counts one new order of acct against MaxOrdersPerDay
// (compare-and-swap, so replicas share the count), or answers rateLimited.
func (s *Server) takeDailyOrder(ctx context.Context, dir string, a *account) error {
	if a.Policy == nil || a.Policy.MaxOrdersPerDay <= 0 {
		return nil
	}
	key := prefixOrderQuota + dir + "/" + a.ID
	for range 20 {
		now := s.cfg.Now().UTC()
		day := now.Format(time.DateOnly)
		var q orderQuota
		rev, found, err := s.get(ctx, key, &q)
		if err != nil {
			return err
		}
		if !found {
			rev = keystore.MustNotExist
		}
		if q.Day != day {
			q = orderQuota{Day: day}
		}
		if q.Count >= a.Policy.MaxOrdersPerDay {
			midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
			return errRateLimited(max(1, int(midnight.Sub(now).Seconds())+1),
				"this account may make %d new orders per day (its external account binding's policy)", a.Policy.MaxOrdersPerDay)
		}
		q.Count++
		if _, err := s.put(ctx, key, &q, rev); err == nil {
			return nil
		} else if !errors.Is(err, keystore.ErrConflict) {
			return err
		}
	}
	return errRateLimited(1, "too many concurrent new orders; retry")
}
