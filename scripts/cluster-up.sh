#!/usr/bin/env bash
# A local cluster for clustered mode: three nats-servers on 127.0.0.1 with
# JetStream on file storage and `sync_interval: always` (every acknowledged
# message fsynced), clustered so that R3 streams have a quorum; then three
# ProgressDB nodes (`--cluster`) on them when the binary is built.
#
#   scripts/cluster-up.sh          start (installs the pinned nats-server)
#   scripts/cluster-up.sh status   which processes run, the meta leader and
#                                  the cluster's status as node 1 sees it
#   scripts/cluster-up.sh down     stop what this script started
#
# CLUSTER_DIR (default data/cluster) holds configs, logs, pids, the
# JetStream stores and the nodes' data; NATS_PORT (default 4222) is the
# first client port: server i listens on NATS_PORT+i, routes on
# NATS_PORT+2000+i and monitoring on NATS_PORT+4000+i. Node i (1-3)
# listens on NODE_PORT+i (NODE_PORT default 8080). PROGRESSDB (default
# target/release/progressdb) is the binary; without it only NATS starts.
# API_KEY and ADMIN_KEY (defaults sk_cluster_dev, ak_cluster_dev) are the
# nodes' keys; NODE_ARGS adds flags to every node (e.g. "--shards 1").
set -euo pipefail
cd "$(dirname "$0")/.."

cluster_dir=$(realpath -m "${CLUSTER_DIR:-data/cluster}")
base=${NATS_PORT:-4222}
nodes=(0 1 2)
nats=src/tests/cluster/site/bin/nats-server
progressdb=${PROGRESSDB:-target/release/progressdb}
node_port=${NODE_PORT:-8080}
api_key=${API_KEY:-sk_cluster_dev}
admin_key=${ADMIN_KEY:-ak_cluster_dev}

monitor_port() { echo $((base + 4000 + $1)); }

# One field (a dotted path) of the JSON a server's monitoring endpoint
# answers, or nothing while it does not answer; python3 is there (pip
# needs it).
monitor_field() {
    python3 - "$1" "$2" 2>/dev/null <<'PY' || true
import json, sys, urllib.request
value = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
for key in sys.argv[2].split("."):
    value = value.get(key) if isinstance(value, dict) else None
print("" if value is None else value)
PY
}

write_config() {
    local i=$1 routes=""
    for j in "${nodes[@]}"; do
        routes+="nats-route://127.0.0.1:$((base + 2000 + j)), "
    done
    cat > "$cluster_dir/nats-$i.conf" <<CONF
server_name: nats-$i
listen: 127.0.0.1:$((base + i))
http: 127.0.0.1:$(monitor_port "$i")
jetstream {
    store_dir: "$cluster_dir/nats-$i"
    # Acknowledged means fsynced: the default lazy fsync can lose
    # acknowledged messages when servers crash together.
    sync_interval: always
}
cluster {
    name: progressdb
    listen: 127.0.0.1:$((base + 2000 + i))
    routes: [ $routes]
}
CONF
}

