// Package limits holds the defaults of the request bounds that several
// parts enforce (transit, sshca, the Vault-compatible door) and that the
// config file sets (limits.max_items_per_request, limits.max_item_bytes),
// so that every part has the same default without importing another.
// The server passes the configured values explicitly; these apply to an
// engine built without them.
package limits

const (
	// MaxItemsPerRequest is the most items one batch request (or stream
	// message) may carry: transit data RPCs, SSH certificate signing, the
	// Vault door's batch_input.
	MaxItemsPerRequest = 1000
	// MaxItemBytes bounds one item's payload (plaintext, ciphertext or
	// input, with its AAD and context) in a batch RPC.
	MaxItemBytes = 1 << 20
)
