package config

import (
	"os"
	"strconv"
	"time"
)

// DefaultElectionTTL is replica.election_ttl when unset.
const DefaultElectionTTL = 10 * time.Second

// ReplicaFile is the `replica` section: who this process is among the
// replicas sharing a store, and how background jobs are handed over.
//
//	replica:
//	  id: hsmgate-0        # default: <hostname>-<pid>
//	  id_env: POD_NAME     # or: take the id from this environment variable
//	  election_ttl: 10s    # lease TTL: a dead leader is replaced within it
//
// The id names the replica in logs, audit lines of background jobs and
// the hsmgate_leader metric; letters, digits, '-', '_' and '.', at most 128.
type ReplicaFile struct {
	ID          string        `yaml:"id"`
	IDEnv       string        `yaml:"id_env"`
	ElectionTTL time.Duration `yaml:"election_ttl"`
}

// Replica is the runtime form of ReplicaFile.
type Replica struct {
	ID          string
	ElectionTTL time.Duration
}

func (f ReplicaFile) toReplica(getenv func(string) string) Replica {
	id := f.ID
	if id == "" && f.IDEnv != "" {
		id = getenv(f.IDEnv)
	}
	if id == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "hsmgate"
		}
		id = h + "-" + strconv.Itoa(os.Getpid())
	}
	return Replica{ID: id, ElectionTTL: orDur(f.ElectionTTL, DefaultElectionTTL)}
}

func (c *Config) validateReplica(bad func(string, string, ...any)) {
	id := c.Replica.ID
	if id == "" || len(id) > 128 {
		bad("replica.id", "%q: want 1 to 128 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			bad("replica.id", "%q: only letters, digits, '-', '_' and '.'", id)
			break
		}
	}
	if t := c.Replica.ElectionTTL; t < time.Second || t > 5*time.Minute {
		bad("replica.election_ttl", "%s: want 1s to 5m", t)
	}
}
