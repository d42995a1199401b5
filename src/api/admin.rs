//! The admin read routes under `/admin/v1/threads` that the `/viewer/` UI
//! uses. An admin is a caller without a user (`Caller { user: None }`), so
//! it may see every thread; these routes reuse the engine's commands and
//! show deleted items (flagged `"deleted": true`) unless
//! `include_deleted=false` asks otherwise.

use super::fanout::{self, Part, Plan, RenderedThread, Side};
use super::input::{self, Query};
use super::{Api, ApiError, Handled, LiveTail, json, render, thread_id};
use crate::engine::{
    AllThreadsPage, Caller, Command, EngineError, Order, Reply, ThreadEntry, ThreadPart,
    ThreadPosition, UserThread,
};
use crate::http::{Request, Response, query_pairs};
use crate::model::{ThreadId, UserId};
use crate::shard::shard_for;

/// Sees every thread, and deleted threads' contents.
const ADMIN: Caller = Caller { user: None };

/// The admin-only query parameters; the paging ones are read by [`Query`].
#[derive(Default)]
struct Search {
    author: Option<UserId>,
    id: Option<ThreadId>,
    id_prefix: Option<ThreadId>,
    include_deleted: bool,
    sort_by: Option<String>,
}

impl Search {
    fn parse(raw: &str) -> Result<Search, ApiError> {
        let pairs = query_pairs(raw).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "query string has a malformed escape")
        })?;
        let mut search = Search {
            include_deleted: true,
            ..Search::default()
        };
        for (key, value) in pairs {
            // An empty value is an empty search box: no filter.
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "author" => {
                    search.author = Some(UserId::parse(&value).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_field",
                            "`author` must be 1 to 128 printable ASCII characters",
                        )
                    })?);
                }
                "id" => search.id = Some(thread_id(&value)?),
                "id_prefix" => search.id_prefix = Some(thread_id(&value)?),
                "include_deleted" => {
                    search.include_deleted = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(ApiError::bad_request(
                                "invalid_query",
                                "`include_deleted` must be true or false",
                            ));
                        }
                    }
                }
                "sort_by" => search.sort_by = Some(value),
                _ => {}
            }
        }
        let filters = [
            search.author.is_some(),
            search.id.is_some(),
            search.id_prefix.is_some(),
        ];
        if filters.into_iter().filter(|given| *given).count() > 1 {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give at most one of `author`, `id` and `id_prefix`",
            ));
        }
        Ok(search)
    }

    /// The one thread `?id=` names (not with `author`, which lists).
    fn exact_thread(raw: &str) -> Option<String> {
        Search::parse(raw).ok()?.id.map(|id| id.to_string())
    }

    /// Listing in thread id order: `id_asc` (default) or `id_desc`.
    fn id_order(&self) -> Result<Order, ApiError> {
        match self.sort_by.as_deref() {
            None | Some("id_asc") | Some("asc") => Ok(Order::OldestFirst),
            Some("id_desc") | Some("desc") => Ok(Order::NewestFirst),
            Some(_) => Err(ApiError::bad_request(
                "invalid_sort_by",
                "without `author`, `sort_by` must be id_asc (default) or id_desc",
            )),
        }
    }
}

/// Clustered mode: the thread an admin listing of `?id=` names, which its
/// owner answers.
pub(super) fn exact_thread(request: &Request) -> Option<String> {
    Search::exact_thread(&request.query)
}

/// The live tail of any thread, for an admin.
fn admin_stream(id: &str, request: &Request, query: &Query) -> Result<Handled, ApiError> {
    Ok(Handled::Stream(LiveTail {
        thread: Some(thread_id(id)?),
        caller: ADMIN,
        last_event_id: input::last_event_id(request, query)?,
        peers: Vec::new(),
    }))
}

