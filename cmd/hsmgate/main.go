// Command hsmgate is the one hsmgate binary: the server (`server`, `dev`,
// `init`) and the client verbs (`status`, and the engines' verbs). It only
// wires packages together; the work is done in internal/ and the engines.
// How the parts fit (layers, key hierarchy, data flows, store schema, audit
// chain, threat model): docs/architecture.md at the repository's top.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/internal/version"
)

// defaultGCPercent is the garbage collector's target (GOGC) when the
// environment sets none. The server's live heap is small (tens of MiB) and it
// allocates fast (tens of thousands of RPCs a second, a few KiB each), so at
// Go's default of 100 it collects many times a second and the collector took
// about a sixth of a single-item RPC's CPU (bench/results). 200 halves the
// collections for a heap of up to three times the live one instead of two.
// GOGC and GOMEMLIMIT in the environment are honoured as Go honours them.
const defaultGCPercent = 200

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	root := newRootCmd(os.Stdout, os.Stderr)
	if cmd, err := root.ExecuteContextC(ctx); err != nil {
		fmt.Fprintln(os.Stderr, formatError(cmd, err))
		stop()
		os.Exit(exitCode(err))
	}
}

// globals are the flags every command has.
type globals struct {
	logLevel  string
	logFormat string
	// level is the live level of the logger (SIGHUP may change it).
	level  slog.LevelVar
	stdout io.Writer
	stderr io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "hsmgate",
		Short: "PKCS#11 HSMs behind one gRPC API: transit encryption, PKI and SSH CA",
		Long: `hsmgate puts PKCS#11 HSMs behind one gRPC API.

Start a throwaway server with its own SoftHSM token, then point a shell at it:

  hsmgate dev                              # serves until Ctrl-C; prints export lines
  eval "$(hsmgate dev --print-env)"        # in another shell, same directory
  hsmgate status

Verbs that print data take -o table|json|yaml (--json is -o json): table is
the human form, json the server's response as one JSON document, yaml the
same document as YAML.

Errors print one line, "hsmgate: <verb>: <Code>: <message>" (Code is a gRPC
code name), and exit 1, or 2 for a mistake on the command line (a bad flag,
a missing argument, an unknown verb).

Shell completion: source <(hsmgate completion bash) (also zsh, fish).

Environment variables (flags override them):
  HSMGATE_ADDR             gRPC address host:port of the server (default ` + client.DefaultAddr + `)
  HSMGATE_HTTP_ADDR        HTTPS address host:port of /healthz, /readyz, the PKI and SSH CA
                           endpoints and the Vault-compatible door (/v1/)
  HSMGATE_METRICS_ADDR     dev: plain-HTTP address host:port of /metrics (listen.metrics)
  HSMGATE_CACERT           PEM CA of the server certificate (default: the system roots)
  HSMGATE_TOKEN            bearer token
  HSMGATE_TOKEN_FILE       file holding the bearer token, read when HSMGATE_TOKEN is unset
  HSMGATE_CLIENT_CERT      PEM client certificate, for mTLS
  HSMGATE_CLIENT_KEY       PEM key of HSMGATE_CLIENT_CERT
  HSMGATE_TLS_SERVER_NAME  name to verify in the server certificate (default: the address's host)
  HSMGATE_SSH_ROLE         role of "hsmgate ssh sign" without --role (default "default")
  HSMGATE_AUDIT_HMAC_KEY   server: hex HMAC key of the audit log, the default of audit.hmac_key_env
  HSMGATE_HSM_PIN          server, init: the HSM user PIN, by convention (the config's
                           hsm.pin_env names the variable)
  HSMGATE_ETCD_PASSWORD    server: the etcd password, by convention (store.etcd.password_env)
  XDG_STATE_HOME           dev: the default state directory is $XDG_STATE_HOME/hsmgate/dev
                           (else ./.hsmgate-dev)`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// `hsmgate --version` prints what `hsmgate version` prints.
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default info, or the config file's)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "", "log format on stderr: text or json (default text, or the config file's)")
	addOutputFlags(root)
	// The whole command tree, built here and nowhere else (no init hooks):
	// the server side, then the client verbs, engine by engine.
	root.AddCommand(
		newVersionCmd(g),
		newServerCmd(g),
		newInitCmd(g),
		newDevCmd(g),
		newStatusCmd(g),
		newTransitCmd(),
		newPKICmd(),
		newSSHCmd(),
		newACMECmd(),
		newPolicyCmd(g),
		newTokenCmd(g),
		newAuthCmd(g),
		newAuditCmd(g),
		newBenchCmd(g),
	)
	// cobra's `completion bash|zsh|fish|powershell`, added now rather than
	// at Execute so that the tree above is the whole tree.
	root.InitDefaultCompletionCmd()
	markRunErrors(root)
	return root
}

// logger builds the stderr logger: flags win over the given defaults.
func (g *globals) logger(level slog.Level, format string) (*slog.Logger, error) {
	if g.logLevel != "" {
		if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
			return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)}
		}
	}
	if g.logFormat != "" {
		format = g.logFormat
	}
	g.level.Set(level)
	opts := &slog.HandlerOptions{Level: &g.level}
	var l *slog.Logger
	// A line logged with a request's context names its request and caller.
	switch strings.ToLower(format) {
	case "", "text":
		l = slog.New(server.RequestFieldsHandler(slog.NewTextHandler(g.stderr, opts)))
	case "json":
		l = slog.New(server.RequestFieldsHandler(slog.NewJSONHandler(g.stderr, opts)))
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
	}
	// Packages that log through slog.Default (or the log package) use the same stream.
	slog.SetDefault(l)
	return l, nil
}

func newVersionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
	}
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		doc := struct {
			Version string `json:"version"`
		}{version.String()}
		return out.print(doc, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, "hsmgate", version.String())
			return err
		})
	}
	return cmd
}
