// Package hsmfault is a fault-injecting PKCS#11 layer for tests: it sits
// between package hsm and the real library (hsm.PKCS11 is the seam; tests
// open a Module through it with hsm's test-only OpenWith) and, on command,
// makes chosen functions return a PKCS#11 error (CKR_DEVICE_REMOVED,
// CKR_SESSION_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_ERROR...)
// without calling the library, or hang until released. It counts calls per
// function and the sessions opened through it and not closed, and counts the
// sessions that the library itself holds on a slot (C_GetSessionInfo over
// the handle numbers), which is what a real HSM's session cap sees.
//
// It is test support: nothing outside _test.go files imports it.
package hsmfault

import (
	"fmt"
	"slices"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
)

// Names of the functions that can be made to fail or hang: the methods of
// hsm.PKCS11.
var Functions = []string{
	"GetSlotList", "GetTokenInfo", "OpenSession", "CloseSession", "CloseAllSessions",
	"GetSessionInfo", "Login", "FindObjectsInit", "FindObjects", "FindObjectsFinal",
	"CopyObject", "CreateObject", "DestroyObject", "GetAttributeValue", "GenerateKey",
	"GenerateKeyPair", "GenerateRandom", "EncryptInit", "Encrypt", "DecryptInit",
	"Decrypt", "SignInit", "Sign", "WrapKey", "UnwrapKey",
}

// Ctx is the layer. Its zero value is not usable; make one with Wrap.
type Ctx struct {
	p hsm.PKCS11

	mu      sync.Mutex
	faults  map[string]pkcs11.Error
	counted map[string]countedFault
	before  map[string]func()
	hangs   map[string]*Hang
	calls   map[string]int
	open    map[pkcs11.SessionHandle]uint // opened here and not closed here, with their slot
	highest pkcs11.SessionHandle
}

var _ hsm.PKCS11 = (*Ctx)(nil)

// Wrap puts the layer over p.
func Wrap(p hsm.PKCS11) *Ctx {
	return &Ctx{
		p:       p,
		faults:  make(map[string]pkcs11.Error),
		counted: make(map[string]countedFault),
		before:  make(map[string]func()),
		hangs:   make(map[string]*Hang),
		calls:   make(map[string]int),
		open:    make(map[pkcs11.SessionHandle]uint),
	}
}

func check(fns []string) []string {
	if len(fns) == 0 {
		return Functions
	}
	for _, f := range fns {
		if !slices.Contains(Functions, f) {
			panic(fmt.Sprintf("hsmfault: no function %q", f))
		}
	}
	return fns
}

// Fail makes the functions named (every function if none is named) return rv
// without calling the library, until Heal.
func (c *Ctx) Fail(rv uint, fns ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range check(fns) {
		c.faults[f] = pkcs11.Error(rv)
	}
}

// FailExcept makes every function but those named return rv, until Heal.
func (c *Ctx) FailExcept(rv uint, except ...string) {
	check(except)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range Functions {
		if !slices.Contains(except, f) {
			c.faults[f] = pkcs11.Error(rv)
		}
	}
}

type countedFault struct {
	rv pkcs11.Error
	n  int
}

// FailN makes the next n calls to each function named return rv.
func (c *Ctx) FailN(rv uint, n int, fns ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range check(fns) {
		c.counted[f] = countedFault{pkcs11.Error(rv), n}
	}
}

// Before runs f once, just before the next call to fn reaches the library
// (to act from outside at an exact point, e.g. log the token in or out).
func (c *Ctx) Before(fn string, f func()) {
	check([]string{fn})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.before[fn] = f
}

// Heal ends every fault set by Fail, FailExcept and FailN.
func (c *Ctx) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.faults)
	clear(c.counted)
}

// Hang is a hang set on some functions: calls to them wait until Release.
type Hang struct {
	entered  chan struct{}
	once     sync.Once
	released chan struct{}
	c        *Ctx
	fns      []string
}

