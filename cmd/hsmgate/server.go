package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/internal/config"
)

// serverFlags override the config file.
type serverFlags struct {
	config   string
	grpcAddr string
	httpAddr string
}

// add adds --config, and with listen the listen overrides (init listens on
// nothing, so it has none).
func (f *serverFlags) add(cmd *cobra.Command, listen bool) {
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "YAML config file (required; see internal/config/testdata/example.yaml)")
	if listen {
		cmd.Flags().StringVar(&f.grpcAddr, "grpc-addr", "", "override listen.grpc (host:port)")
		cmd.Flags().StringVar(&f.httpAddr, "http-addr", "", `override listen.http (host:port, or "off")`)
	}
	_ = cmd.MarkFlagRequired("config")
}

func (f *serverFlags) load() (*config.Config, error) {
	return config.Load(f.config, func(c *config.Config) {
		if f.grpcAddr != "" {
			c.Listen.GRPC = f.grpcAddr
		}
		switch f.httpAddr {
		case "":
		case config.HTTPOff:
			c.Listen.HTTP = ""
		default:
			c.Listen.HTTP = f.httpAddr
		}
	})
}

// loadWithLogger loads the configuration (a failure is a usage error) and
// makes the logger it configures.
func (f *serverFlags) loadWithLogger(g *globals) (*config.Config, *slog.Logger, error) {
	c, err := f.load()
	if err != nil {
		return nil, nil, usageError{err}
	}
	log, err := g.logger(c.Log.Level, c.Log.Format)
	if err != nil {
		return nil, nil, err
	}
	return c, log, nil
}

func newServerCmd(g *globals) *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "server --config FILE",
		Short: "Serve the gRPC API and the HTTPS endpoints with the configured HSM and key store",
		Long: `Serve the gRPC API (TLS) and the HTTPS listener (/healthz, /readyz, and the
engines' HTTP endpoints) with the HSM and key store of the config file;
/metrics only on listen.metrics (plain HTTP, off unless configured).

The HSM PIN comes from the environment variable named by hsm.pin_env or the
file named by hsm.pin_file, never from the config file. The KEK must exist:
run "hsmgate init --config FILE" once per token first.

SIGTERM or SIGINT shuts down gracefully: health turns NOT_SERVING, then
in-flight calls get shutdown.timeout to finish. SIGHUP re-reads the config
file and applies the TLS certificate, key and client CA and the log level
live, and starts a new audit file; other changes are logged as needing a
restart and not applied, and an invalid file is refused whole.`,
		Example: `  HSMGATE_HSM_PIN=$(cat /run/secrets/pin) hsmgate server --config /etc/hsmgate/hsmgate.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := f.loadWithLogger(g)
			if err != nil {
				return err
			}
			return runServer(cmd.Context(), c, log, runOptions{reloadConfig: f.load, level: &g.level, levelFromFlag: g.logLevel != ""})
		},
	}
	f.add(cmd, true)
	return cmd
}

func newInitCmd(g *globals) *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "init --config FILE",
		Short: "Create the key-encryption key (KEK) in the configured HSM token (idempotent)",
		Long: `Create the deployment's key-encryption key in the configured HSM token: an
AES-256 key that never leaves the HSM (non-extractable, wrap/unwrap only),
found by hsm.kek_label; and the key that signs audit checkpoints (ECDSA
P-256, label hsmgate-audit-checkpoint). Running it again finds the existing
keys and changes nothing. Prints whether each was created or already existed.`,
		Example: `  HSMGATE_HSM_PIN=$(cat /run/secrets/pin) hsmgate init --config /etc/hsmgate/hsmgate.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := f.loadWithLogger(g)
			if err != nil {
				return err
			}
			return initKEK(cmd.Context(), g, c, log)
		},
	}
	f.add(cmd, false)
	return cmd
}

func initKEK(ctx context.Context, g *globals, c *config.Config, log *slog.Logger) error {
	m, err := openHSM(ctx, c, log)
	if err != nil {
		return err
	}
	defer m.Close()
	_, created, err := m.EnsureKEK(ctx, c.HSM.KEKLabel)
	if err != nil {
		return fmt.Errorf("KEK %q: %w", c.HSM.KEKLabel, err)
	}
	what := "exists"
	if created {
		what = "created"
	}
	log.Info("KEK ready", "label", c.HSM.KEKLabel, "token", m.TokenLabel(), "created", created)
	if _, err = fmt.Fprintf(g.stdout, "KEK %q in token %q: %s\n", c.HSM.KEKLabel, m.TokenLabel(), what); err != nil {
		return err
	}
	return initAuditKey(ctx, g, m) // cmd/hsmgate/audit.go
}
