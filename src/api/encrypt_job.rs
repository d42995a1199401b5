//! The encrypt-threads job's routes (admin key only):
//! `POST /admin/v1/jobs/encrypt-threads` starts it on every shard, and
//! `GET` reports its progress summed over the shards (see
//! [`crate::engine`]'s `seal_job` module).

use serde::Serialize;

use super::router::Route;
use super::{Api, ApiError, Handled, json};
use crate::engine::{Command, EngineError, Reply, SealProgress, SealState};
use crate::http::Request;

/// The job's progress over every shard.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub(super) struct JobReport {
    state: SealState,
    threads_sealed: u64,
    messages_sealed: u64,
    versions_sealed: u64,
    /// Shards whose part of the job is not finished.
    shards_running: u64,
    shards: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

/// Sums the shards' progress. The job is failed if a shard's part failed,
/// running while one runs, done once each shard's part is done.
pub(super) fn summed(parts: &[SealProgress]) -> JobReport {
    let mut report = JobReport {
        shards: parts.len() as u64,
        ..JobReport::default()
    };
    for part in parts {
        report.threads_sealed += part.threads_sealed;
        report.messages_sealed += part.messages_sealed;
        report.versions_sealed += part.versions_sealed;
        report.shards_running += u64::from(part.state == SealState::Running);
        report.errors.extend(part.error.clone());
    }
    let any = |state: SealState| parts.iter().any(|part| part.state == state);
    report.state = if any(SealState::Failed) {
        SealState::Failed
    } else if any(SealState::Running) {
        SealState::Running
    } else if any(SealState::Done) {
        SealState::Done
    } else {
        SealState::Idle
    };
    report
}

/// The start request takes no options: an empty body or `{}`.
fn check_start_body(request: &Request) -> Result<(), ApiError> {
    let body = request.body.trim_ascii();
    if body.is_empty() {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(fields)) if fields.is_empty() => Ok(()),
        _ => Err(ApiError::bad_request(
            "invalid_json",
            "request body must be empty or {}",
        )),
    }
}

impl Api {
    /// Answers an encrypt-threads route, or `None` when `route` is not one.
    pub(super) async fn encrypt_job_route(
        &self,
        route: &Route,
        request: &Request,
    ) -> Option<Result<Handled, ApiError>> {
        let start = match route {
            Route::StartEncryptThreads => true,
            Route::EncryptThreadsStatus => false,
            _ => return None,
        };
        // Each node holds copies of partitions it does not own, which it
        // may not write to their logs.
        if start && self.in_cluster() {
            return Some(Err(ApiError::not_in_cluster(
                "the encrypt-threads job is not available in clustered mode yet",
            )));
        }
        Some(self.encrypt_threads(start, request).await)
    }

    async fn encrypt_threads(&self, start: bool, request: &Request) -> Result<Handled, ApiError> {
        if start {
            check_start_body(request)?;
            if !self.encryption {
                return Err(ApiError::new(
                    409,
                    "encryption_off",
                    "encryption is not enabled",
                ));
            }
        }
        let replies = self
            .ask_every_shard(|| Command::EncryptThreads { start })
            .await?;
        let mut parts = Vec::with_capacity(replies.len());
        for reply in replies {
            let Reply::SealProgress(part) = reply else {
                return Err(unexpected_reply());
            };
            parts.push(part);
        }
        let status = if start { 202 } else { 200 };
        let body = serde_json::to_vec(&summed(&parts)).map_err(|_| unexpected_reply())?;
        Ok(Handled::Response(json(status, body)))
    }
}

fn unexpected_reply() -> ApiError {
    EngineError::Storage("unexpected reply about the encrypt-threads job".into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(state: SealState, messages: u64) -> SealProgress {
        SealProgress {
            state,
            messages_sealed: messages,
            ..SealProgress::default()
        }
    }

    #[test]
    fn the_job_is_done_only_once_every_shard_is_and_fails_if_one_did() {
        let done = summed(&[part(SealState::Done, 2), part(SealState::Done, 3)]);
        assert_eq!((done.state, done.messages_sealed), (SealState::Done, 5));
        let running = summed(&[part(SealState::Done, 2), part(SealState::Running, 1)]);
        assert_eq!(
            (running.state, running.shards_running),
            (SealState::Running, 1)
        );
        let mut broken = part(SealState::Failed, 0);
        broken.error = Some("disk".into());
        let failed = summed(&[broken, part(SealState::Running, 1)]);
        assert_eq!((failed.state, failed.errors.len()), (SealState::Failed, 1));
        assert_eq!(summed(&[part(SealState::Idle, 0)]).state, SealState::Idle);
    }
}
