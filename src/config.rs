//! The config loader: reads `gateway.conf` (a subset of lighttpd's syntax) and
//! the files it includes into a typed [`Config`]. It owns the one table of
//! known keys ([`KEYS`]), so the unknown-key check, the "did you mean" hint
//! and docs/configuration.md (checked by a test) cannot drift apart.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Include nesting limit. A conf.d layout needs two or three levels; the
/// bound stops a cycle that path comparison cannot see (e.g. through a file
/// that cannot be canonicalized) before it exhausts the stack.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Worker threads are capped here: each owns a poller and a connection table,
/// and an I/O-bound gateway gains nothing from more threads than this, only
/// memory and context switches.
const MAX_WORKERS: usize = 64;

/// Unknown keys within this many single-character edits of a known key get a
/// "did you mean" hint: enough for a typo or a swapped pair of letters, few
/// enough that the hint is rarely wrong.
const SUGGEST_MAX_EDITS: usize = 2;

/// Upper bound on every duration in seconds (one year). Deadlines are
/// computed as `Instant + Duration`, which panics on overflow; no sane timeout
/// comes near this, and with it no arithmetic on a configured value can.
const MAX_SECONDS: i64 = 365 * 24 * 60 * 60;

/// Upper bound on `mailbox.sse-retry` (one day): the value is only advice to
/// EventSource clients, and a longer one means "never come back".
const MAX_SSE_RETRY_MS: i64 = 24 * 60 * 60 * 1000;

/// Bytes of framing allowed on top of one message in a subscriber's queue:
/// SSE `id:`/`event:` lines, the JSONP or iframe `<script>` wrapper and chunk
/// headers all fit well within it.
const FRAMING_ALLOWANCE: usize = 1024;

/// Most entries in `mailbox.cors-origins`: the list is scanned on every
/// cross-origin request, and the transports index it with a `u16`.
const MAX_CORS_ORIGINS: usize = 1024;

/// Longest Unix socket path: Linux's `sun_path` is 108 bytes including the
/// terminating NUL. Checked here because bind(2) reports it only as EINVAL.
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Largest count or byte size a key takes when it has no upper bound of its
/// own: what fits both the `i64` the parser reads and a `usize`.
const UNBOUNDED: i64 = if (usize::MAX as u128) < (i64::MAX as u128) {
    usize::MAX as i64
} else {
    i64::MAX
};

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
            backend_bind: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
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
#[derive(Clone, Debug, Default, PartialEq)]
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

// ---------------------------------------------------------------------------
// The table of known keys.

/// One known key: its name, how its value is read and stored, and its
/// documentation (rendered into docs/configuration.md).
// `default` and `doc` are read only by the tests that check the defaults and
// keep docs/configuration.md in step with this table.
#[cfg_attr(not(test), expect(dead_code))]
struct Key {
    name: &'static str,
    kind: Kind,
    /// The default, written as it would be in the config file; `""` for a
    /// key that is unset by default (an empty string means unset).
    default: &'static str,
    /// What the key does, for docs/configuration.md.
    doc: &'static str,
}

/// How a key's value is read. Each variant carries its setter, so the type a
/// key is checked against and the field it writes cannot disagree.
enum Kind {
    /// A whole number in `min..=max`, bare (`8080`) or quoted (`"8080"`,
    /// as lighttpd accepts).
    Int {
        unit: Unit,
        min: i64,
        max: i64,
        set: fn(&mut Config, i64),
    },
    /// "enable"/"disable" and lighttpd's synonyms.
    Bool(fn(&mut Config, bool)),
    /// A quoted string; `what` names it in docs ("path", "string").
    Str {
        what: &'static str,
        check: fn(&str) -> Result<(), String>,
        set: fn(&mut Config, String),
    },
    /// `( "a", "b" )`.
    List {
        check: fn(&[String]) -> Result<(), String>,
        set: fn(&mut Config, Vec<String>),
    },
    /// An IP address as a string.
    Addr(fn(&mut Config, IpAddr)),
    /// Octal permission bits, quoted or bare.
    Mode(fn(&mut Config, u32)),
}

#[derive(Clone, Copy)]
enum Unit {
    Count,
    Bytes,
    Seconds,
    Millis,
}

impl Unit {
    fn noun(self) -> &'static str {
        match self {
            Unit::Count => "",
            Unit::Bytes => "bytes",
            Unit::Seconds => "seconds",
            Unit::Millis => "milliseconds",
        }
    }
}

// The setters below convert with `as`: `Kind::apply` checks `min..=max`
// first, and every range lies within the target type (no bound is negative,
// none exceeds UNBOUNDED, ports stop at 65535), so no cast can truncate.
fn count(n: i64) -> usize {
    n as usize
}
fn secs(n: i64) -> Duration {
    Duration::from_secs(n as u64)
}
/// Empty means unset, so a key with no default can still be written out.
fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

