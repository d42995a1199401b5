#!/usr/bin/env bash
# Records a CPU profile of the server (release build) while progressdb-bench
# runs one named scenario against it, then prints the hottest symbols.
#
#   scripts/profile.sh NAME [SECONDS, default 10] [extra progressdb-bench flags...]
#
# NAME is one of
#   post-durable | post-batch | post-none   POST, closed loop, 64 connections, over
#                                           100 threads, with --durability sync | batch | none
#   read                                    newest-50 page of 100 preloaded threads
#   mix                                     90% reads / 10% posts, closed loop
#   hot                                     every post to one thread
#   tail                                    1000 live-tail subscribers, posts at 200/s
# e.g. `scripts/profile.sh post-durable 10`.
#
# The server (one shard) runs on CPU 0; progressdb-bench and perf itself on
# CPU 1 when the machine has two or more, as in scripts/bench.sh. Everything
# listens on 127.0.0.1 only. `perf record -g` follows the server's pid (all
# its threads) for SECONDS, starting once the load generator's setup is done;
# every step has a time limit. The perf.data file is kept and its path printed.
# Environment: PERF_CALL_GRAPH (default fp; `dwarf` gives deeper Rust stacks
# at the cost of a much larger file), CARGO_TARGET_DIR, CARGO_BUILD_JOBS.
# PROFILE_ALLOCATIONS=1 counts heap allocations instead: uprobes on the
# allocator's entry points (mimalloc's, which the server links) counted over
# the same window and divided by the requests answered in it. A count, not a
# time, so it is the same on a quiet and on a noisy machine; the probes slow
# the server down many times over, so throughput in that mode means nothing.
# Installs perf with apt-get (Debian's linux-perf) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="${1:?usage: scripts/profile.sh NAME [SECONDS] [progressdb-bench flags...]}"
SECONDS_TO_RECORD="${2:-10}"
shift $(( $# >= 2 ? 2 : 1 ))
KEY="profile-backend-0123456789"
TARGET="${CARGO_TARGET_DIR:-target}"

case "$SECONDS_TO_RECORD" in
  ''|*[!0-9]*) echo "SECONDS must be a whole number, got $SECONDS_TO_RECORD" >&2; exit 2 ;;
esac
if [ "$SECONDS_TO_RECORD" -lt 1 ] || [ "$SECONDS_TO_RECORD" -gt 300 ]; then
  echo "SECONDS must be between 1 and 300" >&2; exit 2
fi

DURABILITY=sync
case "$NAME" in
  post-durable) LOAD=(--scenario post --connections 64 --threads 100) ;;
  post-batch) DURABILITY=batch; LOAD=(--scenario post --connections 64 --threads 100) ;;
  post-none) DURABILITY=none; LOAD=(--scenario post --connections 64 --threads 100) ;;
  read) LOAD=(--scenario read --connections 64 --preload-threads 100 --preload-messages 60) ;;
  mix) LOAD=(--scenario mix --read-percent 90 --connections 64 --preload-threads 100 --preload-messages 20) ;;
  hot) LOAD=(--scenario hot --connections 64) ;;
  tail) LOAD=(--scenario tail --subscribers 1000 --rate 200 --connections 8) ;;
  *) echo "unknown scenario $NAME (see the top of $0)" >&2; exit 2 ;;
esac

if ! command -v perf >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq linux-perf >/dev/null
fi
cargo build --release --locked -q --bin progressdb --bin progressdb-bench

if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=0; CLIENT_CPU=1; else SERVER_CPU=0; CLIENT_CPU=0; fi
OUT_DIR="$TARGET/profile"
mkdir -p "$OUT_DIR"
PERF_DATA="$(realpath "$OUT_DIR")/$NAME-$(date -u +%Y%m%dT%H%M%SZ).perf.data"

WORK="$(mktemp -d)"
SERVER_PID=""
BENCH_PID=""
cleanup() {
  if [ -n "$BENCH_PID" ]; then kill "$BENCH_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "the server did not stop within 20 s of SIGTERM; killing it" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${PROFILE_ALLOCATIONS:-0}" = 1 ]; then remove_probes; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ALLOCATORS=(mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned)
remove_probes() { perf probe -q -d 'probe_progressdb:*' 2>/dev/null || true; }

# Allocator calls per request over SECONDS_TO_RECORD seconds of the load;
# the bench runs with --json so its per-second counts cover the same window.
# Probes are added before the load starts (perf reads the binary's debug
# information for each, which takes seconds); they cost nothing until
# perf stat enables them.
add_probes() {
  remove_probes
  for symbol in "${ALLOCATORS[@]}"; do
    perf probe -q -x "$TARGET/release/progressdb" --add "$symbol" 2>"$WORK/probe.err" \
      || { cat "$WORK/probe.err" >&2; remove_probes; exit 1; }
  done
}

