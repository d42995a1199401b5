//! Clustered mode: listings gathered from every node. A node's store holds
//! the partitions it owns and those it stands by for, so no node can answer
//! a thread listing alone, and adding up every node's store would count a
//! standby's copies twice. Instead the node that takes the request splits
//! the partitions by owner as its view of the cluster names them (a
//! [`Plan`]): it answers for its own, and asks each other live node, one
//! hop over the forward pool with the client's auth headers, for its part
//! of the listing restricted to the partitions the plan gives it. A node
//! answers such a part only when it still owns every partition named
//! (otherwise 503, as does a partition without a serving owner), so the
//! parts never overlap and never miss one: the listing is complete or the
//! client is told to retry, never silently partial.
//!
//! The parts are merged as the shards' parts are ([`merge`]): each holds at
//! most one page past the position, in its order, and says whether more
//! follow. A cursor (a thread key) is placed by the node that owns the
//! thread's partition ([`Part::Cursor`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ApiError;
use super::render::ListedThread;
use crate::cluster::forward::FORWARDED_HEADER;
use crate::cluster::runtime::View;
use crate::cluster::shard::Replication;
use crate::cluster::{PartitionId, PartitionSet};
use crate::engine::{Order, ThreadEntry, ThreadPosition};
use crate::http::{Request, Response};
use crate::model::ThreadId;

/// Names the part of a listing a node asks another for ([`Part`]).
const PART_HEADER: &str = "x-progressdb-part";
/// The partitions that part covers ([`PartitionSet::encode`]).
const PARTITIONS_HEADER: &str = "x-progressdb-partitions";
/// Longest wait for one node's part.
const PART_TIMEOUT: Duration = Duration::from_secs(5);

/// Threads of one side of a position (or a whole id-ordered page), in
/// scan order: at most a page, whether more follow it, whether a listed
/// thread lies behind the position, and the whole listing's count.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Side<E> {
    pub entries: Vec<E>,
    pub more: bool,
    pub behind: bool,
    pub total: u64,
}

/// Merges parts of one side in `order` (by `compare`, ascending when
/// oldest first): the first `limit` entries of them all, more when any
/// part had more or they hold more than `limit`, totals summed.
pub(super) fn merge<E>(
    parts: Vec<Side<E>>,
    order: Order,
    limit: usize,
    compare: impl Fn(&E, &E) -> Ordering,
) -> Side<E> {
    let mut merged = Side {
        entries: Vec::new(),
        more: false,
        behind: false,
        total: 0,
    };
    for part in parts {
        merged.entries.extend(part.entries);
        merged.more |= part.more;
        merged.behind |= part.behind;
        merged.total += part.total;
    }
    merged.entries.sort_by(&compare);
    if order == Order::NewestFirst {
        merged.entries.reverse();
    }
    merged.more |= merged.entries.len() > limit;
    merged.entries.truncate(limit);
    merged
}

/// A thread of another node's part: its place in the listing and its
/// JSON as that node rendered it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RenderedThread {
    pub position: ThreadPosition,
    pub thread: Box<RawValue>,
}

impl RenderedThread {
    pub fn of(entry: ThreadEntry) -> RenderedThread {
        let mut json = Vec::new();
        entry.write(&mut json);
        let json = String::from_utf8(json).expect("rendered JSON is UTF-8");
        RenderedThread {
            position: entry.position,
            thread: RawValue::from_string(json).expect("a rendered thread is JSON"),
        }
    }
}

impl ListedThread for RenderedThread {
    fn key(&self) -> &str {
        &self.position.thread_id
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.thread.get().as_bytes());
    }
}

impl Side<ThreadEntry> {
    pub fn rendered(self) -> Side<RenderedThread> {
        Side {
            entries: self.entries.into_iter().map(RenderedThread::of).collect(),
            more: self.more,
            behind: self.behind,
            total: self.total,
        }
    }
}

/// Where a cursor lies, as the owner of its thread says: its position and
/// the thread when the listing shows it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CursorPart {
    pub position: ThreadPosition,
    pub thread: Option<RenderedThread>,
}