static KEYS: &[Key] = &[
    Key {
        name: "server.bind",
        kind: Kind::Addr(|c, a| c.server.bind = a),
        default: r#""127.0.0.1""#,
        doc: "Address to listen on for browsers. \"0.0.0.0\" or \"::\" listens on every \
            interface; \"localhost\" means 127.0.0.1. Host names are not resolved.",
    },
    Key {
        name: "server.port",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 0,
            max: 65535,
            set: |c, n| c.server.port = n as u16,
        },
        default: "8080",
        doc: "TCP port for browsers. 0 picks a free port; the gateway logs the one it got.",
    },
    Key {
        name: "server.workers",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 0,
            max: MAX_WORKERS as i64,
            set: |c, n| c.server.workers = count(n),
        },
        default: "0",
        doc: "Worker threads, each with its own event loop. 0 = one per CPU core (at most 64).",
    },
    Key {
        name: "server.max-connections",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 1,
            max: UNBOUNDED,
            set: |c, n| c.server.max_connections = count(n),
        },
        default: "10000",
        doc: "Most browser connections open at once, across all workers.",
    },
    Key {
        name: "server.max-connections-per-ip",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 0,
            max: UNBOUNDED,
            set: |c, n| c.server.max_connections_per_ip = count(n),
        },
        default: "0",
        doc: "Most connections open at once from one client IP address. 0 = unlimited.",
    },
    Key {
        name: "server.max-request-header-size",
        kind: Kind::Int {
            unit: Unit::Bytes,
            // 1 KiB still fits a request line and the headers a browser
            // sends; 1 MiB is far beyond any real request head.
            min: 1024,
            max: 1_048_576,
            set: |c, n| c.server.max_request_header_size = count(n),
        },
        default: "8192",
        doc: "Largest request line plus headers; a longer request head is answered with 431.",
    },
    Key {
        name: "server.max-request-body-size",
        kind: Kind::Int {
            unit: Unit::Bytes,
            min: 0,
            max: UNBOUNDED,
            set: |c, n| c.server.max_request_body_size = count(n),
        },
        default: "65536",
        doc: "Largest request body accepted (bodies are read and discarded); a larger one is \
            answered with 413.",
    },
    Key {
        name: "server.header-timeout",
        kind: Kind::Int {
            unit: Unit::Seconds,
            min: 1,
            max: MAX_SECONDS,
            set: |c, n| c.server.header_timeout = secs(n),
        },
        default: "10",
        doc: "Time a client has to send a complete request head before its connection is closed.",
    },
    Key {
        name: "server.keepalive-timeout",
        kind: Kind::Int {
            unit: Unit::Seconds,
            min: 1,
            max: MAX_SECONDS,
            set: |c, n| c.server.keepalive_timeout = secs(n),
        },
        default: "60",
        doc: "How long an idle keep-alive connection is kept open waiting for its next request.",
    },
    Key {
        name: "server.shutdown-timeout",
        kind: Kind::Int {
            unit: Unit::Seconds,
            min: 0,
            max: MAX_SECONDS,
            set: |c, n| c.server.shutdown_timeout = secs(n),
        },
        default: "3",
        doc: "On SIGTERM, how long to keep flushing queued output before closing connections.",
    },
    Key {
        name: "mailbox.url-prefix",
        kind: Kind::Str {
            what: "string",
            check: check_url_prefix,
            set: |c, s| c.mailbox.url_prefix = s,
        },
        default: r#""/mailbox/""#,
        doc: "Path under which mailboxes are served: GET {prefix}{name}. Must start and end \
            with '/'.",
    },
    Key {
        name: "mailbox.backend-socket",
        kind: Kind::Str {
            what: "path",
            check: check_socket_path,
            set: |c, s| c.mailbox.backend_socket = PathBuf::from(s),
        },
        default: r#""/tmp/cometbox.sock""#,
        doc: "Unix socket on which backends connect, speaking the Redis protocol, to publish.",
    },
    Key {
        name: "mailbox.backend-socket-mode",
        kind: Kind::Mode(|c, m| c.mailbox.backend_socket_mode = m),
        default: r#""0660""#,
        doc: "Permission bits of the backend socket, in octal: whoever may connect may publish.",
    },
    Key {
        name: "mailbox.backend-socket-group",
        kind: Kind::Str {
            what: "string",
            check: check_any,
            set: |c, s| c.mailbox.backend_socket_group = opt(s),
        },
        default: r#""""#,
        doc: "Group given to the backend socket, so its members may publish. Unset = the \
            gateway's own group.",
    },
    Key {
        name: "mailbox.backend-password",
        kind: Kind::Str {
            what: "string",
            check: check_any,
            set: |c, s| c.mailbox.backend_password = opt(s),
        },
        default: r#""""#,
        doc: "Password backends must send with AUTH before publishing. Unset = no AUTH needed.",
    },
    Key {
        name: "mailbox.backend-port",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 0,
            max: 65535,
            set: |c, n| c.mailbox.backend_port = n as u16,
        },
        default: "0",
        doc: "TCP port for the Redis-protocol backend listener, for apps on hosts or \
            containers without the Unix socket. 0 = off. Binding beyond loopback needs \
            mailbox.backend-password.",
    },
    Key {
        name: "mailbox.backend-bind",
        kind: Kind::Addr(|c, a| c.mailbox.backend_bind = a),
        default: r#""127.0.0.1""#,
        doc: "Address of the TCP backend listener (mailbox.backend-port).",
    },
    Key {
        name: "mailbox.poll-timeout",
        kind: Kind::Int {
            unit: Unit::Seconds,
            // Beyond an hour a poll outlives every proxy timeout anyway.
            min: 1,
            max: 3600,
            set: |c, n| c.mailbox.poll_timeout = secs(n),
        },
        default: "30",
        doc: "How long a long-poll request waits for a message before an empty answer. Keep it \
            below the timeouts of proxies in between (about 30 s is safe).",
    },
    Key {
        name: "mailbox.max-messages",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 1,
            max: UNBOUNDED,
            set: |c, n| c.mailbox.max_messages = count(n),
        },
        default: "100",
        doc: "Messages retained per mailbox for readers that reconnect; the oldest goes first.",
    },
    Key {
        name: "mailbox.message-ttl",
        kind: Kind::Int {
            unit: Unit::Seconds,
            min: 1,
            max: MAX_SECONDS,
            set: |c, n| c.mailbox.message_ttl = secs(n),
        },
        default: "300",
        doc: "How long a retained message is kept.",
    },
    Key {
        name: "mailbox.max-message-size",
        kind: Kind::Int {
            unit: Unit::Bytes,
            // 512 MiB: a message is held whole in memory, often several
            // times (retained copy, per-transport encodings).
            min: 1,
            max: 536_870_912,
            set: |c, n| c.mailbox.max_message_size = count(n),
        },
        default: "1048576",
        doc: "Largest message payload a backend may publish (1 MiB by default); larger ones are \
            refused.",
    },
    Key {
        name: "mailbox.max-mailboxes",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 1,
            max: UNBOUNDED,
            set: |c, n| c.mailbox.max_mailboxes = count(n),
        },
        default: "100000",
        doc: "Most mailboxes that may exist at once.",
    },
    Key {
        name: "mailbox.max-subscribers",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 0,
            max: UNBOUNDED,
            set: |c, n| c.mailbox.max_subscribers = count(n),
        },
        default: "0",
        doc: "Most readers waiting on one mailbox at once. 0 = unlimited.",
    },
    Key {
        name: "mailbox.max-memory",
        kind: Kind::Int {
            unit: Unit::Bytes,
            min: 1,
            max: UNBOUNDED,
            set: |c, n| c.mailbox.max_memory = count(n),
        },
        default: "268435456",
        doc: "Payload bytes retained across all mailboxes (256 MiB by default).",
    },
    Key {
        name: "mailbox.max-mailbox-bytes",
        kind: Kind::Int {
            unit: Unit::Bytes,
            min: 1,
            max: UNBOUNDED,
            set: |c, n| c.mailbox.max_mailbox_bytes = count(n),
        },
        default: "16777216",
        doc: "Payload bytes retained in one mailbox (16 MiB by default).",
    },
    Key {
        name: "mailbox.heartbeat",
        kind: Kind::Int {
            unit: Unit::Seconds,
            min: 1,
            max: MAX_SECONDS,
            set: |c, n| c.mailbox.heartbeat = secs(n),
        },
        default: "15",
        doc: "Interval of keep-alive output on idle streams, so proxies and browsers do not \
            drop them.",
    },
    Key {
        name: "mailbox.sse-retry",
        kind: Kind::Int {
            unit: Unit::Millis,
            min: 0,
            max: MAX_SSE_RETRY_MS,
            set: |c, n| c.mailbox.sse_retry = Duration::from_millis(n as u64),
        },
        default: "3000",
        doc: "Reconnect delay sent to EventSource clients in the SSE retry: field, in \
            milliseconds.",
    },
    Key {
        name: "mailbox.stream-max-duration",
        kind: Kind::Int {
            unit: Unit::Seconds,
            min: 0,
            max: MAX_SECONDS,
            set: |c, n| c.mailbox.stream_max_duration = (n > 0).then(|| secs(n)),
        },
        default: "0",
        doc: "Close a streaming response after this long, so the client reconnects. 0 = never.",
    },
    Key {
        name: "mailbox.stream-max-bytes",
        kind: Kind::Int {
            unit: Unit::Bytes,
            min: 0,
            max: UNBOUNDED,
            set: |c, n| c.mailbox.stream_max_bytes = (n > 0).then_some(n as u64),
        },
        default: "0",
        doc: "Close a streaming response after this many bytes, so a page that grows with every \
            message (iframe, XHR streaming) is renewed. 0 = unlimited.",
    },
    Key {
        name: "mailbox.max-pending-bytes",
        kind: Kind::Int {
            unit: Unit::Bytes,
            min: 1,
            max: UNBOUNDED,
            set: |c, n| c.mailbox.max_pending_bytes = count(n),
        },
        default: "4194304",
        doc: "Output queued for one slow subscriber before its stream is closed (4 MiB by \
            default). Must be at least mailbox.max-message-size + 1024.",
    },
    Key {
        name: "mailbox.cors-origins",
        kind: Kind::List {
            check: check_cors_origins,
            set: |c, v| c.mailbox.cors_origins = v,
        },
        default: "()",
        doc: "Origins allowed to read mailboxes from other sites, e.g. ( \
            \"https://app.example.com\" ), or ( \"*\" ) for any. Empty = no CORS headers.",
    },
    Key {
        name: "auth.required",
        kind: Kind::Bool(|c, b| c.auth.required = b),
        default: r#""disable""#,
        doc: "Require a signed token (JWT) on mailbox requests, except for names under \
            auth.public-prefixes. Needs auth.jwt-secret-file or auth.jwt-public-key-file.",
    },
    Key {
        name: "auth.jwt-secret-file",
        kind: Kind::Str {
            what: "path",
            check: check_any,
            set: |c, s| c.auth.jwt_secret_file = opt(s).map(PathBuf::from),
        },
        default: r#""""#,
        doc: "File holding the shared secret for HS256-signed subscriber tokens (JWT). \
            Whitespace at the end of the file is ignored.",
    },
    Key {
        name: "auth.jwt-public-key-file",
        kind: Kind::Str {
            what: "path",
            check: check_any,
            set: |c, s| c.auth.jwt_public_key_file = opt(s).map(PathBuf::from),
        },
        default: r#""""#,
        doc: "PEM file holding the public key for RS256 (RSA) or ES256 (P-256) signed \
            subscriber tokens.",
    },
    Key {
        name: "auth.public-prefixes",
        kind: Kind::List {
            check: check_public_prefixes,
            set: |c, v| c.auth.public_prefixes = v,
        },
        default: "()",
        doc: "Mailbox name prefixes readable without a token when auth.required is on, \
            e.g. ( \"public:\" ).",
    },
    Key {
        name: "auth.cookie",
        kind: Kind::Str {
            what: "string",
            check: check_cookie_name,
            set: |c, s| c.auth.cookie = opt(s),
        },
        default: r#""""#,
        doc: "Name of a cookie that carries the token, for clients that cannot set headers.",
    },
    Key {
        name: "auth.audience",
        kind: Kind::Str {
            what: "string",
            check: check_any,
            set: |c, s| c.auth.audience = opt(s),
        },
        default: r#""""#,
        doc: "Audience (aud claim) a token must name; unset = aud is not checked.",
    },
];

fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

impl Kind {
    /// `+=` concatenates strings and appends arrays, as in lighttpd; on
    /// anything else it is an error rather than a surprise.
    fn appendable(&self) -> bool {
        matches!(self, Kind::Str { .. } | Kind::List { .. })
    }

