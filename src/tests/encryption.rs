//! End-to-end tests of field-level encryption on the real binary: with
//! `--encryption`, no plaintext of a body, an old version or a title
//! reaches any file under the data directory (WAL or store), while the API
//! returns the plaintext; a rotated master key keeps old data readable; a
//! wrong master key refuses to start without touching data.

#[path = "support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{Client, Server, files_containing, files_under};

const ADMIN: &str = "admin-key-0123456789";

/// Every file under `db` with its bytes, sorted by path.
fn snapshot(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = files_under(db)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Writes a thread with a marked title, a marked message edited once (so a
/// marked old version is kept) and a marked reply; returns the thread id.
fn write_marked(client: &mut Client, tag: &str) -> String {
    let thread = client
        .post(
            "/frontend/v1/threads",
            &json!({ "title": format!("TITLE_{tag}") }).to_string(),
        )
        .expect(201);
    let id = thread["key"].as_str().unwrap().to_string();
    let base = format!("/frontend/v1/threads/{id}/messages");
    let message = client
        .post(
            &base,
            &json!({ "body": { "text": format!("OLD_{tag}") } }).to_string(),
        )
        .expect(201);
    let mid = message["key"].as_str().unwrap();
    client
        .put(
            &format!("{base}/{mid}"),
            &json!({ "body": { "text": format!("NEW_{tag}") } }).to_string(),
        )
        .expect(200);
    client
        .post(
            &base,
            &json!({ "body": format!("REPLY_{tag}"), "reply_to": mid }).to_string(),
        )
        .expect(201);
    id
}

/// Asserts the API shows every marked field in plaintext.
fn assert_readable(client: &mut Client, id: &str, tag: &str) {
    assert_eq!(
        client
            .get(&format!("/frontend/v1/threads/{id}"))
            .expect(200)["thread"]["title"],
        format!("TITLE_{tag}")
    );
    let listed = client.get("/frontend/v1/threads?limit=100").expect(200);
    assert!(
        listed["threads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["title"] == format!("TITLE_{tag}"))
    );
    let base = format!("/frontend/v1/threads/{id}/messages");
    let page = client.get(&format!("{base}?sort_by=ts_asc")).expect(200);
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages[0]["body"]["text"], format!("NEW_{tag}"));
    assert_eq!(messages[1]["body"], format!("REPLY_{tag}"));
    assert!(messages.iter().all(|m| m.get("sealed_body").is_none()));
    let mid = messages[0]["key"].as_str().unwrap();
    let one = client.get(&format!("{base}/{mid}")).expect(200);
    assert_eq!(one["message"]["body"]["text"], format!("NEW_{tag}"));
    let versions = client.get(&format!("{base}/{mid}/versions")).expect(200);
    let bodies: Vec<&Value> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["body"]["text"])
        .collect();
    assert_eq!(
        bodies,
        vec![&json!(format!("OLD_{tag}")), &json!(format!("NEW_{tag}"))]
    );
    let replies = client.get(&format!("{base}/{mid}/replies")).expect(200);
    assert_eq!(replies["messages"][0]["body"], format!("REPLY_{tag}"));
}

#[test]
fn no_plaintext_reaches_the_disk_but_the_api_returns_it() {
    // Control: without encryption the same markers are found on disk, so
    // the search below can really fail.
    let plain = Server::start(&["--shards", "2"]);
    write_marked(&mut plain.client(), "PLAINCONTROL7");
    let plain_db = plain.db.clone();
    assert!(
        !files_containing(&plain_db, "OLD_PLAINCONTROL7").is_empty(),
        "control found nothing"
    );

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let server = Server::start_on(
        &db,
        &["--shards", "2", "--encryption", "--admin-key", ADMIN],
    );
    let mut client = server.client();
    let id = write_marked(&mut client, "SECRETMARK42");
    assert_readable(&mut client, &id, "SECRETMARK42");
    // The admin reads (viewer) open sealed fields too.
    let mut admin = server.client();
    admin.key = Some(ADMIN.into());
    let listed = admin.get("/admin/v1/threads").expect(200);
    assert_eq!(listed["threads"][0]["title"], "TITLE_SECRETMARK42");
    let page = admin
        .get(&format!("/admin/v1/threads/{id}/messages?sort_by=ts_asc"))
        .expect(200);
    assert_eq!(page["messages"][0]["body"]["text"], "NEW_SECRETMARK42");
    drop((client, admin));
    server.stop();
    for marker in [
        "TITLE_SECRETMARK42",
        "OLD_SECRETMARK42",
        "NEW_SECRETMARK42",
        "REPLY_SECRETMARK42",
    ] {
        assert_eq!(
            files_containing(&db, marker),
            Vec::<PathBuf>::new(),
            "{marker} is on disk"
        );
    }
    let keyring = db.join("kms").join("master.keys");
    assert_eq!(
        std::fs::metadata(&keyring).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // After a restart everything still reads back.
    let server = Server::start_on(&db, &["--shards", "2", "--encryption"]);
    assert_readable(&mut server.client(), &id, "SECRETMARK42");
}

#[test]
fn rotation_keeps_old_data_readable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let args = ["--shards", "2", "--encryption", "--admin-key", ADMIN];
    let server = Server::start_on(&db, &args);
    let mut client = server.client();
    let before = write_marked(&mut client, "BEFORE");
    let mut admin = server.client();
    admin.key = Some(ADMIN.into());
    assert_eq!(
        admin.post("/admin/v1/kms/rotate", "").expect(200)["key_id"],
        2
    );
    let after = write_marked(&mut client, "AFTER");
    assert_readable(&mut client, &before, "BEFORE");
    assert_readable(&mut client, &after, "AFTER");
    drop(client);
    let server = server.restart(&args);
    let mut client = server.client();
    assert_readable(&mut client, &before, "BEFORE");
    assert_readable(&mut client, &after, "AFTER");
    let keyring = std::fs::read_to_string(db.join("kms").join("master.keys")).unwrap();
    assert_eq!(keyring.lines().count(), 2);
    // Rotation needs encryption on.
    let plain = Server::start(&["--admin-key", ADMIN]);
    let mut admin = plain.client();
    admin.key = Some(ADMIN.into());
    admin
        .post("/admin/v1/kms/rotate", "")
        .expect_error(409, "encryption_off");
}

#[test]
fn a_wrong_master_key_refuses_to_start_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let key = "11".repeat(32);
    let args: Vec<String> = [
        "--db",
        &db.display().to_string(),
        "--addr",
        "127.0.0.1:0",
        "--encryption",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .chain(["--api-key".to_string(), support::API_KEY.to_string()])
    .collect();
    let started = support::spawn_and_wait(&args, &[("PROGRESSDB_KMS_MASTER_KEY", &key)]).unwrap();
    let mut child = started.child;
    let mut client = Client::connect(started.addr);
    let id = write_marked(&mut client, "ENVKEY");
    assert_readable(&mut client, &id, "ENVKEY");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !db.join("kms").join("master.keys").exists(),
        "an env key is never written down"
    );

    let before = snapshot(&db);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args(&args)
        .env("PROGRESSDB_KMS_MASTER_KEY", "22".repeat(32))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
    assert!(
        !stderr.contains(&"22".repeat(32)),
        "the key is never echoed"
    );
    assert_eq!(snapshot(&db), before, "nothing was touched");

    let started = support::spawn_and_wait(&args, &[("PROGRESSDB_KMS_MASTER_KEY", &key)]).unwrap();
    let mut child = started.child;
    assert_readable(&mut Client::connect(started.addr), &id, "ENVKEY");
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `progressdb-kms`, killed on drop.
struct ExternalKms {
    child: std::process::Child,
    url: String,
}

impl Drop for ExternalKms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_kms(key_file: &Path, token: &str) -> ExternalKms {
    start_slow_kms(key_file, token, 0)
}

/// A KMS that answers each request only after `delay_ms`.
fn start_slow_kms(key_file: &Path, token: &str, delay_ms: u64) -> ExternalKms {
    let args = [
        "--addr".to_string(),
        "127.0.0.1:0".to_string(),
        "--key-file".to_string(),
        key_file.display().to_string(),
        "--delay-ms".to_string(),
        delay_ms.to_string(),
    ];
    let started = support::spawn_program_and_wait(
        Path::new(env!("CARGO_BIN_EXE_progressdb-kms")),
        &args,
        &[("PROGRESSDB_KMS_TOKEN", token)],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    ExternalKms {
        child: started.child,
        url: format!("http://{}", started.addr),
    }
}

const KMS_TOKEN: &str = "kms-token-0123456789";

fn external_args(url: &str) -> Vec<String> {
    [
        "--shards",
        "2",
        "--encryption",
        "--kms",
        "external",
        "--kms-url",
        url,
        "--admin-key",
        ADMIN,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect()
}

fn start_external(db: &Path, url: &str) -> Server {
    let args = external_args(url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with_env(db, &args, &[("PROGRESSDB_KMS_TOKEN", KMS_TOKEN)])
}

/// The server's answer to starting on `db` with the KMS at `url`: exit code
/// and stderr, when it refuses.
fn refused_start(db: &Path, url: &str, token: &str) -> (Option<i32>, String) {
    let mut args = vec![
        "--db".to_string(),
        db.display().to_string(),
        "--addr".to_string(),
        "127.0.0.1:0".to_string(),
        "--api-key".to_string(),
        support::API_KEY.to_string(),
    ];
    args.extend(external_args(url));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
        .args(&args)
        .env("PROGRESSDB_KMS_TOKEN", token)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_external_kms_holds_the_master_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let key_file = dir.path().join("kms-a.keys");
    let kms = start_kms(&key_file, KMS_TOKEN);

    let server = start_external(&db, &kms.url);
    let mut client = server.client();
    let before = write_marked(&mut client, "EXTBEFORE");
    assert_readable(&mut client, &before, "EXTBEFORE");
    // Rotation happens in the KMS: its keyring gains a key.
    let mut admin = server.client();
    admin.key = Some(ADMIN.into());
    assert_eq!(
        admin.post("/admin/v1/kms/rotate", "").expect(200)["key_id"],
        2
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().lines().count(),
        2
    );
    let after = write_marked(&mut client, "EXTAFTER");
    drop((client, admin));
    server.stop();

    // The server holds no master key: nothing under the data directory
    // contains the KMS's keys or any plaintext.
    for marker in ["OLD_EXTBEFORE", "NEW_EXTAFTER", "TITLE_EXTAFTER"] {
        assert_eq!(files_containing(&db, marker), Vec::<PathBuf>::new());
    }
    for line in std::fs::read_to_string(&key_file).unwrap().lines() {
        let master_hex = line.split(':').nth(1).unwrap();
        assert_eq!(files_containing(&db, master_hex), Vec::<PathBuf>::new());
    }

    // A fresh server (empty key cache) reads old and new through the KMS.
    let server = start_external(&db, &kms.url);
    let mut client = server.client();
    assert_readable(&mut client, &before, "EXTBEFORE");
    assert_readable(&mut client, &after, "EXTAFTER");
    drop(client);
    server.stop();

    let files_before = snapshot(&db);
    let snapshot_matches = || snapshot(&db) == files_before;

    // A KMS with other master keys: refused, nothing touched.
    let other = start_kms(&dir.path().join("kms-b.keys"), KMS_TOKEN);
    let (code, stderr) = refused_start(&db, &other.url, KMS_TOKEN);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(snapshot_matches(), "a wrong KMS touched the data directory");

    // A wrong token: refused, and the token is never echoed.
    let (code, stderr) = refused_start(&db, &kms.url, "wrong-token-987654");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("wrong-token-987654"), "{stderr}");

    // The KMS is down: refused with a clear reason.
    let url = kms.url.clone();
    drop(kms);
    let (code, stderr) = refused_start(&db, &url, KMS_TOKEN);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("external KMS"), "{stderr}");
    assert!(
        snapshot_matches(),
        "an unreachable KMS touched the data directory"
    );
}

#[test]
fn requests_needing_an_unreachable_kms_answer_503_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let kms = start_kms(&dir.path().join("kms.keys"), KMS_TOKEN);
    let server = start_external(&db, &kms.url);
    let mut client = server.client();
    let id = write_marked(&mut client, "DOWN");
    drop(kms);
    client
        .post("/frontend/v1/threads", &json!({ "title": "t" }).to_string())
        .expect_error(503, "kms_unavailable");
    // Keys already unwrapped stay cached: the existing thread still works.
    assert_readable(&mut client, &id, "DOWN");
    let listed = client.get("/frontend/v1/threads?limit=100").expect(200);
    assert_eq!(listed["threads"].as_array().unwrap().len(), 1);
}

// The KMS is reached from a blocking thread, not the shard's: while one
// request waits for a slow KMS, the same shard keeps answering others.
#[test]
fn a_slow_kms_does_not_stall_the_shard() {
    const KMS_DELAY_MS: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let kms = start_slow_kms(&dir.path().join("kms.keys"), KMS_TOKEN, KMS_DELAY_MS);
    let args = [
        "--shards",
        "1",
        "--encryption",
        "--kms",
        "external",
        "--kms-url",
        &kms.url,
        "--kms-timeout-ms",
        "20000",
    ];
    let env = [("PROGRESSDB_KMS_TOKEN", KMS_TOKEN)];
    let server = Server::start_with_env(&db, &args, &env);
    let id = write_marked(&mut server.client(), "SLOW");
    server.stop();
    // A fresh start: the thread's key is no longer cached.
    let server = Server::start_with_env(&db, &args, &env);
    let mut reader = server.client();
    let reading = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        assert_readable(&mut reader, &id, "SLOW");
        started.elapsed()
    });
    let creating = {
        let mut creator = server.client();
        std::thread::spawn(move || {
            creator
                .post(
                    "/frontend/v1/threads",
                    &json!({ "title": "new" }).to_string(),
                )
                .expect(201);
        })
    };
    // Let both requests reach the shard and wait on the KMS.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut other = server.client();
    let started = std::time::Instant::now();
    other
        .get("/frontend/v1/threads/no-such-thread")
        .expect_error(404, "thread_not_found");
    let answered_in = started.elapsed();
    assert!(
        answered_in < std::time::Duration::from_millis(KMS_DELAY_MS / 2),
        "the shard stalled for {answered_in:?} behind the KMS"
    );
    assert!(reading.join().unwrap() >= std::time::Duration::from_millis(KMS_DELAY_MS));
    creating.join().unwrap();
}

