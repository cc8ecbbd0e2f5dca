#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing
# (scripts/deps.sh), then go vet, buf lint and the generated-code freshness
# check, then every test with the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export PATH="$PATH:$(go env GOPATH)/bin"

scripts/deps.sh
go vet ./...
scripts/check-proto.sh
go test -race -count=1 -timeout 20m ./...
scripts/fuzz.sh
