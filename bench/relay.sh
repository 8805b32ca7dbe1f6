#!/usr/bin/env bash
# Load run of the STUN/TURN voice relay: the same flow — turnutils_uclient →
# TURN server → turnutils_peer (UDP echo) → back — through coturn's
# turnserver and through aether-gateway's [relay], in one run, rounds
# interleaved (order rotated), everything on 127.0.0.1.
#
#   bench/relay.sh [rounds] [seconds]          (defaults 3 10)
#
#   seconds      sending time of each client in the throughput run
#   env MODES    flows to measure, any of: channel (ChannelData over UDP,
#                uclient's default), send (Send/Data indications, uclient -s),
#                tcp (ChannelData over TCP to the server, uclient -t);
#                default "channel send"
#   env CLIENTS  concurrent allocations in the throughput run (default 20;
#                each sends one 120-byte message per ms: 1,000 msg/s)
#   env RELAY_BENCH_COTURN_ONLY=1   measure coturn alone (no cargo build;
#                for as long as the gateway refuses [relay])
#   env AETHER_GATEWAY_BIN   a prebuilt gateway binary (no cargo build);
#                default: cargo build --release, target/release/aether-gateway
#
# Per server and flow, each round:
#   1. zero-loss check at a modest rate: 2 clients × 50 msg/s for 3 s; any
#      loss fails the run;
#   2. throughput: CLIENTS clients × 1,000 msg/s for `seconds`; reported:
#      offered msg/s, delivered msg/s (steady state: the median of the 3
#      busiest seconds of uclient's per-second counters — uclient starts each
#      client 1–6 s late, so the whole-run average understates), loss, and
#      the server's CPU time per relayed packet (utime+stime of all its
#      threads from /proc/<pid>/stat, over sent + received packets: each
#      echo is relayed twice);
#   3. round-trip latency per datagram (aioice, tests/support/aioice_turn.py,
#      perf_counter timestamps; uclient only has whole milliseconds): p50/p99
#      idle (1,000 × 100 B every 2 ms), and p50/p99 under load (the same
#      client alongside the throughput run, once every client is sending).
# Figures are medians over rounds.
#
# Pinning (2-core machine): the clients (uclient, aioice) and the echo peer
# on CPU 0, the server under test on CPU 1. coturn runs with
# --relay-threads 1, the gateway with worker_threads = 1.
#
# Quirks the gateway must accept for this to run (coturn 4.6.1's uclient):
# ChannelBind numbers drawn from 0x4000–0x7FFF (RFC 5766's range; RFC 8656
# narrowed it to 0x4FFF), EVEN-PORT (R=0) in about half of its Allocates,
# REQUESTED-ADDRESS-FAMILY, and one "probe" allocation per client that is
# never deleted (hence the high allocation quota in the config below).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
SECS=${2:-10}
MODES=${MODES:-channel send}
CLIENTS=${CLIENTS:-20}
COTURN_ONLY=${RELAY_BENCH_COTURN_ONLY:-0}
LOAD_CPU=0
SERVER_CPU=1

for tool in turnserver turnutils_uclient turnutils_peer taskset; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn util-linux python3 python3-venv >/dev/null
    else
      echo "need $tool: apt-get install coturn util-linux" >&2; exit 1
    fi
  fi
done

# aioice for the latency figures: the test-suite's venv (see scripts/test.sh).
VENV=target/test-venv
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("aioice") != "0.13.0")' 2>/dev/null; then
  rm -rf "$VENV"; mkdir -p target
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "aioice==0.13.0" "dnspython==2.9.2" "ifaddr==0.2.0"
fi
PY=$PWD/$VENV/bin/python

GW=${AETHER_GATEWAY_BIN:-target/release/aether-gateway}
if [ "$COTURN_ONLY" != 1 ] && [ -z "${AETHER_GATEWAY_BIN:-}" ]; then
  cargo build --release --quiet
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/turn.pid" ] && kill "$(cat "$WORK/turn.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A port free for both UDP and TCP on 127.0.0.1 (a TURN listener takes both);
# with pair=1, the next port is free for UDP too (turnutils_peer binds P and P+1).
free_port() { python3 - "${1:-0}" <<'PY'
import socket, sys
pair = sys.argv[1] == "1"
for _ in range(200):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    p = u.getsockname()[1]
    try:
        t = socket.socket(); t.bind(("127.0.0.1", p)); t.close()
        if pair:
            v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); v.bind(("127.0.0.1", p + 1)); v.close()
    except OSError:
        u.close(); continue
    u.close(); print(p); break
PY
}

