//! The API's route table, [`ENDPOINTS`]: method + path -> [`Route`], with
//! each endpoint's key scope and metrics name beside it. Path segments are
//! percent-decoded here, once; handlers receive plain strings and validate
//! them as ids.

use super::viewer;
use crate::auth::Scope;
use crate::http::{Method, percent_decode};

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
    /// `DELETE /admin/v1/threads/{id}`: soft-deletes, or with `?hard=true`
    /// erases the thread now.
    AdminDeleteThread(String),
    /// `POST /admin/v1/jobs/purge` (and upstream's `/admin/jobs/purge`):
    /// runs the retention job now.
    Purge,
    /// `GET /cluster/v1/status`: clustered mode's nodes and partitions.
    ClusterStatus,
    /// `POST /admin/v1/jobs/encrypt-threads`: starts sealing the threads
    /// written before encryption was on, on every shard.
    StartEncryptThreads,
    /// `GET /admin/v1/jobs/encrypt-threads`: that job's progress.
    EncryptThreadsStatus,
    /// `GET /viewer/...`: a static file of the admin web UI (public; its
    /// data calls need the admin key).
    Viewer(&'static viewer::Asset),
    /// `OPTIONS` on a known path: answered with its `Allow` list.
    Options(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The path exists but not with this method; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A path segment has a bad percent escape or is not UTF-8.
    BadPath,
}

/// One served (method, path template) and everything the server knows of
/// it: the router matches on it, the OpenAPI test checks the document
/// against it, and metrics and access logs label requests with its name.
#[derive(Debug)]
pub struct Endpoint {
    pub method: Method,
    /// `{name}` segments capture one decoded segment each, left to right.
    pub path: &'static str,
    /// The `route` label of metrics and access-log lines.
    pub name: &'static str,
    /// Which key kinds may call it; `None` for unauthenticated endpoints.
    pub scope: Option<Scope>,
    /// The route, from the captures in template order.
    make: fn(&mut Captures) -> Result<Route, RouteError>,
}

/// A request's route and the endpoint it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub route: Route,
    pub endpoint: &'static Endpoint,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Endpoint {}

/// Decoded `{...}` segments of a matched path, taken in template order.
pub struct Captures(std::vec::IntoIter<String>);

impl Captures {
    fn next(&mut self) -> String {
        // The table guarantees as many captures as the template has `{...}`.
        self.0.next().unwrap_or_default()
    }
}

/// `OPTIONS` on any path: a browser's preflight, answered before auth.
pub static PREFLIGHT: Endpoint = Endpoint {
    method: Method::Options,
    path: "*",
    name: "options",
    scope: None,
    make: |_| Ok(Route::Options("OPTIONS")),
};

const PUBLIC: Option<Scope> = None;
const FRONTEND: Option<Scope> = Some(Scope::Frontend);
const BACKEND: Option<Scope> = Some(Scope::Backend);
const ADMIN: Option<Scope> = Some(Scope::Admin);

macro_rules! endpoint {
    ($method:ident $path:literal, $name:literal, $scope:expr, $make:expr) => {
        Endpoint {
            method: Method::$method,
            path: $path,
            name: $name,
            scope: $scope,
            make: $make,
        }
    };
}

/// Every endpoint, in match order: the first template whose literal
/// segments all match the path wins (so `.../messages/stream` comes before
/// `.../messages/{mid}`), then the method picks among that template's
/// endpoints. Every `GET` also answers `HEAD`, every path `OPTIONS`.
pub static ENDPOINTS: &[Endpoint] = &[
    endpoint!(Get "/healthz", "healthz", PUBLIC, |_| Ok(Route::Healthz)),
    endpoint!(Get "/readyz", "readyz", PUBLIC, |_| Ok(Route::Readyz)),
    endpoint!(Get "/openapi.json", "openapi", PUBLIC, |_| Ok(Route::OpenApi)),
    endpoint!(Get "/docs/", "docs", PUBLIC, |_| Ok(Route::Docs)),
    endpoint!(Get "/frontend/v1/threads", "list_threads", FRONTEND, |_| Ok(Route::ListThreads)),
    endpoint!(Post "/frontend/v1/threads", "create_thread", FRONTEND, |_| Ok(Route::CreateThread)),
    endpoint!(Get "/frontend/v1/stream", "stream_user", FRONTEND, |_| Ok(Route::StreamUser)),
    endpoint!(Get "/frontend/v1/threads/{id}", "get_thread", FRONTEND,
        |c| Ok(Route::GetThread(c.next()))),
    endpoint!(Put "/frontend/v1/threads/{id}", "update_thread", FRONTEND,
        |c| Ok(Route::UpdateThread(c.next()))),
    endpoint!(Delete "/frontend/v1/threads/{id}", "delete_thread", FRONTEND,
        |c| Ok(Route::DeleteThread(c.next()))),
    endpoint!(Post "/frontend/v1/threads/{id}/restore", "restore_thread", FRONTEND,
        |c| Ok(Route::RestoreThread(c.next()))),
    endpoint!(Get "/frontend/v1/threads/{id}/messages", "list_messages", FRONTEND,
        |c| Ok(Route::ListMessages(c.next()))),
    endpoint!(Post "/frontend/v1/threads/{id}/messages", "post_message", FRONTEND,
        |c| Ok(Route::PostMessage(c.next()))),
    endpoint!(Get "/frontend/v1/threads/{id}/messages/stream", "stream_messages", FRONTEND,
        |c| Ok(Route::StreamMessages(c.next()))),
    endpoint!(Get "/frontend/v1/threads/{id}/messages/{mid}", "get_message", FRONTEND,
        |c| Ok(Route::GetMessage(c.next(), c.next()))),
    endpoint!(Put "/frontend/v1/threads/{id}/messages/{mid}", "edit_message", FRONTEND,
        |c| Ok(Route::EditMessage(c.next(), c.next()))),
    endpoint!(Delete "/frontend/v1/threads/{id}/messages/{mid}", "delete_message", FRONTEND,
        |c| Ok(Route::DeleteMessage(c.next(), c.next()))),
    endpoint!(Get "/frontend/v1/threads/{id}/messages/{mid}/versions", "list_versions", FRONTEND,
        |c| Ok(Route::ListVersions(c.next(), c.next()))),
    endpoint!(Get "/frontend/v1/threads/{id}/messages/{mid}/replies", "list_replies", FRONTEND,
        |c| Ok(Route::ListReplies(c.next(), c.next()))),
    endpoint!(Post "/frontend/v1/threads/{id}/messages/{mid}/reactions", "react", FRONTEND,
        |c| Ok(Route::React(c.next(), c.next()))),
    endpoint!(Delete "/frontend/v1/threads/{id}/messages/{mid}/reactions", "unreact", FRONTEND,
        |c| Ok(Route::Unreact(c.next(), c.next()))),
    endpoint!(Post "/frontend/v1/threads/{id}/messages/{mid}/restore", "restore_message",
        FRONTEND, |c| Ok(Route::RestoreMessage(c.next(), c.next()))),
    endpoint!(Get "/frontend/v1/threads/{id}/participants", "list_participants", FRONTEND,
        |c| Ok(Route::ListParticipants(c.next()))),
    endpoint!(Post "/frontend/v1/threads/{id}/participants", "add_participant", FRONTEND,
        |c| Ok(Route::AddParticipant(c.next()))),
    endpoint!(Delete "/frontend/v1/threads/{id}/participants/{user_id}", "remove_participant",
        FRONTEND, |c| Ok(Route::RemoveParticipant(c.next(), c.next()))),
    endpoint!(Put "/frontend/v1/threads/{id}/read", "mark_read", FRONTEND,
        |c| Ok(Route::MarkRead(c.next()))),
    endpoint!(Post "/v1/messages", "seed_post_message", BACKEND, |_| Ok(Route::SeedPostMessage)),
    endpoint!(Get "/v1/threads/{id}/messages", "seed_list_messages", BACKEND,
        |c| Ok(Route::SeedListMessages(c.next()))),
    endpoint!(Get "/admin/v1/stats", "stats", ADMIN, |_| Ok(Route::Stats)),
    // Upstream ProgressDB's admin routes.
    endpoint!(Get "/admin/health", "admin_health", ADMIN, |_| Ok(Route::AdminHealth)),
    endpoint!(Get "/admin/stats", "admin_totals", ADMIN, |_| Ok(Route::AdminTotals)),
    endpoint!(Post "/admin/jobs/purge", "purge", ADMIN, |_| Ok(Route::Purge)),
    endpoint!(Post "/admin/v1/jobs/purge", "purge", ADMIN, |_| Ok(Route::Purge)),
    endpoint!(Post "/admin/v1/jobs/encrypt-threads", "start_encrypt_threads", ADMIN,
        |_| Ok(Route::StartEncryptThreads)),
    endpoint!(Get "/admin/v1/jobs/encrypt-threads", "encrypt_threads_status", ADMIN,
        |_| Ok(Route::EncryptThreadsStatus)),
    endpoint!(Post "/admin/v1/kms/rotate", "rotate_master_key", ADMIN,
        |_| Ok(Route::RotateMasterKey)),
    endpoint!(Post "/admin/v1/backups", "start_backup", ADMIN, |_| Ok(Route::StartBackup)),
    endpoint!(Get "/admin/v1/backups/{id}", "get_backup", ADMIN,
        |c| Ok(Route::GetBackup(c.next()))),
    endpoint!(Get "/metrics", "metrics", ADMIN, |_| Ok(Route::Metrics)),
    endpoint!(Get "/cluster/v1/status", "cluster_status", ADMIN, |_| Ok(Route::ClusterStatus)),
    endpoint!(Get "/admin/v1/threads", "admin_list_threads", ADMIN,
        |_| Ok(Route::AdminListThreads)),
    endpoint!(Get "/admin/v1/threads/{id}", "admin_get_thread", ADMIN,
        |c| Ok(Route::AdminGetThread(c.next()))),
    endpoint!(Delete "/admin/v1/threads/{id}", "admin_delete_thread", ADMIN,
        |c| Ok(Route::AdminDeleteThread(c.next()))),
    endpoint!(Get "/admin/v1/threads/{id}/messages", "admin_list_messages", ADMIN,
        |c| Ok(Route::AdminListMessages(c.next()))),
    endpoint!(Get "/admin/v1/threads/{id}/messages/stream", "admin_stream_messages", ADMIN,
        |c| Ok(Route::AdminStreamMessages(c.next()))),
    endpoint!(Get "/admin/v1/threads/{id}/messages/{mid}/versions", "admin_list_versions",
        ADMIN, |c| Ok(Route::AdminListVersions(c.next(), c.next()))),
    endpoint!(Get "/admin/v1/threads/{id}/participants", "admin_list_participants", ADMIN,
        |c| Ok(Route::AdminListParticipants(c.next()))),
    // `/viewer` and `/viewer/` both serve the page; its assets are named
    // with absolute paths, from a closed set (no path reaches the disk).
    endpoint!(Get "/viewer/", "viewer", PUBLIC, |_| Ok(Route::Viewer(&viewer::INDEX))),
    endpoint!(Get "/viewer/{file}", "viewer", PUBLIC,
        |c| viewer::asset(&c.next()).map(Route::Viewer).ok_or(RouteError::NotFound)),
    endpoint!(Post "/backend/v1/sign", "sign", BACKEND, |_| Ok(Route::Sign)),
    // Paths older ProgressDB clients call.
    endpoint!(Post "/v1/_sign", "sign", BACKEND, |_| Ok(Route::Sign)),
    endpoint!(Post "/v1/sign", "sign", BACKEND, |_| Ok(Route::Sign)),
];

/// `Allow` values by the methods a path serves (bit 0 GET, 1 POST, 2 PUT,
/// 3 DELETE), in one canonical order.
const ALLOW: [&str; 16] = [
    "OPTIONS",
    "GET, HEAD, OPTIONS",
    "POST, OPTIONS",
    "GET, HEAD, POST, OPTIONS",
    "PUT, OPTIONS",
    "GET, HEAD, PUT, OPTIONS",
    "POST, PUT, OPTIONS",
    "GET, HEAD, POST, PUT, OPTIONS",
    "DELETE, OPTIONS",
    "GET, HEAD, DELETE, OPTIONS",
    "POST, DELETE, OPTIONS",
    "GET, HEAD, POST, DELETE, OPTIONS",
    "PUT, DELETE, OPTIONS",
    "GET, HEAD, PUT, DELETE, OPTIONS",
    "POST, PUT, DELETE, OPTIONS",
    "GET, HEAD, POST, PUT, DELETE, OPTIONS",
];

fn method_bit(method: Method) -> usize {
    match method {
        Method::Get => 1,
        Method::Post => 2,
        Method::Put => 4,
        Method::Delete => 8,
        _ => 0,
    }
}

/// The `Allow` value of the path template `path`.
fn allow(path: &str) -> &'static str {
    let methods = ENDPOINTS
        .iter()
        .filter(|endpoint| endpoint.path == path)
        .fold(0, |bits, endpoint| bits | method_bit(endpoint.method));
    ALLOW[methods]
}

