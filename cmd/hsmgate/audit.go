package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hsmgate/hsmgate/internal/audit"
)

func init() { addCommand(newAuditCmd) }

// newAuditCmd is `hsmgate audit verify FILE...`.
func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Work with the audit log"}
	verify := &cobra.Command{
		Use:   "verify FILE...",
		Short: "Check the hash chain of audit log files (give rotated files oldest first)",
		Long: `Check the hash chain of one or more audit log files, given in order (the
rotated files oldest first, the live file last). Prints the first changed,
inserted, missing or reordered line and exits 1; otherwise prints the number of
lines and the hash of the last one (record it elsewhere: with it, a later
verify also proves the tail was not cut).`,
		Example: `  hsmgate audit verify /var/log/hsmgate/audit.log.* /var/log/hsmgate/audit.log`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v := new(audit.Verifier)
			total := 0
			for _, name := range args {
				f, err := os.Open(name)
				if err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
				n, err := v.Verify(name, f)
				f.Close()
				total += n
				if err != nil {
					return fmt.Errorf("audit verify: chain broken after %d good lines: %w", total, err)
				}
			}
			seq, hash := v.LastHash()
			_, err := fmt.Fprintf(g.stdout, "ok: %d lines in %d file(s); last seq %d, sha256 %s\n", total, len(args), seq, hash)
			return err
		},
	}
	cmd.AddCommand(verify)
	return cmd
}
