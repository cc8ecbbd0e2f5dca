package main

// The engines served by `hsmgate server` and `hsmgate dev` (their CLI verbs
// are added by newRootCmd).
func init() {
	registerService("transit", setupTransit)
	registerService("pki", setupPKI)
	registerService("sshca", setupSSHCA)
	registerService("vaultdoor", setupVaultDoor)
	registerService("acme", setupACME)
}
