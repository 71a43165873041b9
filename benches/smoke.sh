#!/usr/bin/env bash
# Starts a two-node cluster on free loopback ports, runs each `presenced bench` mode for two
# seconds, checks that each printed its JSON summary, and stops the nodes. No thresholds: numbers
# live in BENCHMARKS.md, not in CI.
set -euo pipefail
bin=${1:?usage: smoke.sh PATH-TO-presenced}
dir=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
ready() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz/ready" 2>/dev/null || true; }
logs() { for n in 1 2; do echo "--- node $n log (tail)"; tail -n 30 "$dir/serve$n.log"; done; }
# Free ports are picked, then bound by the nodes: another process may take one in between. A
# cluster that does not come up (a node exited, or not ready within 30 s) is stopped and started
# again on new ports, at most three times.
start() {
  for n in 1 2; do
    eval "P$n=$(port) Q$n=$(port) S$n=$(port) T$n=$(port) H$n=$(port)"
  done
  cat > "$dir/c.xml" <<XML
<cluster name="smoke">
  <node id="1" host="127.0.0.1" pool-port="$P1" query-port="$Q1" sync-port="$S1" time-port="$T1" http-port="$H1"/>
  <node id="2" host="127.0.0.1" pool-port="$P2" query-port="$Q2" sync-port="$S2" time-port="$T2" http-port="$H2"/>
</cluster>
XML
  pids=()
  for n in 1 2; do
    "$bin" serve --config "$dir/c.xml" --node $n 2>"$dir/serve$n.log" &
    pids+=($!)
  done
  for _ in $(seq 300); do
    [ "$(ready $H1)" = 200 ] && [ "$(ready $H2)" = 200 ] && return 0
    kill -0 "${pids[0]}" 2>/dev/null && kill -0 "${pids[1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench smoke: the two nodes did not both become ready"; logs
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
  return 1
}
start || start || start || exit 1
trap 'status=$?; [ $status -eq 0 ] || logs; cleanup; exit $status' EXIT
check() { tail -n1 "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['$2'] > 0, d"; }

"$bin" bench ingest --target 127.0.0.1:$P1 --users 100000 --seconds 2 --connections 2 --json | tee "$dir/ingest.out"
check "$dir/ingest.out" updates_per_s
"$bin" bench query --target 127.0.0.1:$Q1 --users 100000 --batch 100 --seconds 2 --connections 2 --json | tee "$dir/query.out"
check "$dir/query.out" ids_per_s
"$bin" bench cluster --target 127.0.0.1:$P1 --observe 127.0.0.1:$H2 --rate 20000 --users 100000 --seconds 2 --connections 1 --json | tee "$dir/cluster.out"
check "$dir/cluster.out" updates_per_s
"$bin" bench store --users 100000 --seconds 2 --threads 2 --json | tee "$dir/store.out"
check "$dir/store.out" ids_per_s
echo "bench smoke: 4 passed, 0 failed"
