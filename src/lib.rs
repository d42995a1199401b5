//! ProgressDB: a chat-native database server.
//!
//! # Life of a request
//!
//! 1. Every core runs one glommio executor ([`server`]) and accepts
//!    connections on the shared port (`SO_REUSEPORT`).
//! 2. The connection loop reads bytes and [`http`] frames them into a
//!    `Request` (httparse tokenizes the head; bodies, chunking, keep-alive
//!    and limits are ours), then the router maps method + path to a `Route`.
//! 3. [`api`] authenticates the caller ([`auth`]), validates the input and
//!    builds an [`engine::Command`] for the thread it concerns.
//! 4. [`shard::shard_for`] names the core that owns the thread; the command
//!    goes there over the cross-core [`mesh`] (or runs in place).
//! 5. The owner's [`engine::Engine`] executes it against its own [`store`]
//!    (an LSM-tree) and answers typed values ([`engine::Reply`]), which
//!    travel back (a thread's newest page as the HTTP bytes the owner
//!    caches for it).
//! 6. The accepting core renders the answer as the contract's JSON
//!    (`api::render`) and writes the response; pipelined requests follow.
//!    A message page too large to render whole comes back as a plan
//!    instead, and the accepting core fetches and writes it piece by piece
//!    ([`api::PageStream`], `Transfer-Encoding: chunked`).
//!
//! Listing a user's threads is the one request that asks every shard and
//! merges the answers.
//!
//! With `--pg-addr`, [`pg`] also speaks the PostgreSQL wire protocol on
//! every core: each SQL statement it supports becomes the API request that
//! does the same thing, answered in-process from step 3 on.
//!
//! Without HTTP, [`Db`] ([`embedded`]) drives one shard's engine from plain
//! threads, on the same on-disk layout.

pub mod api;
pub mod auth;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod embedded;
pub mod engine;
pub mod http;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod model;
pub mod pg;
pub mod rng;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod store;
pub mod wal;

pub use embedded::Db;
