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

// InitToken makes sure that the SoftHSM configuration under dir (see
// WriteConfig) holds a token labelled label, initialising one with
// `softhsm2-util --init-token --free` if not, and returns the configuration's
// path. It is idempotent: a token with that label already there is kept (its
// PINs are not checked). The PINs reach softhsm2-util as arguments, visible
// to local users in the process list for a moment: for dev mode only.
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
