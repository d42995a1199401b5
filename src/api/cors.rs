//! Cross-origin access for the frontend routes.
//!
//! Browsers call the frontend routes directly with a frontend key, so those
//! answer CORS requests from the configured origins. The allowed origin is
//! echoed back (with `Vary: Origin`), or `*` when any origin is allowed; no
//! credentials mode is ever granted, since keys travel in headers, never in
//! cookies, so `*` is never combined with credentials.

use crate::http::{Request, Response};

pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

/// Headers a browser may send to the frontend routes.
const ALLOWED_HEADERS: &str =
    "Authorization, Content-Type, X-API-Key, X-User-ID, X-User-Signature, Last-Event-ID";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE_S: u32 = 600;

impl Cors {
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|origin| origin == "*"),
            origins: origins
                .iter()
                .filter(|origin| *origin != "*")
                .cloned()
                .collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request, if it is a
    /// cross-origin call to a frontend route from an allowed origin.
    fn allow_origin(&self, request: &Request) -> Option<String> {
        if !request.path.starts_with("/frontend/") {
            return None;
        }
        let origin = request.header("origin")?;
        if self.any {
            Some("*".to_owned())
        } else {
            self.origins
                .iter()
                .any(|allowed| allowed == origin)
                .then(|| origin.to_owned())
        }
    }

    /// Adds the CORS headers a browser needs to read `response`.
    pub fn decorate(&self, request: &Request, response: Response) -> Response {
        match self.allow_origin(request) {
            None => response,
            Some(origin) => response
                .with_header("Access-Control-Allow-Origin", origin)
                .with_header("Vary", "Origin")
                .with_header(
                    "Access-Control-Expose-Headers",
                    "Retry-After, X-ProgressDB-Shard",
                ),
        }
    }

    /// The answer to `OPTIONS` on a path whose methods are `allow`: a
    /// preflight answer for allowed origins, else just `Allow`.
    pub fn preflight(&self, request: &Request, allow: &'static str) -> Response {
        let response = Response::json(204, Vec::new()).with_header("Allow", allow);
        if request.header("access-control-request-method").is_none() {
            return response;
        }
        match self.allow_origin(request) {
            None => response,
            Some(origin) => response
                .with_header("Access-Control-Allow-Origin", origin)
                .with_header("Vary", "Origin")
                .with_header("Access-Control-Allow-Methods", allow)
                .with_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
                .with_header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE_S.to_string()),
        }
    }
}
