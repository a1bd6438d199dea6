//! The gateway configuration: the typed [`Config`] and the ways to get one.
//! `gateway.conf` (a subset of lighttpd's syntax) is read by `loader` with
//! tokens from `lexer`; every key lives in the one table in `keys`, so the
//! unknown-key check, the "did you mean" hint (`suggest`), the environment
//! overrides (`env`) and docs/configuration.md (checked by a test) cannot
//! drift apart. Value and cross-key rules are in `validate`; `files` checks
//! the files a config names, so `cometbox -t` fails where the start would.

mod env;
mod files;
mod keys;
mod kind;
mod lexer;
mod loader;
mod reload;
mod suggest;
mod validate;
mod value;

pub use env::env_name;
pub use files::check_store_dir;
pub use reload::changed_keys;

#[cfg(test)]
mod test_util;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the binary looks for its config when neither `-c` nor
/// `COMETBOX_CONFIG` names one, in order: the packaged location first, so a
/// stray gateway.conf in the working directory cannot shadow it.
pub const SEARCH_PATH: [&str; 2] = ["/etc/cometbox/gateway.conf", "./gateway.conf"];

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
    pub metrics: MetricsConfig,
    pub cluster: ClusterConfig,
    pub bayeux: BayeuxConfig,
}

/// The Bayeux endpoint (docs/bayeux.md).
#[derive(Clone, Debug, PartialEq)]
pub struct BayeuxConfig {
    /// `bayeux.path`; empty = off.
    pub path: String,
    /// `bayeux.session-timeout`: a client that has not connected for this
    /// long is forgotten.
    pub session_timeout: Duration,
    /// `bayeux.max-sessions`.
    pub max_sessions: usize,
    /// `bayeux.max-subscriptions`: per session.
    pub max_subscriptions: usize,
    /// `bayeux.client-publish`.
    pub client_publish: bool,
}

impl Default for BayeuxConfig {
    fn default() -> Self {
        BayeuxConfig {
            path: "/bayeux".to_string(),
            session_timeout: Duration::from_secs(60),
            max_sessions: 100_000,
            max_subscriptions: 64,
            client_publish: false,
        }
    }
}

/// The metrics and health listener.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsConfig {
    /// `metrics.listen`; `None` = off.
    pub listen: Option<std::net::SocketAddr>,
}

/// Several gateways sharing mailboxes through Redis (docs/cluster.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// `cluster.redis`; `None` = no cluster, mailboxes in memory.
    pub redis: Option<RedisAddr>,
    /// `cluster.redis-password-file`: the password AUTH sends.
    pub redis_password_file: Option<PathBuf>,
    /// `cluster.key-prefix`: the first part of every Redis key and channel.
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            redis_password_file: None,
            key_prefix: "cometbox:".to_string(),
        }
    }
}

/// Where Redis listens, as `cluster.redis` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAddr {
    /// `redis://HOST:PORT[/DB]`.
    Tcp { host: String, port: u16, db: u32 },
    /// `unix:///path/to/redis.sock`.
    Unix { path: PathBuf },
}

impl RedisAddr {
    pub fn db(&self) -> u32 {
        match self {
            RedisAddr::Tcp { db, .. } => *db,
            RedisAddr::Unix { .. } => 0,
        }
    }
}

impl std::fmt::Display for RedisAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisAddr::Tcp { host, port, db } => write!(f, "redis://{host}:{port}/{db}"),
            RedisAddr::Unix { path } => write!(f, "unix://{}", path.display()),
        }
    }
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
    /// `server.log-level`; `None` = info (RUST_LOG wins when set).
    pub log_level: Option<String>,
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
            log_level: None,
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
    /// `mailbox.max-per-connection`: mailboxes one request may follow.
    pub max_per_connection: usize,
    /// `mailbox.cors-origins`; empty = no CORS headers, `"*"` = any origin.
    pub cors_origins: Vec<String>,
    /// `mailbox.upstream`: browsers' messages go to `__cometbox:upstream`.
    pub upstream: bool,
    /// `mailbox.presence-per-subscriber`: an event for every subscriber.
    pub presence_per_subscriber: bool,
    /// `mailbox.store`: where retained messages live.
    pub store: StoreKind,
    /// `mailbox.store-dir`: the disk store's directory.
    pub store_dir: PathBuf,
    /// `mailbox.store-fsync`: when the disk store's log is fsynced.
    pub store_fsync: StoreFsync,
}

/// `mailbox.store`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// In memory only: a restart empties every mailbox (the default).
    #[default]
    Memory,
    /// In memory, with an append-only log in `mailbox.store-dir`.
    Disk,
}

