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
# Each target is measured in three separate runs (-r1..-r3): on this shared 2-core machine a
# single 3-5 s limit moves by 10-25% from run to run, so a target counts as met when the median
# of the three ratios meets it. Limits run 5 s each here (--limit-duration).
L="--limit-duration 5s"
for r in 1 2 3; do
	# Target: wrapped Encrypt at batch 1000 >= 70% of the transport limit.
	run encrypt-wrapped-b1000-r$r transit-encrypt --batch 1000 --duration 10s $L
	# Targets: hsm-residency Encrypt and ECDSA P-256 Sign at batch 100 >= 80% of the HSM limit.
	run encrypt-hsm-b100-r$r transit-encrypt --residency hsm --batch 100 --duration 10s $L
	run sign-hsm-p256-b100-r$r transit-sign --residency hsm --key-type ecdsa-p256 --batch 100 --duration 10s $L
	# Target: ssh-sign >= 80% of the HSM limit at batch >= 16; also measured paired with the HSM
	# limit (6 rounds of 1 s each in turns, after each batch size).
	run ssh-sign-p256-r$r ssh-sign --key-type ecdsa-p256 --sweep 16,64,256 --concurrency 16 --duration 10s $L --paired 6
	run ssh-sign-ed25519-r$r ssh-sign --key-type ed25519 --sweep 16,64,256 --concurrency 16 --duration 10s $L --paired 6
done
# Target: wrapped Encrypt, batch 1, concurrency 1: p99 <= 1 ms.
run encrypt-wrapped-b1-c1 transit-encrypt --batch 1 --concurrency 1 --duration 10s $L
# The chart over batch sizes, and the other transit scenarios, for the record.
run encrypt-wrapped-sweep transit-encrypt --sweep 1,10,100,1000 --duration 10s $L
run decrypt-wrapped-sweep transit-decrypt --sweep 1,10,100,1000 --duration 5s $L
run hmac-wrapped-b100 transit-hmac --batch 100 --duration 5s $L
run hmac-hsm-b100 transit-hmac --residency hsm --batch 100 --duration 10s $L --paired 6
run sign-wrapped-p256-b100 transit-sign --key-type ecdsa-p256 --batch 100 --duration 5s $L
# Target: pki-sign >= 70% of the HSM limit, per issuer key type.
for kt in ecdsa-p256 ecdsa-p384 ed25519 rsa-3072 rsa-4096; do
	run pki-sign-$kt pki-sign --key-type $kt --concurrency 8 --duration 10s $L
done
# Issue 19 (session 4). Target: single-item unary calls >= 70% of the same run's echo (transit
# encrypt and sign), p99 <= 1 ms at concurrency 1 for wrapped encrypt; the transport line also
# shows the echo's CPU per item, to set beside the scenario's CPU µs/item (both in process).
for r in 1 2 3; do
	# (session 7: also paired with the echo in turns, --pair-with transport)
	run encrypt-wrapped-b1-c4-r$r transit-encrypt --batch 1 --concurrency 4 --duration 10s $L --paired 6 --pair-with transport
	run encrypt-wrapped-b1-c1-r$r transit-encrypt --batch 1 --concurrency 1 --duration 10s $L
	run sign-wrapped-p256-b1-c4-r$r transit-sign --key-type ecdsa-p256 --batch 1 --concurrency 4 --duration 10s $L --paired 6 --pair-with transport
	# Target: ssh-sign P-256 >= 80% of the HSM limit at batch 64 (Ed25519 keeps its ratio).
	run ssh-sign-p256-b64-r$r ssh-sign --key-type ecdsa-p256 --batch 64 --concurrency 16 --duration 10s $L --paired 6
	run ssh-sign-ed25519-b64-r$r ssh-sign --key-type ed25519 --batch 64 --concurrency 16 --duration 10s $L --paired 6
	# Target: pki-sign <= 0.45 ms of server CPU per P-256 certificate (CPU µs/item is client + server
	# in process; with --target env --server-pid it is the server's alone); and pki-issue.
	for kt in ecdsa-p256 ed25519 rsa-3072; do
		run pki-sign-$kt-r$r pki-sign --key-type $kt --concurrency 8 --duration 10s $L
	done
	run pki-issue-ecdsa-p256-r$r pki-issue --key-type ecdsa-p256 --concurrency 8 --duration 10s $L
	# OpenBao's figures in issue 19 are the best of 8 and 32 callers: the same at 32.
	run pki-sign-ecdsa-p256-c32-r$r pki-sign --key-type ecdsa-p256 --concurrency 32 --duration 10s $L
	run pki-issue-ecdsa-p256-c32-r$r pki-issue --key-type ecdsa-p256 --concurrency 32 --duration 10s $L
done
# Target: 5 minutes of the mixed load (transit single and batch, PKI sign, SSH sign together) hold
# throughput and RSS within 10% (per-minute windows); the notes give the audit log's bytes a request.
# The SSH part signs with an ECDSA P-256 CA: Debian's SoftHSM 2.6.1 leaks ~180 bytes of C memory per
# Ed25519 signature (upstream SoftHSMv2 issue 896), which would hide any leak of hsmgate's own in the
# private RSS. The Ed25519 leak itself: ssh-sign-{ed25519,p256}-leak below, side by side.
for r in 1 2 3; do
	run soak-mixed-5m-r$r mixed --key-type ecdsa-p256 --duration 5m --interval 1m --warmup 10s --concurrency 8
done
run ssh-sign-ed25519-leak ssh-sign --key-type ed25519 --batch 16 --concurrency 8 --duration 60s --interval 15s --limit-duration 1s
run ssh-sign-p256-leak ssh-sign --key-type ecdsa-p256 --batch 16 --concurrency 8 --duration 60s --interval 15s --limit-duration 1s
# Target: 5 minutes hold throughput and RSS within 10% (per-minute windows).
run soak-encrypt-wrapped-5m-r1 transit-encrypt --batch 100 --duration 5m --interval 1m --warmup 10s $L
