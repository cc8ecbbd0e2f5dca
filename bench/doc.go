// Package bench drives an hsmgate over gRPC and measures, in the same run,
// the three limits that bound it (docs/architecture.md, "Performance"):
//
//   - the software limit: the same operation in process with Go's crypto,
//     on the same number of goroutines;
//   - the HSM limit: the same PKCS#11 operation in a tight loop on the same
//     token (hsm.AEAD.SealContext, hsm.Signer.SignContext) on 1, the bench's
//     concurrency and 4 times it goroutines, the best of them (SoftHSM's
//     AES-GCM is fastest on one thread, its signatures on many);
//   - the transport limit: a gRPC echo service on a TLS listener of the same
//     kind (ECDSA P-256 certificate, loopback) that takes and returns
//     messages of exactly the scenario's request and response sizes, with
//     the same batch, concurrency and connections.
//
// Every number is items per second (an item is one plaintext, signature,
// MAC or certificate; a request carries Batch items). Run is the whole
// measurement; a Result is written as a table (WriteTable), JSON
// (WriteJSON) and an SVG chart of throughput against batch size with the
// limits as lines (WriteSVG). Nothing here asserts a speed: the tests check
// structure only.
//
// The command is `hsmgate bench SCENARIO` (cmd/hsmgate/bench.go), which can
// also start a server in process on a fresh SoftHSM token; see README.md.
package bench
