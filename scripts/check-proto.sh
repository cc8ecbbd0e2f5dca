#!/usr/bin/env bash
# Fails when the committed generated code under proto/ is not what
# `buf generate` makes from the .proto files, or when buf lint complains.
# The code is generated into a temporary directory and compared, so the check
# also works on a work tree with uncommitted changes; in CI (CI=true) the
# proto/ tree must also be exactly what git tracks.
set -euo pipefail
cd "$(dirname "$0")/.."
buf="$(go env GOPATH)/bin/buf"

"$buf" lint

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$buf" generate --output "$tmp"

stale=0
while IFS= read -r f; do
	rel="${f#"$tmp"/}"
	if ! cmp -s "$f" "$rel"; then
		echo "check-proto: $rel is stale or missing" >&2
		stale=1
	fi
done < <(find "$tmp/proto" -name '*.pb.go' | sort)
while IFS= read -r f; do
	if [[ ! -e "$tmp/$f" ]]; then
		echo "check-proto: $f has no .proto source any more" >&2
		stale=1
	fi
done < <(find proto -name '*.pb.go' | sort)

if [[ "${CI:-}" == "true" ]]; then
	if [[ -n "$(git status --porcelain -- proto)" ]]; then
		git status --porcelain -- proto >&2
		echo "check-proto: proto/ differs from what git tracks" >&2
		stale=1
	fi
fi

if ((stale)); then
	echo "check-proto: run 'buf generate' (\$(go env GOPATH)/bin/buf) and commit the result" >&2
	exit 1
fi
echo "check-proto: generated code is fresh" >&2
