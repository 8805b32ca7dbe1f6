#!/usr/bin/env bash
# Where a proxied request's CPU goes, nginx against one or more gateway
# binaries, pinned as bench/run.sh pins them (wrk on CPU 0; upstream and
# proxy on CPU 1): user and kernel µs per request from /proc/<pid>/stat,
# voluntary and involuntary context switches per request summed over
# /proc/<pid>/task/*/status, and the upstream's CPU per request (a proxy
# that batches its writes makes the upstream cheaper).
#
#   bench/cpu_split.sh SECONDS ROUNDS GATEWAY_BINARY [GATEWAY_BINARY...]
#
# e.g. bench/cpu_split.sh 8 3 /tmp/before/aether-gateway target/release/aether-gateway
# (needs wrk and nginx: bench/run.sh installs them).
set -euo pipefail
SECS=$1; ROUNDS=$2; shift 2; GWS=("$@")
WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; kill $(cat $WORK/up/nginx.pid) $(cat $WORK/px/nginx.pid) 2>/dev/null || true; rm -rf $WORK; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); NG=$(port)
BODY='{"world_id":"8c1f0e2a","region":"us-east","instance":"world-us-east-1","players":12,"state":"running"}'
mkdir -p $WORK/up $WORK/px
cat > $WORK/up/nginx.conf <<E2
worker_processes 1; daemon on; error_log $WORK/up/error.log crit; events { worker_connections 4096; }
pid $WORK/up/nginx.pid;
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP reuseport; location / { default_type application/json; return 200 '$BODY'; } } }
E2
cat > $WORK/px/nginx.conf <<E2
worker_processes 1; daemon on; error_log $WORK/px/error.log crit; events { worker_connections 4096; }
pid $WORK/px/nginx.pid;
http { access_log off; keepalive_requests 1000000;
  upstream world { server 127.0.0.1:$UP; keepalive 128; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NG;
    location /api/v1/worlds/ { proxy_pass http://world; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host; proxy_set_header X-Request-Id \$request_id;
      proxy_set_header Via "1.1 nginx"; add_header X-Request-Id \$request_id; } } }
E2
taskset -c 1 nginx -c $WORK/up/nginx.conf -p $WORK/up
taskset -c 1 nginx -c $WORK/px/nginx.conf -p $WORK/px
declare -A GPORT GPID
i=0
for g in "${GWS[@]}"; do
  p=$(port); i=$((i+1))
  cat > $WORK/gw$i.toml <<E2
[server]
listen = "127.0.0.1:$p"
worker_threads = 1
[[services]]
name = "world-service"
max_idle_connections_per_endpoint = 128
[[services.endpoints]]
address = "127.0.0.1:$UP"
[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}"
service = "world-service"
E2
  RUST_LOG=error taskset -c 1 $g --config $WORK/gw$i.toml > $WORK/gw$i.out 2>&1 &
  GPID[$i]=$!; PIDS+=($!); GPORT[$i]=$p
done
# Ready when each answers 200 (polled with a deadline).
for p in $NG ${GPORT[@]}; do
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null http://127.0.0.1:$p/api/v1/worlds/1 && break
    sleep 0.05
  done
  curl -fs -o /dev/null http://127.0.0.1:$p/api/v1/worlds/1 || { echo "nothing answers on $p" >&2; exit 1; }
done
pxpids() { pgrep -P $(cat $WORK/px/nginx.pid); }
uppids() { pgrep -P $(cat $WORK/up/nginx.pid); }
stat() { # pids -> "utime stime vcsw nvcsw"
  local u=0 s=0 v=0 n=0
  for p in "$@"; do
    read -r a b < <(awk '{print $14, $15}' /proc/$p/stat); u=$((u+a)); s=$((s+b))
    for t in /proc/$p/task/*; do
      v=$((v + $(awk '/^voluntary_ctxt_switches/ {print $2}' $t/status))); n=$((n + $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' $t/status)))
    done
  done; echo "$u $s $v $n"; }
HZ=$(getconf CLK_TCK)
one() { # name port pids...
  local name=$1 port=$2; shift 2
  local b a ub ua out reqs rps
  b=$(stat "$@"); ub=$(stat $(uppids))
  out=$(taskset -c 0 wrk -t1 -c50 -d${SECS}s http://127.0.0.1:$port/api/v1/worlds/8c1f0e2a)
  a=$(stat "$@"); ua=$(stat $(uppids))
  reqs=$(echo "$out" | awk '/requests in/ {print $1}'); rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  awk -v n=$name -v b="$b" -v a="$a" -v ub="$ub" -v ua="$ua" -v r=$reqs -v rps=$rps -v hz=$HZ 'BEGIN {
    split(b,B," "); split(a,A," "); split(ub,UB," "); split(ua,UA," ");
    printf "%-8s rps %8.0f  user %5.2f sys %5.2f total %5.2f us/req  vcsw %.3f nvcsw %.3f /req | upstream cpu %5.2f us/req nvcsw %.3f\n", n, rps,
      (A[1]-B[1])/hz*1e6/r, (A[2]-B[2])/hz*1e6/r, (A[1]+A[2]-B[1]-B[2])/hz*1e6/r, (A[3]-B[3])/r, (A[4]-B[4])/r,
      (UA[1]+UA[2]-UB[1]-UB[2])/hz*1e6/r, (UA[4]-UB[4])/r }'
}
for r in $(seq 1 $ROUNDS); do
  one nginx $NG $(pxpids)
  for j in $(seq 1 $i); do one gw$j ${GPORT[$j]} ${GPID[$j]}; done
done
