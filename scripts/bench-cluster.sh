#!/usr/bin/env bash
# Clustered mode against one node, same machine, same run: durable POSTs at
# a fixed rate through one node of a 3-node cluster (3 nats-servers that
# fsync every message, as scripts/cluster-up.sh starts them) and through a
# single node, then the failover time after `kill -9` of the node owning
# the most partitions. Prints a Markdown section for bench/RESULTS.md.
#
#   scripts/bench-cluster.sh [rate, default 300] [seconds, default 10]
#
# Everything listens on 127.0.0.1 (nats 4222-4224, nodes 8081-8083) and is
# stopped at the end, also on failure; every wait has a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-300}"
SECONDS_PER_RUN="${2:-10}"
case "$RATE$SECONDS_PER_RUN" in *[!0-9]*) echo "rate and seconds are whole numbers" >&2; exit 2 ;; esac
KEY="bench-cluster-backend-0123456789"
ADMIN="bench-cluster-admin-0123456789"
WORK=$(mktemp -d)
export CLUSTER_DIR="$WORK/cluster" API_KEY="$KEY" ADMIN_KEY="$ADMIN" NODE_ARGS="--shards 1"
SINGLE_PID=""
cleanup() {
  scripts/cluster-up.sh down >/dev/null 2>&1 || true
  [ -n "$SINGLE_PID" ] && kill "$SINGLE_PID" 2>/dev/null || true
  # Stopped processes may still be writing their directories for a moment.
  for _ in $(seq 100); do pgrep -f "$WORK" >/dev/null || break; sleep 0.1; done
  rm -rf "$WORK" || true
}
trap cleanup EXIT

cargo build --release --locked --quiet --bin progressdb --bin progressdb-bench

# One open-loop run of durable POSTs against $1; prints "p50 p99 achieved%".
post_at_rate() {
  timeout $((SECONDS_PER_RUN + 120)) ./target/release/progressdb-bench --addr "$1" --key "$KEY" \
    --quiet --scenario post --rate "$RATE" --connections 16 --threads 64 \
    --duration "$SECONDS_PER_RUN" --warmup 2 --json "$WORK/$2.json" >/dev/null
  python3 - "$WORK/$2.json" "$RATE" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_us"]
print("%.2f %.2f %.1f" % (lat["p50"] / 1000, lat["p99"] / 1000,
                          100 * r["throughput_rps"] / float(sys.argv[2])))
PY
}

# The node owning the most partitions, once every partition has an owner
# that holds its lease, as node $1 (a port) sees it; waits up to 60 s.
served_owner() {
  python3 - "$1" "$ADMIN" "${2:-}" <<'PY'
import collections, json, sys, time, urllib.request
port, admin, dead = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.time() + 60
while time.time() < deadline:
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/cluster/v1/status",
                                     headers={"Authorization": f"Bearer {admin}"})
        status = json.load(urllib.request.urlopen(req, timeout=2))
        partitions = status["partitions"]
        owners = [p.get("owner") for p in partitions]
        mine_taken = all(p.get("role") == "owner" for p in partitions
                         if p.get("owner") == status["node"])
        if all(owners) and dead not in owners and status["lease_held"] and mine_taken:
            print(collections.Counter(owners).most_common(1)[0][0])
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
sys.exit("partitions not served within 60 s")
PY
}

echo "== single node" >&2
./target/release/progressdb --db "$WORK/single" --addr 127.0.0.1:0 --shards 1 \
  --api-key "$KEY" --admin-key "$ADMIN" >"$WORK/single.log" 2>&1 &
SINGLE_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/single.log" && break; sleep 0.1; done
SINGLE_ADDR=$(grep -o '127.0.0.1:[0-9]*' "$WORK/single.log" | head -1)
read -r S50 S99 SOK < <(post_at_rate "$SINGLE_ADDR" single)
kill "$SINGLE_PID"; SINGLE_PID=""

echo "== cluster: 3 nats-servers, 3 nodes" >&2
scripts/cluster-up.sh >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
served_owner 8081 >/dev/null
read -r C50 C99 COK < <(post_at_rate 127.0.0.1:8081 cluster)

echo "== failover" >&2
VICTIM=$(served_owner 8081)
VICTIM_INDEX=${VICTIM#n}
SURVIVOR_PORT=$((8081 + VICTIM_INDEX % 3))
KILLED=$(date +%s.%N)
kill -9 "$(cat "$CLUSTER_DIR/node-$VICTIM_INDEX.pid")"
served_owner "$SURVIVOR_PORT" "$VICTIM" >/dev/null
SERVED=$(date +%s.%N)
FAILOVER=$(python3 -c "print('%.2f' % ($SERVED - $KILLED))")

cat <<EOF
## Clustered mode (\`scripts/bench-cluster.sh $RATE $SECONDS_PER_RUN\`, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD))

Durable POSTs at $RATE/s for $SECONDS_PER_RUN s (open loop, 16 connections, 64 threads, latency
from each request's planned send time), one shard per node, everything on this machine.
The cluster's threads are created through node 1, so they land in its partitions and
no request takes the forwarding hop: this measures replication (each write waits for
JetStream's quorum, two of three nats-servers fsyncing on the same disk).

| | p50 ms | p99 ms | achieved |
|---|---|---|---|
| single node | $S50 | $S99 | $SOK% |
| 3-node cluster | $C50 | $C99 | $COK% |

Failover: \`kill -9\` of the node owning the most partitions ($VICTIM, of 64) until a
survivor's status shows every partition assigned to a live node, and the survivor serving
as owner every partition assigned to it: $FAILOVER s.
EOF
