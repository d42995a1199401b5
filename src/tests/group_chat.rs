//! End-to-end tests of group chat on the real binary with 2 shards:
//! participants and roles, access on every route, the shared listing with
//! each caller's role and unread count, read markers, participant events
//! on the live tail, and their durability across SIGKILL.

#[path = "support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};

use serde_json::{Value, json};
use support::{Client, Server};

const SHARDS: &[&str] = &["--shards", "2"];

/// A client of the backend test key acting for `user` (the SDKs' way).
fn user(server: &Server, name: &str) -> Client {
    server.client().acting_for(name)
}

/// A thread key owned by shard `shard` of 2.
fn key_on(shard: usize, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|key| progressdb::shard::shard_for(key, 2).0 == shard)
        .unwrap()
}

fn create(client: &mut Client, key: &str, participants: &[&str]) -> Value {
    let body = json!({"key": key, "title": key, "participants": participants});
    client
        .post("/frontend/v1/threads", &body.to_string())
        .expect(201)
}

fn post(client: &mut Client, thread: &str, text: &str) -> String {
    let body = json!({"body": {"text": text}});
    let path = format!("/frontend/v1/threads/{thread}/messages");
    let message = client.post(&path, &body.to_string()).expect(201);
    message["key"].as_str().unwrap().to_owned()
}

fn add(client: &mut Client, thread: &str, user_id: &str, role: &str) -> (u16, Value) {
    let body = json!({"user_id": user_id, "role": role}).to_string();
    let reply = client.post(
        &format!("/frontend/v1/threads/{thread}/participants"),
        &body,
    );
    (reply.status, reply.json())
}

fn participants(client: &mut Client, thread: &str, query: &str) -> Value {
    client
        .get(&format!(
            "/frontend/v1/threads/{thread}/participants{query}"
        ))
        .expect(200)
}

fn roles(page: &Value) -> Vec<(String, String)> {
    page["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |name: &str| p[name].as_str().unwrap().to_owned();
            (field("user_id"), field("role"))
        })
        .collect()
}

fn mark_read(client: &mut Client, thread: &str, message: &str) -> Value {
    let body = json!({"message": message}).to_string();
    client
        .put(&format!("/frontend/v1/threads/{thread}/read"), &body)
        .expect(200)
}

/// Every thread of the caller's listing, newest first, paged with `after`.
fn listing(client: &mut Client, sort: &str) -> Vec<Value> {
    let mut threads = Vec::new();
    let mut path = format!("/frontend/v1/threads?limit=2&sort_by={sort}");
    loop {
        let page = client.get(&path).expect(200);
        threads.extend(page["threads"].as_array().unwrap().iter().cloned());
        if page["pagination"]["has_after"] != true {
            assert_eq!(page["pagination"]["total"], threads.len() as u64);
            return threads;
        }
        let after = page["pagination"]["after_anchor"].as_str().unwrap();
        path = format!("/frontend/v1/threads?limit=2&sort_by={sort}&after={after}");
    }
}

fn listed<'a>(threads: &'a [Value], key: &str) -> &'a Value {
    threads
        .iter()
        .find(|thread| thread["key"] == key)
        .unwrap_or_else(|| panic!("{key} is not listed"))
}

