//! Response values and their HTTP/1.1 encoding.

use std::io::Write;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Extra headers. `Content-Length` and `Connection` belong to
    /// [`Response::write_to`]; copies here are not written.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        // Room for the headers the router adds to every answer.
        let mut headers = Vec::with_capacity(4);
        headers.push(("Content-Type", "application/json".to_owned()));
        Response {
            status,
            headers,
            body,
        }
    }

    /// The JSON error body every failure uses: `{"error": code, "message": text}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::json!({ "error": code, "message": message });
        Response::json(status, body.to_string().into_bytes())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the status line, headers, `Content-Length`, `Connection:
    /// close` when `!keep_alive`, the blank line and the body. `head_only`
    /// (a HEAD request) omits the body but keeps its `Content-Length`.
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        self.write_status_and_headers(out);
        // RFC 9110 8.6 and 6.4.1: 1xx, 204 and 304 have no body and no
        // length, so a stray body must not be sent either or it would be read
        // as the next response.
        let bodyless = self.status < 200 || self.status == 204 || self.status == 304;
        if !bodyless {
            // Formatted straight into `out`: no string per response.
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && !bodyless {
            out.extend_from_slice(&self.body);
        }
    }

    /// Appends the head of a response whose body follows in pieces:
    /// `Transfer-Encoding: chunked` when `chunked`, else no length at all
    /// (HTTP/1.0: the body ends when the connection closes, so `keep_alive`
    /// must then be false). `self.body` is not written.
    pub fn write_streamed_head(&self, out: &mut Vec<u8>, keep_alive: bool, chunked: bool) {
        self.write_status_and_headers(out);
        if chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The status line and the extra headers; the framing headers are the
    /// writer's own and copies in `headers` are skipped.
    fn write_status_and_headers(&self, out: &mut Vec<u8>) {
        let reason = reason_phrase(self.status);
        let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            if ["content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|owned| name.eq_ignore_ascii_case(owned))
            {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            // Values may echo client input; a stray CR or LF would let it
            // forge headers or a second response.
            out.extend(
                value
                    .bytes()
                    .filter(|&b| b != b'\r' && b != b'\n' && b != 0),
            );
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends one chunk of a chunked body (RFC 9112 7.1); `data` must not be
/// empty, as an empty chunk ends the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(!data.is_empty(), "an empty chunk would end the body");
    let _ = write!(out, "{:X}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Reason phrases are informational only (RFC 9112 4); an unknown code gets
/// an empty one, which the status-line grammar allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(response: &Response, keep_alive: bool, head_only: bool) -> String {
        let mut out = Vec::new();
        response.write_to(&mut out, keep_alive, head_only);
        String::from_utf8(out).expect("test responses are UTF-8")
    }

    #[test]
    fn encodes_exact_bytes() {
        let mut out = b"earlier".to_vec();
        Response::json(200, b"{}".to_vec()).write_to(&mut out, true, false);
        assert_eq!(
            out,
            b"earlierHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec()
        );
    }

    #[test]
    fn close_and_head_only() {
        let response = Response::json(201, b"{\"a\":1}".to_vec()).with_header("Location", "/x");
        assert_eq!(
            encode(&response, false, true),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nLocation: /x\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            encode(&response, false, false),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nLocation: /x\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn bodyless_statuses_have_no_length_or_body() {
        let response = Response::json(204, b"stray".to_vec()).with_header("Allow", "GET");
        assert_eq!(
            encode(&response, true, false),
            "HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\nAllow: GET\r\n\r\n"
        );
        let continue_line = Response {
            status: 100,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(
            encode(&continue_line, true, false),
            "HTTP/1.1 100 Continue\r\n\r\n"
        );
    }

    #[test]
    fn owned_headers_are_not_duplicated() {
        let response = Response::json(200, b"abc".to_vec())
            .with_header("Content-Length", "999")
            .with_header("connection", "keep-alive");
        let text = encode(&response, false, false);
        assert_eq!(text.matches("Content-Length").count(), 1, "{text}");
        assert!(text.contains("Content-Length: 3\r\n"), "{text}");
        assert_eq!(
            text.to_ascii_lowercase().matches("connection").count(),
            1,
            "{text}"
        );
        assert!(text.ends_with("Connection: close\r\n\r\nabc"), "{text}");
    }

    #[test]
    fn streamed_heads_are_chunked_or_close_delimited() {
        let response = Response::json(200, b"ignored".to_vec())
            .with_header("Transfer-Encoding", "gzip")
            .with_header("Content-Length", "7");
        let mut out = Vec::new();
        response.write_streamed_head(&mut out, true, true);
        write_chunk(&mut out, b"{\"a\":[");
        write_chunk(&mut out, &[b'x'; 26]);
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             6\r\n{\"a\":[\r\n1A\r\nxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n"
        );
        let mut out = Vec::new();
        response.write_streamed_head(&mut out, false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let response = Response::json(200, Vec::new()).with_header("X-Id", "a\r\nSet-Cookie: b");
        let text = encode(&response, true, false);
        assert!(text.contains("X-Id: aSet-Cookie: b\r\n"), "{text}");
        assert_eq!(text.matches("\r\n").count(), 5, "{text}");
    }

    #[test]
    fn error_bodies_are_escaped_json() {
        let response = Response::error(400, "bad", "quote \" and \\ newline\n </script> \u{1}");
        assert_eq!(response.status, 400);
        assert_eq!(
            response.headers,
            vec![("Content-Type", "application/json".to_string())]
        );
        let value: serde_json::Value =
            serde_json::from_slice(&response.body).expect("error body is JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "error": "bad",
                "message": "quote \" and \\ newline\n </script> \u{1}",
            })
        );
        assert!(!response.body.contains(&b'\n'));
    }

    #[test]
    fn reason_phrases() {
        let expected = [
            (100, "Continue"),
            (200, "OK"),
            (201, "Created"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (409, "Conflict"),
            (410, "Gone"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (415, "Unsupported Media Type"),
            (422, "Unprocessable Content"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"),
        ];
        for (status, phrase) in expected {
            assert_eq!(reason_phrase(status), phrase, "{status}");
        }
        assert_eq!(reason_phrase(599), "");
        let unknown = Response::json(599, Vec::new());
        assert!(encode(&unknown, true, false).starts_with("HTTP/1.1 599 \r\n"));
    }
}
