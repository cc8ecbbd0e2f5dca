#!/usr/bin/env bash
# Runs a local hsmgate dev server: installs SoftHSM2 (and grpcurl, for the
# how-to) if missing, builds
# ./hsmgate and runs `./hsmgate dev` with the given flags (state in
# ./.hsmgate-dev, reused on the next run). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

scripts/deps.sh --dev
go build -o hsmgate ./cmd/hsmgate
exec ./hsmgate dev "$@"
