//! The ProgressDB v0.2 wire contract that the published SDKs
//! (`@progressdb/js` 0.2.2, `@progressdb/react` 0.2.0, `@progressdb/node`
//! 0.2.0, PyPI `progressdb` 0.2.0) rely on, checked over real HTTP against
//! the real binary: every row of the spec's route table, the object and
//! pagination shapes, both paging directions of both lists, `anchor`,
//! `total`, and the call sequence of the React hooks. Written from the
//! spec (`progressdb-wire-v0.2.md`), not from upstream code.

#[path = "support.rs"]
mod support;

use serde_json::{Value, json};
use support::{Client, Server, ids};

const ADMIN: &str = "admin-key-0123456789";

fn key(value: &Value) -> String {
    value["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key: {value}"))
        .to_string()
}

/// A new thread of the client's user; its key.
fn new_thread(client: &mut Client) -> String {
    key(&client
        .post("/frontend/v1/threads", r#"{"title":"t"}"#)
        .expect(201))
}

/// Every field of `P`, with its type.
fn assert_pagination(page: &Value) {
    let p = &page["pagination"];
    assert!(p["before_anchor"].is_string(), "{page}");
    assert!(p["after_anchor"].is_string(), "{page}");
    assert!(p["has_before"].is_boolean(), "{page}");
    assert!(p["has_after"].is_boolean(), "{page}");
    assert!(p["count"].is_u64(), "{page}");
    assert!(p["total"].is_u64(), "{page}");
    let count = support::items(page).len();
    assert_eq!(p["count"], count, "{page}");
    let keys = ids(page);
    let anchor = |end: Option<&String>| end.cloned().unwrap_or_default();
    assert_eq!(p["before_anchor"], anchor(keys.first()), "{page}");
    assert_eq!(p["after_anchor"], anchor(keys.last()), "{page}");
}

/// `(has_before, has_after, total)` of a page.
fn flags(page: &Value) -> (bool, bool, u64) {
    let p = &page["pagination"];
    (
        p["has_before"].as_bool().unwrap(),
        p["has_after"].as_bool().unwrap(),
        p["total"].as_u64().unwrap(),
    )
}

fn get_page(client: &mut Client, path: &str) -> Value {
    let page = client.get(path).expect(200);
    assert_pagination(&page);
    page
}

fn assert_thread(thread: &Value) {
    for field in ["key", "title", "author"] {
        assert!(thread[field].is_string(), "{field}: {thread}");
    }
    for field in ["created_ts", "updated_ts"] {
        assert!(thread[field].is_u64(), "{field}: {thread}");
    }
    assert!(thread.get("id").is_none(), "never `id`: {thread}");
}

fn assert_message(message: &Value) {
    for field in ["key", "thread", "author"] {
        assert!(message[field].is_string(), "{field}: {message}");
    }
    for field in ["created_ts", "updated_ts"] {
        assert!(message[field].is_u64(), "{field}: {message}");
    }
    assert!(!message["body"].is_null(), "{message}");
    assert!(message.get("id").is_none(), "never `id`: {message}");
    assert!(message.get("ts").is_none(), "never `ts`: {message}");
}

#[test]
fn readyz_says_ok_and_any_options_is_a_preflight() {
    let server = Server::start(&["--cors-origin", "https://app.example"]);
    let mut client = server.client();
    client.key = None;
    client.user = None;
    let ready = client.get("/readyz").expect(200);
    assert_eq!(ready["status"], "ok");
    assert!(ready["version"].is_string());
    client.extra_headers = "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-user-id\r\n".into();
    for path in [
        "/frontend/v1/threads",
        "/frontend/v1/threads/t/messages/m",
        "/frontend/v1/not-a-route",
    ] {
        let reply = client.request("OPTIONS", path, None);
        assert_eq!(reply.status, 204, "OPTIONS {path} needs no key");
        let allowed = reply
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for header in [
            "authorization",
            "content-type",
            "x-api-key",
            "x-user-id",
            "x-user-signature",
        ] {
            assert!(allowed.contains(header), "{path}: {allowed}");
        }
    }
}

#[test]
fn thread_routes_answer_what_the_sdks_read() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let created = client
        .post("/frontend/v1/threads", r#"{"title":"Launch"}"#)
        .expect(201);
    assert_thread(&created);
    let thread = key(&created);
    // The key a create returns works in the very next GET.
    let fetched = client
        .get(&format!("/frontend/v1/threads/{thread}"))
        .expect(200);
    assert_eq!(fetched, json!({ "thread": created }));

    let updated = client
        .put(
            &format!("/frontend/v1/threads/{thread}"),
            r#"{"title":"Launch v2"}"#,
        )
        .expect(200);
    assert_eq!(key(&updated), thread);
    let fetched = client
        .get(&format!("/frontend/v1/threads/{thread}"))
        .expect(200);
    assert_eq!(
        fetched["thread"]["title"], "Launch v2",
        "title updates stick"
    );

    let listed = get_page(&mut client, "/frontend/v1/threads");
    assert_eq!(ids(&listed), vec![thread.clone()]);
    assert_thread(&listed["threads"][0]);

    let deleted = client.delete(&format!("/frontend/v1/threads/{thread}"));
    assert_eq!(deleted.status, 200, "never 204: React reads res.key");
    assert_eq!(key(&deleted.json()), thread);
    client
        .get(&format!("/frontend/v1/threads/{thread}"))
        .expect_error(404, "thread_not_found");

    // Errors are non-2xx with a string `error` the JS SDK throws.
    let error = client.get("/frontend/v1/threads/missing").expect(404);
    assert!(error["error"].is_string());
}

#[test]
fn message_routes_answer_what_the_sdks_read() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = new_thread(&mut client);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let created = client.post(&base, r#"{"body":{"text":"hi"}}"#).expect(201);
    assert_message(&created);
    assert_eq!(created["thread"], thread.as_str());
    assert_eq!(created["created_ts"], created["updated_ts"]);
    let message = key(&created);
    let fetched = client.get(&format!("{base}/{message}")).expect(200);
    assert_eq!(fetched, json!({ "message": created }));

    let edited = client
        .put(&format!("{base}/{message}"), r#"{"body":"edited"}"#)
        .expect(200);
    assert_eq!(key(&edited), message);
    assert!(edited["updated_ts"].as_u64() > created["updated_ts"].as_u64());

    let page = get_page(&mut client, &base);
    assert_eq!(page["thread"], thread.as_str());
    assert_eq!(ids(&page), vec![message.clone()]);
    assert_message(&page["messages"][0]);

    let deleted = client.delete(&format!("{base}/{message}"));
    assert_eq!(deleted.status, 200, "never 204");
    assert_eq!(key(&deleted.json()), message);
    assert!(ids(&get_page(&mut client, &base)).is_empty());

    let signed = client
        .post("/backend/v1/sign", r#"{"userId":"alice"}"#)
        .expect(200);
    assert_eq!(signed["userId"], "alice");
    assert_eq!(signed["signature"].as_str().unwrap().len(), 64);
}

/// Posts `n` messages numbered from 0; returns their keys, oldest first.
fn post_numbered(client: &mut Client, base: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            key(&client
                .post(base, &json!({ "body": i }).to_string())
                .expect(201))
        })
        .collect()
}

#[test]
fn message_pages_are_oldest_first_and_walk_both_ways() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = new_thread(&mut client);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let posted = post_numbered(&mut client, &base, 7);

    // No cursor: the last `limit`, oldest first.
    let last = get_page(&mut client, &format!("{base}?limit=3"));
    assert_eq!(ids(&last), posted[4..7].to_vec());
    assert_eq!(flags(&last), (true, false, 7));

    // loadOlder: before=before_anchor, prepending, until nothing is older.
    let mut seen = ids(&last);
    let mut page = last;
    while page["pagination"]["has_before"] == true {
        let anchor = page["pagination"]["before_anchor"].as_str().unwrap();
        page = get_page(&mut client, &format!("{base}?limit=3&before={anchor}"));
        assert_eq!(page["pagination"]["has_after"], true);
        let mut older = ids(&page);
        older.extend(seen);
        seen = older;
    }
    assert_eq!(seen, posted);

    // loadNewer: after=after_anchor, appending, from the oldest page.
    let mut seen = ids(&page);
    while page["pagination"]["has_after"] == true {
        let anchor = page["pagination"]["after_anchor"].as_str().unwrap();
        page = get_page(&mut client, &format!("{base}?limit=3&after={anchor}"));
        assert_eq!(page["pagination"]["has_before"], true);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, posted);

    // Empty pages have empty anchors (checked by get_page) and say where
    // the items are.
    let none_older = get_page(&mut client, &format!("{base}?before={}", posted[0]));
    assert_eq!(none_older["pagination"]["count"], 0);
    assert_eq!(flags(&none_older), (false, true, 7));
    let none_newer = get_page(&mut client, &format!("{base}?after={}", posted[6]));
    assert_eq!(flags(&none_newer), (true, false, 7));

    // anchor: up to limit before, the anchor, up to limit after (2·limit+1).
    let centred = get_page(&mut client, &format!("{base}?limit=2&anchor={}", posted[3]));
    assert_eq!(ids(&centred), posted[1..6].to_vec());
    assert_eq!(flags(&centred), (true, true, 7));
    let edge = get_page(&mut client, &format!("{base}?limit=2&anchor={}", posted[0]));
    assert_eq!(ids(&edge), posted[0..3].to_vec());
    assert_eq!(flags(&edge), (false, true, 7));

    // total counts live messages; deleted ones are skipped, even as anchor.
    for deleted in [&posted[3], &posted[5]] {
        client.delete(&format!("{base}/{deleted}")).expect(200);
    }
    let live = get_page(&mut client, &base);
    assert_eq!(ids(&live).len(), 5);
    assert_eq!(flags(&live), (false, false, 5));
    let around = get_page(&mut client, &format!("{base}?limit=1&anchor={}", posted[3]));
    assert_eq!(ids(&around), vec![posted[2].clone(), posted[4].clone()]);
    let all = get_page(&mut client, &format!("{base}?include_deleted=true"));
    assert_eq!(flags(&all).2, 7);
    client
        .post(&format!("{base}/{}/restore", posted[5]), "")
        .expect(200);
    assert_eq!(flags(&get_page(&mut client, &base)).2, 6);
}