# Wait until a STUN Binding request over UDP to 127.0.0.1:<port> is answered
# (10 s deadline; each probe waits 200 ms for its answer); gives up at once
# when the server's process <pid> has exited.
stun_ready() {
  python3 - "$1" "${2:-0}" <<'PY'
import os, socket, sys, time
port = int(sys.argv[1]); pid = int(sys.argv[2]); deadline = time.time() + 10
req = bytes.fromhex("000100002112a442") + os.urandom(12)
def alive():
    if not pid:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False
while time.time() < deadline and alive():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
    try:
        s.sendto(req, ("127.0.0.1", port))
        data = s.recv(2048)
        if len(data) >= 20 and data[0:2] == b"\x01\x01" and data[8:20] == req[8:20]:
            sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
sys.exit(1)
PY
}

PEER_PORT=$(free_port 1)
CT_PORT=$(free_port)
GW_HTTP=$(free_port)
GW_PORT=$(free_port)

# --- the echo peer (CPU 0, with the clients) ---------------------------------
taskset -c $LOAD_CPU turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
  python3 -c "
import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.05)
s.sendto(b'probe',('127.0.0.1',$PEER_PORT))
try: sys.exit(0 if s.recv(16)==b'probe' else 1)
except OSError: sys.exit(1)" && break
done

# --- coturn (CPU 1) ------------------------------------------------------------
# Loopback only: listener and relay on 127.0.0.1, peers limited to 127.0.0.1
# (--allow-loopback-peers is needed for a 127.0.0.1 peer at all; without it
# coturn answers 403 Forbidden IP), no TLS/DTLS/CLI/RFC 5780, no TCP relay.
taskset -c $SERVER_CPU turnserver -n \
  --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$CT_PORT" \
  --min-port 51000 --max-port 51999 \
  --no-tls --no-dtls --no-cli --no-rfc5780 --no-tcp-relay --no-multicast-peers \
  --allowed-peer-ip 127.0.0.1 --allow-loopback-peers \
  --lt-cred-mech --user alice:alicepass --realm aether \
  --relay-threads 1 \
  --userdb "$WORK/turndb" --pidfile "$WORK/turn.pid" \
  --log-file "$WORK/turn.log" --simple-log --no-stdout-log >/dev/null 2>&1 &
PIDS+=($!)
stun_ready "$CT_PORT" || { echo "coturn does not answer STUN on 127.0.0.1:$CT_PORT" >&2; tail -20 "$WORK/turn.log" >&2; exit 1; }
CT_PID=$(cat "$WORK/turn.pid")

# --- aether-gateway (CPU 1) ------------------------------------------------------
SERVERS=(coturn)
if [ "$COTURN_ONLY" != 1 ]; then
  cat > "$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_HTTP"
worker_threads = 1
[[services]]
name = "dummy"
[[services.endpoints]]
address = "127.0.0.1:9"
[[routes]]
method = "GET"
path = "/x"
service = "dummy"
[relay]
listen = "127.0.0.1:$GW_PORT"
realm = "aether"
relay_address = "127.0.0.1"
relay_ports = "50000-50999"
secret_env = "AETHER_TURN_SECRET"
credential_ttl_seconds = 600
max_bitrate_kbps = 0
# uclient leaves one probe allocation per client behind (until its
# lifetime, 777 s, runs out): rounds × flows × (CLIENTS + 2) of them.
max_allocations_per_user = 4096
allowed_peers = ["127.0.0.1/32"]
[[relay.users]]
name = "alice"
password = "alicepass"
EOF
  AETHER_TURN_SECRET=bench-relay-secret-0123456789abcdef RUST_LOG=error taskset -c $SERVER_CPU "$GW" --config "$WORK/gateway.toml" >"$WORK/gw.out" 2>"$WORK/gw.err" &
  GW_PID=$!; PIDS+=("$GW_PID")
  if ! stun_ready "$GW_PORT" "$GW_PID"; then
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      echo "aether-gateway refused the bench config (its [relay] section):" >&2
      sed 's/^/  /' "$WORK/gw.err" >&2
      if grep -qi "not yet supported" "$WORK/gw.err"; then
        echo "The relay is not built yet; RELAY_BENCH_COTURN_ONLY=1 bench/relay.sh measures coturn alone." >&2
      fi
    else
      echo "aether-gateway runs but its relay does not answer a STUN Binding on 127.0.0.1:$GW_PORT" >&2
      sed 's/^/  /' "$WORK/gw.err" >&2
    fi
    exit 1
  fi
  SERVERS+=(gateway)
