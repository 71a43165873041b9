#!/usr/bin/env bash
# Instruction counts (callgrind's total Ir) of the fixed workloads in benches/instructions.rs.
#
#   bash benches/instructions.sh                  # every workload
#   bash benches/instructions.sh http_json ...    # some of them
#   bash benches/instructions.sh --require ...    # fail (exit 1) if valgrind is unavailable
#
# Builds the bench target in the bench (release) profile, runs each workload under
# `valgrind --tool=callgrind` and prints a markdown table on stdout (progress and checksums go
# to stderr):
#
#   | workload | instructions | whole process |
#
# - instructions: callgrind's `Collected` Ir inside the workload's `measure_*` function only
#   (`--toggle-collect='*::measure_*'`): the product code, without the harness's setup (test
#   data, filling the store). This is the number to compare between commits.
# - whole process: `Collected` Ir of a second, plain run (setup, start-up and exit included).
#
# Counts are deterministic, so one run each is enough and a difference between two commits is a
# real difference in the code that ran.
#
# Without valgrind, the script installs it with apt-get when it can (as root, or through
# passwordless sudo). When it cannot, it prints why on stderr and exits 0 without measuring
# anything, so that CI machines without valgrind pass; with `--require` it exits 1 instead.
#
# Environment: NICE (default `nice -n 15`; set NICE= to run at normal priority),
# CARGO_TARGET_DIR (honoured by cargo as usual), VALGRIND_ARGS (extra callgrind options).
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a nice_cmd <<<"${NICE-nice -n 15}"

require=false
workloads=()
for arg in "$@"; do
  case $arg in
    --require) require=true ;;
    -*) echo "unknown option $arg (usage: $0 [--require] [WORKLOAD...])" >&2; exit 2 ;;
    *) workloads+=("$arg") ;;
  esac
done

# Installs valgrind with apt-get if possible; fails quietly (non-zero) otherwise.
install_valgrind() {
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || return 1
    sudo=(sudo -n)
  fi
  echo "installing valgrind with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq valgrind >/dev/null 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq valgrind >/dev/null 2>&1; }
}

if ! command -v valgrind >/dev/null 2>&1 && ! { install_valgrind && command -v valgrind >/dev/null 2>&1; }; then
  echo "instructions.sh: valgrind is not installed and could not be installed with apt-get (which" \
       "needs root or passwordless sudo): no instruction counts measured" >&2
  if $require; then
    exit 1
  fi
  exit 0
fi

# Build; the JSON messages on stdout name the executable, diagnostics are rendered on stderr.
bin=$("${nice_cmd[@]}" cargo bench --bench instructions --no-run \
        --message-format=json-render-diagnostics |
      grep '"reason":"compiler-artifact"' |
      grep '"name":"instructions"' |
      grep -o '"executable":"[^"]*"' | tail -n1 | sed 's/^"executable":"//; s/"$//')
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "could not find the instructions bench executable" >&2
  exit 1
fi
echo "binary: $bin" >&2

if [ ${#workloads[@]} -eq 0 ]; then
  mapfile -t workloads < <("$bin" list)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
extra=()
[ -n "${VALGRIND_ARGS:-}" ] && read -r -a extra <<<"$VALGRIND_ARGS"

# callgrind WORKLOAD [OPTION...]: prints the Ir it collected (its "==PID== Collected : N" line).
callgrind() {
  local w=$1; shift
  if ! "${nice_cmd[@]}" valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" \
      "$@" "${extra[@]}" "$bin" "$w" >"$tmp/stdout" 2>"$tmp/stderr"; then
    cat "$tmp/stderr" >&2
    echo "workload $w failed" >&2
    return 1
  fi
  local ir
  ir=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$tmp/stderr" | tail -n1)
  if [ -z "$ir" ] || [ "$ir" = 0 ]; then
    cat "$tmp/stderr" >&2
    echo "no instructions collected for $w (is there a measure_$w function?)" >&2
    return 1
  fi
  echo "$ir"
}

rows=()
for w in "${workloads[@]}"; do
  echo "running $w under callgrind" >&2
  measured=$(callgrind "$w" --collect-atstart=no --toggle-collect="*::measure_$w")
  echo "  $(cat "$tmp/stdout"): $measured Ir in measure_$w" >&2
  whole=$(callgrind "$w")
  echo "  $(cat "$tmp/stdout"): $whole Ir in the whole process" >&2
  rows+=("| $w | $measured | $whole |")
done

echo "| workload | instructions | whole process |"
echo "|---|---:|---:|"
printf '%s\n' "${rows[@]}"
