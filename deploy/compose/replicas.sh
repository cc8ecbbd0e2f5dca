#!/usr/bin/env bash
# Three hsmgate replicas on a three-member etcd cluster and one shared HSM
# token, all on 127.0.0.1, without Kubernetes or containers: a way to try the
# multi-replica deployment on one machine. See deploy/README.md, "Trying
# replicas on one machine (deploy/compose)".
#
#   deploy/compose/replicas.sh up     [--state DIR] [--hsm softhsm|p11-kit] [--port-base N] [--base-url URL]
#   deploy/compose/replicas.sh render [--state DIR] [--hsm softhsm|p11-kit] [--port-base N] [--base-url URL]
#
# up      makes what is missing under the state directory (default
#         ./.hsmgate-replicas): a SoftHSM2 token "hsmgate" with random PINs,
#         a CA and a server certificate for 127.0.0.1/localhost (openssl), an
#         audit HMAC key; starts etcd m0..m2, the HSM path, runs `hsmgate init`
#         and `hsmgate token root` once, starts replicas r0..r2 (each with its
#         own config file, r<i>/hsmgate.yaml), waits until each answers
#         /readyz, writes the client variables to STATE/env and prints them;
#         then runs until Ctrl-C or SIGTERM, which stops everything it started.
# render  only writes the config files (and prints their paths).
#
# --hsm softhsm (default): every replica loads libsofthsm2.so on the same
#         token directory (SOFTHSM2_CONF): one token shared by several
#         processes, as a network HSM partition is.
# --hsm p11-kit: `p11-kit server` exports the token on a unix socket and
#         every replica loads p11-kit-client.so (P11_KIT_SERVER_ADDRESS), the
#         way a network HSM's client library works. p11-kit 0.24.1 (Debian
#         bookworm) does not forward AES key wrapping (KWP) or AES-GCM, so with
#         it PKI, SSH CA and hsm-resident signing keys work, but wrapped
#         transit keys (the default) cannot be created.
#
# --base-url URL: pki.base_url of every replica (default http://ca.hsmgate.internal):
#         the name of the one plain-HTTP front (a load balancer over the
#         replicas) that every certificate's AIA, CRL and OCSP URLs name, never
#         one replica's address or localhost. Nothing serves the default name
#         in this one-machine example.
#
# Binaries: $HSMGATE_CMD (default: `hsmgate` from PATH, else built with go
# build into STATE/bin) and $ETCD_CMD (default: `etcd` from PATH, else etcd
# v3.7.3 built from deploy/compose/etcd into STATE/bin). Both may be command
# prefixes ("env X=1 /path/bin"). Ports: 15 consecutive from --port-base
# (default: a free run picked at random): etcd client/peer, then per replica
# gRPC, HTTPS and metrics.
set -euo pipefail

cmd="${1:-}"
shift || true
state=".hsmgate-replicas"
hsm_mode="softhsm"
port_base=""
base_url="http://ca.hsmgate.internal"
while (($#)); do
	case "$1" in
	--state) state="$2"; shift 2 ;;
	--hsm) hsm_mode="$2"; shift 2 ;;
	--port-base) port_base="$2"; shift 2 ;;
	--base-url) base_url="$2"; shift 2 ;;
	*) echo "replicas.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
case "$cmd" in up | render) ;; *)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
case "$hsm_mode" in softhsm | p11-kit) ;; *) echo "replicas.sh: --hsm softhsm or p11-kit" >&2; exit 2 ;; esac

repo="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$state"
chmod 700 "$state"
state="$(cd "$state" && pwd)"
N=3

say() { echo "replicas: $*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_ports() {
	if [[ -n "$port_base" ]]; then return; fi
	if [[ -f "$state/port-base" ]]; then port_base="$(cat "$state/port-base")"; fi
	for _ in $(seq 50); do
		local b="${port_base:-$((20000 + RANDOM % 30000))}" ok=1
		for i in $(seq 0 14); do port_free $((b + i)) || { ok=0; break; }; done
		if ((ok)); then port_base="$b"; echo "$b" >"$state/port-base"; return; fi
		port_base=""
	done
	echo "replicas.sh: no run of 15 free ports found; give --port-base" >&2
	exit 1
}
etcd_client_port() { echo $((port_base + 2 * $1)); }
etcd_peer_port() { echo $((port_base + 2 * $1 + 1)); }
grpc_port() { echo $((port_base + 6 + 3 * $1)); }
http_port() { echo $((port_base + 7 + 3 * $1)); }
metrics_port() { echo $((port_base + 8 + 3 * $1)); }

softhsm_lib() {
	for p in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
		if [[ -f "$p" ]]; then echo "$p"; return; fi
	done
	echo "replicas.sh: libsofthsm2.so not found (apt-get install softhsm2)" >&2
	exit 1
}
p11kit_client() {
	for p in /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so /usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so /usr/lib/pkcs11/p11-kit-client.so; do
		if [[ -f "$p" ]]; then echo "$p"; return; fi
	done
	echo "replicas.sh: p11-kit-client.so not found (apt-get install p11-kit p11-kit-modules)" >&2
	exit 1
}

