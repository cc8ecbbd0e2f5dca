// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3/etcdmain),
// at the version hsmgate's tests embed, for scripts/replicas.sh on machines
// without an etcd binary. Flags are etcd's.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
