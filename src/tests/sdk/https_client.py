"""Drives the published ProgressDB Python SDK against a server over HTTPS.

Usage: https_client.py BASE_URL API_KEY. The CA that signed the server's
certificate comes from REQUESTS_CA_BUNDLE, as for any program using
requests. Prints one JSON line with what it read back; exits non-zero on
any failure (a certificate the client does not trust included).
"""

import json
import sys

from progressdb import ProgressDBClient


def main() -> None:
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = ProgressDBClient({"baseUrl": base_url, "apiKey": api_key, "timeout": 20})
    health = client.healthz()
    created = client.create_thread({"title": "sdk over tls"}, "sdk-user")
    thread = created.get("key") or created["thread"]["key"]
    client.create_thread_message(thread, {"body": {"text": "hello over https"}}, "sdk-user")
    page = client.list_thread_messages(thread, None, "sdk-user")
    texts = [message["body"]["text"] for message in page["messages"]]
    print(json.dumps({"health": health, "thread": thread, "texts": texts}))


if __name__ == "__main__":
    main()
