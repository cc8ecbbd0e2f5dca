package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/client"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// The replica harness: real `hsmgate server`s (runServer, from their own
// config files, as `hsmgate init`, `hsmgate token root` and `hsmgate server`
// would run them) in this process, on an in-process etcd cluster, all on one
// PKCS#11 token.
//
// Each replica loads its own copy of the PKCS#11 library file: the dynamic
// loader then gives each its own instance (own C_Initialize, own sessions,
// own C_Finalize when it stops), as separate processes would have, while all
// open the same token. With SoftHSM that is the same token directory, which
// SoftHSM re-reads for token objects, so a CA key made through one replica is
// found by the others.

// replicaOpts change how startReplicas builds the set.
type replicaOpts struct {
	// n is the number of replicas (default 3).
	n int
	// members is the etcd cluster size (default 3).
	members int
	// requestTimeout is store.etcd.request_timeout (default 1s).
	requestTimeout time.Duration
	// library is the PKCS#11 module each replica copies and loads, and
	// tokenLabel/pin its token (default: a fresh SoftHSM token from hsmtest).
	library, tokenLabel, pin string
}

// replicaSet is a running set of replicas.
type replicaSet struct {
	Etcd *etcdtest.Cluster
	// Proxies stand between the replicas and each etcd member (Freeze one
	// to make that member look stopped with SIGSTOP).
	Proxies  []*etcdtest.Freezer
	Replicas []*replica
	// Token is a root token made with `hsmgate token root`.
	Token  string
	CACert string
	// RequestTimeout is the replicas' store.etcd.request_timeout.
	RequestTimeout time.Duration
}

