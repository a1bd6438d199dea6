//! The gateway configuration: the typed [`Config`] and the ways to get one.
//! `gateway.conf` (a subset of lighttpd's syntax) is read by [`loader`] with
//! tokens from [`lexer`]; every key lives in the one table in [`keys`], so the
//! unknown-key check, the "did you mean" hint ([`suggest`]) and
//! docs/configuration.md (checked by a test) cannot drift apart. Value and
//! cross-key rules are in [`validate`].

mod keys;
mod lexer;
mod loader;
mod suggest;
mod validate;

#[cfg(test)]
mod test_util;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use loader::{load_with_warnings, parse_with_warnings};

/// Worker threads are capped here: each owns a poller and a connection table,
/// and an I/O-bound gateway gains nothing from more threads than this, only
/// memory and context switches.
const MAX_WORKERS: usize = 64;

/// The whole gateway configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub mailbox: MailboxConfig,
    pub auth: AuthConfig,
}

/// The browser-facing HTTP listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// `server.bind`: address to listen on.
    pub bind: IpAddr,
    /// `server.port`; 0 = ephemeral (the gateway logs the real port).
    pub port: u16,
    /// `server.workers`; 0 = one per core. Use [`Config::worker_count`].
    pub workers: usize,
    /// `server.max-connections`, across all workers.
    pub max_connections: usize,
    /// `server.max-connections-per-ip`; 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// `server.max-request-header-size`: bytes of request line + headers;
    /// beyond it the answer is 431.
    pub max_request_header_size: usize,
    /// `server.max-request-body-size`: bodies are read and discarded; larger
    /// ones get 413.
    pub max_request_body_size: usize,
    /// `server.header-timeout`: time to send a complete request head.
    pub header_timeout: Duration,
    /// `server.keepalive-timeout`: idle time allowed between requests.
    pub keepalive_timeout: Duration,
    /// `server.shutdown-timeout`: time to flush output on SIGTERM.
    pub shutdown_timeout: Duration,
    /// `server.listen-backlog`: the listen(2) backlog of the HTTP listener.
    pub listen_backlog: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            workers: 0,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_request_header_size: 8192,
            max_request_body_size: 65_536,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(3),
            listen_backlog: 4096,
        }
    }
}

