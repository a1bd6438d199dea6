//! The table of known keys ([`KEYS`]): each key's name, how its value is read
//! and stored, its default and its documentation. Everything that lists keys
//! (the loader, the "did you mean" hint, docs/configuration.md and the
//! shipped gateway.conf, both checked by tests) reads this one table.

use std::path::PathBuf;
use std::time::Duration;

use super::MAX_WORKERS;
pub(super) use super::kind::{Key, Kind, Text, Unit};
use super::validate::{
    check_any, check_bayeux_path, check_cookie_name, check_cors_origins, check_key_prefix,
    check_public_prefixes, check_redis_url, check_socket_path, check_store, check_store_dir,
    check_store_fsync, check_url_prefix, parse_redis_url,
};
use super::validate::{check_listen_addr, check_log_level};
use super::{StoreFsync, StoreKind};

/// Upper bound on every duration in seconds (one year). Deadlines are
/// computed as `Instant + Duration`, which panics on overflow; no sane timeout
/// comes near this, and with it no arithmetic on a configured value can.
const MAX_SECONDS: i64 = 365 * 24 * 60 * 60;

/// Upper bound on `mailbox.sse-retry` (one day): the value is only advice to
/// EventSource clients, and a longer one means "never come back".
const MAX_SSE_RETRY_MS: i64 = 24 * 60 * 60 * 1000;

/// Largest count or byte size a key takes when it has no upper bound of its
/// own: what fits both the `i64` the parser reads and a `usize`.
pub(super) const UNBOUNDED: i64 = if (usize::MAX as u128) < (i64::MAX as u128) {
    usize::MAX as i64
} else {
    i64::MAX
};

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

