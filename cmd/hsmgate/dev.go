package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/hsm/softhsm"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/errs"
)

// Dev mode defaults.
const (
	devGRPCAddr   = "127.0.0.1:8443"
	devHTTPAddr   = "127.0.0.1:8200"
	devTokenLabel = "hsmgate-dev"
	devStateDir   = ".hsmgate-dev"
)

// Files under the dev state directory.
const (
	devFileSOPIN     = "so-pin"
	devFileUserPIN   = "user-pin"
	devFileRootToken = "root-token"
	devFileEnv       = "env"
	devFileStore     = "hsmgate.db"
	devDirSoftHSM    = "softhsm"
	devDirTLS        = "tls"
)

type devFlags struct {
	state    string
	grpcAddr string
	httpAddr string
	// grpcSet and httpSet: the address was given with a flag; the default
	// addresses fall back to free ports when taken, given ones do not.
	grpcSet, httpSet bool
	printEnv         bool
}

func newDevCmd(g *globals) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev [--state DIR] [--print-env]",
		Short: "Run a throwaway local server: SoftHSM token, bbolt store, dev CA and root token in one directory",
		Long: `Run a development server on 127.0.0.1 with everything it needs, created on
the first run and reused afterwards, under the state directory
(default ./` + devStateDir + `, or $XDG_STATE_HOME/hsmgate/dev when XDG_STATE_HOME is set):

  softhsm/      a SoftHSM2 token "` + devTokenLabel + `" (needs the softhsm2 package)
  so-pin, user-pin  its random PINs (0600)
  hsmgate.db    the bbolt key store
  tls/          a dev CA and a server certificate for localhost/127.0.0.1/::1 (ECDSA P-256)
  root-token    a root token (0600): it can do anything
  env           the export lines below, to source from another shell

and the KEK inside the token. It prints, on stdout, lines of exactly the form
"export NAME=value" for HSMGATE_ADDR, HSMGATE_HTTP_ADDR, HSMGATE_CACERT and
HSMGATE_TOKEN, then a short how-to as shell comments; logs go to stderr. It
serves until Ctrl-C.

When a default port (` + devGRPCAddr + `, ` + devHTTPAddr + `) is taken, it serves on a
free port instead and says so; an address given with --grpc-addr or
--http-addr is used as given (port 0 picks a free port).

--print-env prints the export lines of the dev server running on the state
directory and exits at once, for eval in another shell; it fails when none
runs there.

Only loopback addresses are accepted. Not for production: the PINs, the CA key
and the root token sit in plain files.`,
		Example: `  hsmgate dev
  eval "$(hsmgate dev --print-env)"      # in another shell, same directory
  hsmgate dev --state /tmp/hg --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.printEnv {
				return printDevEnv(g.stdout, f.stateDir())
			}
			log, err := g.logger(slog.LevelInfo, "text")
			if err != nil {
				return err
			}
			f.grpcSet, f.httpSet = cmd.Flags().Changed("grpc-addr"), cmd.Flags().Changed("http-addr")
			return runDev(cmd.Context(), g, f, log)
		},
	}
	cmd.Flags().StringVar(&f.state, "state", "", "state directory (default ./"+devStateDir+", or $XDG_STATE_HOME/hsmgate/dev)")
	cmd.Flags().StringVar(&f.grpcAddr, "grpc-addr", devGRPCAddr, "gRPC listen address (loopback only; port 0 picks a free port)")
	cmd.Flags().StringVar(&f.httpAddr, "http-addr", devHTTPAddr, "HTTPS listen address (loopback only; port 0 picks a free port)")
	cmd.Flags().BoolVar(&f.printEnv, "print-env", false, "print the export lines of the dev server running on --state, then exit")
	cmd.MarkFlagsMutuallyExclusive("print-env", "grpc-addr")
	cmd.MarkFlagsMutuallyExclusive("print-env", "http-addr")
	return cmd
}

func (f *devFlags) stateDir() string {
	if f.state != "" {
		return f.state
	}
	return defaultDevState()
}

func defaultDevState() string {
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "hsmgate", "dev")
	}
	return devStateDir
}

var (
	errNoDev    = errs.New(errs.FailedPrecondition, "no hsmgate dev is running")
	errDevInUse = errs.New(errs.FailedPrecondition, "cannot listen")
)

// devState is what a dev server runs from.
type devState struct {
	dir       string
	cfg       *config.Config
	tls       devtls.Files
	rootToken string
}

func runDev(ctx context.Context, g *globals, f *devFlags, log *slog.Logger) error {
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", f.grpcAddr}, {"--http-addr", f.httpAddr}} {
		if err := checkLoopback(a.addr); err != nil {
			return usageError{fmt.Errorf("%s: %w", a.flag, err)}
		}
	}
	grpcWant, httpWant := f.grpcAddr, f.httpAddr
	var err error
	if f.grpcAddr, err = devListenAddr(g.stderr, "gRPC", f.grpcAddr, !f.grpcSet); err != nil {
		return err
	}
	if f.httpAddr, err = devListenAddr(g.stderr, "HTTPS", f.httpAddr, !f.httpSet); err != nil {
		return err
	}
	fellBack := f.grpcAddr != grpcWant || f.httpAddr != httpWant
	st, err := prepareDevState(ctx, f.stateDir(), f, log)
	if err != nil {
		return err
	}
	err = runServer(ctx, st.cfg, log, runOptions{
		createKEK:    true,
		devRootToken: st.rootToken,
		devStateDir:  st.dir,
		storeOpened: func() error {
			// This process now owns the state directory; the env file of
			// an earlier run names old ports until listening rewrites it.
			if err := os.Remove(filepath.Join(st.dir, devFileEnv)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		},
		listening: func(a listenAddrs) error {
			if fellBack {
				fmt.Fprintf(g.stderr, "hsmgate dev: serving gRPC on %s and HTTPS on %s (a default port was taken)\n", a.GRPC, a.HTTP)
			}
			env := devEnv(a, st.tls.CACert, st.rootToken)
			envFile := filepath.Join(st.dir, devFileEnv)
			if err := writeFileAtomic(envFile, []byte(env), 0o600); err != nil {
				return err
			}
			_, err := io.WriteString(g.stdout, env+devHowTo(st.dir, envFile))
			return err
		},
	})
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: %w (is another hsmgate dev running? --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 pick free ports)", errDevInUse, err)
	}
	return err
}

// devListenAddr returns addr, or, when addr is a default that is taken,
// a free port on its host, saying so on w.
func devListenAddr(w io.Writer, what, addr string, isDefault bool) (string, error) {
	if !isDefault {
		return addr, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		// Free now; the server binds it a moment later.
		return addr, ln.Close()
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return addr, nil // the server reports it
	}
	host, _, _ := net.SplitHostPort(addr)
	free := net.JoinHostPort(host, "0")
	fmt.Fprintf(w, "hsmgate dev: %s is in use (another hsmgate dev?); serving %s on a free port instead: see the export lines\n", addr, what)
	return free, nil
}

// printDevEnv prints the env file of the dev server running on dir. A dev
// server holds the lock of its bbolt store while it runs, so a stale env file
// (no server, or one still starting) is refused rather than printed.
func printDevEnv(w io.Writer, dir string) error {
	running, err := devServerRunning(filepath.Join(dir, devFileStore))
	if err != nil {
		return err
	}
	if !running {
		return fmt.Errorf("%w on %s: start one (hsmgate dev --state %s) in another shell first", errNoDev, dir, shellQuote(dir))
	}
	env, err := os.ReadFile(filepath.Join(dir, devFileEnv))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: the one on %s has not written %s yet: try again once it prints its export lines", errNoDev, dir, devFileEnv)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(env)
	return err
}

// devServerRunning reports whether a process holds the lock of the bbolt
// file at path (bbolt takes an exclusive flock for as long as it is open).
func devServerRunning(path string) (bool, error) {
	fd, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer fd.Close()
	switch err := syscall.Flock(int(fd.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case err == nil:
		return false, syscall.Flock(int(fd.Fd()), syscall.LOCK_UN)
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	default:
		return false, fmt.Errorf("lock %s: %w", path, err)
	}
}

// prepareDevState creates or reuses everything under dir.
func prepareDevState(ctx context.Context, dir string, f *devFlags, log *slog.Logger) (*devState, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev: state directory: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone, and the PINs and
	// the root token live here.
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("dev: state directory: %w", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("dev: state directory %s is open to other users (mode %#o): run `chmod 700 %s` or choose another with --state", dir, fi.Mode().Perm(), dir)
	}
	lib, err := softhsm.Library()
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	soPIN, err := readOrCreateSecret(filepath.Join(dir, devFileSOPIN), randomPIN)
	if err != nil {
		return nil, err
	}
	userPINFile := filepath.Join(dir, devFileUserPIN)
	userPIN, err := readOrCreateSecret(userPINFile, randomPIN)
	if err != nil {
		return nil, err
	}
	// In process (the PINs stay off command lines); it also sets
	// SOFTHSM2_CONF, which SoftHSM reads once per process, at the first
	// hsm.Open.
	if _, err := softhsm.InitTokenInProcess(filepath.Join(dir, devDirSoftHSM), devTokenLabel, soPIN, userPIN); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	tlsFiles, newCA, err := devtls.Ensure(filepath.Join(dir, devDirTLS), devtls.DefaultHosts, time.Now())
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	rootToken, err := readOrCreateSecret(filepath.Join(dir, devFileRootToken), newRootToken)
	if err != nil {
		return nil, err
	}
	log.Info("dev state ready", "dir", dir, "token", devTokenLabel, "new_ca", newCA)

	c := config.Default()
	// /metrics on its own plain-HTTP listener, on loopback, a free port.
	c.Listen = config.Listen{GRPC: f.grpcAddr, HTTP: f.httpAddr, Metrics: "127.0.0.1:0"}
	c.TLS.CertFile, c.TLS.KeyFile = tlsFiles.Cert, tlsFiles.Key
	c.HSM.Library = lib
	c.HSM.TokenLabel = devTokenLabel
	c.HSM.PINFile = userPINFile
	c.Store = config.Store{Backend: config.BackendBbolt, Path: filepath.Join(dir, devFileStore)}
	c.Shutdown.Timeout = 5 * time.Second
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	return &devState{dir: dir, cfg: c, tls: tlsFiles, rootToken: rootToken}, nil
}

// EnvMetricsAddr is the plain-HTTP address of /metrics that dev prints.
const EnvMetricsAddr = "HSMGATE_METRICS_ADDR"

// devEnv is the export lines; values are shell-quoted only when needed.
func devEnv(a listenAddrs, caCert, token string) string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{client.EnvAddr, a.GRPC},
		{client.EnvHTTPAddr, a.HTTP},
		{client.EnvCACert, caCert},
		{client.EnvToken, token},
		{EnvMetricsAddr, a.Metrics},
	} {
		if kv[1] != "" || kv[0] != EnvMetricsAddr {
			fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
		}
	}
	httpAddr := a.HTTP
	if httpAddr == "" {
		return b.String()
	}
	// Vault clients (vault/api, sops, the vault CLI) use the Vault-compatible
	// door on the HTTPS listener.
	for _, kv := range [][2]string{
		{"VAULT_ADDR", "https://" + httpAddr},
		{"VAULT_TOKEN", token},
		{"VAULT_CACERT", caCert},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return b.String()
}

func devHowTo(dir, envFile string) string {
	q := shellQuote(envFile)
	return `# hsmgate dev server: state in ` + dir + `
