package bench

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func init() {
	register(&scenario{name: "mixed", summary: "the soak's mix, each worker in turn: Encrypt of 1 and of 100 plaintexts (wrapped), a PKI Sign, an SSH SignUserKey of 16 keys (SSH CA key type: --key-type); an item is a plaintext, a certificate or an SSH certificate",
		keyTypes: []string{"ed25519", "ecdsa-p256"}, minBatch: 1, maxBatch: 1, prepare: prepareMixed})
}

// mixedParts are the parts of one mixed round: scenario, key type, batch.
var mixedParts = []struct {
	scenario, keyType string
	batch             int
}{
	{"transit-encrypt", "aes256-gcm", 1},
	{"transit-encrypt", "aes256-gcm", 100},
	{"pki-sign", "ecdsa-p256", 1},
	{"ssh-sign", "", 16}, // the SSH CA's key type is the mix's --key-type
}

// prepareMixed prepares the soak's mix. One Call is one round: the parts'
// RPCs one after another (concurrency comes from the workers); its items
// are the parts' items together. There is no limit to compare a mix with:
// the soak reads throughput and RSS over time (--interval).
//
// The SSH CA's key type is p.KeyType. With SoftHSM 2.6.1 (Debian's) an
// Ed25519 CA leaks about 180 bytes of C memory in the HSM library per
// signature (upstream SoftHSMv2 issue 896, fixed by pull request 863 after
// that release): a soak that watches the process's private RSS for leaks
// of its own runs with an ECDSA P-256 CA (bench/README.md).
func prepareMixed(ctx context.Context, env *Env, p Params) (*workload, error) {
	sshCAType := p.KeyType
	if sshCAType == "" {
		sshCAType = "ed25519"
	}
	var parts []request
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	items := 0
	for i, mp := range mixedParts {
		sp := p
		sp.Scenario, sp.KeyType, sp.Residency, sp.Batch = mp.scenario, mp.keyType, "wrapped", mp.batch
		if sp.KeyType == "" {
			sp.KeyType = sshCAType
		}
		if mp.scenario != "transit-encrypt" {
			sp.Residency = ""
		}
		penv := *env
		penv.Prefix = fmt.Sprintf("%s-m%d", env.Prefix, i)
		penv.HSM = nil // no limits for a mix
		w, err := scenarios[mp.scenario].prepare(ctx, &penv, sp)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("bench: mixed: %s: %w", mp.scenario, err)
		}
		if w.Close != nil {
			closers = append(closers, w.Close)
		}
		rq, err := w.Request(mp.batch)
		if err != nil {
			closeAll()
			return nil, err
		}
		parts = append(parts, rq)
		items += mp.batch
	}
	w := &workload{
		Describe:    fmt.Sprintf("mixed rounds of %d items: Encrypt 1 + Encrypt 100 (aes256-gcm, wrapped, %d-byte plaintexts) + PKI Sign 1 (P-256) + SSH SignUserKey 16 (%s CA)", items, p.Payload, sshCAType),
		Close:       closeAll,
		NoTransport: "a round of the mix is several RPCs of different kinds",
	}
	w.Request = func(batch int) (request, error) {
		if batch != 1 {
			return request{}, fmt.Errorf("bench: mixed: one round per call (--batch 1)")
		}
		return request{Items: items, Call: func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error) {
			for _, rq := range parts {
				if _, err := rq.Call(ctx, cc); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}}, nil
	}
	return w, nil
}