    /// What an error says was expected.
    fn expected(&self) -> String {
        match self {
            Kind::Int { unit, min, max, .. } => {
                let noun = match unit {
                    Unit::Count => "a whole number".to_string(),
                    u => format!("a whole number of {}", u.noun()),
                };
                format!("{noun} {}", range_words(*min, *max))
            }
            Kind::Bool(_) => r#""enable" or "disable""#.to_string(),
            Kind::Str { what: "path", .. } => "a path in double quotes".to_string(),
            Kind::Str { .. } => "a string in double quotes".to_string(),
            Kind::List { .. } => r#"an array of strings, like ( "a", "b" )"#.to_string(),
            Kind::Addr(_) => {
                r#"an IP address in double quotes, like "127.0.0.1" or "::""#.to_string()
            }
            Kind::Mode(_) => r#"octal permission bits, like "0660""#.to_string(),
        }
    }

    /// The type column of docs/configuration.md.
    #[cfg(test)]
    fn doc_type(&self) -> String {
        match self {
            Kind::Int { unit, min, max, .. } => {
                let range = if *max == UNBOUNDED {
                    format!("≥ {min}")
                } else {
                    format!("{min} to {max}")
                };
                match unit {
                    Unit::Count => format!("integer, {range}"),
                    u => format!("integer, {}, {range}", u.noun()),
                }
            }
            Kind::Bool(_) => "boolean".to_string(),
            Kind::Str { what, .. } => what.to_string(),
            Kind::List { .. } => "array of strings".to_string(),
            Kind::Addr(_) => "IP address".to_string(),
            Kind::Mode(_) => "octal mode, 0 to 0777".to_string(),
        }
    }

    /// Checks `value` against this kind and stores it. The error says what
    /// was wrong and what was expected; the caller adds key and location.
    fn apply(&self, config: &mut Config, value: &Value) -> Result<(), String> {
        match self {
            Kind::Int { min, max, set, .. } => {
                let n = match value {
                    Value::Int(text) => text.parse::<i64>().map_err(|_| {
                        format!("{text} is too large: expected {}", self.expected())
                    })?,
                    // lighttpd reads a quoted number as a number.
                    Value::Str(s) => s.parse::<i64>().map_err(|_| {
                        format!("expected {}, found {}", self.expected(), value.describe())
                    })?,
                    Value::List(_) => {
                        return Err(format!(
                            "expected {}, found {}",
                            self.expected(),
                            value.describe()
                        ));
                    }
                };
                if n < *min || n > *max {
                    return Err(format!("{n} is out of range: expected {}", self.expected()));
                }
                set(config, n);
            }
            Kind::Bool(set) => {
                let text = match value {
                    Value::Str(s) => s.as_str(),
                    Value::Int(t) => t.as_str(),
                    Value::List(_) => "",
                };
                let b = match text.to_ascii_lowercase().as_str() {
                    "enable" | "true" | "on" | "1" => true,
                    "disable" | "false" | "off" | "0" => false,
                    _ => {
                        return Err(format!(
                            "expected {} (or true/false, on/off, 1/0), found {}",
                            self.expected(),
                            value.describe()
                        ));
                    }
                };
                set(config, b);
            }
            Kind::Str { check, set, .. } => match value {
                Value::Str(s) => {
                    check(s)?;
                    set(config, s.clone());
                }
                Value::Int(t) => {
                    return Err(format!(
                        "expected {}, found the bare number {t}: write \"{t}\"",
                        self.expected()
                    ));
                }
                Value::List(_) => {
                    return Err(format!("expected {}, found an array", self.expected()));
                }
            },
            Kind::List { check, set } => match value {
                Value::List(items) => {
                    let mut strings = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            Value::Str(s) => strings.push(s.clone()),
                            other => {
                                return Err(format!(
                                    "expected only strings in the array, found {}",
                                    other.describe()
                                ));
                            }
                        }
                    }
                    check(&strings)?;
                    set(config, strings);
                }
                Value::Str(s) => {
                    return Err(format!(
                        "expected {}, found a single string: write ( {s:?} )",
                        self.expected()
                    ));
                }
                Value::Int(_) => {
                    return Err(format!(
                        "expected {}, found {}",
                        self.expected(),
                        value.describe()
                    ));
                }
            },
            Kind::Addr(set) => match value {
                Value::Str(s) => set(config, parse_bind(s)?),
                _ => {
                    return Err(format!(
                        "expected {}, found {}",
                        self.expected(),
                        value.describe()
                    ));
                }
            },
            Kind::Mode(set) => match value {
                Value::Str(text) | Value::Int(text) => set(config, parse_mode(text)?),
                Value::List(_) => {
                    return Err(format!("expected {}, found an array", self.expected()));
                }
            },
        }
        Ok(())
    }
}

fn range_words(min: i64, max: i64) -> String {
    if max == UNBOUNDED {
        format!("of at least {min}")
    } else {
        format!("from {min} to {max}")
    }
}

fn parse_bind(s: &str) -> Result<IpAddr, String> {
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if s.starts_with('/') {
        return Err(format!(
            "{s:?} looks like a Unix socket path; browsers are served over TCP only, so give an \
            IP address like \"127.0.0.1\""
        ));
    }
    // lighttpd writes IPv6 binds in brackets; accept both spellings.
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>().map_err(|_| {
        format!(
            "{s:?} is not an IP address: expected one like \"127.0.0.1\", \"0.0.0.0\" or \"::\" \
            (host names other than localhost are not resolved; the port goes in server.port)"
        )
    })
}

/// Reads permission bits written in octal, with or without the leading 0,
/// from either a string or a bare number token (whose text we kept).
fn parse_mode(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not an octal mode: expected permission bits like \"0660\""
        ));
    }
    if let Some(bad) = text.chars().find(|c| matches!(c, '8' | '9')) {
        return Err(format!(
            "{text:?} is not an octal mode: digit {bad} is not octal (modes use 0-7, like 0660)"
        ));
    }
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is too large: a socket mode is at most 0777 (setuid, setgid and sticky \
            bits have no meaning on a socket)"
        )),
    }
}

fn check_any(_: &str) -> Result<(), String> {
    Ok(())
}

fn check_url_prefix(s: &str) -> Result<(), String> {
    if !s.starts_with('/') || !s.ends_with('/') {
        return Err(format!(
            "{s:?} must start and end with '/', like \"/mailbox/\", so the mailbox name is the \
            path segment after it"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "{s:?} contains {c:?}, which cannot appear in a URL path"
        ));
    }
    Ok(())
}

fn check_socket_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the socket path must not be empty".to_string());
    }
    if s.len() > MAX_UNIX_SOCKET_PATH {
        return Err(format!(
            "the socket path is {} bytes; Unix socket paths are limited to {MAX_UNIX_SOCKET_PATH}",
            s.len()
        ));
    }
    Ok(())
}

/// A cookie name is an RFC 6265 token: visible ASCII without separators.
fn check_cookie_name(s: &str) -> Result<(), String> {
    let bad = |c: char| !c.is_ascii_graphic() || "()<>@,;:\\\"/[]?={}".contains(c);
    match s.chars().find(|&c| bad(c)) {
        Some(c) => Err(format!(
            "{s:?} is not a valid cookie name: {c:?} is not allowed in one"
        )),
        None => Ok(()),
    }
}

fn check_cors_origins(origins: &[String]) -> Result<(), String> {
    if origins.len() > MAX_CORS_ORIGINS {
        return Err(format!(
            "{} origins listed; at most {MAX_CORS_ORIGINS} are allowed (use ( \"*\" ) to allow \
            any)",
            origins.len()
        ));
    }
    for origin in origins.iter().filter(|o| o.as_str() != "*") {
        check_origin(origin)?;
    }
    Ok(())
}

/// Browsers send `Origin: scheme://host[:port]`, lowercase, no path; origins
/// are compared byte for byte, so anything else would silently never match.
fn check_origin(origin: &str) -> Result<(), String> {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(format!(
            "{origin:?} is not an origin: write the scheme too, like \"https://{origin}\""
        ));
    };
    if scheme.is_empty() || authority.is_empty() {
        return Err(format!(
            "{origin:?} is not an origin: expected scheme://host[:port], like \
            \"https://app.example.com\""
        ));
    }
    if authority.ends_with('/') && !authority[..authority.len() - 1].contains('/') {
        return Err(format!(
            "{origin:?} ends with '/'; browsers send origins without one, so write {:?}",
            origin.trim_end_matches('/')
        ));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "{origin:?} has a path; an origin is only scheme://host[:port]"
        ));
    }
    if origin.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{origin:?} contains whitespace"));
    }
    if origin.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "{origin:?} has capital letters; browsers send origins in lowercase and they are \
            compared exactly, so write {:?}",
            origin.to_ascii_lowercase()
        ));
    }
    Ok(())
}

/// Public prefixes are matched against mailbox names (`"public:"` opens
/// `public:news`), so they use the mailbox name alphabet.
fn check_public_prefixes(prefixes: &[String]) -> Result<(), String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-');
    match prefixes
        .iter()
        .find(|p| p.is_empty() || !p.chars().all(name_char))
    {
        Some(p) => Err(format!(
            "{p:?} is not a mailbox name prefix: use 1-200 characters of A-Z a-z 0-9 . _ : @ -"
        )),
        None => Ok(()),
    }
}

