//! A redis-server of our own for cluster tests (Debian's package;
//! tests/run-all.sh installs it): a free port, no persistence, a temp dir,
//! killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::encode_command;

/// A redis-server of our own.
pub struct Redis {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.spawn();
        redis
    }

    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; tests/run-all.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command over a fresh connection; the first line of the reply.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        (&s).write_all(&encode_command(&words)).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().trim_start_matches(['+', ':']).to_string())
    }

    /// The server's process id (to signal it).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Redis the polite way (`SHUTDOWN NOSAVE`: it closes every
    /// client connection), then reaps it.
    pub fn shutdown(&mut self) {
        let _ = self.cli(&["SHUTDOWN", "NOSAVE"]);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    pub fn config(&self, extra: &str) -> String {
        format!(
            "cluster.redis = \"redis://127.0.0.1:{}\"\nmailbox.max-messages = 1000\n{extra}",
            self.port
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
