// Package softhsm sets up SoftHSM2 tokens for `hsmgate dev` and for tests.
//
// SoftHSM reads its configuration file, named by the environment variable
// SOFTHSM2_CONF, once per process, at C_Initialize: a process that wants the
// token made by InitToken must set SOFTHSM2_CONF to the returned path before
// its first hsm.Open, and cannot switch to another configuration afterwards.
// SoftHSM also does not rescan its token directory after C_Initialize: a
// token that softhsm2-util makes later is invisible to a process that has
// already initialised the library (tests therefore make their tokens in
// process, see hsm/hsmtest).
package softhsm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/miekg/pkcs11"
)

// ErrNotInstalled: SoftHSM2 (the library or softhsm2-util) is not installed.
var ErrNotInstalled = errors.New("softhsm: SoftHSM2 is not installed (Debian: apt-get install softhsm2)")

// libraryPaths are where distributions put libsofthsm2.so.
var libraryPaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
	"/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so",
}

// Library returns the path of libsofthsm2.so; ErrNotInstalled if none is found.
func Library() (string, error) {
	for _, p := range libraryPaths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", ErrNotInstalled
}

// Util returns the path of softhsm2-util; ErrNotInstalled if it is not on PATH.
func Util() (string, error) {
	p, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return "", ErrNotInstalled
	}
	return p, nil
}

// WriteConfig writes dir/softhsm2.conf with its token directory dir/tokens
// (created), the file object store and ERROR logging, and returns its path.
func WriteConfig(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("softhsm: %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", fmt.Errorf("softhsm: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return "", fmt.Errorf("softhsm: %w", err)
	}
	return conf, nil
}

// InitTokenInProcess makes sure that the SoftHSM configuration under dir
// (see WriteConfig) holds a token labelled label, making one through this
// process's PKCS#11 calls if not (the PINs never appear on a command line),
// sets SOFTHSM2_CONF to the configuration and returns its path. It is
// idempotent: a token with that label already there is kept (its PINs are
// not checked). SoftHSM reads SOFTHSM2_CONF once, when a process first
// initialises it, so this must run before anything else in the process
// opens SoftHSM; the library is finalised again before it returns, and a
// later hsm.Open sees the token.
func InitTokenInProcess(dir, label, soPIN, userPIN string) (confPath string, err error) {
	if label == "" || soPIN == "" || userPIN == "" {
		return "", errors.New("softhsm: init token: label and PINs are required")
	}
	lib, err := Library()
	if err != nil {
		return "", err
	}
	conf, err := WriteConfig(dir)
	if err != nil {
		return "", err
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return "", err
	}
	p := pkcs11.New(lib)
	if p == nil {
		return "", fmt.Errorf("softhsm: cannot load %s", lib)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			return "", errors.New("softhsm: init token: SoftHSM is already open in this process (with a configuration that cannot change)")
		}
		return "", fmt.Errorf("softhsm: initialise %s: %w", lib, err)
	}
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("softhsm: slots: %w", err)
	}
	for _, id := range slots {
		ti, err := p.GetTokenInfo(id)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && strings.TrimRight(ti.Label, " ") == label {
			return conf, nil
		}
	}
	if err := InitTokenOn(p, label, soPIN, userPIN); err != nil {
		return "", fmt.Errorf("softhsm: init token %q: %w", label, err)
	}
	return conf, nil
}

// InitTokenOn makes a token labelled label in the first free slot of an
// initialised PKCS#11 context (C_InitToken, then C_InitPIN as the SO).
func InitTokenOn(p *pkcs11.Ctx, label, soPIN, userPIN string) error {
	slots, err := p.GetSlotList(false)
	if err != nil {
		return err
	}
	free, found := uint(0), false
	for _, id := range slots {
		ti, err := p.GetTokenInfo(id)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = id, true
			break
		}
	}
	if !found {
		return errors.New("no free slot")
	}
	if err := p.InitToken(free, soPIN, label); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}
	s, err := p.OpenSession(free, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	defer p.CloseSession(s)
	if err := p.Login(s, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("SO login: %w", err)
	}
	defer p.Logout(s)
	if err := p.InitPIN(s, userPIN); err != nil {
		return fmt.Errorf("C_InitPIN: %w", err)
	}
	return nil
}

// InitToken is InitTokenInProcess done by `softhsm2-util --init-token
// --free`, for a token that another process will open (tests that start a
// server): it leaves this process's SoftHSM alone. The PINs reach
// softhsm2-util as arguments, visible to local users in the process list for
// a moment: for test PINs only.
func InitToken(ctx context.Context, dir, label, soPIN, userPIN string) (confPath string, err error) {
	if label == "" || soPIN == "" || userPIN == "" {
		return "", errors.New("softhsm: init token: label and PINs are required")
	}
	util, err := Util()
	if err != nil {
		return "", err
	}
	conf, err := WriteConfig(dir)
	if err != nil {
		return "", err
	}
	env := append(os.Environ(), "SOFTHSM2_CONF="+conf)
	show := exec.CommandContext(ctx, util, "--show-slots")
	show.Env = env
	out, err := show.Output()
	if err != nil {
		return "", fmt.Errorf("softhsm: softhsm2-util --show-slots: %w", err)
	}
	if hasLabel(out, label) {
		return conf, nil
	}
	initCmd := exec.CommandContext(ctx, util, "--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", userPIN)
	initCmd.Env = env
	if out, err := initCmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("softhsm: init token %q: %w: %s", label, err, strings.TrimSpace(string(out)))
	}
	return conf, nil
}

// hasLabel reports whether softhsm2-util --show-slots lists a token with label.
func hasLabel(showSlots []byte, label string) bool {
	sc := bufio.NewScanner(bytes.NewReader(showSlots))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok && k == "Label" && strings.TrimSpace(v) == label {
			return true
		}
	}
	return false
}
