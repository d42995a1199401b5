//! PostgreSQL v3 framing: splitting the client's bytes into messages and
//! writing the server's messages. Pure functions on byte slices, no I/O, so
//! every length and terminator a client sends is checked here before any
//! other code sees it.

/// `SSLRequest`'s code: answered `N` (no TLS yet), then a normal startup.
pub const SSL_REQUEST: i32 = 80_877_103;
/// `GSSENCRequest`'s code: answered `N` like `SSLRequest`.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// `CancelRequest`'s code: queries here cannot be cancelled, so it is ignored.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Protocol 3.0 in a `StartupMessage`.
pub const PROTOCOL_3_0: i32 = 196_608;
/// PostgreSQL's own limit on a startup packet; a longer one is hostile.
pub const STARTUP_BYTES_MAX: usize = 10_000;

/// Why the connection cannot continue: answered with one ErrorResponse
/// (FATAL), then closed, since the framing can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub code: &'static str,
    pub message: String,
}

impl Fatal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
        }
    }

    fn protocol(message: impl Into<String>) -> Fatal {
        Fatal::new("08P01", message)
    }
}

/// The first packet of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    /// SSLRequest or GSSENCRequest: answer `N`, expect another packet.
    Encryption,
    Cancel,
    Start {
        params: Vec<(String, String)>,
    },
}

/// A startup packet at the front of `input`, with the bytes it took;
/// `Ok(None)` while incomplete.
pub fn parse_startup(input: &[u8]) -> Result<Option<(Startup, usize)>, Fatal> {
    let Some(length) = read_length(input)? else {
        return Ok(None);
    };
    if !(8..=STARTUP_BYTES_MAX).contains(&length) {
        return Err(Fatal::protocol(format!(
            "invalid startup packet length {length}"
        )));
    }
    if input.len() < length {
        return Ok(None);
    }
    let mut reader = Reader::new(&input[4..length]);
    let code = reader.i32()?;
    let startup = match code {
        SSL_REQUEST | GSSENC_REQUEST => Startup::Encryption,
        CANCEL_REQUEST => Startup::Cancel,
        PROTOCOL_3_0 => Startup::Start {
            params: startup_params(&mut reader)?,
        },
        other => {
            return Err(Fatal::new(
                "0A000",
                format!(
                    "unsupported frontend protocol {}.{}: server supports 3.0",
                    other >> 16,
                    other & 0xffff
                ),
            ));
        }
    };
    Ok(Some((startup, length)))
}

/// The StartupMessage a client sends with `params` (the client side, for
/// tests and tools that speak raw protocol).
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (name, value) in params {
        cstr(&mut body, name);
        cstr(&mut body, value);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

/// `name\0value\0 … \0`: every string terminated, names unique-ish, nothing
/// after the final terminator.
fn startup_params(reader: &mut Reader<'_>) -> Result<Vec<(String, String)>, Fatal> {
    let mut params = Vec::new();
    loop {
        let name = reader.cstr()?;
        if name.is_empty() {
            break;
        }
        let value = reader.cstr()?;
        params.push((name.to_owned(), value.to_owned()));
    }
    if !reader.is_empty() {
        return Err(Fatal::protocol(
            "trailing bytes after the startup parameters",
        ));
    }
    Ok(params)
}

/// A framed message: its type byte, its body, and the bytes it took from
/// the input (header included).
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub tag: u8,
    pub body: &'a [u8],
    pub used: usize,
}

