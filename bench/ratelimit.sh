#!/usr/bin/env bash
# Load run of the rate-limit paths, on loopback only, in one run with the
# order rotated over rounds:
#   none   — the gateway, route without a limit
#   local  — the same route with an in-process limit (every request allowed)
#   redis  — two gateways sharing one Redis limit (every request allowed);
#            wrk drives both at once, half the connections each; figures are
#            for the pair (requests/s summed, p99 the worse of the two)
#
#   bench/ratelimit.sh [rounds] [seconds-per-run] [connections]   (defaults 3 10 50)
#
# Pinning (2-core machine): wrk on CPU 0; upstream, Redis and gateways on
# CPU 1, one worker each. The limit is high enough that nothing is refused:
# the cost measured is the check, not the 429 path.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-50}
LOAD_CPU=0
SERVER_CPU=1

for tool in wrk nginx taskset redis-server redis-cli; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light util-linux redis-server >/dev/null
    else
      echo "need $tool: apt-get install wrk nginx-light redis-server" >&2; exit 1
    fi
  fi
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet
GW=target/release/aether-gateway

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port)
REDIS_PORT=$(free_port)

printf '%s\n' \
  "worker_processes 1; daemon on; error_log $WORK/error.log crit; pid $WORK/nginx.pid;" \
  "events { worker_connections 4096; }" \
  "http { access_log off; keepalive_requests 1000000;" \
  "  server { listen 127.0.0.1:$UP_PORT; location / { return 200 '{\"ok\":true}'; } } }" \
  > "$WORK/nginx.conf"
taskset -c $SERVER_CPU "$NGINX" -c "$WORK/nginx.conf" -p "$WORK"
taskset -c $SERVER_CPU redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done

LIMIT='rate_limit = { requests_per_minute = 1000000000, key = "ip" }'
REDIS_SECTION=$(printf '%s\n' "[rate_limit]" 'backend = "redis"' "redis_url = \"redis://127.0.0.1:$REDIS_PORT\"" "redis_timeout_ms = 50")

start_gateway() { # name port limit-line [rate_limit section]
  local name=$1 port=$2 limit=$3 section=${4:-}
  printf '%s\n' \
    "[server]" "listen = \"127.0.0.1:$port\"" "worker_threads = 1" \
    "$section" \
    "[[services]]" 'name = "world-service"' "max_idle_connections_per_endpoint = 128" \
    "[[services.endpoints]]" "address = \"127.0.0.1:$UP_PORT\"" \
    "[[routes]]" 'method = "GET"' 'path = "/api/v1/worlds/{world_id}"' 'service = "world-service"' \
    "$limit" > "$WORK/$name.toml"
  RUST_LOG=error taskset -c $SERVER_CPU "$GW" --config "$WORK/$name.toml" >"$WORK/$name.out" 2>&1 &
  PIDS+=($!)
}
P_NONE=$(free_port); start_gateway none "$P_NONE" ""
P_LOCAL=$(free_port); start_gateway local "$P_LOCAL" "$LIMIT"
P_R1=$(free_port); start_gateway redis1 "$P_R1" "$LIMIT" "$REDIS_SECTION"
P_R2=$(free_port); start_gateway redis2 "$P_R2" "$LIMIT" "$REDIS_SECTION"

url() { echo "http://127.0.0.1:$1/api/v1/worlds/7"; }
for p in "$P_NONE" "$P_LOCAL" "$P_R1" "$P_R2"; do
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$(url "$p")" && break; sleep 0.05; done
done
# The Redis gateways must really count in Redis, or the run measures the fallback.
for _ in $(seq 1 300); do
  curl -fs -o /dev/null "$(url "$P_R1")"; curl -fs -o /dev/null "$(url "$P_R2")"
  [ "$(redis-cli -p "$REDIS_PORT" dbsize)" != 0 ] && break
  sleep 0.05
done
[ "$(redis-cli -p "$REDIS_PORT" dbsize)" != 0 ] || { echo "the gateways do not count in Redis" >&2; cat "$WORK/redis1.out" "$WORK/redis1.toml" >&2; exit 1; }
evalsha_calls() { redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/cmdstat_evalsha/ {print $3}'; }
CALLS_BEFORE=$(evalsha_calls)

to_us() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); print v+0 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } else print v }'; }
one() { # name url connections -> "rps p99us"
  local out
  out=$(taskset -c $LOAD_CPU wrk -t1 -c"$3" -d"${SECS}s" --latency "$2")
  if echo "$out" | grep -q "Non-2xx"; then echo "$1: non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")"
}
declare -A RPS P99
for r in $(seq 1 "$ROUNDS"); do
  order=(none local redis)
  for ((k = 0; k < r - 1; k++)); do order=("${order[@]:1}" "${order[0]}"); done
  for t in "${order[@]}"; do
    echo "round $r: $t" >&2
    case $t in
      none) read -r rps p99 < <(one none "$(url "$P_NONE")" "$CONNS") ;;
      local) read -r rps p99 < <(one local "$(url "$P_LOCAL")" "$CONNS") ;;
      redis)
        one redis1 "$(url "$P_R1")" $(( CONNS / 2 )) > "$WORK/r1" &
        w1=$!
        one redis2 "$(url "$P_R2")" $(( CONNS / 2 )) > "$WORK/r2"
        wait "$w1"
        read -r r1 q1 < "$WORK/r1"; read -r r2 q2 < "$WORK/r2"
        rps=$(awk -v a="$r1" -v b="$r2" 'BEGIN { printf "%.2f", a + b }')
        p99=$(awk -v a="$q1" -v b="$q2" 'BEGIN { print (a > b ? a : b) }')
        ;;
    esac
    RPS[$t]+="$rps "
    P99[$t]+="$p99 "
  done
done
CALLS_AFTER=$(evalsha_calls)

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2] + a[NR/2+1]) / 2 }'; }
printf '\n| target | requests/s | p99 µs |\n|---|---|---|\n'
for t in none local redis; do
  printf '| %s | %s | %s |\n' "$t" "$(echo "${RPS[$t]}" | median)" "$(echo "${P99[$t]}" | median)"
done
n=$(echo "${RPS[none]}" | median); l=$(echo "${RPS[local]}" | median); d=$(echo "${RPS[redis]}" | median)
awk -v n="$n" -v l="$l" -v d="$d" 'BEGIN { printf "\nlocal/none throughput %.3fx; redis pair/none %.3fx\n", l / n, d / n }'
echo "Redis EVALSHA calls during the runs: $(( CALLS_AFTER - CALLS_BEFORE ))"
