#!/usr/bin/env bash
# Group chat at size: one user ("reader") takes part in THREADS threads
# (default 5000) owned by another user and spread over every shard, each
# with one message the reader has not read. Measures the reader's first
# listing page (cold: it loads the member index; then warm, by created_ts
# and by updated_ts) with progressdb-bench, and shows the unread counts
# the page carries.
#
#   scripts/bench-group-chat.sh [threads, default 5000] [seconds per run, default 10]
#
# Runs the release build with --durability none (seeding speed only; the
# listing is a read). Prints progressdb-bench's tables.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-5000}"
DURATION="${2:-10}"
KEY="bench-key-0123456789"
BIN="${CARGO_TARGET_DIR:-target}/release"
cargo build --release --locked -q --bin progressdb --bin progressdb-bench

WORK="$(mktemp -d)"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN/progressdb" --db "$WORK/db" --addr 127.0.0.1:0 --api-key "$KEY" --durability none >"$WORK/out" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
ADDR="$(grep -o 'http://[0-9.:]*' "$WORK/out" | head -1)"

# One curl process per phase: its requests share keep-alive connections.
requests() { # path-format body user
  for i in $(seq "$THREADS"); do
    [ "$i" -gt 1 ] && echo next
    # shellcheck disable=SC2059
    printf 'url = "%s%s"\nheader = "Authorization: Bearer %s"\nheader = "X-User-ID: %s"\nheader = "Content-Type: application/json"\ndata = "%s"\noutput = "/dev/null"\n' \
      "$ADDR" "$(printf "$1" "$i")" "$KEY" "$3" "$(printf "$2" "$i" "$i")"
  done
}
started=$(date +%s.%N)
requests "/frontend/v1/threads" '{\\"key\\":\\"group-%s\\",\\"title\\":\\"group %s\\",\\"participants\\":[\\"reader\\"]}' owner >"$WORK/create.cfg"
curl -s -K "$WORK/create.cfg"
requests "/frontend/v1/threads/group-%s/messages" '{\\"body\\":\\"hello\\"}' owner >"$WORK/post.cfg"
curl -s -K "$WORK/post.cfg"
echo "seeded $THREADS threads and $THREADS messages in $(echo "$(date +%s.%N) - $started" | bc) s"

LIST="$ADDR/frontend/v1/threads?limit=50"
AUTH=(-H "Authorization: Bearer $KEY" -H "X-User-ID: reader")
echo "cold first page (loads the reader's member index on every shard):"
curl -s -o /dev/null -w "  %{time_total} s\n" "${AUTH[@]}" "$LIST"
curl -s "${AUTH[@]}" "$LIST" | head -c 400; echo
for sort in created_ts updated_ts; do
  echo "warm first page, sort_by=$sort:"
  "$BIN/progressdb-bench" --addr "$ADDR" --key "$KEY" --user reader --scenario url \
    --url "/frontend/v1/threads?limit=50&sort_by=$sort" --duration "$DURATION" --warmup 1 --connections 4
done
