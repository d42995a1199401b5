//! Method + path -> [`Route`]. Path segments are percent-decoded here, once;
//! handlers receive plain strings and validate them as ids.

use super::{Method, url::percent_decode};
use crate::auth::Scope;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    ListThreads,
    CreateThread,
    GetThread(String),
    UpdateThread(String),
    DeleteThread(String),
    ListMessages(String),
    PostMessage(String),
    GetMessage(String, String),
    EditMessage(String, String),
    DeleteMessage(String, String),
    RestoreThread(String),
    ListVersions(String, String),
    ListReplies(String, String),
    React(String, String),
    Unreact(String, String),
    RestoreMessage(String, String),
    /// `GET .../messages/stream`: Server-Sent Events of a thread's changes.
    StreamMessages(String),
    /// `GET /frontend/v1/stream`: SSE of every thread of the caller.
    StreamUser,
    /// `GET .../participants`: a thread's owner and participants.
    ListParticipants(String),
    /// `POST .../participants {"user_id","role"?}`.
    AddParticipant(String),
    /// `DELETE .../participants/{user_id}`: remove, or leave.
    RemoveParticipant(String, String),
    /// `PUT .../read {"message"}`: the caller's read marker.
    MarkRead(String),
    /// `POST /v1/messages`: append, creating the thread if needed.
    SeedPostMessage,
    /// `GET /v1/threads/{id}/messages`.
    SeedListMessages(String),
    /// `GET /admin/v1/stats`: per-shard counters.
    Stats,
    /// `GET /admin/health`: upstream ProgressDB's admin health check.
    AdminHealth,
    /// `GET /admin/stats`: upstream's `{"threads","messages"}` totals.
    AdminTotals,
    /// `GET /metrics`: Prometheus metrics of every shard.
    Metrics,
    /// `POST /backend/v1/sign`: a user's signature for frontend keys.
    Sign,
    /// `POST /admin/v1/kms/rotate`: a new master key for new thread keys.
    RotateMasterKey,
    /// `POST /admin/v1/backups`: starts an online backup.
    StartBackup,
    /// `GET /admin/v1/backups/{id}`: a backup's state and progress.
    GetBackup(String),
    /// `GET /openapi.json`: the OpenAPI document of every route here.
    OpenApi,
    /// `GET /docs/`: the HTML page that renders `/openapi.json`.
    Docs,
    /// `GET /admin/v1/threads`: every thread, searchable by id or author.
    AdminListThreads,
    /// `GET /admin/v1/threads/{id}`, deleted or not.
    AdminGetThread(String),
    /// `GET /admin/v1/threads/{id}/messages`, deleted ones included.
    AdminListMessages(String),
    /// `GET /admin/v1/threads/{id}/messages/{mid}/versions`.
    AdminListVersions(String, String),
    /// `GET /admin/v1/threads/{id}/messages/stream`: the live tail.
    AdminStreamMessages(String),
    /// `GET /admin/v1/threads/{id}/participants`, deleted thread or not.
    AdminListParticipants(String),
    /// `GET /viewer/...`: a static file of the admin web UI (public; its
    /// data calls need the admin key).
    Viewer(&'static crate::api::viewer::Asset),
    /// `OPTIONS` on a known path: answered with its `Allow` list.
    Options(&'static str),
    /// `GET /cluster/v1/status`: clustered mode's nodes and partitions.
    ClusterStatus,
}

impl Route {
    /// Which key kinds may call this route; `None` for unauthenticated ones.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::OpenApi
            | Route::Docs
            | Route::Options(_)
            | Route::Viewer(_) => None,
            Route::Stats
            | Route::AdminHealth
            | Route::AdminTotals
            | Route::Metrics
            | Route::RotateMasterKey
            | Route::StartBackup
            | Route::GetBackup(_)
            | Route::AdminListThreads
            | Route::AdminGetThread(_)
            | Route::AdminListMessages(_)
            | Route::AdminListVersions(..)
            | Route::AdminStreamMessages(_)
            | Route::AdminListParticipants(_)
            | Route::ClusterStatus => Some(Scope::Admin),
            Route::Sign | Route::SeedPostMessage | Route::SeedListMessages(_) => {
                Some(Scope::Backend)
            }
            _ => Some(Scope::Frontend),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The path exists but not with this method; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A path segment has a bad percent escape or is not UTF-8.
    BadPath,
}

/// The resources the API serves, before the method is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Health,
    Ready,
    OpenApi,
    Docs,
    Threads,
    Thread,
    Messages,
    Message,
    ThreadRestore,
    Versions,
    Replies,
    Reactions,
    MessageRestore,
    Stream,
    Participants,
    Participant,
    ReadMarker,
    UserStream,
    SeedMessages,
    SeedThreadMessages,
    Stats,
    AdminHealth,
    AdminTotals,
    Metrics,
    Sign,
    Rotate,
    AdminThreads,
    AdminThread,
    AdminMessages,
    AdminStream,
    AdminVersions,
    AdminParticipants,
    ViewerPage,
    ViewerAsset,
    Backups,
    Backup,
    ClusterStatus,
}

