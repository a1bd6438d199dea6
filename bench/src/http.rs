//! Just enough HTTP/1.1 for a load generator: read a response head, undo
//! chunked framing incrementally, and pick SSE `data:` lines and message
//! stamps out of a body. Each server under test frames the same payloads
//! its own way; these parsers read all of them.

/// A response head: status and lower-cased headers.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a head from the start of `buf`; returns it and its length, or
/// None if the head is not complete yet.
pub fn parse_head(buf: &[u8]) -> Option<(Head, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((Head { status, headers }, end))
}

/// Undoes `Transfer-Encoding: chunked` a piece at a time; passes other
/// bodies through.
pub struct Dechunker {
    chunked: bool,
    /// Bytes left in the current chunk's data, or None while reading a size line.
    remaining: Option<usize>,
    line: Vec<u8>,
    /// CRLF after a chunk's data still to skip.
    skip: usize,
}

impl Dechunker {
    pub fn new(head: &Head) -> Dechunker {
        let chunked = head
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        Dechunker {
            chunked,
            remaining: None,
            line: Vec::new(),
            skip: 0,
        }
    }

    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if !self.chunked {
            out.extend_from_slice(input);
            return;
        }
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                self.skip -= n;
                input = &input[n..];
                continue;
            }
            match self.remaining {
                Some(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if n == left {
                        self.remaining = None;
                        self.skip = 2;
                    } else {
                        self.remaining = Some(left - n);
                    }
                }
                None => {
                    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(input);
                        return;
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let text = String::from_utf8_lossy(&self.line);
                    let size =
                        usize::from_str_radix(text.trim().split(';').next().unwrap_or(""), 16)
                            .unwrap_or(0);
                    self.line.clear();
                    self.remaining = Some(size);
                    if size == 0 {
                        self.remaining = None;
                        self.skip = 2;
                    }
                }
            }
        }
    }
}

/// A payload stamp: the sequence number and the send time (ns since the
/// epoch) that every published payload starts with: `S<seq>:<ns>;`.
pub fn stamp(seq: u64, sent_ns: u64) -> String {
    format!("S{seq}:{sent_ns};")
}

/// Finds every stamp in `text` (an SSE stream, a JSON body, a raw message):
/// whatever framing a server adds, the stamp's characters pass unescaped.
pub fn find_stamps(text: &[u8], mut each: impl FnMut(u64, u64)) -> usize {
    let mut i = 0;
    let mut last_end = 0;
    while let Some(pos) = text[i..].iter().position(|&b| b == b'S') {
        let start = i + pos + 1;
        let mut j = start;
        let mut seq = 0u64;
        while j < text.len() && text[j].is_ascii_digit() {
            seq = seq * 10 + u64::from(text[j] - b'0');
            j += 1;
        }
        if j > start && j < text.len() && text[j] == b':' {
            let ns_start = j + 1;
            let mut k = ns_start;
            let mut ns = 0u64;
            while k < text.len() && text[k].is_ascii_digit() {
                ns = ns * 10 + u64::from(text[k] - b'0');
                k += 1;
            }
            if k > ns_start && k < text.len() && text[k] == b';' {
                each(seq, ns);
                last_end = k + 1;
                i = k + 1;
                continue;
            }
        }
        i = start;
    }
    last_end
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_in_any_framing() {
        let mut got = Vec::new();
        let text = b"id: 1\ndata: S12:345;\n\n{\"data\":\"S13:346;x\"} S9:1 S14:347;";
        let end = find_stamps(text, |s, n| got.push((s, n)));
        assert_eq!(got, vec![(12, 345), (13, 346), (14, 347)]);
        assert_eq!(end, text.len());
    }

    #[test]
    fn dechunks_at_every_split() {
        let body = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let head = Head {
            status: 200,
            headers: vec![("transfer-encoding".into(), "chunked".into())],
        };
        for cut in 0..body.len() {
            let mut d = Dechunker::new(&head);
            let mut out = Vec::new();
            d.feed(&body[..cut], &mut out);
            d.feed(&body[cut..], &mut out);
            assert_eq!(out, b"hello world", "cut at {cut}");
        }
    }
}
