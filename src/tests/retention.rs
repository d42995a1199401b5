//! End-to-end tests of retention and erasure over HTTP against the real
//! binary: `DELETE /admin/v1/threads/{id}?hard=true` erases a thread with
//! everything in it, and after `POST /admin/v1/jobs/purge {"compact":true}`
//! no byte of it is left in any file of the data directory; the retention
//! job (`--retention-deleted-after`) hard-deletes expired soft-deleted
//! threads and messages with counters kept right, and
//! `--retention-messages-max-age` every old message; a dry run only
//! counts; admin keys only; bad durations stop the server at start; an
//! erased encrypted thread's key is destroyed, so a backup taken before
//! does not bring it back; keys and erasures survive SIGKILL.

#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, Server, files_containing, ids, post_message_key as post};

const ADMIN: &str = "admin-key-0123456789";
/// How long an eventual state (a job's pass, a compaction) may take.
const EVENTUALLY: Duration = Duration::from_secs(60);

fn admin(server: &Server) -> Client {
    support::keyed_client(server, ADMIN)
}

/// A marker no other test run writes, so finding it on disk means this one.
fn marker(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), support_nanos())
}

fn support_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn create_thread(client: &mut Client, key: &str) {
    let body = json!({"title": format!("title of {key}"), "key": key}).to_string();
    client.post("/frontend/v1/threads", &body).expect(201);
}

/// Polls `check` until it returns `Some`, failing after [`EVENTUALLY`].
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    support::eventually(what, EVENTUALLY, check)
}

/// Two shards, deletions kept for a second, the job every `interval`.
fn start_with_retention(interval: &str) -> Server {
    Server::start(&[
        "--shards",
        "2",
        "--admin-key",
        ADMIN,
        "--retention-deleted-after",
        "1s",
        "--retention-interval",
        interval,
    ])
}

/// A soft-deleted thread `old` (full, bob took part) and an empty live
/// thread `live`; returns alice's, bob's and the admin's clients.
fn deleted_and_live_threads(server: &Server) -> (Client, Client, Client) {
    let (mut alice, mut bob) = (server.client(), server.client().acting_for("bob"));
    fill_thread(&mut alice, &mut bob, "old", &marker("old"));
    alice.delete("/frontend/v1/threads/old").expect(200);
    create_thread(&mut alice, "live");
    (alice, bob, admin(server))
}

fn total(page: &Value) -> u64 {
    page["pagination"]["total"].as_u64().expect("a total")
}

