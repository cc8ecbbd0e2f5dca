// Package etcdtest starts real etcd servers inside the test process, with
// go.etcd.io/etcd/server/v3/embed, for any package's tests:
//
//	c := etcdtest.Start(t, 1) // or 3 for a cluster
//	store, err := etcd.New(ctx, etcd.Config{Endpoints: c.Endpoints, Prefix: "/test/"})
//
// Members listen on free loopback ports, keep their data under t.TempDir(),
// log nothing, skip fsync and use short election timeouts; they are closed
// in t.Cleanup. Only tests should import this package.
package etcdtest

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// ReadyTimeout bounds the wait for a new cluster to elect a leader and serve.
var ReadyTimeout = 60 * time.Second

// Cluster is a running in-process etcd cluster.
type Cluster struct {
	// Endpoints are the client URLs of every member, in member order.
	Endpoints []string
	// Members are the servers; use Stop to stop one.
	Members []*embed.Etcd
	// ClientTLS, set when started with Options.TLS, trusts the members'
	// certificates and carries a client certificate they accept.
	ClientTLS *tls.Config

	t       testing.TB
	mu      sync.Mutex
	stopped []bool
}

// Options change how StartWith starts a cluster.
type Options struct {
	// TLS serves clients over https and requires client certificates;
	// Cluster.ClientTLS is the configuration a client needs.
	TLS bool
}

// Start starts an n-member cluster and waits until every member is ready.
// It retries a few times if a picked port was taken meanwhile.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: %d members", n)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := start(t, n, opts)
		if err == nil {
			return c
		}
		lastErr = err
	}
	t.Fatalf("etcdtest: start %d members: %v", n, lastErr)
	return nil
}

func start(t testing.TB, n int, opts Options) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	var (
		serverTLS transport.TLSInfo
		clientTLS *tls.Config
	)
	if opts.TLS {
		scheme = "https"
		serverTLS, clientTLS = testPKI(t, t.TempDir())
	}
	token := fmt.Sprintf("etcdtest-%d", time.Now().UnixNano())
	var initial []string
	cfgs := make([]*embed.Config, n)
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = t.TempDir()
		cu := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.ListenMetricsUrls = nil
		cfg.ClientTLSInfo = serverTLS
		cfg.InitialClusterToken = token
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.TickMs = 50
		cfg.ElectionMs = 500
		cfg.UnsafeNoFsync = true
		cfg.BcryptCost = 4 // bcrypt.MinCost: fast password checks for auth tests
		cfg.EnableGRPCGateway = false
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.LogLevel = "error"
		initial = append(initial, fmt.Sprintf("%s=%s", cfg.Name, pu.String()))
		cfgs[i] = cfg
	}
	c := &Cluster{t: t, stopped: make([]bool, n), ClientTLS: clientTLS}
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.closeAll()
			return nil, fmt.Errorf("member %s: %w", cfg.Name, err)
		}
		c.Members = append(c.Members, e)
		c.Endpoints = append(c.Endpoints, cfg.AdvertiseClientUrls[0].String())
	}
	c.stopped = make([]bool, len(c.Members))
	timer := time.NewTimer(ReadyTimeout)
	defer timer.Stop()
	for i, e := range c.Members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			c.closeAll()
			return nil, fmt.Errorf("member %d: %w", i, err)
		case <-timer.C:
			c.closeAll()
			t.Fatalf("etcdtest: member %d not ready within %s", i, ReadyTimeout)
		}
	}
	t.Cleanup(c.closeAll)
	return c, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// closeAll stops the followers concurrently, then the leader.
func (c *Cluster) closeAll() {
	lead := c.Leader()
	var wg sync.WaitGroup
	for i := range c.Members {
		if i != lead {
			wg.Go(func() { c.Stop(i) })
		}
	}
	wg.Wait()
	if lead >= 0 {
		c.Stop(lead)
	}
}

// Stop closes member i (once; later calls do nothing).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	if c.stopped[i] {
		c.mu.Unlock()
		return
	}
	c.stopped[i] = true
	c.mu.Unlock()
	start := time.Now()
	c.Members[i].Close()
	c.t.Logf("etcdtest: stopped member m%d in %s", i, time.Since(start).Round(time.Millisecond))
}

// Leader returns the index of the member that a running member reports as
// leader, or -1 if none does.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.Members {
		if c.stopped[i] {
			continue
		}
		lead := e.Server.Leader()
		for j, m := range c.Members {
			if !c.stopped[j] && m.Server.MemberID() == lead {
				return j
			}
		}
	}
	return -1
}

// Follower returns the index of a running member that is not the leader.
// It fails the test if there is no leader or no running follower.
func (c *Cluster) Follower() int {
	c.t.Helper()
	lead := c.Leader()
	if lead < 0 {
		c.t.Fatalf("etcdtest: no leader")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.Members {
		if !c.stopped[i] && i != lead {
			return i
		}
	}
	c.t.Fatalf("etcdtest: no running follower")
	return -1
}

// StopFollower stops a running member that is not the leader and returns its
// index. It fails the test if there is no leader or no running follower.
func (c *Cluster) StopFollower() int {
	c.t.Helper()
	i := c.Follower()
	c.Stop(i)
	return i
}
