#!/usr/bin/env bash
# One slow endpoint among four: latency through the gateway per balancing
# policy, measured side by side in one run (rounds interleaved).
#
#   bench/balance.sh [rounds] [seconds] [connections] [slow_ms]   (defaults 3 10 32 20)
#
# Three upstreams answer at once, one after slow_ms (examples/bench_upstream.rs).
# wrk runs on CPU 0; the gateway (one worker thread) and the upstreams on CPU 1.
# Per policy: requests/s, p50 and p99 (medians over rounds), and the
# share of requests the slow endpoint got (from /admin/upstreams).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-32}
SLOW_MS=${4:-20}
POLICIES=(round_robin least_request peak_ewma)

for tool in wrk taskset curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk util-linux curl python3 >/dev/null
    else
      echo "need $tool: apt-get install wrk util-linux curl python3" >&2; exit 1
    fi
  fi
done

cargo build --release --quiet --bin aether-gateway --example bench_upstream
GW=target/release/aether-gateway
UP=target/release/examples/bench_upstream

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

UP_PORTS=()
for i in 0 1 2 3; do
  port=$(free_port); UP_PORTS+=("$port")
  delay=0; [ "$i" = 3 ] && delay=$SLOW_MS
  taskset -c 1 "$UP" "127.0.0.1:$port" "$delay" & PIDS+=($!)
done
SLOW="127.0.0.1:${UP_PORTS[3]}"

wait_ok() { # url
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "nothing answers 200 at $1" >&2; exit 1
}
for p in "${UP_PORTS[@]}"; do wait_ok "http://127.0.0.1:$p/"; done

start_gateway() { # policy -> sets GW_PORT ADMIN_PORT GW_PID
  local policy=$1
  GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nworker_threads = 1\n' "$GW_PORT"
    printf '[admin]\nlisten = "127.0.0.1:%s"\n' "$ADMIN_PORT"
    printf '[[services]]\nname = "world-service"\nbalance = "%s"\n' "$policy"
    for p in "${UP_PORTS[@]}"; do printf '[[services.endpoints]]\naddress = "127.0.0.1:%s"\n' "$p"; done
    printf '[[routes]]\nmethod = "GET"\npath = "/api/v1/worlds/{world_id}"\nservice = "world-service"\n'
  } > "$WORK/$policy.toml"
  RUST_LOG=error taskset -c 1 "$GW" --config "$WORK/$policy.toml" >"$WORK/$policy.out" 2>&1 &
  GW_PID=$!; PIDS+=("$GW_PID")
  wait_ok "http://127.0.0.1:$GW_PORT/api/v1/worlds/1"
}

to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    else print v }'
}
slow_share() { # admin port -> percent of requests the slow endpoint got
  curl -fs "http://127.0.0.1:$1/admin/upstreams" | python3 -c '
import json, sys
slow = sys.argv[1]
eps = json.load(sys.stdin)["services"][0]["endpoints"]
total = sum(e["requests"] for e in eps)
print("%.1f" % (100.0 * sum(e["requests"] for e in eps if e["address"] == slow) / max(total, 1)))' "$SLOW"
}

declare -A RPS P50 P99 SHARE
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order so no policy always runs first (or last).
  order=("${POLICIES[@]:$(( (round - 1) % 3 ))}" "${POLICIES[@]:0:$(( (round - 1) % 3 ))}")
  for policy in "${order[@]}"; do
    start_gateway "$policy"
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$GW_PORT/api/v1/worlds/1")
    RPS[$policy]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    P50[$policy]+="$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")") "
    P99[$policy]+="$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")") "
    SHARE[$policy]+="$(slow_share "$ADMIN_PORT") "
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
    echo "round $round $policy done" >&2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "one of four endpoints answers after ${SLOW_MS} ms; ${ROUNDS} rounds × ${SECS} s, ${CONNS} connections; medians"
echo
echo "| policy | requests/s | p50 µs | p99 µs | slow endpoint's share |"
echo "|---|---|---|---|---|"
for policy in "${POLICIES[@]}"; do
  printf '| %s | %s | %s | %s | %s %% |\n' "$policy" \
    "$(median <<<"${RPS[$policy]}")" "$(median <<<"${P50[$policy]}")" \
    "$(median <<<"${P99[$policy]}")" "$(median <<<"${SHARE[$policy]}")"
done
