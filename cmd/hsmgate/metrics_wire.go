package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hsmgate/hsmgate/internal/version"
)

// dependencyPingTimeout bounds each dependency check of a scrape.
const dependencyPingTimeout = 2 * time.Second

// registerProcessMetrics registers the process-wide collectors on the server's
// registry: hsmgate_build_info, the HSM module's (pool, login, PKCS#11
// latency and errors) and hsmgate_dependency_up, which pings the HSM and
// the store at scrape time (what /readyz checks), so that alerts need no
// probe of their own. The engines register theirs where they are built.
func registerProcessMetrics(d *deps) error {
	reg := d.Server.Metrics()
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hsmgate_build_info", Help: "Always 1; the labels say which hsmgate build is running.",
	}, []string{"version", "goversion"})
	bi.WithLabelValues(version.String(), runtime.Version()).Set(1)
	up := dependencyCollector{checks: map[string]func(context.Context) error{}}
	if d.HSM != nil {
		up.checks["hsm"] = d.HSM.Ping
	}
	if d.Store != nil {
		up.checks["store"] = d.Store.Ping
	}
	cs := []prometheus.Collector{bi, up}
	if d.HSM != nil {
		cs = append(cs, d.HSM.Collector())
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

var descDependencyUp = prometheus.NewDesc("hsmgate_dependency_up",
	"1 when the dependency (hsm, store) answered its check during this scrape, else 0.", []string{"dependency"}, nil)

// dependencyCollector reports each dependency's check at scrape time.
type dependencyCollector struct {
	checks map[string]func(context.Context) error
}

func (c dependencyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descDependencyUp }

func (c dependencyCollector) Collect(ch chan<- prometheus.Metric) {
	for name, check := range c.checks {
		ctx, cancel := context.WithTimeout(context.Background(), dependencyPingTimeout)
		v := 0.0
		if check(ctx) == nil {
			v = 1
		}
		cancel()
		ch <- prometheus.MustNewConstMetric(descDependencyUp, prometheus.GaugeValue, v, name)
	}
}
