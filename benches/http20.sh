#!/usr/bin/env bash
# The HTTP 20-id path against nginx, in the same conditions: the HTTP row of compare.sh, repeated.
#
#   bash benches/http20.sh [ROUNDS] [SECONDS] [BIN...]   # defaults: 5 10 target/release/presenced
#
# Starts one node per BIN (`<replication ack="local"/>`, so two builds can be compared), fills
# 1M users into each, starts nginx with 1 worker on a 200-byte file, then runs `wrk -t1 -c50`
# against each in turn, ROUNDS times (alternating, so all see the same neighbours on this shared
# machine; only one runs at a time), and prints every run and the medians.
# A BIN written PATH@N runs with `<limits workers="N"/>`.
# With PERF=1 the last run of the first BIN is recorded with `perf record -g` into $PERF_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
RUN=${2:-10}
shift 2 || true
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$PWD/target/release/presenced")
USERS=${USERS:-1000000}
for c in nginx wrk; do command -v $c >/dev/null || { echo "missing $c (apt-get install -y wrk nginx)"; exit 1; }; done

source benches/lib.sh

hports=(); ppids=()
for i in "${!BINS[@]}"; do
  P=$(port); Q=$(port); S=$(port); T=$(port); H=$(port)
  limits=""
  case "${BINS[$i]}" in *@*) limits="<limits workers=\"${BINS[$i]#*@}\"/>"; BINS[$i]=${BINS[$i]%@*};; esac
  names[$i]="$(basename "${BINS[$i]}")${limits:+ (workers=${limits//[!0-9]/})}"
  cat > "$dir/p$i.xml" <<XML
<cluster name="http20">
  <replication ack="local"/>
  $limits
  <node id="1" host="127.0.0.1" pool-port="$P" query-port="$Q" sync-port="$S" time-port="$T" http-port="$H"/>
</cluster>
XML
  "${BINS[$i]}" serve --config "$dir/p$i.xml" 2>"$dir/presenced$i.log" &
  ppids+=($!); pids+=($!); hports+=($H)
  wait_port $H
  "${BINS[$i]}" bench ingest --fill --target 127.0.0.1:$P --users "$USERS" --seconds 120 --connections 4 >/dev/null
done
NP=$(port)
nginx_start 1 $NP

ids=$(python3 -c "print(','.join(str(i*7919 % $USERS + 1) for i in range(20)))")
rps() { wrk -t1 -c50 -d${RUN}s "$1" | awk '/Requests\/sec/ {print $2}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A got
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for i in "${!BINS[@]}"; do
    url="http://127.0.0.1:${hports[$i]}/v1/presence?ids=$ids"
    if [ "${PERF:-0}" = 1 ] && [ "$r" = "$ROUNDS" ] && [ "$i" = 0 ]; then
      perf record -g -p "${ppids[0]}" -o "${PERF_OUT:-perf.data}" -- sleep $((RUN - 1)) 2>/dev/null &
      perf_pid=$!
      v=$(rps "$url"); wait $perf_pid || true
    else
      v=$(rps "$url")
    fi
    got[$i]="${got[$i]:-} $v"; line="$line ${names[$i]} $v"
  done
  v=$(rps "http://127.0.0.1:$NP/f.txt"); got[n]="${got[n]:-} $v"; line="$line nginx $v"
  echo "$line"
done
mn=$(median ${got[n]})
for i in "${!BINS[@]}"; do
  mp=$(median ${got[$i]})
  echo "median: ${names[$i]} $mp req/s, nginx $mn req/s, ratio $(python3 -c "print(f'{$mp/$mn:.2f}x')")"
done