running() {
    local pidfile="$cluster_dir/$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

nats_urls() {
    for i in "${nodes[@]}"; do
        printf -- '--nats-url nats://127.0.0.1:%s --nats-monitor 127.0.0.1:%s ' \
            $((base + i)) "$(monitor_port "$i")"
    done
}

# Three nodes of the binary in clustered mode, each with its own data
# directory (rebuilt from the log at every start).
start_nodes() {
    if [ ! -x "$progressdb" ]; then
        echo "== no $progressdb: build it (cargo build --release) to start the nodes too"
        return 0
    fi
    for i in 1 2 3; do
        if running "node-$i"; then
            echo "== node-$i: already running"
            continue
        fi
        # shellcheck disable=SC2046
        "$progressdb" --cluster --node-id "n$i" --db "$cluster_dir/node-$i" \
            --addr "127.0.0.1:$((node_port + i))" --api-key "$api_key" --admin-key "$admin_key" \
            $(nats_urls) ${NODE_ARGS:-} >"$cluster_dir/node-$i.log" 2>&1 &
        echo $! >"$cluster_dir/node-$i.pid"
    done
    for i in 1 2 3; do
        for _ in $(seq 1 120); do
            grep -q "listening on" "$cluster_dir/node-$i.log" 2>/dev/null && break
            if ! running "node-$i"; then
                echo "node-$i exited; its log, $cluster_dir/node-$i.log, ends:" >&2
                tail -5 "$cluster_dir/node-$i.log" >&2
                exit 1
            fi
            sleep 0.5
        done
        echo "== node-$i: http://127.0.0.1:$((node_port + i)) (pid $(cat "$cluster_dir/node-$i.pid"))"
    done
    echo "== status: curl -H 'Authorization: Bearer $admin_key' http://127.0.0.1:$((node_port + 1))/cluster/v1/status"
}

up() {
    scripts/install-nats.sh
    mkdir -p "$cluster_dir"
    for i in "${nodes[@]}"; do
        if running "nats-$i"; then
            echo "== nats-$i: already running (pid $(cat "$cluster_dir/nats-$i.pid"))"
            continue
        fi
        write_config "$i"
        "$nats" -c "$cluster_dir/nats-$i.conf" >"$cluster_dir/nats-$i.log" 2>&1 &
        echo $! >"$cluster_dir/nats-$i.pid"
        echo "== nats-$i: started (pid $!, client port $((base + i)))"
    done
    wait_for_leader
    for i in "${nodes[@]}"; do
        local sync
        sync=$(monitor_field "http://127.0.0.1:$(monitor_port "$i")/varz" jetstream.config.sync_always)
        if [ "$sync" != "True" ]; then
            echo "nats-$i does not fsync every message (sync_always=$sync); stopping" >&2
            down
            exit 1
        fi
    done
    echo "== JetStream: every server syncs always; NATS URLs:" \
        "$(printf 'nats://127.0.0.1:%s ' $((base)) $((base + 1)) $((base + 2)))"
    start_nodes
}

# The cluster is usable once its JetStream meta group has a leader.
wait_for_leader() {
    local leader=""
    for _ in $(seq 1 60); do
        leader=$(monitor_field "http://127.0.0.1:$(monitor_port 0)/jsz" meta_cluster.leader)
        if [ -n "$leader" ]; then
            echo "== JetStream meta leader: $leader"
            return 0
        fi
        for i in "${nodes[@]}"; do
            if ! running "nats-$i"; then
                echo "nats-$i exited; its log, $cluster_dir/nats-$i.log, ends:" >&2
                tail -5 "$cluster_dir/nats-$i.log" >&2
                down
                exit 1
            fi
        done
        sleep 0.5
    done
    echo "no JetStream meta leader after 30 s; logs in $cluster_dir" >&2
    down
    exit 1
}

status() {
    for name in nats-0 nats-1 nats-2 node-1 node-2 node-3; do
        if running "$name"; then echo "$name: running (pid $(cat "$cluster_dir/$name.pid"))"; else echo "$name: stopped"; fi
    done
    echo "meta leader: $(monitor_field "http://127.0.0.1:$(monitor_port 0)/jsz" meta_cluster.leader)"
    if running node-1; then
        curl -s -H "Authorization: Bearer $admin_key" "http://127.0.0.1:$((node_port + 1))/cluster/v1/status" || true
        echo
    fi
}

down() {
    # Nodes first: a node whose NATS servers vanish only retries.
    for name in node-1 node-2 node-3 nats-0 nats-1 nats-2; do
        if running "$name"; then
            kill "$(cat "$cluster_dir/$name.pid")"
            echo "== $name: stopped"
        fi
        rm -f "$cluster_dir/$name.pid"
    done
}

case "${1:-up}" in
    up) up ;;
    status) status ;;
    down) down ;;
    *) echo "usage: $0 [up|status|down]" >&2; exit 2 ;;
esac
