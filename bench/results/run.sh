#!/bin/sh
# Re-runs the committed results: bench/results/NAME.{txt,json,svg}.
# Usage (from the repository root): go build -o hsmgate ./cmd/hsmgate && bench/results/run.sh [NAME...]
# Each .txt holds the exact command, `uptime` before and after, and the table.
set -eu
HSMGATE=${HSMGATE:-./hsmgate}
OUT=$(dirname "$0")

run() {
	name=$1
	shift
	case " ${ONLY:-} " in "  ") ;; *" $name "*) ;; *) return 0 ;; esac
	{
		echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) ($(nproc) CPUs), $(go version 2>/dev/null | cut -d' ' -f3)"
		echo "# uptime before: $(uptime)"
		echo "# command: hsmgate bench $* --json $OUT/$name.json"
		"$HSMGATE" bench "$@" --json "$OUT/$name.json" 2>"$OUT/.$name.stderr"
		echo "# uptime after: $(uptime)"
	} >"$OUT/$name.txt"
	rm -f "$OUT/.$name.stderr"
	cat "$OUT/$name.txt"
}

ONLY="$*"
# Target: wrapped Encrypt at batch 1000 >= 70% of the transport limit (and the chart over batch sizes).
run encrypt-wrapped-sweep transit-encrypt --sweep 1,10,100,1000 --duration 10s
# Target: wrapped Encrypt, batch 1, concurrency 1: p99 <= 1 ms.
run encrypt-wrapped-b1-c1 transit-encrypt --batch 1 --concurrency 1 --duration 10s
# Targets: hsm-residency Encrypt and ECDSA P-256 Sign at batch 100 >= 80% of the HSM limit.
run encrypt-hsm-b100 transit-encrypt --residency hsm --batch 100 --duration 10s
run sign-hsm-p256-b100 transit-sign --residency hsm --key-type ecdsa-p256 --batch 100 --duration 10s
# The other transit scenarios, for the record.
run decrypt-wrapped-sweep transit-decrypt --sweep 1,10,100,1000 --duration 5s
run hmac-wrapped-b100 transit-hmac --batch 100 --duration 5s
run sign-wrapped-p256-b100 transit-sign --key-type ecdsa-p256 --batch 100 --duration 5s
# Target: ssh-sign >= 80% of the HSM limit at batch >= 16.
run ssh-sign-p256 ssh-sign --key-type ecdsa-p256 --sweep 16,64 --concurrency 8 --duration 10s
run ssh-sign-ed25519 ssh-sign --key-type ed25519 --sweep 16,64 --concurrency 8 --duration 10s
# Target: pki-sign >= 70% of the HSM limit.
run pki-sign-p256 pki-sign --key-type ecdsa-p256 --concurrency 8 --duration 10s
# Target: 5 minutes hold throughput and RSS within 10% (per-minute windows).
run soak-encrypt-wrapped-5m transit-encrypt --batch 100 --duration 5m --interval 1m --warmup 10s
