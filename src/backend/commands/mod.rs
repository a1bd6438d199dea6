//! The backend commands: what each Redis command a client library sends means
//! to cometbox. Reply shapes and error texts are Redis' own, since client
//! libraries match on them. No sockets here: one decoded command in, its reply
//! bytes out; the gateway is reached through [`Hub`].
//!
//! This module holds the command table, lookup (arity, unknown commands and
//! subcommands, NOAUTH) and the dispatch; each family of commands lives in
//! its own file.

mod connection;
mod glob;
mod introspect;
mod pubsub;
#[cfg(test)]
mod testing;

pub use glob::Glob;
pub use introspect::REDIS_VERSION;

use super::resp;
use crate::store::Ticket;

/// Longest command name or argument text echoed in an error, as Redis.
const ECHO_MAX: usize = 128;

/// The gateway as the commands see it. The reactor implements it over the
/// mailbox store; tests use a fake.
pub trait Hub {
    /// Stores and delivers a message: the receivers it was handed to, now
    /// or once the store has answered.
    fn publish(&mut self, mailbox: &[u8], payload: Vec<u8>) -> Result<Publish, HubError>;
    fn numsub(&mut self, mailbox: &[u8]) -> u64;
    /// Names of mailboxes with subscribers. PUBSUB CHANNELS filters them by
    /// its pattern itself, so the hub never runs a glob under a lock.
    fn channels(&mut self) -> Vec<Vec<u8>>;
    /// True if the mailbox existed.
    fn delete(&mut self, mailbox: &[u8]) -> bool;
    /// Appends "# Section\r\nkey:value\r\n…" sections of gateway stats.
    /// `section` is lowercase (`all` arrives as `everything`); None means
    /// the default set (`INFO`, `INFO default`). Blank lines are
    /// optional: INFO puts exactly one before each `#` header.
    fn info(&mut self, section: Option<&str>, out: &mut String);
    /// `mailbox.backend-password`.
    fn password(&self) -> Option<&str>;
    /// Seconds since the gateway started, for INFO's `uptime_in_seconds`.
    fn uptime_secs(&self) -> Option<u64> {
        None
    }
}

/// PUBLISH's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The receiver count, to reply with now.
    Now(u64),
    /// The store answers later (the disk store's fsync, a remote store):
    /// the reply holds its place until the ticket's completion arrives.
    Later(Ticket),
}

/// Why a publish was refused; the text is the message after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    BadName(String),
    TooLarge(String),
    Full(String),
}

/// One backend connection's protocol state.
#[derive(Debug, Clone)]
pub struct Session {
    /// RESP version, 2 or 3: every connection starts in 2; HELLO switches.
    pub proto: u8,
    /// CLIENT SETNAME / HELLO SETNAME.
    pub name: Option<Vec<u8>>,
    pub id: u64,
    /// False until AUTH succeeds when a password is set.
    pub authenticated: bool,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
}

impl Session {
    pub fn new(id: u64, needs_auth: bool) -> Self {
        Session {
            proto: 2,
            name: None,
            id,
            authenticated: !needs_auth,
            lib_name: None,
            lib_ver: None,
        }
    }
}

/// What the connection does after a command's reply is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Close once the reply is flushed (QUIT).
    Close,
    /// No reply yet: the connection keeps a slot for it, and the replies
    /// to later commands queue behind it, until `Ticket` completes.
    Wait(Ticket),
}

/// The commands we run. Containers (CLIENT, COMMAND, PUBSUB) resolve to one
/// variant per subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Auth,
    Hello,
    Quit,
    Reset,
    Ping,
    Echo,
    Select,
    Publish,
    Del,
    Info,
    Subscribe,
    Unsubscribe,
    ClientId,
    ClientGetName,
    ClientSetName,
    ClientSetInfo,
    ClientInfo,
    ClientHelp,
    Command,
    CommandCount,
    CommandDocs,
    CommandInfo,
    CommandList,
    CommandHelp,
    PubsubChannels,
    PubsubNumsub,
    PubsubNumpat,
    PubsubHelp,
}

enum Entry {
    Run(Cmd),
    /// A command with subcommands; `base` runs when there is no subcommand.
    Container {
        base: Option<Cmd>,
        subs: &'static [Spec],
    },
}

