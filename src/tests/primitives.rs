//! End-to-end tests of the chat primitives on the real binary: version
//! history, soft delete and restore, replies, reactions, and paging that
//! stays consistent while other clients write.

#[path = "support.rs"]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use support::{Client, Server, ids};

fn create_thread(client: &mut Client) -> String {
    client
        .post("/frontend/v1/threads", r#"{"title":"t"}"#)
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn post(client: &mut Client, thread: &str, body: Value) -> Value {
    client
        .post(
            &format!("/frontend/v1/threads/{thread}/messages"),
            &json!({ "body": body }).to_string(),
        )
        .expect(201)
}

#[test]
fn three_edits_leave_four_versions_in_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = create_thread(&mut client);
    let message = post(&mut client, &thread, json!("v1"));
    let path = format!(
        "/frontend/v1/threads/{thread}/messages/{}",
        message["key"].as_str().unwrap()
    );
    for n in 2..=4 {
        let edited = client
            .put(&path, &json!({ "body": format!("v{n}") }).to_string())
            .expect(200);
        assert_eq!(edited["version"], n);
        assert_eq!(edited["edited_by"], "alice");
        assert_eq!(
            edited["created_ts"], message["created_ts"],
            "edits stay in place in the timeline"
        );
    }
    let versions = client.get(&format!("{path}/versions")).expect(200);
    let list = versions["versions"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    let mut last_ts = 0;
    for (index, version) in list.iter().enumerate() {
        assert_eq!(version["version"], index as u64 + 1);
        assert_eq!(version["body"], format!("v{}", index + 1));
        assert_eq!(version["author"], "alice");
        let ts = version["created_ts"].as_u64().unwrap();
        assert!(ts > last_ts, "versions oldest first");
        last_ts = ts;
    }
    assert_eq!(list[0]["created_ts"], message["created_ts"]);
    let current = &client.get(&path).expect(200)["message"];
    assert_eq!(current["version"], 4);
    assert_eq!(current["updated_ts"].as_u64(), Some(last_ts));
}

#[test]
fn soft_delete_hides_include_deleted_shows_and_restore_brings_back() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = create_thread(&mut client);
    let keep = post(&mut client, &thread, json!("keep"));
    let gone = post(&mut client, &thread, json!("gone"));
    let gone_id = gone["key"].as_str().unwrap();
    let base = format!("/frontend/v1/threads/{thread}/messages");
    client
        .put(&format!("{base}/{gone_id}"), r#"{"body":"gone v2"}"#)
        .expect(200);
    client.delete(&format!("{base}/{gone_id}")).expect(200);

    assert_eq!(
        ids(&client.get(&base).expect(200)),
        vec![keep["key"].as_str().unwrap()]
    );
    client
        .get(&format!("{base}/{gone_id}"))
        .expect_error(404, "message_not_found");
    let with_deleted = client
        .get(&format!("{base}?include_deleted=true"))
        .expect(200);
    assert_eq!(with_deleted["messages"][1]["key"], gone_id, "oldest first");
    assert_eq!(with_deleted["messages"][1]["deleted"], true);
    let shown = &client
        .get(&format!("{base}/{gone_id}?include_deleted=true"))
        .expect(200)["message"];
    assert_eq!(shown["deleted"], true);
    // Versions of a deleted message stay readable on request.
    let versions = client
        .get(&format!("{base}/{gone_id}/versions?include_deleted=true"))
        .expect(200);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        versions["versions"][1]["created_ts"], shown["updated_ts"],
        "a delete is not an edit: the last version keeps its edit time"
    );
    client
        .get(&format!("{base}/{gone_id}/versions"))
        .expect_error(404, "message_not_found");
    client
        .get(&format!("{base}?include_deleted=maybe"))
        .expect_error(400, "invalid_query");

    let restored = client
        .post(&format!("{base}/{gone_id}/restore"), "")
        .expect(200);
    assert!(restored.get("deleted").is_none());
    assert_eq!(restored["body"], "gone v2");
    assert_eq!(ids(&client.get(&base).expect(200)).len(), 2);

    // Threads: delete hides the thread and its messages; restore returns both.
    client
        .delete(&format!("/frontend/v1/threads/{thread}"))
        .expect(200);
    client.get(&base).expect_error(404, "thread_not_found");
    assert!(ids(&client.get("/frontend/v1/threads").expect(200)).is_empty());
    let listed = client
        .get("/frontend/v1/threads?include_deleted=true")
        .expect(200);
    assert_eq!(listed["threads"][0]["deleted"], true);
    let thread_json = &client
        .get(&format!(
            "/frontend/v1/threads/{thread}?include_deleted=true"
        ))
        .expect(200)["thread"];
    assert_eq!(thread_json["deleted"], true);
    let back = client
        .post(&format!("/frontend/v1/threads/{thread}/restore"), "")
        .expect(200);
    assert!(back.get("deleted").is_none());
    assert_eq!(ids(&client.get(&base).expect(200)).len(), 2);
    // Another user can neither see nor restore it.
    let mut bob = server.client().acting_for("bob");
    bob.post(&format!("/frontend/v1/threads/{thread}/restore"), "")
        .expect_error(404, "thread_not_found");
}

#[test]
fn replies_are_listed_and_paged() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let thread = create_thread(&mut client);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let parent = post(&mut client, &thread, json!("question"))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let other = post(&mut client, &thread, json!("unrelated"))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let replies: Vec<String> = (0..7)
        .map(|n| {
            client
                .post(&base, &json!({"body": n, "reply_to": parent}).to_string())
                .expect(201)["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    client
        .post(
            &base,
            &json!({"body": "nested", "reply_to": replies[0]}).to_string(),
        )
        .expect(201);

    let mut seen = Vec::new();
    let mut path = format!("{base}/{parent}/replies?limit=3");
    loop {
        let page = client.get(&path).expect(200);
        seen.extend(ids(&page));
        if page["pagination"]["has_after"] != true {
            break;
        }
        let cursor = page["pagination"]["after_anchor"].as_str().unwrap();
        path = format!("{base}/{parent}/replies?limit=3&after={cursor}");
    }
    assert_eq!(seen, replies, "direct replies only, oldest first");
    let older = client
        .get(&format!(
            "{base}/{parent}/replies?before={}&limit=2",
            replies[6]
        ))
        .expect(200);
    assert_eq!(ids(&older), vec![replies[4].clone(), replies[5].clone()]);
    assert!(ids(&client.get(&format!("{base}/{other}/replies")).expect(200)).is_empty());

    client.delete(&format!("{base}/{}", replies[1])).expect(200);
    assert_eq!(
        ids(&client.get(&format!("{base}/{parent}/replies")).expect(200)).len(),
        6
    );
    client
        .get(&format!("{base}/{parent}/replies?anchor={}", replies[2]))
        .expect_error(400, "invalid_query");
    client
        .get(&format!("{base}/nope/replies"))
        .expect_error(404, "message_not_found");
}

#[test]
fn reactions_are_per_user_with_counts() {
    let server = Server::start(&[]);
    let mut alice = server.client();
    let thread = create_thread(&mut alice);
    let id = post(&mut alice, &thread, json!("react to me"))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/frontend/v1/threads/{thread}/messages/{id}/reactions");

    let reacted = alice.post(&path, r#"{"reaction":"👍"}"#).expect(200);
    assert_eq!(reacted["reactions"], json!({"alice": "👍"}));
    assert_eq!(reacted["reaction_counts"], json!({"👍": 1}));
    assert_eq!(reacted["version"], 1, "a reaction is not an edit");
    let changed = alice.post(&path, r#"{"reaction":"🎉"}"#).expect(200);
    assert_eq!(changed["reactions"], json!({"alice": "🎉"}));
    assert_eq!(changed["reaction_counts"], json!({"🎉": 1}));

    let page = alice
        .get(&format!("/frontend/v1/threads/{thread}/messages"))
        .expect(200);
    assert_eq!(page["messages"][0]["reaction_counts"], json!({"🎉": 1}));

    let removed = alice.delete(&path).expect(200);
    assert!(removed.get("reactions").is_none() && removed.get("reaction_counts").is_none());

    for (body, status, code) in [
        (r#"{"reaction":""}"#.to_string(), 400, "invalid_field"),
        (r#"{"reaction":"   "}"#.to_string(), 400, "invalid_field"),
        (
            json!({"reaction": "x".repeat(65)}).to_string(),
            400,
            "invalid_field",
        ),
        (r#"{"reaction":"a\nb"}"#.to_string(), 400, "invalid_field"),
        (r#"{}"#.to_string(), 400, "missing_field"),
        (
            json!({"reaction": "x".repeat(1 << 20)}).to_string(),
            413,
            "body_too_large",
        ),
    ] {
        let mut client = server.client();
        client.post(&path, &body).expect_error(status, code);
    }
    alice
        .delete(&format!("/frontend/v1/threads/{thread}/messages/{id}"))
        .expect(200);
    alice
        .post(&path, r#"{"reaction":"👍"}"#)
        .expect_error(404, "message_not_found");
}

// Pages through 1,000 messages while another client posts and edits in
// the same thread: every original message is seen exactly once, in order.
#[test]
fn paging_is_consistent_while_others_write() {
    let server = Server::start(&["--shards", "2"]);
    let mut client = server.client();
    let thread = create_thread(&mut client);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let mut burst = Vec::new();
    for n in 0..1000 {
        burst.extend(client.request_bytes("POST", &base, Some(&json!({ "body": n }).to_string())));
    }
    client.send_raw(&burst);
    let originals: Vec<String> = (0..1000)
        .map(|_| {
            client.read_reply(false).expect(201)["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let addr = server.addr;
        let (base, originals) = (base.clone(), originals.clone());
        std::thread::spawn(move || {
            let mut other = Client::connect(addr);
            let mut writes = 0;
            while !stop.load(Ordering::Relaxed) {
                other.post(&base, r#"{"body":"new"}"#).expect(201);
                let victim = &originals[(writes * 37) % originals.len()];
                other
                    .put(&format!("{base}/{victim}"), r#"{"body":"edited"}"#)
                    .expect(200);
                writes += 1;
            }
            writes
        })
    };
    let first = client.get(&format!("{base}?limit=50")).expect(200);
    let mut seen: Vec<String> = ids(&first)
        .into_iter()
        .filter(|id| originals.contains(id))
        .collect();
    // Walks older pages as the React hook does, prepending each.
    let mut page = first;
    while page["pagination"]["has_before"] == true {
        let before = page["pagination"]["before_anchor"].as_str().unwrap();
        page = client
            .get(&format!("{base}?limit=50&before={before}"))
            .expect(200);
        let mut older = ids(&page);
        older.extend(seen);
        seen = older;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0, "the other client wrote while we paged");
    // Messages posted after the first page are newer than it, so only the
    // first page can contain them; they were filtered out above.
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no message seen twice");
    assert_eq!(
        seen, originals,
        "every original seen exactly once, oldest first"
    );
}

// The owner keeps each thread's rendered first page; every kind of write
// must show up on the very next read of it, from any core.
#[test]
fn the_newest_page_reflects_every_change_at_once() {
    let server = Server::start(&["--shards", "2"]);
    let mut client = server.client();
    let thread = create_thread(&mut client);
    let base = format!("/frontend/v1/threads/{thread}/messages");
    let first = post(&mut client, &thread, json!("one"))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let page = |client: &mut Client, query: &str| client.get(&format!("{base}{query}")).expect(200);
    let bodies = |page: &Value| -> Vec<Value> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["body"].clone())
            .collect()
    };
    // Two reads: the second is served from the owner's cache.
    for _ in 0..2 {
        assert_eq!(bodies(&page(&mut client, "")), [json!("one")]);
    }
    post(&mut client, &thread, json!("two"));
    assert_eq!(bodies(&page(&mut client, "")), [json!("one"), json!("two")]);
    client
        .put(&format!("{base}/{first}"), r#"{"body":"one, edited"}"#)
        .expect(200);
    assert_eq!(
        bodies(&page(&mut client, "")),
        [json!("one, edited"), json!("two")]
    );
    client
        .post(&format!("{base}/{first}/reactions"), r#"{"reaction":"+1"}"#)
        .expect(200);
    assert_eq!(
        page(&mut client, "")["messages"][0]["reaction_counts"]["+1"],
        1
    );
    client
        .delete(&format!("{base}/{first}/reactions"))
        .expect(200);
    assert!(
        page(&mut client, "")["messages"][0]
            .get("reaction_counts")
            .is_none()
    );
    // Other limits and include_deleted are separate pages, kept apart.
    assert_eq!(bodies(&page(&mut client, "?limit=1")), [json!("two")]);
    client.delete(&format!("{base}/{first}")).expect(200);
    assert_eq!(bodies(&page(&mut client, "")), [json!("two")]);
    assert_eq!(bodies(&page(&mut client, "?limit=1")), [json!("two")]);
    assert_eq!(
        bodies(&page(&mut client, "?include_deleted=true")),
        [json!("one, edited"), json!("two")]
    );
    client
        .post(&format!("{base}/{first}/restore"), "")
        .expect(200);
    assert_eq!(
        bodies(&page(&mut client, "")),
        [json!("one, edited"), json!("two")]
    );
    // A deleted thread is gone, cached page or not; restored, it is back.
    client
        .delete(&format!("/frontend/v1/threads/{thread}"))
        .expect(200);
    client.get(&base).expect_error(404, "thread_not_found");
    client
        .post(&format!("/frontend/v1/threads/{thread}/restore"), "")
        .expect(200);
    assert_eq!(
        bodies(&page(&mut client, "")),
        [json!("one, edited"), json!("two")]
    );
}
