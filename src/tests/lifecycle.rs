//! End-to-end tests of the process: flags and config, restart on the same
//! data directory, and routing across shards.

#[path = "support.rs"]
mod support;

use std::collections::HashSet;
use std::process::Command;

use serde_json::{Value, json};
use support::Server;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_progressdb"))
}

#[test]
fn help_documents_every_flag() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--db",
        "--addr",
        "--shards",
        "--config",
        "--api-key",
        "--request-body-bytes-max",
        "--idle-timeout-ms",
        "PROGRESSDB_DB",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let output = binary().args(["--shards", "0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`shards`"));
    let output = binary().args(["--addr", "nonsense"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`addr`"));
}

#[test]
fn config_file_and_env_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("progressdb.toml");
    std::fs::write(
        &config,
        format!(
            "api_keys = [\"file-key-0123456789\"]\ndb = \"{}\"\n",
            dir.path().join("db").display()
        ),
    )
    .unwrap();
    let args = vec!["--config".to_string(), config.display().to_string()];
    let started = support::spawn_and_wait(&args, &[("PROGRESSDB_ADDR", "127.0.0.1:0")]).unwrap();
    let (mut child, addr) = (started.child, started.addr);
    let mut client = support::Client::connect(addr);
    client.key = Some("file-key-0123456789".into());
    client.get("/frontend/v1/threads").expect(200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn development_key_is_generated_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let args = vec![
        "--db".to_string(),
        db.display().to_string(),
        "--addr".into(),
        "127.0.0.1:0".into(),
    ];
    let started = support::spawn_and_wait(&args, &[]).unwrap();
    let (mut child, addr) = (started.child, started.addr);
    let key = std::fs::read_to_string(db.join("dev-api-key")).unwrap();
    let mut client = support::Client::connect(addr);
    client.key = Some(key.trim().to_string());
    client.get("/frontend/v1/threads").expect(200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn data_survives_a_clean_restart() {
    let server = Server::start(&["--shards", "2"]);
    let mut client = server.client();
    let mut threads = Vec::new();
    for n in 0..6 {
        let id = client
            .post(
                "/frontend/v1/threads",
                &json!({ "title": format!("t{n}") }).to_string(),
            )
            .expect(201)["key"]
            .as_str()
            .unwrap()
            .to_string();
        for m in 0..5 {
            client
                .post(
                    &format!("/frontend/v1/threads/{id}/messages"),
                    &json!({ "body": {"m": m} }).to_string(),
                )
                .expect(201);
        }
        threads.push(id);
    }
    client
        .delete(&format!("/frontend/v1/threads/{}", threads[0]))
        .expect(200);
    let pages = |client: &mut support::Client| -> Vec<Value> {
        threads[1..]
            .iter()
            .map(|id| {
                client
                    .get(&format!("/frontend/v1/threads/{id}/messages"))
                    .expect(200)
            })
            .collect()
    };
    let before = pages(&mut client);
    drop(client);

    // The shard count is read back from the data directory.
    let server = server.restart(&[]);
    let mut client = server.client();
    let after = pages(&mut client);
    assert_eq!(before, after);
    client
        .get(&format!("/frontend/v1/threads/{}", threads[0]))
        .expect_error(404, "thread_not_found");
    assert_eq!(
        client.get("/frontend/v1/threads").expect(200)["threads"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // New messages keep sorting after the old ones.
    let newest = client
        .post(
            &format!("/frontend/v1/threads/{}/messages", threads[1]),
            r#"{"body":"after restart"}"#,
        )
        .expect(201);
    let page = client
        .get(&format!(
            "/frontend/v1/threads/{}/messages?limit=1",
            threads[1]
        ))
        .expect(200);
    assert_eq!(page["messages"][0], newest);
}

#[test]
fn a_different_shard_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    Server::start_on(&db, &["--shards", "2"]).stop();
    let output = binary()
        .args([
            "--db",
            &db.display().to_string(),
            "--addr",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .args(["--api-key", support::API_KEY])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("created with 2 shards"));
}

/// Thread ids that `shard_for` places on shard 0 and on shard 1 of 2.
fn ids_on_both_shards() -> (Vec<String>, Vec<String>) {
    let mut on = (Vec::new(), Vec::new());
    for n in 0..200 {
        let id = format!("route-{n}");
        match progressdb::shard::shard_for(&id, 2).0 {
            0 => on.0.push(id),
            _ => on.1.push(id),
        }
    }
    on
}

#[test]
fn requests_on_either_shard_reach_the_owner() {
    let server = Server::start(&["--shards", "2"]);
    let (on_zero, on_one) = ids_on_both_shards();
    let owned: Vec<String> = on_zero
        .iter()
        .take(4)
        .chain(on_one.iter().take(4))
        .cloned()
        .collect();

    // Connections are spread over both shards by SO_REUSEPORT; open enough
    // that both accepting cores are certainly used.
    let mut clients: Vec<_> = (0..16).map(|_| server.client()).collect();
    let mut served_by = HashSet::new();
    for (n, id) in owned.iter().enumerate() {
        let client = &mut clients[n % 16];
        let reply = client.post(
            "/frontend/v1/threads",
            &json!({"id": id, "title": id}).to_string(),
        );
        served_by.insert(reply.header("x-progressdb-shard").unwrap().to_string());
        reply.expect(201);
    }
    for client in clients.iter_mut() {
        for id in &owned {
            let reply = client.post(
                &format!("/frontend/v1/threads/{id}/messages"),
                &json!({"body": id}).to_string(),
            );
            served_by.insert(reply.header("x-progressdb-shard").unwrap().to_string());
            reply.expect(201);
        }
    }
    assert_eq!(
        served_by.len(),
        2,
        "both shards accepted connections: {served_by:?}"
    );

    // Every connection, whichever core it landed on, sees the same answers.
    let expected: Vec<Value> = owned
        .iter()
        .map(|id| {
            clients[0]
                .get(&format!("/frontend/v1/threads/{id}/messages?limit=100"))
                .expect(200)
        })
        .collect();
    for (index, page) in expected.iter().enumerate() {
        assert_eq!(
            page["messages"].as_array().unwrap().len(),
            16,
            "thread {}",
            owned[index]
        );
    }
    for client in clients.iter_mut() {
        for (id, page) in owned.iter().zip(&expected) {
            assert_eq!(
                &client
                    .get(&format!("/frontend/v1/threads/{id}/messages?limit=100"))
                    .expect(200),
                page
            );
        }
        // The listing merges both shards, newest first.
        let listed = client.get("/frontend/v1/threads?limit=100").expect(200);
        let listed: Vec<&str> = listed["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        let mut newest_first: Vec<&str> = owned.iter().map(String::as_str).collect();
        newest_first.reverse();
        assert_eq!(listed, newest_first);
    }
}
