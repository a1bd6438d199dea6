//! Response heads out: the status line and the headers every response
//! carries, written into a buffer. No sockets here.

use std::io::Write;

use super::Status;

/// Writes a status line and the headers every response carries.
pub fn write_head(out: &mut Vec<u8>, status: Status, http11: bool, date: &[u8]) {
    let version: &[u8] = if http11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " };
    out.extend_from_slice(version);
    // itoa, not `write!`: every response, every long-poll delivery, has a head.
    out.extend_from_slice(itoa::Buffer::new().format(status.code()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"Server: cometbox/");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
}

pub fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn write_content_length(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The connection header a response needs given what was asked: HTTP/1.1
/// keeps alive unless told otherwise, HTTP/1.0 only when asked.
pub fn write_connection(out: &mut Vec<u8>, http11: bool, keep_alive: bool) {
    match (http11, keep_alive) {
        (true, false) => out.extend_from_slice(b"Connection: close\r\n"),
        (false, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        _ => {}
    }
}

/// Chunk header for chunked transfer coding.
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    let _ = write!(out, "{len:x}\r\n");
}

/// The cached `Date` header value, refreshed once a second by the worker.
pub struct DateCache {
    value: Vec<u8>,
    second: u64,
}

impl Default for DateCache {
    fn default() -> Self {
        let mut cache = DateCache {
            value: Vec::new(),
            second: u64::MAX,
        };
        cache.refresh();
        cache
    }
}

impl DateCache {
    pub fn refresh(&mut self) {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.value = httpdate::fmt_http_date(now).into_bytes();
        }
    }

    pub fn get(&self) -> &[u8] {
        &self.value
    }
}
