package hsm

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ResolvePIN returns the PIN from the environment variable env if set, else
// from the file at path (trailing newline trimmed); an error if neither yields one.
// The error never contains the PIN.
func ResolvePIN(env, path string) (string, error) {
	if env != "" {
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("hsm: read PIN file: %w", err)
		}
		if pin := strings.TrimRight(string(b), "\r\n"); pin != "" {
			return pin, nil
		}
		return "", fmt.Errorf("hsm: PIN file %q is empty", path)
	}
	if env != "" {
		return "", fmt.Errorf("hsm: no PIN: $%s is not set and no PIN file is configured", env)
	}
	return "", errors.New("hsm: no PIN configured")
}
