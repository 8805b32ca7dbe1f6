#!/usr/bin/env bash
# Load run: the same upstream hit directly, through nginx (keep-alive reverse
# proxy), through aether-gateway, and through aether-gateway with JWT auth on
# the route (RS256, one token, so the verified-token cache is what is
# measured), in one run, interleaved over several rounds, on loopback only.
#
#   bench/run.sh [rounds] [seconds-per-run] [connections]     (defaults 3 10 50)
#
# Pinning (2-core machine): wrk on CPU 0; upstream and proxy on CPU 1. Both
# proxies get one worker (nginx worker_processes 1, gateway worker_threads 1)
# and set the same forwarding headers, so the CPU figures compare like work.
#
# Reported per target (median over rounds): requests/s, p50 and p99 latency
# under load, p50 on a single connection (added latency = proxy − direct),
# and the proxy's CPU time per request from /proc/<pid>/stat (utime+stime of
# every process of that proxy) — on a noisy 2-core machine the steadiest figure.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-50}
LOAD_CPU=0
SERVER_CPU=1

for tool in wrk nginx taskset openssl; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light util-linux >/dev/null
    else
      echo "need $tool: apt-get install wrk nginx-light" >&2; exit 1
    fi
  fi
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# GW=path/to/aether-gateway measures that binary instead (e.g. another
# commit's build); CARGO_TARGET_DIR is honoured.
if [ -z "${GW:-}" ]; then
  cargo build --release --quiet
  GW=${CARGO_TARGET_DIR:-target}/release/aether-gateway
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/px/nginx.pid" ] && kill "$(cat "$WORK/px/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 - <<'PY' 2>/dev/null || shuf -i 20000-60000 -n 1
import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])
PY
}
UP_PORT=$(free_port); NG_PORT=$(free_port); GW_PORT=$(free_port); GA_PORT=$(free_port)

BODY='{"world_id":"8c1f0e2a","region":"us-east","instance":"world-us-east-1","players":12,"state":"running"}'

mkdir -p "$WORK/up" "$WORK/px"
common="worker_processes 1; daemon on; error_log WORK/error.log crit; events { worker_connections 4096; }"
cat > "$WORK/up/nginx.conf" <<EOF
${common//WORK/$WORK/up}
pid $WORK/up/nginx.pid;
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT reuseport;
    location / { default_type application/json; return 200 '$BODY'; }
  }
}
EOF
cat > "$WORK/px/nginx.conf" <<EOF
${common//WORK/$WORK/px}
pid $WORK/px/nginx.pid;
http {
  access_log off;
  keepalive_requests 1000000;
  upstream world { server 127.0.0.1:$UP_PORT; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location /api/v1/worlds/ {
      proxy_pass http://world;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header Via "1.1 nginx";
      add_header X-Request-Id \$request_id;
    }
  }
}
EOF
cat > "$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
worker_threads = 1
[[services]]
name = "world-service"
max_idle_connections_per_endpoint = 128
[[services.endpoints]]
address = "127.0.0.1:$UP_PORT"
[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}"
service = "world-service"
EOF

# The auth gateway: the same config plus [auth] with an RS256 public key, and
# a token signed here with openssl (b64url: base64 without padding, URL-safe).
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/jwt.key" 2>/dev/null
openssl pkey -in "$WORK/jwt.key" -pubout -out "$WORK/jwt.pub"
jwt_input="$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url).$(printf '{"iss":"aether-auth","aud":"aether-api","sub":"player-7","role":"player","exp":%d}' $(( $(date +%s) + 86400 )) | b64url)"
TOKEN="$jwt_input.$(printf '%s' "$jwt_input" | openssl dgst -sha256 -sign "$WORK/jwt.key" -binary | b64url)"
sed "s/127.0.0.1:$GW_PORT/127.0.0.1:$GA_PORT/" "$WORK/gateway.toml" > "$WORK/gateway-auth.toml"
cat >> "$WORK/gateway-auth.toml" <<EOF
[auth]
issuer = "aether-auth"
audiences = ["aether-api"]
required_claims = ["sub", "role"]
algorithms = ["RS256"]
[[auth.keys]]
kid = "bench"
algorithm = "RS256"
pem_file = "$WORK/jwt.pub"
EOF

taskset -c $SERVER_CPU "$NGINX" -c "$WORK/up/nginx.conf" -p "$WORK/up"
taskset -c $SERVER_CPU "$NGINX" -c "$WORK/px/nginx.conf" -p "$WORK/px"
RUST_LOG=error taskset -c $SERVER_CPU "$GW" --config "$WORK/gateway.toml" >"$WORK/gw.out" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
RUST_LOG=error taskset -c $SERVER_CPU "$GW" --config "$WORK/gateway-auth.toml" >"$WORK/ga.out" 2>&1 &
GA_PID=$!; PIDS+=("$GA_PID")

wait_port() { # port [curl args...]
  local port=$1; shift
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$@" "http://127.0.0.1:$port/api/v1/worlds/1" && return 0
    sleep 0.05
  done
  echo "nothing answers 200 on port $port" >&2; exit 1
}
wait_port "$UP_PORT"; wait_port "$NG_PORT"; wait_port "$GW_PORT"
wait_port "$GA_PORT" -H "Authorization: Bearer $TOKEN"
# The auth gateway must refuse a request without the token, or it measures nothing.
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GA_PORT/api/v1/worlds/1")" = 401 ] || { echo "auth gateway does not require a token" >&2; exit 1; }

