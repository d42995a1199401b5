//! End-to-end tests of the HTTP/JSON API against the real binary: every
//! route, isolation between users, and the error answer for each kind of
//! bad input. The v0.2 contract's shapes and paging are in contract.rs.

#[path = "support.rs"]
mod support;

use serde_json::{Value, json};
use support::{Client, Server, ids};

fn create_thread(client: &mut Client, title: &str) -> Value {
    client
        .post(
            "/frontend/v1/threads",
            &json!({ "title": title }).to_string(),
        )
        .expect(201)
}

fn post_message(client: &mut Client, thread: &str, body: Value) -> Value {
    client
        .post(
            &format!("/frontend/v1/threads/{thread}/messages"),
            &json!({ "body": body }).to_string(),
        )
        .expect(201)
}

#[test]
fn health_and_readiness() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.key = None;
    assert_eq!(client.get("/healthz").expect(200), json!({"status": "ok"}));
    let ready = client.get("/readyz").expect(200);
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn api_keys_are_required_and_checked() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.key = None;
    client
        .get("/frontend/v1/threads")
        .expect_error(401, "unauthorized");
    client.key = Some("wrong-key-0123456789".into());
    client
        .get("/frontend/v1/threads")
        .expect_error(401, "unauthorized");

    // X-API-Key works as well as Authorization: Bearer.
    let raw = format!(
        "GET /frontend/v1/threads HTTP/1.1\r\nHost: t\r\nX-API-Key: {}\r\nX-User-ID: alice\r\n\r\n",
        support::API_KEY
    );
    let mut keyed = server.client();
    keyed.send_raw(raw.as_bytes());
    keyed.read_reply(false).expect(200);

    let mut anonymous = server.client();
    anonymous.user = None;
    anonymous
        .get("/frontend/v1/threads")
        .expect_error(400, "missing_user_id");
    anonymous.user = Some("has space".into());
    anonymous
        .get("/frontend/v1/threads")
        .expect_error(400, "invalid_user_id");
}

#[test]
fn thread_lifecycle() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = create_thread(&mut client, "  Launch plan  ");
    let id = thread["key"].as_str().unwrap().to_string();
    assert_eq!(thread["title"], "Launch plan");
    assert_eq!(thread["author"], "alice");
    assert!(
        thread["created_ts"].as_u64().unwrap() > 1_600_000_000_000_000_000,
        "ts in ns"
    );
    assert_eq!(thread["created_ts"], thread["updated_ts"]);
    assert!(thread.get("deleted").is_none());

    let fetched = client
        .get(&format!("/frontend/v1/threads/{id}"))
        .expect(200);
    assert_eq!(fetched, json!({ "thread": thread }));

    let renamed = client
        .put(
            &format!("/frontend/v1/threads/{id}"),
            r#"{"title":"Launch v2"}"#,
        )
        .expect(200);
    assert_eq!(renamed["title"], "Launch v2");
    assert!(renamed["updated_ts"].as_u64() > thread["updated_ts"].as_u64());
    assert_eq!(renamed["created_ts"], thread["created_ts"]);

    let listed = client.get("/frontend/v1/threads").expect(200);
    assert_eq!(ids(&listed), vec![id.clone()]);
    assert_eq!(listed["threads"][0]["title"], "Launch v2");
    assert_eq!(listed["pagination"]["has_after"], false);

    let deleted = client
        .delete(&format!("/frontend/v1/threads/{id}"))
        .expect(200);
    assert_eq!(deleted["key"], id.as_str());
    assert_eq!(deleted["deleted"], true);
    client
        .get(&format!("/frontend/v1/threads/{id}"))
        .expect_error(404, "thread_not_found");
    client
        .delete(&format!("/frontend/v1/threads/{id}"))
        .expect_error(404, "thread_not_found");
    assert!(ids(&client.get("/frontend/v1/threads").expect(200)).is_empty());
    // A deleted thread takes no messages.
    client
        .post(
            &format!("/frontend/v1/threads/{id}/messages"),
            r#"{"body":"late"}"#,
        )
        .expect_error(404, "thread_not_found");
}

#[test]
fn client_chosen_thread_ids() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = client
        .post(
            "/frontend/v1/threads",
            r#"{"id":"support-42","title":"Support"}"#,
        )
        .expect(201);
    assert_eq!(thread["key"], "support-42");
    client
        .post(
            "/frontend/v1/threads",
            r#"{"id":"support-42","title":"Again"}"#,
        )
        .expect_error(409, "thread_exists");
    client
        .post("/frontend/v1/threads", r#"{"id":"a/b","title":"Bad"}"#)
        .expect_error(400, "invalid_thread_id");
}

