package transit

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus collectors. By default their labels
// are the key type and the operation, never a key name, so the number of
// series does not grow with the number of keys:
//
//	hsmgate_transit_items_total{type,op}           items processed (op: encrypt, decrypt, ...)
//	hsmgate_transit_item_errors_total{type,op}     items that failed with a caller's mistake
//	hsmgate_transit_rotations_total{type,reason}   rotations by this process (rpc, auto, usage)
//
// With Config.PerKeyMetrics the same series carry a key label too, and two
// per-key gauges are added:
//
//	hsmgate_transit_key_latest_version{key}        latest version of each loaded key
//	hsmgate_transit_encryptions_reserved{key,version} encryptions reserved in the store
//
// Either way a key type has series only for the operations it supports
// (opsByKind): a signing key has no encrypt series.
type metrics struct {
	perKey    bool
	items     *prometheus.CounterVec
	itemErrs  *prometheus.CounterVec
	rotations *prometheus.CounterVec
	latest    *prometheus.GaugeVec // nil unless perKey
	reserved  *prometheus.GaugeVec // nil unless perKey

	mu     sync.Mutex
	byType map[string]*keyCounters // type name → shared counters (not perKey)
}

func newMetrics(reg prometheus.Registerer, perKey bool) (*metrics, error) {
	labels := func(l ...string) []string {
		if perKey {
			return append([]string{"key"}, l...)
		}
		return l
	}
	m := &metrics{
		perKey: perKey,
		byType: map[string]*keyCounters{},
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_transit_items_total", Help: "Transit items processed, by key type and operation.",
		}, labels("type", "op")),
		itemErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_transit_item_errors_total", Help: "Transit items refused, by key type and operation.",
		}, labels("type", "op")),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_transit_rotations_total", Help: "Key rotations done by this process, by key type and reason (rpc, auto, usage).",
		}, labels("type", "reason")),
	}
	if perKey {
		m.latest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hsmgate_transit_key_latest_version", Help: "Latest version of each loaded transit key.",
		}, []string{"key"})
		m.reserved = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hsmgate_transit_encryptions_reserved", Help: "Encryptions reserved in the store per key version (an upper bound of the count).",
		}, []string{"key", "version"})
	}
	if reg != nil {
		// A second engine on the same registry shares the first one's
		// collectors (both must agree on PerKeyMetrics: the label sets differ).
		var err error
		if m.items, err = register(reg, m.items); err != nil {
			return nil, err
		}
		if m.itemErrs, err = register(reg, m.itemErrs); err != nil {
			return nil, err
		}
		if m.rotations, err = register(reg, m.rotations); err != nil {
			return nil, err
		}
		if perKey {
			if m.latest, err = register(reg, m.latest); err != nil {
				return nil, err
			}
			if m.reserved, err = register(reg, m.reserved); err != nil {
				return nil, err
			}
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

// opsByKind lists the operations each kind of key supports: the only ones
// that get series.
var opsByKind = map[keyKind][]op{
	kindAEAD: {opEncrypt, opDecrypt, opRewrap, opDatakey},
	kindHMAC: {opHMAC, opVerifyHMAC},
	kindSign: {opSign, opVerify},
}

// rotation reasons, indexing keyCounters.rotations.
const (
	rotateRPC = iota
	rotateAuto
	rotateUsage
	numRotateReasons
)

var rotateReasons = [numRotateReasons]string{"rpc", "auto", "usage"}

// discard stands in for the operations a key type does not support, so that
// a wrong call counts nowhere instead of panicking; it is never registered.
var discard = prometheus.NewCounter(prometheus.CounterOpts{Name: "hsmgate_transit_discarded"})

// keyCounters are one key's (or, by default, one key type's) children,
// resolved once so that the hot path does no label lookup.
type keyCounters struct {
	items     [numOps]prometheus.Counter
	errs      [numOps]prometheus.Counter
	rotations [numRotateReasons]prometheus.Counter
}

// counters returns the counters of the key name of type ti: its own with
// per-key labels, else the ones its type shares.
func (m *metrics) counters(name string, ti typeInfo) *keyCounters {
	if !m.perKey {
		m.mu.Lock()
		defer m.mu.Unlock()
		if c := m.byType[ti.name]; c != nil {
			return c
		}
	}
	lv := []string{ti.name}
	if m.perKey {
		lv = []string{name, ti.name}
	}
	with := func(l string) []string { return append(append([]string(nil), lv...), l) }
	c := &keyCounters{}
	for i := range numOps {
		c.items[i], c.errs[i] = discard, discard
	}
	for _, o := range opsByKind[ti.kind] {
		c.items[o] = m.items.WithLabelValues(with(opNames[o])...)
		c.errs[o] = m.itemErrs.WithLabelValues(with(opNames[o])...)
	}
	for i := range numRotateReasons {
		c.rotations[i] = m.rotations.WithLabelValues(with(rotateReasons[i])...)
	}
	if !m.perKey {
		m.byType[ti.name] = c
	}
	return c
}

// rotated counts a rotation of st's key.
func (m *metrics) rotated(st *keyState, reason int) {
	if st != nil && st.counters != nil {
		st.counters.rotations[reason].Inc()
	}
}

func (m *metrics) observeKey(st *keyState) {
	if m.latest != nil {
		m.latest.WithLabelValues(st.rec.GetName()).Set(float64(st.rec.GetLatestVersion()))
	}
}

// setReserved records the encryptions reserved for a key version (per-key only).
func (m *metrics) setReserved(name string, v uint32, n uint64) {
	if m.reserved != nil {
		m.reserved.WithLabelValues(name, strconv.FormatUint(uint64(v), 10)).Set(float64(n))
	}
}

// forget drops a deleted key's series (per-key only: type series stay).
func (m *metrics) forget(name string) {
	if !m.perKey {
		return
	}
	l := prometheus.Labels{"key": name}
	m.latest.DeleteLabelValues(name)
	m.reserved.DeletePartialMatch(l)
	m.items.DeletePartialMatch(l)
	m.itemErrs.DeletePartialMatch(l)
	m.rotations.DeletePartialMatch(l)
}