/// A regular message at the front of `input`: its type byte, its body and
/// the bytes it took; `Ok(None)` while incomplete. A length over
/// `body_bytes_max` is refused before the body is waited for, so a client
/// cannot make the server buffer it.
pub fn parse_message(input: &[u8], body_bytes_max: usize) -> Result<Option<Message<'_>>, Fatal> {
    let Some(&tag) = input.first() else {
        return Ok(None);
    };
    let Some(length) = read_length(&input[1..])? else {
        return Ok(None);
    };
    if length < 4 {
        return Err(Fatal::protocol(format!("invalid message length {length}")));
    }
    if length - 4 > body_bytes_max {
        return Err(Fatal::new(
            "54000",
            format!(
                "message of {} bytes is over this server's limit of {body_bytes_max}",
                length - 4
            ),
        ));
    }
    let total = 1 + length;
    if input.len() < total {
        return Ok(None);
    }
    Ok(Some(Message {
        tag,
        body: &input[5..total],
        used: total,
    }))
}

fn read_length(input: &[u8]) -> Result<Option<usize>, Fatal> {
    let Some(bytes) = input.get(..4) else {
        return Ok(None);
    };
    let length = i32::from_be_bytes(bytes.try_into().expect("four bytes"));
    usize::try_from(length)
        .map(Some)
        .map_err(|_| Fatal::protocol(format!("invalid message length {length}")))
}

/// Reads a message body field by field; every read is bounds-checked and a
/// short body is a protocol violation, never a panic.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn take(&mut self, count: usize) -> Result<&'a [u8], Fatal> {
        if self.bytes.len() < count {
            return Err(Fatal::protocol("message is shorter than its fields"));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Fatal> {
        Ok(self.take(1)?[0])
    }

    pub fn i16(&mut self) -> Result<i16, Fatal> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("two bytes"),
        ))
    }

    pub fn i32(&mut self) -> Result<i32, Fatal> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("four bytes"),
        ))
    }

    /// A count field: never negative.
    pub fn count16(&mut self) -> Result<usize, Fatal> {
        usize::try_from(self.i16()?).map_err(|_| Fatal::protocol("negative count"))
    }

    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<&'a str, Fatal> {
        let end = self
            .bytes
            .iter()
            .position(|&byte| byte == 0)
            .ok_or_else(|| Fatal::protocol("unterminated string"))?;
        let text = std::str::from_utf8(&self.bytes[..end])
            .map_err(|_| Fatal::new("22021", "invalid UTF-8 in a string field"))?;
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }

    /// The body of Describe and Close: a kind byte (`S` statement, `P`
    /// portal) and a name, nothing after.
    pub fn kind_and_name(mut self) -> Result<(u8, &'a str), Fatal> {
        let kind = self.u8()?;
        let name = self.cstr()?;
        self.finish()?;
        Ok((kind, name))
    }

    /// The rest must be empty: a message with extra bytes is malformed.
    pub fn finish(&self) -> Result<(), Fatal> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Fatal::protocol("trailing bytes in a message"))
        }
    }
}

/// Server messages appended to one output buffer, flushed by the caller.
#[derive(Default)]
pub struct Out {
    pub bytes: Vec<u8>,
}

impl Out {
    /// Appends one message of type `tag` whose body `body` writes.
    pub fn message(&mut self, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
        self.bytes.push(tag);
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        body(&mut self.bytes);
        // Bodies are bounded by page limits, far below 2 GiB.
        let length = (self.bytes.len() - at) as i32;
        self.bytes[at..at + 4].copy_from_slice(&length.to_be_bytes());
    }

    /// AuthenticationSASL offering one mechanism.
    pub fn auth_sasl(&mut self, mechanism: &str) {
        self.message(b'R', |body| {
            body.extend_from_slice(&10i32.to_be_bytes());
            cstr(body, mechanism);
            body.push(0);
        });
    }

    /// AuthenticationSASLContinue (11) or AuthenticationSASLFinal (12).
    pub fn auth_sasl_data(&mut self, code: i32, data: &str) {
        self.message(b'R', |body| {
            body.extend_from_slice(&code.to_be_bytes());
            body.extend_from_slice(data.as_bytes());
        });
    }

    pub fn auth_ok(&mut self) {
        self.message(b'R', |body| body.extend_from_slice(&0i32.to_be_bytes()));
    }