/// `mailbox.store-fsync`, with Redis' `appendfsync` meanings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFsync {
    /// Each PUBLISH is answered once its batch of the log is fsynced.
    Always,
    /// The log is fsynced about once a second; replies do not wait.
    #[default]
    EverySec,
    /// The log is written at once and fsynced when the OS decides.
    No,
}

impl StoreKind {
    pub fn parse(s: &str) -> Option<StoreKind> {
        match s {
            "memory" => Some(StoreKind::Memory),
            "disk" => Some(StoreKind::Disk),
            _ => None,
        }
    }
}

impl StoreFsync {
    pub fn parse(s: &str) -> Option<StoreFsync> {
        match s {
            "always" => Some(StoreFsync::Always),
            "everysec" => Some(StoreFsync::EverySec),
            "no" => Some(StoreFsync::No),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoreFsync::Always => "always",
            StoreFsync::EverySec => "everysec",
            StoreFsync::No => "no",
        }
    }
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
            max_per_connection: 16,
            cors_origins: Vec::new(),
            upstream: false,
            presence_per_subscriber: false,
            store: StoreKind::Memory,
            store_dir: PathBuf::from("/var/lib/cometbox"),
            store_fsync: StoreFsync::EverySec,
        }
    }
}

/// Subscriber tokens: the settings live with their user, `auth`, so that
/// `auth` needs nothing of the config module.
pub use crate::auth::AuthConfig;

impl Config {
    /// Reads the file at `path` and the files it includes. The environment
    /// is not consulted and named files are not checked: that is
    /// [`Config::load_with_env`], what the binary uses.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let loaded = loader::parse(&loader::read_config(path)?, path, Vec::new())?;
        loaded.warnings.iter().for_each(|w| log::warn!("{w}"));
        Ok(loaded.config)
    }

    /// Parses `text` as if read from `origin`, which names the text in errors
    /// and is the base directory for its includes.
    pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let loaded = loader::parse(text, origin, Vec::new())?;
        loaded.warnings.iter().for_each(|w| log::warn!("{w}"));
        Ok(loaded.config)
    }

    /// What the `cometbox` binary does both for `-t` and before it starts:
    /// reads the file at `path`, applies the `COMETBOX_*` overrides found in
    /// `env` (pass `std::env::vars_os()`), and checks that the files the
    /// config names can be used ([`Loaded::check_files`]). Warnings are
    /// returned, not logged.
    pub fn load_with_env<I, K, V>(path: &Path, env: I) -> Result<Loaded, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let overrides = env::overrides(env, path)?;
        let loaded = loader::parse(&loader::read_config(path)?, path, overrides)?;
        loaded.check_files()?;
        Ok(loaded)
    }

    /// [`Config::load_with_env`] on text, without the file checks.
    pub fn parse_with_env<I, K, V>(text: &str, origin: &Path, env: I) -> Result<Loaded, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        loader::parse(text, origin, env::overrides(env, origin)?)
    }

    /// The config file to read: `-c` (`explicit`), else `COMETBOX_CONFIG`
    /// (`from_env`, ignored when empty), else the first of [`SEARCH_PATH`]
    /// for which `exists` holds.
    pub fn find(
        explicit: Option<PathBuf>,
        from_env: Option<OsString>,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<PathBuf, ConfigError> {
        if let Some(path) = explicit {
            return Ok(path);
        }
        if let Some(path) = from_env.filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        SEARCH_PATH
            .iter()
            .map(PathBuf::from)
            .find(|p| exists(p))
            .ok_or_else(|| {
                ConfigError::nowhere(format!(
                    "no config file: tried {} and {} (name one with -c FILE or COMETBOX_CONFIG)",
                    SEARCH_PATH[0], SEARCH_PATH[1]
                ))
            })
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

/// A loaded config, with where each value that is not a default came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// The config file read.
    pub path: PathBuf,
    /// Every key set in the files or the environment, in key-table order.
    pub settings: Vec<Setting>,
    /// Problems that do not stop the gateway, e.g. a key set twice.
    pub warnings: Vec<String>,
}

/// One key's effective value; `Display` gives the line `-t` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    /// In config syntax; secrets shown as `(hidden)`.
    pub value: String,
    pub source: Source,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}  ({})", self.key, self.value, self.source)
    }
}

/// Where a key got its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A line of the config file or of a file it includes.
    File { file: PathBuf, line: usize },
    /// An environment variable, `COMETBOX_...`.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { file, line } => write!(f, "{}:{line}", file.display()),
            Source::Env(name) => write!(f, "env {name}"),
        }
    }
}

impl Source {
    /// An error about the value set here; `origin`, the config file, is the
    /// file of an error from the environment.
    fn error(&self, origin: &Path, message: impl Into<String>) -> ConfigError {
        match self {
            Source::File { file, line } => ConfigError::at(file, *line, message),
            Source::Env(name) => ConfigError::in_env(origin, name, message),
        }
    }
}