#[test]
fn three_users_share_a_thread_within_their_roles() {
    let server = Server::start(SHARDS);
    let (mut alice, mut bob, mut carol) = (
        user(&server, "alice"),
        user(&server, "bob"),
        user(&server, "carol"),
    );
    let thread = key_on(1, "trio");
    create(&mut alice, &thread, &["bob"]);
    let (status, carol_added) = add(&mut alice, &thread, "carol", "member");
    assert_eq!(status, 201);
    assert_eq!(carol_added["user_id"], "carol");
    assert_eq!(carol_added["role"], "member");
    assert_eq!(carol_added["added_by"], "alice");
    assert!(carol_added["added_ts"].as_u64().unwrap() > 0);

    // All three post, reply and react.
    let first = post(&mut alice, &thread, "hi all");
    let from_bob = post(&mut bob, &thread, "hi alice");
    let reply = json!({"body": {"text": "hello"}, "reply_to": first}).to_string();
    let messages = format!("/frontend/v1/threads/{thread}/messages");
    carol.post(&messages, &reply).expect(201);
    for (client, emoji) in [(&mut alice, "👍"), (&mut bob, "🎉"), (&mut carol, "👍")] {
        let body = json!({"reaction": emoji}).to_string();
        client
            .post(&format!("{messages}/{first}/reactions"), &body)
            .expect(200);
    }
    let message = alice.get(&format!("{messages}/{first}")).expect(200);
    let reactions = message["message"]["reactions"].as_object().unwrap();
    assert_eq!(reactions.len(), 3, "{message}");
    let replies = bob.get(&format!("{messages}/{first}/replies")).expect(200);
    assert_eq!(replies["messages"].as_array().unwrap().len(), 1);

    // Members add no one, edit and delete only their own messages.
    let (status, refused) = add(&mut bob, &thread, "dave", "member");
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("forbidden"))
    );
    let edit = json!({"body": {"text": "edited"}}).to_string();
    carol
        .put(&format!("{messages}/{from_bob}"), &edit)
        .expect_error(403, "forbidden");
    carol
        .delete(&format!("{messages}/{from_bob}"))
        .expect_error(403, "forbidden");
    bob.put(&format!("{messages}/{from_bob}"), &edit)
        .expect(200);
    let rename = json!({"title": "renamed"}).to_string();
    let thread_path = format!("/frontend/v1/threads/{thread}");
    bob.put(&thread_path, &rename)
        .expect_error(403, "forbidden");
    // The owner moderates; an admin renames but does not delete the thread.
    alice.delete(&format!("{messages}/{from_bob}")).expect(200);
    let (status, promoted) = add(&mut alice, &thread, "bob", "admin");
    assert_eq!((status, promoted["role"].as_str()), (200, Some("admin")));
    bob.put(&thread_path, &rename).expect(200);
    bob.delete(&thread_path).expect_error(403, "forbidden");

    let page = participants(&mut carol, &thread, "");
    let expected = [("alice", "owner"), ("bob", "admin"), ("carol", "member")]
        .map(|(u, r)| (u.to_owned(), r.to_owned()));
    assert_eq!(roles(&page), expected);
    assert_eq!(page["pagination"]["total"], 3);
    let first_page = participants(&mut carol, &thread, "?limit=2");
    assert_eq!(first_page["pagination"]["has_after"], true);
    assert_eq!(first_page["pagination"]["after_anchor"], "bob");
    let second = participants(&mut carol, &thread, "?limit=2&after=bob");
    assert_eq!(roles(&second), expected[2..]);
    assert_eq!(second["pagination"]["has_before"], true);
    let back = participants(&mut carol, &thread, "?limit=2&before=carol");
    assert_eq!(roles(&back), expected[..2]);

    // The owner stays; members leave; an admin removes members.
    bob.delete(&format!("{thread_path}/participants/alice"))
        .expect_error(403, "forbidden");
    let left = carol
        .delete(&format!("{thread_path}/participants/carol"))
        .expect(200);
    assert_eq!(left, json!({"key": "carol", "removed": true}));
    assert_eq!(add(&mut bob, &thread, "dave", "member").0, 201);
    let removed = bob
        .delete(&format!("{thread_path}/participants/dave"))
        .expect(200);
    assert_eq!(removed, json!({"key": "dave", "removed": true}));
    bob.delete(&format!("{thread_path}/participants/dave"))
        .expect_error(404, "participant_not_found");
}

