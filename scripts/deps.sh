#!/usr/bin/env bash
# Installs what hsmgate's build and tests need and is missing: Debian packages
# (SoftHSM2, OpenSSL, OpenSSH, a C compiler for cgo), buf and grpcurl (pinned,
# with `go install`). Safe to run again: it installs only what is missing.
#
#   scripts/deps.sh            # everything the test suite needs
#   scripts/deps.sh --dev      # only what `hsmgate dev` and the README's examples need
#
# It says what it installs, one line each, on stderr, and waits (up to 5
# minutes) for the apt lock when another apt holds it.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

# Debian packages the tests use. Add yours here (one per line).
TEST_PACKAGES=(
	softhsm2         # hsm/ tests and hsmgate dev
	openssl          # certificate checks
	openssh-client   # ssh-keygen for sshca/ KRL checks
	openssh-server   # sshd for sshca/ end-to-end checks
	opensc           # pkcs11-tool: hsm/ interop tests (keys made and adopted both ways)
	prometheus       # promtool: check metrics of a live /metrics, check/test the shipped alert rules
	certbot          # acme/: certbot against our ACME server (http-01, EAB, revoke)
	p11-kit p11-kit-modules  # `p11-kit server` and p11-kit-client.so: network-HSM path test (cmd/hsmgate p11kit_test.go, scripts/replicas.sh)
	gcc libc6-dev    # cgo (miekg/pkcs11)
	ca-certificates git curl
)
# hsmgate dev, and the README's examples (curl, openssl, ssh-keygen).
DEV_PACKAGES=(softhsm2 gcc libc6-dev curl openssl openssh-client ca-certificates)

BUF_VERSION=v1.75.0
GRPCURL_VERSION=v1.9.4
SOPS_VERSION=v3.13.3   # the Vault door's SOPS end-to-end test
HELM_VERSION=v3.22.0   # helm lint / helm template of deploy/helm in deploy's tests

packages=("${TEST_PACKAGES[@]}")
want_buf=1
if [[ "${1:-}" == "--dev" ]]; then
	packages=("${DEV_PACKAGES[@]}")
	want_buf=0
fi

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]} (apt)" >&2
	sudo=""
	if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
	# Wait for another apt (unattended upgrades, a second shell) instead of failing.
	apt=($sudo apt-get -o DPkg::Lock::Timeout=300 -qq)
	"${apt[@]}" update >&2
	DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${missing[@]}" >/dev/null
fi

gobin="$(go env GOPATH)/bin"
if ((want_buf)) && ! "$gobin/buf" --version 2>/dev/null | grep -qx "${BUF_VERSION#v}"; then
	echo "deps: installing buf $BUF_VERSION into $gobin (go install: compiles it, a few minutes the first time)" >&2
	go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
fi
if ((want_buf)) && ! "$gobin/sops" --version --disable-version-check 2>/dev/null | grep -q "${SOPS_VERSION#v}"; then
	echo "deps: installing sops $SOPS_VERSION into $gobin (a few minutes the first time)" >&2
	go install "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION"
fi
if ((want_buf)) && ! "$gobin/helm" version --short 2>/dev/null | grep -q "^v3\.22"; then
	echo "deps: installing helm $HELM_VERSION into $gobin (go install: compiles it, ten minutes the first time)" >&2
	go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
if [[ ! -x "$gobin/grpcurl" ]]; then
	echo "deps: installing grpcurl $GRPCURL_VERSION into $gobin (go install: compiles it, a few minutes the first time)" >&2
	go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi
