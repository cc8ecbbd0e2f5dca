package hsm

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"
)

// The Module's Prometheus metrics (Module.Collector):
//
//	hsmgate_hsm_sessions{state="in_use"|"idle"}       pool sessions, read at scrape time
//	hsmgate_hsm_sessions_max                          Config.MaxSessions
//	hsmgate_hsm_logged_in                             1 while the token is believed logged in
//	hsmgate_hsm_call_duration_seconds{function}       PKCS#11 call latency (histogram)
//	hsmgate_hsm_call_errors_total{function,code}      PKCS#11 calls that returned an error, by CKR name
//
// The latency and error series are measured by a layer over the PKCS11
// seam (instrumented), so they see every call the Module makes, recovery
// included. Labels come from fixed sets: the PKCS#11 function names below
// and the CKR names the library knows ("other" for any other value).

type fnIndex int

// callMetrics holds the vectors and the login state; one per Module.
type callMetrics struct {
	latency  *prometheus.HistogramVec
	errs     *prometheus.CounterVec
	obs      [numFns]atomic.Pointer[prometheus.Observer] // resolved on first call
	loggedIn atomic.Bool
}

func newCallMetrics() *callMetrics {
	return &callMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hsmgate_hsm_call_duration_seconds",
			Help: "Latency of PKCS#11 calls, by function.",
			// 10µs .. ~0.65s, factor 4: a software token's microseconds to a
			// network HSM's hundreds of milliseconds.
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 9),
		}, []string{"function"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_hsm_call_errors_total",
			Help: "PKCS#11 calls that returned an error, by function and CKR code.",
		}, []string{"function", "code"}),
	}
}

// wrap puts the measuring layer over p. Methods that PKCS11 may gain later
// pass through the embedded interface, unmeasured.
func (c *callMetrics) wrap(p PKCS11) PKCS11 { return &instrumented{PKCS11: p, p: p, c: c} }

func (c *callMetrics) observer(f fnIndex) prometheus.Observer {
	if o := c.obs[f].Load(); o != nil {
		return *o
	}
	o := c.latency.WithLabelValues(fnNames[f])
	c.obs[f].Store(&o)
	return o
}

// ckrName is the CKR_ name of an error returned by the library, "other" for
// values it does not know (a vendor's), "go" for an error that is not a
// PKCS#11 return value.
func ckrName(err error) string {
	rv, ok := rvOf(err)
	if !ok {
		return "go"
	}
	s := pkcs11.Error(rv).Error() // "pkcs11: 0x%X: CKR_..."
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s[i+2:], "CKR_") {
		return s[i+2:]
	}
	return "other"
}

// record notes one call's latency and outcome.
func (c *callMetrics) record(f fnIndex, start time.Time, err error) {
	c.observer(f).Observe(time.Since(start).Seconds())
	if err == nil {
		if f == fnLogin {
			c.loggedIn.Store(true)
		}
		return
	}
	rv, _ := rvOf(err)
	if f == fnLogin && rv == pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		c.loggedIn.Store(true) // success for the Module (see Module.login)
		return
	}
	c.errs.WithLabelValues(fnNames[f], ckrName(err)).Inc()
	switch {
	case f == fnLogin, rv == pkcs11.CKR_USER_NOT_LOGGED_IN, rv == pkcs11.CKR_DEVICE_REMOVED,
		rv == pkcs11.CKR_DEVICE_ERROR, rv == pkcs11.CKR_TOKEN_NOT_PRESENT,
		rv == pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		c.loggedIn.Store(false)
	}
}

// Collector returns the Module's metrics for a Prometheus registry.
func (m *Module) Collector() prometheus.Collector { return moduleCollector{m} }

type moduleCollector struct{ m *Module }