#[test]
fn limits_are_checked() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = new_thread(&mut client);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let posted = post_numbered(&mut client, &base, 55);
    let default = get_page(&mut client, &base);
    assert_eq!(ids(&default), posted[5..].to_vec(), "default limit 50");
    assert_eq!(
        get_page(&mut client, &format!("{base}?limit=1000"))["pagination"]["count"],
        55
    );
    for list in [base.as_str(), "/frontend/v1/threads"] {
        for bad in ["limit=0", "limit=-1", "limit=abc", "limit=1001", "limit="] {
            client
                .get(&format!("{list}?{bad}"))
                .expect_error(400, "invalid_limit");
        }
        client
            .get(&format!("{list}?before=x&after=y"))
            .expect_error(400, "invalid_query");
    }
}

/// Creates threads `t0..tn` for the client's user; returns their keys,
/// oldest first.
fn create_threads(client: &mut Client, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let body = json!({ "title": format!("t{i}") }).to_string();
            key(&client.post("/frontend/v1/threads", &body).expect(201))
        })
        .collect()
}

#[test]
fn thread_pages_are_newest_first_across_shards() {
    let server = Server::start(&["--shards", "2"]);
    let mut client = server.client();
    let created = create_threads(&mut client, 7);
    let mut newest_first = created.clone();
    newest_first.reverse();
    // Another user's threads are not in the list, nor in its total.
    create_threads(&mut server.client().acting_for("bob"), 2);

    let first = get_page(&mut client, "/frontend/v1/threads?limit=3");
    assert_eq!(ids(&first), newest_first[0..3].to_vec());
    assert_eq!(flags(&first), (false, true, 7));

    // React's loadOlder: after=after_anchor, appending.
    let mut seen = ids(&first);
    let mut page = first;
    while page["pagination"]["has_after"] == true {
        let anchor = page["pagination"]["after_anchor"].as_str().unwrap();
        page = get_page(
            &mut client,
            &format!("/frontend/v1/threads?limit=3&after={anchor}"),
        );
        assert_eq!(page["pagination"]["has_before"], true);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, newest_first);

    // React's loadNewer: before=before_anchor, prepending.
    let mut seen = ids(&page);
    while page["pagination"]["has_before"] == true {
        let anchor = page["pagination"]["before_anchor"].as_str().unwrap();
        page = get_page(
            &mut client,
            &format!("/frontend/v1/threads?limit=3&before={anchor}"),
        );
        assert_eq!(page["pagination"]["has_after"], true);
        let mut newer = ids(&page);
        newer.extend(seen);
        seen = newer;
    }
    assert_eq!(seen, newest_first);

    let empty = get_page(
        &mut client,
        &format!("/frontend/v1/threads?before={}", newest_first[0]),
    );
    assert_eq!(flags(&empty), (false, true, 7));
    assert_eq!(empty["pagination"]["count"], 0);

    let centred = get_page(
        &mut client,
        &format!("/frontend/v1/threads?limit=2&anchor={}", newest_first[3]),
    );
    assert_eq!(ids(&centred), newest_first[1..6].to_vec());
    assert_eq!(flags(&centred), (true, true, 7));

    client
        .delete(&format!("/frontend/v1/threads/{}", created[0]))
        .expect(200);
    assert_eq!(flags(&get_page(&mut client, "/frontend/v1/threads")).2, 6);
    let with_deleted = get_page(&mut client, "/frontend/v1/threads?include_deleted=true");
    assert_eq!(flags(&with_deleted).2, 7);
    client
        .get("/frontend/v1/threads?after=no-such-thread")
        .expect_error(400, "invalid_cursor");
}

