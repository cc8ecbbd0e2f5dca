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

	"github.com/hsmgate/hsmgate/hsm/softhsm"
	"github.com/hsmgate/hsmgate/internal/client"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/devtls"
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
}

func newDevCmd(g *globals) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev [--state DIR]",
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
HSMGATE_TOKEN, then a short how-to as shell comments; logs go to stderr.

Only loopback addresses are accepted. Not for production: the PINs, the CA key
and the root token sit in plain files.`,
		Example: `  hsmgate dev
  hsmgate dev --state /tmp/hg --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(slog.LevelInfo, "text")
			if err != nil {
				return err
			}
			return runDev(cmd.Context(), g, f, log)
		},
	}
	cmd.Flags().StringVar(&f.state, "state", "", "state directory (default ./"+devStateDir+", or $XDG_STATE_HOME/hsmgate/dev)")
	cmd.Flags().StringVar(&f.grpcAddr, "grpc-addr", devGRPCAddr, "gRPC listen address (loopback only; port 0 picks a free port)")
	cmd.Flags().StringVar(&f.httpAddr, "http-addr", devHTTPAddr, "HTTPS listen address (loopback only; port 0 picks a free port)")
	return cmd
}

func defaultDevState() string {
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "hsmgate", "dev")
	}
	return devStateDir
}

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
	dir := f.state
	if dir == "" {
		dir = defaultDevState()
	}
	st, err := prepareDevState(ctx, dir, f, log)
	if err != nil {
		return err
	}
	err = runServer(ctx, st.cfg, log, runOptions{
		createKEK:    true,
		devRootToken: st.rootToken,
		devStateDir:  st.dir,
		allowNoAuth:  true,
		listening: func(grpcAddr, httpAddr string) error {
			env := devEnv(grpcAddr, httpAddr, st.tls.CACert, st.rootToken)
			envFile := filepath.Join(st.dir, devFileEnv)
			if err := writeFileAtomic(envFile, []byte(env), 0o600); err != nil {
				return err
			}
			_, err := io.WriteString(g.stdout, env+devHowTo(st.dir, envFile))
			return err
		},
	})
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w (is another hsmgate dev running? --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 pick free ports)", err)
	}
	return err
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
	c.Listen = config.Listen{GRPC: f.grpcAddr, HTTP: f.httpAddr}
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

// devEnv is the export lines; values are shell-quoted only when needed.
func devEnv(grpcAddr, httpAddr, caCert, token string) string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{client.EnvAddr, grpcAddr},
		{client.EnvHTTPAddr, httpAddr},
		{client.EnvCACert, caCert},
		{client.EnvToken, token},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return b.String()
}

func devHowTo(dir, envFile string) string {
	q := shellQuote(envFile)
	return `# hsmgate dev server: state in ` + dir + `
# (SoftHSM token "` + devTokenLabel + `", bbolt store, dev CA, root token; development only).
# In another shell:
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
