//! HTTP/1.1 framing: bytes in, [`Request`] out; [`Response`] in, bytes out.
//!
//! This module knows nothing about chat. `httparse` tokenizes the request
//! line and headers; everything else (body framing, `Transfer-Encoding:
//! chunked`, `Expect: 100-continue`, keep-alive rules, limits, percent
//! decoding) is ours. Parsing is incremental and pure: callers feed the bytes
//! read so far and get back [`Parse::Partial`] until a whole request is there,
//! so pipelined requests are just "parse again on the rest of the buffer".

mod headers;
mod parse;
mod response;
mod url;

pub use headers::Headers;
pub use parse::{HeadLimits, Parse, parse_request};
pub use response::{LAST_CHUNK, Response, write_chunk};
pub use url::{percent_decode, query_pairs};

/// Request methods the server distinguishes. Anything else is `Other` and
/// answers 405 from the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Other,
}

impl Method {
    /// The method's name for logs; `OTHER` for any we do not serve, so a
    /// client cannot put arbitrary text into a log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// One fully framed request. The body is already de-chunked.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Path part of the target, still percent-encoded, always starting with `/`.
    pub path: String,
    /// Query string without the leading `?` (empty when absent), still encoded.
    pub query: String,
    /// Header names are lower-cased; values are raw bytes as sent.
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Whether the connection may serve another request after this one
    /// (HTTP/1.1 default on, `Connection: close` off; HTTP/1.0 default off
    /// unless `Connection: keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.1 rather than 1.0: the client can read a chunked response.
    pub http11: bool,
}

impl Request {
    /// First header with this (lower-case) name, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Everything that can be wrong with the bytes of a request, each mapped to
/// exactly one status by [`HttpError::status`]. After any of these the
/// connection is closed, because framing can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed request line, header, chunk framing or conflicting lengths.
    Malformed(&'static str),
    /// Request line plus headers exceed `head_bytes_max` or `header_count_max`.
    HeadTooLarge,
    /// Declared or decoded body exceeds `body_bytes_max`.
    BodyTooLarge,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferEncoding,
    /// HTTP version other than 1.0 / 1.1.
    UnsupportedVersion,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::UnsupportedVersion => 505,
        }
    }

    /// Stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Malformed(_) => "bad_request",
            HttpError::HeadTooLarge => "headers_too_large",
            HttpError::BodyTooLarge => "body_too_large",
            HttpError::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            HttpError::UnsupportedVersion => "http_version_not_supported",
        }
    }

    pub fn message(&self) -> String {
        match self {
            HttpError::Malformed(what) => format!("malformed request: {what}"),
            HttpError::HeadTooLarge => "request line and headers are too large".into(),
            HttpError::BodyTooLarge => "request body is too large".into(),
            HttpError::UnsupportedTransferEncoding => {
                "only the chunked transfer coding is supported".into()
            }
            HttpError::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported".into(),
        }
    }
}
