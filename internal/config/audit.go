package config

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/hsmgate/hsmgate/internal/audit"
)

//	audit:
//	  path: /var/log/hsmgate/audit.log
//	  stdout: false
//	  max_size: 104857600           # rotate past 100 MiB (the chain continues; max_bytes is the old name)
//	  max_files: 10                 # rotated files kept (-1: all)
//	  max_age: 2160h                # rotated files older than this are deleted (0: no limit)
//	  checkpoint_interval: 10s      # signed head written beside the log, logged, in metrics
//	  fsync: false
//	  hmac_key_file: /run/secrets/audit-hmac-key   # or hmac_key_env: HSMGATE_AUDIT_HMAC_KEY (hex)

// AuditFile is the `audit` section of the file.
type AuditFile struct {
	Path               string        `yaml:"path"`
	Stdout             bool          `yaml:"stdout"`
	MaxBytes           int64         `yaml:"max_bytes"`
	MaxSize            int64         `yaml:"max_size"`
	MaxFiles           int           `yaml:"max_files"`
	MaxAge             time.Duration `yaml:"max_age"`
	Fsync              bool          `yaml:"fsync"`
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	HMACKeyFile        string        `yaml:"hmac_key_file"`
	HMACKeyEnv         string        `yaml:"hmac_key_env"`
}

// Audit is the runtime form of AuditFile: what audit.Open and
// audit.LoadHMACKey take. An empty Path means no audit log (only dev mode
// and tests should run so).
type Audit struct {
	audit.Config
}

// toAudit converts and checks the audit section; dir resolves relative paths.
func (f AuditFile) toAudit(dir string) (Audit, error) {
	if f.MaxBytes != 0 && f.MaxSize != 0 {
		return Audit{}, fmt.Errorf("audit: set max_size or max_bytes (its old name), not both")
	}
	if f.MaxAge < 0 {
		return Audit{}, fmt.Errorf("audit: max_age must not be negative")
	}
	a := Audit{Config: audit.Config{
		Path:               absPath(dir, f.Path),
		Stdout:             f.Stdout,
		MaxBytes:           f.MaxBytes + f.MaxSize,
		MaxFiles:           f.MaxFiles,
		MaxAge:             f.MaxAge,
		Fsync:              f.Fsync,
		CheckpointInterval: f.CheckpointInterval,
		HMACKeyFile:        absPath(dir, f.HMACKeyFile),
		HMACKeyEnv:         f.HMACKeyEnv,
	}}
	return a, nil
}

// Validate checks a runtime Audit.
func (a Audit) Validate() error {
	if a.Path == "" && (a.HMACKeyFile != "" || a.HMACKeyEnv != "" || a.Stdout) {
		return fmt.Errorf("audit: path is required when the audit section is set")
	}
	if a.HMACKeyFile != "" && a.HMACKeyEnv != "" {
		return fmt.Errorf("audit: set hmac_key_file or hmac_key_env, not both")
	}
	return nil
}

func absPath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}
