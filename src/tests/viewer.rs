//! End-to-end tests of the admin read routes and the `/viewer/` UI on the
//! real binary, ending with the UI driven in headless Chromium by
//! `src/tests/browser/viewer.mjs` (install its tools with
//! `scripts/install-test-deps.sh`).

#[path = "support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{API_KEY, Client, Server, ids};

const ADMIN: &str = "admin_key_0123456789";

fn start() -> Server {
    Server::start(&["--admin-key", ADMIN, "--shards", "2"])
}

fn admin(server: &Server) -> Client {
    support::keyed_client(server, ADMIN)
}

/// A backend-key client acting for `user`.
fn backend(server: &Server, user: &str) -> Client {
    server.client().acting_for(user)
}

fn create_thread(client: &mut Client, id: &str, title: &str) {
    client
        .post(
            "/frontend/v1/threads",
            &json!({ "id": id, "title": title }).to_string(),
        )
        .expect(201);
}

fn post(client: &mut Client, thread: &str, text: &str) -> String {
    let message = client
        .post(
            &format!("/frontend/v1/threads/{thread}/messages"),
            &json!({ "body": { "text": text } }).to_string(),
        )
        .expect(201);
    message["key"].as_str().expect("message id").to_string()
}

#[test]
fn admin_lists_and_searches_every_thread() {
    let server = start();
    let mut alice = backend(&server, "alice");
    let mut bob = backend(&server, "bob");
    for id in ["viewer-a1", "viewer-a2", "zeta"] {
        create_thread(&mut alice, id, &format!("title of {id}"));
    }
    create_thread(&mut bob, "viewer-b1", "bob's");
    alice.delete("/frontend/v1/threads/viewer-a2").expect(200);
    let mut admin = admin(&server);

    let all = admin.get("/admin/v1/threads").expect(200);
    assert_eq!(ids(&all), ["viewer-a1", "viewer-a2", "viewer-b1", "zeta"]);
    assert_eq!(all["threads"][1]["deleted"], true);
    assert_eq!(all["pagination"]["has_after"], false);
    assert_eq!(all["pagination"]["total"], 4);
    let live = admin
        .get("/admin/v1/threads?include_deleted=false")
        .expect(200);
    assert_eq!(ids(&live), ["viewer-a1", "viewer-b1", "zeta"]);
    let newest = admin.get("/admin/v1/threads?sort_by=id_desc").expect(200);
    assert_eq!(
        ids(&newest),
        ["zeta", "viewer-b1", "viewer-a2", "viewer-a1"]
    );

    // Paging one at a time over both shards visits each thread once.
    for (sort, expected) in [
        ("id_asc", ["viewer-a1", "viewer-a2", "viewer-b1", "zeta"]),
        ("id_desc", ["zeta", "viewer-b1", "viewer-a2", "viewer-a1"]),
    ] {
        let mut seen = Vec::new();
        let mut path = format!("/admin/v1/threads?limit=1&sort_by={sort}");
        loop {
            let page = admin.get(&path).expect(200);
            seen.extend(ids(&page));
            if page["pagination"]["has_after"] != true {
                break;
            }
            let cursor = page["pagination"]["after_anchor"].as_str().unwrap();
            path = format!("/admin/v1/threads?limit=1&sort_by={sort}&after={cursor}");
        }
        assert_eq!(seen, expected, "{sort}");
    }

    let prefixed = admin
        .get("/admin/v1/threads?id_prefix=viewer-a")
        .expect(200);
    assert_eq!(ids(&prefixed), ["viewer-a1", "viewer-a2"]);
    let exact = admin.get("/admin/v1/threads?id=zeta").expect(200);
    assert_eq!(ids(&exact), ["zeta"]);
    let missing = admin.get("/admin/v1/threads?id=viewer-a").expect(200);
    assert!(ids(&missing).is_empty());
    let by_bob = admin.get("/admin/v1/threads?author=bob").expect(200);
    assert_eq!(ids(&by_bob), ["viewer-b1"]);
    let by_alice = admin
        .get("/admin/v1/threads?author=alice&sort_by=created_ts")
        .expect(200);
    assert_eq!(ids(&by_alice), ["zeta", "viewer-a2", "viewer-a1"]);

    let one = &admin.get("/admin/v1/threads/viewer-a2").expect(200)["thread"];
    assert_eq!(one["deleted"], true);
    assert_eq!(one["author"], "alice");
    admin
        .get("/admin/v1/threads/nope")
        .expect_error(404, "thread_not_found");

    for (path, code) in [
        ("/admin/v1/threads?author=bob&id=zeta", "invalid_query"),
        ("/admin/v1/threads?id_prefix=a%2Fb", "invalid_thread_id"),
        ("/admin/v1/threads?author=a%20b", "invalid_field"),
        ("/admin/v1/threads?sort_by=ts_desc", "invalid_sort_by"),
        ("/admin/v1/threads?after=%21", "invalid_cursor"),
        ("/admin/v1/threads?before=zeta", "invalid_query"),
        ("/admin/v1/threads?limit=0", "invalid_limit"),
        ("/admin/v1/threads?include_deleted=yes", "invalid_query"),
    ] {
        admin.get(path).expect_error(400, code);
    }
}

