#!/usr/bin/env bash
# Rough throughput figures on loopback with wrk, each a ratio to a baseline
# measured in the same run:
#   - GET /healthz (the HTTP path with no storage work) is the baseline for
#     POST and GET-page;
#   - POST with --durability none is the baseline for durable (sync) POST;
#   - the same POST and page runs without encryption are the baselines for
#     the runs with --encryption (embedded KMS): the cost of sealing.
# Records per fsync come from the server's /admin/v1/stats after the
# durable POST run.
#
#   scripts/quick-bench.sh [seconds per run, default 10] [connections, default 64]
#
# Installs wrk from Debian if missing. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
KEY="bench-key-0123456789"
ADMIN_KEY="bench-admin-0123456789"
AUTH=(-H "Authorization: Bearer $KEY" -H "X-User-ID: bench")

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --locked -q

WORK="$(mktemp -d)"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

start() { # durability [extra server flags...] -> sets SERVER, ADDR, THREAD
  [ -n "$SERVER" ] && { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }
  rm -rf "$WORK/db"
  ./target/release/progressdb --db "$WORK/db" --addr 127.0.0.1:0 --api-key "$KEY" --admin-key "$ADMIN_KEY" \
    --durability "$@" >"$WORK/out" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
  ADDR="$(grep -o 'http://[0-9.:]*' "$WORK/out" | head -1)"
  THREAD="$(curl -s "${AUTH[@]}" -d '{"title":"bench"}' "$ADDR/frontend/v1/threads" | sed 's/.*"id":"\([^"]*\)".*/\1/')"
  for i in $(seq 100); do
    curl -s -o /dev/null "${AUTH[@]}" -d "{\"body\":{\"text\":\"preload message $i with some ordinary chat text\"}}" \
      "$ADDR/frontend/v1/threads/$THREAD/messages"
  done
}

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"body":{"text":"a benchmark message with some ordinary chat text"}}'
wrk.headers["Content-Type"] = "application/json"
LUA

rps() { wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "${AUTH[@]}" "$@" | awk '/Requests\/sec/ {print $2}'; }

start none
BASE="$(rps "$ADDR/healthz")"
PAGE="$(rps "$ADDR/frontend/v1/threads/$THREAD/messages?limit=50")"
POST_NONE="$(rps -s "$WORK/post.lua" "$ADDR/frontend/v1/threads/$THREAD/messages")"
start sync
POST_SYNC="$(rps -s "$WORK/post.lua" "$ADDR/frontend/v1/threads/$THREAD/messages")"
PER_FSYNC="$(curl -s -H "Authorization: Bearer $ADMIN_KEY" "$ADDR/admin/v1/stats" | python3 -c '
import json, sys
shards = json.load(sys.stdin)["shards"]
records = sum(s["wal"]["records_flushed"] for s in shards)
fsyncs = sum(s["wal"]["fsyncs"] for s in shards)
print(f"{records / max(fsyncs, 1):.1f}")')"

start none --encryption
PAGE_ENC="$(rps "$ADDR/frontend/v1/threads/$THREAD/messages?limit=50")"
POST_NONE_ENC="$(rps -s "$WORK/post.lua" "$ADDR/frontend/v1/threads/$THREAD/messages")"
start sync --encryption
POST_SYNC_ENC="$(rps -s "$WORK/post.lua" "$ADDR/frontend/v1/threads/$THREAD/messages")"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "machine: $(nproc) cores, kernel $(uname -r), commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
echo "wrk -t2 -c$CONNECTIONS -d${DURATION}s on loopback; server and wrk share the machine"
echo
echo "| request | req/s | ratio | baseline |"
echo "|---|---|---|---|"
echo "| GET /healthz | ${BASE%.*} | 1.00 | itself |"
echo "| GET newest-50 page | ${PAGE%.*} | $(ratio "$PAGE" "$BASE") | GET /healthz |"
echo "| POST message, durability none | ${POST_NONE%.*} | $(ratio "$POST_NONE" "$BASE") | GET /healthz |"
echo "| POST message, durability sync | ${POST_SYNC%.*} | $(ratio "$POST_SYNC" "$POST_NONE") | POST, durability none |"
echo "| GET newest-50 page, encrypted | ${PAGE_ENC%.*} | $(ratio "$PAGE_ENC" "$PAGE") | GET page, not encrypted |"
echo "| POST message, durability none, encrypted | ${POST_NONE_ENC%.*} | $(ratio "$POST_NONE_ENC" "$POST_NONE") | POST none, not encrypted |"
echo "| POST message, durability sync, encrypted | ${POST_SYNC_ENC%.*} | $(ratio "$POST_SYNC_ENC" "$POST_SYNC") | POST sync, not encrypted |"
echo
echo "records per fsync during the sync POST run: $PER_FSYNC"
