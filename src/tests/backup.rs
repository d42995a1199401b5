//! End-to-end tests of backup and restore: an online backup taken while a
//! loader writes, restored with `progressdb restore` into a directory a
//! new server then serves; the offline `progressdb backup`; refusal of
//! corrupt, partial and misplaced backups; an encrypted directory's
//! backup carrying its KMS check value and never its master keys; and
//! backups to an S3 bucket served by moto (PyPI, installed into
//! src/tests/s3/site by scripts/install-test-deps.sh) on loopback.

#[path = "support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Client, Server, all_messages, file_url, files_under, progressdb, progressdb_with_env,
    run_restore, start_backup, wait_for_backup,
};

const ADMIN: &str = "admin-key-0123456789";

fn admin(server: &Server) -> Client {
    support::keyed_client(server, ADMIN)
}

fn backend(server: &Server) -> Client {
    let mut client = server.client();
    client.user = None;
    client
}

/// Posts one message to `thread` (creating it) and returns its id.
fn post(client: &mut Client, thread: &str, body: Value) -> String {
    let request = json!({"thread": thread, "author": "loader", "body": body}).to_string();
    client.post("/v1/messages", &request).expect(201)["key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn restore(backup: &Path, db: &Path) {
    let (ok, text) = run_restore(backup, db);
    assert!(ok, "{text}");
    assert!(text.contains("restored 2 shard(s)"), "{text}");
}

#[test]
fn an_online_backup_under_write_load_restores_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    // Small memtables: the backup reads tables and memtables alike while
    // flushes and compactions go on under the load.
    let args = [
        "--shards",
        "2",
        "--admin-key",
        ADMIN,
        "--memtable-bytes",
        "65536",
    ];
    let server = Server::start_on(&db, &args);
    let mut client = backend(&server);
    // Threads written only before the backup: restored identically.
    let mut quiet = Vec::new();
    for n in 0..6 {
        let thread = format!("quiet-{n}");
        for m in 0..40 {
            post(
                &mut client,
                &thread,
                json!({"n": m, "pad": "q".repeat(200)}),
            );
        }
        quiet.push(thread);
    }
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), server.addr);
        std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            client.user = None;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let thread = format!("busy-{}", n % 9);
                let id = post(
                    &mut client,
                    &thread,
                    json!({"n": n, "pad": "b".repeat(300)}),
                );
                acked.lock().unwrap().push((thread, id));
                n += 1;
            }
        })
    };
    while acked.lock().unwrap().len() < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let acked_before = acked.lock().unwrap().len();
    let backup = dir.path().join("backup");
    let mut admin = admin(&server);
    let started = start_backup(&mut admin, &backup);
    assert_eq!(started["state"], "running");
    let done = wait_for_backup(&mut admin, started["id"].as_str().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["shards"], 2);
    assert_eq!(done["shards_done"], 2);
    assert!(done["items"].as_u64().unwrap() > 240, "{done}");
    // Writes went on while the backup ran.
    while acked.lock().unwrap().len() < acked_before + 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["shards"], 2);
    assert_eq!(manifest["files"].as_array().unwrap().len(), 2);

    let mut expected = Vec::new();
    for thread in &quiet {
        expected.push(all_messages(&mut client, thread));
    }
    server.stop();

    let restored_db = dir.path().join("restored");
    restore(&backup, &restored_db);
    let restored = Server::start_on(&restored_db, &args);
    let mut client = backend(&restored);
    for (thread, messages) in quiet.iter().zip(&expected) {
        assert_eq!(&all_messages(&mut client, thread), messages, "{thread}");
    }
    let acked = acked.lock().unwrap();
    let mut author = restored.client().acting_for("loader");
    for (thread, id) in &acked[..acked_before] {
        author
            .get(&format!("/frontend/v1/threads/{thread}/messages/{id}"))
            .expect(200);
    }
    // The restored server takes new writes after the restored ones.
    let id = post(&mut client, "busy-0", json!("after restore"));
    let messages = all_messages(&mut client, "busy-0");
    assert_eq!(messages.last().unwrap()["key"], id.as_str());
    restored.stop();
}

