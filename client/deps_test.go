package client

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLightDependencies builds a tiny program that imports the client and
// the generated stubs, as a microservice would, in a module of its own that
// declares the Go version of the generated code's dependencies (grpc's), and
// checks that none of the server's heavy dependencies are compiled into it.
func TestLightDependencies(t *testing.T) {
	clientDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	protoDir := filepath.Join(filepath.Dir(clientDir), "proto")
	grpcGo := goDirective(t, gomodOf(t, clientDir, "google.golang.org/grpc"))
	for _, dir := range []string{clientDir, protoDir} {
		if got := goDirective(t, filepath.Join(dir, "go.mod")); versionLess(grpcGo, got) {
			t.Errorf("%s/go.mod says go %s, newer than the go %s that google.golang.org/grpc needs", dir, got, grpcGo)
		}
	}

	dir := t.TempDir()
	gomod := "module example.com/tiny\n\ngo " + grpcGo + "\n\n" +
		"require (\n\tgithub.com/hsmgate/hsmgate/client v0.0.0-00010101000000-000000000000\n" +
		"\tgithub.com/hsmgate/hsmgate/proto v0.0.0-00010101000000-000000000000\n)\n\n" +
		"replace github.com/hsmgate/hsmgate/client => " + clientDir + "\n" +
		"replace github.com/hsmgate/hsmgate/proto => " + protoDir + "\n"
	main := `package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/client/textform"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func main() {
	c, err := client.New(context.Background(), client.FromEnv())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_ = pb.NewTransitServiceClient(c.Conn())
	fmt.Println(textform.Prefix)
}
`
	sum, err := os.ReadFile(filepath.Join(clientDir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(gomod), "main.go": []byte(main), "go.sum": sum} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd(t, dir, "mod", "tidy")
	goCmd(t, dir, "build", "-o", filepath.Join(dir, "tiny"), ".")
	deps := goCmd(t, dir, "list", "-deps", ".")
	for _, bad := range []string{
		"go.etcd.io/etcd", "go.etcd.io/bbolt", "github.com/zmap/zlint", "github.com/spf13/cobra",
		"github.com/prometheus", "github.com/tink-crypto", "github.com/miekg/pkcs11",
		"github.com/hsmgate/hsmgate/transit", "github.com/hsmgate/hsmgate/internal",
	} {
		for _, d := range strings.Fields(deps) {
			if strings.HasPrefix(d, bad) {
				t.Errorf("the tiny client program compiles %s", d)
			}
		}
	}
	if !strings.Contains(deps, "github.com/hsmgate/hsmgate/client\n") {
		t.Errorf("go list -deps does not list the client itself:\n%s", deps)
	}
}

func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// gomodOf returns the go.mod file of module mod as the module in dir sees it.
func gomodOf(t *testing.T, dir, mod string) string {
	t.Helper()
	return strings.TrimSpace(goCmd(t, dir, "list", "-m", "-f", "{{.GoMod}}", mod))
}

var goLine = regexp.MustCompile(`(?m)^go (\S+)`)

func goDirective(t *testing.T, gomod string) string {
	t.Helper()
	b, err := os.ReadFile(gomod)
	if err != nil {
		t.Fatal(err)
	}
	m := goLine.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no go directive", gomod)
	}
	return string(m[1])
}

// versionLess compares dotted Go versions numerically.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x = atoi(pa[i])
		}
		if i < len(pb) {
			y = atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}