/// What one node is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// The place of the thread a cursor names (its owner answers).
    Cursor(ThreadId),
    /// One side of a user's listing past `after` in `order`.
    Side {
        after: Option<ThreadPosition>,
        order: Order,
    },
    /// The listing (or counts) the request itself names.
    Whole,
}

impl Part {
    fn encode(&self) -> String {
        match self {
            Part::Cursor(key) => format!("cursor {key}"),
            Part::Side { after, order } => {
                let order = match order {
                    Order::NewestFirst => "newest",
                    Order::OldestFirst => "oldest",
                };
                match after {
                    None => format!("side {order}"),
                    Some(at) => format!("side {order} {} {}", at.sort_ts, at.thread_id),
                }
            }
            Part::Whole => "whole".to_owned(),
        }
    }

    fn decode(text: &str) -> Option<Part> {
        let words: Vec<&str> = text.split(' ').collect();
        let order = |word: &str| match word {
            "newest" => Some(Order::NewestFirst),
            "oldest" => Some(Order::OldestFirst),
            _ => None,
        };
        match words.as_slice() {
            ["whole"] => Some(Part::Whole),
            ["cursor", key] => ThreadId::parse(key).map(Part::Cursor),
            ["side", way] => Some(Part::Side {
                after: None,
                order: order(way)?,
            }),
            ["side", way, ts, id] => Some(Part::Side {
                after: Some(ThreadPosition {
                    sort_ts: ts.parse().ok()?,
                    thread_id: ThreadId::parse(id)?.to_string(),
                }),
                order: order(way)?,
            }),
            _ => None,
        }
    }
}

/// Which node answers for which partitions, by this node's view.
#[derive(Debug)]
pub(super) struct Plan {
    pub mine: Arc<PartitionSet>,
    pub peers: Vec<Peer>,
}

/// Another node and the partitions it answers for.
#[derive(Debug)]
pub(super) struct Peer {
    pub node: String,
    pub address: String,
    pub partitions: PartitionSet,
}

impl Plan {
    /// Every partition to the node that owns it: this one when it may
    /// serve it, else its owner when that is another live node whose
    /// address is known; 503 when a partition has neither.
    pub fn of(view: &View, count: u32) -> Result<Plan, ApiError> {
        if view.partitions.len() != count as usize {
            return Err(unavailable(
                "this node does not know the partitions' owners yet",
            ));
        }
        let mut mine = Vec::new();
        let mut theirs: BTreeMap<&str, (&str, Vec<PartitionId>)> = BTreeMap::new();
        for (at, partition) in view.partitions.iter().enumerate() {
            let id = PartitionId(at as u32);
            if view.writable(id) {
                mine.push(id);
                continue;
            }
            let owner = partition
                .owner
                .as_deref()
                .filter(|owner| *owner != view.node);
            match owner.and_then(|owner| Some((owner, view.nodes.get(owner)?))) {
                Some((owner, address)) => theirs
                    .entry(owner)
                    .or_insert((address, Vec::new()))
                    .1
                    .push(id),
                None => return Err(unavailable("a partition has no owner that can serve")),
            }
        }
        let peers = theirs
            .into_iter()
            .map(|(node, (address, partitions))| Peer {
                node: node.to_owned(),
                address: address.to_owned(),
                partitions: PartitionSet::new(count, partitions),
            })
            .collect();
        Ok(Plan {
            mine: Arc::new(PartitionSet::new(count, mine)),
            peers,
        })
    }

    /// The node that answers for `thread`: `None` for this one.
    pub fn owner_of(&self, thread: &str) -> Option<&Peer> {
        (!self.mine.holds_thread(thread))
            .then(|| {
                self.peers
                    .iter()
                    .find(|peer| peer.partitions.holds_thread(thread))
            })
            .flatten()
    }
}

fn unavailable(why: &str) -> ApiError {
    ApiError::partition_unavailable(why)
}