#[test]
fn admin_reads_messages_versions_and_deleted_threads() {
    let server = start();
    let mut alice = backend(&server, "alice");
    create_thread(&mut alice, "talk", "Talk");
    let first = post(&mut alice, "talk", "one");
    let edited = post(&mut alice, "talk", "two");
    let deleted = post(&mut alice, "talk", "three");
    alice
        .put(
            &format!("/frontend/v1/threads/talk/messages/{edited}"),
            &json!({ "body": { "text": "two, edited" } }).to_string(),
        )
        .expect(200);
    alice
        .delete(&format!("/frontend/v1/threads/talk/messages/{deleted}"))
        .expect(200);
    let mut admin = admin(&server);

    // The newest page, oldest first, deleted items included and flagged,
    // paged back with `before`.
    let page = admin
        .get("/admin/v1/threads/talk/messages?limit=2")
        .expect(200);
    assert_eq!(ids(&page), [edited.clone(), deleted.clone()]);
    assert_eq!(page["messages"][1]["deleted"], true);
    assert_eq!(page["messages"][0]["body"]["text"], "two, edited");
    assert_eq!(page["pagination"]["has_before"], true);
    let cursor = page["pagination"]["before_anchor"].as_str().unwrap();
    let older = admin
        .get(&format!(
            "/admin/v1/threads/talk/messages?limit=2&before={cursor}"
        ))
        .expect(200);
    assert_eq!(ids(&older), [first.as_str()]);
    assert_eq!(older["pagination"]["has_before"], false);
    let live_only = admin
        .get("/admin/v1/threads/talk/messages?include_deleted=false")
        .expect(200);
    assert_eq!(ids(&live_only), [first.clone(), edited.clone()]);

    let versions = admin
        .get(&format!(
            "/admin/v1/threads/talk/messages/{edited}/versions"
        ))
        .expect(200);
    let texts: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|version| version["body"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["two", "two, edited"]);
    admin
        .get(&format!(
            "/admin/v1/threads/talk/messages/{deleted}/versions"
        ))
        .expect(200);
    admin
        .get("/admin/v1/threads/talk/messages/0000/versions")
        .expect_error(404, "message_not_found");

    // A deleted thread: its messages stay readable for an admin, while its
    // author still gets 404, as the frontend contract says.
    alice.delete("/frontend/v1/threads/talk").expect(200);
    let in_deleted = admin.get("/admin/v1/threads/talk/messages").expect(200);
    assert_eq!(ids(&in_deleted).len(), 3);
    admin
        .get(&format!(
            "/admin/v1/threads/talk/messages/{edited}/versions"
        ))
        .expect(200);
    alice
        .get("/frontend/v1/threads/talk/messages?include_deleted=true")
        .expect_error(404, "thread_not_found");
    admin
        .get("/admin/v1/threads/talk/messages?include_deleted=false")
        .expect_error(404, "thread_not_found");
}

