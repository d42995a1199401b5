"""psycopg 3 against ProgressDB's PostgreSQL listener (run by src/tests/pg.rs).

Usage: client.py PORT BACKEND_KEY. Server-side prepared statements
(prepare=True), RETURNING, timeline paging, edits, soft deletes, errors that
leave the connection usable, binary results and a transaction block.
Prints "ok" last; any failed check raises.
"""

import sys

import psycopg
from psycopg.types.json import Jsonb

port, key = sys.argv[1], sys.argv[2]


def connect(user, **options):
    return psycopg.connect(
        host="127.0.0.1", port=port, user=user, password=key, dbname="chat", **options
    )


conn = connect("carol", autocommit=True)
assert conn.info.server_version >= 160000, conn.info.server_version
assert conn.info.parameter_status("client_encoding") == "UTF8"
cur = conn.cursor()

cur.execute(
    "INSERT INTO threads (title) VALUES (%s) RETURNING key, author", ("psycopg",), prepare=True
)
thread, author = cur.fetchone()
assert author == "carol", author

keys = []
for n in range(5):
    cur.execute(
        "INSERT INTO messages (thread, body) VALUES (%s, %s) RETURNING key, version, body",
        (thread, Jsonb({"n": n, "text": f"message {n}"})),
        prepare=True,
    )
    message, version, body = cur.fetchone()
    assert version == 1 and body == {"n": n, "text": f"message {n}"}, (version, body)
    keys.append(message)

# The same prepared timeline query several times: newest first, then older.
page = "SELECT key, body FROM messages WHERE thread = %s ORDER BY created_ts DESC LIMIT %s"
for _ in range(3):
    cur.execute(page, (thread, 2), prepare=True)
    assert [row[0] for row in cur.fetchall()] == [keys[4], keys[3]]
older = (
    "SELECT key FROM messages WHERE thread = %s AND key < %s ORDER BY created_ts DESC LIMIT %s"
)
cur.execute(older, (thread, keys[3], 2), prepare=True)
assert [row[0] for row in cur.fetchall()] == [keys[2], keys[1]]
cur.execute(
    "SELECT key FROM messages WHERE thread = %s AND key > %s ORDER BY created_ts LIMIT 10",
    (thread, keys[2]),
)
assert [row[0] for row in cur.fetchall()] == [keys[3], keys[4]]

# Timestamp bounds page the same timeline.
cur.execute("SELECT key, created_ts FROM messages WHERE thread = %s ORDER BY created_ts DESC LIMIT 10", (thread,))
created = dict(cur.fetchall())
before = "SELECT key FROM messages WHERE thread = %s AND created_ts < %s ORDER BY created_ts DESC LIMIT %s"
cur.execute(before, (thread, created[keys[3]], 2), prepare=True)
assert [row[0] for row in cur.fetchall()] == [keys[2], keys[1]]
after = "SELECT key FROM messages WHERE thread = %s AND created_ts > %s ORDER BY created_ts LIMIT %s"
cur.execute(after, (thread, created[keys[1]], 2), prepare=True)
assert [row[0] for row in cur.fetchall()] == [keys[2], keys[3]]

cur.execute(
    "UPDATE messages SET body = %s WHERE thread = %s AND key = %s RETURNING version, body",
    (Jsonb({"text": "edited"}), thread, keys[0]),
    prepare=True,
)
assert cur.fetchone() == (2, {"text": "edited"})
assert cur.statusmessage == "UPDATE 1", cur.statusmessage

cur.execute("DELETE FROM messages WHERE thread = %s AND key = %s", (thread, keys[1]))
assert cur.statusmessage == "DELETE 1", cur.statusmessage
cur.execute("SELECT key FROM messages WHERE thread = %s AND key = %s", (thread, keys[1]))
assert cur.fetchall() == [], "a soft-deleted message is not listed"

for sql, params, sqlstate in [
    ("SELECT * FROM users", None, "42P01"),
    ("CREATE TABLE x (a int)", None, "0A000"),
    ("INSERT INTO messages (thread, body) VALUES (%s, %s)", (thread, "not json"), "22P02"),
]:
    try:
        cur.execute(sql, params)
        raise AssertionError(f"{sql} succeeded")
    except psycopg.Error as err:
        assert err.sqlstate == sqlstate, (sql, err.sqlstate, str(err))
cur.execute("SELECT 1")
assert cur.fetchone() == (1,), "the connection is usable after errors"

binary = conn.cursor(binary=True)
binary.execute(
    "SELECT key, created_ts, body, version, deleted FROM messages WHERE thread = %s AND key = %s",
    (thread, keys[0]),
)
row = binary.fetchone()
assert row[0] == keys[0] and isinstance(row[1], int) and row[2] == {"text": "edited"}, row
assert row[3] == 2 and row[4] is False, row

# A driver that opens transactions (psycopg's default) still works.
tx = connect("carol")
with tx.transaction():
    tx.execute("INSERT INTO messages (thread, body) VALUES (%s, %s)", (thread, Jsonb(1)))
assert tx.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
tx.close()
conn.close()
print("ok")
