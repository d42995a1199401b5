//! End-to-end tests of operability: the OpenAPI document and docs page the
//! server serves, and `--print-config` / config errors of the binary.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::Server;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_progressdb"));
    // The settings under test must come only from what each test passes.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROGRESSDB_") {
            command.env_remove(name);
        }
    }
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn openapi_document_is_public_and_matches_the_server() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.key = None;
    client.user = None;

    let reply = client.get("/openapi.json");
    let spec = reply.expect(200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("cache-control").is_some());
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{spec}"
    );
    let ready = client.get("/readyz").expect(200);
    assert_eq!(spec["info"]["version"], ready["version"]);
    let paths = spec["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/frontend/v1/threads/{id}/messages"));
    assert!(paths.contains_key("/admin/v1/stats"));

    let head = client.request("HEAD", "/openapi.json", None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    client
        .post("/openapi.json", "{}")
        .expect_error(405, "method_not_allowed");

    // Every documented method is one the live server allows on that path.
    for (template, item) in paths {
        let path = template
            .replace("{id}", "t-sample")
            .replace("{mid}", "m-sample");
        let reply = client.request("OPTIONS", &path, None);
        assert_eq!(reply.status, 204, "OPTIONS {path}");
        let allow = reply.header("allow").expect("Allow");
        for method in item.as_object().unwrap().keys() {
            assert!(
                allow.contains(&method.to_uppercase()),
                "{method} {template} documented, server allows {allow}"
            );
        }
    }
    server.stop();
}

#[test]
fn docs_page_is_self_contained_html() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.key = None;
    client.user = None;
    for path in ["/docs/", "/docs"] {
        let reply = client.get(path);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(reply.header("cache-control").is_some());
        let policy = reply.header("content-security-policy").expect("CSP");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        let html = String::from_utf8(reply.body).unwrap();
        assert!(html.starts_with("<!doctype html>"));
        for marker in [
            "data-progressdb-docs",
            "openapi.json",
            "<style>",
            "<script>",
            "x-key-kinds",
            "badge",
        ] {
            assert!(html.contains(marker), "{path} lacks {marker}");
        }
        // No CDN: nothing is loaded from another origin.
        assert!(!html.contains("src=\"http"), "external script");
        assert!(!html.contains("href=\"http"), "external link");
    }
    server.stop();
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn print_config_masks_secrets_and_shows_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never-created");
    let file = write(
        dir.path(),
        "progressdb.toml",
        &format!(
            "db = {:?}\naddr = \"127.0.0.1:9000\"\ndurability = \"batch\"\nrate_limit_rps = 5\n\
             api_keys = [\"sk_file_secret_0123\"]\nsigning_keys = [\"file-signing-secret-0123\"]\n",
            db.display().to_string()
        ),
    );
    let output = binary()
        .args(["--config", &file, "--print-config"])
        .args(["--addr", "127.0.0.1:9002"])
        .args(["--admin-key", "adm_flag_secret_0123"])
        .env("PROGRESSDB_ADDR", "127.0.0.1:9001")
        .env("PROGRESSDB_DURABILITY", "none")
        .env(
            "PROGRESSDB_FRONTEND_KEYS",
            "pk_env_secret_0123,pk_env_secret_4567",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    for secret in ["secret_0123", "secret_4567", "signing-secret"] {
        assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
    }
    let settings: toml::Table = toml::from_str(&printed).expect("TOML");
    // flag > env > file > default.
    assert_eq!(settings["addr"].as_str(), Some("127.0.0.1:9002"));
    assert_eq!(settings["durability"].as_str(), Some("none"));
    assert_eq!(settings["rate_limit_rps"].as_integer(), Some(5));
    assert_eq!(settings["rate_limit_burst"].as_integer(), Some(5));
    assert_eq!(
        settings["request_body_bytes_max"].as_integer(),
        Some(1048576)
    );
    let list = |key: &str| -> Vec<String> {
        settings[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list("api_keys"), ["sk_***(masked)"]);
    assert_eq!(list("frontend_keys"), ["pk_***(masked)", "pk_***(masked)"]);
    assert_eq!(list("admin_keys"), ["adm_***(masked)"]);
    assert_eq!(list("signing_keys"), ["***(masked)"]);
    // Printing is all it did: no server, so no data directory.
    assert!(!db.exists(), "--print-config started the server");

    // The external KMS's token is named, never shown.
    let output = binary()
        .args(["--print-config", "--encryption", "--kms", "external"])
        .args(["--kms-url", "http://127.0.0.1:7070"])
        .env("PROGRESSDB_KMS_TOKEN", "kms-token-do-not-print")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("kms = \"external\""), "{printed}");
    assert!(printed.contains("PROGRESSDB_KMS_TOKEN"), "{printed}");
    assert!(!printed.contains("kms-token-do-not-print"), "{printed}");
}

/// Runs the binary, expecting exit 2 and exactly one stderr line naming `key`.
fn assert_one_line_error(output: Output, key: &str) {
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "not one line:\n{text}");
    assert!(lines[0].contains(&format!("`{key}`")), "{text}");
    assert!(
        stdout(&output).is_empty(),
        "printed config despite the error"
    );
}

#[test]
fn invalid_config_exits_2_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = binary();
        command.args(args).arg("--print-config");
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    // A bad flag, a bad environment value, each validated by the parser or
    // by resolution.
    assert_one_line_error(run(&["--wal-flush-ms", "soon"], &[]), "wal_flush_ms");
    assert_one_line_error(run(&["--shards", "0"], &[]), "shards");
    assert_one_line_error(
        run(&[], &[("PROGRESSDB_IDLE_TIMEOUT_MS", "x")]),
        "idle_timeout_ms",
    );
    assert_one_line_error(run(&[], &[("PROGRESSDB_DURABILITY", "fast")]), "durability");
    // Bad values in the file, a bad type, an unknown key and bad syntax.
    let bad_value = write(dir.path(), "a.toml", "wal_recovery = \"maybe\"\n");
    assert_one_line_error(run(&["--config", &bad_value], &[]), "wal_recovery");
    let bad_type = write(dir.path(), "b.json", r#"{"rate_limit_rps": "lots"}"#);
    assert_one_line_error(run(&["--config", &bad_type], &[]), "rate_limit_rps");
    let unknown = write(dir.path(), "c.toml", "db = \"x\"\nlisten_port = 1\n");
    let output = run(&["--config", &unknown], &[]);
    assert!(stderr(&output).contains("`listen_port`"));
    assert_one_line_error(output, "config");
    let syntax = write(dir.path(), "d.toml", "db = \"x\"\naddr = [\n");
    assert_one_line_error(run(&["--config", &syntax], &[]), "config");
}