/// Rules between keys, run after every file is read. Returns the key to blame
/// (its last assignment is where the error points) and the message.
fn cross_check(config: &Config) -> Result<(), (&'static [&'static str], String)> {
    let auth = &config.auth;
    if auth.required && auth.jwt_secret_file.is_none() && auth.jwt_public_key_file.is_none() {
        return Err((
            &["auth.required"],
            "auth.required is enabled but neither auth.jwt-secret-file nor \
            auth.jwt-public-key-file is set, so no token could ever be verified"
                .to_string(),
        ));
    }
    let m = &config.mailbox;
    if m.backend_port != 0 && !m.backend_bind.is_loopback() && m.backend_password.is_none() {
        return Err((
            &["mailbox.backend-bind", "mailbox.backend-port"],
            format!(
                "mailbox.backend-bind {} is not a loopback address and mailbox.backend-password \
                is not set: anyone who can reach the port could publish to every mailbox",
                m.backend_bind
            ),
        ));
    }
    // max_message_size is at most 512 MiB, so this cannot overflow.
    let needed = m.max_message_size + FRAMING_ALLOWANCE;
    if m.max_pending_bytes < needed {
        return Err((
            &["mailbox.max-pending-bytes", "mailbox.max-message-size"],
            format!(
                "mailbox.max-pending-bytes ({}) must be at least mailbox.max-message-size ({}) \
                + {FRAMING_ALLOWANCE} = {needed}: one largest message plus its framing must fit \
                in a subscriber's queue, or every subscriber would be disconnected the first \
                time such a message is published",
                m.max_pending_bytes, m.max_message_size
            ),
        ));
    }
    Ok(())
}

/// The "did you mean" for an unknown key: the nearest known key within
/// [`SUGGEST_MAX_EDITS`], comparing whole names and also the names without
/// their section, so "port" and "server.poll-timeout" find "server.port"
/// and "mailbox.poll-timeout".
fn suggest(unknown: &str) -> Option<&'static str> {
    let short = |name: &'static str| name.split_once('.').map_or(name, |(_, rest)| rest);
    let unknown_short = unknown.split_once('.').map_or(unknown, |(_, rest)| rest);
    KEYS.iter()
        .filter_map(|k| {
            let d = edit_distance(unknown, k.name).min(edit_distance(unknown_short, short(k.name)));
            (d <= SUGGEST_MAX_EDITS).then_some((d, k.name))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, name)| name)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------
// Lexer.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A key or keyword: letters, digits, '_', '.', '-', not starting with a
    /// digit or '-'.
    Word(String),
    /// A double-quoted string, escapes resolved.
    Str(String),
    /// A whole number, kept as written so modes can be read as octal.
    Int(String),
    Assign,
    Append,
    /// lighttpd's `:=`: assign, replacing an earlier value on purpose.
    Replace,
    /// `=>`, lighttpd's key-value arrays (unsupported).
    Arrow,
    LParen,
    RParen,
    Comma,
    /// lighttpd's value concatenation (unsupported).
    Plus,
    /// Starts a lighttpd conditional (unsupported).
    Dollar,
    LBrace,
    RBrace,
    /// Ends a statement, except inside an array.
    Newline,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("the bare word {w}"),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Int(t) => format!("the number {t}"),
            Tok::Assign => "'='".into(),
            Tok::Append => "'+='".into(),
            Tok::Replace => "':='".into(),
            Tok::Arrow => "'=>'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Plus => "'+'".into(),
            Tok::Dollar => "'$'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    file: &'a Path,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str, file: &'a Path) -> Self {
        Lexer {
            src,
            pos: 0,
            line: 1,
            file,
        }
    }

    fn err(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, line, message)
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn eat(&mut self, want: char) -> bool {
        let hit = self.peek() == Some(want);
        if hit {
            self.bump();
        }
        hit
    }

    /// The next token and the line it starts on.
    fn next(&mut self) -> Result<(Tok, usize), ConfigError> {
        loop {
            let line = self.line;
            let Some(c) = self.peek() else {
                return Ok((Tok::Eof, line));
            };
            let tok = match c {
                // '\r' too, so files with CRLF line ends read the same.
                ' ' | '\t' | '\r' => {
                    self.bump();
                    continue;
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                    continue;
                }
                '\n' => {
                    self.bump();
                    Tok::Newline
                }
                '"' => self.string()?,
                '-' | '0'..='9' => self.number()?,
                c if c.is_ascii_alphabetic() || c == '_' => self.word(),
                '=' => {
                    self.bump();
                    if self.eat('>') {
                        Tok::Arrow
                    } else {
                        Tok::Assign
                    }
                }
                '+' => {
                    self.bump();
                    if self.eat('=') {
                        Tok::Append
                    } else {
                        Tok::Plus
                    }
                }
                ':' => {
                    self.bump();
                    if !self.eat('=') {
                        return Err(
                            self.err(line, "unexpected ':' (assignment is '=', '+=' or ':=')")
                        );
                    }
                    Tok::Replace
                }
                '(' | ')' | ',' | '$' | '{' | '}' => {
                    self.bump();
                    match c {
                        '(' => Tok::LParen,
                        ')' => Tok::RParen,
                        ',' => Tok::Comma,
                        '$' => Tok::Dollar,
                        '{' => Tok::LBrace,
                        _ => Tok::RBrace,
                    }
                }
                other => return Err(self.err(line, format!("unexpected character {other:?}"))),
            };
            return Ok((tok, line));
        }
    }

    fn string(&mut self) -> Result<Tok, ConfigError> {
        let start = self.line;
        self.bump(); // the opening quote
        let mut s = String::new();
        loop {
            match self.bump() {
                // A missing quote would otherwise swallow the rest of the
                // file, so strings end on their line.
                None | Some('\n') => {
                    return Err(self.err(
                        start,
                        "unterminated string: the closing '\"' is missing (strings cannot span \
                        lines)",
                    ));
                }
                Some('"') => return Ok(Tok::Str(s)),
                Some('\\') => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    None | Some('\n') => {
                        return Err(self.err(
                            start,
                            "unterminated string: the closing '\"' is missing (strings cannot \
                            span lines)",
                        ));
                    }
                    Some(c) => {
                        return Err(self.err(
                            self.line,
                            format!(
                                "unknown escape \"\\{c}\" in a string: the escapes are \\\" \
                                \\\\ \\n \\t"
                            ),
                        ));
                    }
                },
                Some(c) => s.push(c),
            }
        }
    }

    fn number(&mut self) -> Result<Tok, ConfigError> {
        let line = self.line;
        let start = self.pos;
        if self.eat('-') && !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.err(line, "'-' must be followed by digits"));
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek().is_some_and(is_word_char) {
            while self.peek().is_some_and(is_word_char) {
                self.bump();
            }
            return Err(self.err(
                line,
                format!(
                    "malformed number {:?}: write whole decimal numbers without units (the unit \
                    of each key is in docs/configuration.md)",
                    &self.src[start..self.pos]
                ),
            ));
        }
        Ok(Tok::Int(self.src[start..self.pos].to_string()))
    }

    fn word(&mut self) -> Tok {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.bump();
        }
        Tok::Word(self.src[start..self.pos].to_string())
    }
}

// ---------------------------------------------------------------------------
// Parser and loader.

/// A value as written, before it is checked against its key.
#[derive(Clone, Debug)]
enum Value {
    Str(String),
    Int(String),
    List(Vec<Value>),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Str(s) => format!("the string {s:?}"),
            Value::Int(t) => format!("the number {t}"),
            Value::List(_) => "an array".to_string(),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Assign,
    Append,
    Replace,
}

