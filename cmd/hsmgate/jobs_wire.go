package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/leader"
	ketcd "github.com/hsmgate/hsmgate/keystore/etcd"
)

// newJobRunner builds the runner of the background jobs (internal/leader):
// on etcd, an election on the store's client under <store prefix>leader/;
// on bbolt, a lease record in the store (one process holds the file). The
// service hooks add their jobs with d.Jobs.Add; startJobs starts it once
// they ran. Its logs and audit lines name replica.id.
func newJobRunner(d *deps, audit leader.Auditor) (*leader.Runner, error) {
	c := d.Config
	if c == nil {
		c = config.Default()
	}
	id, ttl := c.Replica.ID, c.Replica.ElectionTTL // ttl 0: leader.DefaultTTL
	if id == "" {
		id = leader.DefaultReplicaID()
	}
	log := d.Log // names the replica (runServer)
	var el leader.Elector
	var err error
	if es, ok := d.Store.(*ketcd.Store); ok {
		el, err = leader.NewEtcd(leader.EtcdConfig{
			Client: es.Client(), Prefix: c.Store.Etcd.Prefix + "leader/", ReplicaID: id, TTL: ttl,
			RequestTimeout: c.Store.Etcd.RequestTimeout, Logger: log,
		})
	} else {
		el, err = leader.NewStoreLease(leader.StoreLeaseConfig{Store: d.Store, ReplicaID: id, TTL: ttl, Logger: log})
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	r, err := leader.NewRunner(leader.RunnerConfig{
		Elector: el, Logger: d.Log, Registerer: d.Server.Metrics(),
		Audit: audit, // the server's audit log (nil in some tests)
	})
	if err != nil {
		_ = el.Close()
		return nil, err
	}
	d.OnClose(r.Close) // if the start fails before startJobs
	return r, nil
}

// startJobs starts the runner after every hook added its jobs; on close it
// stops first (closers run in reverse), before the engines its jobs use.
func startJobs(ctx context.Context, d *deps) {
	d.OnClose(d.Jobs.Close)
	d.Jobs.Start(ctx)
}
