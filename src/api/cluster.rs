//! Clustered mode at the API edge: a request about a thread whose
//! partition another node owns goes to that node (one hop, see
//! [`crate::cluster::forward`]; a live tail is relayed for as long as it
//! lasts, see [`crate::cluster::relay`]); `GET /cluster/v1/status` shows
//! this node's view. Listings and counts of many threads are gathered
//! from every node instead (see [`super::fanout`]). Without `--cluster`
//! none of this runs.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::Value;

use super::router::Route;
use super::{Api, ApiError, Handled, json};
use crate::cluster::forward::FORWARDED_HEADER;
use crate::cluster::relay::Relay;
use crate::cluster::shard::Replication;
use crate::http::Request;

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
            return Some(Ok(status(cluster, request).await));
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
            Placement::There(address) if is_stream(route) => Some(Ok(Handled::Relay(Box::new(
                Relay::new(&address, request, cluster.node()),
            )))),
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

    /// Clustered mode: the same request (a user's own stream) to every
    /// other live node, unless it was itself sent by a node.
    pub(super) fn peer_streams(&self, request: &Request) -> Vec<Relay> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        if request.header(FORWARDED_HEADER).is_some() {
            return Vec::new();
        }
        let view = cluster.view();
        view.nodes
            .iter()
            .filter(|(node, _)| **node != view.node)
            .map(|(_, address)| Relay::new(address, request, cluster.node()))
            .collect()
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

/// The answer while a partition has no owner that can serve.
fn unavailable() -> ApiError {
    ApiError::partition_unavailable("no node serves this partition now")
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
        Route::AdminListThreads => super::admin::exact_thread(request),
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

/// This node's view; asked by a client (not forwarded), also every other
/// live node's `applied`, giving each standby's lag behind its owner.
async fn status(cluster: &Rc<Replication>, request: &Request) -> Handled {
    let view = cluster.view();
    let mut body = serde_json::to_value(&*view).unwrap_or_default();
    if request.header(FORWARDED_HEADER).is_none() {
        let mut peers = BTreeMap::new();
        for (node, address) in view.nodes.iter().filter(|(node, _)| **node != view.node) {
            let answer = cluster
                .pool()
                .forward(address, request, cluster.node())
                .await;
            let peer = answer
                .ok()
                .filter(|answer| answer.status == 200)
                .and_then(|answer| serde_json::from_slice::<Value>(&answer.body).ok());
            peers.insert(node.clone(), peer);
        }
        add_lag(&mut body, &peers);
    }
    Handled::Response(json(200, serde_json::to_vec(&body).unwrap_or_default()))
}

/// Adds to each partition of `status` the `lag` of each standby (records
/// its owner applied that it has not), from the views of `peers` (`None`:
/// did not answer, listed under `unreachable`).
fn add_lag(status: &mut Value, peers: &BTreeMap<String, Option<Value>>) {
    let me = status["node"].as_str().unwrap_or_default().to_owned();
    let mine = status.clone();
    let view_of = |node: &str| match node == me {
        true => Some(&mine),
        false => peers.get(node).and_then(Option::as_ref),
    };
    let applied =
        |node: &str, partition: usize| view_of(node)?["partitions"][partition]["applied"].as_u64();
    let Some(partitions) = status["partitions"].as_array_mut() else {
        return;
    };
    for (at, partition) in partitions.iter_mut().enumerate() {
        let owner = partition["owner"].as_str().unwrap_or_default().to_owned();
        let standbys: Vec<String> = partition["standbys"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut lag = serde_json::Map::new();
        if let Some(owned) = applied(&owner, at) {
            for standby in standbys {
                if let Some(behind) = applied(&standby, at) {
                    lag.insert(standby, owned.saturating_sub(behind).into());
                }
            }
        }
        partition["lag"] = Value::Object(lag);
    }
    let unreachable: Vec<&String> = peers
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n)
        .collect();
    status["unreachable"] = serde_json::json!(unreachable);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lag_is_what_the_owner_applied_beyond_each_standby() {
        let partitions = |applied: [u64; 2]| {
            json!([
                {"partition": 0, "owner": "a", "standbys": ["b", "c"], "applied": applied[0]},
                {"partition": 1, "owner": "b", "standbys": ["a"], "applied": applied[1]},
            ])
        };
        let mut status = json!({"node": "a", "partitions": partitions([10, 4])});
        let peers = BTreeMap::from([
            (
                "b".to_owned(),
                Some(json!({"node": "b", "partitions": partitions([7, 9])})),
            ),
            ("c".to_owned(), None),
        ]);
        add_lag(&mut status, &peers);
        assert_eq!(status["partitions"][0]["lag"], json!({"b": 3}));
        assert_eq!(status["partitions"][1]["lag"], json!({"a": 5}));
        assert_eq!(status["unreachable"], json!(["c"]));
    }
}