/// Longest path we try to route; anything longer is not ours.
const PATH_SEGMENTS_MAX: usize = 8;

pub fn route(method: Method, raw_path: &str) -> Result<Routed, RouteError> {
    let (template, captures) = template(raw_path)?;
    // HEAD is served as GET without a body.
    let method = if method == Method::Head {
        Method::Get
    } else {
        method
    };
    if method == Method::Options {
        return Ok(Routed {
            route: Route::Options(allow(template)),
            endpoint: &PREFLIGHT,
        });
    }
    let endpoint = ENDPOINTS
        .iter()
        .find(|endpoint| endpoint.path == template && endpoint.method == method)
        .ok_or_else(|| RouteError::MethodNotAllowed(allow(template)))?;
    let route = (endpoint.make)(&mut Captures(captures.into_iter()))?;
    Ok(Routed { route, endpoint })
}

/// The first template matching `raw_path`, and its decoded captures.
fn template(raw_path: &str) -> Result<(&'static str, Vec<String>), RouteError> {
    let trimmed = raw_path.strip_prefix('/').ok_or(RouteError::NotFound)?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.split('/').count() > PATH_SEGMENTS_MAX {
        return Err(RouteError::NotFound);
    }
    let mut segments = Vec::with_capacity(PATH_SEGMENTS_MAX);
    for raw in trimmed.split('/') {
        segments.push(percent_decode(raw, false).ok_or(RouteError::BadPath)?);
    }
    'templates: for (path, parts) in templates() {
        if parts.len() != segments.len() {
            continue;
        }
        let mut captures = Vec::new();
        for (part, segment) in parts.iter().zip(&segments) {
            match part {
                Part::Capture => captures.push(segment.to_string()),
                Part::Literal(literal) if literal == segment => {}
                Part::Literal(_) => continue 'templates,
            }
        }
        return Ok((path, captures));
    }
    Err(RouteError::NotFound)
}

