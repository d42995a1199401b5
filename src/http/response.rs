//! Response values and their HTTP/1.1 encoding.

use std::io::Write;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Extra headers; `Content-Length` and `Connection` are written by
    /// [`Response::write_to`] and must not be added here.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".to_owned())],
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

    /// Appends the encoded response. `head_only` omits the body (for HEAD)
    /// but keeps its `Content-Length`.
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        // 1xx, 204 and 304 carry no body and no length (RFC 9110 8.6).
        if !(self.status < 200 || self.status == 204 || self.status == 304) {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_exact_bytes() {
        let mut out = Vec::new();
        Response::json(200, b"{}".to_vec()).write_to(&mut out, true, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec()
        );
    }

    #[test]
    fn close_head_and_no_content() {
        let mut out = Vec::new();
        Response::json(200, b"{}".to_vec()).write_to(&mut out, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
        let mut out = Vec::new();
        Response::json(204, Vec::new()).write_to(&mut out, true, false);
        assert!(!String::from_utf8(out).unwrap().contains("Content-Length"));
    }

    #[test]
    fn error_bodies_are_escaped_json() {
        let response = Response::error(400, "bad", "quote \" and \\ newline\n");
        let value: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(value["error"], "bad");
        assert_eq!(value["message"], "quote \" and \\ newline\n");
    }
}
