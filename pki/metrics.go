package pki

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// The engine's Prometheus metrics (Service.Collector):
//
//	hsmgate_pki_issued_total{role}                 leaf certificates issued (Issue and Sign)
//	hsmgate_pki_refused_total{role,reason}         requests refused, reason from refusalReasons
//	hsmgate_pki_ca_expiry_seconds{issuer}          seconds until each active issuer's notAfter
//	hsmgate_pki_crl_age_seconds{issuer}            seconds since each issuer's full CRL thisUpdate
//
// role is a role that exists ("" when the request named none that does),
// so a caller cannot add series by inventing names. The two gauges are
// read from the store at scrape time (bounded by metricsScrapeTimeout), so
// that every replica reports the CRLs that another one signed.

// metricsScrapeTimeout bounds the store reads of one scrape.
const metricsScrapeTimeout = 3 * time.Second

// Refusal reasons: a fixed set.
const (
	reasonLint       = "lint"              // zlint found an error (ErrLint)
	reasonNotAllowed = "not_allowed"       // names, key type or TTL outside the role (ErrNotAllowed)
	reasonConstraint = "parent_constraint" // outside the constraints of the CAs above
	reasonInvalid    = "invalid"           // malformed request or CSR (ErrInvalid)
	reasonNoRole     = "role_not_found"
	reasonIssuer     = "issuer" // issuer missing, pending or unable to sign
	reasonOther      = "other"  // HSM, store or internal failure
)

func refusalReason(err error) string {
	switch {
	case errors.Is(err, ErrLint):
		return reasonLint
	case errors.Is(err, ErrNotAllowed):
		return reasonNotAllowed
	case errors.Is(err, ErrParentConstraint):
		return reasonConstraint
	case errors.Is(err, ErrInvalid):
		return reasonInvalid
	case errors.Is(err, ErrRoleNotFound):
		return reasonNoRole
	case errors.Is(err, ErrIssuerNotFound), errors.Is(err, ErrIssuerNotActive):
		return reasonIssuer
	}
	return reasonOther
}

type metrics struct {
	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_pki_issued_total", Help: "Leaf certificates issued, by role.",
		}, []string{"role"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_pki_refused_total", Help: "Certificate requests refused, by role and reason (lint, not_allowed, parent_constraint, invalid, role_not_found, issuer, other).",
		}, []string{"role", "reason"}),
	}
}

// observe counts one Issue or Sign call: role is the role that was found
// (nil if none was), err its outcome.
func (m *metrics) observe(role *pb.Role, err error) {
	name := role.GetName()
	if err == nil {
		m.issued.WithLabelValues(name).Inc()
		return
	}
	if errors.Is(err, context.Canceled) {
		return // the caller went away: not a refusal
	}
	m.refused.WithLabelValues(name, refusalReason(err)).Inc()
}

var (
	descCAExpiry = prometheus.NewDesc("hsmgate_pki_ca_expiry_seconds",
		"Seconds until the notAfter of each active issuer's certificate (negative once expired).", []string{"issuer"}, nil)
	descCRLAge = prometheus.NewDesc("hsmgate_pki_crl_age_seconds",
		"Seconds since the thisUpdate of each active issuer's current full CRL.", []string{"issuer"}, nil)
	descScrapeErr = prometheus.NewDesc("hsmgate_pki_metrics_store_errors",
		"1 when this scrape could not read the issuers or a CRL state from the store, else 0.", nil, nil)
)

// Collector returns the engine's metrics for a Prometheus registry.
func (s *Service) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Service }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.s.metrics.issued.Describe(ch)
	c.s.metrics.refused.Describe(ch)
	ch <- descCAExpiry
	ch <- descCRLAge
	ch <- descScrapeErr
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.metrics.issued.Collect(ch)
	s.metrics.refused.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), metricsScrapeTimeout)
	defer cancel()
	failed := 0.0
	recs, err := s.listIssuerRecords(ctx)
	if err != nil {
		failed = 1
	}
	now := s.cfg.Now()
	for _, r := range recs {
		if r.GetState() != pb.IssuerState_ISSUER_STATE_ACTIVE || r.GetNotAfter() == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descCAExpiry, prometheus.GaugeValue, r.GetNotAfter().AsTime().Sub(now).Seconds(), r.GetName())
		st, _, err := s.crlState(ctx, r.GetName())
		if err != nil {
			failed = 1
			continue
		}
		if len(st.GetFull()) > 0 && st.GetBaseTime() != nil {
			ch <- prometheus.MustNewConstMetric(descCRLAge, prometheus.GaugeValue, now.Sub(st.GetBaseTime().AsTime()).Seconds(), r.GetName())
		}
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, failed)
}
