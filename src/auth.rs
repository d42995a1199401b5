//! Who is calling and what they may do. Pure policy, no I/O.
//!
//! Three kinds of key, configured separately and never logged:
//! - **backend** keys (`sk_...`) may call every frontend route on behalf of
//!   any user named in `X-User-ID`, the seed routes, and `POST
//!   /backend/v1/sign`;
//! - **frontend** keys (`pk_...`) may be shipped to browsers: every request
//!   must also carry `X-User-ID` and `X-User-Signature`, the lowercase hex of
//!   HMAC-SHA256 over the user id's bytes keyed with a signing secret; they
//!   reach only the frontend routes, acting for that user;
//! - **admin** keys reach the admin routes and nothing else.
//!
//! Keys arrive as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
//! Every comparison of a secret runs in constant time and checks every
//! candidate, so timing tells nothing about which key or signature matched.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::Request;
use crate::model::UserId;

/// The route families, each with its own set of allowed key kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/frontend/v1/...`: backend or frontend keys, acting for a user.
    Frontend,
    /// `/backend/v1/...` and the seed routes: backend keys.
    Backend,
    /// `/admin/v1/...`: admin keys.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Backend,
    Frontend,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No key was presented (401).
    MissingKey,
    /// The key is not configured (401).
    UnknownKey,
    /// A known key used on a route its kind may not call (403).
    WrongScope,
    /// The route acts for a user and none was named (400 for backend keys).
    MissingUser,
    InvalidUser,
    /// A frontend key without a valid `X-User-Signature` (401).
    BadSignature,
    /// An identity header sent twice, or two different keys (400): which
    /// one counts would depend on the reader, so none does.
    DuplicateHeader(&'static str),
}

/// Headers that say who is calling. Each may appear once: a proxy that
/// appends its own `X-User-ID` after the client's (or a client smuggling a
/// second one) must not get "first wins" semantics.
const IDENTITY_HEADERS: [&str; 4] = [
    "authorization",
    "x-api-key",
    "x-user-id",
    "x-user-signature",
];

/// The first identity header that appears more than once, or `x-api-key`
/// when `Authorization` and `X-API-Key` present different keys.
fn duplicate_identity_header(request: &Request) -> Option<&'static str> {
    let count = |name: &str| request.headers.iter().filter(|(n, _)| *n == name).count();
    if let Some(name) = IDENTITY_HEADERS.into_iter().find(|name| count(name) > 1) {
        return Some(name);
    }
    match (request.header("authorization"), request.header("x-api-key")) {
        (Some(_), Some(key))
            if presented_key(request).is_some_and(|bearer| bearer != key.trim().as_bytes()) =>
        {
            Some("x-api-key")
        }
        _ => None,
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: KeyKind,
    /// The user the request acts for: verified by signature for frontend
    /// keys, as named in `X-User-ID` for backend keys.
    pub user: Option<UserId>,
    /// Index of the presented key among the configured keys of all kinds,
    /// for per-key rate limits.
    pub key_index: usize,
}

impl Principal {
    /// The user a frontend route acts for; those routes require one.
    pub fn require_user(&self) -> Result<UserId, AuthError> {
        self.user.clone().ok_or(AuthError::MissingUser)
    }
}

