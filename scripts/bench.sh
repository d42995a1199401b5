#!/usr/bin/env bash
# The benchmark suite: ProgressDB against real baselines measured in the
# same run on the same machine, written to bench/RESULTS.md as ratios.
#
#   scripts/bench.sh [seconds per measurement, default 10]
#
# Baselines: nginx serving a static JSON page, a tiny JSON and a fixed POST
# answer (Debian nginx), and Redis Streams with appendfsync always (XADD,
# XREVRANGE COUNT 50) through redis-benchmark, over a unix socket and over
# TCP on loopback (the transport ProgressDB's clients use), and the open
# loops T5 and T7 again against Redis (progressdb-bench's xadd scenario,
# over TCP) at the same rate. The server under test gets
# CPU 0, the load generators CPU 1 (when the machine has two or more).
# Installs what it needs with apt-get (run as root on Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-10}"
# T7's sustained run and T8's footprint run (posts) can be shortened for a
# quick look; RESULTS.md records what was used.
SUSTAINED_SECONDS="${SUSTAINED_SECONDS:-60}"
FOOTPRINT_POSTS="${FOOTPRINT_POSTS:-1000000}"
WARMUP=2
CONNECTIONS=64
KEY="bench-backend-0123456789"
ADMIN="bench-admin-0123456789"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need redis-server || ! need redis-benchmark || ! need wrk; then
  apt-get update -qq
  apt-get install -y -qq nginx-light redis-server redis-tools wrk >/dev/null
fi
cargo build --release --locked -q --bin progressdb --bin progressdb-bench

if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=0; CLIENT_CPU=1; else SERVER_CPU=0; CLIENT_CPU=0; fi
# taskset execs its command, so $! after `taskset ... &` is the server's pid.
on_client() { taskset -c "$CLIENT_CPU" "$@"; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
py() { python3 -c "$@"; }

# --- nginx --------------------------------------------------------------
mkdir -p "$WORK/nginx/www" "$WORK/nginx/tmp"
# A page shaped like a newest-50 response: 50 messages of ~190 bytes.
py 'import json
msgs=[{"id":"33n7p71hm22r0rcvr6rq3m3c%02d"%i,"thread":"06h0agbazw0020000000017n8w","author":"bench","ts":1795382762482468224+i,"body":{"text":"a benchmark message with some ordinary chat text"},"version":1} for i in range(50)]
print(json.dumps({"data":msgs,"pagination":{"has_more":True,"next_cursor":msgs[-1]["id"]}},separators=(",",":")))' >"$WORK/nginx/www/page.json"
PAGE_BYTES=$(stat -c %s "$WORK/nginx/www/page.json")
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp; proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp; uwsgi_temp_path $WORK/nginx/tmp; scgi_temp_path $WORK/nginx/tmp;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18181;
    default_type application/json;
    location = /page.json { root $WORK/nginx/www; }
    location = /tiny { return 200 '{"status":"ok"}'; }
    location = /post { client_body_buffer_size 16k; return 201 '{"id":"33n7p71hm22r0rcvr6rq3m3ccc","ts":1795382762482468224}'; }
  }
}
CONF
taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)

# --- redis --------------------------------------------------------------
mkdir -p "$WORK/redis"
REDIS_PORT=18182
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --unixsocket "$WORK/redis/redis.sock" --dir "$WORK/redis" \
  --appendonly yes --appendfsync always --save '' --daemonize no >"$WORK/redis/log" 2>&1 &
PIDS+=($!)

# --- progressdb ---------------------------------------------------------
taskset -c "$SERVER_CPU" ./target/release/progressdb --db "$WORK/db" --addr 127.0.0.1:0 --shards 1 \
  --api-key "$KEY" --admin-key "$ADMIN" >"$WORK/server.out" 2>&1 &
