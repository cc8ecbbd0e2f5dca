package config

// The auth and audit sections. This file belongs to the owners of
// internal/auth and internal/audit: add fields to the File structs (with yaml
// tags), the runtime fields, and the conversion/validation below. Secrets
// (token salts, HMAC keys...) by reference only: *_env / *_file.

// AuthFile is the `auth` section of the file.
type AuthFile struct{}

// Auth is the runtime form of AuthFile.
type Auth struct{}

// toAuth converts and checks the auth section; dir resolves relative paths.
func (f AuthFile) toAuth(dir string) (Auth, error) { return Auth{}, nil }

// Validate checks a runtime Auth (also called for configs built in code, e.g. dev mode).
func (a Auth) Validate() error { return nil }