fi

server_port() { [ "$1" = coturn ] && echo "$CT_PORT" || echo "$GW_PORT"; }
server_pid() { [ "$1" = coturn ] && echo "$CT_PID" || echo "$GW_PID"; }
mode_flags() { case $1 in channel) ;; send) echo "-s" ;; tcp) echo "-t" ;; esac; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# uclient <server> <mode> <clients> <messages> <interval-ms> -> its output in $WORK/uc.out
uclient() {
  local srv=$1 mode=$2 m=$3 n=$4 z=$5
  # shellcheck disable=SC2046
  timeout $(( n * z / 1000 + 40 )) taskset -c $LOAD_CPU turnutils_uclient -L 127.0.0.1 -c $(mode_flags "$mode") \
    -e 127.0.0.1 -r "$PEER_PORT" -m "$m" -n "$n" -l 120 -z "$z" -u alice -w alicepass \
    -p "$(server_port "$srv")" 127.0.0.1 >"$WORK/uc.out" 2>&1
}
uc_field() { # sent|recv|lostpct|transmit
  case $1 in
    sent) grep -o 'start_mclient: tot_send_msgs=[0-9]*' "$WORK/uc.out" | tail -1 | sed 's/.*=//' ;;
    recv) grep -o 'start_mclient: tot_send_msgs=[0-9]*, tot_recv_msgs=[0-9]*' "$WORK/uc.out" | tail -1 | sed 's/.*=//' ;;
    lostpct) grep -o 'Total lost packets [0-9]* ([0-9.]*' "$WORK/uc.out" | tail -1 | sed 's/.*(//' ;;
  esac
}
# Steady delivered rate: per-second growth of uclient's tot_recv_msgs
# counter (its progress lines start with the second), median of the 3 busiest.
uc_steady() {
  awk '/start_mclient: msz=/ { t = $1 + 0; match($0, /tot_recv_msgs=[0-9]+/); r[t] = substr($0, RSTART + 14, RLENGTH - 14) + 0; if (!(t in seen)) { seen[t] = 1; ts[++n] = t } }
       END { for (i = 2; i <= n; i++) { dt = ts[i] - ts[i-1]; if (dt > 0) print (r[ts[i]] - r[ts[i-1]]) / dt } }' "$WORK/uc.out" |
    sort -gr | head -3 | sort -g | awk '{a[NR]=$1} END { if (NR == 0) print 0; else print a[int((NR+1)/2)] }'
}
uc_explain() { # why a uclient run failed, for the message
  if grep -q "channel bind: error" "$WORK/uc.out"; then
    echo "ChannelBind refused ($(grep -o 'channel bind: error.*' "$WORK/uc.out" | head -1)): uclient draws channel numbers from 0x4000-0x7FFF; MODES=send avoids ChannelBind"
  elif grep -q "error 420" "$WORK/uc.out"; then
    echo "420 Unknown Attribute: uclient sends EVEN-PORT / REQUESTED-ADDRESS-FAMILY in Allocate"
  else
    grep -iE "error|cannot|wrong" "$WORK/uc.out" | sort -u | head -5 | tr '\n' ';'
  fi
}