impl Api {
    /// Answers an admin read route, or `None` when `route` is not one.
    pub(super) async fn admin_read(
        &self,
        route: &super::router::Route,
        request: &Request,
        query: &Query,
    ) -> Option<Result<Handled, ApiError>> {
        use super::router::Route;
        let handled = match route {
            Route::AdminListThreads => self.admin_list_threads(request, query).await,
            Route::AdminGetThread(id) => self.admin_get_thread(id, request).await,
            Route::AdminListMessages(id) => self.admin_list_messages(id, request, query).await,
            Route::AdminListVersions(id, mid) => {
                self.admin_list_versions(id, mid, request, query).await
            }
            Route::AdminStreamMessages(id) => admin_stream(id, request, query),
            Route::AdminListParticipants(id) => self.admin_list_participants(id, query).await,
            _ => return None,
        };
        Some(handled)
    }

    async fn admin_get_thread(&self, id: &str, request: &Request) -> Result<Handled, ApiError> {
        let search = Search::parse(&request.query)?;
        let command = Command::GetThread {
            id: thread_id(id)?,
            caller: ADMIN,
            include_deleted: search.include_deleted,
        };
        self.answer(command, Some("thread")).await
    }

    async fn admin_list_messages(
        &self,
        id: &str,
        request: &Request,
        query: &Query,
    ) -> Result<Handled, ApiError> {
        let search = Search::parse(&request.query)?;
        let mut page = query.message_page(&self.limits)?;
        page.include_deleted = search.include_deleted;
        let command = Command::ListMessages {
            thread: thread_id(id)?,
            caller: ADMIN,
            page,
            in_pieces: true,
            rendering: Some(render::message_list),
        };
        self.answer(command, None).await
    }

    async fn admin_list_versions(
        &self,
        id: &str,
        mid: &str,
        request: &Request,
        query: &Query,
    ) -> Result<Handled, ApiError> {
        let search = Search::parse(&request.query)?;
        let mut page = query.version_page(&self.limits)?;
        page.include_deleted = search.include_deleted;
        let command = Command::ListVersions {
            thread: thread_id(id)?,
            caller: ADMIN,
            id: mid.to_owned(),
            page,
        };
        self.answer(command, None).await
    }

    /// A thread's owner and participants (group chat), deleted thread or not.
    async fn admin_list_participants(&self, id: &str, query: &Query) -> Result<Handled, ApiError> {
        let command = Command::ListParticipants {
            thread: thread_id(id)?,
            caller: ADMIN,
            page: query.participant_page(&self.limits)?,
        };
        self.answer(command, None).await
    }

