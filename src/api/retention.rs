//! The retention and erasure routes (admin key only):
//! `DELETE /admin/v1/threads/{id}` soft-deletes a thread, or with
//! `?hard=true` erases it now; `POST /admin/v1/jobs/purge` (and upstream's
//! `/admin/jobs/purge`) runs the retention job on every shard now and
//! reports what it removed (see [`crate::engine`]'s `purge` module).

use serde::Deserialize;

use super::input::decode_body;
use super::router::Route;
use super::{Api, ApiError, Handled, json, thread_id};
use crate::engine::{
    Caller, Command, EngineError, PURGE_BUDGET_DEFAULT, PurgeCounts, PurgeCursor, PurgePhase,
    PurgeRequest, Reply, RetentionPolicy,
};
use crate::http::{Request, query_pairs};
use crate::shard::{ShardId, shard_for};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    /// Count what would be removed, remove nothing.
    #[serde(default)]
    dry_run: bool,
    /// Afterwards, force what was removed off the disk: a major
    /// compaction and a WAL checkpoint on every shard.
    #[serde(default)]
    compact: bool,
}

/// Whether the query asks for `hard=true`; anything but true or false is refused.
fn hard_requested(query: &str) -> Result<bool, ApiError> {
    let pairs = query_pairs(query).ok_or_else(|| {
        ApiError::bad_request("invalid_query", "query string has a malformed escape")
    })?;
    let mut hard = false;
    for (key, value) in pairs {
        if key == "hard" {
            hard = match value.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        "`hard` must be true or false",
                    ));
                }
            };
        }
    }
    Ok(hard)
}

/// The purge options; an empty body is `{}`. Only an object is taken
/// (serde would also read `[]` as a struct of defaults).
fn purge_body(request: &Request) -> Result<PurgeBody, ApiError> {
    if request.body.is_empty() {
        return Ok(PurgeBody::default());
    }
    if request.body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body must be a JSON object",
        ));
    }
    decode_body(request)
}

fn unexpected_reply() -> ApiError {
    EngineError::Storage("unexpected reply to a purge".into()).into()
}

impl Api {
    /// Answers a retention route, or `None` when `route` is not one.
    pub(super) async fn retention_route(
        &self,
        route: &Route,
        request: &Request,
    ) -> Option<Result<Handled, ApiError>> {
        let erasing = match route {
            Route::AdminDeleteThread(_) => hard_requested(&request.query),
            Route::Purge => Ok(true),
            _ => return None,
        };
        // A purge step writes keys of many threads at once, which clustered
        // mode cannot yet split by partition into their logs.
        if self.in_cluster() && !matches!(erasing, Ok(false)) {
            return Some(Err(ApiError::not_in_cluster(
                "erasure and purges are not available in clustered mode yet",
            )));
        }
        Some(match route {
            Route::AdminDeleteThread(id) => self.admin_delete_thread(id, erasing).await,
            _ => self.purge(request).await,
        })
    }

    /// Soft-deletes as an admin, or erases: the thread is gone from the
    /// API when this answers, and so are its keys on the owning shard.
    /// `hard` is what the query asked for, parsed once by the caller.
    async fn admin_delete_thread(
        &self,
        id: &str,
        hard: Result<bool, ApiError>,
    ) -> Result<Handled, ApiError> {
        let id = thread_id(id)?;
        if !hard? {
            let command = Command::DeleteThread {
                id,
                caller: Caller { user: None },
            };
            return self.answer(command, None).await;
        }
        let key = id.to_string();
        let owner = shard_for(id.as_str(), self.mesh.shard_count());
        let Reply::Purged(erased) = self.mesh.call(owner, Command::EraseThread { id }).await?
        else {
            return Err(unexpected_reply());
        };
        let mut counts = erased.counts;
        let erasures = PurgeCursor {
            phase: PurgePhase::Erasures,
            after: None,
        };
        let none = RetentionPolicy::default();
        counts += self.purge_shard(owner, false, none, erasures).await?;
        let body = serde_json::json!({ "erased": true, "key": key, "purged": counts });
        Ok(Handled::Response(json(200, body.to_string().into_bytes())))
    }

    /// Runs a retention pass on every shard, one after the other.
    async fn purge(&self, request: &Request) -> Result<Handled, ApiError> {
        let body = purge_body(request)?;
        let mut counts = PurgeCounts::default();
        for shard in 0..self.mesh.shard_count() {
            let cursor = PurgeCursor::default();
            let shard = ShardId(shard);
            counts += self
                .purge_shard(shard, body.dry_run, self.retention, cursor)
                .await?;
        }
        let compact = body.compact && !body.dry_run;
        if compact {
            self.ask_every_shard(|| Command::Compact).await?;
        }
        let format = |age: Option<std::time::Duration>| age.map(crate::config::format_duration);
        let report = serde_json::json!({
            "dry_run": body.dry_run,
            "purged": counts,
            "compacted": compact,
            "deleted_after": format(self.retention.deleted_after),
            "messages_max_age": format(self.retention.messages_max_age),
        });
        Ok(Handled::Response(json(
            200,
            report.to_string().into_bytes(),
        )))
    }

    /// A pass on `shard` from `cursor` to its end, a bounded step per
    /// call so the shard serves other requests in between.
    async fn purge_shard(
        &self,
        shard: ShardId,
        dry_run: bool,
        policy: RetentionPolicy,
        mut cursor: PurgeCursor,
    ) -> Result<PurgeCounts, ApiError> {
        let now_ns = crate::engine::now_ns();
        let mut counts = PurgeCounts::default();
        while cursor.phase != PurgePhase::Done {
            let request = PurgeRequest {
                dry_run,
                policy,
                now_ns,
                budget: PURGE_BUDGET_DEFAULT,
                cursor,
            };
            let Reply::Purged(report) = self.mesh.call(shard, Command::Purge(request)).await?
            else {
                return Err(unexpected_reply());
            };
            counts += report.counts;
            cursor = report.cursor;
        }
        Ok(counts)
    }
}