impl Resource {
    /// The `Allow` value, and with it the methods this resource serves:
    /// [`served_routes`] reads them from here, so the two cannot disagree.
    fn allow(self) -> &'static str {
        match self {
            Resource::Health
            | Resource::Ready
            | Resource::OpenApi
            | Resource::Docs
            | Resource::SeedThreadMessages
            | Resource::Stats
            | Resource::AdminHealth
            | Resource::AdminTotals
            | Resource::Metrics
            | Resource::AdminThreads
            | Resource::AdminThread
            | Resource::AdminMessages
            | Resource::AdminStream
            | Resource::AdminVersions
            | Resource::AdminParticipants
            | Resource::ViewerPage
            | Resource::ViewerAsset
            | Resource::Backup
            | Resource::ClusterStatus => "GET, HEAD, OPTIONS",
            Resource::Threads | Resource::Messages | Resource::Participants => {
                "GET, HEAD, POST, OPTIONS"
            }
            Resource::Participant => "DELETE, OPTIONS",
            Resource::ReadMarker => "PUT, OPTIONS",
            Resource::Thread | Resource::Message => "GET, HEAD, PUT, DELETE, OPTIONS",
            Resource::SeedMessages
            | Resource::ThreadRestore
            | Resource::MessageRestore
            | Resource::Sign
            | Resource::Rotate
            | Resource::Backups => "POST, OPTIONS",
            Resource::Versions | Resource::Replies | Resource::Stream | Resource::UserStream => {
                "GET, HEAD, OPTIONS"
            }
            Resource::Reactions => "POST, DELETE, OPTIONS",
        }
    }
}

