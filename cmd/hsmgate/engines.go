package main

import "github.com/spf13/cobra"

// The CLI verbs of the engines. (The engines themselves are built by the
// composition root, compose.go.)
func init() {
	addCommand(func(*globals) *cobra.Command { return newTransitCmd() })
	addCommand(func(*globals) *cobra.Command { return newPKICmd() })
	addCommand(func(*globals) *cobra.Command { return newSSHCmd() })
	addCommand(func(*globals) *cobra.Command { return newACMECmd() })
}
