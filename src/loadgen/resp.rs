//! The Redis side of the `xadd` scenario: the XADD command as RESP bytes and
//! the framing of one RESP reply. With it the harness measures Redis (with
//! `appendfsync always`) in the same open loop as ProgressDB, so a durable
//! append's latency has a baseline taken the same way on the same machine;
//! redis-benchmark only runs closed loops.

use std::io;

use super::client::invalid;

/// Longest reply line (simple string, error, integer or bulk length)
/// accepted; a longer one is a protocol error.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Largest bulk string accepted (an XADD answers with a short entry id).
const MAX_BULK_BYTES: usize = 1024 * 1024;

/// `XADD stream * text <text>` as a RESP array of bulk strings.
pub fn xadd_command(stream: &str, text: &[u8]) -> Vec<u8> {
    let parts: [&[u8]; 5] = [b"XADD", stream.as_bytes(), b"*", b"text", text];
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One complete reply at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespReply {
    /// Bytes the reply takes.
    pub len: usize,
    /// False for an error reply (`-ERR ...`).
    pub ok: bool,
}

/// Frames the reply at the start of `buf`: a simple string, error, integer
/// or bulk string (arrays are not needed by XADD and are refused).
/// `Ok(None)` means the reply is not complete yet.
pub fn parse_reply(buf: &[u8]) -> io::Result<Option<RespReply>> {
    let Some(line_end) = buf.windows(2).position(|pair| pair == b"\r\n") else {
        if buf.len() > MAX_LINE_BYTES {
            return Err(invalid("reply line too long"));
        }
        return Ok(None);
    };
    if line_end == 0 {
        return Err(invalid("empty reply line"));
    }
    let line = &buf[1..line_end];
    let after_line = line_end + 2;
    match buf[0] {
        b'+' | b':' => Ok(Some(RespReply {
            len: after_line,
            ok: true,
        })),
        b'-' => Ok(Some(RespReply {
            len: after_line,
            ok: false,
        })),
        b'$' if line == b"-1" => Ok(Some(RespReply {
            len: after_line,
            ok: true,
        })),
        b'$' => {
            let length: usize = std::str::from_utf8(line)
                .ok()
                .and_then(|text| text.parse().ok())
                .filter(|&length| length <= MAX_BULK_BYTES)
                .ok_or_else(|| invalid("bad bulk string length"))?;
            let end = after_line + length + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(invalid("bulk string not ended by CRLF"));
            }
            Ok(Some(RespReply { len: end, ok: true }))
        }
        _ => Err(invalid("not a RESP reply the harness expects")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xadd_is_an_array_of_bulk_strings() {
        assert_eq!(
            xadd_command("bench", b"hi there"),
            b"*5\r\n$4\r\nXADD\r\n$5\r\nbench\r\n$1\r\n*\r\n$4\r\ntext\r\n$8\r\nhi there\r\n"
        );
    }

    #[test]
    fn frames_each_reply_kind() {
        let bulk = b"$15\r\n1764676800000-0\r\n+OK";
        assert_eq!(
            parse_reply(bulk).unwrap(),
            Some(RespReply { len: 22, ok: true })
        );
        assert_eq!(
            parse_reply(b"+OK\r\n").unwrap(),
            Some(RespReply { len: 5, ok: true })
        );
        assert_eq!(
            parse_reply(b":12\r\n").unwrap(),
            Some(RespReply { len: 5, ok: true })
        );
        assert_eq!(
            parse_reply(b"$-1\r\n").unwrap(),
            Some(RespReply { len: 5, ok: true })
        );
        assert_eq!(
            parse_reply(b"-ERR wrong type\r\n").unwrap(),
            Some(RespReply { len: 17, ok: false })
        );
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let bulk = b"$15\r\n1764676800000-0\r\n";
        for cut in 0..bulk.len() {
            assert_eq!(parse_reply(&bulk[..cut]).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn no_short_input_makes_it_panic() {
        let alphabet = b"$-+:*1x\r\n";
        for len in 0..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let input: Vec<u8> = (0..len)
                    .map(|_| {
                        let byte = alphabet[n % alphabet.len()];
                        n /= alphabet.len();
                        byte
                    })
                    .collect();
                let _ = parse_reply(&input);
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_reply() {
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_reply(b"\r\n").is_err());
        assert!(parse_reply(b"*1\r\n+OK\r\n").is_err());
        assert!(parse_reply(b"$x\r\n").is_err());
        assert!(parse_reply(b"$2\r\nabcd").is_err());
        assert!(parse_reply(b"$99999999999\r\n").is_err());
        assert!(parse_reply(&vec![b'+'; MAX_LINE_BYTES + 1]).is_err());
    }
}
