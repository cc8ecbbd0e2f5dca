// Command hsmgate is the one hsmgate binary: the server (`server`, `dev`,
// `init`) and the client verbs (`status`, and the engines' verbs). It only
// wires packages together; the work is done in internal/ and the engines.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	root := newRootCmd(os.Stdout, os.Stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hsmgate:", err)
		stop()
		os.Exit(exitCode(err))
	}
}

// usageError marks a mistake on the command line (exit status 2).
type usageError struct{ error }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// globals are the flags every command has.
type globals struct {
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    io.Writer
}

// subcommands lists the constructors of every verb; other files add theirs
// in init (e.g. transit, policy, token, audit).
var subcommands []func(g *globals) *cobra.Command

func addCommand(fn func(g *globals) *cobra.Command) { subcommands = append(subcommands, fn) }

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "hsmgate",
		Short: "PKCS#11 HSMs behind one gRPC API: transit encryption, PKI and SSH CA",
		Long: `hsmgate puts PKCS#11 HSMs behind one gRPC API.

Start a throwaway server with its own SoftHSM token, then point a shell at it:

  hsmgate dev                  # serves; prints export lines, also kept in STATE/env
  . .hsmgate-dev/env           # in another shell (the path hsmgate dev printed)
  hsmgate status

Client verbs read HSMGATE_ADDR, HSMGATE_CACERT and HSMGATE_TOKEN (and, for
mTLS, HSMGATE_CLIENT_CERT and HSMGATE_CLIENT_KEY); flags override them.`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default info, or the config file's)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "", "log format on stderr: text or json (default text, or the config file's)")
	root.AddCommand(newVersionCmd(g), newServerCmd(g), newInitCmd(g), newDevCmd(g), newStatusCmd(g))
	for _, fn := range subcommands {
		root.AddCommand(fn(g))
	}
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
	opts := &slog.HandlerOptions{Level: level}
	var l *slog.Logger
	switch strings.ToLower(format) {
	case "", "text":
		l = slog.New(slog.NewTextHandler(g.stderr, opts))
	case "json":
		l = slog.New(slog.NewJSONHandler(g.stderr, opts))
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
	}
	// Packages that log through slog.Default (or the log package) use the same stream.
	slog.SetDefault(l)
	return l, nil
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(g.stdout, "hsmgate", version.String())
			return err
		},
	}
}