pub(super) static KEYS: &[Key] = &[
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
        doc: "Largest request body accepted (bodies are read and discarded, except the Bayeux \
            endpoint's and an upstream POST's); a larger one is answered with 413.",
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
        name: "server.listen-backlog",
        kind: Kind::Int {
            unit: Unit::Count,
            // listen(2) takes an int, but Linux silently caps the backlog at
            // net.core.somaxconn (4096 since 5.4) and other kernels at 65535
            // or less, so a larger value would only mislead.
            min: 1,
            max: 65535,
            set: |c, n| c.server.listen_backlog = n as u32,
        },
        default: "4096",
        doc: "Connections the kernel queues for the HTTP listener before the gateway accepts \
            them (the listen(2) backlog). Linux caps it at net.core.somaxconn; raise that too, \
            e.g. sysctl -w net.core.somaxconn=4096.",
    },
    Key {
        name: "mailbox.url-prefix",
        kind: Kind::Str {
            what: Text::Plain,
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
            what: Text::Path,
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
            what: Text::Plain,
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
            what: Text::Secret,
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
        name: "mailbox.max-per-connection",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 1,
            max: 255,
            set: |c, n| c.mailbox.max_per_connection = count(n),
        },
        default: "16",
        doc: "Mailboxes one request may follow (`/mailbox/a,b,c`). Browsers allow about \
            six HTTP/1.1 connections per host, so a page follows several mailboxes on one.",
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
        name: "mailbox.store",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_store,
            // The check above accepted it.
            set: |c, s| c.mailbox.store = StoreKind::parse(&s).unwrap_or_default(),
        },
        default: r#""memory""#,
        doc: "Where retained messages live: \"memory\" (a restart empties every mailbox) or \
            \"disk\" (also in an append-only log in mailbox.store-dir, so mail and cursors \
            survive a restart; see docs/storage.md).",
    },
    Key {
        name: "mailbox.store-dir",
        kind: Kind::Str {
            what: Text::Path,
            check: check_store_dir,
            set: |c, s| c.mailbox.store_dir = PathBuf::from(s),
        },
        default: r#""/var/lib/cometbox""#,
        doc: "Directory of the disk store's log (mailbox.store = \"disk\"). Created if \
            missing; the gateway and -t refuse one it cannot write.",
    },
    Key {
        name: "mailbox.store-fsync",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_store_fsync,
            set: |c, s| c.mailbox.store_fsync = StoreFsync::parse(&s).unwrap_or_default(),
        },
        default: r#""everysec""#,
        doc: "When the disk store's log is fsynced, as Redis' appendfsync: \"always\" (a \
            PUBLISH is answered once its batch is on disk), \"everysec\" (about once a \
            second; a crash loses at most about the last second) or \"no\" (when the OS \
            decides). The guarantees are in docs/protocol.md.",
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
            what: Text::File,
            check: check_any,
            set: |c, s| c.auth.jwt_secret_file = opt(s).map(PathBuf::from),
        },
        default: r#""""#,
        doc: "File holding the shared secret, at least 32 bytes, for HS256-signed subscriber \
            tokens (JWT). Whitespace at the end of the file is ignored; see Token keys above \
            for how to make one.",
    },
    Key {
        name: "auth.jwt-public-key-file",
        kind: Kind::Str {
            what: Text::File,
            check: check_any,
            set: |c, s| c.auth.jwt_public_key_file = opt(s).map(PathBuf::from),
        },
        default: r#""""#,
        doc: "PEM file holding the public key for RS256 (RSA) or ES256 (P-256) signed \
            subscriber tokens.",
    },
    Key {
        name: "auth.clock-leeway",
        kind: Kind::Int {
            unit: Unit::Seconds,
            // Five minutes covers any clock NTP keeps in step; beyond that an
            // expired token stays usable long enough to matter.
            min: 0,
            max: 300,
            set: |c, n| c.auth.clock_leeway = secs(n),
        },
        default: "5",
        doc: "Clock difference tolerated when checking a token's exp and nbf claims, for app \
            servers whose clocks drift from the gateway's.",
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
            what: Text::Plain,
            check: check_cookie_name,
            set: |c, s| c.auth.cookie = opt(s),
        },
        default: r#""""#,
        doc: "Name of a cookie that carries the token, for clients that cannot set headers.",
    },
    Key {
        name: "auth.audience",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_any,
            set: |c, s| c.auth.audience = opt(s),
        },
        default: r#""""#,
        doc: "Audience (aud claim) a token must name; unset = aud is not checked.",
    },
    Key {
        name: "mailbox.upstream",
        kind: Kind::Bool(|c, b| c.mailbox.upstream = b),
        default: r#""disable""#,
        doc: "Deliver what browsers send (WebSocket text frames, `POST /mailbox/{name}` bodies up \
            to mailbox.max-message-size) to backends subscribed to `__cometbox:upstream` \
            (docs/protocol.md). With auth.required, only to mailboxes the token's `publish` \
            claim grants. POST is answered 204, 413 over the size; off: frames are ignored and \
            POST is 405.",
    },
    Key {
        name: "mailbox.presence-per-subscriber",
        kind: Kind::Bool(|c, b| c.mailbox.presence_per_subscriber = b),
        default: r#""disable""#,
        doc: "Presence events (`__cometbox:events`) for every subscriber that comes and goes, \
            not only when a mailbox gains its first or loses its last.",
    },
    Key {
        name: "metrics.listen",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_listen_addr,
            set: |c, s| c.metrics.listen = s.parse().ok(),
        },
        default: r#""""#,
        doc: "Address and port of the metrics listener, e.g. \"127.0.0.1:9121\": `GET /metrics` \
            (Prometheus text format) and `GET /health`. Empty = off. A listener of its own, so \
            the public port never exposes it; keep it on loopback or a private network.",
    },
    Key {
        name: "server.log-level",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_log_level,
            set: |c, s| c.server.log_level = opt(s),
        },
        default: r#""""#,
        doc: "\"error\", \"warn\", \"info\", \"debug\" or \"trace\"; empty = info. RUST_LOG, when \
            set, wins (and then SIGHUP does not change the level).",
    },
    Key {
        name: "cluster.redis",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_redis_url,
            set: |c, s| c.cluster.redis = parse_redis_url(&s).ok().flatten(),
        },
        default: r#""""#,
        doc: "Share mailboxes with other gateways through this Redis (7 or later): \
            \"redis://HOST:PORT[/DB]\" or \"unix:///path/to/redis.sock\". Unset = \
            mailboxes in memory, no other service. See docs/cluster.md.",
    },
    Key {
        name: "cluster.redis-password-file",
        kind: Kind::Str {
            what: Text::File,
            check: check_any,
            set: |c, s| c.cluster.redis_password_file = opt(s).map(PathBuf::from),
        },
        default: r#""""#,
        doc: "File holding the password the gateway sends Redis with AUTH (one line; \
            \"user password\" for an ACL user). Unset = no AUTH.",
    },
    Key {
        name: "cluster.key-prefix",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_key_prefix,
            set: |c, s| c.cluster.key_prefix = s,
        },
        default: r#""cometbox:""#,
        doc: "First part of every Redis key and channel the gateway uses, so that two \
            deployments can share one Redis; it also names the Redis Function library \
            (\"cometbox:\" gives FCALL cometbox_publish).",
    },
    Key {
        name: "bayeux.path",
        kind: Kind::Str {
            what: Text::Plain,
            check: check_bayeux_path,
            set: |c, s| c.bayeux.path = s,
        },
        default: r#""/bayeux""#,
        doc: "Path of the Bayeux endpoint for CometD and Faye clients (docs/bayeux.md); \
            \"\" turns it off.",
    },
    Key {
        name: "bayeux.session-timeout",
        kind: Kind::Int {
            unit: Unit::Seconds,
            // Below the poll timeout a session would die while its client
            // waits; beyond an hour forgotten clients hold memory long.
            min: 5,
            max: 3600,
            set: |c, n| c.bayeux.session_timeout = secs(n),
        },
        default: "60",
        doc: "A Bayeux clientId lives while its client connects within this long of its last \
            /meta/connect; later, the client is told to handshake again.",
    },
    Key {
        name: "bayeux.max-sessions",
        kind: Kind::Int {
            unit: Unit::Count,
            min: 1,
            max: UNBOUNDED,
            set: |c, n| c.bayeux.max_sessions = count(n),
        },
        default: "100000",
        doc: "Bayeux sessions (clientIds) alive at once; a handshake beyond it is refused.",
    },
    Key {
        name: "bayeux.max-subscriptions",
        kind: Kind::Int {
            unit: Unit::Count,
            // Each subscription is a mailbox a connect attaches to.
            min: 1,
            max: 1024,
            set: |c, n| c.bayeux.max_subscriptions = count(n),
        },
        default: "64",
        doc: "Channels (or patterns) one Bayeux session may subscribe to.",
    },
    Key {
        name: "bayeux.client-publish",
        kind: Kind::Bool(|c, b| c.bayeux.client_publish = b),
        default: r#""disable""#,
        doc: "Let Bayeux clients publish to channels (stored in the mailbox like a backend \
            PUBLISH); with auth.required, only to mailboxes the token's publish claim grants.",
    },
];

pub(super) fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::loader::parse_with_warnings;
    use crate::config::test_util::{assert_err, manifest_path, parse};
    use std::path::Path;

    const TABLE_START: &str = "<!-- key table: generated from KEYS in src/config/keys.rs -->";
    const TABLE_END: &str = "<!-- end of key table -->";

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
server.listen-backlog = 128
auth.clock-leeway = 0
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
        assert_eq!(c.server.listen_backlog, 128);
        assert_eq!(c.auth.clock_leeway, Duration::ZERO);
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
        assert_err("server.listen-backlog = 0", 1, "from 1 to 65535");
        assert_err("server.listen-backlog = 65536", 1, "out of range");
        assert_err(
            "auth.clock-leeway = 301",
            1,
            "whole number of seconds from 0 to 300",
        );
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
