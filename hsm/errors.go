package hsm

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// errNotLoggedIn: a session of ours is no longer in the user state (the token
// was logged out from outside). Recovered by logging in again.
var errNotLoggedIn = errors.New("hsm: session is not logged in")

// errTokenGone: C_GetTokenInfo fails for our slot (SoftHSM does so when the
// token's directory has gone away) while the session itself still works.
var errTokenGone = errors.New("hsm: token does not answer")

// errClosed: the Module was closed.
var errClosed = fmt.Errorf("hsm: module closed: %w", ErrUnavailable)

func isRV(err error, rv uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == rv
}

func rvOf(err error) (uint, bool) {
	var e pkcs11.Error
	if errors.As(err, &e) {
		return uint(e), true
	}
	return 0, false
}

// sessionDead reports whether err means that the session is gone or not to
// be trusted (the device or token may have gone with it): it is closed (see
// Module.discard) and never reused, and the call retried once on a new one.
func sessionDead(err error) bool {
	rv, ok := rvOf(err)
	if !ok {
		return false
	}
	switch rv {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return true
	}
	return false
}

// loggedOut reports whether err means the session lives but lost its login.
func loggedOut(err error) bool {
	return errors.Is(err, errNotLoggedIn) || isRV(err, pkcs11.CKR_USER_NOT_LOGGED_IN)
}

// staleHandle reports whether err means a cached object handle is no longer
// valid (after a logout, a recovery, or a destroy).
func staleHandle(err error) bool {
	return isRV(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) || isRV(err, pkcs11.CKR_KEY_HANDLE_INVALID)
}

// unavailable wraps a PKCS#11 failure of the token itself as ErrUnavailable.
func unavailable(what string, err error) error {
	return fmt.Errorf("hsm: %s: %w: %w", what, ErrUnavailable, err)
}