var (
	descSessions = prometheus.NewDesc("hsmgate_hsm_sessions",
		"HSM sessions of the pool, by state (in_use: held by a call; idle: logged in, waiting).", []string{"state"}, nil)
	descSessionsMax = prometheus.NewDesc("hsmgate_hsm_sessions_max",
		"Most HSM sessions the pool holds.", nil, nil)
	descLoggedIn = prometheus.NewDesc("hsmgate_hsm_logged_in",
		"1 while the HSM token is logged in (the last login worked and no call has reported the login or the device lost since), else 0.", nil, nil)
)

func (c moduleCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSessions
	ch <- descSessionsMax
	ch <- descLoggedIn
	c.m.met.latency.Describe(ch)
	c.m.met.errs.Describe(ch)
}

func (c moduleCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	inUse, idle := len(m.sem), len(m.idle)
	logged := 0.0
	if m.met.loggedIn.Load() && !closed {
		logged = 1
	}
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(inUse), "in_use")
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(idle), "idle")
	ch <- prometheus.MustNewConstMetric(descSessionsMax, prometheus.GaugeValue, float64(m.cfg.MaxSessions))
	ch <- prometheus.MustNewConstMetric(descLoggedIn, prometheus.GaugeValue, logged)
	m.met.latency.Collect(ch)
	m.met.errs.Collect(ch)
}

// instrumented is the measuring layer over the library (or over a test's
// fault-injecting layer, so that injected errors are counted too).
type instrumented struct {
	PKCS11
	p PKCS11
	c *callMetrics
}

var _ PKCS11 = (*instrumented)(nil)

func (i *instrumented) start() time.Time { return time.Now() }

func (i *instrumented) done(f fnIndex, t time.Time, err error) { i.c.record(f, t, err) }

const (
	fnGetSlotList fnIndex = iota
	fnGetTokenInfo
	fnOpenSession
	fnCloseSession
	fnCloseAllSessions
	fnGetSessionInfo
	fnLogin
	fnFindObjectsInit
	fnFindObjects
	fnFindObjectsFinal
	fnCopyObject
	fnCreateObject
	fnDestroyObject
	fnGetAttributeValue
	fnGenerateKey
	fnGenerateKeyPair
	fnGenerateRandom
	fnEncryptInit
	fnEncrypt
	fnDecryptInit
	fnDecrypt
	fnSignInit
	fnSign
	fnWrapKey
	fnUnwrapKey
	numFns
)

var fnNames = [numFns]string{"C_GetSlotList", "C_GetTokenInfo", "C_OpenSession", "C_CloseSession", "C_CloseAllSessions", "C_GetSessionInfo", "C_Login", "C_FindObjectsInit", "C_FindObjects", "C_FindObjectsFinal", "C_CopyObject", "C_CreateObject", "C_DestroyObject", "C_GetAttributeValue", "C_GenerateKey", "C_GenerateKeyPair", "C_GenerateRandom", "C_EncryptInit", "C_Encrypt", "C_DecryptInit", "C_Decrypt", "C_SignInit", "C_Sign", "C_WrapKey", "C_UnwrapKey"}

func (i *instrumented) GetSlotList(tokenPresent bool) ([]uint, error) {
	t := i.start()
	r1, err := i.p.GetSlotList(tokenPresent)
	i.done(fnGetSlotList, t, err)
	return r1, err
}

func (i *instrumented) GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error) {
	t := i.start()
	r1, err := i.p.GetTokenInfo(slotID)
	i.done(fnGetTokenInfo, t, err)
	return r1, err
}

func (i *instrumented) OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error) {
	t := i.start()
	r1, err := i.p.OpenSession(slotID, flags)
	i.done(fnOpenSession, t, err)
	return r1, err
}

func (i *instrumented) CloseSession(sh pkcs11.SessionHandle) error {
	t := i.start()
	err := i.p.CloseSession(sh)
	i.done(fnCloseSession, t, err)
	return err
}

func (i *instrumented) CloseAllSessions(slotID uint) error {
	t := i.start()
	err := i.p.CloseAllSessions(slotID)
	i.done(fnCloseAllSessions, t, err)
	return err
}

func (i *instrumented) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	t := i.start()
	r1, err := i.p.GetSessionInfo(sh)
	i.done(fnGetSessionInfo, t, err)
	return r1, err
}

