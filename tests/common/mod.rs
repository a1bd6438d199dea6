//! Test harness: starts the real `cometbox` binary on a temporary config
//! (ephemeral port, socket in a temp dir) and speaks HTTP and RESP to it over
//! real sockets. Each test file includes this with `mod common;`.
#![allow(dead_code)]

pub mod redis;
pub mod ws;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cometbox");

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

/// The config every test starts from: loopback, ephemeral port, a socket in
/// the test's own directory. `extra` lines are appended (later keys win).
pub fn base_config(dir: &Path) -> String {
    format!(
        "server.bind = \"127.0.0.1\"\nserver.port = 0\nserver.workers = 2\nmailbox.backend-socket = \"{}\"\n",
        dir.join("gw.sock").display()
    )
}

impl Gateway {
    pub fn start(extra: &str) -> Gateway {
        match Gateway::try_start(extra) {
            Ok(gw) => gw,
            Err(log) => panic!("gateway did not start:\n{log}"),
        }
    }

    pub fn try_start(extra: &str) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("gateway.conf");
        std::fs::write(&config, format!("{}{extra}\n", base_config(dir.path()))).unwrap();
        Gateway::start_with(dir, config)
    }

    pub fn start_with(dir: tempfile::TempDir, config: PathBuf) -> Result<Gateway, String> {
        Gateway::start_bin_with(BIN, dir, config)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// SIGTERM, then waits (at most `limit`) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait(limit)
    }

    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect to gateway");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    }

    /// One request on a fresh connection (`Connection: close`).
    pub fn get(&self, target: &str) -> Response {
        self.request(&format!(
            "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        ))
    }

    pub fn get_with(&self, target: &str, headers: &str) -> Response {
        self.request(&format!(
            "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n"
        ))
    }

    pub fn request(&self, raw: &str) -> Response {
        let mut s = self.connect();
        s.write_all(raw.as_bytes()).unwrap();
        read_response(&mut BufReader::new(s)).expect("a response")
    }

    pub fn backend(&self) -> Resp {
        let s = UnixStream::connect(&self.socket).expect("connect to backend socket");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Resp {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn publish(&self, mailbox: &str, payload: &[u8]) -> i64 {
        match self
            .backend()
            .call(&[b"PUBLISH", mailbox.as_bytes(), payload])
        {
            Reply::Int(n) => n,
            other => panic!("PUBLISH replied {other:?}"),
        }
    }

    /// Polls until `mailbox` has `n` subscribers (so a test can publish
    /// knowing its waiting client is attached).
    pub fn wait_subscribers(&self, mailbox: &str, n: i64) {
        let mut backend = self.backend();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Reply::Array(items) = backend.call(&[b"PUBSUB", b"NUMSUB", mailbox.as_bytes()])
                && items.get(1) == Some(&Reply::Int(n))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{mailbox} never reached {n} subscribers"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn unique(path: PathBuf) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_extension(format!("{n}.log"))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads a status line and headers.
pub fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header line");
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok((status, headers))
}

/// Reads one whole response (Content-Length, chunked, or to EOF).
pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<Response> {
    let (status, headers) = read_head(r)?;
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().unwrap();
        resp.body.resize(len, 0);
        r.read_exact(&mut resp.body)?;
    } else if resp.header("transfer-encoding") == Some("chunked") {
        while let Some(chunk) = read_chunk(r)? {
            resp.body.extend_from_slice(&chunk);
        }
    } else if status != 101 && status != 204 && status != 304 {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Reads a HEAD response: headers only.
pub fn read_head_response<R: BufRead>(r: &mut R) -> std::io::Result<Response> {
    let (status, headers) = read_head(r)?;
    Ok(Response {
        status,
        headers,
        body: Vec::new(),
    })
}

/// One chunk of a chunked body; None at the last chunk.
pub fn read_chunk<R: BufRead>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let size = usize::from_str_radix(line.trim(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
    if size == 0 {
        let mut end = String::new();
        r.read_line(&mut end)?;
        return Ok(None);
    }
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data)?;
    assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
    data.truncate(size);
    Ok(Some(data))
}

// ----- RESP client (the gateway's own tests; interop tests use real clients) --

#[derive(Debug, PartialEq, Clone)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
    Null,
    Map(Vec<(Reply, Reply)>),
    Verbatim(String),
    Other(String),
}

impl Reply {
    pub fn bulk_text(&self) -> String {
        match self {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Verbatim(s) | Reply::Simple(s) => s.clone(),
            other => panic!("not a string reply: {other:?}"),
        }
    }
}

pub struct Resp {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Resp {
    pub fn call(&mut self, args: &[&[u8]]) -> Reply {
        self.send(args);
        self.read()
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.writer.write_all(&encode_command(args)).unwrap();
    }

    pub fn send_raw(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).unwrap();
    }

    pub fn read(&mut self) -> Reply {
        read_reply(&mut self.reader).expect("a RESP reply")
    }
}

pub fn read_reply<R: BufRead>(r: &mut R) -> std::io::Result<Reply> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line[1..]).trim_end().to_string();
    Ok(match line[0] {
        b'+' => Reply::Simple(text),
        b'-' => Reply::Error(text),
        b':' => Reply::Int(text.parse().unwrap()),
        b'$' | b'=' => {
            let len: i64 = text.parse().unwrap();
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut data = vec![0; len as usize + 2];
                r.read_exact(&mut data)?;
                data.truncate(len as usize);
                if line[0] == b'=' {
                    Reply::Verbatim(String::from_utf8_lossy(&data[4..]).into_owned())
                } else {
                    Reply::Bulk(Some(data))
                }
            }
        }
        b'*' | b'>' | b'~' => {
            let n: i64 = text.parse().unwrap();
            if n < 0 {
                Reply::Null
            } else {
                Reply::Array((0..n).map(|_| read_reply(r)).collect::<Result<_, _>>()?)
            }
        }
        b'%' => {
            let n: usize = text.parse().unwrap();
            let mut pairs = Vec::new();
            for _ in 0..n {
                pairs.push((read_reply(r)?, read_reply(r)?));
            }
            Reply::Map(pairs)
        }
        b'_' => Reply::Null,
        _ => Reply::Other(String::from_utf8_lossy(&line).into_owned()),
    })
}

// ----- another build of the binary -------------------------------------------

impl Gateway {
    /// As [`Gateway::try_start`], but runs `bin`: another build of the
    /// gateway, so a regression test can be shown to fail on the code from
    /// before its fix.
    pub fn try_start_bin(bin: &str, extra: &str) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("gateway.conf");
        std::fs::write(&config, format!("{}{extra}\n", base_config(dir.path()))).unwrap();
        Gateway::start_bin_with(bin, dir, config)
    }

    /// As [`Gateway::start_with`], but runs `bin`.
    pub fn start_bin_with(
        bin: &str,
        dir: tempfile::TempDir,
        config: PathBuf,
    ) -> Result<Gateway, String> {
        let log = unique(dir.path().join("gateway.log"));
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn cometbox");
        let mut gw = Gateway {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            socket: dir.path().join("gw.sock"),
            config,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = gw.log();
            if let Some(at) = text.find("listening for HTTP on ") {
                let rest = &text[at + "listening for HTTP on ".len()..];
                gw.addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                if let Some(at) = text.find("backend socket at ") {
                    let path = text[at + "backend socket at ".len()..].lines().next();
                    gw.socket = PathBuf::from(path.unwrap().trim());
                }
                return Ok(gw);
            }
            if let Some(status) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("exited with {status}:\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("no 'listening' line within 20 s:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
