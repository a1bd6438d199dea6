//! Value checks beyond a key's type (paths, prefixes, origins, cookie names,
//! addresses and modes) and the rules between keys, run once every file is
//! read ([`cross_check`]).

use std::net::{IpAddr, Ipv4Addr};

use super::Config;

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

pub(super) fn parse_bind(s: &str) -> Result<IpAddr, String> {
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
pub(super) fn parse_mode(text: &str) -> Result<u32, String> {
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

pub(super) fn check_any(_: &str) -> Result<(), String> {
    Ok(())
}

pub(super) fn check_listen_addr(s: &str) -> Result<(), String> {
    if s.is_empty() || s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    Err(format!(
        "{s:?} is not an address and port like \"127.0.0.1:9121\" or \"[::1]:9121\" (host names are not resolved)"
    ))
}

pub(super) fn check_log_level(s: &str) -> Result<(), String> {
    match s {
        "" | "error" | "warn" | "info" | "debug" | "trace" => Ok(()),
        _ => Err(format!(
            "{s:?} is not a log level: use error, warn, info, debug or trace"
        )),
    }
}

/// `cluster.redis`: `redis://HOST:PORT[/DB]` or `unix:///path/to/redis.sock`
/// (empty = no cluster).
pub(super) fn parse_redis_url(s: &str) -> Result<Option<super::RedisAddr>, String> {
    use super::RedisAddr;
    let shape = "use \"redis://HOST:PORT[/DB]\" or \"unix:///path/to/redis.sock\"";
    if s.is_empty() {
        return Ok(None);
    }
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') || path.len() < 2 {
            return Err(format!(
                "{s:?}: a Unix socket needs an absolute path; {shape}"
            ));
        }
        return Ok(Some(RedisAddr::Unix { path: path.into() }));
    }
    let Some(rest) = s.strip_prefix("redis://") else {
        return Err(format!("{s:?} is not a Redis URL; {shape}"));
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((hp, "")) => (hp, 0),
        Some((hp, db)) => match db.parse::<u32>() {
            Ok(n) if n < 16_384 => (hp, n),
            _ => return Err(format!("{s:?}: the database must be a number; {shape}")),
        },
        None => (rest, 0),
    };
    if hostport.contains('@') {
        return Err(format!(
            "{s:?}: put the password in cluster.redis-password-file, not in the URL"
        ));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(port) if port > 0 => (h, port),
            _ => return Err(format!("{s:?}: the port must be 1-65535; {shape}")),
        },
        None => (hostport, 6379),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !host_ok {
        return Err(format!("{s:?}: no host name; {shape}"));
    }
    Ok(Some(RedisAddr::Tcp {
        host: host.to_string(),
        port,
        db,
    }))
}

pub(super) fn check_redis_url(s: &str) -> Result<(), String> {
    parse_redis_url(s).map(|_| ())
}

/// `cluster.key-prefix`: text that goes into Redis key names and into the
/// Lua library the gateway loads, so plain characters only.
pub(super) fn check_key_prefix(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?}: use 1-64 characters of A-Z a-z 0-9 : _ - ., like \"cometbox:\""
        ))
    }
}

pub(super) fn check_url_prefix(s: &str) -> Result<(), String> {
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

/// `bayeux.path`: empty (off), or a path like `/bayeux` without a trailing
/// `/` (CometD appends `/handshake`, `/connect`… to it).
pub(super) fn check_bayeux_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if !s.starts_with('/') || s.ends_with('/') {
        return Err(format!(
            "{s:?} must start with '/' and not end with one, like \"/bayeux\" (or be \"\" for off)"
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

pub(super) fn check_socket_path(s: &str) -> Result<(), String> {
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

pub(super) fn check_store(s: &str) -> Result<(), String> {
    match super::StoreKind::parse(s) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{s:?} is not a store: expected \"memory\" or \"disk\""
        )),
    }
}

pub(super) fn check_store_fsync(s: &str) -> Result<(), String> {
    match super::StoreFsync::parse(s) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{s:?} is not an fsync policy: expected \"always\", \"everysec\" or \"no\" \
            (Redis' appendfsync values)"
        )),
    }
}

pub(super) fn check_store_dir(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the store directory must not be empty".to_string());
    }
    Ok(())
}

/// A cookie name is an RFC 6265 token: visible ASCII without separators.
pub(super) fn check_cookie_name(s: &str) -> Result<(), String> {
    let bad = |c: char| !c.is_ascii_graphic() || "()<>@,;:\\\"/[]?={}".contains(c);
    match s.chars().find(|&c| bad(c)) {
        Some(c) => Err(format!(
            "{s:?} is not a valid cookie name: {c:?} is not allowed in one"
        )),
        None => Ok(()),
    }
}

pub(super) fn check_cors_origins(origins: &[String]) -> Result<(), String> {
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
pub(super) fn check_public_prefixes(prefixes: &[String]) -> Result<(), String> {
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
pub(super) fn cross_check(config: &Config) -> Result<(), (&'static [&'static str], String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::{assert_err, parse};
    use std::path::PathBuf;

    #[test]
    fn redis_urls_and_key_prefixes() {
        use crate::config::RedisAddr;
        let c = parse("cluster.redis = \"redis://10.0.0.5:6380/2\"").unwrap();
        assert_eq!(
            c.cluster.redis,
            Some(RedisAddr::Tcp {
                host: "10.0.0.5".into(),
                port: 6380,
                db: 2
            })
        );
        let c = parse("cluster.redis = \"unix:///run/redis/redis.sock\"").unwrap();
        assert_eq!(
            c.cluster.redis,
            Some(RedisAddr::Unix {
                path: PathBuf::from("/run/redis/redis.sock")
            })
        );
        assert_eq!(parse("cluster.redis = \"\"").unwrap().cluster.redis, None);
        for (bad, why) in [
            ("http://x:1", "not a Redis URL"),
            ("redis://:6379", "no host name"),
            ("redis://h:0", "port"),
            ("redis://h:99999", "port"),
            ("redis://h:1/x", "database"),
            ("redis://:pw@h:1", "redis-password-file"),
            ("unix://relative.sock", "absolute path"),
        ] {
            assert_err(&format!("cluster.redis = \"{bad}\""), 1, why);
            assert_err(&format!("cluster.redis = \"{bad}\""), 1, "cluster.redis");
        }
        assert_err("cluster.key-prefix = \"a b\"", 1, "cluster.key-prefix");
        assert_err("cluster.key-prefix = \"\"", 1, "1-64 characters");
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
}