#[test]
fn offline_backup_and_refusal_of_corrupt_partial_or_misplaced_backups() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let args = ["--shards", "2", "--admin-key", ADMIN];
    let server = Server::start_on(&db, &args);
    let mut client = backend(&server);
    for n in 0..50 {
        post(&mut client, &format!("t-{}", n % 5), json!({"n": n}));
    }
    // The running server holds the directory.
    let backup = dir.path().join("backup");
    let offline_backup = || {
        let to = file_url(&backup);
        progressdb(&["backup", "--db", db.to_str().unwrap(), "--to", &to])
    };
    let (ok, text) = offline_backup();
    assert!(!ok);
    assert!(text.contains("in use"), "{text}");
    assert!(!backup.exists(), "a failed backup leaves nothing behind");
    let expected = all_messages(&mut client, "t-3");
    server.stop();
    let (ok, text) = offline_backup();
    assert!(ok, "{text}");
    assert!(text.contains("backed up 2 shard(s), "), "{text}");

    // A byte flipped in a shard file.
    let flipped = copy_backup(&backup, &dir.path().join("flipped"));
    let items = flipped.join("shard-1.items");
    let mut bytes = std::fs::read(&items).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&items, bytes).unwrap();
    refused(&flipped, dir.path(), "corrupt");
    // A shard file cut short.
    let cut = copy_backup(&backup, &dir.path().join("cut"));
    let items = cut.join("shard-0.items");
    let bytes = std::fs::read(&items).unwrap();
    std::fs::write(&items, &bytes[..bytes.len() - 3]).unwrap();
    refused(&cut, dir.path(), "corrupt");
    // No manifest: the backup never finished.
    let partial = copy_backup(&backup, &dir.path().join("partial"));
    std::fs::remove_file(partial.join("manifest.json")).unwrap();
    refused(&partial, dir.path(), "did not finish");
    // A shard file missing.
    let missing = copy_backup(&backup, &dir.path().join("missing"));
    std::fs::remove_file(missing.join("shard-1.items")).unwrap();
    refused(&missing, dir.path(), "missing");
    // A backup is never written over another one, nor restored over data.
    let (ok, text) = run_restore(&backup, &db);
    assert!(!ok);
    assert!(text.contains("not empty"), "{text}");

    let restored_db = dir.path().join("restored");
    restore(&backup, &restored_db);
    let restored = Server::start_on(&restored_db, &args);
    assert_eq!(all_messages(&mut backend(&restored), "t-3"), expected);
    let mut admin = admin(&restored);
    let again = start_backup(&mut admin, &backup);
    let failed = wait_for_backup(&mut admin, again["id"].as_str().unwrap());
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("not empty"),
        "{failed}"
    );
    assert!(
        backup.join("manifest.json").exists(),
        "the old backup is kept"
    );
    admin
        .post("/admin/v1/backups", r#"{"target":"relative/dir"}"#)
        .expect_error(400, "invalid_target");
    admin
        .post("/admin/v1/backups", r#"{"target":"/x","extra":1}"#)
        .expect_error(400, "invalid_json");
    admin
        .get("/admin/v1/backups/bk_nope")
        .expect_error(404, "backup_not_found");
    // Admin only.
    backend(&restored)
        .post("/admin/v1/backups", r#"{"target":"/tmp/x"}"#)
        .expect_error(403, "forbidden");
    restored.stop();
}

fn copy_backup(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to.join("kms")).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    to.to_path_buf()
}

/// Restoring `backup` fails saying `why`, and leaves no data directory.
fn refused(backup: &Path, scratch: &Path, why: &str) {
    let db = scratch.join("refused-db");
    let (ok, text) = run_restore(backup, &db);
    assert!(!ok, "{text}");
    assert!(text.contains(why), "{why}: {text}");
    assert!(!db.exists());
}

#[test]
fn an_encrypted_backup_keeps_the_check_value_and_never_the_master_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let keys = dir.path().join("master.keys");
    let key_file = keys.to_str().unwrap();
    let args = [
        "--shards",
        "2",
        "--admin-key",
        ADMIN,
        "--encryption",
        "--kms-key-file",
        key_file,
    ];
    let server = Server::start_on(&db, &args);
    let mut client = backend(&server);
    let id = post(&mut client, "secret", json!({"text": "sealed marker"}));
    let backup = dir.path().join("backup");
    let mut admin = admin(&server);
    let started = start_backup(&mut admin, &backup);
    let done = wait_for_backup(&mut admin, started["id"].as_str().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    server.stop();
    assert!(backup.join("kms").join("master.check").exists());
    let master = std::fs::read(&keys).unwrap();
    for entry in files_under(&backup) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(master.len()).any(|window| window == master),
            "{} holds the master keys",
            entry.display()
        );
        assert!(
            !bytes.windows(13).any(|window| window == b"sealed marker"),
            "{} holds a sealed body in the clear",
            entry.display()
        );
    }
    let restored_db = dir.path().join("restored");
    restore(&backup, &restored_db);
    // The thread keys are in the key vault, which a backup never holds:
    // without it the restored directory is refused, with it all opens.
    let mut refused = vec!["--db".to_string(), restored_db.display().to_string()];
    refused.extend(args.iter().map(|arg| arg.to_string()));
    let (ok, text) = progressdb(&refused.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && text.contains("key vault"), "{text}");
    support::copy_vault(&db, &restored_db);
    let restored = Server::start_on(&restored_db, &args);
    let message = restored
        .client()
        .acting_for("loader")
        .get(&format!("/frontend/v1/threads/secret/messages/{id}"))
        .expect(200);
    assert_eq!(message["message"]["body"]["text"], "sealed marker");
    restored.stop();
}

