//! Request heads in: a pure function over byte slices, so every rule is
//! unit-testable and fuzzable.
//!
//! We only ever answer GET/HEAD/OPTIONS on a handful of paths, so the parser
//! is strict where leniency would open request-smuggling holes: both
//! Content-Length and Transfer-Encoding, a repeated Content-Length, or a
//! request body in a transfer coding other than a POST's plain `chunked`
//! (`chunked`, the decoder) are refused outright.

use super::{Method, Status};

/// More headers than this is 431: browsers send ~15, proxies add a few.
const MAX_HEADERS: usize = 64;

/// A request head, borrowing from the read buffer.
#[derive(Debug, Default)]
pub struct Request<'b> {
    pub method: Option<Method>,
    pub path: &'b [u8],
    pub query: &'b [u8],
    /// HTTP/1.1 (true) or HTTP/1.0.
    pub http11: bool,
    pub keep_alive: bool,
    pub content_length: u64,
    /// A POST body in `Transfer-Encoding: chunked` follows the head.
    pub chunked: bool,
    pub host: Option<&'b [u8]>,
    pub accept_event_stream: bool,
    pub last_event_id: Option<&'b [u8]>,
    pub origin: Option<&'b [u8]>,
    pub authorization: Option<&'b [u8]>,
    pub cookie: Option<&'b [u8]>,
    pub if_none_match: Option<&'b [u8]>,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub websocket_key: Option<&'b [u8]>,
    pub websocket_version: Option<&'b [u8]>,
    pub referer: Option<&'b [u8]>,
    /// `Accept-Encoding` lists gzip (with a q-value above 0).
    pub accepts_gzip: bool,
}

impl Request<'_> {
    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'b> {
    /// A whole head of `head_len` bytes; its body (Content-Length bytes)
    /// follows it in the buffer.
    Complete(Request<'b>, usize),
    Partial,
    Invalid(Status, &'static str),
}

impl PartialEq for Request<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.query == other.query && self.method == other.method
    }
}
impl Eq for Request<'_> {}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

pub fn parse_request(buf: &[u8], max_head: usize) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max_head => {
            return Parsed::Invalid(Status::HeaderFieldsTooLarge, "request header too large");
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Parsed::Invalid(Status::HeaderFieldsTooLarge, "request header too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid(Status::HeaderFieldsTooLarge, "too many header fields");
        }
        Err(httparse::Error::Version) => {
            return Parsed::Invalid(
                Status::VersionNotSupported,
                "only HTTP/1.0 and HTTP/1.1 are served",
            );
        }
        Err(_) => return Parsed::Invalid(Status::BadRequest, "malformed request"),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let Some(target) = request_target(req.path.unwrap_or("").as_bytes(), method) else {
        return Parsed::Invalid(
            Status::BadRequest,
            "request target must be an absolute path, an absolute URI, or * with OPTIONS",
        );
    };
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &target[target.len()..]),
    };
    let http11 = req.version == Some(1);
    let mut out = Request {
        method: Some(method),
        path,
        query,
        http11,
        keep_alive: http11,
        ..Request::default()
    };
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            // A repeated Content-Length is a smuggling shape even when the
            // values agree: refuse instead of guessing what a proxy did.
            if content_length.is_some() {
                return Parsed::Invalid(Status::BadRequest, "repeated Content-Length");
            }
            let valid =
                !value.is_empty() && value.len() <= 18 && value.iter().all(u8::is_ascii_digit);
            if !valid {
                return Parsed::Invalid(Status::BadRequest, "invalid Content-Length");
            }
            content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Repeated, it is a list of codings: not plain chunked.
            transfer_encoding = match transfer_encoding {
                None => Some(value),
                Some(_) => Some(b"repeated"),
            };
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            out.host = Some(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(value, b"close") {
                out.keep_alive = false;
            } else if has_token(value, b"keep-alive") {
                out.keep_alive = true;
            }
            out.connection_upgrade = has_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"accept") {
            out.accept_event_stream |= has_token_prefix(value, b"text/event-stream");
        } else if name.eq_ignore_ascii_case(b"last-event-id") {
            out.last_event_id = Some(value);
        } else if name.eq_ignore_ascii_case(b"origin") {
            out.origin = Some(value);
        } else if name.eq_ignore_ascii_case(b"authorization") {
            out.authorization = Some(value);
        } else if name.eq_ignore_ascii_case(b"cookie") {
            out.cookie = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            out.if_none_match = Some(value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            out.upgrade_websocket = has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            out.websocket_key = Some(value);
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            out.websocket_version = Some(value);
        } else if name.eq_ignore_ascii_case(b"referer") {
            out.referer = Some(value);
        } else if name.eq_ignore_ascii_case(b"accept-encoding") {
            out.accepts_gzip |= accepts_coding(value, b"gzip");
        }
    }
    if let Some(coding) = transfer_encoding {
        if content_length.is_some() {
            return Parsed::Invalid(
                Status::BadRequest,
                "both Content-Length and Transfer-Encoding",
            );
        }
        // Only POSTs (Bayeux) take a body, and Node's HTTP client sends
        // them chunked; any other coding, or a body on another method, is
        // attack surface for no user.
        if method == Method::Post && http11 && coding.eq_ignore_ascii_case(b"chunked") {
            out.chunked = true;
        } else {
            return Parsed::Invalid(
                Status::NotImplemented,
                "request bodies in a transfer coding are not accepted",
            );
        }
    }
    if http11 && hosts != 1 {
        return Parsed::Invalid(
            Status::BadRequest,
            "HTTP/1.1 requires exactly one Host header",
        );
    }
    out.content_length = content_length.unwrap_or(0);
    Parsed::Complete(out, head_len)
}

