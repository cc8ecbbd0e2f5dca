package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/syncbuf"
)

// The test binary doubles as the hsmgate binary: with HSMGATE_TEST_MAIN=1 it
// runs main, so end-to-end tests start real processes without a separate
// build (each process gets its own SoftHSM initialisation).
func TestMain(m *testing.M) {
	if os.Getenv("HSMGATE_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hsmgateCmd returns a command running this binary as hsmgate, with the
// HSMGATE_* client variables cleared and env added.
func hsmgateCmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HSMGATE_") && !strings.HasPrefix(kv, "SOFTHSM2_CONF=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HSMGATE_TEST_MAIN=1")
	// The race detector pauses 1 s at every clean exit by default; the CLI
	// tests run hundreds of short processes.
	cmd.Env = append(cmd.Env, strings.TrimSpace("GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	return cmd
}

// run runs hsmgate to completion and returns stdout, stderr and the exit code.
func run(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := hsmgateCmd(ctx, env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("hsmgate %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// devProcess is a running `hsmgate dev`.
type devProcess struct {
	cmd     *exec.Cmd
	stderr  *syncbuf.Buffer
	exports map[string]string
	lines   []string // stdout up to the end of the how-to
	stopped bool
}

var exportLine = regexp.MustCompile(`^export ((?:HSMGATE|VAULT)_[A-Z_]+)=(\S+)$`)

// startDev starts `hsmgate dev` on free ports and reads its stdout up to the
// end of the how-to.
func startDev(t *testing.T, state string) *devProcess {
	t.Helper()
	return startDevCmd(t, hsmgateCmd(context.Background(), nil, "dev", "--state", state, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"))
}

// startDevCmd starts cmd, an `hsmgate dev`, and reads its stdout up to the
// end of the how-to.
func startDevCmd(t *testing.T, cmd *exec.Cmd) *devProcess {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, stderr: &syncbuf.Buffer{}, exports: map[string]string{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.stopped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	guard := time.NewTimer(2 * time.Minute) // a hang guard, not a timed assertion
	defer guard.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("hsmgate dev ended before printing its how-to; stderr:\n%s", p.stderr)
			}
			p.lines = append(p.lines, l)
			if m := exportLine.FindStringSubmatch(l); m != nil {
				p.exports[m[1]] = m[2]
			}
			if strings.HasSuffix(l, "starts over.") {
				go func() {
					for range lines {
					}
				}()
				return p
			}
		case <-guard.C:
			t.Fatalf("hsmgate dev printed no how-to; stderr:\n%s", p.stderr)
		}
	}
}

// env is the exports as KEY=value entries.
func (p *devProcess) env() []string {
	var env []string
	for k, v := range p.exports {
		env = append(env, k+"="+v)
	}
	return env
}

// stop sends SIGTERM and expects a clean exit.
func (p *devProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := p.cmd.Wait()
	p.stopped = true
	if err != nil {
		t.Fatalf("hsmgate dev after SIGTERM: %v; stderr:\n%s", err, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("no graceful shutdown in the log:\n%s", p.stderr)
	}
}
