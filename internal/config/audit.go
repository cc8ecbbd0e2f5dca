package config

// AuditFile is the `audit` section of the file (owned by internal/audit's
// author; see auth.go).
type AuditFile struct{}

// Audit is the runtime form of AuditFile.
type Audit struct{}

// toAudit converts and checks the audit section; dir resolves relative paths.
func (f AuditFile) toAudit(dir string) (Audit, error) { return Audit{}, nil }

// Validate checks a runtime Audit.
func (a Audit) Validate() error { return nil }
