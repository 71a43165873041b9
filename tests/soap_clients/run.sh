#!/usr/bin/env bash
# Checks the SOAP service with real clients: zeep (Python) and node-soap (Node.js), each over the
# SOAP 1.1 and the SOAP 1.2 port of the served WSDL.
#
# Usage: tests/soap_clients/run.sh path/to/presenced
#
# Creates a venv at <repo>/.venv with zeep, runs `npm ci` here, starts `presenced serve` on free
# loopback ports, pushes test data with `presenced push`, runs both checks, stops the server, and
# ends with exactly one line `soap-clients: N passed, M failed`. Exits non-zero on any failure.

set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 path/to/presenced" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ZEEP_VERSION=4.3.3

passed=0
failed=0
finish() {
    echo "soap-clients: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
    exit $?
}
setup_failed() {
    echo "soap-clients: setup failed: $1" >&2
    failed=$((failed + 1))
    finish
}

# Client toolchains.
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    python3 -m venv "$ROOT/.venv" || setup_failed "python3 -m venv"
fi
"$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check "zeep==$ZEEP_VERSION" \
    || setup_failed "pip install zeep"
(cd "$HERE" && npm ci --no-audit --no-fund --silent) || setup_failed "npm ci"

# A one-node cluster on free ports.
read -r POOL QUERY SYNC TIME HTTP < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
TMP=$(mktemp -d)
cat >"$TMP/cluster.xml" <<EOF
<cluster name="soap-clients">
  <node id="1" host="127.0.0.1" pool-port="$POOL" query-port="$QUERY" sync-port="$SYNC" time-port="$TIME" http-port="$HTTP"/>
</cluster>
EOF
"$BIN" serve --config "$TMP/cluster.xml" --node 1 >"$TMP/server.log" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null
    wait "$SERVER" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$HTTP") 2>/dev/null; then
        break
    fi
    sleep 0.05
done
(exec 3<>"/dev/tcp/127.0.0.1/$HTTP") 2>/dev/null || {
    cat "$TMP/server.log" >&2
    setup_failed "the server did not listen on $HTTP"
}

printf '%s\n' \
    'login 10086 1 pc nick=alice' \
    'login 10086 1 mobile nick=alice' \
    'login 18446744073709551615 2 web' \
    'login 10010 3 pc' \
    'logout 10010 3 pc' \
    'permission 10010 3 deny' \
    | "$BIN" push --pool "127.0.0.1:$POOL" >"$TMP/push.log" 2>&1 || {
    cat "$TMP/push.log" >&2
    setup_failed "presenced push"
}

# Runs one check script; counts its "ok"/"FAIL" lines (a crash without any counts as one failure).
run_check() {
    local out rc ok bad
    out=$("$@" 2>&1)
    rc=$?
    echo "$out"
    ok=$(grep -c '^ok ' <<<"$out")
    bad=$(grep -c '^FAIL ' <<<"$out")
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        bad=1
    fi
    passed=$((passed + ok))
    failed=$((failed + bad))
}

run_check "$ROOT/.venv/bin/python" "$HERE/zeep_check.py" "$HTTP"
run_check node "$HERE/node_soap_check.js" "$HTTP"
finish