/// Redis' command table entry. `arity` counts the name: positive is exact,
/// negative a minimum. `no_auth` commands run before AUTH.
struct Spec {
    name: &'static str,
    arity: i32,
    no_auth: bool,
    entry: Entry,
}

const fn run(name: &'static str, arity: i32, cmd: Cmd) -> Spec {
    Spec {
        name,
        arity,
        no_auth: false,
        entry: Entry::Run(cmd),
    }
}

const fn no_auth(name: &'static str, arity: i32, cmd: Cmd) -> Spec {
    Spec {
        name,
        arity,
        no_auth: true,
        entry: Entry::Run(cmd),
    }
}

const fn container(
    name: &'static str,
    arity: i32,
    base: Option<Cmd>,
    subs: &'static [Spec],
) -> Spec {
    Spec {
        name,
        arity,
        no_auth: false,
        entry: Entry::Container { base, subs },
    }
}

const COMMANDS: &[Spec] = &[
    run("publish", 3, Cmd::Publish),
    run("ping", -1, Cmd::Ping),
    no_auth("hello", -1, Cmd::Hello),
    no_auth("auth", -2, Cmd::Auth),
    no_auth("quit", -1, Cmd::Quit),
    no_auth("reset", 1, Cmd::Reset),
    run("echo", 2, Cmd::Echo),
    run("select", 2, Cmd::Select),
    run("del", -2, Cmd::Del),
    run("info", -1, Cmd::Info),
    run("subscribe", -2, Cmd::Subscribe),
    run("psubscribe", -2, Cmd::Subscribe),
    run("ssubscribe", -2, Cmd::Subscribe),
    run("unsubscribe", -1, Cmd::Unsubscribe),
    run("punsubscribe", -1, Cmd::Unsubscribe),
    run("sunsubscribe", -1, Cmd::Unsubscribe),
    container(
        "client",
        -2,
        None,
        &[
            run("id", 2, Cmd::ClientId),
            run("getname", 2, Cmd::ClientGetName),
            run("setname", 3, Cmd::ClientSetName),
            run("setinfo", 4, Cmd::ClientSetInfo),
            run("info", 2, Cmd::ClientInfo),
            run("help", 2, Cmd::ClientHelp),
        ],
    ),
    container(
        "command",
        -1,
        Some(Cmd::Command),
        &[
            run("count", 2, Cmd::CommandCount),
            run("docs", -2, Cmd::CommandDocs),
            run("info", -2, Cmd::CommandInfo),
            run("list", -2, Cmd::CommandList),
            run("help", 2, Cmd::CommandHelp),
        ],
    ),
    container(
        "pubsub",
        -2,
        None,
        &[
            run("channels", -2, Cmd::PubsubChannels),
            run("numsub", -2, Cmd::PubsubNumsub),
            run("numpat", 2, Cmd::PubsubNumpat),
            run("help", 2, Cmd::PubsubHelp),
        ],
    ),
];

/// Looks a command up and checks its arity, in Redis' order: an unknown
/// command or wrong arity is reported even before NOAUTH.
fn lookup(args: &[&[u8]], out: &mut Vec<u8>) -> Option<(Cmd, &'static Spec)> {
    let Some(spec) = COMMANDS
        .iter()
        .find(|s| args[0].eq_ignore_ascii_case(s.name.as_bytes()))
    else {
        unknown_command(args, out);
        return None;
    };
    let arity_ok = |arity: i32| {
        let argc = args.len() as i64;
        if arity >= 0 {
            argc == i64::from(arity)
        } else {
            argc >= -i64::from(arity)
        }
    };
    match spec.entry {
        Entry::Run(cmd) => {
            if arity_ok(spec.arity) {
                return Some((cmd, spec));
            }
            wrong_arity(spec.name, out);
        }
        Entry::Container { base, subs } => {
            if args.len() == 1 {
                match base {
                    Some(cmd) if arity_ok(spec.arity) => return Some((cmd, spec)),
                    _ => wrong_arity(spec.name, out),
                }
                return None;
            }
            let Some(sub) = subs
                .iter()
                .find(|s| args[1].eq_ignore_ascii_case(s.name.as_bytes()))
            else {
                let mut msg = b"ERR unknown subcommand '".to_vec();
                msg.extend_from_slice(c_text(args[1], ECHO_MAX));
                msg.extend_from_slice(b"'. Try ");
                msg.extend_from_slice(spec.name.to_ascii_uppercase().as_bytes());
                msg.extend_from_slice(b" HELP.");
                resp::error_bytes(out, &msg);
                return None;
            };
            let Entry::Run(cmd) = sub.entry else {
                unreachable!("subcommands are Entry::Run by construction of COMMANDS")
            };
            if arity_ok(sub.arity) {
                return Some((cmd, spec));
            }
            wrong_arity(&format!("{}|{}", spec.name, sub.name), out);
        }
    }
    None
}