/// The part of a listing another node asks this one for, with the
/// partitions it covers; `None` for a client's request. 503 unless this
/// node may still serve every partition named.
pub(super) fn asked_part(
    cluster: &Replication,
    request: &Request,
) -> Result<Option<(Part, Arc<PartitionSet>)>, ApiError> {
    let (Some(part), Some(_)) = (
        request.header(PART_HEADER),
        request.header(FORWARDED_HEADER),
    ) else {
        return Ok(None);
    };
    let part = Part::decode(part).ok_or_else(wrong_part)?;
    let partitions = request
        .header(PARTITIONS_HEADER)
        .and_then(|text| PartitionSet::decode(text, cluster.partitions()))
        .ok_or_else(wrong_part)?;
    let view = cluster.view();
    if !partitions
        .members()
        .all(|partition| view.writable(partition))
    {
        return Err(unavailable("a partition asked of this node moved"));
    }
    Ok(Some((part, Arc::new(partitions))))
}

/// Asks `peer` for `part` of the listing `request` names: its answer, or
/// the error the client gets (an invalid cursor as the owner said; 503
/// when the peer did not answer in time or could not serve).
pub(super) async fn ask<T: serde::de::DeserializeOwned>(
    cluster: &Replication,
    peer: &Peer,
    request: &Request,
    part: &Part,
) -> Result<T, ApiError> {
    let mut asked = request.clone();
    asked
        .headers
        .retain(|name, _| name != PART_HEADER && name != PARTITIONS_HEADER);
    asked.headers.push(PART_HEADER, part.encode().as_bytes());
    let partitions = peer.partitions.encode().into_bytes();
    asked.headers.push(PARTITIONS_HEADER, &partitions);
    let forwarded = futures_lite::future::or(
        async {
            Some(
                cluster
                    .pool()
                    .forward(&peer.address, &asked, cluster.node())
                    .await,
            )
        },
        async {
            glommio::timer::sleep(PART_TIMEOUT).await;
            None
        },
    )
    .await;
    let failed = |why: &str| {
        crate::logging::warn(
            "a node did not give its part of a listing",
            &[("node", &peer.node), ("error", &why)],
        );
        unavailable("a node that owns partitions did not answer")
    };
    let answer = match forwarded {
        None => return Err(failed("timed out")),
        Some(Err(why)) => return Err(failed(&why)),
        Some(Ok(answer)) => answer,
    };
    match answer.status {
        200 => serde_json::from_slice(&answer.body).map_err(|_| failed("unreadable part")),
        400 if is_invalid_cursor(&answer.body) => Err(ApiError::bad_request(
            "invalid_cursor",
            "the cursor is not the key of a thread in this listing",
        )),
        status => Err(failed(&format!("answered {status}"))),
    }
}

/// This node's part (`local`, given the partitions it answers for) and
/// every other node's `part`, in the plan's order; all asked at once.
pub(super) async fn parts<T, F>(
    cluster: &Replication,
    plan: &Plan,
    request: &Request,
    part: &Part,
    local: impl FnOnce(Arc<PartitionSet>) -> F,
) -> Result<Vec<T>, ApiError>
where
    T: serde::de::DeserializeOwned,
    F: Future<Output = Result<T, ApiError>>,
{
    let peers = (plan.peers.iter())
        .map(|peer| Box::pin(ask(cluster, peer, request, part)))
        .collect();
    let (mine, theirs) = futures_lite::future::zip(local(plan.mine.clone()), join_all(peers)).await;
    let mut parts = Vec::with_capacity(theirs.len() + 1);
    parts.push(mine?);
    for part in theirs {
        parts.push(part?);
    }
    Ok(parts)
}

/// Drives every one of `futures` at once; their outputs in order.
async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match std::pin::Pin::new(future).poll(context) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        match done {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    })
    .await;
    let finished = outputs
        .into_iter()
        .map(|output| output.expect("every future finished"));
    finished.collect()
}

/// The answer to a part another node asked for.
pub(super) fn answer_part<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|_| ApiError::internal())?;
    Ok(super::json(200, body))
}

pub(super) fn wrong_part() -> ApiError {
    ApiError::bad_request("invalid_part", "not a part of this listing")
}