#[derive(Clone, Debug)]
struct Loc {
    file: PathBuf,
    line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The value a key has so far, kept as written: `+=` extends it, a second
/// `=` is reported with the place of the first, and it is checked against
/// its key only once every file is read (so `a = "x"` then `a += "y/"` is
/// judged on "xy/", and a bad value overridden later does no harm; lighttpd
/// also checks values after parsing).
struct Assigned {
    key: &'static Key,
    value: Value,
    loc: Loc,
    /// Order of the last assignment, so values are checked (and the first
    /// error reported) in the order they were written.
    seq: usize,
}

struct Loader {
    assigned: HashMap<&'static str, Assigned>,
    /// Assignments made so far, for `Assigned::seq`.
    seq: usize,
    /// Files being read, outermost first: (canonical path for cycle
    /// detection, path as named for messages).
    stack: Vec<(PathBuf, PathBuf)>,
    /// Warnings to log once loading succeeds (collected, not logged here, so
    /// tests can see them without installing a logger).
    warnings: Vec<String>,
}

fn load_with_warnings(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    let text = read_text(path).map_err(|e| match e {
        ReadError::Io(e) => ConfigError::in_file(path, format!("cannot read config file: {e}")),
        ReadError::Utf8 { line } => ConfigError::at(path, line, NOT_UTF8),
    })?;
    parse_with_warnings(&text, path)
}

fn parse_with_warnings(text: &str, origin: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    let mut loader = Loader {
        assigned: HashMap::new(),
        seq: 0,
        stack: vec![(canonical(origin), origin.to_path_buf())],
        warnings: Vec::new(),
    };
    loader.parse_file(text.strip_prefix('\u{feff}').unwrap_or(text), origin)?;

    let mut written: Vec<&Assigned> = loader.assigned.values().collect();
    written.sort_by_key(|a| a.seq);
    let mut config = Config::default();
    for a in written {
        a.key.kind.apply(&mut config, &a.value).map_err(|m| {
            ConfigError::at(
                &a.loc.file,
                a.loc.line,
                format!("invalid value for {:?}: {m}", a.key.name),
            )
        })?;
    }
    if let Err((keys, message)) = cross_check(&config) {
        // Point at the latest assignment of the keys involved; with only
        // defaults (which pass) there is none, so fall back to the file.
        let loc = keys
            .iter()
            .filter_map(|k| loader.assigned.get(k))
            .max_by_key(|a| a.seq)
            .map(|a| &a.loc);
        return Err(match loc {
            Some(loc) => ConfigError::at(&loc.file, loc.line, message),
            None => ConfigError::in_file(origin, message),
        });
    }
    Ok((config, loader.warnings))
}

const NOT_UTF8: &str = "not valid UTF-8 (the first bad byte is on this line)";

enum ReadError {
    Io(std::io::Error),
    Utf8 { line: usize },
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(ReadError::Io)?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ReadError::Utf8 {
            line: 1 + good.iter().filter(|&&b| b == b'\n').count(),
        }
    })
}

/// A path's identity for cycle detection; a file that cannot be resolved
/// (e.g. the origin of `parse_str`) is compared by name.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Loader {
    fn parse_file(&mut self, text: &str, file: &Path) -> Result<(), ConfigError> {
        let mut lex = Lexer::new(text, file);
        loop {
            let (tok, line) = lex.next()?;
            match tok {
                Tok::Newline => {}
                Tok::Eof => return Ok(()),
                Tok::Word(w) => match w.as_str() {
                    "include" => {
                        let target = match lex.next()? {
                            (Tok::Str(s), _) => s,
                            (other, l) => {
                                return Err(lex.err(
                                    l,
                                    format!(
                                        "expected a file name in double quotes after include, \
                                        found {}",
                                        other.describe()
                                    ),
                                ));
                            }
                        };
                        end_of_statement(&mut lex, "the include")?;
                        self.include(file, line, &target)?;
                    }
                    "include_shell" => {
                        return Err(lex.err(
                            line,
                            "include_shell is not supported by cometbox: generate the file \
                            beforehand and use include",
                        ));
                    }
                    "else" | "elseif" | "elsif" => {
                        return Err(lex.err(line, CONDITIONALS_UNSUPPORTED));
                    }
                    _ => self.assignment(&mut lex, w, line)?,
                },
                Tok::Dollar => return Err(lex.err(line, CONDITIONALS_UNSUPPORTED)),
                Tok::LBrace | Tok::RBrace => return Err(lex.err(line, BLOCKS_UNSUPPORTED)),
                Tok::Str(s) => {
                    return Err(lex.err(
                        line,
                        format!(
                            "expected a key name at the start of a line, found the string \
                            {s:?}: keys are written without quotes"
                        ),
                    ));
                }
                other => {
                    return Err(lex.err(
                        line,
                        format!(
                            "expected a key name at the start of a line, found {}",
                            other.describe()
                        ),
                    ));
                }
            }
        }
    }

    fn assignment(&mut self, lex: &mut Lexer, key: String, line: usize) -> Result<(), ConfigError> {
        if key.starts_with("var.") {
            return Err(lex.err(
                line,
                format!(
                    "variables ({key}) are not supported by cometbox: write the value where \
                    it is used"
                ),
            ));
        }
        if key.starts_with("env.") {
            return Err(lex.err(
                line,
                format!("environment variables ({key}) are not supported by cometbox"),
            ));
        }
        let op = match lex.next()? {
            (Tok::Assign, _) => Op::Assign,
            (Tok::Append, _) => Op::Append,
            (Tok::Replace, _) => Op::Replace,
            (Tok::LBrace, l) => return Err(lex.err(l, BLOCKS_UNSUPPORTED)),
            (other, l) => {
                return Err(lex.err(
                    l,
                    format!("expected '=' after key {key:?}, found {}", other.describe()),
                ));
            }
        };
        let Some(def) = find_key(&key) else {
            let hint = match suggest(&key) {
                Some(s) => format!(" (did you mean {s:?}?)"),
                None => " (docs/configuration.md lists the keys cometbox knows)".to_string(),
            };
            return Err(lex.err(line, format!("unknown key {key:?}{hint}")));
        };
        let value = parse_value(lex, def.name)?;
        end_of_statement(lex, &format!("the value of {:?}", def.name))?;
        let loc = Loc {
            file: lex.file.to_path_buf(),
            line,
        };
        self.assign(def, op, value, loc)
    }

    fn assign(
        &mut self,
        def: &'static Key,
        op: Op,
        value: Value,
        loc: Loc,
    ) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::at(&loc.file, loc.line, msg);
        let previous = self.assigned.get(def.name);
        let value = match op {
            Op::Assign | Op::Replace => {
                if let (Op::Assign, Some(prev)) = (op, previous) {
                    let hint = if matches!(def.kind, Kind::List { .. }) {
                        "; use += to append to it"
                    } else {
                        "; use := to replace it on purpose"
                    };
                    self.warnings.push(format!(
                        "{loc}: {:?} is set again (first at {}); the later value wins{hint}",
                        def.name, prev.loc
                    ));
                }
                value
            }
            Op::Append => {
                if !def.kind.appendable() {
                    return Err(err(format!(
                        "'+=' appends to arrays and strings, but {:?} takes {}: use '='",
                        def.name,
                        def.kind.expected()
                    )));
                }
                match (previous.map(|p| &p.value), value) {
                    // Like lighttpd, += on a key not yet set acts as =.
                    (None, v) => v,
                    (Some(Value::Str(a)), Value::Str(b)) => Value::Str(format!("{a}{b}")),
                    (Some(Value::List(a)), Value::List(b)) => {
                        Value::List(a.iter().cloned().chain(b).collect())
                    }
                    (Some(old), new) => {
                        return Err(err(format!(
                            "cannot append {} to {:?}, which holds {}: '+=' needs the same type \
                            on both sides",
                            new.describe(),
                            def.name,
                            old.describe()
                        )));
                    }
                }
            }
        };
        self.seq += 1;
        let seq = self.seq;
        self.assigned.insert(
            def.name,
            Assigned {
                key: def,
                value,
                loc,
                seq,
            },
        );
        Ok(())
    }

    fn include(&mut self, from: &Path, line: usize, target: &str) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::at(from, line, msg);
        if target.is_empty() {
            return Err(err("include needs a file name".to_string()));
        }
        if target.contains(['*', '?']) {
            return Err(err(format!(
                "include {target:?}: wildcards in include are not supported by cometbox; \
                include each file by name"
            )));
        }
        // Relative to the including file, so a config tree can be moved whole.
        let path = match from.parent() {
            Some(dir) if Path::new(target).is_relative() => dir.join(target),
            _ => PathBuf::from(target),
        };
        let key = canonical(&path);
        let chain = |stack: &[(PathBuf, PathBuf)]| {
            stack
                .iter()
                .map(|(_, shown)| shown.display().to_string())
                .chain([path.display().to_string()])
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        if let Some(start) = self.stack.iter().position(|(c, _)| *c == key) {
            return Err(err(format!(
                "include cycle: {}",
                chain(&self.stack[start..])
            )));
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "includes nested more than {MAX_INCLUDE_DEPTH} deep: {}",
                chain(&self.stack)
            )));
        }
        let text = match read_text(&path) {
            Ok(text) => text,
            Err(ReadError::Io(e)) => {
                return Err(err(format!(
                    "cannot include {:?}: {e}",
                    path.display().to_string()
                )));
            }
            Err(ReadError::Utf8 { line }) => return Err(ConfigError::at(&path, line, NOT_UTF8)),
        };
        self.stack.push((key, path.clone()));
        self.parse_file(text.strip_prefix('\u{feff}').unwrap_or(&text), &path)?;
        self.stack.pop();
        Ok(())
    }
}

const CONDITIONALS_UNSUPPORTED: &str = "conditionals ($HTTP[...] { ... }, else) are not \
    supported by cometbox: it has one global configuration";
const BLOCKS_UNSUPPORTED: &str =
    "blocks { ... } are not supported by cometbox: it has one global configuration";