fn wrong_arity(full_name: &str, out: &mut Vec<u8>) {
    resp::error(
        out,
        &format!("ERR wrong number of arguments for '{full_name}' command"),
    );
}

/// Redis' exact text: the name and each argument quoted, each argument
/// followed by a space, at most 128 bytes of name and of arguments in all,
/// each cut at a NUL like C's `%.*s`; CR and LF become spaces.
fn unknown_command(args: &[&[u8]], out: &mut Vec<u8>) {
    let mut shown = Vec::new();
    for arg in &args[1..] {
        if shown.len() >= ECHO_MAX {
            break;
        }
        let room = ECHO_MAX - shown.len();
        shown.push(b'\'');
        shown.extend_from_slice(c_text(arg, room));
        shown.extend_from_slice(b"' ");
    }
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_text(args[0], ECHO_MAX));
    msg.extend_from_slice(b"', with args beginning with: ");
    msg.extend_from_slice(&shown);
    resp::error_bytes(out, &msg);
}

/// What C's `%.*s` prints of `bytes`: up to the first NUL, at most `max`.
fn c_text(bytes: &[u8], max: usize) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(bytes.len())
        .min(max);
    &bytes[..end]
}

/// Runs one command and appends its reply to `out`.
pub fn execute<H: Hub>(
    session: &mut Session,
    args: &[&[u8]],
    hub: &mut H,
    out: &mut Vec<u8>,
) -> After {
    if args.is_empty() {
        return After::Continue; // the decoder never yields this; nothing to answer
    }
    let Some((cmd, spec)) = lookup(args, out) else {
        return After::Continue;
    };
    if !spec.no_auth && !session.authenticated && hub.password().is_some() {
        resp::error(out, "NOAUTH Authentication required.");
        return After::Continue;
    }
    // Arity is checked, so the arguments indexed below are there.
    let proto = session.proto;
    match cmd {
        Cmd::Publish => return pubsub::publish(args[1], args[2], hub, out),
        Cmd::Ping => connection::ping(args, spec.name, out),
        Cmd::Echo => resp::bulk(out, args[1]),
        Cmd::Quit => {
            resp::simple(out, "OK");
            return After::Close;
        }
        Cmd::Reset => connection::reset(session, hub, out),
        Cmd::Hello => connection::hello(session, args, hub, out),
        Cmd::Auth => connection::auth(session, args, hub, out),
        Cmd::Select => connection::select(args[1], out),
        Cmd::Del => pubsub::del(&args[1..], hub, out),
        Cmd::Info => introspect::info(session, &args[1..], hub, out),
        Cmd::Subscribe => pubsub::subscribe(spec.name, out),
        Cmd::Unsubscribe => pubsub::unsubscribe(proto, spec.name, &args[1..], out),
        Cmd::ClientId => count(out, session.id),
        Cmd::ClientGetName => connection::client_getname(session, out),
        Cmd::ClientSetName => connection::client_setname(session, args[2], out),
        Cmd::ClientSetInfo => connection::client_setinfo(session, args[2], args[3], out),
        Cmd::ClientInfo => connection::client_info(session, out),
        Cmd::ClientHelp => help(out, "CLIENT", connection::CLIENT_HELP),
        Cmd::Command => resp::array_len(out, 0),
        Cmd::CommandCount => count(out, COMMANDS.len() as u64),
        Cmd::CommandDocs => resp::map_len(out, proto, 0),
        Cmd::CommandInfo => introspect::command_info(proto, &args[2..], out),
        Cmd::CommandList => introspect::command_list(out),
        Cmd::CommandHelp => help(out, "COMMAND", introspect::COMMAND_HELP),
        Cmd::PubsubChannels => pubsub::channels(args.get(2).copied(), hub, out),
        Cmd::PubsubNumsub => pubsub::numsub(&args[2..], hub, out),
        Cmd::PubsubNumpat => resp::integer(out, 0),
        Cmd::PubsubHelp => help(out, "PUBSUB", pubsub::PUBSUB_HELP),
    }
    After::Continue
}

