#!/usr/bin/env bash
# Starts one node on free loopback ports, runs each `presenced bench` mode for two seconds, checks
# that each printed its JSON summary, and stops the node. No thresholds: numbers live in
# BENCHMARKS.md, not in CI.
set -euo pipefail
bin=${1:?usage: smoke.sh PATH-TO-presenced}
dir=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port); Q=$(port); S=$(port); T=$(port); H=$(port)
cat > "$dir/c.xml" <<XML
<cluster name="smoke">
  <node id="1" host="127.0.0.1" pool-port="$P" query-port="$Q" sync-port="$S" time-port="$T" http-port="$H"/>
</cluster>
XML
"$bin" serve --config "$dir/c.xml" 2>"$dir/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$H) 2>/dev/null && break; sleep 0.1; done
"$bin" bench ingest --target 127.0.0.1:$P --users 100000 --seconds 2 --connections 2 --json | tee "$dir/ingest.out"
tail -n1 "$dir/ingest.out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["updates_per_s"] > 0, d'
"$bin" bench query --target 127.0.0.1:$Q --users 100000 --batch 100 --seconds 2 --connections 2 --json | tee "$dir/query.out"
tail -n1 "$dir/query.out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["ids_per_s"] > 0, d'
echo "bench smoke: 2 passed, 0 failed"