#[test]
fn threads_sort_by_last_activity() {
    let server = Server::start(&["--shards", "2"]);
    let mut client = server.client();
    let created = create_threads(&mut client, 4);
    client
        .post(
            &format!("/frontend/v1/threads/{}/messages", created[1]),
            r#"{"body":"bump"}"#,
        )
        .expect(201);
    let by_created = get_page(&mut client, "/frontend/v1/threads?sort_by=created_ts");
    let picked =
        |order: &[usize]| -> Vec<String> { order.iter().map(|&i| created[i].clone()).collect() };
    assert_eq!(ids(&by_created), picked(&[3, 2, 1, 0]));
    let by_activity = get_page(
        &mut client,
        "/frontend/v1/threads?sort_by=updated_ts&limit=2",
    );
    assert_eq!(ids(&by_activity), picked(&[1, 3]));
    assert_eq!(flags(&by_activity), (false, true, 4));
    let anchor = by_activity["pagination"]["after_anchor"].as_str().unwrap();
    let older = get_page(
        &mut client,
        &format!("/frontend/v1/threads?sort_by=updated_ts&limit=2&after={anchor}"),
    );
    assert_eq!(ids(&older), picked(&[2, 0]));
    assert_eq!(flags(&older), (true, false, 4));
    client
        .get("/frontend/v1/threads?sort_by=title")
        .expect_error(400, "invalid_sort_by");

    // Both listings show the thread as it is now: its last activity is the
    // post, also after a restart rebuilds the order from the store.
    let bumped = |page: &Value| -> Value {
        let threads = page["threads"].as_array().unwrap();
        let thread = threads.iter().find(|t| t["key"] == created[1].as_str());
        thread.unwrap()["updated_ts"].clone()
    };
    let posted_ts = get_page(
        &mut client,
        &format!("/frontend/v1/threads/{}/messages", created[1]),
    )["messages"][0]["created_ts"]
        .clone();
    assert_eq!(bumped(&by_created), posted_ts);
    assert_eq!(bumped(&by_activity), posted_ts);
    let server = server.restart(&["--shards", "2"]);
    let mut client = server.client();
    let by_activity = get_page(&mut client, "/frontend/v1/threads?sort_by=updated_ts");
    assert_eq!(ids(&by_activity), picked(&[1, 3, 2, 0]));
    assert_eq!(bumped(&by_activity), posted_ts);
    let by_created = get_page(&mut client, "/frontend/v1/threads?sort_by=created_ts");
    assert_eq!(bumped(&by_created), posted_ts);
}

