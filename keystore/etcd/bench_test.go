package etcd_test

import (
	"testing"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/etcd"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
	"github.com/hsmgate/hsmgate/keystore/storetest"
)

// BenchmarkStore measures the store against one in-process etcd member
// (loopback gRPC, no fsync): a floor for the client path, not a figure for a
// real cluster.
func BenchmarkStore(b *testing.B) {
	c := etcdtest.Start(b, 1)
	storetest.Bench(b, func(b *testing.B) keystore.Store {
		return newStore(b, etcd.Config{Endpoints: c.Endpoints, Prefix: "/bench/" + b.Name() + "/"})
	})
}