// replica is one running server and a client connection to it.
type replica struct {
	Name    string
	Config  string // its config file
	Addr    string // gRPC address
	Transit hsmgatev1.TransitServiceClient
	PKI     hsmgatev1.PKIServiceClient
	conn    *grpc.ClientConn
	logs    *syncbuf.Buffer
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// startReplicas starts an etcd cluster, runs `hsmgate init` and `hsmgate
// token root` for it, and starts the replicas; everything stops in t.Cleanup
// (the replicas' logs are printed if the test failed).
func startReplicas(t *testing.T, o replicaOpts) *replicaSet {
	t.Helper()
	if o.n == 0 {
		o.n = 3
	}
	if o.members == 0 {
		o.members = 3
	}
	if o.requestTimeout == 0 {
		o.requestTimeout = time.Second
	}
	if o.library == "" {
		hc := hsmtest.Config(t)
		o.library, o.tokenLabel, o.pin = hc.Library, hc.TokenLabel, hc.PIN
	}
	rs := &replicaSet{Etcd: etcdtest.Start(t, o.members), RequestTimeout: o.requestTimeout}
	var endpoints []string
	for i := range rs.Etcd.Members {
		p := rs.Etcd.Freezable(t, i)
		rs.Proxies = append(rs.Proxies, p)
		endpoints = append(endpoints, p.Endpoint)
	}

	dir := t.TempDir()
	tlsFiles, _, err := devtls.Ensure(filepath.Join(dir, "tls"), devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rs.CACert = tlsFiles.CACert
	pinFile := filepath.Join(dir, "hsm-pin")
	auditKey := make([]byte, 32)
	_, _ = rand.Read(auditKey)
	writeFile(t, pinFile, []byte(o.pin))
	writeFile(t, filepath.Join(dir, "audit-hmac-key"), auditKey)

	for i := range o.n {
		name := fmt.Sprintf("r%d", i)
		rdir := filepath.Join(dir, name)
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		lib := filepath.Join(rdir, filepath.Base(o.library))
		copyFile(t, o.library, lib)
		cfg := replicaConfig(replicaFiles{
			Library: lib, TokenLabel: o.tokenLabel, PINFile: pinFile,
			Endpoints: endpoints, RequestTimeout: o.requestTimeout,
			Cert: tlsFiles.Cert, Key: tlsFiles.Key,
			AuditLog: filepath.Join(rdir, "audit.log"), AuditKey: filepath.Join(dir, "audit-hmac-key"),
		})
		path := filepath.Join(rdir, "hsmgate.yaml")
		writeFile(t, path, []byte(cfg))
		rs.Replicas = append(rs.Replicas, &replica{Name: name, Config: path})
	}

	// As an operator would: `hsmgate init` once, `hsmgate token root` once.
	first := rs.Replicas[0].Config
	if out, err := runCLI(t, "init", "--config", first); err != nil {
		t.Fatalf("hsmgate init: %v\n%s", err, out)
	}
	out, err := runCLI(t, "token", "root", "--config", first)
	if err != nil {
		t.Fatalf("hsmgate token root: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "export HSMGATE_TOKEN="); ok {
			rs.Token = strings.TrimSpace(v)
		}
	}
	if rs.Token == "" {
		t.Fatalf("hsmgate token root printed no token:\n%s", out)
	}
	for _, r := range rs.Replicas {
		rs.start(t, r)
	}
	// Several SoftHSM instances in one process share the token's files
	// without the cross-process file locks that separate processes would
	// have, so now and then one instance reads a file another is writing
	// while it starts and stays unusable (seen: "hsm: unavailable" for a
	// minute). Such a replica is restarted (a fresh C_Initialize), as an
	// operator would restart a replica whose HSM client is stuck.
	for _, r := range rs.Replicas {
		for attempt := 0; !rs.hsmUsable(r); attempt++ {
			if attempt == 2 {
				t.Fatalf("replica %s: its HSM instance stays unavailable after %d restarts\n%s", r.Name, attempt, r.logs)
			}
			t.Logf("replica %s: HSM instance unavailable after start (several SoftHSM instances in one process): restarting it", r.Name)
			rs.Stop(t, r)
			r.stopped = false
			rs.start(t, r)
		}
	}
	t.Cleanup(func() {
		for _, r := range rs.Replicas {
			rs.Stop(t, r)
		}
		if t.Failed() {
			for _, r := range rs.Replicas {
				t.Logf("--- log of replica %s ---\n%s", r.Name, r.logs)
			}
		}
	})
	return rs
}

// replicaFiles are what a replica's config names.
type replicaFiles struct {
	Library, TokenLabel, PINFile string
	Endpoints                    []string
	RequestTimeout               time.Duration
	Cert, Key                    string
	AuditLog, AuditKey           string
}

// replicaConfig is the config file of one replica: the same for every
// replica but for its library copy and its own audit file.
func replicaConfig(f replicaFiles) string {
	var eps strings.Builder
	for _, e := range f.Endpoints {
		fmt.Fprintf(&eps, "      - %s\n", e)
	}
	return fmt.Sprintf(`listen:
  grpc: 127.0.0.1:0
  http: 127.0.0.1:0
tls:
  cert: %s
  key: %s
hsm:
  library: %s
  token_label: %s
  pin_file: %s
  kek_label: hsmgate-kek
  max_sessions: 4
  wait_timeout: 10s
store:
  backend: etcd
  etcd:
    endpoints:
%s    prefix: /hsmgate/
    dial_timeout: 5s
    request_timeout: %s
shutdown:
  drain: 0s
  timeout: 2s
log:
  level: warn
audit:
  path: %s
  hmac_key_file: %s
pki:
  base_url: http://ca.replicas.test
`, f.Cert, f.Key, f.Library, f.TokenLabel, f.PINFile, eps.String(), f.RequestTimeout, f.AuditLog, f.AuditKey)
}

// start runs r's server until Stop and dials it.
func (rs *replicaSet) start(t *testing.T, r *replica) {
	t.Helper()
	c, err := config.Load(r.Config)
	if err != nil {
		t.Fatalf("replica %s: config: %v", r.Name, err)
	}
	r.logs = &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", r.Name)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		r.done <- runServer(ctx, c, log, runOptions{
			listening: func(a listenAddrs) error { ready <- a.GRPC; return nil },
		})
	}()
	guard := time.NewTimer(2 * time.Minute) // a hang guard, not a timed assertion
	defer guard.Stop()
	select {
	case r.Addr = <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("replica %s stopped before serving: %v\n%s", r.Name, err, r.logs)
	case <-guard.C:
		cancel()
		t.Fatalf("replica %s: not serving after 2 minutes\n%s", r.Name, r.logs)
	}
	r.conn, err = client.Dial(client.Config{Addr: r.Addr, CACert: rs.CACert, Token: rs.Token})
	if err != nil {
		t.Fatal(err)
	}
	r.Transit = hsmgatev1.NewTransitServiceClient(r.conn)
	r.PKI = hsmgatev1.NewPKIServiceClient(r.conn)
}

// hsmUsable reports whether r's HSM answers (GenerateRandom, retried for a
// few seconds while Unavailable).
func (rs *replicaSet) hsmUsable(r *replica) bool {
	for range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), callerDeadline)
		_, err := r.Transit.GenerateRandom(ctx, &hsmgatev1.GenerateRandomRequest{Bytes: 16})
		cancel()
		if err == nil {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// Stop stops r's server (once) and waits for it.
func (rs *replicaSet) Stop(t *testing.T, r *replica) {
	t.Helper()
	if r.stopped || r.cancel == nil {
		return
	}
	r.stopped = true
	r.conn.Close()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Logf("replica %s stopped: %v", r.Name, err)
		}
	case <-time.After(time.Minute): // a hang guard
		t.Errorf("replica %s: still running a minute after it was stopped", r.Name)
	}
}

// runCLI runs hsmgate with args in this process and returns its output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmd(&out, &errb)
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(context.Background())
	return out.String() + errb.String(), err
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
