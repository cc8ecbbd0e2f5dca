package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/hsm"
)

// Env is what a scenario runs against.
type Env struct {
	// Conns are the client connections to hsmgate (Params.Connections of
	// them); worker i uses Conns[i % len(Conns)].
	Conns []*grpc.ClientConn
	// HSM is a module on the server's token for the HSM limit (nil: the HSM
	// limit is not measured, e.g. against a remote server).
	HSM *hsm.Module
	// ACME is the in-process server's ACME side (nil: acme-order cannot run).
	ACME *ACMETarget
	// Prefix makes the names of keys, CAs, roles and HSM objects that a run
	// creates unique.
	Prefix string
}

// Params are a run's knobs (see the command's flags).
type Params struct {
	Scenario    string `json:"scenario"`
	Residency   string `json:"residency,omitempty"`
	KeyType     string `json:"key_type,omitempty"`
	Batch       int    `json:"batch"`
	Sweep       []int  `json:"sweep,omitempty"`
	Payload     int    `json:"payload_bytes"`
	Concurrency int    `json:"concurrency"`
	Connections int    `json:"connections"`
	Duration    Millis `json:"duration_ms"`
	Warmup      Millis `json:"warmup_ms"`
	LimitDur    Millis `json:"limit_duration_ms"`
	Interval    Millis `json:"interval_ms"`
	// Echo is the transport limit's kind: EchoMessages (default) or EchoBytes.
	Echo string `json:"echo"`
	// Paired is the number of rounds in which the scenario and the HSM limit
	// run in turns, PairSlice each, after each batch size's measurement (0: none).
	Paired    int    `json:"paired_rounds,omitempty"`
	PairSlice Millis `json:"pair_slice_ms,omitempty"`
	// PairWith is the limit the paired rounds take turns with: PairHSM (the
	// default) or PairTransport (the gRPC echo, at the scenario's concurrency).
	PairWith string `json:"pair_with,omitempty"`
}

// request is one prepared RPC of a batch size: the request message, a
// response to it (filled in by Run from a first call, for the echo
// server), and the call (an item's error fails it).
type request struct {
	Msg  proto.Message
	Resp proto.Message
	Call func(ctx context.Context, cc grpc.ClientConnInterface) (proto.Message, error)
	// Items is the items one Call does (0: the batch size; "mixed" does
	// several RPCs in one Call).
	Items int
}

// items is the items one Call does at batch size b.
func (r request) items(b int) int {
	if r.Items > 0 {
		return r.Items
	}
	return b
}

// itemOp does one item of the software or HSM limit (safe for concurrent use).
type itemOp func(ctx context.Context) error

// workload is a prepared scenario.
type workload struct {
	// Describe names the operation, e.g. "Encrypt aes256-gcm (wrapped)".
	Describe string
	// Request builds the RPC for a batch size.
	Request func(batch int) (request, error)
	// Software and HSM are the limits' single-item operations and what they
	// are; nil when not applicable.
	Software, HSM     itemOp
	SoftwareOp, HSMOp string
	// NoTransport, when set, says why the transport limit (a gRPC echo of
	// the request) does not apply; it is then not measured.
	NoTransport string
	Close       func()
	// Vault is the same batch as a Vault API call, for `bench compare`
	// (nil: the scenario has no Vault form); VaultSetup, if set, is called
	// first, best effort (it makes the key on a Vault).
	Vault      func(batch int, n VaultNames) (*vaultRequest, error)
	VaultSetup func(n VaultNames) *vaultRequest
}

// scenario prepares a workload: keys on the server, keys in the HSM.
type scenario struct {
	name    string
	summary string
	// keyTypes: the first is the default.
	keyTypes []string
	// residency: whether --residency applies.
	residency bool
	minBatch  int
	maxBatch  int
	prepare   func(ctx context.Context, env *Env, p Params) (*workload, error)
}

var scenarios = map[string]*scenario{}

func register(s *scenario) { scenarios[s.name] = s }

// Scenarios lists the scenario names with a one-line summary each.
func Scenarios() []string {
	var out []string
	for n, s := range scenarios {
		out = append(out, fmt.Sprintf("%-16s %s (key types: %s)", n, s.summary, strings.Join(s.keyTypes, ", ")))
	}
	sort.Strings(out)
	return out
}

// hsmLabel is a label for an HSM object that the run creates.
func (e *Env) hsmLabel(what string) string { return "bench/" + e.Prefix + "/" + what }