/// Mailboxes, the backend socket and the streaming transports.
#[derive(Clone, Debug, PartialEq)]
pub struct MailboxConfig {
    /// `mailbox.url-prefix`; starts and ends with '/'.
    pub url_prefix: String,
    /// `mailbox.backend-socket`: where backends connect to publish.
    pub backend_socket: PathBuf,
    /// `mailbox.backend-socket-mode`: permission bits, at most 0o777.
    pub backend_socket_mode: u32,
    /// `mailbox.backend-socket-group`; `None` leaves the process's group.
    pub backend_socket_group: Option<String>,
    /// `mailbox.backend-password`; `None` = no AUTH needed.
    pub backend_password: Option<String>,
    /// `mailbox.backend-port`: an optional TCP listener for RESP; 0 = off.
    pub backend_port: u16,
    /// `mailbox.backend-bind`: where that TCP listener binds.
    pub backend_bind: IpAddr,
    /// `mailbox.poll-timeout`: how long a long-poll is held.
    pub poll_timeout: Duration,
    /// `mailbox.max-messages` retained per mailbox.
    pub max_messages: usize,
    /// `mailbox.message-ttl`.
    pub message_ttl: Duration,
    /// `mailbox.max-message-size`, bytes.
    pub max_message_size: usize,
    /// `mailbox.max-mailboxes`.
    pub max_mailboxes: usize,
    /// `mailbox.max-subscribers` per mailbox; 0 = unlimited.
    pub max_subscribers: usize,
    /// `mailbox.max-memory`: retained payload bytes in total.
    pub max_memory: usize,
    /// `mailbox.max-mailbox-bytes`: retained payload bytes per mailbox.
    pub max_mailbox_bytes: usize,
    /// `mailbox.heartbeat`: interval of keep-alive output on idle streams.
    pub heartbeat: Duration,
    /// `mailbox.sse-retry` (written in milliseconds).
    pub sse_retry: Duration,
    /// `mailbox.stream-max-duration`; `None` = never cut a stream by age.
    pub stream_max_duration: Option<Duration>,
    /// `mailbox.stream-max-bytes`; `None` = never cut a stream by size.
    pub stream_max_bytes: Option<u64>,
    /// `mailbox.max-pending-bytes` queued for one slow subscriber before its
    /// stream is closed; at least `max_message_size` + 1024.
    pub max_pending_bytes: usize,
    /// `mailbox.cors-origins`; empty = no CORS headers, `"*"` = any origin.
    pub cors_origins: Vec<String>,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            url_prefix: "/mailbox/".to_string(),
            backend_socket: PathBuf::from("/tmp/cometbox.sock"),
            backend_socket_mode: 0o660,
            backend_socket_group: None,
            backend_password: None,
            backend_port: 0,
            backend_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            poll_timeout: Duration::from_secs(30),
            max_messages: 100,
            message_ttl: Duration::from_secs(300),
            max_message_size: 1_048_576,
            max_mailboxes: 100_000,
            max_subscribers: 0,
            max_memory: 256 * 1024 * 1024,
            max_mailbox_bytes: 16 * 1024 * 1024,
            heartbeat: Duration::from_secs(15),
            sse_retry: Duration::from_millis(3000),
            stream_max_duration: None,
            stream_max_bytes: None,
            max_pending_bytes: 4 * 1024 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

/// Subscriber tokens (JWT): see docs/security.md.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthConfig {
    /// `auth.required`; needs one of the two key files.
    pub required: bool,
    /// `auth.jwt-secret-file`.
    pub jwt_secret_file: Option<PathBuf>,
    /// `auth.jwt-public-key-file`.
    pub jwt_public_key_file: Option<PathBuf>,
    /// `auth.public-prefixes`: paths readable without a token.
    pub public_prefixes: Vec<String>,
    /// `auth.cookie`: name of the cookie carrying the token.
    pub cookie: Option<String>,
    /// `auth.audience`: required `aud` claim.
    pub audience: Option<String>,
    /// `auth.clock-leeway`: clock drift allowed on `exp` and `nbf`.
    pub clock_leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: false,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            public_prefixes: Vec::new(),
            cookie: None,
            audience: None,
            clock_leeway: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Reads the file at `path` and the files it includes.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (config, warnings) = load_with_warnings(path)?;
        warnings.iter().for_each(|w| log::warn!("{w}"));
        Ok(config)
    }

    /// Parses `text` as if read from `origin`, which names the text in errors
    /// and is the base directory for its includes.
    pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let (config, warnings) = parse_with_warnings(text, origin)?;
        warnings.iter().for_each(|w| log::warn!("{w}"));
        Ok(config)
    }

    /// Worker threads to start: `server.workers`, or one per core when it is
    /// 0, never more than 64.
    pub fn worker_count(&self) -> usize {
        let n = match self.server.workers {
            // If the core count cannot be read, one worker still serves.
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        n.min(MAX_WORKERS)
    }
}

/// A config that cannot be used, with the file (and line) to fix.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    line: Option<usize>,
    message: String,
}

