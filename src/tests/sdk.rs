//! The published Python SDK (PyPI `progressdb` 0.2.0, installed unchanged
//! by `scripts/install-test-deps.sh` into `src/tests/sdk/site`) driving a
//! backend session against the real binary: create, read, page both ways
//! and around an anchor, edit, delete, rename, list, sign, and another
//! user's 404. The JavaScript SDKs are not on the npm registry our
//! machines reach; their call sequence is in `contract.rs`.

#[path = "support.rs"]
mod support;

use std::path::{Path, PathBuf};

use support::{API_KEY, Server};

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tests/sdk")
}

#[test]
fn the_published_python_sdk_runs_a_backend_session_unchanged() {
    let site = sdk_dir().join("site");
    assert!(
        site.join("progressdb").is_dir(),
        "the SDK test needs PyPI progressdb in {}: run scripts/install-test-deps.sh",
        site.display()
    );
    let server = Server::start(&["--shards", "2"]);
    support::run_python_client(
        &sdk_dir().join("backend_session.py"),
        &site,
        &[format!("http://{}", server.addr), API_KEY.to_string()],
        // Loopback only: no proxy from the environment may intercept.
        &[("NO_PROXY", "*")],
    );
}
