package hsm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/hsm"
)

func TestResolvePIN(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pin")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HSMTEST_PIN", "from-env")
	t.Setenv("HSMTEST_UNSET", "")
	for _, c := range []struct {
		name, env, path, want string
		wantErr               bool
	}{
		{"env wins", "HSMTEST_PIN", file, "from-env", false},
		{"file when env unset", "HSMTEST_UNSET", file, "from-file", false},
		{"file only", "", file, "from-file", false},
		{"empty file", "", empty, "", true},
		{"missing file", "", filepath.Join(dir, "nope"), "", true},
		{"nothing", "HSMTEST_UNSET", "", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := hsm.ResolvePIN(c.env, c.path)
			if (err != nil) != c.wantErr || got != c.want {
				t.Fatalf("ResolvePIN: got %q, %v; want %q, error %v", got, err, c.want, c.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), "from-env") || strings.Contains(err.Error(), "from-file")) {
				t.Fatalf("error %q contains a PIN", err)
			}
		})
	}
}
