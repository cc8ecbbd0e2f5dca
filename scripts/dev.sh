#!/usr/bin/env bash
# Runs a local hsmgate dev server: installs what is missing (SoftHSM2, curl,
# openssl, ssh-keygen, grpcurl), builds ./hsmgate and runs `./hsmgate dev`
# with the given flags (state in ./.hsmgate-dev, reused on the next run).
# One line per step on stderr. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

step() { printf 'dev.sh: %s\n' "$*" >&2; }

if ! command -v go >/dev/null; then
	echo "dev.sh: Go 1.26 is needed (not found on PATH nor in /usr/local/go/bin): see README.md, Prerequisites" >&2
	exit 1
fi
step "checking dependencies (installs SoftHSM2, curl, openssl, ssh-keygen and grpcurl if missing)"
scripts/deps.sh --dev
step "building ./hsmgate (the first build compiles every dependency: a few minutes)"
go build -o hsmgate ./cmd/hsmgate
step "starting ./hsmgate dev $* (Ctrl-C stops it; in another shell: eval \"\$(./hsmgate dev --print-env)\")"
exec ./hsmgate dev "$@"
