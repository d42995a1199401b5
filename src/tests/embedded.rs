//! Embedded mode end to end: the library API on a real data directory,
//! persistence across reopen, and the same directory served by the real
//! binary (and written by it) with one shard.

mod support;

use std::path::Path;
use std::sync::Arc;

use progressdb::Db;
use progressdb::embedded::{Error, Page};
use progressdb::server::datadir;
use support::Server;

fn bodies(page: &progressdb::embedded::Messages) -> Vec<String> {
    page.messages
        .iter()
        .map(|message| message.body.get().to_owned())
        .collect()
}

/// Everything a paged call lists, following its cursors: `page` reads the
/// page after a cursor (`None`: the first) and answers its items and the
/// next cursor.
fn follow_cursors<T>(mut page: impl FnMut(Option<String>) -> (Vec<T>, Option<String>)) -> Vec<T> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let (items, next) = page(cursor);
        out.extend(items);
        match next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// `size` or fewer per page, after `cursor` when given.
fn page_after(page: Page, cursor: Option<String>) -> Page {
    match cursor {
        Some(cursor) => page.after(cursor),
        None => page,
    }
}

/// Every message of `thread`, oldest first, read in pages of `size`.
fn all_oldest_first(db: &Db, thread: &str, size: usize) -> Vec<String> {
    follow_cursors(|cursor| {
        let page = page_after(Page::oldest_first(size), cursor);
        let got = db.list_messages(thread, &page).unwrap();
        assert!(got.messages.len() <= size);
        (bodies(&got), got.next_cursor)
    })
}

