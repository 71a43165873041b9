#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECS seconds each (default 600), JOBS at a time
# (default 1), with its dictionary, growing the committed corpus in fuzz/corpus/TARGET, then
# minimizes each corpus. Logs go to fuzz/logs/TARGET.log; the last libFuzzer status line of each
# is what fuzz/README.md records. Crashes land in fuzz/artifacts/TARGET/.
#
#   bash fuzz/run.sh                  # all targets, 10 minutes each
#   SECS=60 bash fuzz/run.sh repl_message cluster_node
#
# Needs cargo-fuzz (cargo install cargo-fuzz). Stable Rust: no sanitizer (--sanitizer none).
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-600}
JOBS=${JOBS:-1}
declare -A DICT=(
  [ingest_frame]=pool.dict [batch_query]=query.dict [http_request]=http.dict
  [soap_envelope]=soap.dict [repl_message]=repl.dict [timesync_packet]=timesync.dict
  [proxy_header]=proxy.dict [cluster_node]=cluster.dict [config_xml]=config.dict
)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ingest_frame batch_query http_request soap_envelope repl_message timesync_packet proxy_header cluster_node config_xml)
mkdir -p logs
cargo fuzz build --sanitizer none "${targets[@]:0:1}" >/dev/null
cargo fuzz build --sanitizer none
run() {
  local t=$1
  local start=$(date +%s)
  cargo fuzz run --sanitizer none "$t" -- -dict="${DICT[$t]}" -max_total_time="$SECS" \
    -print_final_stats=1 -close_fd_mask=3 >"logs/$t.log" 2>&1 || echo "$t: FAILED (see fuzz/logs/$t.log)"
  echo "$t: $(( $(date +%s) - start )) s: $(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)"
  cargo fuzz cmin --sanitizer none "$t" >"logs/$t.cmin.log" 2>&1 || echo "$t: cmin failed"
}
i=0
for t in "${targets[@]}"; do
  run "$t" &
  i=$((i + 1))
  if [ $((i % JOBS)) -eq 0 ]; then wait; fi
done
wait