func (i *instrumented) Login(sh pkcs11.SessionHandle, userType uint, pin string) error {
	t := i.start()
	err := i.p.Login(sh, userType, pin)
	i.done(fnLogin, t, err)
	return err
}

func (i *instrumented) FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error {
	t := i.start()
	err := i.p.FindObjectsInit(sh, temp)
	i.done(fnFindObjectsInit, t, err)
	return err
}

func (i *instrumented) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	t := i.start()
	r1, r2, err := i.p.FindObjects(sh, max)
	i.done(fnFindObjects, t, err)
	return r1, r2, err
}

func (i *instrumented) FindObjectsFinal(sh pkcs11.SessionHandle) error {
	t := i.start()
	err := i.p.FindObjectsFinal(sh)
	i.done(fnFindObjectsFinal, t, err)
	return err
}

func (i *instrumented) CopyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	t := i.start()
	r1, err := i.p.CopyObject(sh, o, temp)
	i.done(fnCopyObject, t, err)
	return r1, err
}

func (i *instrumented) CreateObject(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	t := i.start()
	r1, err := i.p.CreateObject(sh, temp)
	i.done(fnCreateObject, t, err)
	return r1, err
}

func (i *instrumented) DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error {
	t := i.start()
	err := i.p.DestroyObject(sh, oh)
	i.done(fnDestroyObject, t, err)
	return err
}

func (i *instrumented) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	t := i.start()
	r1, err := i.p.GetAttributeValue(sh, o, a)
	i.done(fnGetAttributeValue, t, err)
	return r1, err
}

func (i *instrumented) GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	t := i.start()
	r1, err := i.p.GenerateKey(sh, m, temp)
	i.done(fnGenerateKey, t, err)
	return r1, err
}

func (i *instrumented) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	t := i.start()
	r1, r2, err := i.p.GenerateKeyPair(sh, m, public, private)
	i.done(fnGenerateKeyPair, t, err)
	return r1, r2, err
}

func (i *instrumented) GenerateRandom(sh pkcs11.SessionHandle, length int) ([]byte, error) {
	t := i.start()
	r1, err := i.p.GenerateRandom(sh, length)
	i.done(fnGenerateRandom, t, err)
	return r1, err
}

func (i *instrumented) EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	t := i.start()
	err := i.p.EncryptInit(sh, m, o)
	i.done(fnEncryptInit, t, err)
	return err
}

func (i *instrumented) Encrypt(sh pkcs11.SessionHandle, message []byte) ([]byte, error) {
	t := i.start()
	r1, err := i.p.Encrypt(sh, message)
	i.done(fnEncrypt, t, err)
	return r1, err
}

func (i *instrumented) DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	t := i.start()
	err := i.p.DecryptInit(sh, m, o)
	i.done(fnDecryptInit, t, err)
	return err
}

func (i *instrumented) Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error) {
	t := i.start()
	r1, err := i.p.Decrypt(sh, cipher)
	i.done(fnDecrypt, t, err)
	return r1, err
}

func (i *instrumented) SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	t := i.start()
	err := i.p.SignInit(sh, m, o)
	i.done(fnSignInit, t, err)
	return err
}

func (i *instrumented) Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error) {
	t := i.start()
	r1, err := i.p.Sign(sh, message)
	i.done(fnSign, t, err)
	return r1, err
}

func (i *instrumented) WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wrappingkey, key pkcs11.ObjectHandle) ([]byte, error) {
	t := i.start()
	r1, err := i.p.WrapKey(sh, m, wrappingkey, key)
	i.done(fnWrapKey, t, err)
	return r1, err
}

func (i *instrumented) UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, unwrappingkey pkcs11.ObjectHandle, wrappedkey []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	t := i.start()
	r1, err := i.p.UnwrapKey(sh, m, unwrappingkey, wrappedkey, a)
	i.done(fnUnwrapKey, t, err)
	return r1, err
}