#[test]
fn backend_keys_name_the_author() {
    let server = Server::start(&[]);
    let mut backend = server.client();
    backend.user = None;
    let chosen = backend
        .post(
            "/frontend/v1/threads",
            r#"{"title":"chosen","key":"support-7","author":"carol"}"#,
        )
        .expect(201);
    assert_eq!(chosen["key"], "support-7");
    assert_eq!(chosen["author"], "carol");
    // Body `author` first, then X-User-ID, then ?author=.
    backend.user = Some("dave".into());
    let message = backend
        .post(
            "/frontend/v1/threads/support-7/messages?author=erin",
            r#"{"body":"hi","author":"carol"}"#,
        )
        .expect(201);
    assert_eq!(message["author"], "carol");
    backend.user = None;
    let listed = get_page(&mut backend, "/frontend/v1/threads?author=carol");
    assert_eq!(ids(&listed), vec!["support-7".to_string()]);
    backend
        .get("/frontend/v1/threads")
        .expect_error(400, "missing_user_id");
}

#[test]
fn upstream_admin_routes() {
    let server = Server::start(&["--admin-key", ADMIN]);
    let mut client = server.client();
    let thread = new_thread(&mut client);
    post_numbered(
        &mut client,
        &format!("/frontend/v1/threads/{thread}/messages"),
        3,
    );
    let mut admin = server.client();
    admin.key = Some(ADMIN.into());
    assert_eq!(admin.get("/admin/health").expect(200)["status"], "ok");
    assert_eq!(
        admin.get("/admin/stats").expect(200),
        json!({"threads": 1, "messages": 3})
    );
    client.get("/admin/stats").expect_error(403, "forbidden");
}

