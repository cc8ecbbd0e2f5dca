package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// The replica harness: real `hsmgate server` processes (this test binary
// run as hsmgate, from their own config files, after `hsmgate init` and
// `hsmgate token root`, as an operator would run them) on an in-process etcd
// cluster reached through Freezer proxies, all on one PKCS#11 token.
//
// Replicas are processes, not servers inside the test process, because a
// PKCS#11 library is process state: with SoftHSM every process keeps its own
// view of the token directory and locks the token's files against the other
// processes (fcntl locks), which several library instances inside one
// process cannot do (tried: one start in about fifteen left a replica whose
// C_GetTokenInfo failed for good, having read a token file that another
// instance was rewriting). Processes also make a replica's death real
// (SIGKILL) and give each replica its own p11-kit client connection.

// replicaOpts change how startReplicas builds the set.
type replicaOpts struct {
	// n is the number of replicas (default 3).
	n int
	// members is the etcd cluster size (default 3).
	members int
	// requestTimeout is store.etcd.request_timeout (default 1s).
	requestTimeout time.Duration
	// electionTTL is replica.election_ttl, the lease of the background
	// jobs' leader (default 3s).
	electionTTL time.Duration
	// library is the PKCS#11 module each replica copies and loads, and
	// tokenLabel/pin its token (default: a fresh SoftHSM token from hsmtest).
	library, tokenLabel, pin string
	// env is added to the environment of the hsmgate processes.
	env []string
	// config makes a replica's config file (default replicaConfig).
	config func(replicaFiles) string
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
	// ElectionTTL is the replicas' replica.election_ttl.
	ElectionTTL time.Duration
}

// replica is one running server process and a client connection to it.
type replica struct {
	Name    string
	Config  string // its config file
	Audit   string // its audit log
	Addr    string // gRPC address
	Transit hsmgatev1.TransitServiceClient
	PKI     hsmgatev1.PKIServiceClient
	conn    *grpc.ClientConn
	env     []string
	logs    *syncbuf.Buffer
	cmd     *exec.Cmd
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
	if o.config == nil {
		o.config = replicaConfig
	}
	if o.electionTTL == 0 {
		o.electionTTL = 3 * time.Second
	}
	if o.library == "" {
		hc := hsmtest.Config(t)
		o.library, o.tokenLabel, o.pin = hc.Library, hc.TokenLabel, hc.PIN
	}
	// The replicas' processes see the token directory of this process's
	// hsmtest configuration.
	o.env = append(o.env, "SOFTHSM2_CONF="+os.Getenv("SOFTHSM2_CONF"))
	rs := &replicaSet{Etcd: etcdtest.Start(t, o.members), RequestTimeout: o.requestTimeout, ElectionTTL: o.electionTTL}
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
	writeReplicaFile(t, pinFile, []byte(o.pin))
	writeReplicaFile(t, filepath.Join(dir, "audit-hmac-key"), auditKey)

	for i := range o.n {
		name := fmt.Sprintf("r%d", i)
		rdir := filepath.Join(dir, name)
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := o.config(replicaFiles{
			ID: name, ElectionTTL: o.electionTTL,
			Library: o.library, TokenLabel: o.tokenLabel, PINFile: pinFile,
			Endpoints: endpoints, RequestTimeout: o.requestTimeout,
			Cert: tlsFiles.Cert, Key: tlsFiles.Key, CACert: tlsFiles.CACert,
			AuditLog: filepath.Join(rdir, "audit.log"), AuditKey: filepath.Join(dir, "audit-hmac-key"),
		})
		path := filepath.Join(rdir, "hsmgate.yaml")
		writeReplicaFile(t, path, []byte(cfg))
		rs.Replicas = append(rs.Replicas, &replica{Name: name, Config: path, Audit: filepath.Join(rdir, "audit.log"), env: o.env})
	}

	// As an operator would: `hsmgate init` once, `hsmgate token root` once.
	first := rs.Replicas[0].Config
	if out, errOut, code := run(t, o.env, "init", "--config", first); code != 0 {
		t.Fatalf("hsmgate init: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code := run(t, o.env, "token", "root", "--config", first)
	if code != 0 {
		t.Fatalf("hsmgate token root: exit %d\n%s%s", code, out, errOut)
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
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, r := range rs.Replicas {
			wg.Go(func() { rs.Stop(t, r) })
		}
		wg.Wait()
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
	ID                           string
	ElectionTTL                  time.Duration
	Library, TokenLabel, PINFile string
	Endpoints                    []string
	RequestTimeout               time.Duration
	Cert, Key, CACert            string
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
  level: info
audit:
  path: %s
  hmac_key_file: %s
pki:
  base_url: http://ca.replicas.test
replica:
  id: %s
  election_ttl: %s
`, f.Cert, f.Key, f.Library, f.TokenLabel, f.PINFile, eps.String(), f.RequestTimeout, f.AuditLog, f.AuditKey, f.ID, f.ElectionTTL)
}

// start runs r's server process and dials it.
func (rs *replicaSet) start(t *testing.T, r *replica) {
	t.Helper()
	r.logs = &syncbuf.Buffer{}
	r.stopped = false
	r.cmd = hsmgateCmd(context.Background(), r.env, "server", "--config", r.Config)
	r.cmd.Stderr = r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("replica %s: %v", r.Name, err)
	}
	r.done = make(chan error, 1)
	go func() { r.done <- r.cmd.Wait() }()
	guard := time.Now().Add(2 * time.Minute) // a hang guard, not a timed assertion
	for {
		if m := servingLine.FindStringSubmatch(r.logs.String()); m != nil {
			r.Addr = m[1]
			break
		}
		select {
		case err := <-r.done:
			r.done <- err
			r.stopped = true
			t.Fatalf("replica %s exited (%v) before serving:\n%s", r.Name, err, r.logs)
		default:
		}
		if time.Now().After(guard) {
			t.Fatalf("replica %s: not serving after 2 minutes\n%s", r.Name, r.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var err error
	r.conn, err = client.Dial(client.Options{Addr: r.Addr, CACert: rs.CACert, Token: rs.Token})
	if err != nil {
		t.Fatal(err)
	}
	r.Transit = hsmgatev1.NewTransitServiceClient(r.conn)
	r.PKI = hsmgatev1.NewPKIServiceClient(r.conn)
}

// Stop stops r's server (SIGTERM, once) and waits for it.
func (rs *replicaSet) Stop(t *testing.T, r *replica) {
	t.Helper()
	rs.end(t, r, syscall.SIGTERM)
}

// Kill kills r's server (SIGKILL: no shutdown, as a crash or an OOM kill).
func (rs *replicaSet) Kill(t *testing.T, r *replica) {
	t.Helper()
	rs.end(t, r, syscall.SIGKILL)
}

func (rs *replicaSet) end(t *testing.T, r *replica, sig syscall.Signal) {
	t.Helper()
	if r.stopped || r.cmd == nil {
		return
	}
	r.stopped = true
	r.conn.Close()
	_ = r.cmd.Process.Signal(sig)
	select {
	case err := <-r.done:
		if err != nil && sig == syscall.SIGTERM {
			t.Logf("replica %s stopped: %v", r.Name, err)
		}
	case <-time.After(time.Minute): // a hang guard
		// SIGQUIT first: the Go runtime prints every goroutine's stack to
		// the replica's log, which the test prints.
		_ = r.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			_ = r.cmd.Process.Kill()
		}
		t.Errorf("replica %s: still running a minute after %s (its goroutines are in its log)", r.Name, sig)
	}
}

func writeReplicaFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