# render writes r<i>/hsmgate.yaml for every replica.
render() {
	local lib endpoints="" i
	if [[ "$hsm_mode" == p11-kit ]]; then lib="$(p11kit_client)"; else lib="$(softhsm_lib)"; fi
	for i in $(seq 0 $((N - 1))); do
		endpoints+="      - http://127.0.0.1:$(etcd_client_port "$i")"$'\n'
	done
	for i in $(seq 0 $((N - 1))); do
		mkdir -p "$state/r$i"
		cat >"$state/r$i/hsmgate.yaml" <<EOF
# hsmgate replica r$i of deploy/compose/replicas.sh (--hsm $hsm_mode). The
# replicas' files differ only in their listen ports and audit file.
listen:
  grpc: 127.0.0.1:$(grpc_port "$i")
  http: 127.0.0.1:$(http_port "$i")
  metrics: 127.0.0.1:$(metrics_port "$i")
tls:
  cert: $state/tls/server.pem
  key: $state/tls/server-key.pem
hsm:
  library: $lib
  token_label: hsmgate                # the one token every replica shares
  pin_file: $state/hsm-pin
  kek_label: hsmgate-kek
  max_sessions: 4
store:
  backend: etcd
  etcd:
    endpoints:
$endpoints    prefix: /hsmgate/
    request_timeout: 2s
shutdown:
  drain: 0s
  timeout: 5s
audit:
  path: $state/r$i/audit.log          # one chain per replica
  hmac_key_file: $state/audit-hmac-key # the same key on every replica
pki:
  base_url: $base_url   # one front for every replica (--base-url), never one replica's address
EOF
		echo "$state/r$i/hsmgate.yaml"
	done
}

pick_ports
if [[ "$cmd" == render ]]; then
	render
	exit 0
fi

