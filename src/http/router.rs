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
    /// `POST /v1/messages`: append, creating the thread if needed.
    SeedPostMessage,
    /// `GET /v1/threads/{id}/messages`.
    SeedListMessages(String),
    /// `GET /admin/v1/stats`: per-shard counters.
    Stats,
    /// `GET /metrics`: Prometheus metrics of every shard.
    Metrics,
    /// `POST /backend/v1/sign`: a user's signature for frontend keys.
    Sign,
    /// `POST /admin/v1/kms/rotate`: a new master key for new thread keys.
    RotateMasterKey,
    /// `OPTIONS` on a known path: answered with its `Allow` list.
    Options(&'static str),
}

impl Route {
    /// Which key kinds may call this route; `None` for unauthenticated ones.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Route::Healthz | Route::Readyz | Route::Options(_) => None,
            Route::Stats | Route::Metrics | Route::RotateMasterKey => Some(Scope::Admin),
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
enum Resource {
    Health,
    Ready,
    Threads,
    Thread(String),
    Messages(String),
    Message(String, String),
    ThreadRestore(String),
    Versions(String, String),
    Replies(String, String),
    Reactions(String, String),
    MessageRestore(String, String),
    Stream(String),
    SeedMessages,
    SeedThreadMessages(String),
    Stats,
    Metrics,
    Sign,
    Rotate,
}

impl Resource {
    fn allow(&self) -> &'static str {
        match self {
            Resource::Health
            | Resource::Ready
            | Resource::SeedThreadMessages(_)
            | Resource::Stats
            | Resource::Metrics => "GET, HEAD, OPTIONS",
            Resource::Threads | Resource::Messages(_) => "GET, HEAD, POST, OPTIONS",
            Resource::Thread(_) | Resource::Message(..) => "GET, HEAD, PUT, DELETE, OPTIONS",
            Resource::SeedMessages
            | Resource::ThreadRestore(_)
            | Resource::MessageRestore(..)
            | Resource::Sign
            | Resource::Rotate => "POST, OPTIONS",
            Resource::Versions(..) | Resource::Replies(..) | Resource::Stream(_) => {
                "GET, HEAD, OPTIONS"
            }
            Resource::Reactions(..) => "POST, DELETE, OPTIONS",
        }
    }
}

/// Longest path we try to route; anything longer is not ours.
const PATH_SEGMENTS_MAX: usize = 8;

pub fn route(method: Method, raw_path: &str) -> Result<Route, RouteError> {
    let resource = resource(raw_path)?;
    let allow = resource.allow();
    // HEAD is served as GET without a body.
    let method = if method == Method::Head {
        Method::Get
    } else {
        method
    };
    let route = match (resource, method) {
        (_, Method::Options) => Route::Options(allow),
        (Resource::Health, Method::Get) => Route::Healthz,
        (Resource::Ready, Method::Get) => Route::Readyz,
        (Resource::Threads, Method::Get) => Route::ListThreads,
        (Resource::Threads, Method::Post) => Route::CreateThread,
        (Resource::Thread(id), Method::Get) => Route::GetThread(id),
        (Resource::Thread(id), Method::Put) => Route::UpdateThread(id),
        (Resource::Thread(id), Method::Delete) => Route::DeleteThread(id),
        (Resource::Messages(id), Method::Get) => Route::ListMessages(id),
        (Resource::Messages(id), Method::Post) => Route::PostMessage(id),
        (Resource::Message(id, mid), Method::Get) => Route::GetMessage(id, mid),
        (Resource::Message(id, mid), Method::Put) => Route::EditMessage(id, mid),
        (Resource::Message(id, mid), Method::Delete) => Route::DeleteMessage(id, mid),
        (Resource::ThreadRestore(id), Method::Post) => Route::RestoreThread(id),
        (Resource::Versions(id, mid), Method::Get) => Route::ListVersions(id, mid),
        (Resource::Replies(id, mid), Method::Get) => Route::ListReplies(id, mid),
        (Resource::Reactions(id, mid), Method::Post) => Route::React(id, mid),
        (Resource::Reactions(id, mid), Method::Delete) => Route::Unreact(id, mid),
        (Resource::MessageRestore(id, mid), Method::Post) => Route::RestoreMessage(id, mid),
        (Resource::Stream(id), Method::Get) => Route::StreamMessages(id),
        (Resource::SeedMessages, Method::Post) => Route::SeedPostMessage,
        (Resource::SeedThreadMessages(id), Method::Get) => Route::SeedListMessages(id),
        (Resource::Stats, Method::Get) => Route::Stats,
        (Resource::Metrics, Method::Get) => Route::Metrics,
        (Resource::Sign, Method::Post) => Route::Sign,
        (Resource::Rotate, Method::Post) => Route::RotateMasterKey,
        _ => return Err(RouteError::MethodNotAllowed(allow)),
    };
    Ok(route)
}

fn resource(raw_path: &str) -> Result<Resource, RouteError> {
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
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let owned = |text: &str| text.to_owned();
    Ok(match parts.as_slice() {
        ["healthz"] => Resource::Health,
        ["readyz"] => Resource::Ready,
        ["frontend", "v1", "threads"] => Resource::Threads,
        ["frontend", "v1", "threads", id] => Resource::Thread(owned(id)),
        ["frontend", "v1", "threads", id, "restore"] => Resource::ThreadRestore(owned(id)),
        ["frontend", "v1", "threads", id, "messages"] => Resource::Messages(owned(id)),
        // Before the `{mid}` pattern: `stream` is not a message id.
        ["frontend", "v1", "threads", id, "messages", "stream"] => Resource::Stream(owned(id)),
        ["frontend", "v1", "threads", id, "messages", mid] => {
            Resource::Message(owned(id), owned(mid))
        }
        ["frontend", "v1", "threads", id, "messages", mid, action] => {
            let (id, mid) = (owned(id), owned(mid));
            match *action {
                "versions" => Resource::Versions(id, mid),
                "replies" => Resource::Replies(id, mid),
                "reactions" => Resource::Reactions(id, mid),
                "restore" => Resource::MessageRestore(id, mid),
                _ => return Err(RouteError::NotFound),
            }
        }
        ["v1", "messages"] => Resource::SeedMessages,
        ["v1", "threads", id, "messages"] => Resource::SeedThreadMessages(owned(id)),
        ["admin", "v1", "stats"] => Resource::Stats,
        ["metrics"] => Resource::Metrics,
        ["admin", "v1", "kms", "rotate"] => Resource::Rotate,
        // The last two are paths older ProgressDB clients call.
        ["backend", "v1", "sign"] | ["v1", "_sign"] | ["v1", "sign"] => Resource::Sign,
        _ => return Err(RouteError::NotFound),
    })
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