count_allocations() {
  echo "counting allocations of server pid $SERVER_PID for $SECONDS_TO_RECORD s under $NAME" >&2
  timeout $((SECONDS_TO_RECORD + 30)) perf stat -x, -e 'probe_progressdb:*' -p "$SERVER_PID" \
    -o "$WORK/allocations" -- sleep "$SECONDS_TO_RECORD" || true
  remove_probes
  wait "$BENCH_PID" || true
  BENCH_PID=""
  python3 - "$WORK/bench.json" "$WORK/allocations" "$SECONDS_TO_RECORD" <<'PY'
import json, sys
report, counts, window = json.load(open(sys.argv[1])), open(sys.argv[2]), float(sys.argv[3])
# The window opens with the load (warm-up second included).
requests = sum(tick["requests"] for tick in report["timeline"] if tick["t_s"] <= window + 0.5)
calls = {}
for line in counts:
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0].isdigit():
        calls[fields[2].split(":")[-1]] = int(fields[0])
print(f"requests answered in the window: {requests}")
for name, count in calls.items():
    print(f"{name:24} {count / max(requests, 1):8.2f} per request")
print(f"{'all':24} {sum(calls.values()) / max(requests, 1):8.2f} per request")
PY
}

# taskset execs its command, so $! is the server's own pid.
taskset -c "$SERVER_CPU" "$TARGET/release/progressdb" --db "$WORK/db" --addr 127.0.0.1:0 --shards 1 \
  --api-key "$KEY" --durability "$DURABILITY" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/server.out" && break; sleep 0.1; done
ADDR="$(grep -o '127\.0\.0\.1:[0-9]*' "$WORK/server.out" | head -1)"
[ -n "$ADDR" ] || { echo "the server did not start:" >&2; cat "$WORK/server.err" >&2; exit 1; }

if [ "${PROFILE_ALLOCATIONS:-0}" = 1 ]; then add_probes; fi

# One second of warmup lets perf attach before the measured window; the
# run is bounded by the duration plus setup time.
timeout $((SECONDS_TO_RECORD + 180)) taskset -c "$CLIENT_CPU" "$TARGET/release/progressdb-bench" \
  --addr "$ADDR" --key "$KEY" --duration "$SECONDS_TO_RECORD" --warmup 1 "${LOAD[@]}" \
  --json "$WORK/bench.json" "$@" \
  >"$WORK/bench.out" 2>"$WORK/bench.err" &
BENCH_PID=$!
# The bench prints its "... against ADDR" line when setup is done and load starts.
for _ in $(seq 1200); do
  grep -q " against " "$WORK/bench.err" && break
  kill -0 "$BENCH_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q " against " "$WORK/bench.err" || { echo "progressdb-bench did not start its load:" >&2; cat "$WORK/bench.err" >&2; exit 1; }

if [ "${PROFILE_ALLOCATIONS:-0}" = 1 ]; then
  count_allocations
  exit 0
fi

echo "profiling server pid $SERVER_PID for $SECONDS_TO_RECORD s under $NAME (durability $DURABILITY)" >&2
timeout $((SECONDS_TO_RECORD + 30)) taskset -c "$CLIENT_CPU" perf record -q --call-graph "${PERF_CALL_GRAPH:-fp}" \
  -p "$SERVER_PID" -o "$PERF_DATA" -- sleep "$SECONDS_TO_RECORD" 2>"$WORK/perf.err" \
  || { cat "$WORK/perf.err" >&2; exit 1; }
BENCH_STATUS=0
wait "$BENCH_PID" || BENCH_STATUS=$?
BENCH_PID=""

cat "$WORK/bench.out"
[ "$BENCH_STATUS" -eq 0 ] || echo "progressdb-bench exited with status $BENCH_STATUS" >&2
echo
echo "top symbols (self time, server threads):"
# -g none: one line per symbol (the call chains are in the file); the sed
# drops the empty columns perf pads each line with.
# (sed -n, not head: head would close the pipe early, and with pipefail the
# SIGPIPE would end the script before it names the file.)
perf report -i "$PERF_DATA" --no-children --sort symbol -g none --stdio 2>/dev/null \
  | grep -v -e '^#' -e '^$' | sed -e 's/\([[:space:]]\+-\)*[[:space:]]*$//' | sed -n '1,25p'
echo
echo "perf.data: $PERF_DATA"
echo "explore:   perf report -i $PERF_DATA --no-children"
