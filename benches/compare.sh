#!/usr/bin/env bash
# Side by side on this machine: presenced against the Redis + nginx setup it replaces.
#
#   bash benches/compare.sh            # full run (about 3 minutes after the build)
#   SECONDS_PER_RUN=3 USERS=1000000 MEM_USERS=1000000 bash benches/compare.sh   # quicker
#
# MEM_USERS is the population of the memory rows: over the wire (a node's RSS) and in-process
# (`presenced bench store`, table and flurry engines, which also gives the longest growth pause).
#
# Installs redis-server, redis-tools, nginx and wrk from Debian's packages if they are missing,
# starts everything on 127.0.0.1 ports of its own, prints each pair and its ratio, and stops
# everything it started. Load generators run on the same machine as the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${SECONDS_PER_RUN:-10}
USERS=${USERS:-1000000}
MEM_USERS=${MEM_USERS:-10000000}

missing=()
for c in redis-server redis-benchmark redis-cli nginx wrk curl; do command -v $c >/dev/null || missing+=($c); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing redis, nginx and wrk (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server redis-tools nginx wrk curl >/dev/null
fi
cargo build --release -q
BIN=$PWD/target/release/presenced

source benches/lib.sh
json() { tail -n1 | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.2f}x' if b else 'n/a')"; }
results=()
row() { printf '%-44s %14s %14s %8s\n' "$1" "$2" "$3" "$4"; results+=("$(printf '| %s | %s | %s | %s |' "$1" "$2" "$3" "$4")"); }

start_presenced() {  # $1: extra XML
  P=$(port); Q=$(port); S=$(port); T=$(port); H=$(port)
  cat > "$dir/p.xml" <<XML
<cluster name="compare">
  $1
  <node id="1" host="127.0.0.1" pool-port="$P" query-port="$Q" sync-port="$S" time-port="$T" http-port="$H"/>
</cluster>
XML
  "$BIN" serve --config "$dir/p.xml" 2>"$dir/presenced.log" &
  PPID_=$!; pids+=($PPID_)
  wait_port $H
}
stop_presenced() { kill $PPID_ 2>/dev/null || true; wait $PPID_ 2>/dev/null || true; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "== $(redis-server --version | cut -d' ' -f1-3), $(nginx -v 2>&1), presenced $("$BIN" --version | cut -d' ' -f2)"

# ---- Redis ----
RP=$(port)
redis-server --port $RP --bind 127.0.0.1 --save '' --appendonly no --daemonize no --loglevel warning >"$dir/redis.log" 2>&1 &
pids+=($!); wait_port $RP
redis_set=$(redis-benchmark -p $RP -t set -r "$USERS" -n $((RUN * 800000)) -P 64 -c 50 -q --csv | tail -n1 | cut -d, -f2 | tr -d '"')
redis-cli -p $RP flushall >/dev/null
mget_keys=$(python3 -c "print(' '.join('key:__rand_int__' for _ in range(100)))")
# Fill the keys MGET reads, so it returns values rather than nils.
redis-benchmark -p $RP -t set -r "$USERS" -n "$USERS" -P 64 -c 50 -q >/dev/null
redis_mget=$(redis-benchmark -p $RP -r "$USERS" -n $((RUN * 12000)) -c 50 -q --csv MGET $mget_keys | tail -n1 | cut -d, -f2 | tr -d '"')
redis_mget_keys=$(python3 -c "print(round(float('$redis_mget')*100))")

# ---- presenced ingest and query (local acks: one node, no peer) ----
start_presenced '<replication ack="local"/>'
# The population is present before measuring, as in a running presence service (Redis keys are
# created by its own run, which costs it little).
"$BIN" bench ingest --fill --target 127.0.0.1:$P --users "$USERS" --seconds 120 --connections 4 >/dev/null
p_ingest=$("$BIN" bench ingest --target 127.0.0.1:$P --users "$USERS" --seconds "$RUN" --connections 4 --depth 8 --batch 512 --json | tee "$dir/ingest.out" | json "['updates_per_s']")
p_ingest_p99=$(json "['latency_us']['p99']" < "$dir/ingest.out")
half=$(python3 -c "print(int(float('$p_ingest')/2))")
p_half_p99=$("$BIN" bench ingest --target 127.0.0.1:$P --users "$USERS" --seconds "$RUN" --connections 4 --rate "$half" --batch 128 --json | json "['latency_us']['p99']")
p_query=$("$BIN" bench query --target 127.0.0.1:$Q --users "$USERS" --batch 100 --seconds "$RUN" --connections 4 --depth 16 --json | json "['ids_per_s']")

# ---- HTTP: nginx static file vs GET /v1/presence with 20 ids ----
NP=$(port)
for workers in 1 2; do
  nginx_start $workers $NP
  v=$(wrk -t1 -c50 -d${RUN}s "http://127.0.0.1:$NP/f.txt" | awk '/Requests\/sec/ {print $2}')
  eval "nginx_$workers=$v"
  kill $NGINX_PID; wait $NGINX_PID 2>/dev/null || true
done
ids=$(python3 -c "print(','.join(str(i*7919 % $USERS + 1) for i in range(20)))")
p_http=$(wrk -t1 -c50 -d${RUN}s "http://127.0.0.1:$H/v1/presence?ids=$ids" | awk '/Requests\/sec/ {print $2}')
stop_presenced

# ---- memory per user at MEM_USERS users: one client online, no ext ----
redis-cli -p $RP flushall >/dev/null
base=$(redis-cli -p $RP info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
python3 - "$MEM_USERS" <<'PY' | redis-cli -p $RP --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout.buffer
val = b'{"c":1,"p":1,"t":1764000000000}'
for i in range(1, n + 1):
    k = str(i).encode()
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(val), val))
PY
used=$(redis-cli -p $RP info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
keys=$(redis-cli -p $RP dbsize)
redis_bpk=$(python3 -c "print(round(($used-$base)/$keys,1))")

start_presenced '<replication ack="local"/>'
rss() { awk '/VmRSS/ {print $2*1024}' /proc/$PPID_/status; }
before=$(rss)
"$BIN" bench ingest --fill --target 127.0.0.1:$P --users "$MEM_USERS" --seconds 600 --connections 4 --batch 1024 --json > "$dir/fill.out"
sleep 1
after=$(rss)
records=$(curl -s "http://127.0.0.1:$H/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
p_bpu=$(python3 -c "print(round(($after-$before)/$records,1))")
stop_presenced

# ---- the store in-process (no node): fill MEM_USERS users, longest single apply, bytes/user ----
# One login on pc per user, as `bench ingest --fill` sends; the store starts at the default
# `initial-users`, so its indexes grow while filling. The flurry engine is the reference.
for engine in table flurry; do
  "$BIN" bench store --engine $engine --users "$MEM_USERS" --seconds 3 --json > "$dir/store-$engine.out" 2>/dev/null
done
us() { json "['longest_apply_us']" < "$1" | python3 -c "print(round(float(input())))"; }
st_pause=$(us "$dir/store-table.out"); sf_pause=$(us "$dir/store-flurry.out")
rss_pu() { json "['rss_bytes_per_user']" < "$1" | python3 -c "import sys; v=sys.stdin.read().strip(); print('n/a' if v == 'None' else round(float(v),1))"; }
st_bpu=$(rss_pu "$dir/store-table.out"); sf_bpu=$(rss_pu "$dir/store-flurry.out")
st_rec=$(json "['bytes_per_record']" < "$dir/store-table.out"); sf_rec=$(json "['bytes_per_record']" < "$dir/store-flurry.out")
st_ins=$(json "['inserts_per_s']" < "$dir/store-table.out"); sf_ins=$(json "['inserts_per_s']" < "$dir/store-flurry.out")

echo
printf '%-44s %14s %14s %8s\n' "measure" "presenced" "reference" "ratio"
row "ingest updates/s vs redis SET -P 64 ops/s" "$p_ingest" "$redis_set" "$(ratio $p_ingest $redis_set)"
row "query ids/s (100/req) vs redis MGET 100 keys/s" "$p_query" "$redis_mget_keys" "$(ratio $p_query $redis_mget_keys)"
row "HTTP 20 ids req/s vs nginx static (1 worker)" "$p_http" "$nginx_1" "$(ratio $p_http $nginx_1)"
row "HTTP 20 ids req/s vs nginx static (2 workers)" "$p_http" "$nginx_2" "$(ratio $p_http $nginx_2)"
row "bytes per user at $MEM_USERS (RSS vs used_memory)" "$p_bpu" "$redis_bpk" "$(ratio $redis_bpk $p_bpu)"
row "in-process store bytes/user at $MEM_USERS (table) vs redis" "$st_bpu" "$redis_bpk" "$(ratio $redis_bpk $st_bpu)"
row "in-process store bytes/user at $MEM_USERS (flurry) vs redis" "$sf_bpu" "$redis_bpk" "$(ratio $redis_bpk $sf_bpu)"
row "longest growth pause filling $MEM_USERS (us), table vs flurry" "$st_pause" "$sf_pause" "$(ratio $sf_pause $st_pause)"
echo
echo "ingest ack latency p99: ${p_ingest_p99} us at full rate, ${p_half_p99} us at half rate ($half/s); redis MGET calls/s: $redis_mget; records: $records"
echo "in-process store: table $st_rec bytes/record (store report), $st_ins inserts/s; flurry $sf_rec bytes/record (estimate), $sf_ins inserts/s"
echo
echo "Markdown rows for BENCHMARKS.md:"
printf '%s\n' "${results[@]}"