#[test]
fn message_lifecycle() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = create_thread(&mut client, "chat")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("/frontend/v1/threads/{thread}/messages");

    let body = json!({"text": "hello", "parts": [1, 2.5, null, {"deep": true}], "emoji": "👋"});
    let created = client
        .post(&base, &json!({"body": body, "role": "user"}).to_string())
        .expect(201);
    let mid = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["thread"], thread.as_str());
    assert_eq!(created["author"], "alice");
    assert_eq!(created["role"], "user");
    assert_eq!(created["body"], body);
    assert_eq!(created["version"], 1);

    let reply = client
        .post(
            &base,
            &json!({"body": "reply", "reply_to": mid}).to_string(),
        )
        .expect(201);
    assert_eq!(reply["reply_to"], mid.as_str());
    assert!(reply["created_ts"].as_u64() > created["created_ts"].as_u64());

    assert_eq!(
        client.get(&format!("{base}/{mid}")).expect(200),
        json!({ "message": created })
    );

    let edited = client
        .put(
            &format!("{base}/{mid}"),
            r#"{"body":{"text":"hello, edited"}}"#,
        )
        .expect(200);
    assert_eq!(edited["body"]["text"], "hello, edited");
    assert_eq!(edited["version"], 2);
    assert_eq!(
        edited["created_ts"], created["created_ts"],
        "edits keep the timeline position"
    );
    assert!(edited["updated_ts"].as_u64() > created["created_ts"].as_u64());

    let page = client.get(&base).expect(200);
    assert_eq!(
        ids(&page),
        vec![mid.clone(), reply["key"].as_str().unwrap().to_string()],
        "oldest first"
    );
    assert_eq!(page["messages"][0]["body"]["text"], "hello, edited");

    let deleted = client.delete(&format!("{base}/{mid}")).expect(200);
    assert_eq!(deleted["key"], mid.as_str());
    assert_eq!(deleted["deleted"], true);
    client
        .get(&format!("{base}/{mid}"))
        .expect_error(404, "message_not_found");
    client
        .put(&format!("{base}/{mid}"), r#"{"body":"again"}"#)
        .expect_error(404, "message_not_found");
    assert_eq!(ids(&client.get(&base).expect(200)).len(), 1);

    // reply_to must name a live message of this thread.
    client
        .post(&base, &json!({"body": "x", "reply_to": mid}).to_string())
        .expect_error(400, "invalid_reply_to");
    let other = create_thread(&mut client, "other")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let foreign = post_message(&mut client, &other, json!("elsewhere"));
    client
        .post(
            &base,
            &json!({"body": "x", "reply_to": foreign["key"]}).to_string(),
        )
        .expect_error(400, "invalid_reply_to");
    client
        .get(&format!(
            "/frontend/v1/threads/{other}/messages/{}",
            reply["key"].as_str().unwrap()
        ))
        .expect_error(404, "message_not_found");
}

#[test]
fn timestamps_strictly_increase_and_ids_sort_by_time() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = create_thread(&mut client, "fast")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut previous_ts = 0;
    let mut previous_id = String::new();
    for n in 0..200 {
        let message = post_message(&mut client, &thread, json!(n));
        let ts = message["created_ts"].as_u64().unwrap();
        let id = message["key"].as_str().unwrap().to_string();
        assert!(ts > previous_ts, "ts must strictly increase");
        assert!(id > previous_id, "ids sort by creation time");
        assert!(
            id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "URL-safe id {id}"
        );
        previous_ts = ts;
        previous_id = id;
    }
}

#[test]
fn cursors_from_elsewhere_are_refused() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let a = create_thread(&mut client, "a")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let b = create_thread(&mut client, "b")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let in_b = post_message(&mut client, &b, json!("b"))["key"]
        .as_str()
        .unwrap()
        .to_string();
    post_message(&mut client, &a, json!("a"));
    for param in ["before", "after", "anchor"] {
        client
            .get(&format!("/frontend/v1/threads/{a}/messages?{param}={in_b}"))
            .expect_error(400, "invalid_cursor");
        client
            .get(&format!("/frontend/v1/threads/{a}/messages?{param}=forged"))
            .expect_error(400, "invalid_cursor");
    }
    client
        .get("/frontend/v1/threads?before=not-a-cursor")
        .expect_error(400, "invalid_cursor");
}

// Paging (both directions, anchors, totals, limits) is tested against the
// v0.2 contract in contract.rs.

