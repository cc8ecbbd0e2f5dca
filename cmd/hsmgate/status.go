package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func newStatusCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the server's version, uptime and whether its HSM and key store answer",
		Long: `Show the server's version, uptime and whether its HSM and key store answer.

Exits 0 when the call succeeds, even if a dependency is unreachable (see the
output, or use -o json and check hsm.reachable / store.reachable). Needs the
"read" capability on sys/status.`,
		Example: `  eval "$(hsmgate dev --print-env)"; hsmgate status
  hsmgate status --addr hsmgate.internal:8443 --cacert ca.pem --json`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	out := addOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := callFor(cmd, cf, hsmgatev1.NewSystemServiceClient, func(ctx context.Context, c hsmgatev1.SystemServiceClient) (*hsmgatev1.GetStatusResponse, error) {
			return c.GetStatus(ctx, &hsmgatev1.GetStatusRequest{})
		})
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		return out.print(resp, func(w io.Writer) error { return printStatus(w, resp) })
	}
	return cmd
}

func printStatus(w io.Writer, r *hsmgatev1.GetStatusResponse) error {
	component := func(c *hsmgatev1.ComponentStatus, what string) string {
		if c.GetReachable() {
			return fmt.Sprintf("reachable (%s %q, %s)", what, c.GetName(), c.GetLatency().AsDuration().Round(time.Microsecond))
		}
		return fmt.Sprintf("UNREACHABLE (%s %q): %s", what, c.GetName(), c.GetError())
	}
	_, err := fmt.Fprintf(w, "version: %s\nuptime:  %s (since %s)\nhsm:     %s\nstore:   %s\n",
		r.GetVersion(),
		r.GetUptime().AsDuration().Round(time.Second),
		r.GetStartTime().AsTime().UTC().Format(time.RFC3339),
		component(r.GetHsm(), "token"),
		component(r.GetStore(), "backend"),
	)
	return err
}
