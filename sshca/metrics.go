package sshca

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// The engine's Prometheus metrics (Engine.Collector):
//
//	hsmgate_ssh_signed_total{role,type}             certificates signed
//	hsmgate_ssh_refused_total{role,type,reason}     certificates refused: each refused item, or every item of a refused request
//	hsmgate_ssh_krl_age_seconds                     seconds since the revocation record (and so the KRL) last changed
//
// role is a role that was found ("" when the request's role, or its CA,
// could not be used), so a caller cannot add series by inventing names;
// type is user or host; reason comes from a fixed set (refusalReason).

// metricsScrapeTimeout bounds the store read of one scrape.
const metricsScrapeTimeout = 3 * time.Second

func refusalReason(err error) string {
	switch {
	case errors.Is(err, ErrNotAllowed):
		return "not_allowed"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrRoleNotFound):
		return "role_not_found"
	case errors.Is(err, ErrWrongType):
		return "wrong_type"
	case errors.Is(err, ErrCANotFound), errors.Is(err, ErrState):
		return "ca"
	case errors.Is(err, ErrTooManyItems):
		return "too_many_items"
	}
	return "other"
}

type metrics struct {
	signed  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		signed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_ssh_signed_total", Help: "SSH certificates signed, by role and certificate type.",
		}, []string{"role", "type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_ssh_refused_total", Help: "SSH certificates refused, by role, certificate type and reason (not_allowed, invalid, role_not_found, wrong_type, ca, too_many_items, other).",
		}, []string{"role", "type", "reason"}),
	}
}

func certTypeLabel(ct pb.SSHCertType) string {
	switch ct {
	case pb.SSHCertType_SSH_CERT_TYPE_USER:
		return "user"
	case pb.SSHCertType_SSH_CERT_TYPE_HOST:
		return "host"
	}
	return "other"
}

// itemRefused notes item i's refusal reason in why (made on first use).
func itemRefused(why []string, n, i int, err error) []string {
	if why == nil {
		why = make([]string, n)
	}
	why[i] = refusalReason(err)
	return why
}

// observe counts one Sign call of n items: role is the role that was used
// ("" if none), why the reasons of refused items, err the call's outcome.
func (m *metrics) observe(role string, ct pb.SSHCertType, n int, why []string, err error) {
	typ := certTypeLabel(ct)
	if err != nil {
		if !errors.Is(err, context.Canceled) && n > 0 {
			m.refused.WithLabelValues(role, typ, refusalReason(err)).Add(float64(n))
		}
		return
	}
	ok := n
	for _, w := range why {
		if w != "" {
			ok--
			m.refused.WithLabelValues(role, typ, w).Inc()
		}
	}
	if ok > 0 {
		m.signed.WithLabelValues(role, typ).Add(float64(ok))
	}
}

var (
	descKRLAge = prometheus.NewDesc("hsmgate_ssh_krl_age_seconds",
		"Seconds since the SSH revocation record (and so the KRL) last changed.", nil, nil)
	descScrapeErr = prometheus.NewDesc("hsmgate_ssh_metrics_store_errors",
		"1 when this scrape could not read the revocation record from the store, else 0.", nil, nil)
)

// Collector returns the engine's metrics for a Prometheus registry.
func (e *Engine) Collector() prometheus.Collector { return collector{e} }

type collector struct{ e *Engine }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.e.metrics.signed.Describe(ch)
	c.e.metrics.refused.Describe(ch)
	ch <- descKRLAge
	ch <- descScrapeErr
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	e.metrics.signed.Collect(ch)
	e.metrics.refused.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), metricsScrapeTimeout)
	defer cancel()
	l := &pb.SSHRevocationList{}
	failed := 0.0
	if _, err := e.getProto(ctx, keyKRL, l); err != nil {
		failed = 1
	} else if l.GetUpdateTime() != nil {
		ch <- prometheus.MustNewConstMetric(descKRLAge, prometheus.GaugeValue, e.now().Sub(l.GetUpdateTime().AsTime()).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, failed)
}
