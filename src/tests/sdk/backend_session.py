"""A backend session through the published Python SDK (PyPI `progressdb`
0.2.0, installed unchanged): the calls an application makes, with the
answers it relies on checked. Arguments: base URL, backend API key.
Prints "ok" last when every check passed."""

import re
import sys

from progressdb import ApiError, ProgressDB


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")


def expect_api_error(status, call):
    try:
        call()
    except ApiError as err:
        check(err.status_code == status, f"status {err.status_code}, wanted {status}")
        return
    sys.exit(f"FAILED: no ApiError {status}")


def message_keys(page):
    return [message["key"] for message in page["messages"]]


base_url, api_key = sys.argv[1], sys.argv[2]
db = ProgressDB({"baseUrl": base_url, "apiKey": api_key})

check(db.readyz()["status"] == "ok", "readyz says ok")

thread = db.create_thread({"title": "Support"}, "alice")["key"]
got = db.get_thread(thread, "alice")["thread"]
check(got["key"] == thread and got["title"] == "Support", f"get_thread: {got}")

keys = [
    db.create_thread_message(thread, {"body": {"text": f"m{i}"}}, "alice")["key"]
    for i in range(5)
]

newest = db.list_thread_messages(thread, {"limit": 2}, "alice")
check(newest["thread"] == thread, "messages page names its thread")
check(message_keys(newest) == keys[3:], f"newest page oldest first: {newest}")
pagination = newest["pagination"]
check(pagination["has_before"] and not pagination["has_after"], f"newest: {pagination}")
check(pagination["count"] == 2 and pagination["total"] == 5, f"newest: {pagination}")

older = db.list_thread_messages(
    thread, {"limit": 2, "before": pagination["before_anchor"]}, "alice"
)
check(message_keys(older) == keys[1:3], f"older page: {older}")
newer = db.list_thread_messages(thread, {"limit": 10, "after": keys[0]}, "alice")
check(message_keys(newer) == keys[1:], f"newer page: {newer}")
around = db.list_thread_messages(thread, {"limit": 1, "anchor": keys[2]}, "alice")
check(message_keys(around) == keys[1:4], f"anchor page: {around}")

first = db.get_thread_message(thread, keys[0], "alice")["message"]
check(first["body"] == {"text": "m0"} and first["author"] == "alice", f"message: {first}")
edited = db.update_thread_message(thread, keys[0], {"body": {"text": "edited"}}, "alice")
check(edited["key"] == keys[0], f"update answers the message: {edited}")
again = db.get_thread_message(thread, keys[0], "alice")["message"]
check(again["body"] == {"text": "edited"}, f"edit is read back: {again}")

deleted = db.delete_thread_message(thread, keys[1], "alice")
check(deleted is not None and deleted["key"] == keys[1], f"delete answers the key: {deleted}")
after_delete = db.list_thread_messages(thread, {"limit": 10}, "alice")
check(keys[1] not in message_keys(after_delete), "deleted message is not listed")
check(after_delete["pagination"]["total"] == 4, f"total after delete: {after_delete}")

# Another user of the same backend sees nothing of alice's thread.
expect_api_error(404, lambda: db.get_thread(thread, "bob"))
expect_api_error(404, lambda: db.list_thread_messages(thread, {"limit": 1}, "bob"))

renamed = db.update_thread(thread, {"title": "Billing"}, "alice")
check(renamed["key"] == thread, f"update_thread answers the thread: {renamed}")
listed = db.list_threads({"limit": 10}, "alice")
titles = {t["key"]: t["title"] for t in listed["threads"]}
check(titles.get(thread) == "Billing", f"listing shows the new title: {listed}")
check(listed["pagination"]["total"] == 1, f"threads total: {listed}")

gone = db.delete_thread(thread, "alice")
check(gone is not None and gone["key"] == thread, f"delete_thread answers the key: {gone}")
expect_api_error(404, lambda: db.get_thread(thread, "alice"))

signed = db.sign_user("alice")
check(signed["userId"] == "alice", f"sign_user: {signed}")
check(re.fullmatch(r"[0-9a-f]{64}", signed["signature"]) is not None, f"signature: {signed}")

print("ok")
