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

/// Every message of `thread`, oldest first, read in pages of `size`.
fn all_oldest_first(db: &Db, thread: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut page = Page::oldest_first(size);
    loop {
        let got = db.list_messages(thread, &page).unwrap();
        assert!(got.messages.len() <= size);
        out.extend(bodies(&got));
        match got.next_cursor {
            Some(cursor) => page = Page::oldest_first(size).after(cursor),
            None => return out,
        }
    }
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