#[test]
fn admin_routes_need_the_admin_key_and_admins_nothing_else() {
    let server = start();
    let mut alice = backend(&server, "alice");
    create_thread(&mut alice, "mine", "Mine");
    let paths = [
        "/admin/v1/threads",
        "/admin/v1/threads/mine",
        "/admin/v1/threads/mine/messages",
        "/admin/v1/threads/mine/messages/stream",
    ];
    for path in paths {
        alice.get(path).expect_error(403, "forbidden");
        let mut anonymous = server.client();
        anonymous.key = None;
        anonymous.get(path).expect_error(401, "unauthorized");
    }
    let mut admin = admin(&server);
    admin
        .get("/frontend/v1/threads")
        .expect_error(403, "forbidden");
    admin
        .post("/frontend/v1/threads/mine/messages", r#"{"body":"x"}"#)
        .expect_error(403, "forbidden");
    admin
        .request("PUT", "/admin/v1/threads/mine", Some("{}"))
        .expect_error(405, "method_not_allowed");
}

#[test]
fn stats_count_messages_requests_and_wal_bytes_per_shard() {
    let server = start();
    let mut alice = backend(&server, "alice");
    for thread in ["s1", "s2", "s3", "s4"] {
        create_thread(&mut alice, thread, thread);
        post(&mut alice, thread, "hello");
    }
    let mut admin = admin(&server);
    let count = |stats: &Value| -> u64 {
        stats["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|shard| shard["messages"].as_u64().expect("messages"))
            .sum()
    };
    let stats = admin.get("/admin/v1/stats").expect(200);
    let shards = stats["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    assert_eq!(count(&stats), 4);
    let requests: u64 = shards
        .iter()
        .map(|shard| shard["requests"]["total"].as_u64().unwrap())
        .sum();
    // 8 writes and this stats call, at least.
    assert!(requests >= 9, "{stats}");
    for shard in shards {
        assert!(shard["requests"]["per_second_10s"].is_number(), "{shard}");
        assert!(shard["requests"]["per_second_60s"].is_number(), "{shard}");
        assert!(shard["wal"]["disk_bytes"].as_u64().unwrap() > 0, "{shard}");
    }
    // Counted once, then kept current by posts.
    post(&mut alice, "s1", "again");
    let after = admin.get("/admin/v1/stats").expect(200);
    assert_eq!(count(&after), 5);
}

#[test]
fn admin_live_tail_streams_any_users_thread() {
    let server = start();
    let mut bob = backend(&server, "bob");
    create_thread(&mut bob, "bobs", "Bob's");
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /admin/v1/threads/bobs/messages/stream HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Once the head is here the subscription exists, so the post below is seen.
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
    }
    let id = post(&mut bob, "bobs", "seen by the admin");
    let mut event = String::new();
    let data = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        if let Some(kind) = line.strip_prefix("event: ") {
            event = kind.trim().to_string();
        }
        if let Some(data) = line.strip_prefix("data: ") {
            break serde_json::from_str::<Value>(data).unwrap();
        }
    };
    assert_eq!(event, "message.created");
    assert_eq!(data["key"], id);
    assert_eq!(data["body"]["text"], "seen by the admin");
}

#[test]
fn viewer_page_is_public_and_locked_down() {
    let server = start();
    let mut anonymous = server.client();
    anonymous.key = None;
    anonymous.user = None;
    for path in ["/viewer/", "/viewer"] {
        let page = anonymous.get(path);
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert!(String::from_utf8_lossy(&page.body).contains("/viewer/viewer.js"));
    }
    let script = anonymous.get("/viewer/viewer.js");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(anonymous.get("/viewer/viewer.css").status, 200);
    anonymous
        .get("/viewer/secrets.txt")
        .expect_error(404, "not_found");
    anonymous
        .post("/viewer/", "{}")
        .expect_error(405, "method_not_allowed");
}

/// What `install-test-deps.sh` installs, or a failure saying to run it.
fn browser_tools() -> (PathBuf, PathBuf) {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tests/browser");
    let chromium = std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let missing: Vec<String> = [
        (chromium.is_file(), chromium.display().to_string()),
        (
            browser_dir.join("node_modules/playwright-core").is_dir(),
            "src/tests/browser/node_modules/playwright-core".into(),
        ),
        (
            Command::new("node").arg("--version").output().is_ok(),
            "node".into(),
        ),
        (
            Command::new("curl").arg("--version").output().is_ok(),
            "curl".into(),
        ),
    ]
    .into_iter()
    .filter(|(present, _)| !present)
    .map(|(_, what)| what)
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs {}: run scripts/install-test-deps.sh",
        missing.join(", ")
    );
    (chromium, browser_dir.join("viewer.mjs"))
}