# aioice <server> <mode> <count> <interval-ms> -> JSON in $WORK/ai.json
aioice() {
  local transport=udp
  [ "$2" = tcp ] && transport=tcp
  # nice -10: under load the latency client must not queue behind uclient
  # on the shared client CPU, or it measures that CPU instead of the server.
  taskset -c $LOAD_CPU nice -n -10 "$PY" tests/support/aioice_turn.py --server "127.0.0.1:$(server_port "$1")" \
    --transport "$transport" --peer "127.0.0.1:$PEER_PORT" --username alice --password alicepass \
    --count "$3" --size 100 --interval-ms "$4" --timeout 5 >"$WORK/ai.json" 2>"$WORK/ai.err" || true
}
ai_field() { python3 -c "
import json,sys
d=json.loads(open('$WORK/ai.json').read() or '{}'); r=d.get('rtt_us') or {}
v={'ok':d.get('ok'),'p50':r.get('p50'),'p99':r.get('p99'),'lost':d.get('lost'),'errors':'; '.join(d.get('errors') or [])}['$1']
print('-' if v is None else v)" 2>/dev/null || echo -; }

declare -A CHECK OFFERED STEADY LOSS CPU P50 P99 LP50 LP99 NOTE
FAILED=0
run_one() { # server mode
  local srv=$1 mode=$2 key="$1/$2" pid before after sent recv
  pid=$(server_pid "$srv")

  # 1. zero loss at a modest rate
  if ! uclient "$srv" "$mode" 2 150 20; then
    NOTE[$key]="zero-loss run failed: $(uc_explain)"; FAILED=1; return
  fi
  sent=$(uc_field sent); recv=$(uc_field recv)
  if [ "${sent:-0}" = 0 ] || [ "$sent" != "$recv" ]; then
    NOTE[$key]="loss at 100 msg/s: sent ${sent:-?}, received ${recv:-?}"; FAILED=1
  fi
  CHECK[$key]+="$(( ${sent:-0} - ${recv:-0} )) "

  # 2. throughput (3. latency under load alongside, once every client sends)
  before=$(cpu_ticks "$pid")
  uclient "$srv" "$mode" "$CLIENTS" $(( SECS * 1000 )) 1 &
  local upid=$!
  if [ "$SECS" -ge 10 ]; then
    sleep 7 # uclient connects (~1 s), then starts each client within 1-6 s
    aioice "$srv" "$mode" 1500 2
    LP50[$key]+="$(ai_field p50) "; LP99[$key]+="$(ai_field p99) "
  fi
  if ! wait "$upid"; then
    NOTE[$key]="throughput run failed: $(uc_explain)"; FAILED=1; return
  fi
  after=$(cpu_ticks "$pid")
  sent=$(uc_field sent); recv=$(uc_field recv)
  OFFERED[$key]="$(( CLIENTS * 1000 ))"
  STEADY[$key]+="$(uc_steady) "
  LOSS[$key]+="$(uc_field lostpct) "
  CPU[$key]+="$(awk -v d=$((after - before)) -v hz="$HZ" -v n=$(( sent + recv )) 'BEGIN { printf "%.2f", n ? d / hz * 1e6 / n : 0 }') "

  # 3. latency, idle
  aioice "$srv" "$mode" 1000 2
  if [ "$(ai_field ok)" != True ]; then
    NOTE[$key]="aioice: $(ai_field errors)"; FAILED=1
  fi
  P50[$key]+="$(ai_field p50) "; P99[$key]+="$(ai_field p99) "
}

median() { tr ' ' '\n' | awk 'NF && $1 != "-"' | sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2] + a[NR/2+1]) / 2 }'; }

echo "rounds=$ROUNDS seconds=$SECS clients=$CLIENTS modes=[$MODES] servers=[${SERVERS[*]}] coturn=$(turnserver --version 2>/dev/null | head -1) cpus: clients=$LOAD_CPU servers=$SERVER_CPU" >&2
for r in $(seq 1 "$ROUNDS"); do
  order=("${SERVERS[@]}")
  for ((k = 0; k < r - 1; k++)); do order=("${order[@]:1}" "${order[0]}"); done
  for mode in $MODES; do
    for s in "${order[@]}"; do
      echo "round $r: $s $mode" >&2
      run_one "$s" "$mode"
    done
  done
done

printf '\n| server | flow | zero-loss check: lost of 300 | offered msg/s | delivered msg/s (steady) | loss %% | server CPU µs/packet | RTT p50 µs idle | RTT p99 µs idle | RTT p50 µs loaded | RTT p99 µs loaded |\n|---|---|---|---|---|---|---|---|---|---|---|\n'
for mode in $MODES; do
  for s in "${SERVERS[@]}"; do
    k="$s/$mode"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$mode" \
      "$(echo "${CHECK[$k]:-}" | median)" "${OFFERED[$k]:--}" "$(echo "${STEADY[$k]:-}" | median)" \
      "$(echo "${LOSS[$k]:-}" | median)" "$(echo "${CPU[$k]:-}" | median)" \
      "$(echo "${P50[$k]:-}" | median)" "$(echo "${P99[$k]:-}" | median)" \
      "$(echo "${LP50[$k]:-}" | median)" "$(echo "${LP99[$k]:-}" | median)"
  done
done
for k in "${!NOTE[@]}"; do echo "$k: ${NOTE[$k]}" >&2; done
if [ "$COTURN_ONLY" = 1 ]; then
  echo "(coturn only: RELAY_BENCH_COTURN_ONLY=1)" >&2
fi
exit "$FAILED"
