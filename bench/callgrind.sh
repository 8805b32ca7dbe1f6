#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (deterministic: the
# same on a noisy or a quiet machine), for the request-path features:
#   plain      — route without auth or limits
#   auth       — [auth] on the route, one RS256 token (the cached path)
#   ratelimit  — a local per-IP limit on the route (every request allowed)
#   geo        — [geo] on: the client located (a CIDR rule miss, then the
#                default region) and the region chosen among two
#
#   bench/callgrind.sh [requests]     (default 2000)
#
# Each variant runs the gateway under callgrind; after 200 warm-up requests
# the counters are zeroed, N requests are sent on one keep-alive connection,
# and the counters dumped: divided by N, the cost of one request without
# start-up, clock calibration or shutdown (±1 request of straddle).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}

for tool in valgrind nginx openssl; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nginx-light openssl >/dev/null
    else
      echo "need $tool: apt-get install valgrind nginx-light openssl" >&2; exit 1
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
cleanup() {
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port)
UP_PORT2=$(free_port)
printf '%s\n' \
  "worker_processes 1; daemon on; error_log $WORK/error.log crit; pid $WORK/nginx.pid;" \
  "events { worker_connections 1024; }" \
  "http { access_log off; keepalive_requests 1000000;" \
  "  server { listen 127.0.0.1:$UP_PORT; listen 127.0.0.1:$UP_PORT2; location / { return 200 '{\"ok\":true}'; } } }" \
  > "$WORK/nginx.conf"
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK"

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/jwt.key" 2>/dev/null
openssl pkey -in "$WORK/jwt.key" -pubout -out "$WORK/jwt.pub"
input="$(printf '{"alg":"RS256","kid":"k"}' | b64url).$(printf '{"iss":"aether-auth","aud":"aether-api","sub":"player-7","role":"player","exp":%d}' $(( $(date +%s) + 86400 )) | b64url)"
TOKEN="$input.$(printf '%s' "$input" | openssl dgst -sha256 -sign "$WORK/jwt.key" -binary | b64url)"

config() { # variant port
  printf '%s\n' "[server]" "listen = \"127.0.0.1:$2\"" "worker_threads = 1"
  if [ "$1" = auth ]; then
    printf '%s\n' "[auth]" 'issuer = "aether-auth"' 'audiences = ["aether-api"]' 'algorithms = ["RS256"]' \
      "[[auth.keys]]" 'kid = "k"' 'algorithm = "RS256"' "pem_file = \"$WORK/jwt.pub\""
  fi
  printf '%s\n' "[[services]]" 'name = "w"' "[[services.endpoints]]" "address = \"127.0.0.1:$UP_PORT\""
  if [ "$1" = geo ]; then
    printf '%s\n' 'region = "us-east"' "[[services.endpoints]]" "address = \"127.0.0.1:$UP_PORT2\"" 'region = "eu-west"'
  fi
  printf '%s\n' "[[routes]]" 'method = "GET"' 'path = "/api/v1/worlds/{id}"' 'service = "w"'
  if [ "$1" = ratelimit ]; then
    echo 'rate_limit = { requests_per_minute = 1000000000, key = "ip" }'
  fi
  if [ "$1" = geo ]; then
    printf '%s\n' "[geo]" 'default_region = "us-east"' "[[geo.networks]]" 'cidr = "198.51.100.0/24"' 'region = "eu-west"' \
      "[geo.latency_ms]" 'us-east = { us-east = 10, eu-west = 80 }' 'eu-west = { us-east = 80, eu-west = 10 }'
  fi
}

# Instructions of `n` requests on one keep-alive connection, counted
# between `callgrind_control --zero` (after a warm-up: start-up, clock
# calibration and first-connection costs excluded) and `--dump`.
run() { # variant n
  local port out
  port=$(free_port)
  config "$1" "$port" > "$WORK/$1.toml"
  out="$WORK/cg.$1"
  RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out" "$GW" --config "$WORK/$1.toml" >/dev/null 2>"$WORK/vg.log" &
  local pid=$!
  python3 - "$port" "$2" "$1" "$TOKEN" "$pid" <<'PY'
import http.client, subprocess, sys, time
port, n, variant, token, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30); c.connect(); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.2)
headers = {"Authorization": "Bearer " + token} if variant == "auth" else {}
def one():
    c.request("GET", "/api/v1/worlds/7", headers=headers)
    r = c.getresponse(); r.read()
    assert r.status == 200, (variant, r.status)
def control(flag):
    # callgrind acts on a command when the gateway next runs code: one
    # request wakes it (and is counted on whichever side it straddles).
    p = subprocess.Popen(["callgrind_control", flag, pid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    one()
    p.wait(timeout=60)
for _ in range(200):
    one()
control("--zero")
for _ in range(n):
    one()
control("--dump")
PY
  kill -TERM "$pid"; wait "$pid" || true
  # The explicit dump is part 1.
  awk '/^summary:/ {print $2}' "$out.1"
}

printf '| variant | instructions/request | vs plain |\n|---|---|---|\n'
base=""
for v in plain auth ratelimit geo; do
  per=$(( $(run "$v" "$N") / N ))
  [ -z "$base" ] && base=$per
  printf '| %s | %d | %s |\n' "$v" "$per" "$(awk -v p="$per" -v b="$base" 'BEGIN { printf "%+.1f %%", (p / b - 1) * 100 }')"
done