/// One segment of a path template.
enum Part {
    Literal(&'static str),
    Capture,
}

/// Every distinct path template in match order, split into its segments
/// once (routing a request compares segments, never re-splits templates).
fn templates() -> &'static [(&'static str, Vec<Part>)] {
    static TEMPLATES: std::sync::OnceLock<Vec<(&'static str, Vec<Part>)>> =
        std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut templates: Vec<(&'static str, Vec<Part>)> = Vec::new();
        for endpoint in ENDPOINTS {
            if templates.iter().any(|(path, _)| *path == endpoint.path) {
                continue;
            }
            // Request paths lose one trailing `/`, so templates do too.
            let parts = endpoint.path[1..]
                .trim_end_matches('/')
                .split('/')
                .map(|part| match part.starts_with('{') {
                    true => Part::Capture,
                    false => Part::Literal(part),
                })
                .collect();
            templates.push((endpoint.path, parts));
        }
        templates
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(method: Method, path: &str) -> Result<Route, RouteError> {
        route(method, path).map(|routed| routed.route)
    }

    #[test]
    fn allow_values_list_exactly_their_methods() {
        for (bits, allow) in ALLOW.iter().enumerate() {
            let listed: usize = allow
                .split(", ")
                .map(|name| match name {
                    "GET" => 1,
                    "POST" => 2,
                    "PUT" => 4,
                    "DELETE" => 8,
                    _ => 0,
                })
                .sum();
            assert_eq!(listed, bits, "{allow}");
            assert_eq!(allow.contains("HEAD"), allow.contains("GET"), "{allow}");
        }
    }

    #[test]
    fn metrics_names_never_carry_the_path() {
        let routed = route(Method::Get, "/frontend/v1/threads/secret-id/messages").unwrap();
        assert_eq!(routed.endpoint.name, "list_messages");
        let routed = route(Method::Head, "/metrics").unwrap();
        assert_eq!(routed.endpoint.name, "metrics");
        for endpoint in ENDPOINTS {
            assert!(!endpoint.name.contains('/'), "{}", endpoint.name);
        }
    }

    #[test]
    fn every_endpoint_routes_to_itself() {
        for endpoint in ENDPOINTS {
            let path = endpoint.path.replace("{file}", "viewer.js");
            let routed = route(endpoint.method, &path).expect(endpoint.path);
            assert_eq!(routed.endpoint.path, endpoint.path);
            assert_eq!(routed.endpoint.method, endpoint.method);
        }
    }

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
            assert_eq!(route_of(method, path), Ok(expected), "{method:?} {path}");
        }
    }

    #[test]
    fn segments_are_decoded_once() {
        assert_eq!(
            route_of(Method::Get, "/frontend/v1/threads/a%2Fb"),
            Ok(Route::GetThread("a/b".into()))
        );
        assert_eq!(
            route_of(Method::Get, "/frontend/v1/threads/%E2%9C%93"),
            Ok(Route::GetThread("✓".into()))
        );
        assert_eq!(
            route_of(Method::Get, "/frontend/v1/threads/%zz"),
            Err(RouteError::BadPath)
        );
        assert_eq!(
            route_of(Method::Get, "/frontend/v1/threads/%FF"),
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
            ("/viewer/", Route::Viewer(&viewer::INDEX)),
            ("/viewer", Route::Viewer(&viewer::INDEX)),
        ];
        for (path, expected) in cases {
            let routed = route(Method::Get, path).expect(path);
            assert_eq!(routed.route, expected, "{path}");
            assert_eq!(routed.endpoint.scope.is_none(), path.starts_with("/viewer"));
        }
        assert!(matches!(
            route_of(Method::Get, "/viewer/viewer.js"),
            Ok(Route::Viewer(_))
        ));
        assert_eq!(
            route_of(Method::Get, "/viewer/../Cargo.toml"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route_of(Method::Get, "/viewer/nope.js"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route_of(Method::Put, "/admin/v1/threads/t1"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, DELETE, OPTIONS"))
        );
        assert_eq!(
            route_of(Method::Delete, "/admin/v1/threads/t1"),
            Ok(Route::AdminDeleteThread("t1".into()))
        );
        for path in ["/admin/v1/jobs/purge", "/admin/jobs/purge"] {
            let routed = route(Method::Post, path).unwrap();
            assert_eq!(routed.route, Route::Purge);
            assert_eq!(routed.endpoint.scope, Some(Scope::Admin));
        }
        assert_eq!(
            route_of(Method::Get, "/admin/v1/threads/t1/messages/m1"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(route_of(Method::Get, "/nope"), Err(RouteError::NotFound));
        assert_eq!(
            route_of(Method::Get, "/frontend/v1/threads/a/b/c/d/e/f/g"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route_of(Method::Delete, "/frontend/v1/threads"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, POST, OPTIONS"))
        );
        assert_eq!(
            route_of(Method::Other, "/healthz"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, OPTIONS"))
        );
        assert_eq!(
            route_of(Method::Options, "/v1/messages"),
            Ok(Route::Options("POST, OPTIONS"))
        );
    }
}