// Hang makes calls to the functions named wait (before calling the library)
// until the returned Hang is released.
func (c *Ctx) Hang(fns ...string) *Hang {
	h := &Hang{entered: make(chan struct{}), released: make(chan struct{}), c: c, fns: check(fns)}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range h.fns {
		c.hangs[f] = h
	}
	return h
}

// Entered is closed when the first call enters the hang.
func (h *Hang) Entered() <-chan struct{} { return h.entered }

// Release lets the waiting calls and later ones through. Idempotent.
func (h *Hang) Release() {
	h.c.mu.Lock()
	for _, f := range h.fns {
		if h.c.hangs[f] == h {
			delete(h.c.hangs, f)
		}
	}
	h.c.mu.Unlock()
	select {
	case <-h.released:
	default:
		close(h.released)
	}
}

// Calls is how many times fn was called (failed calls included) since the
// last ResetCalls.
func (c *Ctx) Calls(fn string) int {
	check([]string{fn})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[fn]
}

// ResetCalls sets every call count to zero.
func (c *Ctx) ResetCalls() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.calls)
}

// Open is the number of sessions opened through the layer and not closed
// through it (C_CloseSession, or C_CloseAllSessions on their slot).
func (c *Ctx) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// LibrarySessions asks the library (not through the faults) how many
// sessions it holds on slot, by C_GetSessionInfo on every handle number up
// to a little above the highest it has given out through the layer. It
// counts the sessions of any caller in the process on that slot.
func (c *Ctx) LibrarySessions(slot uint) int {
	c.mu.Lock()
	top := c.highest + 64
	c.mu.Unlock()
	n := 0
	for h := pkcs11.SessionHandle(1); h <= top; h++ {
		if info, err := c.p.GetSessionInfo(h); err == nil && info.SlotID == slot {
			n++
		}
	}
	return n
}

// enter counts the call, waits while it hangs, and returns its fault.
func (c *Ctx) enter(fn string) error {
	c.mu.Lock()
	c.calls[fn]++
	h := c.hangs[fn]
	c.mu.Unlock()
	if h != nil {
		h.once.Do(func() { close(h.entered) })
		<-h.released
	}
	c.mu.Lock()
	hook := c.before[fn]
	delete(c.before, fn)
	if cf, ok := c.counted[fn]; ok {
		if cf.n--; cf.n <= 0 {
			delete(c.counted, fn)
		} else {
			c.counted[fn] = cf
		}
		c.mu.Unlock()
		return cf.rv
	}
	rv, ok := c.faults[fn]
	c.mu.Unlock()
	if ok {
		return rv
	}
	if hook != nil {
		hook()
	}
	return nil
}

func (c *Ctx) GetSlotList(tokenPresent bool) ([]uint, error) {
	if err := c.enter("GetSlotList"); err != nil {
		return nil, err
	}
	return c.p.GetSlotList(tokenPresent)
}

func (c *Ctx) GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error) {
	if err := c.enter("GetTokenInfo"); err != nil {
		return pkcs11.TokenInfo{}, err
	}
	return c.p.GetTokenInfo(slotID)
}

func (c *Ctx) OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error) {
	if err := c.enter("OpenSession"); err != nil {
		return 0, err
	}
	h, err := c.p.OpenSession(slotID, flags)
	if err == nil {
		c.mu.Lock()
		c.open[h] = slotID
		c.highest = max(c.highest, h)
		c.mu.Unlock()
	}
	return h, err
}

func (c *Ctx) CloseSession(sh pkcs11.SessionHandle) error {
	if err := c.enter("CloseSession"); err != nil {
		return err
	}
	err := c.p.CloseSession(sh)
	if err == nil {
		c.mu.Lock()
		delete(c.open, sh)
		c.mu.Unlock()
	}
	return err
}

func (c *Ctx) CloseAllSessions(slotID uint) error {
	if err := c.enter("CloseAllSessions"); err != nil {
		return err
	}
	err := c.p.CloseAllSessions(slotID)
	if err == nil {
		c.mu.Lock()
		for h, s := range c.open {
			if s == slotID {
				delete(c.open, h)
			}
		}
		c.mu.Unlock()
	}
	return err
}

