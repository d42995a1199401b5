//! Clustered mode at the API edge: a request about a thread whose
//! partition another node owns goes to that node (one hop, see
//! [`crate::cluster::forward`]); `GET /cluster/v1/status` shows this
//! node's view. Without `--cluster` none of this runs.

use std::rc::Rc;

use super::{Api, ApiError, Handled, json};
use crate::cluster::forward::FORWARDED_HEADER;
use crate::cluster::shard::Replication;
use crate::http::Request;
use crate::http::router::Route;

/// What the cluster makes of a request.
enum Placement {
    /// This node serves it.
    Here,
    /// The node at this address owns it.
    There(String),
    /// Nobody can serve it right now (owner changing, already forwarded).
    Unavailable,
}

impl Api {
    /// `Some` when clustered mode answers the request itself: forwarded
    /// to its owner, refused while its partition moves, or the status.
    pub(super) async fn cluster_route(
        &self,
        route: &Route,
        request: &Request,
    ) -> Option<Result<Handled, ApiError>> {
        let Some(cluster) = self.cluster.as_ref() else {
            return matches!(route, Route::ClusterStatus).then(|| {
                Err(ApiError::new(
                    404,
                    "not_clustered",
                    "this server does not run in clustered mode",
                ))
            });
        };
        if matches!(route, Route::ClusterStatus) {
            return Some(Ok(status(cluster)));
        }
        let placement = match route_thread(route, request) {
            Some(thread) => place(cluster, &thread, request),
            None if matches!(route, Route::CreateThread) => place_new_thread(cluster, request),
            None => Placement::Here,
        };
        match placement {
            Placement::Here => None,
            Placement::Unavailable => {
                crate::logging::debug("no node serves this request's partition now", &[]);
                Some(Err(unavailable()))
            }
            Placement::There(_) if is_stream(route) => Some(Err(ApiError::new(
                421,
                "stream_elsewhere",
                "live tails are served by the node that owns the thread's partition",
            ))),
            Placement::There(address) => {
                let answer = cluster
                    .pool()
                    .forward(&address, request, cluster.node())
                    .await;
                Some(Ok(Handled::Response(answer.unwrap_or_else(|why| {
                    crate::logging::warn(
                        "forwarding to the partition's owner failed",
                        &[("owner", &address), ("error", &why)],
                    );
                    unavailable().into_response()
                }))))
            }
        }
    }

    /// A new thread's id, in a partition this node may write when it has
    /// any (so creating a thread never needs a hop).
    pub(super) fn generate_owned_thread_id(&self) -> crate::model::ThreadId {
        const TRIES_MAX: usize = 256;
        let mut id = self.generate_local_thread_id();
        if let Some(cluster) = &self.cluster {
            let view = cluster.view();
            for _ in 1..TRIES_MAX {
                if view.writable(cluster.partition_of(id.as_str())) {
                    break;
                }
                id = self.generate_local_thread_id();
            }
        }
        id
    }
}

/// The answer while a partition has no owner that can serve (503 with
/// `Retry-After`, as the engine refuses a write it may not take).
fn unavailable() -> ApiError {
    ApiError::from(crate::engine::EngineError::PartitionUnavailable(
        "no node serves this partition now".into(),
    ))
}

fn place(cluster: &Replication, thread: &str, request: &Request) -> Placement {
    let partition = cluster.partition_of(thread);
    let view = cluster.view();
    if view.writable(partition) {
        return Placement::Here;
    }
    match view.owner_address(partition) {
        Some(address) if request.header(FORWARDED_HEADER).is_none() => {
            Placement::There(address.to_owned())
        }
        _ => Placement::Unavailable,
    }
}

/// Creates a thread here when this node owns any partition, else on a
/// node that owns one.
fn place_new_thread(cluster: &Replication, request: &Request) -> Placement {
    let view = cluster.view();
    let owns_any =
        (0..view.partitions.len() as u32).any(|p| view.writable(crate::cluster::PartitionId(p)));
    if owns_any {
        return Placement::Here;
    }
    let owner = (0..view.partitions.len() as u32)
        .find_map(|p| view.owner_address(crate::cluster::PartitionId(p)));
    match owner {
        Some(address) if request.header(FORWARDED_HEADER).is_none() => {
            Placement::There(address.to_owned())
        }
        _ => Placement::Unavailable,
    }
}

fn is_stream(route: &Route) -> bool {
    matches!(
        route,
        Route::StreamMessages(_) | Route::AdminStreamMessages(_)
    )
}

/// The thread a request concerns, when it concerns one.
fn route_thread(route: &Route, request: &Request) -> Option<String> {
    match route {
        Route::GetThread(id)
        | Route::UpdateThread(id)
        | Route::DeleteThread(id)
        | Route::ListMessages(id)
        | Route::PostMessage(id)
        | Route::GetMessage(id, _)
        | Route::EditMessage(id, _)
        | Route::DeleteMessage(id, _)
        | Route::RestoreThread(id)
        | Route::ListVersions(id, _)
        | Route::ListReplies(id, _)
        | Route::React(id, _)
        | Route::Unreact(id, _)
        | Route::RestoreMessage(id, _)
        | Route::StreamMessages(id)
        | Route::ListParticipants(id)
        | Route::AddParticipant(id)
        | Route::RemoveParticipant(id, _)
        | Route::MarkRead(id)
        | Route::SeedListMessages(id)
        | Route::AdminGetThread(id)
        | Route::AdminListMessages(id)
        | Route::AdminListVersions(id, _)
        | Route::AdminStreamMessages(id)
        | Route::AdminListParticipants(id) => Some(id.clone()),
        // A thread created under a key the caller chose, and the seed
        // route, name the thread in their body.
        Route::CreateThread | Route::SeedPostMessage => {
            #[derive(serde::Deserialize)]
            struct Named {
                thread: Option<String>,
                key: Option<String>,
            }
            let named = serde_json::from_slice::<Named>(&request.body).ok()?;
            match route {
                Route::CreateThread => named.key,
                _ => named.thread,
            }
        }
        _ => None,
    }
}

fn status(cluster: &Rc<Replication>) -> Handled {
    let body = serde_json::to_vec(&*cluster.view()).unwrap_or_default();
    Handled::Response(json(200, body))
}
