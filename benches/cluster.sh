#!/usr/bin/env bash
# Cluster figures of issue 12 on this machine: three nodes on 127.0.0.1, `replica` acks.
#
#   bash benches/cluster.sh                  # lag at 300 k/s, max ingest, 10 M catch-up
#   RATE=100000 USERS=1000000 CATCHUP_USERS=2000000 bash benches/cluster.sh
#
# 1. Fresh nodes, `presenced bench cluster --rate RATE` into node 1 for SECONDS: the replication
#    lag nodes 2 and 3 measured (their histograms start with the run: fresh nodes).
# 2. Node 1 filled with USERS users, then `bench ingest` at full speed into node 1 (mixed
#    workload, `replica` acks: every ack waited for a peer): updates/s.
# 3. Two nodes with `local` acks; node 1 filled with CATCHUP_USERS users; node 2 killed (SIGKILL)
#    and restarted: seconds until its digest equals node 1's (snapshot transfer and apply) and
#    until it reports ready (clock confirmation included), polled every 50 ms; and the snapshot's
#    own transfer and apply, from SNAPSHOT_BEGIN to SNAPSHOT_END, as node 2 logs it.
# Everything it starts is stopped on exit. Load generators share the cores with the nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-300000}
RUN=${SECONDS_PER_RUN:-8}
USERS=${USERS:-1000000}
CATCHUP_USERS=${CATCHUP_USERS:-10000000}
ENGINE=${ENGINE:-table}
cargo build --release -q
BIN=$PWD/target/release/presenced
source benches/lib.sh
json() { python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print($1)"; }

config() {  # $1: ack policy; writes $dir/c.xml with fresh ports, sets H1 H2 H3 P1
  local nodes=""
  for n in 1 2 3; do
    local p q s t h
    p=$(port); q=$(port); s=$(port); t=$(port); h=$(port)
    nodes+="  <node id=\"$n\" host=\"127.0.0.1\" pool-port=\"$p\" query-port=\"$q\" sync-port=\"$s\" time-port=\"$t\" http-port=\"$h\"/>"$'\n'
    eval "H$n=$h; P$n=$p"
  done
  cat > "$dir/c.xml" <<XML
<cluster name="bench">
  <store engine="$ENGINE"/>
  <replication ack="$1"/>
  <timing heartbeat-ms="100" down-after-ms="1000" time-sync-interval-ms="1000" time-tolerance-us="1000"/>
$nodes</cluster>
XML
}
start() { "$BIN" serve --config "$dir/c.xml" --node "$1" 2>>"$dir/n$1.log" & eval "N$1=$!"; pids+=($!); }
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
ready() { curl -sf "http://127.0.0.1:$1/healthz/ready" >/dev/null 2>&1; }
wait_ready() { for _ in $(seq 600); do ready "$1" && return 0; sleep 0.1; done; echo "node on $1 never ready"; tail -n 20 "$dir"/n*.log; exit 1; }
digest() { curl -s "http://127.0.0.1:$1/v1/cluster" | json 'd["digest"]' 2>/dev/null || true; }

echo "== $(nproc) cores, engine $ENGINE"

# 1. Lag at RATE on fresh nodes.
config replica
start 1; start 2; start 3
wait_ready "$H1"; wait_ready "$H2"; wait_ready "$H3"
lag=$("$BIN" bench cluster --target "127.0.0.1:$P1" --users "$USERS" --rate "$RATE" --seconds "$RUN" \
  --observe "127.0.0.1:$H2" --observe "127.0.0.1:$H3" --json | tail -n1)
echo "$lag" | json '"bench cluster at %d/s for %ds: %d updates/s; ack p50/p99 %.1f/%.1f ms" % ('"$RATE"', '"$RUN"', d["updates_per_s"], d["latency_us"]["p50"]/1e3, d["latency_us"]["p99"]/1e3)'
echo "$lag" | json '"\n".join("  replication lag at %s: p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms (%d samples)" % (l["node"], l["p50"]/1e3, l["p99"]/1e3, l["p999"]/1e3, l["count"]) for l in d["replication_lag_us"])'

# 2. Max ingest into node 1 with replica acks, population present.
"$BIN" bench ingest --fill --target "127.0.0.1:$P1" --users "$USERS" --seconds 300 --connections 4 >/dev/null
"$BIN" bench ingest --target "127.0.0.1:$P1" --users "$USERS" --seconds "$RUN" --connections 4 --depth 8 --batch 512 --json \
  | tail -n1 | json '"3-node ingest into node 1, replica acks: %d updates/s, ack p99 %.1f ms" % (d["updates_per_s"], d["latency_us"]["p99"]/1e3)'
sleep 2
echo "  digests: $(digest "$H1") $(digest "$H2") $(digest "$H3")"
stop_all

# 3. Catch-up of a restarted node.
config local
start 1; start 2
wait_ready "$H1"; wait_ready "$H2"
"$BIN" bench ingest --fill --target "127.0.0.1:$P1" --users "$CATCHUP_USERS" --seconds 900 --connections 4 --batch 1024 >/dev/null
want=$(digest "$H1")
kill -9 "$N2"; wait "$N2" 2>/dev/null || true
t0=$(date +%s.%N)
start 2
data=""; up=""
while [ -z "$data" ] || [ -z "$up" ]; do
  now=$(date +%s.%N)
  [ -z "$data" ] && [ "$(digest "$H2")" = "$want" ] && data=$(python3 -c "print(f'{$now-$t0:.2f}')")
  [ -z "$up" ] && ready "$H2" && up=$(python3 -c "print(f'{$now-$t0:.2f}')")
  python3 -c "import sys; sys.exit($now-$t0 > 300)" || { echo "no catch-up within 300 s"; exit 1; }
  sleep 0.05
done
snap=$(grep 'full snapshot received' "$dir/n2.log" | tail -n1 | grep -oE '(^| )ms=[0-9]+' | cut -d= -f2)
echo "restarted node, $CATCHUP_USERS users: data caught up (digest equal) ${data} s, ready ${up} s after the restart"
echo "  snapshot transfer and apply (node 2's log, SNAPSHOT_BEGIN to SNAPSHOT_END): ${snap:-?} ms"