#[test]
fn users_only_see_their_own_threads() {
    let server = Server::start(&[]);
    let mut alice = server.client();
    let mut bob = server.client().acting_for("bob");
    let thread = create_thread(&mut alice, "private")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let message = post_message(&mut alice, &thread, json!("secret"))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("/frontend/v1/threads/{thread}");
    // Another user's thread answers 404, exactly like a missing one.
    bob.get(&base).expect_error(404, "thread_not_found");
    bob.put(&base, r#"{"title":"mine"}"#)
        .expect_error(404, "thread_not_found");
    bob.delete(&base).expect_error(404, "thread_not_found");
    bob.get(&format!("{base}/messages"))
        .expect_error(404, "thread_not_found");
    bob.post(&format!("{base}/messages"), r#"{"body":"hi"}"#)
        .expect_error(404, "thread_not_found");
    bob.get(&format!("{base}/messages/{message}"))
        .expect_error(404, "thread_not_found");
    bob.delete(&format!("{base}/messages/{message}"))
        .expect_error(404, "thread_not_found");
    assert!(ids(&bob.get("/frontend/v1/threads").expect(200)).is_empty());
    // Alice's data is untouched.
    assert_eq!(alice.get(&base).expect(200)["thread"]["title"], "private");
    assert_eq!(
        ids(&alice.get(&format!("{base}/messages")).expect(200)),
        vec![message]
    );
}

#[test]
fn seed_quickstart_routes() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.user = None;
    let first = client
        .post(
            "/v1/messages",
            r#"{"thread":"general","author":"bob","body":{"text":"hi"}}"#,
        )
        .expect(201);
    assert_eq!(first["thread"], "general");
    assert_eq!(first["author"], "bob");
    client
        .post(
            "/v1/messages",
            r#"{"thread":"general","author":"carol","body":"second"}"#,
        )
        .expect(201);
    let page = client.get("/v1/threads/general/messages").expect(200);
    assert_eq!(page["thread"], "general");
    let bodies: Vec<&Value> = support::items(&page).iter().map(|m| &m["body"]).collect();
    assert_eq!(bodies, vec![&json!({"text": "hi"}), &json!("second")]);
    // The auto-created thread belongs to the first author.
    let mut bob = server.client().acting_for("bob");
    let thread = bob.get("/frontend/v1/threads/general").expect(200);
    assert_eq!(thread["thread"]["author"], "bob");

    client
        .post("/v1/messages", r#"{"author":"bob","body":"x"}"#)
        .expect_error(400, "missing_field");
    client
        .post(
            "/v1/messages",
            r#"{"thread":"../etc","author":"bob","body":"x"}"#,
        )
        .expect_error(400, "invalid_thread_id");
    client
        .get("/v1/threads/unknown/messages")
        .expect_error(404, "thread_not_found");
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let server = Server::start(&["--request-body-bytes-max", "4096"]);
    let mut client = server.client();
    let thread = create_thread(&mut client, "keep")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = post_message(&mut client, &thread, json!("keep me"));
    let base = format!("/frontend/v1/threads/{thread}/messages");

    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/frontend/v1/threads".into(),
            Some("{not json".into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/frontend/v1/threads".into(),
            Some("".into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/frontend/v1/threads".into(),
            Some("[]".into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/frontend/v1/threads".into(),
            Some(r#"{"title":5}"#.into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/frontend/v1/threads".into(),
            Some(r#"{}"#.into()),
            400,
            "missing_field",
        ),
        (
            "POST",
            "/frontend/v1/threads".into(),
            Some(r#"{"title":"   "}"#.into()),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/frontend/v1/threads".into(),
            Some(json!({"title": "x".repeat(600)}).to_string()),
            400,
            "invalid_field",
        ),
        (
            "POST",
            base.clone(),
            Some(r#"{"role":"user"}"#.into()),
            400,
            "missing_field",
        ),
        (
            "POST",
            base.clone(),
            Some(r#"{"body":null}"#.into()),
            400,
            "missing_field",
        ),
        (
            "POST",
            base.clone(),
            Some(r#"{"body":"x","role":7}"#.into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            base.clone(),
            Some(json!({"body": "x".repeat(5000)}).to_string()),
            413,
            "body_too_large",
        ),
        (
            "PUT",
            format!("/frontend/v1/threads/{thread}"),
            Some(r#"{}"#.into()),
            400,
            "missing_field",
        ),
        (
            "GET",
            "/frontend/v1/threads/nope".into(),
            None,
            404,
            "thread_not_found",
        ),
        (
            "GET",
            format!("{base}/00000000000000000000000000"),
            None,
            404,
            "message_not_found",
        ),
        (
            "GET",
            format!("{base}/not-an-id"),
            None,
            404,
            "message_not_found",
        ),
        (
            "GET",
            "/frontend/v1/threads/a%2Fb".into(),
            None,
            400,
            "invalid_thread_id",
        ),
        (
            "GET",
            "/frontend/v1/threads/%E2%9C%93".into(),
            None,
            400,
            "invalid_thread_id",
        ),
        (
            "GET",
            "/frontend/v1/threads/..".into(),
            None,
            400,
            "invalid_thread_id",
        ),
        (
            "GET",
            "/frontend/v1/threads/%2E%2E".into(),
            None,
            400,
            "invalid_thread_id",
        ),
        (
            "GET",
            "/frontend/v1/threads/%zz".into(),
            None,
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/frontend/v1/threads?limit=%zz".into(),
            None,
            400,
            "invalid_query",
        ),
        ("GET", "/nowhere".into(), None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let reply = client.request(method, &path, body.as_deref());
        assert_eq!(
            reply.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        if status == 413 {
            // The connection was closed after the oversized body.
            client = server.client();
        }
        reply.expect_error(status, code);
    }

    let reply = client.request("DELETE", "/frontend/v1/threads", None);
    reply.expect_error(405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("GET, HEAD, POST, OPTIONS"));

    // Everything written before is intact, on a fresh connection too.
    let mut fresh = server.client();
    let page = fresh.get(&base).expect(200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0], kept);
}