/// Writes a count (receivers, deletions, an id) as `:n`.
fn count(out: &mut Vec<u8>, n: u64) {
    resp::integer(out, i64::try_from(n).unwrap_or(i64::MAX));
}

/// Redis' HELP reply shape: an array of simple strings.
fn help(out: &mut Vec<u8>, command: &str, lines: &[&str]) {
    resp::array_len(out, lines.len() + 3);
    resp::simple(
        out,
        &format!("{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
    );
    for line in lines {
        resp::simple(out, line);
    }
    resp::simple(out, "HELP");
    resp::simple(out, "    Print this help.");
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn redis_py_8_connect() {
        let h = &mut hub();
        let (s, replies) = connect(
            h,
            3,
            &[
                &["HELLO", "3"],
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
                &["CLIENT", "SETINFO", "LIB-VER", "8.0.0"],
                &["PUBLISH", "alice", "{}"],
            ],
        );
        assert_no_errors(&replies);
        assert!(
            replies[0].contains("$5\r\nproto\r\n:3\r\n"),
            "proto is an integer 3"
        );
        assert_eq!(replies[1..], ["+OK\r\n", "+OK\r\n", ":2\r\n"]);
        assert_eq!(s.lib_name.as_deref(), Some(&b"redis-py"[..]));
        assert_eq!(s.lib_ver.as_deref(), Some(&b"8.0.0"[..]));
    }

    #[test]
    fn redis_py_8_connect_with_password() {
        let h = &mut locked_hub();
        let (_, replies) = connect(
            h,
            3,
            &[
                &["HELLO", "3", "AUTH", "default", "s3cret"],
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
                &["CLIENT", "SETINFO", "LIB-VER", "8.0.0"],
                &["SELECT", "0"],
            ],
        );
        assert_no_errors(&replies);
        assert!(replies[0].starts_with("%7\r\n"));
    }

    #[test]
    fn node_redis_6_connect() {
        let h = &mut hub();
        let (s, replies) = connect(
            h,
            3,
            &[
                &["HELLO", "3", "SETNAME", "app"],
                &["CLIENT", "SETINFO", "LIB-VER", "6.0.0"],
                &["CLIENT", "SETINFO", "LIB-NAME", "node-redis"],
                &["PUBLISH", "bob", "x"],
            ],
        );
        assert_no_errors(&replies);
        assert!(replies[0].starts_with("%7\r\n"));
        assert_eq!(replies[3], ":1\r\n");
        assert_eq!(s.name.as_deref(), Some(&b"app"[..]));
    }

    #[test]
    fn node_redis_5_and_redis_py_7_connect() {
        let h = &mut hub();
        let (s, replies) = connect(
            h,
            3,
            &[
                &["CLIENT", "SETINFO", "LIB-VER", "5.0.0"],
                &["CLIENT", "SETINFO", "LIB-NAME", "node-redis"],
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
                &["CLIENT", "SETINFO", "LIB-VER", "7.0.1"],
            ],
        );
        assert_eq!(replies, ["+OK\r\n"; 4]);
        assert_eq!(s.proto, 2);
    }

    #[test]
    fn ioredis_connect_and_ready_check() {
        for proto in ["2", "3"] {
            let h = &mut locked_hub();
            let mut s = Session::new(3, true);
            let mut commands: Vec<&[&str]> = Vec::new();
            if proto == "3" {
                commands.push(&["HELLO", "3", "AUTH", "default", "s3cret"]); // ioredis 6
            } else {
                commands.push(&["AUTH", "s3cret"]); // ioredis 5
            }
            commands.extend_from_slice(&[
                &["CLIENT", "SETNAME", "ioredis-conn"],
                &["CLIENT", "SETINFO", "LIB-VER", "5.8.2"],
                &["CLIENT", "SETINFO", "LIB-NAME", "ioredis"],
                &["info"],
            ]);
            let replies = pipeline(&mut s, h, &wire(&commands));
            assert_no_errors(&replies);
            let info = &replies[4];
            assert!(info.contains("\r\nloading:0\r\n"), "{info}");
            assert!(info.contains("redis_version:7.4.0\r\n"), "{info}");
            if proto == "3" {
                assert!(
                    info.starts_with('=') && info.contains("\r\ntxt:# Server\r\n"),
                    "{info}"
                );
            } else {
                assert!(
                    info.starts_with('$') && info.contains("\r\n# Server\r\n"),
                    "{info}"
                );
            }
        }
    }

    #[test]
    fn predis_3_connect() {
        for (hub, hello) in [
            (hub(), &["HELLO", "2", "SETNAME", "predis"][..]),
            (
                locked_hub(),
                &[
                    "HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "predis",
                ][..],
            ),
        ] {
            let mut hub = hub;
            let mut s = Session::new(11, hub.password.is_some());
            let replies = pipeline(
                &mut s,
                &mut hub,
                &wire(&[
                    hello,
                    &["CLIENT", "SETINFO", "LIB-NAME", "predis"],
                    &["CLIENT", "SETINFO", "LIB-VER", "3.0.0"],
                    &["SELECT", "0"],
                ]),
            );
            assert_no_errors(&replies);
            // predis searches the flat RESP2 array for "id".
            assert!(
                replies[0].starts_with("*14\r\n") && replies[0].contains("$2\r\nid\r\n:11\r\n")
            );
            assert_eq!(replies[3], "+OK\r\n");
            assert_eq!(s.name.as_deref(), Some(&b"predis"[..]));
        }
    }

    #[test]
    fn redis_rb_6_and_tools_connect() {
        let h = &mut hub();
        let (_, replies) = connect(
            h,
            3,
            &[
                &["HELLO", "3"],
                &[
                    "CLIENT",
                    "SETINFO",
                    "LIB-NAME",
                    "redis-client(redis-rb_v6.0.0)",
                ],
                &["CLIENT", "SETINFO", "LIB-VER", "0.30.0"],
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-rb"],
                &["CLIENT", "SETINFO", "LIB-VER", "6.0.0"],
                &["PING"],
                &["COMMAND", "DOCS"],
                &["ECHO", "65f0c1"],
                &["CLIENT", "ID"],
            ],
        );
        assert_no_errors(&replies);
        assert_eq!(
            replies[5..],
            ["+PONG\r\n", "%0\r\n", "$6\r\n65f0c1\r\n", ":3\r\n"]
        );
    }

    #[test]
    fn phpredis_and_inline_telnet() {
        let h = &mut locked_hub();
        let mut s = Session::new(3, true);
        let replies = pipeline(
            &mut s,
            h,
            b"AUTH s3cret\r\nECHO 'uniq id'\r\nPUBLISH alice \"hi there\"\n",
        );
        assert_eq!(replies, ["+OK\r\n", "$7\r\nuniq id\r\n", ":2\r\n"]);
        assert_eq!(h.published, [(b"alice".to_vec(), b"hi there".to_vec())]);
    }

    #[test]
    fn unknown_command_text() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        assert_eq!(
            exec(&mut s, h, &["FOO", "a", "b c"]),
            "-ERR unknown command 'FOO', with args beginning with: 'a' 'b c' \r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["get"]),
            "-ERR unknown command 'get', with args beginning with: \r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["x\r\ny", "a\nb"]),
            "-ERR unknown command 'x  y', with args beginning with: 'a b' \r\n"
        );
        // Name cut at 128 bytes; arguments cut so their text stops near 128.
        let long_name = "n".repeat(200);
        let reply = exec(&mut s, h, &[&long_name]);
        assert_eq!(
            reply,
            format!(
                "-ERR unknown command '{}', with args beginning with: \r\n",
                "n".repeat(128)
            )
        );
        let a = "a".repeat(100);
        let b = "b".repeat(100);
        let reply = exec(&mut s, h, &["SET", &a, &b, "c"]);
        // 'a…a' (100) + "' " = 103 bytes, then 25 bytes of b, then stop.
        assert_eq!(
            reply,
            format!(
                "-ERR unknown command 'SET', with args beginning with: '{a}' '{}' \r\n",
                "b".repeat(25)
            )
        );
        // A NUL ends a name or argument, as C's %s does.
        assert_eq!(
            exec(&mut s, h, &["X\0Y", "a\0b"]),
            "-ERR unknown command 'X', with args beginning with: 'a' \r\n"
        );
    }
}
