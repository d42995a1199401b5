//! Test helpers for the engine's own unit tests: a one-shard engine on a
//! directory, driven on a glommio executor of the test's thread.

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use super::command::{Caller, Command};
use super::reply::Reply;
use super::{Engine, StoreRecovery};
use crate::crypto::Kms;
use crate::crypto::vault::Vault;
use crate::model::{ThreadId, UserId};
use crate::shard::ShardId;
use crate::wal::recovery::RecoveryPolicy;
use crate::wal::{Durability, WalOptions};

/// Sees every thread, as the admin routes do.
pub const ADMIN: Caller = Caller { user: None };

/// Runs `test` on a one-shard engine over a fresh directory.
pub fn with_engine(test: impl AsyncFnOnce(Rc<Engine>)) {
    let dir = tempfile::tempdir().unwrap();
    with_engine_on(dir.path(), None, test);
}

/// Runs `test` on a one-shard engine over `db`, sealing with `sealing`;
/// the engine is stopped and dropped (its directory unlocked) after.
pub fn with_engine_on(
    db: &Path,
    sealing: Option<(Kms, Option<Vault>)>,
    test: impl AsyncFnOnce(Rc<Engine>),
) {
    crate::server::datadir::prepare(db, Some(1), 1).unwrap();
    let dir = crate::server::datadir::shard_dir(db, 0);
    let io_memory = crate::server::io_memory_per_shard(256 * 1024, 1).unwrap();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(io_memory)
        .make()
        .unwrap()
        .run(async move {
            let wal = WalOptions {
                durability: Durability::Sync,
                flush_interval: Duration::from_millis(1),
                segment_bytes: 1 << 20,
                fail_after_flushes: None,
            };
            let policy = (RecoveryPolicy::Strict, StoreRecovery::Strict);
            let store = crate::store::StoreOptions::default();
            let (engine, _) = Engine::open(ShardId(0), &dir, store, wal, policy, sealing).unwrap();
            test(engine.clone()).await;
            engine.flush_wal().await.unwrap();
            engine.stop();
        });
}

pub async fn ok(engine: &Engine, command: Command) -> Reply {
    engine.run(command).await.0.expect("command succeeds")
}

/// Posts `text` to `thread` (creating it) and returns the message's key.
pub async fn post(engine: &Engine, thread: &ThreadId, text: &str) -> String {
    let body = serde_json::value::RawValue::from_string(format!("\"{text}\"")).unwrap();
    let command = Command::PostMessage {
        thread: thread.clone(),
        caller: ADMIN,
        author: UserId::parse("alice").unwrap(),
        role: None,
        body,
        reply_to: None,
        create_thread_titled: Some("t".into()),
    };
    let Reply::Message { message, .. } = ok(engine, command).await else {
        panic!("a message");
    };
    message.id
}

/// The body of message `id` of `thread`, as a reader gets it.
pub async fn message_body(engine: &Engine, thread: &ThreadId, id: &str) -> String {
    let command = Command::GetMessage {
        thread: thread.clone(),
        caller: ADMIN,
        id: id.to_owned(),
        include_deleted: false,
    };
    let Reply::Message { message, .. } = ok(engine, command).await else {
        panic!("a message");
    };
    message.body.get().to_owned()
}