#[test]
fn write_page_edit_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();

    let thread = db.create_thread("alice", "  Launch plan ").unwrap();
    assert_eq!(thread.title, "Launch plan");
    assert_eq!(thread.author, "alice");
    assert_eq!(db.thread(&thread.id).unwrap().id, thread.id);
    let ids: Vec<String> = (0..5)
        .map(|n| {
            let message = db
                .post_message(&thread.id, "alice", &format!(r#"{{"n": {n}}}"#))
                .unwrap();
            assert_eq!((message.version, message.thread.as_str()), (1, &*thread.id));
            message.id
        })
        .collect();

    // Newest first, in pages of two, following next_cursor.
    let first = db
        .list_messages(&thread.id, &Page::newest_first(2))
        .unwrap();
    assert_eq!(bodies(&first), [r#"{"n": 4}"#, r#"{"n": 3}"#]);
    let cursor = first.next_cursor.clone().unwrap();
    let second = db
        .list_messages(&thread.id, &Page::newest_first(2).after(cursor))
        .unwrap();
    assert_eq!(bodies(&second), [r#"{"n": 2}"#, r#"{"n": 1}"#]);
    let third = db
        .list_messages(
            &thread.id,
            &Page::newest_first(2).after(second.next_cursor.unwrap()),
        )
        .unwrap();
    assert_eq!(bodies(&third), [r#"{"n": 0}"#]);
    assert_eq!(third.next_cursor, None);
    // Oldest first sees the same five, in order.
    let expected: Vec<String> = (0..5).map(|n| format!(r#"{{"n": {n}}}"#)).collect();
    assert_eq!(all_oldest_first(&db, &thread.id, 3), expected);

    // An edit keeps the original as version 1.
    let edited = db
        .edit_message(&thread.id, &ids[1], r#"{"n": "one"}"#)
        .unwrap();
    assert_eq!((edited.version, edited.body.get()), (2, r#"{"n": "one"}"#));
    let versions = db.versions(&thread.id, &ids[1]).unwrap();
    let history: Vec<(u32, &str)> = versions
        .iter()
        .map(|version| (version.version, version.body.get()))
        .collect();
    assert_eq!(history, [(1, r#"{"n": 1}"#), (2, r#"{"n": "one"}"#)]);

    // A delete hides the message unless deleted ones are asked for.
    db.delete_message(&thread.id, &ids[2]).unwrap();
    assert_eq!(
        db.message(&thread.id, &ids[2]).unwrap_err(),
        Error::MessageNotFound
    );
    let live = db
        .list_messages(&thread.id, &Page::oldest_first(10))
        .unwrap();
    assert_eq!(live.messages.len(), 4);
    let all = db
        .list_messages(&thread.id, &Page::oldest_first(10).include_deleted())
        .unwrap();
    assert!(all.messages[2].deleted && all.messages[2].id == ids[2]);

    // Typed errors for bad input and missing things.
    assert_eq!(db.thread("missing").unwrap_err(), Error::ThreadNotFound);
    assert_eq!(
        db.post_message("missing", "alice", "1").unwrap_err(),
        Error::ThreadNotFound
    );
    assert!(matches!(
        db.list_messages("not a thread id", &Page::newest_first(5)),
        Err(Error::InvalidInput {
            field: "thread",
            ..
        })
    ));
    assert!(matches!(
        db.list_messages(&thread.id, &Page::newest_first(0)),
        Err(Error::InvalidInput { field: "limit", .. })
    ));
    assert_eq!(
        db.list_messages(&thread.id, &Page::newest_first(5).after("bogus"))
            .unwrap_err(),
        Error::InvalidCursor
    );
    assert!(matches!(
        db.post_message(&thread.id, "alice", "null"),
        Err(Error::InvalidInput { field: "body", .. })
    ));
    assert!(matches!(
        db.create_thread("alice", "   "),
        Err(Error::InvalidInput { field: "title", .. })
    ));
    assert_eq!(
        db.edit_message(&thread.id, &ids[2], "1").unwrap_err(),
        Error::MessageNotFound
    );

    // Dropped (not closed): everything is still there after reopening.
    drop(db);
    let db = Db::open(&path).unwrap();
    let mut expected_after = expected.clone();
    expected_after[1] = r#"{"n": "one"}"#.into();
    expected_after.remove(2);
    assert_eq!(all_oldest_first(&db, &thread.id, 2), expected_after);
    assert_eq!(db.versions(&thread.id, &ids[1]).unwrap().len(), 2);
    assert_eq!(
        db.message(&thread.id, &ids[2]).unwrap_err(),
        Error::MessageNotFound
    );
    // Timestamps keep increasing after a reopen.
    let later = db.post_message(&thread.id, "bob", r#""later""#).unwrap();
    assert!(later.ts > all.messages.last().unwrap().ts);
    db.close().unwrap();
}

#[test]
fn threads_share_one_db() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path()).unwrap());
    let thread = db.create_thread("alice", "busy").unwrap().id;
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let db = db.clone();
            let thread = thread.clone();
            std::thread::spawn(move || {
                for n in 0..10 {
                    db.post_message(&thread, "alice", &format!("[{writer},{n}]"))
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let page = db.list_messages(&thread, &Page::oldest_first(100)).unwrap();
    assert_eq!(page.messages.len(), 40);
    assert!(page.messages.windows(2).all(|pair| pair[0].ts < pair[1].ts));
    for writer in 0..4 {
        // Each writer's messages appear in the order it posted them.
        let own: Vec<String> = bodies(&page)
            .into_iter()
            .filter(|body| body.starts_with(&format!("[{writer},")))
            .collect();
        let posted: Vec<String> = (0..10).map(|n| format!("[{writer},{n}]")).collect();
        assert_eq!(own, posted);
    }
}

#[test]
fn directory_moves_between_embedded_and_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");

    let db = Db::open(&path).unwrap();
    let thread = db.create_thread("alice", "From the library").unwrap();
    let first = db
        .post_message(&thread.id, "alice", r#"{"text":"hi",  "n":1}"#)
        .unwrap();
    db.post_message(&thread.id, "alice", r#"{"text":"second"}"#)
        .unwrap();
    db.edit_message(&thread.id, &first.id, r#"{"text":"hi again"}"#)
        .unwrap();
    db.close().unwrap();

    let server = Server::start_on(&path, &["--shards", "1"]);
    // While the server holds the directory, a second opener is refused.
    assert!(matches!(Db::open(&path), Err(Error::Open(_))));
    let mut client = server.client().acting_for("alice");
    let listed = client
        .get(&format!(
            "/v1/threads/{}/messages?sort_by=ts_asc",
            thread.id
        ))
        .expect(200);
    let served: Vec<String> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["body"].to_string())
        .collect();
    assert_eq!(
        served,
        [r#"{"text":"hi again"}"#, r#"{"text":"second"}"#],
        "{listed}"
    );
    let versions = client
        .get(&format!(
            "/frontend/v1/threads/{}/messages/{}/versions",
            thread.id, first.id
        ))
        .expect(200);
    assert_eq!(versions["versions"][0]["body"]["n"], 1, "{versions}");
    assert_eq!(versions["versions"][1]["version"], 2, "{versions}");
    // The server writes too; the library reads it back.
    client
        .post(
            "/v1/messages",
            r#"{"thread":"general","author":"bob","body":{"text":"from http"}}"#,
        )
        .expect(201);
    client
        .post(
            &format!("/frontend/v1/threads/{}/messages", thread.id),
            r#"{"body":"third"}"#,
        )
        .expect(201);
    server.stop();

    let db = Db::open(&path).unwrap();
    let general = db
        .list_messages("general", &Page::newest_first(10))
        .unwrap();
    assert_eq!(bodies(&general), [r#"{"text":"from http"}"#]);
    assert_eq!(general.messages[0].author, "bob");
    assert_eq!(
        all_oldest_first(&db, &thread.id, 10),
        [
            r#"{"text":"hi again"}"#,
            r#"{"text":"second"}"#,
            r#""third""#
        ]
    );
    db.close().unwrap();
}

#[test]
fn other_shard_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("two-shards");
    datadir::prepare(&server_dir, Some(2), 2).unwrap();
    let err = Db::open(&server_dir).err().unwrap();
    assert_eq!(
        err,
        Error::ShardCount {
            dir: server_dir.clone(),
            shards: 2
        }
    );
    assert!(err.to_string().contains("--shards 2"), "{err}");
    // Nothing was created in the refused directory.
    assert!(!server_dir.join("shard-0").exists());

    // And a directory made by the library is a one-shard directory.
    let embedded_dir = dir.path().join("embedded");
    Db::open(&embedded_dir).unwrap().close().unwrap();
    assert_eq!(datadir::stored_shards(&embedded_dir), Ok(Some(1)));
    let refused = datadir::prepare(&embedded_dir, Some(2), 2).unwrap_err();
    assert!(refused.contains("created with 1 shards"), "{refused}");
    assert!(is_shard_dir(&embedded_dir.join("shard-0")));
}

fn is_shard_dir(path: &Path) -> bool {
    path.join("store").is_dir() && path.join("wal").is_dir()
}

#[test]
fn replies_renames_deletes_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let thread = db.create_thread("alice", "Plans").unwrap();
    let root = db.post_message(&thread.id, "alice", r#""root""#).unwrap();
    let replies: Vec<String> = (0..3)
        .map(|n| {
            let reply = db
                .post_reply(&thread.id, &root.id, "bob", &format!("{n}"))
                .unwrap();
            assert_eq!(reply.reply_to.as_deref(), Some(root.id.as_str()));
            reply.id
        })
        .collect();
    let first = db
        .replies(&thread.id, &root.id, &Page::oldest_first(2))
        .unwrap();
    assert_eq!(bodies(&first), ["0", "1"]);
    let cursor = first.next_cursor.expect("a third reply");
    let rest = db
        .replies(&thread.id, &root.id, &Page::oldest_first(2).after(cursor))
        .unwrap();
    assert_eq!(
        (bodies(&rest), rest.next_cursor),
        (vec!["2".to_owned()], None)
    );
    assert!(matches!(
        db.post_reply(&thread.id, "no-such-message", "bob", "1"),
        Err(Error::InvalidInput {
            field: "reply_to",
            ..
        })
    ));

    db.delete_message(&thread.id, &replies[0]).unwrap();
    assert_eq!(
        db.message(&thread.id, &replies[0]).err(),
        Some(Error::MessageNotFound)
    );
    let restored = db.restore_message(&thread.id, &replies[0]).unwrap();
    assert_eq!(restored.body.get(), "0");

    assert_eq!(
        db.rename_thread(&thread.id, "Roadmap").unwrap().title,
        "Roadmap"
    );
    db.delete_thread(&thread.id).unwrap();
    assert_eq!(db.thread(&thread.id).err(), Some(Error::ThreadNotFound));
    assert_eq!(db.restore_thread(&thread.id).unwrap().title, "Roadmap");
    assert_eq!(all_oldest_first(&db, &thread.id, 10).len(), 4);
}

#[test]
fn a_subscription_sees_every_change_and_resumes_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path().join("db")).unwrap());
    let thread = db.create_thread("alice", "Live").unwrap();
    let tail = db.subscribe(&thread.id, None).unwrap();
    // Changes made on another thread arrive in order.
    let writer = {
        let (db, thread) = (db.clone(), thread.id.clone());
        std::thread::spawn(move || {
            let first = db.post_message(&thread, "alice", r#""one""#).unwrap();
            db.edit_message(&thread, &first.id, r#""one!""#).unwrap();
            db.post_message(&thread, "bob", r#""two""#).unwrap();
            db.delete_message(&thread, &first.id).unwrap();
        })
    };
    writer.join().unwrap();
    let timeout = std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = tail.recv_timeout(timeout).unwrap().expect("an event");
        let message = event.message().expect("a message");
        seen.push((event.kind.clone(), message.body.get().to_owned(), event.id));
    }
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|(k, b, _)| (k.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("message.created", "\"one\""),
            ("message.updated", "\"one!\""),
            ("message.created", "\"two\""),
            ("message.deleted", "\"one!\""),
        ]
    );
    assert!(
        seen.windows(2).all(|pair| pair[0].2 < pair[1].2),
        "{seen:?}"
    );

    // Resuming after the second event replays the last two, then goes live.
    let resumed = db.subscribe(&thread.id, Some(seen[1].2)).unwrap();
    let replayed: Vec<u64> = (0..2)
        .map(|_| resumed.recv_timeout(timeout).unwrap().expect("replay").id)
        .collect();
    assert_eq!(replayed, [seen[2].2, seen[3].2]);
    let live = db.post_message(&thread.id, "alice", r#""three""#).unwrap();
    let event = resumed.recv_timeout(timeout).unwrap().expect("live");
    assert_eq!(event.message().map(|m| m.id), Some(live.id));
    assert_eq!(
        tail.recv_timeout(timeout).unwrap().map(|e| e.id),
        Some(event.id)
    );
    assert_eq!(
        db.subscribe("missing", None).err(),
        Some(Error::ThreadNotFound)
    );
    drop(db);
}

/// Whether any file under `dir` contains `needle`.
fn contains_bytes(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            contains_bytes(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes.windows(needle.len()).any(|window| window == needle)
        }
    })
}

#[test]
fn options_choose_durability_and_encrypt_at_rest() {
    use progressdb::embedded::{Durability, Options};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let key = [0x5a; 32];
    let marker = "marker-c0ffee-embedded";
    let options = Options::default()
        .with_durability(Durability::Batch)
        .with_master_key(key);
    let thread = {
        let db = Db::open_with(&path, options.clone()).unwrap();
        let thread = db.create_thread("alice", "Secret").unwrap();
        db.post_message(&thread.id, "alice", &format!("\"{marker}\""))
            .unwrap();
        db.close().unwrap();
        thread.id
    };
    assert!(
        !contains_bytes(&path, marker.as_bytes()),
        "plaintext on disk"
    );
    let db = Db::open_with(&path, options).unwrap();
    let page = db.list_messages(&thread, &Page::newest_first(1)).unwrap();
    assert_eq!(bodies(&page), [format!("\"{marker}\"")]);
    db.close().unwrap();
    let wrong = Options::default().with_master_key([0x11; 32]);
    assert!(matches!(Db::open_with(&path, wrong), Err(Error::Open(_))));
}

#[test]
fn options_seal_only_the_fields_named() {
    use progressdb::embedded::Options;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = Options::default()
        .with_master_key([0x5a; 32])
        .with_encrypted_field("body.text");
    let body = r#"{"text":"sealed-f00d-embedded","lang":"clear-f00d-embedded"}"#;
    let thread = {
        let db = Db::open_with(&path, options.clone()).unwrap();
        let thread = db.create_thread("alice", "Fields").unwrap();
        let posted = db.post_message(&thread.id, "alice", body).unwrap();
        assert_eq!(posted.body.get(), body);
        db.close().unwrap();
        thread.id
    };
    assert!(!contains_bytes(&path, b"sealed-f00d-embedded"));
    assert!(contains_bytes(&path, b"clear-f00d-embedded"));
    let db = Db::open_with(&path, options).unwrap();
    let page = db.list_messages(&thread, &Page::newest_first(1)).unwrap();
    assert_eq!(bodies(&page), [body.to_string()]);
    db.close().unwrap();
    let unkeyed = Options::default().with_encrypted_field("body.text");
    assert!(matches!(Db::open_with(&path, unkeyed), Err(Error::Open(_))));
}

#[test]
fn an_erased_thread_is_gone_with_everything_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let thread = db.create_thread("alice", "Erase me").unwrap();
    let kept = db.create_thread("alice", "Keep me").unwrap();
    let first = db
        .post_message(&thread.id, "alice", r#""erase-3e7a""#)
        .unwrap();
    db.edit_message(&thread.id, &first.id, r#""erase-3e7a-2""#)
        .unwrap();
    db.post_reply(&thread.id, &first.id, "alice", r#""reply""#)
        .unwrap();
    db.post_message(&kept.id, "alice", r#""kept""#).unwrap();
    db.erase_thread(&thread.id).unwrap();
    assert_eq!(db.thread(&thread.id).err(), Some(Error::ThreadNotFound));
    assert_eq!(
        db.erase_thread(&thread.id).err(),
        Some(Error::ThreadNotFound)
    );
    let page = db.list_messages(&kept.id, &Page::newest_first(10)).unwrap();
    assert_eq!(bodies(&page), [r#""kept""#]);
    db.close().unwrap();
    // Still gone after a reopen, which replays the log.
    let db = Db::open(&path).unwrap();
    assert_eq!(db.thread(&thread.id).err(), Some(Error::ThreadNotFound));
    db.close().unwrap();
}

#[test]
fn participants_react_and_a_removed_one_cannot() {
    use progressdb::embedded::Role;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let thread = db.create_thread("alice", "Team").unwrap();
    let message = db
        .post_message(&thread.id, "alice", r#""ship it""#)
        .unwrap();
    // Bob is nobody in this thread until he is added.
    assert_eq!(
        db.react(&thread.id, &message.id, "bob", Some("👍")).err(),
        Some(Error::ThreadNotFound)
    );
    let bob = db.add_participant(&thread.id, "bob", Role::Member).unwrap();
    assert_eq!((bob.user_id.as_str(), bob.role), ("bob", Role::Member));
    db.react(&thread.id, &message.id, "alice", Some("🎉"))
        .unwrap();
    let reacted = db
        .react(&thread.id, &message.id, "bob", Some("👍"))
        .unwrap();
    assert_eq!(reacted.reactions.len(), 2, "{:?}", reacted.reactions);
    assert!(matches!(
        db.react(&thread.id, &message.id, "bob", Some(" ")),
        Err(Error::InvalidInput {
            field: "reaction",
            ..
        })
    ));
    let removed = db.react(&thread.id, &message.id, "bob", None).unwrap();
    assert_eq!(removed.reactions.len(), 1);
    db.remove_participant(&thread.id, "bob").unwrap();
    assert_eq!(
        db.react(&thread.id, &message.id, "bob", Some("👍")).err(),
        Some(Error::ThreadNotFound)
    );
}

/// Every thread of `user` by activity, in pages of `size`: keys, roles and
/// unread counts.
fn all_threads_of(db: &Db, user: &str, size: usize) -> Vec<(String, String, u64)> {
    follow_cursors(|cursor| {
        let page = page_after(Page::newest_first(size), cursor);
        let got = db.threads(user, &page).unwrap();
        assert!(got.threads.len() <= size);
        let listed = got.threads.iter().map(|listed| {
            let role = listed.role.as_str().to_owned();
            (listed.thread.id.clone(), role, listed.unread_count)
        });
        (listed.collect(), got.next_cursor)
    })
}

#[test]
fn a_users_threads_list_by_activity_and_page_as_the_server_lists_them() {
    use progressdb::embedded::Role;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let own: Vec<_> = (0..3)
        .map(|n| db.create_thread("alice", &format!("mine {n}")).unwrap())
        .collect();
    let shared = db.create_thread("bob", "bob's").unwrap();
    db.add_participant(&shared.id, "alice", Role::Member)
        .unwrap();
    db.post_message(&shared.id, "bob", r#""for alice""#)
        .unwrap();
    let private = db.create_thread("carol", "not alice's").unwrap();
    // The oldest thread has the newest activity now.
    db.post_message(&own[0].id, "alice", r#""bump""#).unwrap();

    let listed = all_threads_of(&db, "alice", 1);
    assert_eq!(listed, all_threads_of(&db, "alice", 1000));
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(listed[0], (own[0].id.clone(), "owner".into(), 0));
    let bobs = listed.iter().find(|(key, ..)| *key == shared.id).unwrap();
    assert_eq!(bobs, &(shared.id.clone(), "member".into(), 1));
    assert!(!listed.iter().any(|(key, ..)| *key == private.id));

    // Deleted threads only when asked; a thread not hers is no cursor.
    db.delete_thread(&own[1].id).unwrap();
    assert_eq!(all_threads_of(&db, "alice", 2).len(), 3);
    let page = Page::newest_first(10).include_deleted();
    assert_eq!(db.threads("alice", &page).unwrap().threads.len(), 4);
    let foreign = Page::newest_first(10).after(&private.id);
    assert_eq!(
        db.threads("alice", &foreign).err(),
        Some(Error::InvalidCursor)
    );
    for refused in [Page::newest_first(0), Page::oldest_first(10)] {
        assert!(matches!(
            db.threads("alice", &refused),
            Err(Error::InvalidInput { .. })
        ));
    }
    let listed = all_threads_of(&db, "alice", 2);
    db.close().unwrap();

    // The server lists the same threads in the same order.
    let server = Server::start_on(&path, &["--shards", "1"]);
    let mut client = server.client().acting_for("alice");
    let served = client
        .get("/frontend/v1/threads?sort_by=updated_ts&limit=1000")
        .expect(200);
    let served: Vec<(String, String, u64)> = served["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|thread| {
            let key = thread["key"].as_str().unwrap().to_owned();
            let role = thread["role"].as_str().unwrap().to_owned();
            (key, role, thread["unread_count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(served, listed);
}

#[test]
fn read_markers_move_forward_and_unread_counts_follow() {
    use progressdb::embedded::Role;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let team = db.create_thread("alice", "Team").unwrap();
    db.add_participant(&team.id, "bob", Role::Member).unwrap();
    let posted: Vec<_> = (0..3)
        .map(|n| db.post_message(&team.id, "alice", &n.to_string()).unwrap())
        .collect();
    // His own messages are never unread for him.
    db.post_message(&team.id, "bob", r#""mine""#).unwrap();
    assert_eq!(db.listed_thread(&team.id, "bob").unwrap().unread_count, 3);

    let marker = db.mark_read(&team.id, "bob", &posted[1].id).unwrap();
    assert_eq!(marker.thread, team.id);
    assert_eq!(marker.last_read.as_deref(), Some(posted[1].id.as_str()));
    assert_eq!(marker.unread_count, 1);
    // Never back.
    let marker = db.mark_read(&team.id, "bob", &posted[0].id).unwrap();
    assert_eq!(marker.last_read.as_deref(), Some(posted[1].id.as_str()));
    assert_eq!(marker.unread_count, 1);
    db.post_message(&team.id, "alice", r#""one more""#).unwrap();
    assert_eq!(db.listed_thread(&team.id, "bob").unwrap().unread_count, 2);

    // Only participants have markers; only messages of the thread mark.
    assert_eq!(
        db.mark_read(&team.id, "carol", &posted[0].id).err(),
        Some(Error::ThreadNotFound)
    );
    assert_eq!(
        db.listed_thread(&team.id, "carol").err(),
        Some(Error::ThreadNotFound)
    );
    assert_eq!(
        db.mark_read(&team.id, "bob", "33pfkbwm6vcmqq1z3hbt048xcm")
            .err(),
        Some(Error::MessageNotFound)
    );
    db.close().unwrap();

    // The marker is stored: the count survives a reopen.
    let db = Db::open(dir.path().join("db")).unwrap();
    let listed = db.listed_thread(&team.id, "bob").unwrap();
    assert_eq!((listed.role, listed.unread_count), (Role::Member, 2));
    db.close().unwrap();
}