/// The configured keys and signing secrets. `Debug` shows only counts.
pub struct Keys {
    keys: Vec<(KeyKind, Vec<u8>)>,
    signing: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys([{} keys, {} signing secrets hidden])",
            self.keys.len(),
            self.signing.len()
        )
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The signature a frontend must present for `user_id`: lowercase hex of
/// HMAC-SHA256(secret, user id bytes).
pub fn sign(secret: &[u8], user_id: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(user_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl Keys {
    /// Signing secrets default to the backend keys when none are given.
    pub fn new(
        backend: &[String],
        frontend: &[String],
        admin: &[String],
        signing: &[String],
    ) -> Keys {
        let mut keys = Vec::new();
        for (kind, list) in [
            (KeyKind::Backend, backend),
            (KeyKind::Frontend, frontend),
            (KeyKind::Admin, admin),
        ] {
            keys.extend(list.iter().map(|key| (kind, key.as_bytes().to_vec())));
        }
        let signing = if signing.is_empty() { backend } else { signing };
        Keys {
            keys,
            signing: signing.iter().map(|key| key.as_bytes().to_vec()).collect(),
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The first signing secret, which `POST /backend/v1/sign` signs with.
    pub fn signing_secret(&self) -> Option<&[u8]> {
        self.signing.first().map(Vec::as_slice)
    }

    pub fn authenticate(&self, request: &Request, scope: Scope) -> Result<Principal, AuthError> {
        if let Some(name) = duplicate_identity_header(request) {
            return Err(AuthError::DuplicateHeader(name));
        }
        let presented = presented_key(request).ok_or(AuthError::MissingKey)?;
        let (key_index, kind) = self.find(presented).ok_or(AuthError::UnknownKey)?;
        let allowed = matches!(
            (scope, kind),
            (Scope::Frontend, KeyKind::Backend | KeyKind::Frontend)
                | (Scope::Backend, KeyKind::Backend)
                | (Scope::Admin, KeyKind::Admin)
        );
        if !allowed {
            return Err(AuthError::WrongScope);
        }
        let user = match request.header("x-user-id") {
            None => None,
            Some(text) => Some(UserId::parse(text.trim()).ok_or(AuthError::InvalidUser)?),
        };
        if kind == KeyKind::Frontend {
            let user = user.as_ref().ok_or(AuthError::BadSignature)?;
            let signature = request
                .header("x-user-signature")
                .ok_or(AuthError::BadSignature)?;
            if !self.signature_matches(user.as_str(), signature.trim()) {
                return Err(AuthError::BadSignature);
            }
        }
        Ok(Principal {
            kind,
            user,
            key_index,
        })
    }

    /// Every configured key with its kind, for front ends that derive
    /// per-key secrets (SCRAM logins in `pg::scram`).
    pub fn each(&self) -> impl Iterator<Item = (KeyKind, &[u8])> {
        self.keys.iter().map(|(kind, key)| (*kind, key.as_slice()))
    }

    /// The index and kind of a configured key equal to `presented`.
    pub fn find(&self, presented: &[u8]) -> Option<(usize, KeyKind)> {
        let mut found = None;
        for (index, (kind, key)) in self.keys.iter().enumerate() {
            // No early exit: every key is compared.
            if constant_time_eq(key, presented) && found.is_none() {
                found = Some((index, *kind));
            }
        }
        found
    }

    fn signature_matches(&self, user_id: &str, presented: &str) -> bool {
        let presented = presented.to_ascii_lowercase();
        self.signing.iter().fold(false, |matched, secret| {
            matched | constant_time_eq(sign(secret, user_id).as_bytes(), presented.as_bytes())
        })
    }
}

fn presented_key(request: &Request) -> Option<&[u8]> {
    if let Some(value) = request.header("authorization") {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().as_bytes())
            .filter(|token| !token.is_empty());
    }
    request
        .header("x-api-key")
        .map(|key| key.trim().as_bytes())
        .filter(|key| !key.is_empty())
}

/// Equality whose running time depends only on the lengths, not on where
/// the first difference is (RustCrypto's `subtle`).
pub fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    expected.ct_eq(presented).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"sk_abc", b"sk_abc"));
        assert!(!constant_time_eq(b"sk_abc", b"sk_abd"));
        assert!(!constant_time_eq(b"sk_abc", b"sk_ab"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
    use crate::http::Method;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: Method::Get,
            path: "/".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
            body: Vec::new(),
            keep_alive: true,
            http11: true,
        }
    }

    fn keys() -> Keys {
        Keys::new(
            &["sk_backend_123".into()],
            &["pk_frontend_123".into()],
            &["admin_key_123".into()],
            &[],
        )
    }

    // Pins the signing scheme other languages implement (RFC 4231 case 2).
    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_kinds_reach_only_their_scopes() {
        let keys = keys();
        let backend = request(&[
            ("authorization", "Bearer sk_backend_123"),
            ("x-user-id", "alice"),
        ]);
        let admin = request(&[("x-api-key", "admin_key_123")]);
        assert_eq!(
            keys.authenticate(&backend, Scope::Frontend).unwrap().kind,
            KeyKind::Backend
        );
        assert!(keys.authenticate(&backend, Scope::Backend).is_ok());
        assert_eq!(
            keys.authenticate(&backend, Scope::Admin),
            Err(AuthError::WrongScope)
        );
        assert!(keys.authenticate(&admin, Scope::Admin).is_ok());
        assert_eq!(
            keys.authenticate(&admin, Scope::Frontend),
            Err(AuthError::WrongScope)
        );
        assert_eq!(
            keys.authenticate(&request(&[]), Scope::Frontend),
            Err(AuthError::MissingKey)
        );
        let unknown = request(&[("x-api-key", "sk_backend_124")]);
        assert_eq!(
            keys.authenticate(&unknown, Scope::Frontend),
            Err(AuthError::UnknownKey)
        );
        let basic = request(&[("authorization", "Basic sk_backend_123")]);
        assert_eq!(
            keys.authenticate(&basic, Scope::Frontend),
            Err(AuthError::MissingKey)
        );
    }

    #[test]
    fn frontend_keys_need_a_signature_for_that_user() {
        let keys = keys();
        let signature = sign(b"sk_backend_123", "alice");
        let signed = request(&[
            ("x-api-key", "pk_frontend_123"),
            ("x-user-id", "alice"),
            ("x-user-signature", &signature),
        ]);
        let principal = keys.authenticate(&signed, Scope::Frontend).unwrap();
        assert_eq!(principal.user.unwrap().as_str(), "alice");
        assert_eq!(
            keys.authenticate(&signed, Scope::Backend),
            Err(AuthError::WrongScope)
        );
        let upper = request(&[
            ("x-api-key", "pk_frontend_123"),
            ("x-user-id", "alice"),
            ("x-user-signature", &signature.to_uppercase()),
        ]);
        assert!(keys.authenticate(&upper, Scope::Frontend).is_ok());
        let replayed = request(&[
            ("x-api-key", "pk_frontend_123"),
            ("x-user-id", "bob"),
            ("x-user-signature", &signature),
        ]);
        assert_eq!(
            keys.authenticate(&replayed, Scope::Frontend),
            Err(AuthError::BadSignature)
        );
        let unsigned = request(&[("x-api-key", "pk_frontend_123"), ("x-user-id", "alice")]);
        assert_eq!(
            keys.authenticate(&unsigned, Scope::Frontend),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn several_signing_secrets_allow_rotation() {
        let keys = Keys::new(
            &["sk_b".into()],
            &["pk_f".into()],
            &[],
            &["new".into(), "old".into()],
        );
        for secret in [&b"new"[..], b"old"] {
            let signed = request(&[
                ("x-api-key", "pk_f"),
                ("x-user-id", "u"),
                ("x-user-signature", &sign(secret, "u")),
            ]);
            assert!(keys.authenticate(&signed, Scope::Frontend).is_ok());
        }
        assert_eq!(keys.signing_secret(), Some(&b"new"[..]));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let text = format!("{:?}", keys());
        assert!(
            !text.contains("sk_backend")
                && !text.contains("pk_frontend")
                && !text.contains("admin_key")
        );
    }
}