#[test]
fn outsiders_and_removed_members_get_404_everywhere() {
    let server = Server::start(SHARDS);
    let (mut alice, mut carol) = (user(&server, "alice"), user(&server, "carol"));
    let thread = key_on(0, "closed");
    create(&mut alice, &thread, &["carol"]);
    let message = post(&mut alice, &thread, "secret");
    let missing = key_on(0, "missing");
    let routes = |key: &str| {
        let base = format!("/frontend/v1/threads/{key}");
        let msg = format!("{base}/messages/{message}");
        vec![
            ("GET", base.clone(), None),
            ("PUT", base.clone(), Some(r#"{"title":"x"}"#)),
            ("DELETE", base.clone(), None),
            ("GET", format!("{base}/messages"), None),
            ("POST", format!("{base}/messages"), Some(r#"{"body":1}"#)),
            ("GET", msg.clone(), None),
            ("PUT", msg.clone(), Some(r#"{"body":2}"#)),
            ("DELETE", msg.clone(), None),
            (
                "POST",
                format!("{msg}/reactions"),
                Some(r#"{"reaction":"x"}"#),
            ),
            ("GET", format!("{msg}/replies"), None),
            ("GET", format!("{msg}/versions"), None),
            ("GET", format!("{base}/messages/stream"), None),
            ("GET", format!("{base}/participants"), None),
            (
                "POST",
                format!("{base}/participants"),
                Some(r#"{"user_id":"x"}"#),
            ),
            ("DELETE", format!("{base}/participants/alice"), None),
            ("PUT", format!("{base}/read"), Some(r#"{"message":"m"}"#)),
        ]
    };
    carol
        .get(&format!("/frontend/v1/threads/{thread}"))
        .expect(200);
    carol
        .delete(&format!("/frontend/v1/threads/{thread}/participants/carol"))
        .expect(200);
    for outsider in ["carol", "dave"] {
        for ((method, path, body), (_, missing_path, _)) in
            routes(&thread).into_iter().zip(routes(&missing))
        {
            // A connection each: a refused stream closes its connection.
            let hidden = user(&server, outsider).request(method, &path, body);
            let absent = user(&server, outsider).request(method, &missing_path, body);
            assert_eq!(hidden.status, 404, "{method} {path}");
            assert_eq!(hidden.body, absent.body, "{method} {path}");
        }
    }
    let listed = listing(&mut carol, "created_ts");
    assert!(listed.is_empty(), "{listed:?}");
}

#[test]
fn listing_shows_shared_threads_with_role_and_unread_count() {
    let server = Server::start(SHARDS);
    let (mut alice, mut bob) = (user(&server, "alice"), user(&server, "bob"));
    // Listed once before anything exists: later changes must keep the
    // in-memory listings current.
    assert!(listing(&mut bob, "created_ts").is_empty());
    assert!(listing(&mut alice, "updated_ts").is_empty());
    // Threads on both shards: alice owns three shared with bob, bob owns
    // one shared with alice, and each owns one of their own.
    let shared: Vec<String> = (0..3)
        .map(|n| key_on(n % 2, &format!("shared{n}")))
        .collect();
    for key in &shared {
        create(&mut alice, key, &["bob"]);
    }
    let bobs = key_on(1, "bobs");
    // Naming oneself or someone twice adds no one twice.
    create(&mut bob, &bobs, &["alice", "bob", "alice"]);
    create(&mut alice, &key_on(0, "alice-only"), &[]);
    create(&mut bob, &key_on(1, "bob-only"), &[]);

    let for_bob = listing(&mut bob, "created_ts");
    assert_eq!(for_bob.len(), 5);
    for key in &shared {
        assert_eq!(listed(&for_bob, key)["role"], "member");
    }
    assert_eq!(listed(&for_bob, &bobs)["role"], "owner");
    let for_alice = listing(&mut alice, "created_ts");
    assert_eq!(for_alice.len(), 5);
    assert_eq!(listed(&for_alice, &bobs)["role"], "member");
    // The thread a cursor names is listed the same way.
    let anchored = bob
        .get(&format!("/frontend/v1/threads?limit=1&anchor={bobs}"))
        .expect(200);
    let anchor = listed(anchored["threads"].as_array().unwrap(), &bobs);
    assert_eq!(
        (anchor["role"].as_str(), anchor["unread_count"].as_u64()),
        (Some("owner"), Some(0))
    );
    let created: Vec<u64> = for_bob
        .iter()
        .map(|t| t["created_ts"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");

    // Activity moves a shared thread to the top of everyone's
    // `updated_ts` listing, across shards.
    let oldest = &shared[0];
    let messages: Vec<String> = (0..3)
        .map(|n| post(&mut alice, oldest, &format!("m{n}")))
        .collect();
    let by_activity = listing(&mut bob, "updated_ts");
    assert_eq!(by_activity[0]["key"], *oldest);
    assert_eq!(by_activity.len(), 5);

    // Unread: messages of others since the marker; one's own never count.
    assert_eq!(listed(&by_activity, oldest)["unread_count"], 3);
    assert_eq!(
        listed(&for_alice_now(&mut alice), oldest)["unread_count"],
        0
    );
    post(&mut bob, oldest, "mine");
    let marker = mark_read(&mut bob, oldest, &messages[1]);
    assert_eq!(
        marker,
        json!({"key": oldest, "last_read": messages[1], "unread_count": 1})
    );
    let listed_now = listing(&mut bob, "updated_ts");
    assert_eq!(listed(&listed_now, oldest)["unread_count"], 1);
    // Markers never move back.
    let unchanged = mark_read(&mut bob, oldest, &messages[0]);
    assert_eq!(unchanged["last_read"], messages[1]);
    assert_eq!(unchanged["unread_count"], 1);
    assert_eq!(mark_read(&mut bob, oldest, &messages[2])["unread_count"], 0);
    // Alice sees bob's message as unread.
    assert_eq!(
        listed(&for_alice_now(&mut alice), oldest)["unread_count"],
        1
    );
    // A message deleted after the marker still counts until the marker
    // moves again, which recounts live messages only.
    let newer = post(&mut alice, oldest, "newer");
    let gone = post(&mut alice, oldest, "soon deleted");
    alice
        .delete(&format!("/frontend/v1/threads/{oldest}/messages/{gone}"))
        .expect(200);
    let counted = listing(&mut bob, "updated_ts");
    assert_eq!(listed(&counted, oldest)["unread_count"], 2);
    assert_eq!(mark_read(&mut bob, oldest, &messages[2])["unread_count"], 2);
    assert_eq!(mark_read(&mut bob, oldest, &newer)["unread_count"], 0);
    bob.put(
        &format!("/frontend/v1/threads/{oldest}/read"),
        r#"{"message":"nope"}"#,
    )
    .expect_error(404, "message_not_found");
}

fn for_alice_now(alice: &mut Client) -> Vec<Value> {
    listing(alice, "updated_ts")
}

#[test]
fn the_seed_route_makes_its_authors_members() {
    let server = Server::start(SHARDS);
    let mut backend = server.client();
    backend.user = None;
    for author in ["alice", "bob"] {
        let body = json!({"thread": "quickstart", "author": author, "body": {"text": author}});
        backend.post("/v1/messages", &body.to_string()).expect(201);
    }
    let mut bob = user(&server, "bob");
    let thread = bob.get("/frontend/v1/threads/quickstart").expect(200);
    assert_eq!(thread["thread"]["author"], "alice");
    let page = participants(&mut bob, "quickstart", "");
    let expected = [("alice", "owner"), ("bob", "member")].map(|(u, r)| (u.into(), r.into()));
    assert_eq!(roles(&page), expected);
    assert_eq!(page["participants"][1]["added_by"], "bob");
    // Bob's listing shows the thread; his own message is not unread.
    let listed_for_bob = listing(&mut bob, "created_ts");
    assert_eq!(listed_for_bob.len(), 1);
    assert_eq!(listed_for_bob[0]["role"], "member");
    assert_eq!(listed_for_bob[0]["unread_count"], 0);
}

#[test]
fn participant_limits_are_clear_4xx() {
    let server = Server::start(&["--shards", "2", "--participants-per-thread-max", "2"]);
    let mut alice = user(&server, "alice");
    let many: Vec<String> = (0..101).map(|n| format!("u{n}")).collect();
    let body = json!({"title": "big", "participants": many}).to_string();
    alice
        .post("/frontend/v1/threads", &body)
        .expect_error(400, "too_many_participants");
    let body = json!({"title": "bad", "participants": ["has space"]}).to_string();
    alice
        .post("/frontend/v1/threads", &body)
        .expect_error(400, "invalid_user_id");
    let thread = key_on(0, "small");
    create(&mut alice, &thread, &["bob", "carol"]);
    let (status, full) = add(&mut alice, &thread, "dave", "member");
    assert_eq!(
        (status, full["error"].as_str()),
        (409, Some("too_many_participants"))
    );
    let (status, owner) = add(&mut alice, &thread, "bob", "owner");
    assert_eq!(
        (status, owner["error"].as_str()),
        (400, Some("invalid_role"))
    );
    let path = format!("/frontend/v1/threads/{thread}/participants");
    alice
        .post(&path, r#"{"role":"member"}"#)
        .expect_error(400, "missing_field");
    alice
        .post(&path, r#"{"user_id":""}"#)
        .expect_error(400, "invalid_user_id");
    alice
        .delete(&format!("{path}/alice"))
        .expect_error(403, "forbidden");
}

/// A raw SSE reader of one user's live tail (of a thread or all theirs).
struct Stream {
    reader: BufReader<TcpStream>,
    /// The core that accepted the connection.
    shard: String,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, user: &str) -> Stream {
        let stream = TcpStream::connect(addr).unwrap();
        let (reader, shard) = support::open_event_stream(stream, path, user, "");
        Stream { reader, shard }
    }

    /// The next `(event, data)`, or `None` when the server closed the stream.
    fn next(&mut self) -> Option<(String, Value)> {
        let mut kind = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if let Some(value) = line.strip_prefix("event: ") {
                kind = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                return Some((kind, serde_json::from_str(value).unwrap()));
            }
        }
    }
}

#[test]
fn participant_events_reach_the_tail_and_a_removed_member_s_stream_ends() {
    let server = Server::start(SHARDS);
    let mut alice = user(&server, "alice");
    let thread = key_on(1, "tail");
    create(&mut alice, &thread, &["carol"]);
    let path = format!("/frontend/v1/threads/{thread}/messages/stream");
    let mut carols = Stream::open(server.addr, &path, "carol");
    let mut alices = Stream::open(server.addr, &path, "alice");
    post(&mut alice, &thread, "welcome");
    assert_eq!(carols.next().unwrap().0, "message.created");
    add(&mut alice, &thread, "dave", "member");
    let (kind, data) = carols.next().unwrap();
    assert_eq!(
        (kind.as_str(), data["user_id"].as_str()),
        ("participant.added", Some("dave"))
    );
    alice
        .delete(&format!("/frontend/v1/threads/{thread}/participants/carol"))
        .expect(200);
    let (kind, data) = carols.next().unwrap();
    assert_eq!(
        (kind.as_str(), data["user_id"].as_str()),
        ("participant.removed", Some("carol"))
    );
    assert!(carols.next().is_none(), "the removed member's stream ends");
    // The others' streams go on.
    assert_eq!(alices.next().unwrap().0, "message.created");
    assert_eq!(alices.next().unwrap().0, "participant.added");
    assert_eq!(alices.next().unwrap().0, "participant.removed");
    post(&mut alice, &thread, "still here");
    assert_eq!(alices.next().unwrap().0, "message.created");
}

/// What the kill test expects after every restart.
#[derive(Default)]
struct Expected {
    /// Thread -> its participants' `(user_id, role)`, in user id order.
    participants: std::collections::BTreeMap<String, Vec<(String, String)>>,
    /// Thread -> bob's read marker and unread count.
    bob_read: std::collections::BTreeMap<String, (String, u64)>,
}

fn verify_group(server: &Server, expected: &Expected, context: &str) {
    let mut alice = user(server, "alice");
    for (thread, roles_then) in &expected.participants {
        let page = participants(&mut alice, thread, "");
        assert_eq!(&roles(&page), roles_then, "{context}: {thread}");
    }
    let mut bob = user(server, "bob");
    let listed_for_bob = listing(&mut bob, "updated_ts");
    for (thread, (marker, unread)) in &expected.bob_read {
        assert_eq!(
            listed(&listed_for_bob, thread)["unread_count"],
            *unread,
            "{context}: {thread}"
        );
        // Setting the marker where it is changes nothing and shows it.
        let now = mark_read(&mut bob, thread, marker);
        assert_eq!(now["last_read"], *marker, "{context}: {thread}");
        assert_eq!(now["unread_count"], *unread, "{context}: {thread}");
    }
}

#[test]
fn participants_and_read_markers_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut expected = Expected::default();
    for round in 0..3 {
        let context = format!("round {round}");
        let server = Server::start_on(&db, SHARDS);
        verify_group(&server, &expected, &context);
        let (mut alice, mut bob) = (user(&server, "alice"), user(&server, "bob"));
        let thread = key_on(round % 2, &format!("durable{round}"));
        create(&mut alice, &thread, &["bob"]);
        add(&mut alice, &thread, "carol", "admin");
        add(&mut alice, &thread, "dave", "member");
        alice
            .delete(&format!("/frontend/v1/threads/{thread}/participants/dave"))
            .expect(200);
        let posted: Vec<String> = (0..4)
            .map(|n| post(&mut alice, &thread, &n.to_string()))
            .collect();
        post(&mut bob, &thread, "bob's own");
        mark_read(&mut bob, &thread, &posted[1]);
        expected.participants.insert(
            thread.clone(),
            [("alice", "owner"), ("bob", "member"), ("carol", "admin")]
                .map(|(u, r)| (u.to_owned(), r.to_owned()))
                .to_vec(),
        );
        expected.bob_read.insert(thread, (posted[1].clone(), 2));
        // No clean shutdown: everything comes back from the WAL.
        server.kill();
    }
    let server = Server::start_on(&db, SHARDS);
    verify_group(&server, &expected, "final");
}

#[test]
fn a_user_s_own_stream_follows_all_their_threads_across_cores() {
    let server = Server::start(SHARDS);
    let (mut alice, mut bob) = (user(&server, "alice"), user(&server, "bob"));
    let remote = key_on(1, "remote");
    let local = key_on(0, "local");
    create(&mut alice, &remote, &["bob"]);
    create(&mut alice, &local, &["bob"]);
    create(&mut alice, &key_on(1, "not-bobs"), &[]);
    // Bob's stream, accepted by shard 0; `remote` is owned by shard 1.
    let mut stream = (0..64)
        .map(|_| Stream::open(server.addr, "/frontend/v1/stream", "bob"))
        .find(|stream| stream.shard == "0")
        .expect("a connection accepted by shard 0");
    let posted = post(&mut alice, &remote, "across cores");
    let (kind, data) = stream.next().unwrap();
    assert_eq!(kind, "message.created");
    assert_eq!(
        (data["key"].as_str(), data["thread"].as_str()),
        (Some(posted.as_str()), Some(remote.as_str()))
    );
    post(&mut alice, &key_on(1, "not-bobs"), "not for bob");
    post(&mut bob, &local, "bob's own");
    let (_, data) = stream.next().unwrap();
    assert_eq!(data["thread"], *local);

    // A thread bob joins later is followed from then on.
    let later = key_on(1, "later");
    create(&mut alice, &later, &[]);
    add(&mut alice, &later, "bob", "member");
    let (kind, data) = stream.next().unwrap();
    assert_eq!(kind, "participant.added");
    assert_eq!(
        (data["thread"].as_str(), data["user_id"].as_str()),
        (Some(later.as_str()), Some("bob"))
    );
    post(&mut alice, &later, "welcome");
    assert_eq!(stream.next().unwrap().1["thread"], *later);

    // Leaving stops it, after the removal itself; the stream goes on.
    bob.delete(&format!("/frontend/v1/threads/{remote}/participants/bob"))
        .expect(200);
    let (kind, data) = stream.next().unwrap();
    assert_eq!(
        (kind.as_str(), data["thread"].as_str()),
        ("participant.removed", Some(remote.as_str()))
    );
    post(&mut alice, &remote, "after bob left");
    post(&mut alice, &local, "still shared");
    let (kind, data) = stream.next().unwrap();
    assert_eq!(data["thread"], *local, "{kind} {data}");
}

#[test]
fn admin_keys_see_every_thread_s_participants() {
    const ADMIN: &str = "admin_key_0123456789";
    let server = Server::start(&["--shards", "2", "--admin-key", ADMIN]);
    let mut alice = user(&server, "alice");
    let thread = key_on(1, "audited");
    create(&mut alice, &thread, &["bob"]);
    alice
        .delete(&format!("/frontend/v1/threads/{thread}"))
        .expect(200);
    let mut admin = server.client();
    admin.key = Some(ADMIN.into());
    admin.user = None;
    let page = admin
        .get(&format!("/admin/v1/threads/{thread}/participants"))
        .expect(200);
    let expected = [("alice", "owner"), ("bob", "member")].map(|(u, r)| (u.into(), r.into()));
    assert_eq!(roles(&page), expected);
    // Bob no longer sees the deleted thread; the owner still does.
    user(&server, "bob")
        .get(&format!("/frontend/v1/threads/{thread}/participants"))
        .expect_error(404, "thread_not_found");
    alice
        .get(&format!(
            "/frontend/v1/threads/{thread}?include_deleted=true"
        ))
        .expect(200);
}

#[test]
fn a_signed_frontend_user_has_the_same_rights_as_a_backend_acting_for_them() {
    const FRONTEND: &str = "pk_frontend_0123456789";
    const SIGNING: &str = "signing-secret-0123";
    let server = Server::start(&[
        "--shards",
        "2",
        "--frontend-key",
        FRONTEND,
        "--signing-key",
        SIGNING,
    ]);
    let mut alice = user(&server, "alice");
    let thread = key_on(1, "signed");
    create(&mut alice, &thread, &["bob"]);
    let mut bob = user(&server, "bob");
    bob.key = Some(FRONTEND.into());
    let signature = progressdb::auth::sign(SIGNING.as_bytes(), "bob");
    bob.extra_headers = format!("X-User-Signature: {signature}\r\n");
    bob.get(&format!("/frontend/v1/threads/{thread}"))
        .expect(200);
    post(&mut bob, &thread, "from the browser");
    let (status, refused) = add(&mut bob, &thread, "dave", "member");
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("forbidden"))
    );
    let listed_for_bob = listing(&mut bob, "created_ts");
    assert_eq!(listed(&listed_for_bob, &thread)["role"], "member");
    bob.delete(&format!("/frontend/v1/threads/{thread}/participants/bob"))
        .expect(200);
    bob.get(&format!("/frontend/v1/threads/{thread}"))
        .expect_error(404, "thread_not_found");
}