#[test]
fn extensions_speak_the_same_vocabulary() {
    let server = Server::start(&["--admin-key", ADMIN]);
    let mut client = server.client();
    let thread = new_thread(&mut client);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let parent = post_numbered(&mut client, &base, 1).remove(0);
    client
        .put(&format!("{base}/{parent}"), r#"{"body":"edited"}"#)
        .expect(200);
    let versions = client.get(&format!("{base}/{parent}/versions")).expect(200);
    assert_eq!(versions["message"], parent.as_str());
    let listed: Vec<&Value> = versions["versions"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 2);
    assert!(listed[0]["created_ts"].is_u64() && listed[1]["body"] == "edited");

    let replies: Vec<String> = (0..3)
        .map(|i| {
            let body = json!({ "body": i, "reply_to": parent }).to_string();
            key(&client.post(&base, &body).expect(201))
        })
        .collect();
    let first = get_page(&mut client, &format!("{base}/{parent}/replies?limit=2"));
    assert_eq!(ids(&first), replies[0..2].to_vec());
    assert_eq!(flags(&first), (false, true, 3));
    let anchor = first["pagination"]["after_anchor"].as_str().unwrap();
    let rest = get_page(
        &mut client,
        &format!("{base}/{parent}/replies?limit=2&after={anchor}"),
    );
    assert_eq!(ids(&rest), replies[2..].to_vec());
    assert_eq!(flags(&rest), (true, false, 3));

    let mut admin = server.client();
    admin.key = Some(ADMIN.into());
    admin.user = None;
    let threads = get_page(&mut admin, "/admin/v1/threads");
    assert_eq!(ids(&threads), vec![thread.clone()]);
    let messages = get_page(&mut admin, &format!("/admin/v1/threads/{thread}/messages"));
    assert_eq!(messages["pagination"]["total"], 4);
    let one = admin
        .get(&format!("/admin/v1/threads/{thread}"))
        .expect(200);
    assert_eq!(one["thread"]["key"], thread.as_str());

    // The seed routes answer the same shapes.
    let mut seed = server.client();
    seed.user = None;
    let posted = seed
        .post(
            "/v1/messages",
            r#"{"thread":"general","author":"bob","body":"hi"}"#,
        )
        .expect(201);
    assert_message(&posted);
    let page = get_page(&mut seed, "/v1/threads/general/messages");
    assert_eq!(page["thread"], "general");
    assert_eq!(ids(&page), vec![key(&posted)]);
}