#[test]
fn viewer_works_in_a_real_browser() {
    let (chromium, script) = browser_tools();
    let server = start();
    let mut alice = backend(&server, "alice");
    create_thread(&mut alice, "viewer-main", "Viewer test thread");
    for (user, role) in [("bob", "member"), ("carol", "admin")] {
        let body = json!({ "user_id": user, "role": role }).to_string();
        alice
            .post("/frontend/v1/threads/viewer-main/participants", &body)
            .expect(201);
    }
    create_thread(&mut alice, "viewer-gone", "A deleted thread");
    create_thread(&mut alice, "unrelated", "Not matched by the search");
    alice.delete("/frontend/v1/threads/viewer-gone").expect(200);

    // 52 fillers, then an edited, a deleted and a markup message: 55, so
    // the first page (50) needs "Older" to reach the oldest.
    let mut ids = Vec::new();
    for n in 1..=52 {
        ids.push(post(
            &mut alice,
            "viewer-main",
            &format!("filler message {n}"),
        ));
    }
    let edited = post(&mut alice, "viewer-main", "edited: the original text");
    alice
        .put(
            &format!("/frontend/v1/threads/viewer-main/messages/{edited}"),
            &json!({ "body": { "text": "edited: the new text" } }).to_string(),
        )
        .expect(200);
    let deleted = post(&mut alice, "viewer-main", "this one was deleted");
    alice
        .delete(&format!(
            "/frontend/v1/threads/viewer-main/messages/{deleted}"
        ))
        .expect(200);
    let markup_text = "<b>not bold</b> & <img src=x onerror=alert(1)>";
    let markup = post(&mut alice, "viewer-main", markup_text);

    let spec = json!({
        "author": "alice",
        "search_prefix": "viewer-",
        "threads_matching_prefix": 2,
        "deleted_thread": "viewer-gone",
        "visible": ["filler message 52", "edited: the new text", "this one was deleted"],
        "deleted": { "id": deleted, "text": "this one was deleted" },
        "edited": { "id": edited, "old": "edited: the original text", "new": "edited: the new text" },
        "markup": { "id": markup, "text": markup_text },
        "page_size": 50,
        "total_messages": 55,
        "newest_id": markup,
        "oldest_id": ids[0],
        "live_text": "posted while the admin watches",
        "participants": ["alice (owner)", "bob (member)", "carol (admin)"],
        "shards": 2,
    });
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer/viewer.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&screenshot);

    let mut child = Command::new("node")
        .arg(&script)
        .arg(format!("http://{}", server.addr))
        .arg("viewer-main")
        .arg(&screenshot)
        .arg(spec.to_string())
        .env("PROGRESSDB_ADMIN_KEY", ADMIN)
        .env("PROGRESSDB_BACKEND_KEY", API_KEY)
        .env("CHROMIUM_PATH", &chromium)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    // Chromium is slow to start on a busy two-core machine; a hang still ends.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("viewer.mjs did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "viewer.mjs failed ({status}); see its output above"
    );
    let size = std::fs::metadata(&screenshot)
        .map(|meta| meta.len())
        .unwrap_or(0);
    assert!(size > 0, "no screenshot at {}", screenshot.display());
}