# (SoftHSM token "` + devTokenLabel + `", bbolt store, dev CA, root token; development only).
# In another shell, in this directory: eval "$(hsmgate dev --print-env)", or
#   . ` + q + `
#   hsmgate status                 # ./hsmgate after scripts/dev.sh, or: go run ./cmd/hsmgate status
#   grpcurl -cacert "$HSMGATE_CACERT" "$HSMGATE_ADDR" grpc.health.v1.Health/Check
#   curl --cacert "$HSMGATE_CACERT" "https://$HSMGATE_HTTP_ADDR/readyz"
# Ctrl-C stops the server; running hsmgate dev again reuses this state;
# rm -rf ` + shellQuote(dir) + ` starts over.
`
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// checkLoopback accepts host:port with a loopback IP or "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q: dev mode listens on loopback addresses only (127.0.0.1, ::1, localhost)", addr)
}

// readOrCreateSecret returns the secret in path, or makes one with gen and
// writes it there (0600) if the file does not exist.
func readOrCreateSecret(path string, gen func() (string, error)) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
		return "", fmt.Errorf("dev: %s is empty (remove the state directory to start over)", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("dev: %w", err)
	}
	s, err := gen()
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}

func randomPIN() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// newRootToken makes a token in hsmgate's format: "hgs." and 32 random bytes
// in unpadded base64url.
func newRootToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "hgs." + base64.RawURLEncoding.EncodeToString(b), nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