/// Every path the router serves, in match order: the first template whose
/// literal segments all match wins, and `{name}` segments capture one
/// decoded segment each, left to right. The matcher reads only this table,
/// so listing it (see [`served_routes`]) is listing the API; the OpenAPI
/// document is checked against it by a unit test.
const PATHS: &[(&str, Resource)] = &[
    ("/healthz", Resource::Health),
    ("/readyz", Resource::Ready),
    ("/openapi.json", Resource::OpenApi),
    ("/docs/", Resource::Docs),
    ("/frontend/v1/threads", Resource::Threads),
    ("/frontend/v1/stream", Resource::UserStream),
    ("/frontend/v1/threads/{id}", Resource::Thread),
    ("/frontend/v1/threads/{id}/restore", Resource::ThreadRestore),
    ("/frontend/v1/threads/{id}/messages", Resource::Messages),
    // Before the `{mid}` template: `stream` is not a message id.
    (
        "/frontend/v1/threads/{id}/messages/stream",
        Resource::Stream,
    ),
    (
        "/frontend/v1/threads/{id}/messages/{mid}",
        Resource::Message,
    ),
    (
        "/frontend/v1/threads/{id}/messages/{mid}/versions",
        Resource::Versions,
    ),
    (
        "/frontend/v1/threads/{id}/messages/{mid}/replies",
        Resource::Replies,
    ),
    (
        "/frontend/v1/threads/{id}/messages/{mid}/reactions",
        Resource::Reactions,
    ),
    (
        "/frontend/v1/threads/{id}/messages/{mid}/restore",
        Resource::MessageRestore,
    ),
    (
        "/frontend/v1/threads/{id}/participants",
        Resource::Participants,
    ),
    (
        "/frontend/v1/threads/{id}/participants/{user_id}",
        Resource::Participant,
    ),
    ("/frontend/v1/threads/{id}/read", Resource::ReadMarker),
    ("/v1/messages", Resource::SeedMessages),
    ("/v1/threads/{id}/messages", Resource::SeedThreadMessages),
    ("/admin/v1/stats", Resource::Stats),
    // Upstream ProgressDB's admin routes.
    ("/admin/health", Resource::AdminHealth),
    ("/admin/stats", Resource::AdminTotals),
    ("/admin/v1/kms/rotate", Resource::Rotate),
    ("/admin/v1/backups", Resource::Backups),
    ("/admin/v1/backups/{id}", Resource::Backup),
    ("/metrics", Resource::Metrics),
    ("/cluster/v1/status", Resource::ClusterStatus),
    ("/admin/v1/threads", Resource::AdminThreads),
    ("/admin/v1/threads/{id}", Resource::AdminThread),
    ("/admin/v1/threads/{id}/messages", Resource::AdminMessages),
    // Before the `{mid}` template: `stream` is not a message id.
    (
        "/admin/v1/threads/{id}/messages/stream",
        Resource::AdminStream,
    ),
    (
        "/admin/v1/threads/{id}/messages/{mid}/versions",
        Resource::AdminVersions,
    ),
    (
        "/admin/v1/threads/{id}/participants",
        Resource::AdminParticipants,
    ),
    // `/viewer` and `/viewer/` both serve the page; its assets are named
    // with absolute paths.
    ("/viewer/", Resource::ViewerPage),
    ("/viewer/{file}", Resource::ViewerAsset),
    ("/backend/v1/sign", Resource::Sign),
    // Paths older ProgressDB clients call.
    ("/v1/_sign", Resource::Sign),
    ("/v1/sign", Resource::Sign),
];

/// Every (method, path template) the router serves, `HEAD` and `OPTIONS`
/// aside (every `GET` also answers `HEAD`, every path `OPTIONS`).
pub fn served_routes() -> Vec<(Method, &'static str)> {
    let mut routes = Vec::new();
    for &(template, resource) in PATHS {
        for name in resource.allow().split(", ") {
            let method = match name {
                "GET" => Method::Get,
                "POST" => Method::Post,
                "PUT" => Method::Put,
                "DELETE" => Method::Delete,
                _ => continue,
            };
            routes.push((method, template));
        }
    }
    routes
}

/// Longest path we try to route; anything longer is not ours.
const PATH_SEGMENTS_MAX: usize = 8;

