#!/usr/bin/env bash
# A local NATS JetStream cluster for developing clustered mode: three
# nats-servers on 127.0.0.1 with JetStream on file storage and
# `sync_interval: always` (every acknowledged message fsynced), clustered
# so that R3 streams have a quorum. (The three ProgressDB nodes join once
# `--cluster` exists.)
#
#   scripts/cluster-up.sh          start (installs the pinned nats-server)
#   scripts/cluster-up.sh status   which servers run, and the meta leader
#   scripts/cluster-up.sh down     stop the servers this script started
#
# CLUSTER_DIR (default data/cluster) holds configs, logs, pids and the
# JetStream stores; NATS_PORT (default 4222) is the first client port:
# server i listens on NATS_PORT+i, routes on NATS_PORT+2000+i and
# monitoring on NATS_PORT+4000+i.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster_dir=$(realpath -m "${CLUSTER_DIR:-data/cluster}")
base=${NATS_PORT:-4222}
nodes=(0 1 2)
nats=src/tests/cluster/site/bin/nats-server

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
    local pidfile="$cluster_dir/nats-$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

up() {
    scripts/install-nats.sh
    mkdir -p "$cluster_dir"
    for i in "${nodes[@]}"; do
        if running "$i"; then
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
            if ! running "$i"; then
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
    for i in "${nodes[@]}"; do
        if running "$i"; then echo "nats-$i: running (pid $(cat "$cluster_dir/nats-$i.pid"))"; else echo "nats-$i: stopped"; fi
    done
    echo "meta leader: $(monitor_field "http://127.0.0.1:$(monitor_port 0)/jsz" meta_cluster.leader)"
}

down() {
    for i in "${nodes[@]}"; do
        if running "$i"; then
            kill "$(cat "$cluster_dir/nats-$i.pid")"
            echo "== nats-$i: stopped"
        fi
        rm -f "$cluster_dir/nats-$i.pid"
    done
}

case "${1:-up}" in
    up) up ;;
    status) status ;;
    down) down ;;
    *) echo "usage: $0 [up|status|down]" >&2; exit 2 ;;
esac