SERVER_PID=$!
PIDS+=($SERVER_PID)
for _ in $(seq 100); do grep -q "listening on" "$WORK/server.out" && [ -S "$WORK/redis/redis.sock" ] && break; sleep 0.1; done
ADDR="$(grep -o '127.0.0.1:[0-9]*' "$WORK/server.out" | head -1)"
sleep 0.5

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
# Ticks the hypervisor took from the server's CPU (steal, /proc/stat): a
# virtual machine whose host is busy loses its CPU for milliseconds at a
# time, and that shows up in every latency percentile below.
steal_ticks() { awk -v cpu="cpu$SERVER_CPU" '$1 == cpu {print $9}' /proc/stat; }
STEAL_START=$(steal_ticks)
TICKS_PER_S=$(getconf CLK_TCK)

# Requests the server has answered (all shards), for CPU per request: the
# CPU window also holds the run's warm-up and preload, so CPU is divided by
# every request served in it, not only the measured ones.
served() {
  curl -s -H "Authorization: Bearer $ADMIN" "http://${BENCH_ADDR:-$ADDR}/admin/v1/stats" \
    | py 'import json,sys; print(sum(s["requests"]["total"] for s in json.load(sys.stdin)["shards"]))'
}
bench() { # name, extra progressdb-bench args...
  local name="$1"; shift
  local before after served_before
  served_before=$(served)
  before=$(cpu_ticks)
  local steal_before; steal_before=$(steal_ticks)
  on_client ./target/release/progressdb-bench --addr "${BENCH_ADDR:-$ADDR}" --key "$KEY" --quiet \
    --duration "${DURATION:-$SECONDS_PER_RUN}" --warmup "$WARMUP" --json "$WORK/$name.json" "$@" >"$WORK/$name.txt"
  after=$(cpu_ticks)
  echo $((after - before)) >"$WORK/$name.cpu"
  echo $(( $(steal_ticks) - steal_before )) >"$WORK/$name.steal"
  echo $(( $(served) - served_before )) >"$WORK/$name.served"
}
field() { py "import json; d=json.load(open('$WORK/$1.json')); print($2)"; }
wrk_rps() { on_client wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
redis_rps() { on_client redis-benchmark -s "$WORK/redis/redis.sock" -c "$CONNECTIONS" -n "$1" --csv "${@:2}" | tail -1 | cut -d'"' -f4; }
redis_tcp_rps() { on_client redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNECTIONS" -n "$1" --csv "${@:2}" | tail -1 | cut -d'"' -f4; }

echo "baselines: nginx" >&2
NGINX_TINY=$(wrk_rps http://127.0.0.1:18181/tiny)
NGINX_PAGE=$(wrk_rps http://127.0.0.1:18181/page.json)
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"body":{"text":"a benchmark message with some ordinary chat text"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
NGINX_POST=$(wrk_rps -s "$WORK/post.lua" http://127.0.0.1:18181/post)

echo "baselines: redis" >&2
REDIS_XADD=$(redis_rps 200000 XADD bench '*' text "a benchmark message with some ordinary chat text")
REDIS_XREV=$(redis_rps 100000 XREVRANGE bench + - COUNT 50)
REDIS_XADD_TCP=$(redis_tcp_rps 200000 XADD bench '*' text "a benchmark message with some ordinary chat text")
REDIS_XREV_TCP=$(redis_tcp_rps 100000 XREVRANGE bench + - COUNT 50)

echo "T1 durable POST, closed loop, $CONNECTIONS connections" >&2
bench t1 --scenario post --connections "$CONNECTIONS" --threads 100
echo "T3 GET newest-50 page" >&2
bench t3 --scenario read --connections "$CONNECTIONS" --preload-threads 100 --preload-messages 60
echo "T4 open loop 20k req/s, 90% GET / 10% POST" >&2
bench t4 --scenario mix --read-percent 90 --rate 20000 --connections "$CONNECTIONS"
echo "T5 open loop POST 20k req/s" >&2
bench t5 --scenario post --rate 20000 --connections "$CONNECTIONS"
# The same open loop against Redis (XADD of the same text, appendfsync
# always, over TCP): a durable append's latency on this machine, measured
# the same way.
redis_open_loop() { # name, rate, seconds
  local steal_before; steal_before=$(steal_ticks)
  on_client ./target/release/progressdb-bench --addr "127.0.0.1:$REDIS_PORT" --scenario xadd --quiet \
    --rate "$2" --duration "$3" --warmup "$WARMUP" --connections "$CONNECTIONS" --json "$WORK/$1.json" >"$WORK/$1.txt"
  echo $(( $(steal_ticks) - steal_before )) >"$WORK/$1.steal"
}
echo "T5 baseline: Redis XADD open loop 20k req/s" >&2
redis_open_loop t5_redis 20000 "$SECONDS_PER_RUN"
echo "T6 rate steps (mix 90/10): highest rate with p99 <= 5 ms" >&2
KNEE=0
STEPS=""
for rate in 5000 10000 15000 20000 25000 30000 40000; do
  bench "t6_$rate" --scenario mix --read-percent 90 --rate "$rate" --connections "$CONNECTIONS"
  p99=$(field "t6_$rate" 'd["latency_us"]["p99"]/1000')
  got=$(field "t6_$rate" 'd["throughput_rps"]')
  STEPS="$STEPS| $rate | $(printf %.0f "$got") | $(printf %.2f "$p99") |"$'\n'
  if py "import sys; sys.exit(0 if $p99 <= 5 and $got >= 0.995*$rate else 1)"; then KNEE=$rate; else break; fi
done
stalls() { curl -s -H "Authorization: Bearer $ADMIN" "http://$ADDR/metrics" | awk '/^progressdb_shard_stalls_total / {print $2}'; }
T1_RPS_FOR_FOOTPRINT=$(field t1 'd["throughput_rps"]')
echo "T7 sustained durable POSTs: ${SUSTAINED_SECONDS} s open loop at 70% of T1" >&2
RATE7=$(py "import json; print(int(0.7*json.load(open('$WORK/t1.json'))['throughput_rps']))")
STALLS_BEFORE=$(stalls)
metrics() { curl -s -H "Authorization: Bearer $ADMIN" "http://$ADDR/metrics"; }
metrics >"$WORK/t7.metrics.before"
DURATION=$SUSTAINED_SECONDS bench t7 --scenario post --rate "$RATE7" --connections "$CONNECTIONS" --threads 100
STALLS7=$(( $(stalls) - STALLS_BEFORE ))
metrics >"$WORK/t7.metrics.after"
echo "T7 baseline: Redis XADD open loop at the same rate" >&2
redis_open_loop t7_redis "$RATE7" "$SUSTAINED_SECONDS"
# The log's flushes (write + fdatasync) during T7, from the server's
# histogram: how much of the write latency is the disk's.
FLUSHES7=$(py "
import re
def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(r'progressdb_wal_flush_duration_seconds_bucket\{shard=\"\d+\",le=\"([^\"]+)\"\} (\d+)', line)
        if m: out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out
b, a = buckets('$WORK/t7.metrics.before'), buckets('$WORK/t7.metrics.after')
cum = [(le, a[le] - b.get(le, 0)) for le in a]
total = cum[-1][1]
def bound(q):
    return next(le for le, c in cum if c >= q * total)
ms = lambda le: le if le == '+Inf' else '%.3g' % (float(le) * 1000)
over = lambda limit: total - max((c for le, c in cum if le != '+Inf' and float(le) <= limit), default=0)
print(f'{total} flushes; p50 ≤ {ms(bound(0.5))} ms, p99 ≤ {ms(bound(0.99))} ms, slowest ≤ {ms(bound(1.0))} ms; over 2 ms: {over(0.002048)}, over 8 ms: {over(0.008192)}')
")
RPF=$(curl -s -H "Authorization: Bearer $ADMIN" "http://$ADDR/admin/v1/stats" | py 'import json,sys
s=json.load(sys.stdin)["shards"]; r=sum(x["wal"]["records_flushed"] for x in s); f=sum(x["wal"]["fsyncs"] for x in s)
print(f"{r/max(f,1):.1f}")')

# --- T8 footprint and restart, T9 live tail: each on a fresh 1-shard server
start_server() { # dir -> sets S_PID, S_ADDR and S_START_SECONDS (exec to listening)
  local dir="$1" started; started=$(date +%s.%N)
  taskset -c "$SERVER_CPU" ./target/release/progressdb --db "$dir" --addr 127.0.0.1:0 --shards 1 \
    --api-key "$KEY" --admin-key "$ADMIN" >"$dir.out" 2>&1 &
  S_PID=$!
  PIDS+=($S_PID)
  for _ in $(seq 600); do grep -q "listening on" "$dir.out" && break; sleep 0.05; done
  S_ADDR="$(grep -o '127.0.0.1:[0-9]*' "$dir.out" | head -1)"
  S_START_SECONDS=$(py "print(f'{$(date +%s.%N) - $started:.2f}')")
}
admin_stats() { curl -s -H "Authorization: Bearer $ADMIN" "http://$S_ADDR/admin/v1/stats"; }
echo "T8 footprint: $FOOTPRINT_POSTS durable POSTs, then restarts" >&2
start_server "$WORK/fp"
T8_SECONDS=$(py "print(int($FOOTPRINT_POSTS / max($T1_RPS_FOR_FOOTPRINT, 1)) + 1)")
BENCH_ADDR="$S_ADDR" DURATION=$T8_SECONDS bench t8 --scenario post --connections "$CONNECTIONS" --threads 1000
T8_POSTS=$(field t8 'd["requests"]')
T8_RSS_KIB=$(awk '/VmRSS/ {print $2}' "/proc/$S_PID/status")
# One stored message as the API returns it: its payload, ids and timestamps.
T8_MESSAGE_BYTES=$(curl -s -H "Authorization: Bearer $KEY" -H "X-User-ID: bench" \
  "http://$S_ADDR/frontend/v1/threads?limit=1" | py 'import json,sys; print(json.load(sys.stdin)["threads"][0]["key"])' \
  | xargs -I{} curl -s -H "Authorization: Bearer $KEY" -H "X-User-ID: bench" "http://$S_ADDR/frontend/v1/threads/{}/messages?limit=1" \
  | py 'import json,sys; print(len(json.dumps(json.load(sys.stdin)["messages"][0], separators=(",",":"))))')
kill -TERM "$S_PID"; wait "$S_PID" 2>/dev/null || true
T8_TABLE_BYTES=$(du -sb "$WORK/fp/shard-0/store" | cut -f1)
T8_DIR_BYTES=$(du -sb "$WORK/fp" | cut -f1)
start_server "$WORK/fp"; T8_CLEAN_START=$S_START_SECONDS
BENCH_ADDR="$S_ADDR" DURATION=5 bench t8b --scenario post --connections "$CONNECTIONS" --threads 1000
T8_UNFLUSHED=$(du -sb "$WORK/fp/shard-0/wal" | cut -f1)
kill -KILL "$S_PID"; wait "$S_PID" 2>/dev/null || true
start_server "$WORK/fp"; T8_KILL_START=$S_START_SECONDS
kill -TERM "$S_PID"; wait "$S_PID" 2>/dev/null || true
echo "T9 live tail: 1000 subscribers on one thread, 100 posts/s" >&2
start_server "$WORK/tail"
BENCH_ADDR="$S_ADDR" DURATION=$SECONDS_PER_RUN bench t9 --scenario tail --subscribers 1000 --rate 100 --connections 8
kill -TERM "$S_PID"; wait "$S_PID" 2>/dev/null || true

ratio() { py "print(f'{$1 / $2:.2f}')"; }
stolen() { py "print(f'{int(open(\"$WORK/$1.steal\").read())/$TICKS_PER_S:.1f}')"; }
STEAL_SECONDS=$(py "print(f'{($(steal_ticks) - $STEAL_START)/$TICKS_PER_S:.1f}')")
us_per_request() { py "print(f'{int(open(\"$WORK/$1.cpu\").read())/$TICKS_PER_S*1e6/max(int(open(\"$WORK/$1.served\").read()),1):.1f}')"; }
T1=$(field t1 'd["throughput_rps"]'); T3=$(field t3 'd["throughput_rps"]')
lat() { field "$1" "'%.2f / %.2f / %.2f' % (d['latency_us']['p50']/1000, d['latency_us']['p99']/1000, d['latency_us']['p999']/1000)"; }
achieved() { field "$1" "'%.1f%%' % (100*d['throughput_rps']/d['offered_rate'])"; }
p99_ratio() { py "import json; a, b = (json.load(open(f'$WORK/{n}.json'))['latency_us']['p99'] for n in ('$1', '$2')); print(f'{a / b:.2f}')"; }
errors() { field "$1" "d['errors']['io']+d['errors']['timeout']+d['errors']['connect']+sum(d['errors']['by_status'].values())"; }

{
  echo "# Benchmark results"
  echo
  echo "Produced by \`scripts/bench.sh $SECONDS_PER_RUN\` on $(date -u +%Y-%m-%d)."
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB,"
  echo "kernel $(uname -r), commit $(git rev-parse --short HEAD). Server (1 shard, durability sync) and"
  echo "baselines pinned to CPU $SERVER_CPU, load generators to CPU $CLIENT_CPU; $CONNECTIONS connections, ${SECONDS_PER_RUN} s per"
  echo "measurement after ${WARMUP} s warm-up. Every figure is a ratio to a baseline measured in this run."
  echo "Redis rows without \"over TCP\" use a unix socket."
  echo "Server CPU per request divides the server's CPU time over a run (warm-up and preload included) by every"
  echo "request it answered in that time."
  echo "The hypervisor took ${STEAL_SECONDS} s of CPU $SERVER_CPU over the whole run (steal time in /proc/stat):"
  echo "T1 $(stolen t1) s, T4 $(stolen t4) s, T5 $(stolen t5) s, T7 $(stolen t7) s of its ${SUSTAINED_SECONDS} s, the Redis T7 $(stolen t7_redis) s."
  echo
  echo "| scenario | ProgressDB | baseline | baseline value | ratio |"
  echo "|---|---|---|---|---|"
  echo "| T1 durable POST, req/s | $(printf %.0f "$T1") | Redis XADD, appendfsync always | $(printf %.0f "$REDIS_XADD") | $(ratio "$T1" "$REDIS_XADD") |"
  echo "| T1 durable POST, req/s | $(printf %.0f "$T1") | Redis XADD, appendfsync always, over TCP | $(printf %.0f "$REDIS_XADD_TCP") | $(ratio "$T1" "$REDIS_XADD_TCP") |"
  echo "| T1 durable POST, req/s | $(printf %.0f "$T1") | nginx fixed POST answer (wrk) | $(printf %.0f "$NGINX_POST") | $(ratio "$T1" "$NGINX_POST") |"
  echo "| T3 GET newest-50 page, req/s | $(printf %.0f "$T3") | Redis XREVRANGE COUNT 50 | $(printf %.0f "$REDIS_XREV") | $(ratio "$T3" "$REDIS_XREV") |"
  echo "| T3 GET newest-50 page, req/s | $(printf %.0f "$T3") | Redis XREVRANGE COUNT 50, over TCP | $(printf %.0f "$REDIS_XREV_TCP") | $(ratio "$T3" "$REDIS_XREV_TCP") |"
  echo "| T3 GET newest-50 page, req/s | $(printf %.0f "$T3") | nginx static page of ${PAGE_BYTES} B (wrk) | $(printf %.0f "$NGINX_PAGE") | $(ratio "$T3" "$NGINX_PAGE") |"
  echo "| tiny GET ceiling, req/s | | nginx tiny JSON (wrk) | $(printf %.0f "$NGINX_TINY") | |"
  echo
  echo "Open loop (latency from each request's planned send time):"
  echo
  echo "| scenario | offered req/s | achieved | p50 / p99 / p99.9 ms | errors | server CPU µs/request |"
  echo "|---|---|---|---|---|---|"
  echo "| T4 90% GET / 10% POST | 20000 | $(achieved t4) | $(lat t4) | $(errors t4) | $(us_per_request t4) |"
  echo "| T5 POST | 20000 | $(achieved t5) | $(lat t5) | $(errors t5) | $(us_per_request t5) |"
  echo "| T7 POST, ${SUSTAINED_SECONDS} s at 70% of T1 | $RATE7 | $(achieved t7) | $(lat t7) | $(errors t7) | $(us_per_request t7) |"
  echo "| T5 baseline: Redis XADD, appendfsync always, over TCP | 20000 | $(achieved t5_redis) | $(lat t5_redis) | $(errors t5_redis) | |"
  echo "| T7 baseline: Redis XADD, appendfsync always, over TCP | $RATE7 | $(achieved t7_redis) | $(lat t7_redis) | $(errors t7_redis) | |"
  echo
  echo "p99 ratio to the Redis baseline at the same rate (below 1 is better): T5 $(p99_ratio t5 t5_redis), T7 $(p99_ratio t7 t7_redis);"
  echo "Redis's worst one-second p99 in T7: $(field t7_redis "'%.2f' % (max(s['p99_us'] for s in d['timeline'] if s['phase']=='measure')/1000)") ms, max $(field t7_redis "'%.2f' % (d['latency_us']['max']/1000)") ms."
  echo
  echo "T7 sustained writes: max latency $(field t7 "'%.2f' % (d['latency_us']['max']/1000)") ms, worst one-second p99"
  echo "$(field t7 "'%.2f' % (max(s['p99_us'] for s in d['timeline'] if s['phase']=='measure')/1000)") ms, shard stalls over 10 ms reported by the server: $STALLS7; errors by status:"
  echo "$(field t7 "d['errors']['by_status'] or 'none'") (503 = writes refused while memtable flushes were behind)."
  echo "Log flushes during T7 (write + fdatasync, bucket bounds are powers of two µs): $FLUSHES7."
  echo
  echo "Closed loop server CPU: T1 $(us_per_request t1) µs/request, T3 $(us_per_request t3) µs/request."
  echo "Records per fsync over the whole run: $RPF."
  echo
  echo "T6 rate steps (90% GET / 10% POST): knee = **$KNEE req/s** (highest rate with p99 ≤ 5 ms and ≥ 99.5% achieved)."
  echo
  echo "| offered req/s | achieved req/s | p99 ms |"
  echo "|---|---|---|"
  printf "%s" "$STEPS"
  echo
  echo "T8 footprint after $T8_POSTS durable POSTs of the harness's chat message (1 shard, 1000 threads):"
  echo
  echo "| measure | value |"
  echo "|---|---|"
  echo "| one message as stored and served (JSON with key, thread, author, timestamps, body) | $T8_MESSAGE_BYTES B |"
  echo "| table bytes per message after a clean stop (message, change, thread and index entries, compressed) | $(py "print(round($T8_TABLE_BYTES/$T8_POSTS))") B ($(py "print(f'{$T8_TABLE_BYTES/$T8_POSTS/$T8_MESSAGE_BYTES:.2f}')")× the message) |"
  echo "| data directory bytes per message (tables + WAL kept + 64 MiB spare segment) | $(py "print(round($T8_DIR_BYTES/$T8_POSTS))") |"
  echo "| server RSS after the posts | $(py "print(round($T8_RSS_KIB/1024))") MiB |"
  echo "| start after a clean stop | $T8_CLEAN_START s |"
  echo "| start after SIGKILL with $(py "print(round($T8_UNFLUSHED/1048576))") MiB of WAL | $T8_KILL_START s |"
  echo
  echo "T9 live tail (1000 SSE subscribers on one thread, 100 posts/s): post-to-event delivery"
  echo "p50 / p99 / max $(field t9 "'%.2f / %.2f / %.2f' % (d['tail']['delivery_us']['p50']/1000, d['tail']['delivery_us']['p99']/1000, d['tail']['delivery_us']['max']/1000)") ms,"
  echo "$(field t9 "d['tail']['received']") of $(field t9 "d['tail']['expected']") deliveries received."
  echo
  echo "Targets from the benchmark issue: T1 ≥ 1.0× Redis XADD-always (goal 0.6× nginx POST);"
  echo "T3 ≥ 0.7× Redis XREVRANGE-50 (goal 0.5× nginx page); T4 p99 ≤ 2 ms, p99.9 ≤ 10 ms,"
  echo "≥ 99.5% achieved, 0 errors."
} >bench/RESULTS.md
cat bench/RESULTS.md