/// The stored and served message of a field-encryption test: sealed paths
/// `text` and `items.*.secret`, the rest marked to be found in the clear.
fn field_body(tag: &str) -> Value {
    json!({
        "text": format!("SEALEDTEXT_{tag}"),
        "lang": format!("CLEARLANG_{tag}"),
        "items": [
            { "secret": format!("SEALEDITEM_{tag}"), "note": format!("CLEARNOTE_{tag}") },
            { "note": "second" }
        ],
        "meta": { "_enc": "client data, not ours" }
    })
}

#[test]
fn field_paths_seal_only_those_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let fields = [
        "--encryption",
        "--encrypt-field",
        "body.text",
        "--encrypt-field",
        "body.items.*.secret",
    ];
    let server = Server::start_on(&db, &fields);
    let mut client = server.client();
    let thread = client
        .post("/frontend/v1/threads", r#"{"title":"t"}"#)
        .expect(201);
    let base = format!(
        "/frontend/v1/threads/{}/messages",
        thread["key"].as_str().unwrap()
    );
    let posted = client
        .post(&base, &json!({ "body": field_body("OLD7") }).to_string())
        .expect(201);
    assert_eq!(posted["body"], field_body("OLD7"));
    let mid = posted["key"].as_str().unwrap().to_string();
    client
        .put(
            &format!("{base}/{mid}"),
            &json!({ "body": field_body("NEW7") }).to_string(),
        )
        .expect(200);
    let assert_served = |client: &mut Client| {
        let page = client.get(&base).expect(200);
        assert_eq!(page["messages"][0]["body"], field_body("NEW7"));
        assert!(page["messages"][0].get("sealed_fields").is_none());
        let versions = client.get(&format!("{base}/{mid}/versions")).expect(200);
        let bodies: Vec<&Value> = versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| &v["body"])
            .collect();
        assert_eq!(bodies, vec![&field_body("OLD7"), &field_body("NEW7")]);
    };
    assert_served(&mut client);
    drop(client);
    server.stop();
    for sealed in [
        "SEALEDTEXT_OLD7",
        "SEALEDITEM_OLD7",
        "SEALEDTEXT_NEW7",
        "SEALEDITEM_NEW7",
    ] {
        assert_eq!(
            files_containing(&db, sealed),
            Vec::<PathBuf>::new(),
            "{sealed}"
        );
    }
    for clear in ["CLEARLANG_NEW7", "CLEARNOTE_NEW7", "CLEARLANG_OLD7"] {
        assert!(
            !files_containing(&db, clear).is_empty(),
            "{clear} is not in the clear"
        );
    }
    // Back to whole-body encryption: field-sealed bodies still open.
    let server = Server::start_on(&db, &["--encryption"]);
    assert_served(&mut server.client());
}

#[test]
fn bad_field_paths_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db").display().to_string();
    for (args, says) in [
        (
            vec!["--encryption", "--encrypt-field", "text"],
            "starts with `body.`",
        ),
        (vec!["--encrypt-field", "body.text"], "needs encryption"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_progressdb"))
            .args(["--db", &db, "--addr", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
