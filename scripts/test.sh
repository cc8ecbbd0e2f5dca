#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing
# (scripts/deps.sh), then go vet, buf lint and the generated-code freshness
# check, every test with the race detector (the README test among them), and
# a fixed number of fuzz inputs per fuzz target. One line per phase, with its time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export PATH="$PATH:$(go env GOPATH)/bin"

phase() {
	local name="$1" t0=$SECONDS
	shift
	echo "test: $name ..."
	"$@"
	echo "test: $name ok ($((SECONDS - t0))s)"
}

phase deps scripts/deps.sh
# The nested modules (proto/, client/: the public client and its stubs, whose
# go.mod names the Go version of the generated code) are not in the root's ./...
modules=(. proto client)
each_module() { for m in "${modules[@]}"; do (cd "$m" && "$@") || return 1; done; }
phase vet each_module go vet ./...
phase proto scripts/check-proto.sh
phase "go test" each_module go test -race -count=1 -timeout 20m ./...
phase fuzz scripts/fuzz.sh
