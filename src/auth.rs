//! Who is calling: API key check and caller identity. Pure policy, no I/O.
//!
//! Keys arrive as `Authorization: Bearer <key>` or `X-API-Key: <key>` and are
//! compared in constant time against every configured key. The user a
//! frontend request acts for is named by `X-User-ID`. Key kinds (backend,
//! frontend, admin) and signed user ids slot in here as `Principal` grows.

use crate::http::Request;
use crate::model::UserId;

/// The configured API keys. Never printed: `Debug` shows only the count.
pub struct Keys(Vec<Vec<u8>>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys([{} hidden])", self.0.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    MissingKey,
    UnknownKey,
    MissingUser,
    InvalidUser,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// From `X-User-ID`, when present.
    pub user: Option<UserId>,
}

impl Principal {
    /// The user a frontend route acts for; those routes require one.
    pub fn require_user(&self) -> Result<UserId, AuthError> {
        self.user.clone().ok_or(AuthError::MissingUser)
    }
}

impl Keys {
    pub fn new(keys: &[String]) -> Keys {
        Keys(keys.iter().map(|key| key.as_bytes().to_vec()).collect())
    }

    pub fn authenticate(&self, request: &Request) -> Result<Principal, AuthError> {
        let presented = presented_key(request).ok_or(AuthError::MissingKey)?;
        // Check every key without stopping early, so timing does not tell
        // which (or whether an earlier) key matched.
        let matched = self
            .0
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, presented));
        if !matched {
            return Err(AuthError::UnknownKey);
        }
        let user = match request.header("x-user-id") {
            None => None,
            Some(text) => Some(UserId::parse(text.trim()).ok_or(AuthError::InvalidUser)?),
        };
        Ok(Principal { user })
    }
}

fn presented_key(request: &Request) -> Option<&[u8]> {
    if let Some(value) = request.header("authorization") {
        let value = value.trim();
        let (scheme, token) = value.split_once(' ')?;
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
/// the first difference is.
pub fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    if expected.len() != presented.len() {
        return false;
    }
    expected
        .iter()
        .zip(presented)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
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
        }
    }

    #[test]
    fn accepts_bearer_and_x_api_key() {
        let keys = Keys::new(&["key-one-123".into(), "key-two-456".into()]);
        let bearer = request(&[
            ("authorization", "Bearer key-two-456"),
            ("x-user-id", "alice"),
        ]);
        assert_eq!(
            keys.authenticate(&bearer).unwrap().user.unwrap().as_str(),
            "alice"
        );
        let header = request(&[("x-api-key", "key-one-123")]);
        assert_eq!(keys.authenticate(&header).unwrap().user, None);
    }

    #[test]
    fn rejects_missing_unknown_and_malformed() {
        let keys = Keys::new(&["key-one-123".into()]);
        assert_eq!(keys.authenticate(&request(&[])), Err(AuthError::MissingKey));
        let wrong = request(&[("x-api-key", "key-one-124")]);
        assert_eq!(keys.authenticate(&wrong), Err(AuthError::UnknownKey));
        let basic = request(&[("authorization", "Basic key-one-123")]);
        assert_eq!(keys.authenticate(&basic), Err(AuthError::MissingKey));
        let prefix = request(&[("x-api-key", "key-one-12")]);
        assert_eq!(keys.authenticate(&prefix), Err(AuthError::UnknownKey));
        let bad_user = request(&[("x-api-key", "key-one-123"), ("x-user-id", "a b")]);
        assert_eq!(keys.authenticate(&bad_user), Err(AuthError::InvalidUser));
    }

    #[test]
    fn debug_never_shows_keys() {
        let keys = Keys::new(&["super-secret-key".into()]);
        assert!(!format!("{keys:?}").contains("super-secret"));
    }
}
