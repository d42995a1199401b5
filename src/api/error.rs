//! Every error a client can see, and the one place each gets its status and
//! stable code. Bodies are always `{"error": code, "message": text}`.

use super::router::RouteError;
use crate::engine::EngineError;
use crate::http::{HttpError, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Value of an `Allow` header (405 only).
    pub allow: Option<&'static str>,
    /// Value of a `Retry-After` header in seconds (429 only).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
            retry_after_s: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }

    /// A state this server has no answer for (a bug, logged by the caller).
    pub fn internal() -> ApiError {
        ApiError::new(
            500,
            "internal_error",
            "the server could not handle this request",
        )
    }

    /// No node can serve this thread's partition now (503 with
    /// `Retry-After`, as the engine refuses a write it may not take);
    /// `why` is logged.
    pub fn partition_unavailable(why: &str) -> ApiError {
        ApiError::from(EngineError::PartitionUnavailable(why.to_owned()))
    }

    /// A request clustered mode does not serve yet.
    pub fn not_in_cluster(message: &'static str) -> ApiError {
        ApiError::new(409, "not_supported_in_cluster", message)
    }

    pub fn into_response(self) -> Response {
        let mut response = Response::error(self.status, self.code, &self.message);
        if let Some(allow) = self.allow {
            response = response.with_header("Allow", allow);
        }
        if let Some(seconds) = self.retry_after_s {
            response = response.with_header("Retry-After", seconds.to_string());
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        // Every variant is named here, so a new one must be placed.
        match err {
            EngineError::Unavailable(_)
            | EngineError::WritesUnavailable(_)
            | EngineError::KmsUnavailable(_)
            | EngineError::PartitionUnavailable(_)
            | EngineError::TooLarge { .. }
            | EngineError::Storage(_) => server_condition(err),
            EngineError::ThreadNotFound
            | EngineError::MessageNotFound
            | EngineError::ThreadExists
            | EngineError::InvalidCursor
            | EngineError::InvalidReplyTo
            | EngineError::TooManyReactions
            | EngineError::Forbidden(_)
            | EngineError::TooManyParticipants(_)
            | EngineError::ParticipantNotFound => caller_error(err),
        }
    }
}

/// What the request asked for that cannot be: 4xx.
fn caller_error(err: EngineError) -> ApiError {
    match err {
        EngineError::ThreadNotFound => ApiError::new(404, "thread_not_found", "thread not found"),
        EngineError::MessageNotFound => {
            ApiError::new(404, "message_not_found", "message not found")
        }
        EngineError::ThreadExists => {
            ApiError::new(409, "thread_exists", "a thread with this id already exists")
        }
        EngineError::InvalidCursor => ApiError::bad_request(
            "invalid_cursor",
            "cursor does not name a message of this thread",
        ),
        EngineError::InvalidReplyTo => ApiError::bad_request(
            "invalid_reply_to",
            "reply_to must name a live message of the same thread",
        ),
        EngineError::TooManyReactions => ApiError::new(
            409,
            "too_many_reactions",
            format!(
                "this message already has reactions from {} users",
                crate::engine::REACTIONS_PER_MESSAGE_MAX
            ),
        ),
        EngineError::Forbidden(why) => ApiError::new(403, "forbidden", why),
        EngineError::TooManyParticipants(max) => ApiError::new(
            409,
            "too_many_participants",
            format!("this thread already has {max} participants besides its owner"),
        ),
        EngineError::ParticipantNotFound => ApiError::new(
            404,
            "participant_not_found",
            "this user is not a participant of the thread",
        ),
        err => misplaced(err),
    }
}

/// What the server cannot do now or ever for this write: 5xx and 413.
fn server_condition(err: EngineError) -> ApiError {
    match err {
        EngineError::Unavailable(why) => {
            logged("shard unavailable", &why);
            ApiError::new(
                503,
                "shard_unavailable",
                "the shard that owns this data is unavailable; retry later",
            )
        }
        EngineError::WritesUnavailable(why) => {
            // The failure itself was logged once where it happened.
            crate::logging::debug("write refused", &[("error", &why)]);
            ApiError::new(
                503,
                "writes_unavailable",
                "writes are refused on this shard: its log or store failed (until \
                 restart) or is behind (retry later); reads keep working",
            )
        }
        EngineError::KmsUnavailable(why) => ApiError::new(503, "kms_unavailable", why),
        EngineError::PartitionUnavailable(why) => {
            crate::logging::debug("partition unavailable", &[("error", &why)]);
            ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(
                    503,
                    "partition_unavailable",
                    "this thread's partition is changing owner; retry shortly",
                )
            }
        }
        EngineError::TooLarge { bytes, max } => ApiError::new(
            413,
            "write_too_large",
            format!(
                "this change would log {bytes} bytes, more than one write-ahead log record \
                 holds ({max}); an edit logs the previous body with the new one"
            ),
        ),
        EngineError::Storage(why) => {
            logged("storage error", &why);
            ApiError::new(
                500,
                "storage_error",
                "the server failed to read or write its storage",
            )
        }
        err => misplaced(err),
    }
}

/// A variant `From` sent to the wrong group: a bug here, answered as an
/// internal error.
fn misplaced(err: EngineError) -> ApiError {
    logged("engine error without a status", &format!("{err:?}"));
    ApiError::internal()
}

/// Logs the detail of an internal failure: it may name files, descriptors
/// or devices, which belong in the server's log, never in a response.
fn logged(what: &str, why: &str) {
    crate::logging::error(what, &[("error", &why)]);
}

impl From<RouteError> for ApiError {
    fn from(err: RouteError) -> Self {
        match err {
            RouteError::NotFound => ApiError::new(404, "not_found", "no such route"),
            RouteError::MethodNotAllowed(allow) => ApiError {
                allow: Some(allow),
                ..ApiError::new(
                    405,
                    "method_not_allowed",
                    "method not allowed on this route",
                )
            },
            RouteError::BadPath => ApiError::bad_request(
                "invalid_path",
                "path has a malformed percent escape or is not UTF-8",
            ),
        }
    }
}

impl From<&HttpError> for ApiError {
    fn from(err: &HttpError) -> Self {
        ApiError::new(err.status(), err.code(), err.message())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(err: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match err {
            AuthError::MissingKey => ApiError::new(
                401,
                "unauthorized",
                "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ),
            AuthError::UnknownKey => ApiError::new(401, "unauthorized", "unknown API key"),
            AuthError::WrongScope => {
                ApiError::new(403, "forbidden", "this kind of key may not call this route")
            }
            AuthError::BadSignature => ApiError::new(
                401,
                "invalid_signature",
                "frontend keys need X-User-ID and a valid X-User-Signature for that user",
            ),
            AuthError::MissingUser => ApiError::bad_request(
                "missing_user_id",
                "this route acts for a user: send `X-User-ID`",
            ),
            AuthError::DuplicateHeader(name) => ApiError::bad_request(
                "duplicate_header",
                format!(
                    "`{name}` was sent more than once (or Authorization and X-API-Key disagree); send each identity header once"
                ),
            ),
            AuthError::InvalidUser => ApiError::bad_request(
                "invalid_user_id",
                "X-User-ID must be 1 to 128 printable ASCII characters without spaces",
            ),
        }
    }
}
