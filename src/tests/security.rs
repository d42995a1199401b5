//! End-to-end tests of access control on the real binary: which key kind
//! may call which route, signed frontend users and their isolation, CORS,
//! and per-key rate limits.

#[path = "support.rs"]
mod support;

use serde_json::json;
use support::{Client, Server};

const BACKEND: &str = "sk_backend_0123456789";
const FRONTEND: &str = "pk_frontend_0123456789";
const ADMIN: &str = "admin_0123456789";

fn start(extra: &[&str]) -> Server {
    let mut args = vec![
        "--frontend-key",
        FRONTEND,
        "--admin-key",
        ADMIN,
        "--backend-key",
        BACKEND,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A client presenting `key` (as X-API-Key, as browsers do) for `user`.
fn client(
    server: &Server,
    key: Option<&str>,
    user: Option<&str>,
    signature: Option<&str>,
) -> Client {
    let mut client = server.client();
    client.key = None;
    client.user = None;
    let mut headers = String::new();
    if let Some(key) = key {
        headers.push_str(&format!("X-API-Key: {key}\r\n"));
    }
    if let Some(user) = user {
        headers.push_str(&format!("X-User-ID: {user}\r\n"));
    }
    if let Some(signature) = signature {
        headers.push_str(&format!("X-User-Signature: {signature}\r\n"));
    }
    client.extra_headers = headers;
    client
}

fn signature_for(server: &Server, user: &str) -> String {
    let mut backend = client(server, Some(BACKEND), None, None);
    let signed = backend
        .post("/backend/v1/sign", &json!({ "userId": user }).to_string())
        .expect(200);
    assert_eq!(signed["userId"], user);
    let signature = signed["signature"].as_str().unwrap().to_string();
    assert_eq!(signature.len(), 64);
    assert!(
        signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    signature
}

#[test]
fn every_key_kind_reaches_only_its_routes() {
    let server = start(&[]);
    let alice = signature_for(&server, "alice");
    // (method, path, body) for one route of each family.
    let routes: [(&str, &str, Option<&str>); 9] = [
        ("GET", "/frontend/v1/threads", None),
        ("POST", "/frontend/v1/threads", Some(r#"{"title":"t"}"#)),
        (
            "POST",
            "/v1/messages",
            Some(r#"{"thread":"seed","author":"u","body":1}"#),
        ),
        ("GET", "/v1/threads/seed/messages", None),
        ("POST", "/backend/v1/sign", Some(r#"{"userId":"x"}"#)),
        ("GET", "/admin/v1/stats", None),
        ("GET", "/admin/v1/threads", None),
        ("GET", "/metrics", None),
        // Encryption is off here: the admin gets past auth to a 409.
        ("POST", "/admin/v1/kms/rotate", None),
    ];
    // (name, key, X-User-ID, X-User-Signature, expected status per route)
    type Caller<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        [u16; 9],
    );
    let callers: [Caller; 6] = [
        (
            "no key",
            None,
            Some("alice"),
            None,
            [401, 401, 401, 401, 401, 401, 401, 401, 401],
        ),
        (
            "unknown key",
            Some("sk_nope_0123456789"),
            Some("alice"),
            None,
            [401, 401, 401, 401, 401, 401, 401, 401, 401],
        ),
        (
            "backend",
            Some(BACKEND),
            Some("alice"),
            None,
            [200, 201, 201, 200, 200, 403, 403, 403, 403],
        ),
        (
            "frontend signed",
            Some(FRONTEND),
            Some("alice"),
            Some(&alice),
            [200, 201, 403, 403, 403, 403, 403, 403, 403],
        ),
        (
            "frontend unsigned",
            Some(FRONTEND),
            Some("alice"),
            None,
            [401, 401, 403, 403, 403, 403, 403, 403, 403],
        ),
        (
            "admin",
            Some(ADMIN),
            Some("alice"),
            None,
            [403, 403, 403, 403, 403, 200, 200, 200, 409],
        ),
    ];
    for (name, key, user, signature, expected) in callers {
        for ((method, path, body), status) in routes.iter().zip(expected) {
            let mut caller = client(&server, key, user, signature);
            let reply = caller.request(method, path, *body);
            assert_eq!(
                reply.status,
                status,
                "{name}: {method} {path}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            let code = match status {
                401 => Some(if name == "frontend unsigned" {
                    "invalid_signature"
                } else {
                    "unauthorized"
                }),
                403 => Some("forbidden"),
                _ => None,
            };
            if let Some(code) = code {
                reply.expect_error(status, code);
            }
        }
    }
    client(&server, None, None, None)
        .get("/healthz")
        .expect(200);
}

#[test]
fn signed_users_are_isolated_and_signatures_do_not_transfer() {
    let server = start(&[]);
    let alice_sig = signature_for(&server, "alice");
    let bob_sig = signature_for(&server, "bob");
    let mut alice = client(&server, Some(FRONTEND), Some("alice"), Some(&alice_sig));
    let mut bob = client(&server, Some(FRONTEND), Some("bob"), Some(&bob_sig));
    let thread = alice
        .post("/frontend/v1/threads", r#"{"title":"alice only"}"#)
        .expect(201);
    let id = thread["key"].as_str().unwrap();
    let message = alice
        .post(
            &format!("/frontend/v1/threads/{id}/messages"),
            r#"{"body":"secret"}"#,
        )
        .expect(201);
    let mid = message["key"].as_str().unwrap();
    assert_eq!(thread["author"], "alice");

    let base = format!("/frontend/v1/threads/{id}");
    bob.get(&base).expect_error(404, "thread_not_found");
    bob.put(&base, r#"{"title":"bob's now"}"#)
        .expect_error(404, "thread_not_found");
    bob.delete(&base).expect_error(404, "thread_not_found");
    bob.get(&format!("{base}/messages"))
        .expect_error(404, "thread_not_found");
    bob.put(&format!("{base}/messages/{mid}"), r#"{"body":"x"}"#)
        .expect_error(404, "thread_not_found");
    bob.delete(&format!("{base}/messages/{mid}"))
        .expect_error(404, "thread_not_found");
    assert!(
        bob.get("/frontend/v1/threads").expect(200)["threads"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Alice's signature presented for bob, a forged one, and a truncated one.
    for signature in [alice_sig.as_str(), &"0".repeat(64), &alice_sig[..63]] {
        client(&server, Some(FRONTEND), Some("bob"), Some(signature))
            .get("/frontend/v1/threads")
            .expect_error(401, "invalid_signature");
    }
    // A backend key may act for any user.
    let mut backend = client(&server, Some(BACKEND), Some("alice"), None);
    assert_eq!(
        backend.get(&base).expect(200)["thread"]["title"],
        "alice only"
    );
    assert_eq!(
        alice.get(&format!("{base}/messages")).expect(200)["messages"][0]["body"],
        "secret"
    );
}

#[test]
fn signing_keys_rotate() {
    let server = start(&[
        "--signing-key",
        "new-signing-key-01",
        "--signing-key",
        "old-signing-key-01",
    ]);
    let fresh = signature_for(&server, "carol");
    assert_eq!(
        fresh,
        progressdb::auth::sign(b"new-signing-key-01", "carol")
    );
    let old = progressdb::auth::sign(b"old-signing-key-01", "carol");
    for signature in [fresh, old] {
        client(&server, Some(FRONTEND), Some("carol"), Some(&signature))
            .get("/frontend/v1/threads")
            .expect(200);
    }
    // With explicit signing keys, the backend key no longer signs.
    let by_backend_key = progressdb::auth::sign(BACKEND.as_bytes(), "carol");
    client(
        &server,
        Some(FRONTEND),
        Some("carol"),
        Some(&by_backend_key),
    )
    .get("/frontend/v1/threads")
    .expect_error(401, "invalid_signature");
}

#[test]
fn cors_preflight_and_responses() {
    let server = start(&["--cors-origin", "https://app.example"]);
    let preflight = |origin: &str| {
        let mut raw = client(&server, None, None, None);
        raw.extra_headers = format!(
            "Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-api-key, x-user-id\r\n"
        );
        raw.request("OPTIONS", "/frontend/v1/threads", None)
    };
    let allowed = preflight("https://app.example");
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, HEAD, POST, OPTIONS")
    );
    assert!(
        allowed
            .header("access-control-allow-headers")
            .unwrap()
            .contains("X-User-Signature")
    );
    assert_eq!(allowed.header("access-control-allow-credentials"), None);
    let refused = preflight("https://evil.example");
    assert_eq!(refused.status, 204);
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let mut browser = client(&server, Some(BACKEND), Some("alice"), None);
    browser
        .extra_headers
        .push_str("Origin: https://app.example\r\n");
    let reply = browser.get("/frontend/v1/threads");
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(reply.header("vary"), Some("Origin"));

    let any = start(&["--cors-origin", "*"]);
    let mut anywhere = client(&any, Some(BACKEND), Some("alice"), None);
    anywhere
        .extra_headers
        .push_str("Origin: https://whoever.example\r\n");
    let reply = anywhere.get("/frontend/v1/threads");
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        None,
        "* never with credentials"
    );
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let server = start(&[
        "--shards",
        "1",
        "--rate-limit-rps",
        "2",
        "--rate-limit-burst",
        "3",
    ]);
    let mut backend = client(&server, Some(BACKEND), Some("alice"), None);
    for _ in 0..3 {
        backend.get("/frontend/v1/threads").expect(200);
    }
    let limited = backend.get("/frontend/v1/threads");
    limited.expect_error(429, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    // Another key has its own bucket.
    client(&server, Some(ADMIN), None, None)
        .get("/admin/v1/stats")
        .expect(200);
    std::thread::sleep(std::time::Duration::from_millis(600));
    backend.get("/frontend/v1/threads").expect(200);
}
