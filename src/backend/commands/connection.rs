//! Connection commands: the handshake (HELLO, AUTH), CLIENT, and the small
//! commands pools and health checks send (PING, ECHO, SELECT, RESET). They
//! change only the connection's [`Session`], never the gateway.

use super::{Hub, REDIS_VERSION, Session, c_text, count, wrong_arity};
use crate::backend::resp;

/// HELLO's `server` field. No client we know checks it, but tooling that
/// does expects "redis"; cometbox names itself in INFO (`cometbox_version`).
const SERVER_NAME: &str = "redis";

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, step for step as
/// Redis' `helloCommand`: parse everything, then authenticate, then apply.
pub(super) fn hello<H: Hub>(session: &mut Session, args: &[&[u8]], hub: &H, out: &mut Vec<u8>) {
    let mut proto = None;
    if let Some(version) = args.get(1) {
        match resp::parse_integer(version) {
            None => {
                return resp::error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                );
            }
            Some(v @ 2..=3) => proto = Some(v as u8),
            Some(_) => return resp::error(out, "NOPROTO unsupported protocol version"),
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let option = &args[i];
        if option.eq_ignore_ascii_case(b"auth") && more >= 2 {
            credentials = Some((&args[i + 1], &args[i + 2]));
            i += 3;
        } else if option.eq_ignore_ascii_case(b"setname") && more >= 1 {
            if !valid_client_attr(args[i + 1]) {
                return resp::error(out, INVALID_CLIENT_NAME);
            }
            name = Some(&args[i + 1]);
            i += 2;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(c_text(option, usize::MAX));
            msg.push(b'\'');
            return resp::error_bytes(out, &msg);
        }
    }
    if let Some((user, password)) = credentials {
        if !credentials_ok(hub, Some(*user), password, session.id) {
            return resp::error(out, WRONGPASS);
        }
        session.authenticated = true;
    }
    if !session.authenticated && hub.password().is_some() {
        return resp::error(
            out,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        session.name = non_empty(name);
    }
    if let Some(proto) = proto {
        session.proto = proto;
    }
    let p = session.proto;
    resp::map_len(out, p, 7);
    resp::bulk(out, b"server");
    resp::bulk(out, SERVER_NAME.as_bytes());
    resp::bulk(out, b"version");
    resp::bulk(out, REDIS_VERSION.as_bytes());
    resp::bulk(out, b"proto");
    resp::integer(out, i64::from(p));
    resp::bulk(out, b"id");
    count(out, session.id);
    resp::bulk(out, b"mode");
    resp::bulk(out, b"standalone");
    resp::bulk(out, b"role");
    resp::bulk(out, b"master");
    resp::bulk(out, b"modules");
    resp::array_len(out, 0);
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// `AUTH [user] password`.
pub(super) fn auth<H: Hub>(session: &mut Session, args: &[&[u8]], hub: &H, out: &mut Vec<u8>) {
    if args.len() > 3 {
        return resp::error(out, "ERR syntax error");
    }
    if args.len() == 2 && hub.password().is_none() {
        return resp::error(
            out,
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    }
    let (user, password) = match args {
        [_, password] => (None, password),
        [_, user, password] => (Some(*user), password),
        _ => unreachable!("arity -2 and the check above leave 2 or 3 arguments"),
    };
    if credentials_ok(hub, user, password, session.id) {
        session.authenticated = true;
        resp::simple(out, "OK");
    } else {
        resp::error(out, WRONGPASS);
    }
}

/// There is one user, Redis' `default`: with no password configured it takes
/// any password (Redis' `nopass`), as `AUTH default x` does on a fresh Redis.
fn credentials_ok<H: Hub>(hub: &H, user: Option<&[u8]>, password: &[u8], id: u64) -> bool {
    let user_ok = user.is_none_or(|u| u == b"default");
    let password_ok = match hub.password() {
        None => true,
        Some(secret) => constant_time_eq(password, secret.as_bytes()),
    };
    if !(user_ok && password_ok) {
        log::info!("backend connection {id}: AUTH failed");
    }
    user_ok && password_ok
}

/// Compares a password without an early exit, so the reply time does not
/// tell how many leading bytes were right. The loop runs over the *supplied*
/// bytes, so its length depends only on what the client sent, never on the
/// secret; a length mismatch is folded in at the end. Ten lines instead of a
/// crate (`subtle`, `constant_time_eq`): this is the only secret comparison,
/// once per AUTH on a local socket, and `black_box` keeps the optimiser from
/// turning the loop back into an early-exit `memcmp`.
fn constant_time_eq(supplied: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(supplied.len() != secret.len());
    for (i, &byte) in supplied.iter().enumerate() {
        let expected = secret.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(byte ^ expected);
    }
    std::hint::black_box(diff) == 0
}

/// CLIENT INFO: Redis' `key=value` line, with the fields we know.
pub(super) fn client_info(session: &Session, out: &mut Vec<u8>) {
    let text = |v: &Option<Vec<u8>>| {
        String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned()
    };
    let line = format!(
        "id={} addr= laddr= name={} db=0 sub=0 psub=0 ssub=0 multi=-1 flags=U cmd=client|info \
         user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
        session.id,
        text(&session.name),
        session.proto,
        text(&session.lib_name),
        text(&session.lib_ver),
    );
    resp::verbatim(out, session.proto, "txt", line.as_bytes());
}

/// `PING [msg]`: arity -1 in the table, the upper bound checked here as
/// Redis does.
pub(super) fn ping(args: &[&[u8]], name: &str, out: &mut Vec<u8>) {
    match &args[1..] {
        [] => resp::simple(out, "PONG"),
        [msg] => resp::bulk(out, msg),
        _ => wrong_arity(name, out),
    }
}

/// `SELECT n`: there is one database, 0.
pub(super) fn select(index: &[u8], out: &mut Vec<u8>) {
    match resp::parse_integer(index).and_then(|n| i32::try_from(n).ok()) {
        None => resp::error(out, "ERR value is not an integer or out of range"),
        Some(0) => resp::simple(out, "OK"),
        Some(_) => resp::error(out, "ERR DB index is out of range"),
    }
}

/// `RESET`: back to a fresh connection (RESP2, no name, logged out when a
/// password is set).
pub(super) fn reset<H: Hub>(session: &mut Session, hub: &H, out: &mut Vec<u8>) {
    session.proto = 2;
    session.name = None;
    session.authenticated = hub.password().is_none();
    session.pubsub.clear();
    resp::simple(out, "RESET");
}

pub(super) fn client_getname(session: &Session, out: &mut Vec<u8>) {
    match &session.name {
        Some(name) => resp::bulk(out, name),
        None => resp::null(out, session.proto),
    }
}

pub(super) fn client_setname(session: &mut Session, name: &[u8], out: &mut Vec<u8>) {
    if !valid_client_attr(name) {
        resp::error(out, INVALID_CLIENT_NAME);
    } else {
        session.name = non_empty(name);
        resp::simple(out, "OK");
    }
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`, sent by every modern client.
pub(super) fn client_setinfo(session: &mut Session, attr: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let slot = if attr.eq_ignore_ascii_case(b"lib-name") {
        &mut session.lib_name
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        &mut session.lib_ver
    } else {
        let mut msg = b"ERR Unrecognized option '".to_vec();
        msg.extend_from_slice(c_text(attr, usize::MAX));
        msg.push(b'\'');
        return resp::error_bytes(out, &msg);
    };
    if !valid_client_attr(value) {
        let mut msg = b"ERR ".to_vec();
        msg.extend_from_slice(c_text(attr, usize::MAX));
        msg.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
        resp::error_bytes(out, &msg);
    } else {
        *slot = non_empty(value);
        resp::simple(out, "OK");
    }
}

fn non_empty(value: &[u8]) -> Option<Vec<u8>> {
    (!value.is_empty()).then(|| value.to_vec())
}

const INVALID_CLIENT_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

/// Redis' `validateClientAttr`: printable ASCII without spaces, so that
/// CLIENT INFO/LIST lines still split on spaces.
fn valid_client_attr(value: &[u8]) -> bool {
    value.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

pub(super) const CLIENT_HELP: &[&str] = &[
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
];

#[cfg(test)]
mod tests {
    use super::super::After;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn hello_3_matches_the_wire_example() {
        let mut s = Session::new(5, false);
        let replies = pipeline(&mut s, &mut hub(), b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
        assert_eq!(replies, [HELLO3]);
        assert_eq!(s.proto, 3);
    }

    #[test]
    fn hello_2_is_a_flat_array_and_bare_hello_only_reports() {
        let mut s = Session::new(5, false);
        let hello2 = HELLO3.replace("%7", "*14").replace(":3\r\n", ":2\r\n");
        assert_eq!(exec(&mut s, &mut hub(), &["hello", "2"]), hello2);
        assert_eq!(exec(&mut s, &mut hub(), &["HELLO"]), hello2);
        exec(&mut s, &mut hub(), &["HELLO", "3"]);
        assert_eq!(exec(&mut s, &mut hub(), &["HELLO"]), HELLO3);
    }

    #[test]
    fn hello_errors() {
        let mut s = Session::new(1, false);
        let h = &mut hub();
        assert_eq!(
            exec(&mut s, h, &["HELLO", "4"]),
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["HELLO", "1"]),
            "-NOPROTO unsupported protocol version\r\n"
        );
        for bad in ["x", "03", " 3", "99999999999999999999"] {
            assert_eq!(
                exec(&mut s, h, &["HELLO", bad]),
                "-ERR Protocol version is not an integer or out of range\r\n"
            );
        }
        assert_eq!(
            exec(&mut s, h, &["HELLO", "3", "FOO"]),
            "-ERR Syntax error in HELLO option 'FOO'\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["HELLO", "3", "AUTH", "default"]),
            "-ERR Syntax error in HELLO option 'AUTH'\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["HELLO", "3", "SETNAME"]),
            "-ERR Syntax error in HELLO option 'SETNAME'\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["HELLO", "3", "SETNAME", "a b"]),
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
        );
        assert_eq!(s.proto, 2, "no error switched the protocol");
        assert_eq!(s.name, None);
    }

    #[test]
    fn hello_setname_and_auth() {
        let mut s = Session::new(1, false);
        let h = &mut hub();
        exec(&mut s, h, &["HELLO", "3", "setname", "worker-1"]);
        assert_eq!(
            exec(&mut s, h, &["CLIENT", "GETNAME"]),
            "$8\r\nworker-1\r\n"
        );
        // No password configured: `default` takes any password, like Redis.
        assert!(exec(&mut s, h, &["HELLO", "2", "AUTH", "default", "x"]).starts_with("*14\r\n"));
        assert_eq!(
            exec(&mut s, h, &["HELLO", "3", "AUTH", "someone", "x"]),
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
        assert_eq!(s.proto, 2);
    }

    #[test]
    fn auth_flows() {
        let h = &mut locked_hub();
        let mut s = Session::new(7, true);
        let noauth = "-NOAUTH Authentication required.\r\n";
        let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
        assert_eq!(exec(&mut s, h, &["PING"]), noauth);
        assert_eq!(exec(&mut s, h, &["PUBLISH", "alice", "x"]), noauth);
        assert_eq!(
            exec(&mut s, h, &["CLIENT", "SETINFO", "LIB-NAME", "x"]),
            noauth
        );
        assert!(h.published.is_empty());
        // Unknown commands and wrong arity are reported first, as in Redis.
        assert!(exec(&mut s, h, &["NOPE"]).starts_with("-ERR unknown command"));
        assert!(exec(&mut s, h, &["PUBLISH", "x"]).starts_with("-ERR wrong number"));
        assert!(exec(&mut s, h, &["HELLO", "3"]).starts_with(
            "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> \
             AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
             version at the same time\r\n"
        ));
        assert_eq!(exec(&mut s, h, &["AUTH", "wrong"]), wrongpass);
        assert_eq!(exec(&mut s, h, &["AUTH", "s3cre"]), wrongpass);
        assert_eq!(exec(&mut s, h, &["AUTH", "s3cret!"]), wrongpass);
        assert_eq!(exec(&mut s, h, &["AUTH", "admin", "s3cret"]), wrongpass);
        assert_eq!(
            exec(&mut s, h, &["AUTH", "a", "b", "c"]),
            "-ERR syntax error\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["HELLO", "3", "AUTH", "default", "nope"]),
            wrongpass
        );
        assert_eq!(s.proto, 2, "a failed HELLO AUTH leaves the protocol alone");
        assert!(!s.authenticated);

        assert_eq!(exec(&mut s, h, &["AUTH", "s3cret"]), "+OK\r\n");
        assert_eq!(exec(&mut s, h, &["PING"]), "+PONG\r\n");
        // A later failed AUTH does not log the connection out (Redis).
        assert_eq!(exec(&mut s, h, &["AUTH", "wrong"]), wrongpass);
        assert_eq!(exec(&mut s, h, &["PUBLISH", "alice", "x"]), ":2\r\n");

        // RESET logs out when a password is set.
        assert_eq!(exec(&mut s, h, &["RESET"]), "+RESET\r\n");
        assert_eq!(exec(&mut s, h, &["PING"]), noauth);
        assert_eq!(exec(&mut s, h, &["AUTH", "default", "s3cret"]), "+OK\r\n");
        assert_eq!(exec(&mut s, h, &["PING"]), "+PONG\r\n");

        // HELLO with AUTH logs in and switches at once.
        let mut s = Session::new(8, true);
        let reply = exec(
            &mut s,
            h,
            &["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "n"],
        );
        assert!(reply.starts_with("%7\r\n"), "{reply}");
        assert!(s.authenticated);
        assert_eq!(s.name.as_deref(), Some(&b"n"[..]));

        // QUIT works unauthenticated.
        let mut s = Session::new(9, true);
        assert_eq!(
            exec_after(&mut s, h, &["QUIT"]),
            ("+OK\r\n".into(), After::Close)
        );
    }

    #[test]
    fn auth_without_a_password_configured() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        assert_eq!(
            exec(&mut s, h, &["AUTH", "x"]),
            "-ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?\r\n"
        );
        assert_eq!(exec(&mut s, h, &["AUTH", "default", "x"]), "+OK\r\n");
        assert_eq!(exec(&mut s, h, &["RESET"]), "+RESET\r\n");
        assert_eq!(exec(&mut s, h, &["PING"]), "+PONG\r\n");
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab\0", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn reset_restores_a_fresh_connection() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        exec(&mut s, h, &["HELLO", "3", "SETNAME", "x"]);
        assert_eq!(exec(&mut s, h, &["RESET"]), "+RESET\r\n");
        assert_eq!((s.proto, s.name.clone()), (2, None));
        assert_eq!(
            exec(&mut s, h, &["RESET", "x"]),
            "-ERR wrong number of arguments for 'reset' command\r\n"
        );
    }

    #[test]
    fn ping_echo_select() {
        let h = &mut hub();
        let mut s = Session::new(42, false);
        assert_eq!(exec(&mut s, h, &["ping", "hello"]), "$5\r\nhello\r\n");
        assert_eq!(
            exec(&mut s, h, &["PING", "a", "b"]),
            "-ERR wrong number of arguments for 'ping' command\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["ECHO"]),
            "-ERR wrong number of arguments for 'echo' command\r\n"
        );
        assert_eq!(exec(&mut s, h, &["SELECT", "0"]), "+OK\r\n");
        assert_eq!(
            exec(&mut s, h, &["SELECT", "1"]),
            "-ERR DB index is out of range\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["SELECT", "x"]),
            "-ERR value is not an integer or out of range\r\n"
        );
    }

    #[test]
    fn client_subcommands() {
        let h = &mut hub();
        let mut s = Session::new(42, false);
        assert_eq!(exec(&mut s, h, &["CLIENT", "ID"]), ":42\r\n");
        assert_eq!(exec(&mut s, h, &["CLIENT", "GETNAME"]), "$-1\r\n");
        assert_eq!(
            exec(&mut s, h, &["CLIENT", "SETNAME", "a\nb"]),
            format!("-{INVALID_CLIENT_NAME}\r\n")
        );
        assert_eq!(exec(&mut s, h, &["CLIENT", "SETNAME", "web"]), "+OK\r\n");
        assert_eq!(exec(&mut s, h, &["CLIENT", "GETNAME"]), "$3\r\nweb\r\n");
        assert_eq!(exec(&mut s, h, &["CLIENT", "SETNAME", ""]), "+OK\r\n");
        assert_eq!(exec(&mut s, h, &["CLIENT", "GETNAME"]), "$-1\r\n");
        assert_eq!(
            exec(&mut s, h, &["CLIENT", "SETINFO", "lib-name", "my lib"]),
            "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["CLIENT", "SETINFO", "color", "red"]),
            "-ERR Unrecognized option 'color'\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["CLIENT", "SETNAME"]),
            "-ERR wrong number of arguments for 'client|setname' command\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["CLIENT"]),
            "-ERR wrong number of arguments for 'client' command\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["CLIENT", "MAINT_NOTIFICATIONS", "ON"]),
            "-ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["client", "tracking", "on"]),
            "-ERR unknown subcommand 'tracking'. Try CLIENT HELP.\r\n"
        );
        assert!(exec(&mut s, h, &["CLIENT", "HELP"]).starts_with("*"));
        exec(&mut s, h, &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]);
        exec(&mut s, h, &["HELLO", "3"]);
        assert_eq!(exec(&mut s, h, &["CLIENT", "GETNAME"]), "_\r\n");
        let info = exec(&mut s, h, &["CLIENT", "INFO"]);
        assert!(
            info.starts_with('=') && info.contains("txt:id=42 "),
            "{info}"
        );
        assert!(
            info.contains(" resp=3 lib-name=redis-py lib-ver=\n"),
            "{info}"
        );
    }
}
