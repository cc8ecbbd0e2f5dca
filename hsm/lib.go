package hsm

import (
	"fmt"
	"sync"

	"github.com/miekg/pkcs11"
)

// libs holds the loaded and initialised PKCS#11 libraries, one per path.
var libs struct {
	sync.Mutex
	m map[string]*pkcs11.Ctx
}

// loadLibrary loads and initialises the library at path once per process.
// CKR_CRYPTOKI_ALREADY_INITIALIZED (another binding in the process got there
// first) is tolerated.
func loadLibrary(path string) (*pkcs11.Ctx, error) {
	libs.Lock()
	defer libs.Unlock()
	if p, ok := libs.m[path]; ok {
		return p, nil
	}
	p := pkcs11.New(path)
	if p == nil {
		return nil, fmt.Errorf("hsm: cannot load PKCS#11 library %q: %w", path, ErrUnavailable)
	}
	if err := p.Initialize(); err != nil && !isRV(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		p.Destroy()
		return nil, fmt.Errorf("hsm: initialise %q: %w: %w", path, ErrUnavailable, err)
	}
	if libs.m == nil {
		libs.m = make(map[string]*pkcs11.Ctx)
	}
	libs.m[path] = p
	return p, nil
}

// Finalize calls C_Finalize on the library at path and unloads it. Call it
// at process exit, after every Module on that library is closed; a Module
// used after Finalize fails. It is a no-op for a library that is not loaded.
func Finalize(path string) error {
	libs.Lock()
	defer libs.Unlock()
	p, ok := libs.m[path]
	if !ok {
		return nil
	}
	delete(libs.m, path)
	err := p.Finalize()
	p.Destroy()
	if err != nil && !isRV(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		return fmt.Errorf("hsm: finalize %q: %w", path, err)
	}
	return nil
}