    /// Every thread, or one author's (the frontend listing, merged the same
    /// way), or those whose id is or starts with the one given.
    async fn admin_list_threads(
        &self,
        request: &Request,
        query: &Query,
    ) -> Result<Handled, ApiError> {
        let search = Search::parse(&request.query)?;
        if let Some(author) = search.author {
            let mut page = query.thread_page(&self.limits)?;
            page.include_deleted = search.include_deleted;
            return self
                .author_threads(author, page, request)
                .await
                .map(Handled::Response);
        }
        if let Some(id) = search.id {
            return self
                .admin_exact_thread(id, search.include_deleted)
                .await
                .map(Handled::Response);
        }
        let order = search.id_order()?;
        let after = query
            .forward_cursor()?
            .map(|text| {
                ThreadId::parse(text).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "`after` is not a cursor from this listing",
                    )
                })
            })
            .transpose()?;
        let page = AllThreadsPage {
            id_prefix: search
                .id_prefix
                .map(|prefix| prefix.to_string())
                .unwrap_or_default(),
            after: after.map(|id| id.to_string()),
            order,
            limit: query.page_limit(&self.limits)?,
            include_deleted: search.include_deleted,
            partitions: None,
        };
        // This listing pages forward only; a cursor means it has gone past
        // something.
        let went_past = page.after.is_some();
        let Some(cluster) = &self.cluster else {
            let side = self.all_threads(page).await?;
            let body = render::thread_list(&side.entries, (went_past, side.more), side.total);
            return Ok(Handled::Response(json(200, body)));
        };
        if let Some((part, partitions)) = fanout::asked_part(cluster, request)? {
            if part != Part::Whole {
                return Err(fanout::wrong_part());
            }
            let side = self.all_threads(page.of(partitions)).await?;
            return fanout::answer_part(&side.rendered()).map(Handled::Response);
        }
        let plan = Plan::of(&cluster.view(), cluster.partitions())?;
        let (order, limit) = (page.order, page.limit);
        let parts = fanout::parts(cluster, &plan, request, &Part::Whole, |mine| async {
            Ok(self.all_threads(page.of(mine)).await?.rendered())
        });
        let side = fanout::merge(parts.await?, order, limit, |a: &RenderedThread, b| {
            a.position.thread_id.cmp(&b.position.thread_id)
        });
        let body = render::thread_list(&side.entries, (went_past, side.more), side.total);
        Ok(Handled::Response(json(200, body)))
    }

    /// A page of every thread in id order, from every shard.
    async fn all_threads(&self, page: AllThreadsPage) -> Result<Side<ThreadEntry>, ApiError> {
        let ThreadPart { entries, total, .. } = self
            .threads_of_every_shard(|| Command::ListAllThreads(page.clone()))
            .await?;
        let part = Side {
            entries,
            more: false,
            behind: false,
            total,
        };
        Ok(fanout::merge(vec![part], page.order, page.limit, |a, b| {
            a.position.thread_id.cmp(&b.position.thread_id)
        }))
    }

    /// `?id=`: a listing of that one thread, or an empty one.
    async fn admin_exact_thread(
        &self,
        id: ThreadId,
        include_deleted: bool,
    ) -> Result<Response, ApiError> {
        let owner = shard_for(id.as_str(), self.mesh.shard_count());
        let command = Command::GetThread {
            id,
            caller: ADMIN,
            include_deleted,
        };
        let found = match self.mesh.call(owner, command).await {
            Ok(Reply::Thread { thread, .. }) => Some(ThreadEntry {
                position: ThreadPosition {
                    sort_ts: thread.created_ts,
                    thread_id: thread.id.clone(),
                },
                thread: UserThread {
                    thread,
                    membership: None,
                },
            }),
            Err(EngineError::ThreadNotFound) => None,
            Ok(_) => return Err(EngineError::Storage("unexpected reply".into()).into()),
            Err(err) => return Err(err.into()),
        };
        let found = Vec::from_iter(found);
        let total = found.len() as u64;
        Ok(json(
            200,
            render::thread_list(&found, (false, false), total),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_validates_and_defaults_to_showing_deleted() {
        let search = Search::parse("").unwrap();
        assert!(search.include_deleted);
        assert!(search.author.is_none() && search.id.is_none() && search.id_prefix.is_none());
        let search = Search::parse("id_prefix=ab&include_deleted=false&author=").unwrap();
        assert_eq!(
            search.id_prefix.map(|id| id.to_string()).as_deref(),
            Some("ab")
        );
        assert!(!search.include_deleted);
        assert!(search.author.is_none());
        assert_eq!(
            Search::parse("author=bob%20smith").err().map(|e| e.code),
            Some("invalid_field")
        );
        assert_eq!(
            Search::parse("id=a%2Fb").err().map(|e| e.code),
            Some("invalid_thread_id")
        );
        assert_eq!(
            Search::parse("id=a&author=b").err().map(|e| e.code),
            Some("invalid_query")
        );
        assert_eq!(
            Search::parse("include_deleted=maybe").err().map(|e| e.code),
            Some("invalid_query")
        );
        assert_eq!(
            Search::parse("sort_by=ts_desc")
                .unwrap()
                .id_order()
                .err()
                .map(|e| e.code),
            Some("invalid_sort_by")
        );
        assert_eq!(
            Search::parse("sort_by=id_desc").unwrap().id_order().ok(),
            Some(Order::NewestFirst)
        );
    }
}