func (c *Ctx) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	if err := c.enter("GetSessionInfo"); err != nil {
		return pkcs11.SessionInfo{}, err
	}
	return c.p.GetSessionInfo(sh)
}

func (c *Ctx) Login(sh pkcs11.SessionHandle, userType uint, pin string) error {
	if err := c.enter("Login"); err != nil {
		return err
	}
	return c.p.Login(sh, userType, pin)
}

func (c *Ctx) FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error {
	if err := c.enter("FindObjectsInit"); err != nil {
		return err
	}
	return c.p.FindObjectsInit(sh, temp)
}

func (c *Ctx) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	if err := c.enter("FindObjects"); err != nil {
		return nil, false, err
	}
	return c.p.FindObjects(sh, max)
}

func (c *Ctx) FindObjectsFinal(sh pkcs11.SessionHandle) error {
	if err := c.enter("FindObjectsFinal"); err != nil {
		return err
	}
	return c.p.FindObjectsFinal(sh)
}

func (c *Ctx) CopyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := c.enter("CopyObject"); err != nil {
		return 0, err
	}
	return c.p.CopyObject(sh, o, temp)
}

func (c *Ctx) CreateObject(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := c.enter("CreateObject"); err != nil {
		return 0, err
	}
	return c.p.CreateObject(sh, temp)
}

func (c *Ctx) DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error {
	if err := c.enter("DestroyObject"); err != nil {
		return err
	}
	return c.p.DestroyObject(sh, oh)
}

func (c *Ctx) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	if err := c.enter("GetAttributeValue"); err != nil {
		return nil, err
	}
	return c.p.GetAttributeValue(sh, o, a)
}

func (c *Ctx) GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := c.enter("GenerateKey"); err != nil {
		return 0, err
	}
	return c.p.GenerateKey(sh, m, temp)
}

func (c *Ctx) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	if err := c.enter("GenerateKeyPair"); err != nil {
		return 0, 0, err
	}
	return c.p.GenerateKeyPair(sh, m, public, private)
}

func (c *Ctx) GenerateRandom(sh pkcs11.SessionHandle, length int) ([]byte, error) {
	if err := c.enter("GenerateRandom"); err != nil {
		return nil, err
	}
	return c.p.GenerateRandom(sh, length)
}

func (c *Ctx) EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := c.enter("EncryptInit"); err != nil {
		return err
	}
	return c.p.EncryptInit(sh, m, o)
}

func (c *Ctx) Encrypt(sh pkcs11.SessionHandle, message []byte) ([]byte, error) {
	if err := c.enter("Encrypt"); err != nil {
		return nil, err
	}
	return c.p.Encrypt(sh, message)
}

func (c *Ctx) DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := c.enter("DecryptInit"); err != nil {
		return err
	}
	return c.p.DecryptInit(sh, m, o)
}

func (c *Ctx) Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error) {
	if err := c.enter("Decrypt"); err != nil {
		return nil, err
	}
	return c.p.Decrypt(sh, cipher)
}

func (c *Ctx) SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := c.enter("SignInit"); err != nil {
		return err
	}
	return c.p.SignInit(sh, m, o)
}

func (c *Ctx) Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error) {
	if err := c.enter("Sign"); err != nil {
		return nil, err
	}
	return c.p.Sign(sh, message)
}

func (c *Ctx) WrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, wrappingkey, key pkcs11.ObjectHandle) ([]byte, error) {
	if err := c.enter("WrapKey"); err != nil {
		return nil, err
	}
	return c.p.WrapKey(sh, m, wrappingkey, key)
}

func (c *Ctx) UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, unwrappingkey pkcs11.ObjectHandle, wrappedkey []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := c.enter("UnwrapKey"); err != nil {
		return 0, err
	}
	return c.p.UnwrapKey(sh, m, unwrappingkey, wrappedkey, a)
}
