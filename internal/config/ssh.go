package config

// SSHFile is the `ssh` section (the SSH CA). The items of one signing
// request are bounded by limits.max_items_per_request, as for every engine.
type SSHFile struct {
	// SignConcurrency bounds the HSM signatures in flight across all
	// signing requests: enough to keep the HSM busy while some calls wait
	// on its locks, few enough that concurrent batches do not pile threads
	// on it (default 0: 4 x the number of CPUs Go uses).
	SignConcurrency int `yaml:"sign_concurrency"`
}

// SSH configures the SSH CA.
type SSH struct {
	SignConcurrency int // 0: the engine's default (4 x GOMAXPROCS)
}

func (f SSHFile) toSSH() SSH { return SSH{SignConcurrency: f.SignConcurrency} }

// validateSSH checks the ssh section.
func (c *Config) validateSSH(bad func(string, string, ...any)) {
	if n := c.SSH.SignConcurrency; n < 0 || n > 4096 {
		bad("ssh.sign_concurrency", "%d is out of range 0..4096", n)
	}
}