# --- up ---
pids=()
stop_all() {
	trap - EXIT INT TERM
	say "stopping"
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 0' INT TERM

if [[ -z "${HSMGATE_CMD:-}" ]]; then
	if command -v hsmgate >/dev/null; then HSMGATE_CMD=hsmgate; else
		say "building hsmgate into $state/bin"
		(cd "$repo" && CGO_ENABLED=1 go build -o "$state/bin/hsmgate" ./cmd/hsmgate)
		HSMGATE_CMD="$state/bin/hsmgate"
	fi
fi
if [[ -z "${ETCD_CMD:-}" ]]; then
	if command -v etcd >/dev/null; then ETCD_CMD=etcd; else
		say "building etcd into $state/bin"
		(cd "$repo" && go build -o "$state/bin/etcd" ./deploy/compose/etcd)
		ETCD_CMD="$state/bin/etcd"
	fi
fi
read -r -a hsmgate_cmd <<<"$HSMGATE_CMD"
read -r -a etcd_cmd <<<"$ETCD_CMD"

# Secrets and certificates (kept across runs).
umask 077
if [[ ! -f "$state/hsm-pin" ]]; then
	openssl rand -hex 12 >"$state/so-pin"
	openssl rand -hex 12 >"$state/hsm-pin"
fi
[[ -f "$state/audit-hmac-key" ]] || openssl rand -out "$state/audit-hmac-key" 32
export SOFTHSM2_CONF="$state/softhsm2.conf"
if [[ ! -d "$state/softhsm" ]]; then
	mkdir -p "$state/softhsm"
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$state/softhsm" >"$SOFTHSM2_CONF"
	softhsm2-util --init-token --free --label hsmgate --so-pin "$(cat "$state/so-pin")" --pin "$(cat "$state/hsm-pin")" >/dev/null
	say "SoftHSM token \"hsmgate\" made in $state/softhsm"
fi
if [[ ! -f "$state/tls/server.pem" ]]; then
	mkdir -p "$state/tls"
	(
		cd "$state/tls"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca.pem \
			-days 30 -subj "/CN=hsmgate replicas CA" 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server-key.pem -out server.csr \
			-subj "/CN=localhost" 2>/dev/null
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
			-extfile ext.cnf -out server.pem 2>/dev/null
	)
fi
umask 022
render >/dev/null

# etcd: three members.
cluster=""
for i in $(seq 0 $((N - 1))); do cluster+="${cluster:+,}m$i=http://127.0.0.1:$(etcd_peer_port "$i")"; done
for i in $(seq 0 $((N - 1))); do
	cu="http://127.0.0.1:$(etcd_client_port "$i")"
	pu="http://127.0.0.1:$(etcd_peer_port "$i")"
	cs=new
	[[ -d "$state/etcd/m$i/member" ]] && cs=existing
	mkdir -p "$state/etcd/m$i"
	"${etcd_cmd[@]}" --name "m$i" --data-dir "$state/etcd/m$i" \
		--listen-client-urls "$cu" --advertise-client-urls "$cu" \
		--listen-peer-urls "$pu" --initial-advertise-peer-urls "$pu" \
		--initial-cluster "$cluster" --initial-cluster-state "$cs" --initial-cluster-token hsmgate-replicas \
		--auto-compaction-mode periodic --auto-compaction-retention 1h \
		--log-level error >"$state/etcd/m$i.log" 2>&1 &
	pids+=($!)
done
say "etcd m0..m2 on ports $(etcd_client_port 0), $(etcd_client_port 1), $(etcd_client_port 2) (logs $state/etcd/m*.log)"

# The HSM path.
if [[ "$hsm_mode" == p11-kit ]]; then
	rm -f "$state/p11kit.sock"
	p11-kit server -f -n "$state/p11kit.sock" --provider "$(softhsm_lib)" "pkcs11:token=hsmgate" >"$state/p11kit.out" 2>"$state/p11kit.log" &
	pids+=($!)
	for _ in $(seq 100); do [[ -S "$state/p11kit.sock" ]] && break; sleep 0.1; done
	[[ -S "$state/p11kit.sock" ]] || { say "p11-kit server did not start:"; cat "$state/p11kit.log" >&2; exit 1; }
	export P11_KIT_SERVER_ADDRESS="unix:path=$state/p11kit.sock"
	say "p11-kit server exports token \"hsmgate\" at $P11_KIT_SERVER_ADDRESS"
fi

# Once: the KEK and audit key in the token, a root token in etcd (hsmgate
# init is idempotent; it waits for etcd only through token root, which retries).
"${hsmgate_cmd[@]}" init --config "$state/r0/hsmgate.yaml" >"$state/init.log" 2>&1 || { cat "$state/init.log" >&2; exit 1; }
if [[ ! -f "$state/root-token" ]]; then
	for try in $(seq 30); do
		if out="$("${hsmgate_cmd[@]}" token root --config "$state/r0/hsmgate.yaml" 2>>"$state/init.log")"; then
			(umask 077; printf '%s\n' "$out" | sed -n 's/^export HSMGATE_TOKEN=//p' >"$state/root-token")
			break
		fi
		((try < 30)) || { cat "$state/init.log" >&2; exit 1; }
		sleep 1
	done
fi

# One replica at a time, each ready before the next: SoftHSM keeps its token
# in files, and processes logging in to one token at the same moment can
# fail with CKR_GENERAL_ERROR (seen in CI). A replica that exits before it
# is ready is started once more (its log keeps both attempts).
start_replica() {
	"${hsmgate_cmd[@]}" server --config "$state/r$1/hsmgate.yaml" >>"$state/r$1/server.log" 2>&1 &
	rpid=$!
	pids+=("$rpid")
}
for i in $(seq 0 $((N - 1))); do
	start_replica "$i"
	again=1
	for try in $(seq 120); do
		if curl -fsS --cacert "$state/tls/ca.pem" "https://127.0.0.1:$(http_port "$i")/readyz" >/dev/null 2>&1; then break; fi
		if ! kill -0 "$rpid" 2>/dev/null && ((again)); then
			say "replica r$i exited before it was ready; starting it once more:"
			tail -3 "$state/r$i/server.log" >&2
			again=0
			start_replica "$i"
			continue
		fi
		if ! kill -0 "$rpid" 2>/dev/null || ((try == 120)); then
			say "replica r$i did not become ready:"
			tail -20 "$state/r$i/server.log" >&2
			exit 1
		fi
		sleep 0.5
	done
done

{
	echo "export HSMGATE_ADDR=127.0.0.1:$(grpc_port 0)"
	echo "export HSMGATE_CACERT=$state/tls/ca.pem"
	echo "export HSMGATE_TOKEN=$(cat "$state/root-token")"
	for i in $(seq 0 $((N - 1))); do echo "export HSMGATE_ADDR_R$i=127.0.0.1:$(grpc_port "$i")"; done
	eps=""
	for i in $(seq 0 $((N - 1))); do eps+="${eps:+,}http://127.0.0.1:$(etcd_client_port "$i")"; done
	echo "export HSMGATE_ETCD_ENDPOINTS=$eps"
} >"$state/env.tmp"
chmod 600 "$state/env.tmp"
mv "$state/env.tmp" "$state/env"
cat "$state/env"
echo "# replicas ready (--hsm $hsm_mode): r0..r2 on gRPC ports $(grpc_port 0), $(grpc_port 1), $(grpc_port 2); logs $state/r*/server.log"
echo "# source $state/env, then e.g.: hsmgate transit keys create demo; echo -n hi | HSMGATE_ADDR=\$HSMGATE_ADDR_R1 hsmgate transit encrypt demo"
echo "# Ctrl-C stops everything"
wait -n "${pids[@]}" || true
say "a process exited; stopping the rest"