/// moto's S3 server on a free loopback port, stopped on drop.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    fn start() -> S3Server {
        let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tests/s3/site");
        assert!(
            site.join("moto").is_dir(),
            "moto in src/tests/s3/site: run scripts/install-test-deps.sh"
        );
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .env("PYTHONPATH", &site)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start moto");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let endpoint = loop {
            let line = lines
                .next()
                .expect("moto exited before it listened")
                .unwrap();
            if let Some(url) = line.split("Running on ").nth(1) {
                break url.trim().to_string();
            }
        };
        // Keep reading so moto never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        S3Server { child, endpoint }
    }

    fn env(&self) -> [(&str, &str); 3] {
        [
            ("PROGRESSDB_S3_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test-access-key"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ]
    }

    /// Sends one request signed with the test credentials.
    fn curl(&self, method: &str, path: &str, body: Option<&Path>) -> String {
        let mut command = Command::new("curl");
        command.args(["--silent", "--show-error", "-X", method]);
        command.args(["--aws-sigv4", "aws:amz:us-east-1:s3"]);
        command.args(["--user", "test-access-key:test-secret-key"]);
        if let Some(body) = body {
            command
                .arg("--data-binary")
                .arg(format!("@{}", body.display()));
        }
        let output = command
            .args(["--write-out", "\n%{http_code}"])
            .arg(format!("{}{path}", self.endpoint))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or_default();
        assert_eq!(status, "200", "curl {method} {path}: {body}");
        body.to_string()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn backups_go_to_an_s3_bucket_and_restore_from_it() {
    let s3 = S3Server::start();
    s3.curl("PUT", "/pdb-backups", None);
    let env = s3.env();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let args = ["--shards", "2", "--admin-key", ADMIN];
    let server = Server::start_with_env(&db, &args, &env);
    let mut client = backend(&server);
    for n in 0..60 {
        post(&mut client, &format!("s3-{}", n % 4), json!({"n": n}));
    }
    let expected = all_messages(&mut client, "s3-2");
    let mut admin = admin(&server);
    let body = json!({"target": "s3://pdb-backups/nightly/one"}).to_string();
    let started = admin.post("/admin/v1/backups", &body).expect(202);
    let done = wait_for_backup(&mut admin, started["id"].as_str().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    let listing = s3.curl("GET", "/pdb-backups?prefix=nightly/one/", None);
    for name in ["manifest.json", "shard-0.items", "shard-1.items"] {
        assert!(
            listing.contains(&format!("nightly/one/{name}")),
            "{listing}"
        );
    }
    // A prefix that holds a backup is never written over.
    let again = admin.post("/admin/v1/backups", &body).expect(202);
    let refused = wait_for_backup(&mut admin, again["id"].as_str().unwrap());
    assert_eq!(refused["state"], "failed");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("already holds a backup"),
        "{refused}"
    );
    server.stop();
    // No staging files are left in the data directory.
    let staged = db.join(".backup-staging");
    assert!(!staged.exists() || std::fs::read_dir(&staged).unwrap().next().is_none());

    let restored_db = dir.path().join("restored");
    let from = "s3://pdb-backups/nightly/one";
    let (ok, text) = progressdb_with_env(
        &[
            "restore",
            "--from",
            from,
            "--db",
            restored_db.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{text}");
    let restored = Server::start_on(&restored_db, &args);
    assert_eq!(all_messages(&mut backend(&restored), "s3-2"), expected);
    restored.stop();

    // The stopped server backs up to another prefix; a damaged object
    // there is refused on restore.
    let to = "s3://pdb-backups/offline";
    let (ok, text) =
        progressdb_with_env(&["backup", "--db", db.to_str().unwrap(), "--to", to], &env);
    assert!(ok, "{text}");
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"PDBITEMS1\nnot items at all").unwrap();
    s3.curl("PUT", "/pdb-backups/offline/shard-1.items", Some(&garbage));
    let damaged_db = dir.path().join("damaged");
    let (ok, text) = progressdb_with_env(
        &[
            "restore",
            "--from",
            to,
            "--db",
            damaged_db.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!ok, "{text}");
    assert!(text.contains("corrupt"), "{text}");
    assert!(!damaged_db.exists());
    let (ok, text) = progressdb_with_env(
        &[
            "restore",
            "--from",
            "s3://pdb-backups/nothing-here",
            "--db",
            damaged_db.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!ok);
    assert!(text.contains("did not finish"), "{text}");
}