    pub fn parameter_status(&mut self, name: &str, value: &str) {
        self.message(b'S', |body| {
            cstr(body, name);
            cstr(body, value);
        });
    }

    pub fn backend_key_data(&mut self, pid: i32, secret: i32) {
        self.message(b'K', |body| {
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&secret.to_be_bytes());
        });
    }

    pub fn ready(&mut self, status: u8) {
        self.message(b'Z', |body| body.push(status));
    }

    /// ErrorResponse (`E`) or NoticeResponse (`N`) with severity, SQLSTATE
    /// and message.
    pub fn error(&mut self, tag: u8, severity: &str, code: &str, message: &str) {
        self.message(tag, |body| {
            for (field, value) in [
                (b'S', severity),
                (b'V', severity),
                (b'C', code),
                (b'M', message),
            ] {
                body.push(field);
                cstr(body, value);
            }
            body.push(0);
        });
    }

    pub fn command_complete(&mut self, tag: &str) {
        self.message(b'C', |body| cstr(body, tag));
    }

    pub fn empty_query(&mut self) {
        self.message(b'I', |_| {});
    }
}

/// Appends `text` and its NUL terminator. Text we send never holds NUL:
/// values are validated ids or JSON, and messages are ours.
pub fn cstr(body: &mut Vec<u8>, text: &str) {
    body.extend(text.bytes().filter(|&byte| byte != 0));
    body.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_packets_are_framed_and_checked() {
        let packet = startup_packet(&[("user", "alice"), ("database", "chat")]);
        let (parsed, used) = parse_startup(&packet).unwrap().unwrap();
        assert_eq!(used, packet.len());
        assert_eq!(
            parsed,
            Startup::Start {
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "chat".into())
                ]
            }
        );
        for cut in 0..packet.len() {
            assert_eq!(parse_startup(&packet[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut unterminated = packet.clone();
        let last = unterminated.len() - 1;
        unterminated[last] = b'x';
        assert!(parse_startup(&unterminated).is_err());
        let huge = (1_000_000i32).to_be_bytes();
        assert!(parse_startup(&huge).is_err());
        let negative = (-5i32).to_be_bytes();
        assert!(parse_startup(&negative).is_err());
        let mut ssl = 8i32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        assert_eq!(parse_startup(&ssl).unwrap(), Some((Startup::Encryption, 8)));
    }

    #[test]
    fn messages_over_the_limit_are_refused_before_their_body_arrives() {
        let mut message = vec![b'Q'];
        message.extend_from_slice(&(4 + 100i32).to_be_bytes());
        let err = parse_message(&message, 50).unwrap_err();
        assert_eq!(err.code, "54000");
        assert_eq!(parse_message(&message, 200).unwrap(), None);
        let short = [b'Q', 0, 0, 0, 3];
        assert!(parse_message(&short, 200).is_err());
    }

    #[test]
    fn readers_never_read_past_the_body() {
        let mut reader = Reader::new(&[0, 1, b'a']);
        assert_eq!(reader.i16().unwrap(), 1);
        assert!(reader.cstr().is_err());
        assert!(Reader::new(&[0xff, 0xff]).count16().is_err());
        assert!(Reader::new(&[1]).i32().is_err());
    }

    /// Random bytes as a startup packet, a message stream and message
    /// fields: every read is bounds-checked, nothing panics.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::rng::XorShift::new(0xc0dec);
        for _ in 0..50_000 {
            let length = rng.below(24);
            let bytes: Vec<u8> = (0..length)
                .map(|_| match rng.below(4) {
                    0 => 0,
                    1 => rng.below(16) as u8,
                    _ => rng.next_u64() as u8,
                })
                .collect();
            let _ = parse_startup(&bytes);
            let _ = parse_message(&bytes, 16);
            let mut reader = Reader::new(&bytes);
            while reader.count16().is_ok() && reader.cstr().is_ok() && reader.i32().is_ok() {}
        }
    }
}
