//! RESP2 as a Redis client speaks it: commands out as arrays of bulk
//! strings, replies in (all five types, nested). Blocking sockets with
//! deadlines: these run on the Redis threads, never on a worker.
//!
//! The gateway's own codec (`backend::resp`) is the server side of the same
//! protocol; the store cannot use it without importing the backend, which
//! imports the store.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::config::RedisAddr;

/// Longest reply line or bulk we accept from Redis: more means a
/// confused peer (our payloads are at most `mailbox.max-message-size`,
/// which the config caps well below this).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// Deepest nesting of arrays we accept (XRANGE inside a reply is 3).
const MAX_DEPTH: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(Some(b)) => Some(b),
            Reply::Simple(s) => Some(s.into_bytes()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Appends one command.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(64 * 1024).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !buf.ends_with(b"\r\n") {
        return Err(bad("reply line without CRLF"));
    }
    buf.truncate(buf.len() - 2);
    Ok(buf)
}

fn number(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad number in reply"))
}

/// Reads one whole reply.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    read_depth(r, 0)
}

fn read_depth(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(bad("reply nested too deep"));
    }
    let head = line(r)?;
    let (kind, rest) = head.split_first().ok_or_else(|| bad("empty reply line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(number(rest)?),
        b'$' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let n = n as usize;
            if n > MAX_BULK {
                return Err(bad("bulk reply too long"));
            }
            let mut data = vec![0; n + 2];
            r.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(bad("bulk reply without CRLF"));
            }
            data.truncate(n);
            Reply::Bulk(Some(data))
        }
        b'*' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                items.push(read_depth(r, depth + 1)?);
            }
            Reply::Array(Some(items))
        }
        _ => return Err(bad("unknown reply type")),
    })
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One connection to Redis: reads buffered, writes whole.
pub struct Conn {
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Conn {
    /// Connects within `timeout`; every later read and write must also
    /// finish within it, or fail (a stuck Redis is a down Redis).
    pub fn open(addr: &RedisAddr, timeout: Duration) -> io::Result<Conn> {
        let (reader, writer) = match addr {
            RedisAddr::Tcp { host, port, .. } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut found = None;
                for a in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = found.ok_or(last)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                (Stream::Tcp(s.try_clone()?), Stream::Tcp(s))
            }
            RedisAddr::Unix { path } => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                (Stream::Unix(s.try_clone()?), Stream::Unix(s))
            }
        };
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, reader),
            writer,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn read(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }

    /// One command, its reply; a Redis error reply is an `Err` too.
    pub fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::new();
        command(&mut out, args);
        self.send(&out)?;
        match self.read()? {
            Reply::Error(e) => Err(io::Error::other(e)),
            reply => Ok(reply),
        }
    }

    /// AUTH (when a password is set) and SELECT: what every new
    /// connection says first.
    pub fn handshake(&mut self, password: Option<&str>, db: u32) -> io::Result<()> {
        if let Some(password) = password {
            let mut words: Vec<&[u8]> = vec![b"AUTH"];
            words.extend(password.splitn(2, ' ').map(str::as_bytes));
            self.call(&words)?;
        }
        if db != 0 {
            self.call(&[b"SELECT", db.to_string().as_bytes()])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_replies_parse_at_every_split() {
        let bytes = b"*3\r\n$4\r\n1700\r\n:5\r\n*2\r\n*2\r\n$3\r\n4-0\r\n*2\r\n$1\r\nd\r\n$2\r\nhi\r\n$-1\r\n";
        let want = Reply::Array(Some(vec![
            Reply::Bulk(Some(b"1700".to_vec())),
            Reply::Int(5),
            Reply::Array(Some(vec![
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"4-0".to_vec())),
                    Reply::Array(Some(vec![
                        Reply::Bulk(Some(b"d".to_vec())),
                        Reply::Bulk(Some(b"hi".to_vec())),
                    ])),
                ])),
                Reply::Bulk(None),
            ])),
        ]));
        assert_eq!(read_reply(&mut &bytes[..]).unwrap(), want);
        // A reply cut anywhere is an error (EOF), never a wrong value.
        for cut in 0..bytes.len() {
            assert!(read_reply(&mut &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut r = &b"-ERR no\r\n+OK\r\n"[..];
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("OK".into()));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"FCALL", b"f", b"1", b"a b"]);
        assert_eq!(
            out,
            b"*4\r\n$5\r\nFCALL\r\n$1\r\nf\r\n$1\r\n1\r\n$3\r\na b\r\n"
        );
    }
}