/// A config that cannot be used, with the file (and line) or the environment
/// variable to fix.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    line: Option<usize>,
    env: Option<String>,
    message: String,
}

impl ConfigError {
    fn at(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: Some(line),
            ..ConfigError::in_file(file, message)
        }
    }

    fn in_file(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            env: None,
            message: message.into(),
        }
    }

    fn in_env(origin: &Path, name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            env: Some(name.to_string()),
            ..ConfigError::in_file(origin, message)
        }
    }

    /// No file to point at: none was found.
    fn nowhere(message: impl Into<String>) -> ConfigError {
        ConfigError::in_file(Path::new(""), message)
    }

    /// The file to fix, as it was named (origin, or include path joined to
    /// the including file's directory). For an error in an environment
    /// variable, the config file it applies to.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The line to fix, when the problem is on one line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The environment variable to fix, when the problem is in one.
    pub fn env_var(&self) -> Option<&str> {
        self.env.as_deref()
    }

    /// The message without the location prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env, self.line) {
            (Some(name), _) => write!(f, "env {name}: {}", self.message),
            (None, Some(line)) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            (None, None) if self.file.as_os_str().is_empty() => f.write_str(&self.message),
            (None, None) => write!(f, "{}: {}", self.file.display(), self.message),
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
    use super::loader::{load_with_warnings, parse_with_warnings};
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
        let e = ConfigError::in_env(Path::new("g.conf"), "COMETBOX_SERVER_PORT", "boom");
        assert_eq!(e.to_string(), "env COMETBOX_SERVER_PORT: boom");
        assert_eq!(e.env_var(), Some("COMETBOX_SERVER_PORT"));
        assert_eq!(e.file(), Path::new("g.conf"));
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

    #[test]
    fn settings_say_where_each_value_came_from() {
        let text = "server.port = 8080\n\nmailbox.backend-password = \"pw\"\n\
            mailbox.cors-origins = ( \"https://a.example\" )\n";
        let l = Config::parse_with_env(
            text,
            Path::new("g.conf"),
            [("COMETBOX_SERVER_PORT", "9000")],
        )
        .unwrap();
        let lines: Vec<String> = l.settings.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            lines,
            [
                "server.port = 9000  (env COMETBOX_SERVER_PORT)",
                "mailbox.backend-password = (hidden)  (g.conf:3)",
                "mailbox.cors-origins = ( \"https://a.example\" )  (g.conf:4)",
            ]
        );
        assert_eq!(l.path, Path::new("g.conf"));
    }

    /// What -t prints reads back as the same config, so it can be pasted.
    #[test]
    fn settings_read_back_as_the_same_config() {
        let text = "server.bind = \"[::1]\"\nserver.workers = \"3\"\n\
            mailbox.backend-socket-mode = 640\nmailbox.url-prefix = \"/a\\\"b\\\\c/\"\n\
            auth.required = \"on\"\nauth.jwt-secret-file = \"/k\"\n\
            auth.public-prefixes = ( \"p:\", \"q.\" )\nmailbox.cors-origins = ()\n";
        let l = Config::parse_with_env(text, Path::new("g.conf"), Vec::<(String, String)>::new())
            .unwrap();
        let again: String = l
            .settings
            .iter()
            .map(|s| format!("{} = {}\n", s.key, s.value))
            .collect();
        assert_eq!(parse(&again).unwrap(), l.config, "{again}");
        assert!(
            again.contains("mailbox.backend-socket-mode = \"0640\""),
            "{again}"
        );
        assert!(again.contains("auth.required = \"enable\""), "{again}");
    }

    #[test]
    fn config_file_search_order() {
        let none = |_: &Path| false;
        let all = |_: &Path| true;
        let only_local = |p: &Path| p == Path::new("./gateway.conf");
        let explicit = Some(PathBuf::from("a.conf"));
        let from_env = Some(OsString::from("b.conf"));
        assert_eq!(
            Config::find(explicit.clone(), from_env.clone(), none).unwrap(),
            Path::new("a.conf")
        );
        assert_eq!(
            Config::find(None, from_env, none).unwrap(),
            Path::new("b.conf")
        );
        assert_eq!(
            Config::find(None, Some(OsString::new()), all).unwrap(),
            Path::new("/etc/cometbox/gateway.conf")
        );
        assert_eq!(
            Config::find(None, None, only_local).unwrap(),
            Path::new("./gateway.conf")
        );
        let e = Config::find(None, None, none).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no config file: tried /etc/cometbox/gateway.conf and ./gateway.conf (name one with \
            -c FILE or COMETBOX_CONFIG)"
        );
    }
}
