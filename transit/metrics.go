package transit

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus collectors:
//
//	hsmgate_transit_items_total{key,op}             items processed (op: encrypt, decrypt, ...)
//	hsmgate_transit_item_errors_total{key,op}       items that failed with a caller's mistake
//	hsmgate_transit_key_latest_version{key}         latest version of each loaded key
//	hsmgate_transit_encryptions_reserved{key,version} encryptions reserved in the store
//	hsmgate_transit_rotations_total{key,reason}     rotations by this process (rpc, auto, usage)
type metrics struct {
	items     *prometheus.CounterVec
	itemErrs  *prometheus.CounterVec
	latest    *prometheus.GaugeVec
	reserved  *prometheus.GaugeVec
	rotations *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_transit_items_total", Help: "Transit items processed, by key and operation.",
		}, []string{"key", "op"}),
		itemErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_transit_item_errors_total", Help: "Transit items refused, by key and operation.",
		}, []string{"key", "op"}),
		latest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hsmgate_transit_key_latest_version", Help: "Latest version of each loaded transit key.",
		}, []string{"key"}),
		reserved: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hsmgate_transit_encryptions_reserved", Help: "Encryptions reserved in the store per key version (an upper bound of the count).",
		}, []string{"key", "version"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_transit_rotations_total", Help: "Key rotations done by this process, by reason (rpc, auto, usage).",
		}, []string{"key", "reason"}),
	}
	if reg != nil {
		// A second engine on the same registry shares the first one's collectors.
		var err error
		if m.items, err = register(reg, m.items); err != nil {
			return nil, err
		}
		if m.itemErrs, err = register(reg, m.itemErrs); err != nil {
			return nil, err
		}
		if m.latest, err = register(reg, m.latest); err != nil {
			return nil, err
		}
		if m.reserved, err = register(reg, m.reserved); err != nil {
			return nil, err
		}
		if m.rotations, err = register(reg, m.rotations); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if ex, ok := are.ExistingCollector.(C); ok {
				return ex, nil
			}
		}
		return c, err
	}
	return c, nil
}

// op indexes keyCounters.
type op int

const (
	opEncrypt op = iota
	opDecrypt
	opRewrap
	opDatakey
	opSign
	opVerify
	opHMAC
	opVerifyHMAC
	numOps
)

var opNames = [numOps]string{"encrypt", "decrypt", "rewrap", "datakey", "sign", "verify", "hmac", "verify_hmac"}

// keyCounters are one key's children, resolved once so that the hot path
// does no label lookup.
type keyCounters struct {
	items [numOps]prometheus.Counter
	errs  [numOps]prometheus.Counter
}

func (m *metrics) counters(name string) *keyCounters {
	c := &keyCounters{}
	for i := range numOps {
		c.items[i] = m.items.WithLabelValues(name, opNames[i])
		c.errs[i] = m.itemErrs.WithLabelValues(name, opNames[i])
	}
	return c
}

func (m *metrics) observeKey(st *keyState) {
	m.latest.WithLabelValues(st.rec.GetName()).Set(float64(st.rec.GetLatestVersion()))
}

func (m *metrics) forget(name string) {
	m.latest.DeleteLabelValues(name)
	m.reserved.DeletePartialMatch(prometheus.Labels{"key": name})
}
