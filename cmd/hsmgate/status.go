package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func newStatusCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the server's version and state, and which dependency (HSM, key store) is down",
		Long: `Show the server's version and state, and whether its HSM and key store answer.

Works without a token: a call without credentials gets the public part only
(version, state SERVING or DEGRADED, and whether the HSM and the store are
reachable), rate limited per client address. With a token (or a client
certificate) it needs the "read" capability on sys/status and shows
everything: the token label, the store backend, why a dependency is down,
ping latencies, uptime and start time. A bad or revoked token is refused
(Unauthenticated): unset HSMGATE_TOKEN to see the public part.

Exits 0 when the call succeeds, even if a dependency is unreachable (see the
output, or use -o json and check state, hsm.reachable and store.reachable).`,
		Example: `  eval "$(hsmgate dev --print-env)"; hsmgate status
  HSMGATE_TOKEN= hsmgate status          # the public part, no token needed
  hsmgate status --addr hsmgate.internal:8443 --cacert ca.pem -o json`,
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
	state := strings.ToLower(strings.TrimPrefix(r.GetState().String(), "STATE_"))
	if r.GetPublicView() {
		up := func(c *hsmgatev1.ComponentStatus) string {
			if c.GetReachable() {
				return "reachable"
			}
			return "UNREACHABLE"
		}
		_, err := fmt.Fprintf(w, "version: %s\nstate:   %s\nhsm:     %s\nstore:   %s\n(public view: no token; details need read on sys/status)\n",
			r.GetVersion(), state, up(r.GetHsm()), up(r.GetStore()))
		return err
	}
	component := func(c *hsmgatev1.ComponentStatus, what string) string {
		if c.GetReachable() {
			return fmt.Sprintf("reachable (%s %q, %s)", what, c.GetName(), c.GetLatency().AsDuration().Round(time.Microsecond))
		}
		return fmt.Sprintf("UNREACHABLE (%s %q): %s", what, c.GetName(), c.GetError())
	}
	_, err := fmt.Fprintf(w, "version: %s\nstate:   %s\nuptime:  %s (since %s)\nhsm:     %s\nstore:   %s\n",
		r.GetVersion(),
		state,
		r.GetUptime().AsDuration().Round(time.Second),
		r.GetStartTime().AsTime().UTC().Format(time.RFC3339),
		component(r.GetHsm(), "token"),
		component(r.GetStore(), "backend"),
	)
	return err
}
