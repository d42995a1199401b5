#!/usr/bin/env bash
# The SQL access benchmark: a newest-20 timeline page read again and again,
# closed loop, one client, through
#   1. ProgressDB's PostgreSQL listener (psycopg, server-side prepared SELECT),
#   2. ProgressDB's HTTP API (the same page over a keep-alive connection),
#   3. PostgreSQL itself (psycopg, prepared SELECT on an equivalent table
#      with an index on (thread, created_ts)).
# One Python client drives all three, so the ratios compare servers, not
# clients. Servers on CPU 0, the client on CPU 1; loopback only; bounded.
#
#   scripts/bench-sql.sh [seconds per measurement, default 10]
#
# Installs what it needs (Debian's postgresql, psycopg into
# src/tests/pg/site through scripts/install-test-deps.sh); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-10}"
KEY="bench-backend-0123456789"
MESSAGES=1000

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
scripts/install-test-deps.sh >/dev/null
cargo build --release --locked -q --bin progressdb
PG_BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")"
if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=0; CLIENT_CPU=1; else SERVER_CPU=0; CLIENT_CPU=0; fi

WORK="$(mktemp -d)"
chmod 777 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- PostgreSQL, as an unprivileged user (postgres refuses to run as root)
PG_PORT=$(free_port)
su postgres -s /bin/sh -c "$PG_BIN/initdb -D $WORK/pg -A trust -U bench >/dev/null"
taskset -c "$SERVER_CPU" su postgres -s /bin/sh -c \
  "exec $PG_BIN/postgres -D $WORK/pg -p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=on" \
  >"$WORK/pg.log" 2>&1 &
PIDS+=($!)

# --- ProgressDB with its PostgreSQL listener
PDB_PG_PORT=$(free_port)
taskset -c "$SERVER_CPU" ./target/release/progressdb --db "$WORK/db" --addr 127.0.0.1:0 --shards 1 \
  --api-key "$KEY" --pg-addr "127.0.0.1:$PDB_PG_PORT" >"$WORK/server.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/server.out" && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.1
done
HTTP_ADDR="$(grep -o '127.0.0.1:[0-9]*' "$WORK/server.out" | head -1)"

PYTHONPATH=src/tests/pg/site taskset -c "$CLIENT_CPU" python3 - "$SECONDS_PER_RUN" "$MESSAGES" \
  "$PDB_PG_PORT" "$HTTP_ADDR" "$PG_PORT" "$KEY" >"$WORK/result.txt" <<'PY'
import http.client, json, sys, time
import psycopg
from psycopg.types.json import Jsonb

seconds, messages, pdb_pg, http_addr, pg_port, key = sys.argv[1:]
seconds, messages = float(seconds), int(messages)
body = {"text": "a benchmark message with some ordinary chat text"}
PAGE = "SELECT key, author, created_ts, body FROM messages WHERE thread = %s ORDER BY created_ts DESC LIMIT 20"

def rate(read):
    read()  # warm
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        read()
        count += 1
    return count / (time.perf_counter() - started)

# ProgressDB over SQL: a thread of `messages` messages, then the page.
pdb = psycopg.connect(host="127.0.0.1", port=pdb_pg, user="bench", password=key, dbname="chat", autocommit=True)
cur = pdb.cursor()
cur.execute("INSERT INTO threads (title) VALUES (%s) RETURNING key", ("bench",))
thread = cur.fetchone()[0]
for _ in range(messages):
    cur.execute("INSERT INTO messages (thread, body) VALUES (%s, %s)", (thread, Jsonb(body)), prepare=True)
def pdb_page():
    cur.execute(PAGE, (thread,), prepare=True)
    assert len(cur.fetchall()) == 20
sql_rate = rate(pdb_page)

# The same page over HTTP.
host, port = http_addr.split(":")
conn = http.client.HTTPConnection(host, int(port))
headers = {"Authorization": "Bearer " + key, "X-User-ID": "bench"}
path = f"/frontend/v1/threads/{thread}/messages?limit=20"
def http_page():
    conn.request("GET", path, headers=headers)
    reply = conn.getresponse()
    data = reply.read()
    assert reply.status == 200 and len(json.loads(data)["messages"]) == 20
http_rate = rate(http_page)

# PostgreSQL: an equivalent table, index on (thread, created_ts).
pg = psycopg.connect(host="127.0.0.1", port=pg_port, user="bench", dbname="postgres", autocommit=True)
pc = pg.cursor()
pc.execute("CREATE TABLE messages (key text PRIMARY KEY, thread text NOT NULL, author text NOT NULL, "
           "created_ts bigint NOT NULL, updated_ts bigint NOT NULL, body jsonb NOT NULL, version int NOT NULL, "
           "reply_to text, deleted bool NOT NULL DEFAULT false)")
pc.execute("CREATE INDEX messages_thread_ts ON messages (thread, created_ts)")
now = time.time_ns()
for n in range(messages):
    pc.execute("INSERT INTO messages VALUES (%s, %s, 'bench', %s, %s, %s, 1, NULL, false)",
               (f"m{n}", thread, now + n, now + n, Jsonb(body)), prepare=True)
pc.execute("ANALYZE messages")
def pg_page():
    pc.execute(PAGE, (thread,), prepare=True)
    assert len(pc.fetchall()) == 20
pg_rate = rate(pg_page)

print(f"{sql_rate:.0f} {http_rate:.0f} {pg_rate:.0f}")
PY
read -r SQL HTTP PG <"$WORK/result.txt"
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
cat <<EOF
SQL access benchmark ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)): newest-20 page of a
$MESSAGES-message thread, one Python client (psycopg $(PYTHONPATH=src/tests/pg/site python3 -c 'import psycopg; print(psycopg.__version__)'), http.client),
closed loop, $SECONDS_PER_RUN s each; servers on CPU $SERVER_CPU, client on CPU $CLIENT_CPU; $(nproc) CPUs, kernel $(uname -r).

| path | pages/s | ratio to PostgreSQL |
|---|---|---|
| ProgressDB over SQL (prepared SELECT) | $SQL | $(ratio "$SQL" "$PG") |
| ProgressDB over HTTP (same page) | $HTTP | $(ratio "$HTTP" "$PG") |
| PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (prepared SELECT, index on thread, created_ts) | $PG | 1.00 |
EOF