fn parse_value(lex: &mut Lexer, key: &str) -> Result<Value, ConfigError> {
    let (tok, line) = lex.next()?;
    match tok {
        Tok::Str(s) => Ok(Value::Str(s)),
        Tok::Int(t) => Ok(Value::Int(t)),
        Tok::LParen => parse_list(lex, line),
        Tok::Newline | Tok::Eof => Err(lex.err(
            line,
            format!(
                "missing value after '=' for \
            {key:?}"
            ),
        )),
        Tok::Word(w) if w.starts_with("var.") || w.starts_with("env.") => Err(lex.err(
            line,
            format!("variables ({w}) are not supported by cometbox: write the value itself"),
        )),
        Tok::Word(w) => Err(lex.err(
            line,
            format!(
                "expected a value for {key:?}, found the bare word {w}: put strings in \
                double quotes (\"{w}\")"
            ),
        )),
        other => Err(lex.err(
            line,
            format!("expected a value for {key:?}, found {}", other.describe()),
        )),
    }
}

/// After '(' : strings or numbers separated by commas, over any number of
/// lines, with an optional trailing comma.
fn parse_list(lex: &mut Lexer, open_line: usize) -> Result<Value, ConfigError> {
    let mut items = Vec::new();
    loop {
        let (tok, line) = next_in_list(lex)?;
        match tok {
            Tok::RParen => return Ok(Value::List(items)),
            Tok::Str(s) => items.push(Value::Str(s)),
            Tok::Int(t) => items.push(Value::Int(t)),
            Tok::LParen => {
                return Err(lex.err(line, "nested arrays are not supported by cometbox"));
            }
            Tok::Eof => return Err(unclosed(lex, open_line)),
            Tok::Word(w) => {
                return Err(lex.err(
                    line,
                    format!(
                        "expected a string in the array, found the bare word {w}: put it in \
                        double quotes (\"{w}\")"
                    ),
                ));
            }
            other => {
                return Err(lex.err(
                    line,
                    format!(
                        "expected a string or ')' in the array, found {}",
                        other.describe()
                    ),
                ));
            }
        }
        match next_in_list(lex)? {
            (Tok::Comma, _) => {}
            (Tok::RParen, _) => return Ok(Value::List(items)),
            (Tok::Arrow, l) => {
                return Err(lex.err(
                    l,
                    "key => value arrays are not supported by cometbox: list plain strings",
                ));
            }
            (Tok::Eof, _) => return Err(unclosed(lex, open_line)),
            (other, l) => {
                return Err(lex.err(
                    l,
                    format!(
                        "expected ',' or ')' in the array, found {}",
                        other.describe()
                    ),
                ));
            }
        }
    }
}

/// Arrays may span lines, so newlines inside one are only whitespace.
fn next_in_list(lex: &mut Lexer) -> Result<(Tok, usize), ConfigError> {
    loop {
        match lex.next()? {
            (Tok::Newline, _) => {}
            t => return Ok(t),
        }
    }
}

fn unclosed(lex: &Lexer, open_line: usize) -> ConfigError {
    lex.err(open_line, "the array opened here has no closing ')'")
}

