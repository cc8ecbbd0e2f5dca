package main

import "github.com/spf13/cobra"

// The engines served by `hsmgate server` and `hsmgate dev`, and their CLI verbs.
func init() {
	registerService("transit", setupTransit)
	registerService("pki", setupPKI)
	registerService("sshca", setupSSHCA)
	registerService("vaultdoor", setupVaultDoor)
	registerService("acme", setupACME)
	addCommand(func(*globals) *cobra.Command { return newTransitCmd() })
	addCommand(func(*globals) *cobra.Command { return newPKICmd() })
	addCommand(func(*globals) *cobra.Command { return newSSHCmd() })
	addCommand(func(*globals) *cobra.Command { return newACMECmd() })
}