impl ConfigError {
    fn at(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn in_file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    /// The file to fix, as it was named (origin, or include path joined to
    /// the including file's directory).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The line to fix, when the problem is on one line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The message without the location prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

// Debug shows the same text as Display, so `main() -> Result<_, Box<dyn
// Error>>` and `expect` print a message a person can act on.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::keys::KEYS;
    use super::test_util::{manifest_path, parse};
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.server.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.workers, 0);
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.max_connections_per_ip, 0);
        assert_eq!(c.server.max_request_header_size, 8192);
        assert_eq!(c.server.max_request_body_size, 65536);
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.server.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(c.server.listen_backlog, 4096);
        assert_eq!(c.mailbox.url_prefix, "/mailbox/");
        assert_eq!(
            c.mailbox.backend_socket,
            PathBuf::from("/tmp/cometbox.sock")
        );
        assert_eq!(c.mailbox.backend_socket_mode, 0o660);
        assert_eq!(c.mailbox.backend_socket_group, None);
        assert_eq!(c.mailbox.backend_password, None);
        assert_eq!(c.mailbox.poll_timeout, Duration::from_secs(30));
        assert_eq!(c.mailbox.max_messages, 100);
        assert_eq!(c.mailbox.message_ttl, Duration::from_secs(300));
        assert_eq!(c.mailbox.max_message_size, 1_048_576);
        assert_eq!(c.mailbox.max_mailboxes, 100_000);
        assert_eq!(c.mailbox.max_subscribers, 0);
        assert_eq!(c.mailbox.max_memory, 268_435_456);
        assert_eq!(c.mailbox.max_mailbox_bytes, 16_777_216);
        assert_eq!(c.mailbox.heartbeat, Duration::from_secs(15));
        assert_eq!(c.mailbox.sse_retry, Duration::from_millis(3000));
        assert_eq!(c.mailbox.stream_max_duration, None);
        assert_eq!(c.mailbox.stream_max_bytes, None);
        assert_eq!(c.mailbox.max_pending_bytes, 4_194_304);
        assert!(c.mailbox.cors_origins.is_empty());
        assert_eq!(c.auth, AuthConfig::default());
        assert!(!c.auth.required);
        assert_eq!(c.auth.clock_leeway, Duration::from_secs(5));
        // An empty file (or only comments) is the defaults.
        assert_eq!(parse("").unwrap(), c);
        assert_eq!(parse("# nothing\n\n   # here\n").unwrap(), c);
    }

    #[test]
    fn display_formats() {
        let e = ConfigError::at(Path::new("g.conf"), 12, "boom");
        assert_eq!(e.to_string(), "g.conf:12: boom");
        assert_eq!(format!("{e:?}"), "g.conf:12: boom");
        let e = ConfigError::in_file(Path::new("g.conf"), "boom");
        assert_eq!(e.to_string(), "g.conf: boom");
        let _: &dyn std::error::Error = &e;
    }

    #[test]
    fn worker_count() {
        let mut c = Config::default();
        c.server.workers = 3;
        assert_eq!(c.worker_count(), 3);
        c.server.workers = 0;
        assert!((1..=MAX_WORKERS).contains(&c.worker_count()));
        c.server.workers = 1000;
        assert_eq!(c.worker_count(), MAX_WORKERS);
    }

    #[test]
    fn shipped_gateway_conf_parses() {
        let path = manifest_path("gateway.conf");
        let (c, warnings) = load_with_warnings(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        // Runs on its own: loopback, port 8080, the socket in /tmp, no auth.
        assert_eq!(c.server.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.server.port, 8080);
        assert_eq!(
            c.mailbox.backend_socket,
            PathBuf::from("/tmp/cometbox.sock")
        );
        assert!(!c.auth.required);
        assert_eq!(c.auth.clock_leeway, Duration::from_secs(5));
        // ...and documents every key.
        let text = std::fs::read_to_string(&path).unwrap();
        for key in KEYS {
            assert!(
                text.contains(key.name),
                "gateway.conf does not mention {}",
                key.name
            );
        }
    }

    #[test]
    fn shipped_gateway_conf_examples_parse() {
        // Lines "#key = value" show a key at its default or an example; each
        // must still be valid once its '#' is removed, and with them every
        // key must be shown exactly once (twice would warn).
        let text = std::fs::read_to_string(manifest_path("gateway.conf")).unwrap();
        let all: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if KEYS.iter().any(|k| rest.starts_with(k.name)) => format!("{rest}\n"),
                _ => format!("{line}\n"),
            })
            .collect();
        let (_, warnings) =
            parse_with_warnings(&all, Path::new("gateway.conf")).unwrap_or_else(|e| panic!("{e}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        for key in KEYS {
            assert!(
                all.lines()
                    .any(|l| l.split_whitespace().next() == Some(key.name)),
                "gateway.conf has no line, active or commented, setting {}",
                key.name
            );
        }
    }
}