pub fn route(method: Method, raw_path: &str) -> Result<Route, RouteError> {
    let (resource, params) = resource(raw_path)?;
    let allow = resource.allow();
    // HEAD is served as GET without a body.
    let method = if method == Method::Head {
        Method::Get
    } else {
        method
    };
    // The table guarantees as many captures as the template has `{...}`.
    let mut params = params.into_iter();
    let mut param = move || params.next().unwrap_or_default();
    let route = match (resource, method) {
        (_, Method::Options) => Route::Options(allow),
        (Resource::Health, Method::Get) => Route::Healthz,
        (Resource::Ready, Method::Get) => Route::Readyz,
        (Resource::OpenApi, Method::Get) => Route::OpenApi,
        (Resource::Docs, Method::Get) => Route::Docs,
        (Resource::Threads, Method::Get) => Route::ListThreads,
        (Resource::Threads, Method::Post) => Route::CreateThread,
        (Resource::Thread, Method::Get) => Route::GetThread(param()),
        (Resource::Thread, Method::Put) => Route::UpdateThread(param()),
        (Resource::Thread, Method::Delete) => Route::DeleteThread(param()),
        (Resource::Messages, Method::Get) => Route::ListMessages(param()),
        (Resource::Messages, Method::Post) => Route::PostMessage(param()),
        (Resource::Message, Method::Get) => Route::GetMessage(param(), param()),
        (Resource::Message, Method::Put) => Route::EditMessage(param(), param()),
        (Resource::Message, Method::Delete) => Route::DeleteMessage(param(), param()),
        (Resource::ThreadRestore, Method::Post) => Route::RestoreThread(param()),
        (Resource::Versions, Method::Get) => Route::ListVersions(param(), param()),
        (Resource::Replies, Method::Get) => Route::ListReplies(param(), param()),
        (Resource::Reactions, Method::Post) => Route::React(param(), param()),
        (Resource::Reactions, Method::Delete) => Route::Unreact(param(), param()),
        (Resource::MessageRestore, Method::Post) => Route::RestoreMessage(param(), param()),
        (Resource::Stream, Method::Get) => Route::StreamMessages(param()),
        (Resource::Participants, Method::Get) => Route::ListParticipants(param()),
        (Resource::Participants, Method::Post) => Route::AddParticipant(param()),
        (Resource::Participant, Method::Delete) => Route::RemoveParticipant(param(), param()),
        (Resource::ReadMarker, Method::Put) => Route::MarkRead(param()),
        (Resource::UserStream, Method::Get) => Route::StreamUser,
        (Resource::SeedMessages, Method::Post) => Route::SeedPostMessage,
        (Resource::SeedThreadMessages, Method::Get) => Route::SeedListMessages(param()),
        (Resource::Stats, Method::Get) => Route::Stats,
        (Resource::AdminHealth, Method::Get) => Route::AdminHealth,
        (Resource::AdminTotals, Method::Get) => Route::AdminTotals,
        (Resource::Metrics, Method::Get) => Route::Metrics,
        (Resource::Sign, Method::Post) => Route::Sign,
        (Resource::Rotate, Method::Post) => Route::RotateMasterKey,
        (Resource::Backups, Method::Post) => Route::StartBackup,
        (Resource::Backup, Method::Get) => Route::GetBackup(param()),
        (Resource::ClusterStatus, Method::Get) => Route::ClusterStatus,
        (Resource::AdminThreads, Method::Get) => Route::AdminListThreads,
        (Resource::AdminThread, Method::Get) => Route::AdminGetThread(param()),
        (Resource::AdminMessages, Method::Get) => Route::AdminListMessages(param()),
        (Resource::AdminStream, Method::Get) => Route::AdminStreamMessages(param()),
        (Resource::AdminVersions, Method::Get) => Route::AdminListVersions(param(), param()),
        (Resource::AdminParticipants, Method::Get) => Route::AdminListParticipants(param()),
        (Resource::ViewerPage, Method::Get) => Route::Viewer(&crate::api::viewer::INDEX),
        (Resource::ViewerAsset, Method::Get) => {
            Route::Viewer(crate::api::viewer::asset(&param()).ok_or(RouteError::NotFound)?)
        }
        _ => return Err(RouteError::MethodNotAllowed(allow)),
    };
    Ok(route)
}

