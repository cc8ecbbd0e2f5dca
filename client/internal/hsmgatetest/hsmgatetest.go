// Package hsmgatetest runs a real hsmgate server for the client's tests and
// examples: it builds cmd/hsmgate from this repository, starts `hsmgate dev`
// (SoftHSM2 token, bbolt store, dev CA, root token) on free loopback ports
// in a temporary state directory, and exports the HSMGATE_* variables it
// prints, so that client.FromEnv reaches it.
package hsmgatetest

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/client"
)

// Main starts the server, runs setup with a root client, then the tests,
// and stops the server. It returns the exit code for os.Exit. A server
// that cannot start (no Go toolchain, no SoftHSM2) fails the run.
//
// A fuzzing run (-test.fuzz) runs no test or example, so it starts no server.
func Main(m *testing.M, setup func(context.Context, *client.Client) error) int {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		return m.Run()
	}
	stop, err := start(setup)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hsmgatetest:", err)
		return 1
	}
	code := m.Run()
	stop()
	return code
}

// repoRoot is the directory above the working directory holding cmd/hsmgate.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "cmd", "hsmgate", "main.go")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no cmd/hsmgate above the working directory")
		}
		dir = parent
	}
}

func start(setup func(context.Context, *client.Client) error) (stop func(), err error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "hsmgatetest-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	bin := filepath.Join(tmp, "hsmgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/hsmgate")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		cleanup()
		return nil, fmt.Errorf("go build ./cmd/hsmgate: %v\n%s", err, out)
	}
	logFile, err := os.Create(filepath.Join(tmp, "server.log"))
	if err != nil {
		cleanup()
		return nil, err
	}
	cmd := exec.Command(bin, "dev", "--state", filepath.Join(tmp, "state"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cleanup()
		return nil, fmt.Errorf("start hsmgate dev: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		cleanup()
	}
	fail := func(err error) (func(), error) {
		stop()
		return nil, err
	}
	env, err := readEnv(stdout, exited)
	if err != nil {
		log, _ := os.ReadFile(logFile.Name())
		return fail(fmt.Errorf("%w\nserver log:\n%s", err, log))
	}
	for k, v := range env {
		os.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.New(ctx, client.FromEnv())
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	if err := setup(ctx, c); err != nil {
		return fail(fmt.Errorf("setup: %w", err))
	}
	return stop, nil
}

// readEnv reads the "export NAME=value" lines of hsmgate dev until it has
// the four client variables; the rest of stdout is drained.
func readEnv(r io.Reader, exited <-chan struct{}) (map[string]string, error) {
	type res struct {
		env map[string]string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		env := map[string]string{}
		sc := bufio.NewScanner(r)
		sent := false
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "export ")
			if !ok || sent {
				continue
			}
			k, v, _ := strings.Cut(line, "=")
			env[k] = strings.Trim(v, "'")
			if env[client.EnvAddr] != "" && env[client.EnvCACert] != "" && env[client.EnvToken] != "" && env[client.EnvHTTPAddr] != "" {
				ch <- res{env: env}
				sent = true
			}
		}
		if !sent {
			ch <- res{err: fmt.Errorf("hsmgate dev printed no complete environment")}
		}
	}()
	select {
	case r := <-ch:
		return r.env, r.err
	case <-exited:
		return nil, fmt.Errorf("hsmgate dev exited before printing its environment")
	case <-time.After(3 * time.Minute):
		return nil, fmt.Errorf("hsmgate dev printed no environment within 3 minutes")
	}
}