fn is_invalid_cursor(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
    }
    serde_json::from_slice::<Refusal>(body).is_ok_and(|refusal| refusal.error == "invalid_cursor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::runtime::PartitionView;

    fn side(entries: &[(u64, &str)], more: bool, total: u64) -> Side<ThreadPosition> {
        Side {
            entries: entries
                .iter()
                .map(|(ts, id)| ThreadPosition {
                    sort_ts: *ts,
                    thread_id: (*id).to_owned(),
                })
                .collect(),
            more,
            behind: false,
            total,
        }
    }

    fn ids(side: &Side<ThreadPosition>) -> Vec<&str> {
        side.entries.iter().map(|p| p.thread_id.as_str()).collect()
    }

    // Parts come from different nodes, each at most a page in its order;
    // the merge keeps the listing's order (equal times by key) and says
    // whether more follow the page.
    #[test]
    fn parts_merge_in_order_with_limit_more_and_totals() {
        let a = side(&[(9, "a9"), (5, "a5")], false, 2);
        let b = side(&[(9, "b9"), (7, "b7"), (1, "b1")], false, 3);
        let merged = merge(vec![a, b], Order::NewestFirst, 3, Ord::cmp);
        assert_eq!(ids(&merged), vec!["b9", "a9", "b7"]);
        assert_eq!((merged.more, merged.total), (true, 5));
        let a = side(&[(2, "a2")], false, 1);
        let b = side(&[(3, "b3"), (4, "b4")], true, 7);
        let merged = merge(vec![a, b], Order::OldestFirst, 5, Ord::cmp);
        assert_eq!(ids(&merged), vec!["a2", "b3", "b4"]);
        assert_eq!((merged.more, merged.total), (true, 8));
        let exact = merge(
            vec![side(&[(1, "x")], false, 1)],
            Order::NewestFirst,
            1,
            Ord::cmp,
        );
        assert!(!exact.more);
    }

    #[test]
    fn joined_futures_all_finish_and_keep_their_order() {
        let later = |value: u32, polls: u32| {
            let mut left = polls;
            Box::pin(std::future::poll_fn(move |context| match left {
                0 => std::task::Poll::Ready(value),
                _ => {
                    left -= 1;
                    context.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            }))
        };
        let joined =
            futures_lite::future::block_on(join_all(vec![later(1, 3), later(2, 0), later(3, 1)]));
        assert_eq!(joined, vec![1, 2, 3]);
    }

    #[test]
    fn parts_name_their_side_and_refuse_anything_else() {
        let parts = [
            Part::Whole,
            Part::Cursor(ThreadId::parse("k-1").unwrap()),
            Part::Side {
                after: None,
                order: Order::OldestFirst,
            },
            Part::Side {
                after: Some(ThreadPosition {
                    sort_ts: 17,
                    thread_id: "t_2".into(),
                }),
                order: Order::NewestFirst,
            },
        ];
        for part in parts {
            assert_eq!(Part::decode(&part.encode()), Some(part));
        }
        for bad in [
            "",
            "side",
            "side up",
            "side newest x t",
            "cursor a b",
            "cursor a/b",
        ] {
            assert_eq!(Part::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_plan_gives_each_partition_to_its_serving_owner_or_refuses() {
        let owned = PartitionView::owned_by;
        let mut view = View {
            node: "a".into(),
            lease_held: true,
            controller: false,
            nodes: [("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")]
                .map(|(n, at)| (n.to_owned(), at.to_owned()))
                .into(),
            partitions: vec![
                owned("a", "owner"),
                owned("b", "standby"),
                owned("b", "none"),
            ],
        };
        let plan = Plan::of(&view, 3).unwrap();
        assert_eq!(
            plan.mine.members().collect::<Vec<_>>(),
            vec![PartitionId(0)]
        );
        assert_eq!(plan.peers.len(), 1);
        assert_eq!(plan.peers[0].address, "127.0.0.1:2");
        let theirs: Vec<_> = plan.peers[0].partitions.members().collect();
        assert_eq!(theirs, vec![PartitionId(1), PartitionId(2)]);
        // Not known yet, a partition this node owns but may not serve, an
        // owner that is not live: no plan.
        assert!(Plan::of(&view, 4).is_err());
        view.partitions[0].role = "candidate";
        assert!(Plan::of(&view, 3).is_err());
        view.partitions[0] = owned("c", "none");
        assert!(Plan::of(&view, 3).is_err());
    }
}