/// The resource at `raw_path` and its decoded `{...}` captures.
fn resource(raw_path: &str) -> Result<(Resource, Vec<String>), RouteError> {
    let trimmed = raw_path.strip_prefix('/').ok_or(RouteError::NotFound)?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let raw_segments: Vec<&str> = trimmed.split('/').collect();
    if raw_segments.len() > PATH_SEGMENTS_MAX {
        return Err(RouteError::NotFound);
    }
    let mut segments = Vec::with_capacity(raw_segments.len());
    for raw in raw_segments {
        segments.push(percent_decode(raw, false).ok_or(RouteError::BadPath)?);
    }
    'templates: for &(template, resource) in PATHS {
        let mut params = Vec::new();
        // Request paths lose one trailing `/` above, so templates do too.
        let mut pattern = template[1..].trim_end_matches('/').split('/');
        for segment in &segments {
            match pattern.next() {
                Some(part) if part.starts_with('{') => params.push(segment.clone()),
                Some(part) if part == segment.as_str() => {}
                _ => continue 'templates,
            }
        }
        if pattern.next().is_none() {
            return Ok((resource, params));
        }
    }
    Err(RouteError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_endpoint() {
        let cases = [
            (Method::Get, "/healthz", Route::Healthz),
            (Method::Head, "/readyz", Route::Readyz),
            (Method::Get, "/frontend/v1/threads", Route::ListThreads),
            (Method::Post, "/frontend/v1/threads/", Route::CreateThread),
            (
                Method::Get,
                "/frontend/v1/threads/t1",
                Route::GetThread("t1".into()),
            ),
            (
                Method::Put,
                "/frontend/v1/threads/t1",
                Route::UpdateThread("t1".into()),
            ),
            (
                Method::Delete,
                "/frontend/v1/threads/t1",
                Route::DeleteThread("t1".into()),
            ),
            (
                Method::Get,
                "/frontend/v1/threads/t1/messages",
                Route::ListMessages("t1".into()),
            ),
            (
                Method::Post,
                "/frontend/v1/threads/t1/messages",
                Route::PostMessage("t1".into()),
            ),
            (
                Method::Get,
                "/frontend/v1/threads/t1/messages/m1",
                Route::GetMessage("t1".into(), "m1".into()),
            ),
            (
                Method::Put,
                "/frontend/v1/threads/t1/messages/m1",
                Route::EditMessage("t1".into(), "m1".into()),
            ),
            (
                Method::Delete,
                "/frontend/v1/threads/t1/messages/m1",
                Route::DeleteMessage("t1".into(), "m1".into()),
            ),
            (Method::Post, "/v1/messages", Route::SeedPostMessage),
            (Method::Get, "/metrics", Route::Metrics),
            (
                Method::Get,
                "/v1/threads/general/messages",
                Route::SeedListMessages("general".into()),
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path), Ok(expected), "{method:?} {path}");
        }
    }

    #[test]
    fn segments_are_decoded_once() {
        assert_eq!(
            route(Method::Get, "/frontend/v1/threads/a%2Fb"),
            Ok(Route::GetThread("a/b".into()))
        );
        assert_eq!(
            route(Method::Get, "/frontend/v1/threads/%E2%9C%93"),
            Ok(Route::GetThread("✓".into()))
        );
        assert_eq!(
            route(Method::Get, "/frontend/v1/threads/%zz"),
            Err(RouteError::BadPath)
        );
        assert_eq!(
            route(Method::Get, "/frontend/v1/threads/%FF"),
            Err(RouteError::BadPath)
        );
    }

    #[test]
    fn admin_reads_and_viewer() {
        let cases = [
            ("/admin/v1/threads", Route::AdminListThreads),
            ("/admin/v1/threads/t1", Route::AdminGetThread("t1".into())),
            (
                "/admin/v1/threads/t1/messages",
                Route::AdminListMessages("t1".into()),
            ),
            (
                "/admin/v1/threads/t1/messages/stream",
                Route::AdminStreamMessages("t1".into()),
            ),
            (
                "/admin/v1/threads/t1/messages/m1/versions",
                Route::AdminListVersions("t1".into(), "m1".into()),
            ),
            ("/viewer/", Route::Viewer(&crate::api::viewer::INDEX)),
            ("/viewer", Route::Viewer(&crate::api::viewer::INDEX)),
        ];
        for (path, expected) in cases {
            assert_eq!(route(Method::Get, path), Ok(expected.clone()), "{path}");
            assert_eq!(expected.scope().is_none(), path.starts_with("/viewer"));
        }
        assert!(matches!(
            route(Method::Get, "/viewer/viewer.js"),
            Ok(Route::Viewer(_))
        ));
        assert_eq!(
            route(Method::Get, "/viewer/../Cargo.toml"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route(Method::Get, "/viewer/nope.js"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route(Method::Delete, "/admin/v1/threads/t1"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, OPTIONS"))
        );
        assert_eq!(
            route(Method::Get, "/admin/v1/threads/t1/messages/m1"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(route(Method::Get, "/nope"), Err(RouteError::NotFound));
        assert_eq!(
            route(Method::Get, "/frontend/v1/threads/a/b/c/d/e/f/g"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route(Method::Delete, "/frontend/v1/threads"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, POST, OPTIONS"))
        );
        assert_eq!(
            route(Method::Other, "/healthz"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, OPTIONS"))
        );
        assert_eq!(
            route(Method::Options, "/v1/messages"),
            Ok(Route::Options("POST, OPTIONS"))
        );
    }
}