/// A thread with everything a thread can hold: messages with the marker,
/// an edit (a past version), a reaction, a reply, a participant with a
/// read marker. Returns its message keys.
fn fill_thread(alice: &mut Client, bob: &mut Client, thread: &str, marker: &str) -> Vec<String> {
    create_thread(alice, thread);
    let first = post(alice, thread, json!({"text": marker}), None);
    let reply = post(
        alice,
        thread,
        json!({"text": format!("re {marker}")}),
        Some(&first),
    );
    let path = format!("/frontend/v1/threads/{thread}/messages/{first}");
    let edit = json!({"body": {"text": format!("edited {marker}")}}).to_string();
    alice.put(&path, &edit).expect(200);
    alice
        .post(&format!("{path}/reactions"), r#"{"reaction":"+1"}"#)
        .expect(200);
    let add = json!({"user_id": "bob", "role": "member"}).to_string();
    alice
        .post(&format!("/frontend/v1/threads/{thread}/participants"), &add)
        .expect(201);
    let read = json!({"message": reply}).to_string();
    bob.put(&format!("/frontend/v1/threads/{thread}/read"), &read)
        .expect(200);
    vec![first, reply]
}

/// After "doomed" was erased: only "kept" is listed and counted anywhere.
fn assert_only_kept_is_listed(
    alice: &mut Client,
    bob: &mut Client,
    admin: &mut Client,
    threads_before: u64,
) {
    let listed = alice.get("/frontend/v1/threads").expect(200);
    assert_eq!(ids(&listed), vec!["kept".to_string()]);
    assert_eq!(total(&listed), 1);
    assert!(ids(&bob.get("/frontend/v1/threads").expect(200)).is_empty());
    let all = admin.get("/admin/v1/threads").expect(200);
    assert_eq!(total(&all), threads_before - 1);
    let stats = admin.get("/admin/v1/stats").expect(200);
    let count = |name: &str| -> u64 {
        let shards = stats["shards"].as_array().unwrap();
        shards
            .iter()
            .map(|shard| shard[name].as_u64().unwrap())
            .sum()
    };
    assert_eq!((count("threads"), count("messages")), (1, 1), "{stats}");
}

#[test]
fn a_hard_erase_leaves_nothing_in_the_api_or_on_disk_after_compaction() {
    let server = Server::start(&["--shards", "2", "--admin-key", ADMIN]);
    let (mut alice, mut bob) = (server.client(), server.client().acting_for("bob"));
    let secret = marker("erase-me");
    let messages = fill_thread(&mut alice, &mut bob, "doomed", &secret);
    create_thread(&mut alice, "kept");
    post(&mut alice, "kept", json!({"text": "still here"}), None);
    let mut admin = admin(&server);
    let threads_before = total(&admin.get("/admin/v1/threads").expect(200));
    assert!(
        !files_containing(&server.db, &secret).is_empty(),
        "the WAL holds it"
    );

    // Only an admin key may erase (a backend key is refused), and `hard`
    // is true or false.
    let refused = [
        (&mut alice, "true", 403, "forbidden"),
        (&mut admin, "yes", 400, "invalid_query"),
    ];
    for (client, hard, status, code) in refused {
        let path = format!("/admin/v1/threads/doomed?hard={hard}");
        client.delete(&path).expect_error(status, code);
    }
    let erased = admin
        .delete("/admin/v1/threads/doomed?hard=true")
        .expect(200);
    assert_eq!(erased["erased"], true, "{erased}");
    assert_eq!(erased["purged"]["threads"], 1, "{erased}");
    assert_eq!(erased["purged"]["messages"], 2, "{erased}");
    assert_eq!(erased["purged"]["versions"], 1, "{erased}");

    // Gone from every read, listing and counter at once.
    let message = format!("/frontend/v1/threads/doomed/messages/{}", messages[0]);
    for (as_admin, method, path) in [
        (true, "DELETE", "/admin/v1/threads/doomed?hard=true"),
        (true, "GET", "/admin/v1/threads/doomed"),
        (false, "GET", "/frontend/v1/threads/doomed"),
        (false, "GET", &message),
    ] {
        let client = if as_admin { &mut admin } else { &mut alice };
        client
            .request(method, path, None)
            .expect_error(404, "thread_not_found");
    }
    assert_only_kept_is_listed(&mut alice, &mut bob, &mut admin, threads_before);

    // The key is free again, and a new thread under it starts empty.
    create_thread(&mut alice, "doomed");
    let fresh = alice
        .get("/frontend/v1/threads/doomed/messages")
        .expect(200);
    assert_eq!(total(&fresh), 0, "{fresh}");

    // A forced compaction and WAL checkpoint take it off the disk.
    let purged = admin
        .post("/admin/v1/jobs/purge", r#"{"compact":true}"#)
        .expect(200);
    assert_eq!(purged["compacted"], true, "{purged}");
    // Again at once, with nothing new written: it does not wait for a
    // checkpoint that cannot come.
    let started = Instant::now();
    admin
        .post("/admin/v1/jobs/purge", r#"{"compact":true}"#)
        .expect(200);
    assert!(started.elapsed() < EVENTUALLY, "{:?}", started.elapsed());
    let left = eventually("the erased bytes to leave the disk", || {
        let left = files_containing(&server.db, &secret);
        left.is_empty().then_some(left)
    });
    assert!(left.is_empty());
    server.stop();
}

#[test]
fn the_retention_job_removes_expired_deletions_and_keeps_counters_right() {
    let server = start_with_retention("200ms");
    let (mut alice, mut bob, mut admin) = deleted_and_live_threads(&server);
    let keys: Vec<String> = (0..3)
        .map(|n| post(&mut alice, "live", json!({"n": n}), None))
        .collect();
    let gone = format!("/frontend/v1/threads/live/messages/{}", keys[1]);
    alice.put(&gone, r#"{"body":{"n":"edited"}}"#).expect(200);
    alice.delete(&gone).expect(200);

    let listing = "/admin/v1/threads/live/messages?include_deleted=true";
    eventually("the job to remove the deleted thread and message", || {
        let thread = admin.get("/admin/v1/threads/old");
        let page = admin.get(listing).expect(200);
        (thread.status == 404 && total(&page) == 2).then_some(())
    });
    let page = admin.get(listing).expect(200);
    assert_eq!(ids(&page), vec![keys[0].clone(), keys[2].clone()]);
    let live = alice.get("/frontend/v1/threads/live/messages").expect(200);
    assert_eq!(total(&live), 2);
    admin
        .get(&format!(
            "/admin/v1/threads/live/messages/{}/versions",
            keys[1]
        ))
        .expect_error(404, "message_not_found");
    assert!(ids(&bob.get("/frontend/v1/threads").expect(200)).is_empty());
    assert_eq!(
        ids(&alice.get("/frontend/v1/threads").expect(200)),
        vec!["live"]
    );
    server.stop();
}

#[test]
fn a_dry_run_counts_without_deleting_and_input_is_checked() {
    // The job waits an hour: only the requests below purge.
    let server = start_with_retention("1h");
    let (mut alice, _, mut admin) = deleted_and_live_threads(&server);
    let key = post(&mut alice, "live", json!("gone soon"), None);
    let path = format!("/frontend/v1/threads/live/messages/{key}");
    alice.put(&path, r#"{"body":"edited"}"#).expect(200);
    alice.delete(&path).expect(200);

    let dry = eventually("the deletions to expire", || {
        let dry = admin
            .post("/admin/v1/jobs/purge", r#"{"dry_run":true}"#)
            .expect(200);
        (dry["purged"]["threads"] == 1 && dry["purged"]["messages"] == 3).then_some(dry)
    });
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["deleted_after"], "1s");
    assert_eq!(dry["purged"]["versions"], 1, "{dry}");
    assert_eq!(dry["purged"]["keys"], 0, "{dry}");
    admin.get("/admin/v1/threads/old").expect(200);
    admin
        .get(&format!("/admin/v1/threads/live/messages/{key}/versions"))
        .expect(200);

    alice
        .post("/admin/v1/jobs/purge", "{}")
        .expect_error(403, "forbidden");
    for bad in [r#"{"dry_run":"yes"}"#, r#"{"force":true}"#, "[]", "{"] {
        admin
            .post("/admin/v1/jobs/purge", bad)
            .expect_error(400, "invalid_json");
    }

    let done = admin.post("/admin/jobs/purge", "").expect(200);
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["purged"]["threads"], 1, "{done}");
    assert_eq!(done["purged"]["messages"], 3, "{done}");
    assert!(done["purged"]["keys"].as_u64().unwrap() > 3, "{done}");
    admin
        .get("/admin/v1/threads/old")
        .expect_error(404, "thread_not_found");
    let page = admin
        .get("/admin/v1/threads/live/messages?include_deleted=true")
        .expect(200);
    assert_eq!(total(&page), 0, "{page}");
    let again = admin.post("/admin/v1/jobs/purge", "{}").expect(200);
    assert_eq!(again["purged"]["threads"], 0, "{again}");
    assert_eq!(again["purged"]["messages"], 0, "{again}");
    server.stop();
}

#[test]
fn bad_retention_durations_stop_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    for (flag, value) in [
        ("--retention-deleted-after", "30x"),
        ("--retention-messages-max-age", "0d"),
        ("--retention-interval", "soon"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
            .args([
                "--db",
                db.to_str().unwrap(),
                "--addr",
                "127.0.0.1:0",
                flag,
                value,
            ])
            .output()
            .expect("run progressdb");
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let text = String::from_utf8_lossy(&output.stderr);
        let key = flag.trim_start_matches("--").replace('-', "_");
        assert!(text.contains(&key), "{text}");
        assert!(
            text.contains("whole number and a unit") || text.contains("more than 0"),
            "{text}"
        );
    }
}

#[test]
fn an_erased_encrypted_thread_stays_unreadable_in_a_backup_taken_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let key_file = dir.path().join("master.keys").display().to_string();
    let encrypted = ["--encryption", "--kms-key-file", &key_file];
    let args: Vec<&str> = ["--shards", "2", "--admin-key", ADMIN]
        .into_iter()
        .chain(encrypted)
        .collect();
    let server = Server::start_on(&db, &args);
    let mut alice = server.client();
    let mut admin = admin(&server);
    let mut bodies = Vec::new();
    for thread in ["secret", "other"] {
        create_thread(&mut alice, thread);
        let key = post(
            &mut alice,
            thread,
            json!({"text": format!("{thread} body")}),
            None,
        );
        bodies.push((thread, key));
    }
    // Each thread's wrapped key is in the vault, never in the data log.
    let vault = db.join("kms").join("vault");
    let secret_key = std::fs::read_to_string(vault.join("secret.key")).unwrap();
    let wrapped: Value = serde_json::from_str(&secret_key).unwrap();
    let wrapped = wrapped["wrapped"].as_str().unwrap().to_owned();
    assert!(files_containing(&db.join("shard-0"), &wrapped).is_empty());
    assert!(files_containing(&db.join("shard-1"), &wrapped).is_empty());

    let backup = dir.path().join("backup");
    let started = support::start_backup(&mut admin, &backup);
    let done = support::wait_for_backup(&mut admin, started["id"].as_str().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    // The backup holds the secret thread sealed, and not its key.
    assert!(files_containing(&backup, &wrapped).is_empty());
    assert!(files_containing(&backup, "secret body").is_empty());

    admin
        .delete("/admin/v1/threads/secret?hard=true")
        .expect(200);
    assert!(!vault.join("secret.key").exists(), "the key is destroyed");
    assert!(vault.join("other.key").exists());
    server.stop();

    // Restored as README says: the backup, the master keys, and the vault
    // as it is now (kept beside the master keys, not in the backup).
    let restored = dir.path().join("restored");
    let (ok, text) = support::run_restore(&backup, &restored);
    assert!(ok, "{text}");
    support::copy_vault(&db, &restored);
    let server = Server::start_on(&restored, &args);
    let (mut alice, mut admin) = (server.client(), support::keyed_client(&server, ADMIN));
    let (secret, other) = (&bodies[0].1, &bodies[1].1);
    for path in [
        "/frontend/v1/threads/secret".to_string(),
        "/frontend/v1/threads/secret/messages".to_string(),
        format!("/frontend/v1/threads/secret/messages/{secret}"),
    ] {
        alice.get(&path).expect_error(404, "thread_not_found");
    }
    let message = alice
        .get(&format!("/frontend/v1/threads/other/messages/{other}"))
        .expect(200);
    assert_eq!(message["message"]["body"]["text"], "other body");
    // The start-up pass erases what is left of the shredded thread.
    let listed = eventually("the shredded thread's record to go", || {
        let listed = admin.get("/admin/v1/threads").expect(200);
        (total(&listed) == 1).then_some(listed)
    });
    assert_eq!(ids(&listed), vec!["other".to_string()]);
    assert_eq!(
        ids(&alice.get("/frontend/v1/threads").expect(200)),
        vec!["other"]
    );
    server.stop();
}

#[test]
fn keys_and_erasures_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let key_file = dir.path().join("master.keys").display().to_string();
    let args = [
        "--admin-key",
        ADMIN,
        "--encryption",
        "--kms-key-file",
        &key_file,
    ];
    let server = Server::start_on(&db, &args);
    let mut alice = server.client();
    create_thread(&mut alice, "kept");
    let kept = post(&mut alice, "kept", json!("acknowledged"), None);
    create_thread(&mut alice, "gone");
    post(&mut alice, "gone", json!("erased"), None);
    admin(&server)
        .delete("/admin/v1/threads/gone?hard=true")
        .expect(200);
    // No clean shutdown: what was acknowledged must be on disk already.
    server.kill();
    let server = Server::start_on(&db, &args);
    let mut alice = server.client();
    let message = alice
        .get(&format!("/frontend/v1/threads/kept/messages/{kept}"))
        .expect(200);
    assert_eq!(message["message"]["body"], "acknowledged");
    alice
        .get("/frontend/v1/threads/gone/messages")
        .expect_error(404, "thread_not_found");
    assert!(!db.join("kms/vault/gone.key").exists());
    server.stop();
}

#[test]
fn a_maximum_message_age_empties_threads_but_keeps_them() {
    let server = Server::start(&[
        "--retention-messages-max-age",
        "1s",
        "--retention-interval",
        "200ms",
    ]);
    let mut alice = server.client();
    create_thread(&mut alice, "chat");
    for n in 0..3 {
        post(&mut alice, "chat", json!({"n": n}), None);
    }
    eventually("the job to remove every message", || {
        let page = alice.get("/frontend/v1/threads/chat/messages").expect(200);
        (total(&page) == 0).then_some(())
    });
    let thread = alice.get("/frontend/v1/threads/chat").expect(200);
    assert_eq!(thread["thread"]["key"], "chat");
    post(&mut alice, "chat", json!("fresh"), None);
    server.stop();
}
