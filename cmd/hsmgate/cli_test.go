package main

import (
	"bytes"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func execRoot(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmd(&out, &errb)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := execRoot(t, "version")
	if err != nil || !strings.HasPrefix(out, "hsmgate ") {
		t.Errorf("version: got %q, %v", out, err)
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	for _, c := range root.Commands() {
		if c.Short == "" {
			t.Errorf("%s: no short help", c.Name())
		}
	}
}

func TestDevRefusesNonLoopback(t *testing.T) {
	_, _, err := execRoot(t, "dev", "--state", t.TempDir(), "--grpc-addr", "0.0.0.0:8443")
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("dev on 0.0.0.0: got %v, want a usage error about loopback", err)
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:8443", "127.0.0.1:8443"},
		{"/abs/path/ca.pem", "/abs/path/ca.pem"},
		{"hgs.AbC-_x", "hgs.AbC-_x"},
		{"/with space/ca.pem", "'/with space/ca.pem'"},
		{"it's", `'it'\''s'`},
	}
	for _, tc := range tests {
		if got := shellQuote(tc.in); got != tc.want {
			t.Errorf("shellQuote(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:0": true, "[::1]:8443": true, "localhost:1": true, "127.1.2.3:5": true,
		"0.0.0.0:8443": false, "10.0.0.1:1": false, ":8443": false, "example.com:1": false, "nope": false,
	} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("checkLoopback(%q): got %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestReadOrCreateSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root-token")
	first, err := readOrCreateSecret(path, newRootToken)
	if err != nil {
		t.Fatal(err)
	}
	second, err := readOrCreateSecret(path, newRootToken)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Error("secret not reused")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", st.Mode().Perm())
	}
}

func TestDevEnvFormat(t *testing.T) {
	got := devEnv(listenAddrs{GRPC: "127.0.0.1:8443", HTTP: "127.0.0.1:8200", Metrics: "127.0.0.1:9090"}, "/s/tls/ca.pem", "hgs.x")
	want := "export HSMGATE_ADDR=127.0.0.1:8443\nexport HSMGATE_HTTP_ADDR=127.0.0.1:8200\n" +
		"export HSMGATE_CACERT=/s/tls/ca.pem\nexport HSMGATE_TOKEN=hgs.x\nexport HSMGATE_METRICS_ADDR=127.0.0.1:9090\n" +
		"export VAULT_ADDR=https://127.0.0.1:8200\nexport VAULT_TOKEN=hgs.x\nexport VAULT_CACERT=/s/tls/ca.pem\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestNoCLIInitHooks: the command tree is built by newRootCmd alone; no
// file of the CLI registers anything from an init function. (The server
// wiring files are another matter: their init hooks go with the one
// composition root.)
func TestNoCLIInitHooks(t *testing.T) {
	wiring := regexp.MustCompile(`^(wire|engines|authwire|run|.*_wire)\.go$`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || wiring.MatchString(f) {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && fn.Name.Name == "init" {
				t.Errorf("%s: func init at %s; add the command in newRootCmd", f, fset.Position(fn.Pos()))
			}
		}
	}
	if checked < 15 {
		t.Errorf("checked %d files, want the CLI's (15 or more)", checked)
	}
}