# Proxy processes whose CPU time is counted.
nginx_px_pids() { pgrep -f "nginx: .*$WORK/px" || true; pgrep -P "$(cat "$WORK/px/nginx.pid")" || true; cat "$WORK/px/nginx.pid"; }
cpu_ticks() { # sum of utime+stime over the given pids
  local t=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$t"
}
to_us() { # wrk latency like 512.00us / 1.23ms / 2.00s -> microseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    else print v }'
}
HZ=$(getconf CLK_TCK)

declare -A RPS P50 P99 CPU SINGLE
HDR=()
run_one() { # name port pids... (wrk also sends the headers in HDR)
  local name=$1 port=$2; shift 2
  local url="http://127.0.0.1:$port/api/v1/worlds/8c1f0e2a"
  local before after out reqs
  before=$(cpu_ticks "$@")
  out=$(taskset -c $LOAD_CPU wrk "${HDR[@]}" -t1 -c"$CONNS" -d"${SECS}s" --latency "$url")
  if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx answers: $out" >&2; exit 1; fi
  after=$(cpu_ticks "$@")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  RPS[$name]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
  P50[$name]+="$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')") "
  P99[$name]+="$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')") "
  if [ $# -gt 0 ]; then
    CPU[$name]+="$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }') "
  fi
  out=$(taskset -c $LOAD_CPU wrk "${HDR[@]}" -t1 -c1 -d"$(( SECS / 2 > 1 ? SECS / 2 : 1 ))s" --latency "$url")
  SINGLE[$name]+="$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')") "
}

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2] + a[NR/2+1]) / 2 }'; }

echo "rounds=$ROUNDS seconds=$SECS connections=$CONNS nginx=$("$NGINX" -v 2>&1 | sed 's/.*\///') cpus: load=$LOAD_CPU servers=$SERVER_CPU" >&2
for r in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so no target always runs first or last.
  order=("direct" "nginx" "gateway" "gateway-auth")
  for ((k = 0; k < r - 1; k++)); do order=("${order[@]:1}" "${order[0]}"); done
  for t in "${order[@]}"; do
    echo "round $r: $t" >&2
    case $t in
      direct) run_one direct "$UP_PORT" ;;
      nginx) mapfile -t np < <(nginx_px_pids | sort -u); run_one nginx "$NG_PORT" "${np[@]}" ;;
      gateway) run_one gateway "$GW_PORT" "$GW_PID" ;;
      gateway-auth) HDR=(-H "Authorization: Bearer $TOKEN"); run_one gateway-auth "$GA_PORT" "$GA_PID"; HDR=() ;;
    esac
  done
done

direct_single=$(echo "${SINGLE[direct]}" | median)
printf '\n| target | requests/s | p50 µs | p99 µs | single-conn p50 µs | added latency µs | proxy CPU µs/request |\n|---|---|---|---|---|---|---|\n'
for t in direct nginx gateway gateway-auth; do
  s=$(echo "${SINGLE[$t]}" | median)
  added=$(awk -v a="$s" -v b="$direct_single" 'BEGIN { printf "%.0f", a - b }')
  [ "$t" = direct ] && added="-"
  cpu=$(echo "${CPU[$t]:-}" | median)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$(echo "${RPS[$t]}" | median)" "$(echo "${P50[$t]}" | median)" "$(echo "${P99[$t]}" | median)" "$s" "$added" "$cpu"
done
g_rps=$(echo "${RPS[gateway]}" | median); n_rps=$(echo "${RPS[nginx]}" | median)
g_cpu=$(echo "${CPU[gateway]}" | median); n_cpu=$(echo "${CPU[nginx]}" | median)
g_p99=$(echo "${P99[gateway]}" | median); n_p99=$(echo "${P99[nginx]}" | median)
awk -v gr="$g_rps" -v nr="$n_rps" -v gc="$g_cpu" -v nc="$n_cpu" -v gp="$g_p99" -v np="$n_p99" 'BEGIN {
  printf "\ngateway/nginx: throughput %.2fx, CPU per request %.2fx, p99 %.2fx\n", gr / nr, gc / nc, gp / np }'
a_rps=$(echo "${RPS[gateway-auth]}" | median); a_cpu=$(echo "${CPU[gateway-auth]}" | median)
awk -v ar="$a_rps" -v gr="$g_rps" -v ac="$a_cpu" -v gc="$g_cpu" 'BEGIN {
  printf "gateway auth on/off: throughput %.3fx, CPU per request %.3fx\n", ar / gr, ac / gc }'
