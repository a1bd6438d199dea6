//! Request bodies in the chunked transfer coding (RFC 9112 7.1), which
//! Node's `http.request` uses when a body is written without a length (the
//! CometD Node client does). Only POSTs carry bodies, and only Bayeux reads
//! them; the decoder is strict and bounded: a chunk-size line or a trailer
//! section longer than [`MAX_LINE`], or a body over the caller's limit, is
//! refused.

/// Longest chunk-size line (with extensions) or trailer section we read.
pub const MAX_LINE: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// The decoded body and how many bytes of input it took.
    Complete(Vec<u8>, usize),
    Partial,
    TooLarge,
    Invalid(&'static str),
}

/// Decodes a whole chunked body at the start of `buf`.
pub fn decode(buf: &[u8], max_body: usize) -> Chunked {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_end) = find_crlf(&buf[pos..], MAX_LINE) else {
            return if buf.len() - pos > MAX_LINE {
                Chunked::Invalid("chunk-size line too long")
            } else {
                Chunked::Partial
            };
        };
        let line = &buf[pos..pos + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = size_text.trim_ascii_end();
        if size_text.is_empty()
            || size_text.len() > 8
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Chunked::Invalid("invalid chunk size");
        }
        // At most 8 hex digits: fits in a usize.
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap_or("0"), 16)
            .unwrap_or(usize::MAX);
        pos += line_end + 2;
        if size == 0 {
            // Trailer fields (ignored) up to the empty line.
            let rest = &buf[pos..];
            if rest.starts_with(b"\r\n") {
                return Chunked::Complete(body, pos + 2);
            }
            return match rest.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(i) if i <= MAX_LINE => Chunked::Complete(body, pos + i + 4),
                Some(_) => Chunked::Invalid("trailer section too long"),
                None if rest.len() > MAX_LINE => Chunked::Invalid("trailer section too long"),
                None => Chunked::Partial,
            };
        }
        if body.len() + size > max_body {
            return Chunked::TooLarge;
        }
        if buf.len() < pos + size + 2 {
            return Chunked::Partial;
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Chunked::Invalid("chunk data not followed by CRLF");
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

fn find_crlf(buf: &[u8], limit: usize) -> Option<usize> {
    buf.windows(2).take(limit + 1).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_at_every_split_and_keeps_what_follows() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\nGET /next";
        let end = wire.len() - b"GET /next".len();
        assert_eq!(
            decode(wire, 100),
            Chunked::Complete(b"hello, world".to_vec(), end)
        );
        for cut in 0..end {
            assert_eq!(decode(&wire[..cut], 100), Chunked::Partial, "cut at {cut}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 0), Chunked::Complete(Vec::new(), 5));
    }

    #[test]
    fn refuses_bad_sizes_missing_crlf_and_oversize() {
        assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n", 4), Chunked::TooLarge);
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"123456789\r\n",
            b"3\r\nabcd\r\n",
            b"-1\r\n",
        ] {
            assert!(matches!(decode(bad, 100), Chunked::Invalid(_)), "{bad:?}");
        }
        let long = [b'1'; MAX_LINE + 10];
        assert!(matches!(decode(&long, 100), Chunked::Invalid(_)));
    }
}
