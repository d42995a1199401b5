#!/usr/bin/env bash
# A first rough throughput figure on loopback with wrk: POST a message and
# GET a newest-50 page, each next to a baseline measured in the same run
# (GET /healthz: the same server's HTTP path with no storage work).
#
#   scripts/quick-bench.sh [seconds per run, default 10] [connections, default 64]
#
# Installs wrk from Debian if missing. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
KEY="bench-key-0123456789"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --locked -q

WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
./target/release/progressdb --db "$WORK/db" --addr 127.0.0.1:0 --api-key "$KEY" >"$WORK/out" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
ADDR="$(grep -o 'http://[0-9.:]*' "$WORK/out" | head -1)"

AUTH=(-H "Authorization: Bearer $KEY" -H "X-User-ID: bench")
THREAD="$(curl -s "${AUTH[@]}" -d '{"title":"bench"}' "$ADDR/frontend/v1/threads" | sed 's/.*"id":"\([^"]*\)".*/\1/')"
for i in $(seq 100); do
  curl -s -o /dev/null "${AUTH[@]}" -d "{\"body\":{\"text\":\"preload message $i with some ordinary chat text\"}}" \
    "$ADDR/frontend/v1/threads/$THREAD/messages"
done

cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"body":{"text":"a benchmark message with some ordinary chat text"}}'
wrk.headers["Content-Type"] = "application/json"
LUA

run() { # name, extra wrk args...
  local name="$1"; shift
  local rps
  rps="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "${AUTH[@]}" "$@" | awk '/Requests\/sec/ {print $2}')"
  echo "$name $rps"
}

BASE="$(run baseline "$ADDR/healthz")"
POST="$(run post -s "$WORK/post.lua" "$ADDR/frontend/v1/threads/$THREAD/messages")"
PAGE="$(run page "$ADDR/frontend/v1/threads/$THREAD/messages?limit=50")"

echo
echo "machine: $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
echo "wrk -t2 -c$CONNECTIONS -d${DURATION}s on loopback; server and wrk share the machine"
echo
echo "| request | req/s | ratio to GET /healthz |"
echo "|---|---|---|"
for line in "$BASE" "$POST" "$PAGE"; do
  set -- $line
  awk -v n="$1" -v r="$2" -v b="$(echo "$BASE" | cut -d' ' -f2)" 'BEGIN { printf "| %s | %.0f | %.2f |\n", n, r, r / b }'
done