/// The path and query of a request target (RFC 9112 3.2): the origin form
/// `/path?q`; the absolute form `http://host/path?q`, which a server MUST
/// accept (3.2.2; the authority is ignored, as Host is what routes); and
/// `*`, only with OPTIONS (3.2.4).
fn request_target(target: &[u8], method: Method) -> Option<&[u8]> {
    if target.starts_with(b"/") {
        return Some(target);
    }
    if target == b"*" {
        return (method == Method::Options).then_some(target);
    }
    let scheme_len = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..scheme_len];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = target[scheme_len + 1..].strip_prefix(b"//")?;
    let path_start = rest.iter().position(|&b| b == b'/' || b == b'?')?;
    match rest[path_start] {
        b'/' => Some(&rest[path_start..]),
        // `http://host?q` has an empty path, which is `/`; not worth a copy.
        _ => None,
    }
}

/// Whether an `Accept-Encoding` value accepts `coding` (RFC 9110 12.5.3):
/// listed, and not with `q=0`.
fn accepts_coding(value: &[u8], coding: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let mut params = item.split(|&b| b == b';');
        let name = params.next().unwrap_or_default().trim_ascii();
        name.eq_ignore_ascii_case(coding)
            && !params.any(|p| {
                let p = p.trim_ascii();
                p.len() >= 2
                    && p[..2].eq_ignore_ascii_case(b"q=")
                    && p[2..].iter().all(|&b| b == b'0' || b == b'.')
            })
    })
}

/// `Accept: text/event-stream` may carry parameters or q-values.
fn has_token_prefix(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|part| {
        let part = part.trim_ascii();
        part.len() >= token.len() && part[..token.len()].eq_ignore_ascii_case(token)
    })
}

/// Iterates `key=value` pairs of a query string, percent-decoded.
pub fn query_pairs(query: &[u8]) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            (percent_decode(k, true), percent_decode(v, true))
        })
}

/// Decodes `%XX` (and `+` as space in query strings). Malformed escapes are
/// kept literally; validation of the result happens where it is used.
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if i + 2 < input.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(input[i + 1]), hex(input[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Parsed<'_> {
        parse_request(raw.as_bytes(), 8192)
    }

    #[test]
    fn simple_get_at_every_split() {
        let raw = "GET /mailbox/alice?since=1.1-0000000001 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Parsed::Partial, "cut at {cut}");
        }
        let Parsed::Complete(req, n) = parse(raw) else {
            panic!()
        };
        assert_eq!(n, raw.len());
        assert_eq!(req.method(), Method::Get);
        assert_eq!(req.path, b"/mailbox/alice");
        assert_eq!(req.query, b"since=1.1-0000000001");
        assert!(req.http11 && req.keep_alive && req.accept_event_stream);
        assert_eq!(req.last_event_id, Some(&b"7"[..]));
    }

    #[test]
    fn keep_alive_rules() {
        let Parsed::Complete(r, _) = parse("GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!r.keep_alive && !r.http11);
        let Parsed::Complete(r, _) = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        else {
            panic!()
        };
        assert!(r.keep_alive);
        let Parsed::Complete(r, _) =
            parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!r.keep_alive);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\0\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET nope HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http:/a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("\0\0\0\r\n\r\n", 400),
        ];
        for (raw, code) in cases {
            match parse(raw) {
                Parsed::Invalid(status, _) => assert_eq!(status.code(), code, "{raw:?}"),
                other => panic!("{raw:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn head_size_limit_is_431() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert!(matches!(
            parse(&big),
            Parsed::Invalid(Status::HeaderFieldsTooLarge, _)
        ));
        // Even before the head is complete.
        assert!(matches!(
            parse(&big[..8500]),
            Parsed::Invalid(Status::HeaderFieldsTooLarge, _)
        ));
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(matches!(
            parse(&raw),
            Parsed::Invalid(Status::HeaderFieldsTooLarge, _)
        ));
    }

    #[test]
    fn query_decoding() {
        let pairs: Vec<_> = query_pairs(b"a=1&b=%41%2f+x&c&=z&d=%zz%4").collect();
        assert_eq!(
            pairs,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"A/ x".to_vec()),
                (b"c".to_vec(), b"".to_vec()),
                (b"".to_vec(), b"z".to_vec()),
                (b"d".to_vec(), b"%zz%4".to_vec()),
            ]
        );
    }

    #[test]
    fn absolute_form_and_asterisk_are_accepted() {
        let Parsed::Complete(r, _) = parse(
            "GET http://example.com:8080/mailbox/alice?since=x HTTP/1.1\r\nHost: example.com\r\n\r\n",
        ) else {
            panic!()
        };
        assert_eq!(r.path, b"/mailbox/alice");
        assert_eq!(r.query, b"since=x");
        let Parsed::Complete(r, _) = parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n") else {
            panic!()
        };
        assert_eq!((r.method(), r.path), (Method::Options, &b"*"[..]));
    }

    #[test]
    fn gzip_acceptance_follows_q_values() {
        for (value, gzip) in [
            ("gzip, deflate, br", true),
            ("br;q=1, GZIP;q=0.5", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0", false),
            ("identity", false),
            ("x-gzip", false),
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: {value}\r\n\r\n");
            let Parsed::Complete(r, _) = parse(&raw) else {
                panic!()
            };
            assert_eq!(r.accepts_gzip, gzip, "{value}");
        }
    }
}
