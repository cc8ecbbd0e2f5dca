#!/usr/bin/env bash
# Fuzzes every Fuzz* target of the module (found in the *_test.go files, so a
# new target is fuzzed without editing this script). The seed corpora under
# testdata/fuzz also run as plain tests in `go test ./...`.
#
#   scripts/fuzz.sh               # CI: a fixed number of inputs per target (FUZZ_COUNT, default 5000)
#   scripts/fuzz.sh --long 30m    # by hand: each target for a time (not part of CI)
#   scripts/fuzz.sh --long 30m FuzzParseCSR   # only the targets named
#
# Every target runs even when one fails; the failures are listed at the end and
# the script exits 1. A failing input is kept by `go test` under the package's
# testdata/fuzz/<Target>/: commit it, and it stays a regression case of
# `go test ./...`.
#
# CI uses a count (-fuzztime Nx), never a time: Go 1.26.8's fuzz coordinator can
# fail a time-limited run with "context deadline exceeded" and no crasher
# (golang/go#75804, fixed after go1.26.8).
set -uo pipefail
cd "$(dirname "$0")/.."

fuzztime="${FUZZ_COUNT:-5000}x"
if [[ "${1:-}" == "--long" ]]; then
	[[ -n "${2:-}" ]] || { echo "usage: scripts/fuzz.sh --long DURATION [Target...]" >&2; exit 2; }
	fuzztime="$2"
	shift 2
fi
only=("$@")

# "pkgdir Target" for every func FuzzX(f *testing.F) in the module.
mapfile -t targets < <(
	git grep -e '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' -- '*_test.go' |
		sed -n 's|^\(.*\)/[^/]*_test\.go:func \(Fuzz[A-Za-z0-9_]*\)(.*|./\1 \2|p' | sort -u
)

failed=()
start=$SECONDS
for entry in "${targets[@]}"; do
	read -r pkg name <<<"$entry"
	if ((${#only[@]})) && [[ ! " ${only[*]} " == *" $name "* ]]; then
		continue
	fi
	t0=$SECONDS
	log="$(mktemp)"
	# A package of a nested module (client/...) is fuzzed from that module.
	dir="${pkg#./}" mod="${pkg#./}"
	until [[ -e "$mod/go.mod" || "$mod" == . ]]; do [[ "$mod" == */* ]] && mod="${mod%/*}" || mod=.; done
	rel="${dir#"$mod"}"
	if (cd "$mod" && go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./${rel#/}") >"$log" 2>&1; then
		echo "fuzz: ok   $pkg $name ($fuzztime, $((SECONDS - t0))s)"
	else
		echo "fuzz: FAIL $pkg $name ($fuzztime, $((SECONDS - t0))s)"
		sed 's/^/    /' "$log"
		failed+=("$pkg $name")
	fi
	rm -f "$log"
done

echo "fuzz: ${#targets[@]} targets in $((SECONDS - start))s"
if ((${#failed[@]})); then
	echo "fuzz: ${#failed[@]} failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	new="$(git status --porcelain --untracked-files=all -- '*/testdata/fuzz/*' 2>/dev/null)"
	if [[ -n "$new" ]]; then
		echo "fuzz: failing inputs kept (commit them as regression cases):" >&2
		echo "$new" >&2
	fi
	exit 1
fi