fn end_of_statement(lex: &mut Lexer, what: &str) -> Result<(), ConfigError> {
    match lex.next()? {
        (Tok::Newline | Tok::Eof, _) => Ok(()),
        (Tok::Plus, l) => Err(lex.err(
            l,
            "joining values with '+' is not supported by cometbox: write the whole value in one \
            string",
        )),
        (other, l) => Err(lex.err(
            l,
            format!(
                "expected the end of the line after {what}, found {} (one setting per line)",
                other.describe()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_str(text, Path::new("test.conf"))
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error is on `line` of test.conf and mentions `needle`.
    #[track_caller]
    fn assert_err(text: &str, line: usize, needle: &str) {
        let e = parse_err(text);
        assert_eq!(e.file(), Path::new("test.conf"), "{e}");
        assert_eq!(e.line(), Some(line), "{e}");
        assert!(
            e.to_string().starts_with(&format!("test.conf:{line}: ")),
            "{e}"
        );
        assert!(e.message().contains(needle), "{e:?} lacks {needle:?}");
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "cometbox-config-{tag}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("create dir");
            }
            std::fs::write(&path, text).expect("write file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

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
        // An empty file (or only comments) is the defaults.
        assert_eq!(parse("").unwrap(), c);
        assert_eq!(parse("# nothing\n\n   # here\n").unwrap(), c);
    }

    #[test]
    fn defaults_in_the_key_table_match_default_impl() {
        // The table's defaults are what docs/configuration.md shows; writing
        // each one out must give back Config::default().
        for key in KEYS {
            let text = format!("{} = {}\n", key.name, key.default);
            let (config, warnings) = parse_with_warnings(&text, Path::new("t.conf"))
                .unwrap_or_else(|e| panic!("default of {}: {e}", key.name));
            assert_eq!(config, Config::default(), "default of {}", key.name);
            assert!(warnings.is_empty());
        }
    }

    #[test]
    fn key_table_has_no_duplicates() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                KEYS[i + 1..].iter().all(|o| o.name != k.name),
                "{} listed twice",
                k.name
            );
        }
    }

    #[test]
    fn integers_strings_and_durations() {
        let c = parse(
            r#"
server.port = 9000
server.workers = "4"        # a quoted number is a number, as in lighttpd
server.max-connections = 1
server.header-timeout = 5
mailbox.url-prefix = "/box/"
mailbox.backend-socket = "/run/cometbox/backend.sock"
mailbox.backend-password = "s3cret \"quoted\" \\ back"
mailbox.sse-retry = 250
mailbox.stream-max-duration = 600
mailbox.stream-max-bytes = 1000000
auth.cookie = "token"
"#,
        )
        .unwrap();
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.workers, 4);
        assert_eq!(c.server.max_connections, 1);
        assert_eq!(c.server.header_timeout, Duration::from_secs(5));
        assert_eq!(c.mailbox.url_prefix, "/box/");
        assert_eq!(
            c.mailbox.backend_socket,
            PathBuf::from("/run/cometbox/backend.sock")
        );
        assert_eq!(
            c.mailbox.backend_password.as_deref(),
            Some(r#"s3cret "quoted" \ back"#)
        );
        assert_eq!(c.mailbox.sse_retry, Duration::from_millis(250));
        assert_eq!(
            c.mailbox.stream_max_duration,
            Some(Duration::from_secs(600))
        );
        assert_eq!(c.mailbox.stream_max_bytes, Some(1_000_000));
        assert_eq!(c.auth.cookie.as_deref(), Some("token"));
        // Zero turns the optional limits off again; "" unsets a string.
        let c = parse(
            "mailbox.stream-max-duration = 0\n\
             mailbox.stream-max-bytes = 0\n\
             mailbox.backend-password = \"\"\n",
        )
        .unwrap();
        assert_eq!(c.mailbox.stream_max_duration, None);
        assert_eq!(c.mailbox.stream_max_bytes, None);
        assert_eq!(c.mailbox.backend_password, None);
    }

    #[test]
    fn string_escapes() {
        let c = parse(r#"mailbox.backend-password = "a\tb\nc""#).unwrap();
        assert_eq!(c.mailbox.backend_password.as_deref(), Some("a\tb\nc"));
        assert_err(
            "\nmailbox.backend-password = \"a\\qb\"",
            2,
            "unknown escape \"\\q\"",
        );
    }

    #[test]
    fn booleans() {
        for (text, want) in [
            ("\"enable\"", true),
            ("\"disable\"", false),
            ("\"true\"", true),
            ("\"false\"", false),
            ("\"on\"", true),
            ("\"off\"", false),
            ("\"1\"", true),
            ("\"0\"", false),
            ("\"Enable\"", true),
            ("1", true),
            ("0", false),
        ] {
            let c = parse(&format!(
                "auth.jwt-secret-file = \"/etc/secret\"\nauth.required = {text}\n"
            ))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.auth.required, want, "{text}");
        }
        assert_err(
            "auth.required = \"yes\"",
            1,
            "expected \"enable\" or \"disable\"",
        );
        assert_err("auth.required = 2", 1, "expected \"enable\" or \"disable\"");
    }

    #[test]
    fn bind_addresses() {
        for (text, want) in [
            ("0.0.0.0", "0.0.0.0"),
            ("::", "::"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("localhost", "127.0.0.1"),
            ("192.0.2.7", "192.0.2.7"),
        ] {
            let c = parse(&format!("server.bind = \"{text}\"")).unwrap();
            assert_eq!(c.server.bind, want.parse::<IpAddr>().unwrap(), "{text}");
        }
        assert_err("server.bind = \"example.com\"", 1, "not an IP address");
        assert_err("server.bind = \"/tmp/x.sock\"", 1, "Unix socket");
        assert_err("server.bind = 127", 1, "expected an IP address");
    }

    #[test]
    fn arrays_over_several_lines() {
        let c = parse(
            r#"
mailbox.cors-origins = (
    "https://app.example.com",   # the web app
    # a comment line inside the array
    "http://localhost:3000",

)
auth.public-prefixes = ( "public." )
"#,
        )
        .unwrap();
        assert_eq!(
            c.mailbox.cors_origins,
            vec!["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(c.auth.public_prefixes, vec!["public."]);
        assert!(
            parse("mailbox.cors-origins = ()")
                .unwrap()
                .mailbox
                .cors_origins
                .is_empty()
        );
        assert_eq!(
            parse("mailbox.cors-origins = ( \"*\" )")
                .unwrap()
                .mailbox
                .cors_origins,
            vec!["*"]
        );
        assert_err(
            "mailbox.cors-origins = (\n\"https://a.example\"\n",
            1,
            "no closing ')'",
        );
        assert_err(
            "mailbox.cors-origins = ( \"https://a.example\" \"https://b.example\" )",
            1,
            "expected ',' or ')'",
        );
        assert_err(
            "mailbox.cors-origins = \"https://a.example\"",
            1,
            "write ( \"https://a.example\" )",
        );
        assert_err("mailbox.cors-origins = ( 5 )", 1, "only strings");
        assert_err("mailbox.cors-origins = ( ( \"a\" ) )", 1, "nested arrays");
        assert_err(
            "mailbox.cors-origins = ( \"a\" => \"b\" )",
            1,
            "key => value arrays are not supported by cometbox",
        );
    }

    #[test]
    fn append() {
        let c = parse(
            r#"
mailbox.cors-origins = ( "https://a.example" )
mailbox.cors-origins += ( "https://b.example", "https://c.example" )
auth.public-prefixes += ( "pub." )
mailbox.url-prefix = "/comet"
mailbox.url-prefix += "/box/"
"#,
        )
        .unwrap();
        assert_eq!(
            c.mailbox.cors_origins,
            vec![
                "https://a.example",
                "https://b.example",
                "https://c.example"
            ]
        );
        // += on a key not set yet acts as = (lighttpd does the same).
        assert_eq!(c.auth.public_prefixes, vec!["pub."]);
        assert_eq!(c.mailbox.url_prefix, "/comet/box/");
        assert_err("server.port += 1", 1, "'+=' appends to arrays and strings");
        assert_err(
            "mailbox.cors-origins = ( \"https://a.example\" )\nmailbox.cors-origins += \
            \"https://b.example\"",
            2,
            "cannot append",
        );
    }

    #[test]
    fn values_are_judged_once_every_file_is_read() {
        // A bad value overridden later does no harm (the later one wins)...
        let (c, warnings) = parse_with_warnings(
            "server.port = 99999\nserver.port = 80\n",
            Path::new("t.conf"),
        )
        .unwrap();
        assert_eq!(c.server.port, 80);
        assert_eq!(warnings.len(), 1);
        // ...and of two bad values the one written first is reported.
        assert_err(
            "\nserver.workers = 100\nserver.port = 99999\n",
            2,
            "\"server.workers\"",
        );
        // A value is judged where it was last written.
        assert_err(
            "mailbox.url-prefix = \"/a/\"\nmailbox.url-prefix += \"b\"\n",
            2,
            "must start and end with '/'",
        );
    }

    #[test]
    fn hash_inside_strings_is_not_a_comment() {
        let c = parse("mailbox.backend-password = \"pa#ss\" # the real comment \"x\"\n").unwrap();
        assert_eq!(c.mailbox.backend_password.as_deref(), Some("pa#ss"));
        // The '#' reaches the URL prefix's own check, so it was not taken
        // for a comment.
        assert_err(
            "mailbox.url-prefix = \"/m#x/\" # comment",
            1,
            "cannot appear in a URL path",
        );
    }

    #[test]
    fn crlf_line_ends() {
        let c = parse("server.port = 81\r\nmailbox.cors-origins = (\r\n \"*\",\r\n)\r\n").unwrap();
        assert_eq!(c.server.port, 81);
        assert_eq!(c.mailbox.cors_origins, vec!["*"]);
    }

    #[test]
    fn octal_modes() {
        for (text, want) in [
            ("\"0660\"", 0o660),
            ("\"660\"", 0o660),
            ("0660", 0o660),
            ("640", 0o640),
            ("0600", 0o600),
            ("\"0777\"", 0o777),
            ("0", 0),
        ] {
            let c = parse(&format!("mailbox.backend-socket-mode = {text}")).unwrap();
            assert_eq!(c.mailbox.backend_socket_mode, want, "{text}");
        }
        assert_err(
            "mailbox.backend-socket-mode = 0668",
            1,
            "digit 8 is not octal",
        );
        assert_err(
            "mailbox.backend-socket-mode = \"0668\"",
            1,
            "digit 8 is not octal",
        );
        assert_err(
            "mailbox.backend-socket-mode = 0690",
            1,
            "digit 9 is not octal",
        );
        assert_err("mailbox.backend-socket-mode = 01777", 1, "at most 0777");
        assert_err("mailbox.backend-socket-mode = \"1000\"", 1, "at most 0777");
        assert_err(
            "mailbox.backend-socket-mode = \"rw-rw----\"",
            1,
            "not an octal mode",
        );
        assert_err("mailbox.backend-socket-mode = -660", 1, "not an octal mode");
    }

    #[test]
    fn out_of_range_values() {
        assert_err(
            "server.port = 65536",
            1,
            "65536 is out of range: expected a whole number from 0 to 65535",
        );
        assert_err("server.port = -1", 1, "out of range");
        assert_err("server.workers = 65", 1, "from 0 to 64");
        assert_err("server.max-connections = 0", 1, "of at least 1");
        assert_err(
            "server.max-request-header-size = 1023",
            1,
            "from 1024 to 1048576",
        );
        assert_err(
            "server.max-request-header-size = 1048577",
            1,
            "out of range",
        );
        assert_err(
            "mailbox.poll-timeout = 0",
            1,
            "whole number of seconds from 1 to 3600",
        );
        assert_err("mailbox.poll-timeout = 3601", 1, "out of range");
        assert_err("mailbox.max-message-size = 0", 1, "out of range");
        assert_err("mailbox.max-message-size = 536870913", 1, "out of range");
        assert_err("mailbox.heartbeat = 0", 1, "out of range");
        assert_err("mailbox.message-ttl = 99999999999", 1, "out of range");
        assert_err("server.port = 99999999999999999999", 1, "too large");
        assert_err(
            "server.port = \"80x\"",
            1,
            "expected a whole number from 0 to 65535, found the string \"80x\"",
        );
        assert_err("server.port = ( 80 )", 1, "found an array");
        assert_err(
            "mailbox.url-prefix = \"mailbox\"",
            1,
            "must start and end with '/'",
        );
        assert_err("mailbox.url-prefix = 5", 1, "found the bare number 5");
        assert_err("mailbox.backend-socket = \"\"", 1, "must not be empty");
        let long = format!("mailbox.backend-socket = \"/{}\"", "x".repeat(200));
        assert_err(&long, 1, "limited to 107");
        assert_err("auth.cookie = \"a b\"", 1, "not a valid cookie name");
        assert_err(
            "auth.public-prefixes = ( \"a/b\" )",
            1,
            "not a mailbox name prefix",
        );
    }

    #[test]
    fn cors_origins_are_checked() {
        assert_err(
            "mailbox.cors-origins = ( \"example.com\" )",
            1,
            "write the scheme too",
        );
        assert_err(
            "mailbox.cors-origins = ( \"https://example.com/\" )",
            1,
            "ends with '/'",
        );
        assert_err(
            "mailbox.cors-origins = ( \"https://example.com/app\" )",
            1,
            "has a path",
        );
        assert_err(
            "mailbox.cors-origins = ( \"https://Example.com\" )",
            1,
            "lowercase",
        );
        parse("mailbox.cors-origins = ( \"*\", \"https://a.example:8443\" )").unwrap();
        let many: Vec<String> = (0..=MAX_CORS_ORIGINS)
            .map(|i| format!("\"https://{i}.example\""))
            .collect();
        assert_err(
            &format!("mailbox.cors-origins = ( {} )", many.join(", ")),
            1,
            "at most 1024",
        );
    }

    #[test]
    fn every_error_names_file_and_line() {
        for (text, line, needle) in [
            (
                "server.port 8080",
                1,
                "expected '=' after key \"server.port\", found the number 8080",
            ),
            ("\n\nserver.port =", 3, "missing value"),
            ("server.port = \n9", 1, "missing value"),
            ("\nserver.bind = \"127.0.0.1", 2, "unterminated string"),
            (
                "server.port = 80 81",
                1,
                "expected the end of the line after the value of \"server.port\", found the \
                number 81",
            ),
            (
                "server.port = 80 + 1",
                1,
                "joining values with '+' is not supported by cometbox",
            ),
            ("server.port = 8k", 1, "malformed number \"8k\""),
            ("server.port = 1.5", 1, "malformed number \"1.5\""),
            ("server.port = - 1", 1, "'-' must be followed by digits"),
            ("\"server.port\" = 1", 1, "keys are written without quotes"),
            ("server.port = @", 1, "unexpected character '@'"),
            (
                "auth.required = enable",
                1,
                "put strings in double quotes (\"enable\")",
            ),
            (
                "\n$HTTP[\"host\"] == \"x\" {\n}",
                2,
                "conditionals ($HTTP[...] { ... }, else) are not supported by cometbox",
            ),
            ("else {", 1, "not supported by cometbox"),
            ("}", 1, "blocks { ... } are not supported by cometbox"),
            (
                "globals {",
                1,
                "blocks { ... } are not supported by cometbox",
            ),
            (
                "var.dir = \"/x\"",
                1,
                "variables (var.dir) are not supported by cometbox",
            ),
            (
                "server.port = var.port",
                1,
                "variables (var.port) are not supported by cometbox",
            ),
            (
                "mailbox.url-prefix = env.HOME",
                1,
                "not supported by cometbox",
            ),
            (
                "\ninclude_shell \"cat x\"",
                2,
                "include_shell is not supported by cometbox",
            ),
            (
                "include \"*.conf\"",
                1,
                "wildcards in include are not supported by cometbox",
            ),
            (
                "include 5",
                1,
                "expected a file name in double quotes after include",
            ),
            ("server.port : 5", 1, "unexpected ':'"),
        ] {
            assert_err(text, line, needle);
        }
    }

    #[test]
    fn unknown_keys() {
        assert_err(
            "server.prot = 8080",
            1,
            "unknown key \"server.prot\" (did you mean \"server.port\"?)",
        );
        assert_err(
            "\nmailbox.heartbeet = 5",
            2,
            "(did you mean \"mailbox.heartbeat\"?)",
        );
        assert_err("port = 8080", 1, "(did you mean \"server.port\"?)");
        assert_err(
            "server.poll-timeout = 5",
            1,
            "(did you mean \"mailbox.poll-timeout\"?)",
        );
        assert_err(
            "server.document-root = \"/var/www\"",
            1,
            "unknown key \"server.document-root\" (docs/configuration.md lists",
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    #[test]
    fn later_assignment_wins_with_a_warning() {
        let (c, warnings) = parse_with_warnings(
            "server.port = 1\nserver.port = 2\nserver.workers = 1\nserver.workers := 2\n",
            Path::new("d.conf"),
        )
        .unwrap();
        assert_eq!(c.server.port, 2);
        assert_eq!(c.server.workers, 2);
        // := replaces on purpose, so only the plain = is reported.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("d.conf:2: \"server.port\" is set again (first at d.conf:1)")
        );
    }

    #[test]
    fn include_is_relative_to_the_including_file() {
        let dir = TempDir::new("include");
        let main = dir.write(
            "main.conf",
            "server.port = 1\ninclude \"conf.d/mailbox.conf\"\nserver.workers = 2\n",
        );
        dir.write(
            "conf.d/mailbox.conf",
            "mailbox.poll-timeout = 7\ninclude \"more.conf\"\n",
        );
        dir.write(
            "conf.d/more.conf",
            "mailbox.cors-origins += ( \"https://a.example\" )\n",
        );
        let c = Config::load(&main).unwrap();
        assert_eq!(c.server.port, 1);
        assert_eq!(c.server.workers, 2);
        assert_eq!(c.mailbox.poll_timeout, Duration::from_secs(7));
        assert_eq!(c.mailbox.cors_origins, vec!["https://a.example"]);

        // parse_str resolves includes against the origin's directory too.
        let c = Config::parse_str(
            "include \"conf.d/mailbox.conf\"",
            &dir.0.join("virtual.conf"),
        )
        .unwrap();
        assert_eq!(c.mailbox.poll_timeout, Duration::from_secs(7));

        // An error inside an included file names that file and its line.
        dir.write("bad.conf", "\n\nserver.port = \"x\"\n");
        let e = Config::parse_str("include \"bad.conf\"", &dir.0.join("top.conf")).unwrap_err();
        assert_eq!(e.file(), dir.0.join("bad.conf"));
        assert_eq!(e.line(), Some(3));

        // A missing include names the include line and the resolved path.
        let e =
            Config::parse_str("\ninclude \"missing.conf\"", &dir.0.join("top.conf")).unwrap_err();
        assert_eq!(e.file(), dir.0.join("top.conf"));
        assert_eq!(e.line(), Some(2));
        assert!(e.message().contains("missing.conf"), "{e}");
    }

    #[test]
    fn include_cycle_is_an_error() {
        let dir = TempDir::new("cycle");
        let a = dir.write("a.conf", "server.port = 1\ninclude \"b.conf\"\n");
        dir.write("b.conf", "\n\ninclude \"a.conf\"\n");
        let e = Config::load(&a).unwrap_err();
        assert_eq!(e.file(), dir.0.join("b.conf"));
        assert_eq!(e.line(), Some(3));
        assert!(e.message().starts_with("include cycle: "), "{e}");
        assert!(e.message().contains("a.conf -> "), "{e}");
        assert!(e.message().contains("b.conf -> "), "{e}");

        let self_include = dir.write("self.conf", "include \"self.conf\"\n");
        let e = Config::load(&self_include).unwrap_err();
        assert!(e.message().starts_with("include cycle: "), "{e}");
    }

    #[test]
    fn include_depth_is_limited() {
        let dir = TempDir::new("depth");
        for i in 0..=MAX_INCLUDE_DEPTH {
            dir.write(
                &format!("{i}.conf"),
                &format!("include \"{}.conf\"\n", i + 1),
            );
        }
        dir.write(&format!("{}.conf", MAX_INCLUDE_DEPTH + 1), "");
        let e = Config::load(&dir.0.join("0.conf")).unwrap_err();
        assert!(e.message().contains("nested more than 16 deep"), "{e}");
        assert_eq!(
            e.file(),
            dir.0.join(format!("{}.conf", MAX_INCLUDE_DEPTH - 1))
        );
        // Exactly the limit is fine: 2.conf to 17.conf is 16 files.
        Config::load(&dir.0.join("2.conf")).unwrap();
    }

    #[test]
    fn unreadable_files() {
        let dir = TempDir::new("read");
        let e = Config::load(&dir.0.join("nope.conf")).unwrap_err();
        assert_eq!(e.line(), None);
        assert!(
            e.to_string().starts_with(&format!(
                "{}: cannot read config file",
                dir.0.join("nope.conf").display()
            )),
            "{e}"
        );
        let bad = dir.0.join("latin1.conf");
        std::fs::write(&bad, b"server.port = 1\n# caf\xe9\n").unwrap();
        let e = Config::load(&bad).unwrap_err();
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.message().contains("UTF-8"));
    }

    #[test]
    fn cross_key_rules() {
        assert_err(
            "\nauth.required = \"enable\"\n",
            2,
            "neither auth.jwt-secret-file nor auth.jwt-public-key-file is set",
        );
        let c = parse("auth.required = \"enable\"\nauth.jwt-public-key-file = \"/etc/k.pem\"\n")
            .unwrap();
        assert_eq!(
            c.auth.jwt_public_key_file,
            Some(PathBuf::from("/etc/k.pem"))
        );
        assert_err(
            "mailbox.max-pending-bytes = 5000\n\nmailbox.max-message-size = 4000\n",
            3,
            "must be at least mailbox.max-message-size (4000) + 1024 = 5024",
        );
        assert_err(
            "mailbox.max-pending-bytes = 1000\n",
            1,
            "every subscriber would be disconnected",
        );
        parse("mailbox.max-pending-bytes = 5024\nmailbox.max-message-size = 4000\n").unwrap();
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

    fn manifest_path(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
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

    const TABLE_START: &str = "<!-- key table: generated from KEYS in src/config.rs -->";
    const TABLE_END: &str = "<!-- end of key table -->";

    /// The key table of docs/configuration.md, rendered from [`KEYS`].
    fn reference_table() -> String {
        let mut out = String::from("| Key | Type | Default | Meaning |\n|---|---|---|---|\n");
        for k in KEYS {
            let default = match k.default {
                "\"\"" => "unset".to_string(),
                d => format!("`{d}`"),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                k.name,
                k.kind.doc_type(),
                default,
                k.doc.replace('|', "\\|")
            ));
        }
        out
    }

    /// docs/configuration.md carries the table rendered from KEYS. On a
    /// mismatch, `COMETBOX_UPDATE_DOCS=1 cargo test config` rewrites it.
    #[test]
    fn docs_table_matches_keys() {
        let path = manifest_path("docs/configuration.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find(TABLE_START).expect("table start marker") + TABLE_START.len();
        let end = doc.find(TABLE_END).expect("table end marker");
        let want = format!("\n{}", reference_table());
        if doc[start..end] == want {
            return;
        }
        if std::env::var_os("COMETBOX_UPDATE_DOCS").is_some() {
            let updated = format!("{}{}{}", &doc[..start], want, &doc[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        panic!(
            "docs/configuration.md is out of date with KEYS; run COMETBOX_UPDATE_DOCS=1 cargo \
            test config. Expected table:\n{want}"
        );
    }
}
