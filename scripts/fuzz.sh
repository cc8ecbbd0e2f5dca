#!/usr/bin/env bash
# Short fuzzing runs of every parser of untrusted input (the seed corpora in
# testdata/fuzz also run as plain tests in `go test ./...`). FUZZTIME
# overrides the time per target (default 4s); run longer by hand, e.g.
#   FUZZTIME=5m scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
t="${FUZZTIME:-4s}"
targets=(
  "./transit FuzzParseEnvelope"
  "./transit FuzzParseText"
  "./internal/kwp FuzzUnwrap"
  "./pki FuzzParseCSR"
  "./pki FuzzOCSPRequest"
  "./pki FuzzDNSNameChecks"
  "./sshca/krl FuzzParse"
  "./sshca FuzzPattern"
  "./internal/auth FuzzParseToken"
  "./internal/auth FuzzBearerValue"
  "./internal/auth FuzzParsePolicyDocument"
  "./internal/auth FuzzMatch"
  "./internal/audit FuzzVerify"
  "./internal/config FuzzParse"
  "./keystore/bbolt FuzzEntryCodec"
)
for entry in "${targets[@]}"; do
  read -r pkg name <<<"$entry"
  echo "fuzz: $pkg $name for $t"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg"
done
