//! The backend commands: what each Redis command a client library sends means
//! to cometbox. Reply shapes and error texts are Redis' own, since client
//! libraries match on them. No sockets here: one decoded command in, its reply
//! bytes out; the gateway is reached through [`Hub`].

use std::fmt::Write as _;

use super::resp;

/// The Redis version we claim in HELLO and INFO. At least 7.2 so clients that
/// gate features by server version (CLIENT SETINFO, HELLO) treat us as modern.
pub const REDIS_VERSION: &str = "7.4.0";

/// HELLO's `server` field. No client we know checks it, but tooling that
/// does expects "redis"; cometbox names itself in INFO (`cometbox_version`).
const SERVER_NAME: &str = "redis";

/// Longest command name or argument text echoed in an error, as Redis.
const ECHO_MAX: usize = 128;

/// The gateway as the commands see it. The reactor implements it over the
/// mailbox store; tests use a fake.
pub trait Hub {
    /// Stores and delivers a message; Ok(receivers it was handed to now).
    fn publish(&mut self, mailbox: &[u8], payload: Vec<u8>) -> Result<u64, HubError>;
    fn numsub(&mut self, mailbox: &[u8]) -> u64;
    /// Names of mailboxes with subscribers, filtered by [`glob_match`].
    fn channels(&mut self, pattern: Option<&[u8]>) -> Vec<Vec<u8>>;
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
fn lookup(args: &[Vec<u8>], out: &mut Vec<u8>) -> Option<(Cmd, &'static Spec)> {
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
                msg.extend_from_slice(c_text(&args[1], ECHO_MAX));
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
fn unknown_command(args: &[Vec<u8>], out: &mut Vec<u8>) {
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
    msg.extend_from_slice(c_text(&args[0], ECHO_MAX));
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
    args: Vec<Vec<u8>>,
    hub: &mut H,
    out: &mut Vec<u8>,
) -> After {
    if args.is_empty() {
        return After::Continue; // the decoder never yields this; nothing to answer
    }
    let Some((cmd, spec)) = lookup(&args, out) else {
        return After::Continue;
    };
    if !spec.no_auth && !session.authenticated && hub.password().is_some() {
        resp::error(out, "NOAUTH Authentication required.");
        return After::Continue;
    }
    let proto = session.proto;
    match cmd {
        Cmd::Publish => {
            let mut args = args;
            let payload = args.pop().unwrap_or_default(); // arity 3: always there
            match hub.publish(&args[1], payload) {
                Ok(receivers) => count(out, receivers),
                Err(HubError::BadName(text) | HubError::TooLarge(text) | HubError::Full(text)) => {
                    resp::error(out, &format!("ERR {text}"))
                }
            }
        }
        Cmd::Ping => match &args[1..] {
            [] => resp::simple(out, "PONG"),
            [msg] => resp::bulk(out, msg),
            _ => wrong_arity(spec.name, out), // arity -1, checked here as Redis does
        },
        Cmd::Echo => resp::bulk(out, &args[1]),
        Cmd::Quit => {
            resp::simple(out, "OK");
            return After::Close;
        }
        Cmd::Reset => {
            session.proto = 2;
            session.name = None;
            session.authenticated = hub.password().is_none();
            resp::simple(out, "RESET");
        }
        Cmd::Hello => hello(session, &args, hub, out),
        Cmd::Auth => auth(session, &args, hub, out),
        Cmd::Select => match resp::parse_integer(&args[1]).and_then(|n| i32::try_from(n).ok()) {
            None => resp::error(out, "ERR value is not an integer or out of range"),
            Some(0) => resp::simple(out, "OK"),
            Some(_) => resp::error(out, "ERR DB index is out of range"),
        },
        Cmd::Del => {
            let deleted = args[1..].iter().filter(|name| hub.delete(name)).count();
            count(out, deleted as u64);
        }
        Cmd::Info => info(session, &args, hub, out),
        Cmd::Subscribe => resp::error(
            out,
            &format!(
                "ERR {} is not supported by cometbox: subscribe over HTTP at /mailbox/<name>",
                spec.name.to_ascii_uppercase()
            ),
        ),
        Cmd::Unsubscribe => {
            // Nothing is ever subscribed: Redis then answers one
            // `[kind, channel, 0]` per channel, or `[kind, null, 0]`.
            if args.len() == 1 {
                resp::push_len(out, proto, 3);
                resp::bulk(out, spec.name.as_bytes());
                resp::null(out, proto);
                resp::integer(out, 0);
            }
            for channel in &args[1..] {
                resp::push_len(out, proto, 3);
                resp::bulk(out, spec.name.as_bytes());
                resp::bulk(out, channel);
                resp::integer(out, 0);
            }
        }
        Cmd::ClientId => count(out, session.id),
        Cmd::ClientGetName => match &session.name {
            Some(name) => resp::bulk(out, name),
            None => resp::null(out, proto),
        },
        Cmd::ClientSetName => {
            if !valid_client_attr(&args[2]) {
                resp::error(out, INVALID_CLIENT_NAME);
            } else {
                session.name = non_empty(&args[2]);
                resp::simple(out, "OK");
            }
        }
        Cmd::ClientSetInfo => {
            let attr = &args[2];
            let slot = if attr.eq_ignore_ascii_case(b"lib-name") {
                &mut session.lib_name
            } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                &mut session.lib_ver
            } else {
                let mut msg = b"ERR Unrecognized option '".to_vec();
                msg.extend_from_slice(c_text(attr, usize::MAX));
                msg.push(b'\'');
                resp::error_bytes(out, &msg);
                return After::Continue;
            };
            if !valid_client_attr(&args[3]) {
                let mut msg = b"ERR ".to_vec();
                msg.extend_from_slice(c_text(attr, usize::MAX));
                msg.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
                resp::error_bytes(out, &msg);
            } else {
                *slot = non_empty(&args[3]);
                resp::simple(out, "OK");
            }
        }
        Cmd::ClientInfo => {
            let text = client_info(session);
            resp::verbatim(out, proto, "txt", text.as_bytes());
        }
        Cmd::ClientHelp => help(out, "CLIENT", CLIENT_HELP),
        Cmd::Command => resp::array_len(out, 0),
        Cmd::CommandCount => count(out, COMMANDS.len() as u64),
        Cmd::CommandDocs => resp::map_len(out, proto, 0),
        Cmd::CommandInfo => {
            // Redis answers null for a command it does not describe.
            resp::array_len(out, args.len() - 2);
            for _ in &args[2..] {
                resp::null(out, proto);
            }
        }
        Cmd::CommandList => {
            resp::array_len(out, COMMANDS.len());
            for spec in COMMANDS {
                resp::bulk(out, spec.name.as_bytes());
            }
        }
        Cmd::CommandHelp => help(out, "COMMAND", COMMAND_HELP),
        Cmd::PubsubChannels => {
            let names = hub.channels(args.get(2).map(Vec::as_slice));
            resp::array_len(out, names.len());
            for name in &names {
                resp::bulk(out, name);
            }
        }
        Cmd::PubsubNumsub => {
            // An array of name, count pairs (not a map, in RESP3 too).
            resp::array_len(out, (args.len() - 2) * 2);
            for name in &args[2..] {
                resp::bulk(out, name);
                count(out, hub.numsub(name));
            }
        }
        Cmd::PubsubNumpat => resp::integer(out, 0),
        Cmd::PubsubHelp => help(out, "PUBSUB", PUBSUB_HELP),
    }
    After::Continue
}

/// Writes a count (receivers, deletions, an id) as `:n`.
fn count(out: &mut Vec<u8>, n: u64) {
    resp::integer(out, i64::try_from(n).unwrap_or(i64::MAX));
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

const CLIENT_HELP: &[&str] = &[
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

const COMMAND_HELP: &[&str] = &[
    "(no subcommand)",
    "    Return an empty list (cometbox keeps no command details).",
    "COUNT",
    "    Return the number of commands cometbox answers.",
    "DOCS [<command-name> ...]",
    "    Return an empty map.",
    "INFO [<command-name> ...]",
    "    Return a null for each command.",
    "LIST",
    "    Return the names of the commands cometbox answers.",
];

const PUBSUB_HELP: &[&str] = &[
    "CHANNELS [<pattern>]",
    "    Return the mailboxes that have subscribers, optionally matching <pattern>.",
    "NUMPAT",
    "    Return 0: there are no pattern subscriptions.",
    "NUMSUB [<mailbox> ...]",
    "    Return the number of subscribers of each mailbox.",
];

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

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, step for step as
/// Redis' `helloCommand`: parse everything, then authenticate, then apply.
fn hello<H: Hub>(session: &mut Session, args: &[Vec<u8>], hub: &H, out: &mut Vec<u8>) {
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
            if !valid_client_attr(&args[i + 1]) {
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
        if !credentials_ok(hub, Some(user.as_slice()), password, session.id) {
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
fn auth<H: Hub>(session: &mut Session, args: &[Vec<u8>], hub: &H, out: &mut Vec<u8>) {
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
        [_, user, password] => (Some(user.as_slice()), password),
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
fn client_info(session: &Session) -> String {
    let text = |v: &Option<Vec<u8>>| {
        String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned()
    };
    format!(
        "id={} addr= laddr= name={} db=0 sub=0 psub=0 ssub=0 multi=-1 flags=U cmd=client|info \
         user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
        session.id,
        text(&session.name),
        session.proto,
        text(&session.lib_name),
        text(&session.lib_ver),
    )
}

/// `INFO [section …]`: our `# Server` and `# Persistence` sections, then the
/// gateway's. `loading:0` is always there: ioredis waits for it on connect.
fn info<H: Hub>(session: &Session, args: &[Vec<u8>], hub: &mut H, out: &mut Vec<u8>) {
    let mut sections: Vec<String> = args[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let mut seen = Vec::with_capacity(sections.len());
    sections.retain(|s| {
        let first = !seen.contains(s);
        seen.push(s.clone());
        first
    });
    let everything = sections
        .iter()
        .any(|s| matches!(s.as_str(), "all" | "everything"));
    let default = sections.is_empty() || sections.iter().any(|s| s == "default");
    let wants = |name: &str| everything || default || sections.iter().any(|s| s == name);

    let mut text = String::new();
    if wants("server") {
        text.push_str("# Server\r\n");
        let _ = write!(
            text,
            "redis_version:{REDIS_VERSION}\r\n\
             redis_mode:standalone\r\n\
             cometbox_version:{}\r\n\
             os:{} {}\r\n\
             arch_bits:{}\r\n\
             process_id:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
        );
        if let Some(uptime) = hub.uptime_secs() {
            let _ = write!(
                text,
                "uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
                uptime / 86_400
            );
        }
    }
    // Always, whatever was asked: clients that wait for `loading:0` must
    // never see its absence as "still loading".
    if !text.is_empty() {
        text.push_str("\r\n");
    }
    text.push_str("# Persistence\r\nloading:0\r\nasync_loading:0\r\n");

    let mut extra = String::new();
    if everything {
        hub.info(Some("everything"), &mut extra);
    } else if default && sections.len() <= 1 {
        hub.info(None, &mut extra);
    } else {
        for section in &sections {
            hub.info(
                (section != "default").then_some(section.as_str()),
                &mut extra,
            );
        }
    }
    // Normalise the hub's text: CRLF line ends and one blank line before
    // each section header, as Redis separates sections.
    for line in extra.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            text.push_str("\r\n");
        }
        text.push_str(line);
        text.push_str("\r\n");
    }
    resp::verbatim(out, session.proto, "txt", text.as_bytes());
}

/// Redis' glob (`stringmatchlen`), case-sensitive: `*`, `?`, `[abc]`, `[^a]`,
/// `[a-z]` (reversed ranges allowed), `\x` for a literal `x`, and Redis'
/// quirks with unterminated classes (checked against a port of the C code in
/// the tests). One difference: `*` matches an empty name here, Redis' does
/// not; mailbox names are never empty. Every token but `*` matches exactly one
/// byte, so remembering only the last `*` is enough: O(pattern × name) at
/// worst, never exponential like a naive recursion.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // After a `*`: where the pattern resumes, and the name position it last
    // tried from.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pattern.get(p) == Some(&b'*') {
            while pattern.get(p) == Some(&b'*') {
                p += 1;
            }
            if p == pattern.len() {
                return true;
            }
            star = Some((p, n));
            continue;
        }
        if n == name.len() {
            return pattern[p..].iter().all(|&c| c == b'*');
        }
        let matched = if p < pattern.len() {
            match_one(pattern, p, name[n])
        } else {
            None // pattern used up, name is not
        };
        if let Some(next) = matched {
            p = next;
            n += 1;
            continue;
        }
        // Mismatch: let the last `*` swallow one more byte.
        match star {
            Some((resume, from)) => {
                star = Some((resume, from + 1));
                p = resume;
                n = from + 1;
            }
            None => return false,
        }
    }
}

/// Matches the token at `pattern[p]` (not `*`) against one byte; the index
/// after the token if it matches.
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        b'[' => {
            let mut q = p + 1;
            let negate = pattern.get(q) == Some(&b'^');
            if negate {
                q += 1;
            }
            let mut matched = false;
            // An unterminated class runs to the end of the pattern, as in Redis.
            while q < pattern.len() {
                let c = pattern[q];
                if c == b'\\' && q + 1 < pattern.len() {
                    matched |= pattern[q + 1] == byte;
                    q += 2;
                } else if c == b']' {
                    q += 1;
                    break;
                } else if q + 2 < pattern.len() && pattern[q + 1] == b'-' {
                    let (lo, hi) = (c.min(pattern[q + 2]), c.max(pattern[q + 2]));
                    matched |= (lo..=hi).contains(&byte);
                    q += 3;
                } else {
                    matched |= c == byte;
                    q += 1;
                }
            }
            (matched != negate).then_some(q)
        }
        literal => (literal == byte).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::resp::{Decoded, Decoder, Limits};
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct FakeHub {
        /// Mailbox → subscribers.
        mailboxes: BTreeMap<Vec<u8>, u64>,
        published: Vec<(Vec<u8>, Vec<u8>)>,
        password: Option<String>,
        info_calls: Vec<Option<String>>,
    }

    impl Hub for FakeHub {
        fn publish(&mut self, mailbox: &[u8], payload: Vec<u8>) -> Result<u64, HubError> {
            if mailbox.is_empty() || mailbox.contains(&b' ') {
                return Err(HubError::BadName("invalid mailbox name".into()));
            }
            if payload.len() > 100 {
                return Err(HubError::TooLarge(
                    "message exceeds mailbox.max-message-size (100 bytes)".into(),
                ));
            }
            self.published.push((mailbox.to_vec(), payload));
            Ok(self.mailboxes.get(mailbox).copied().unwrap_or(0))
        }

        fn numsub(&mut self, mailbox: &[u8]) -> u64 {
            self.mailboxes.get(mailbox).copied().unwrap_or(0)
        }

        fn channels(&mut self, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
            self.mailboxes
                .iter()
                .filter(|(name, subs)| **subs > 0 && pattern.is_none_or(|p| glob_match(p, name)))
                .map(|(name, _)| name.clone())
                .collect()
        }

        fn delete(&mut self, mailbox: &[u8]) -> bool {
            self.mailboxes.remove(mailbox).is_some()
        }

        fn info(&mut self, section: Option<&str>, out: &mut String) {
            self.info_calls.push(section.map(str::to_string));
            if section.is_none_or(|s| s == "clients" || s == "everything") {
                out.push_str("# Clients\r\nconnected_clients:2\r\n\r\n");
            }
            if section.is_none_or(|s| s == "mailboxes" || s == "everything") {
                out.push_str("# Mailboxes\nmailboxes:3\n");
            }
        }

        fn password(&self) -> Option<&str> {
            self.password.as_deref()
        }

        fn uptime_secs(&self) -> Option<u64> {
            Some(90_000)
        }
    }

    fn hub() -> FakeHub {
        let mut hub = FakeHub::default();
        hub.mailboxes.insert(b"alice".to_vec(), 2);
        hub.mailboxes.insert(b"bob".to_vec(), 1);
        hub.mailboxes.insert(b"idle".to_vec(), 0);
        hub
    }

    fn locked_hub() -> FakeHub {
        FakeHub {
            password: Some("s3cret".into()),
            ..hub()
        }
    }

    /// Runs one command given as words; returns the reply as text and what
    /// the connection does next.
    fn exec_after(session: &mut Session, hub: &mut FakeHub, words: &[&str]) -> (String, After) {
        let args = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        let mut out = Vec::new();
        let after = execute(session, args, hub, &mut out);
        (
            String::from_utf8(out).expect("replies are UTF-8 in these tests"),
            after,
        )
    }

    fn exec(session: &mut Session, hub: &mut FakeHub, words: &[&str]) -> String {
        exec_after(session, hub, words).0
    }

    /// Runs a client's pipelined bytes through the decoder and the commands,
    /// one reply per command.
    fn pipeline(session: &mut Session, hub: &mut FakeHub, mut input: &[u8]) -> Vec<String> {
        let mut decoder = Decoder::new(Limits { max_bulk: 1024 });
        let mut replies = Vec::new();
        loop {
            match decoder.decode(input).expect("clients send valid RESP") {
                Decoded::Command { args, consumed } => {
                    let mut out = Vec::new();
                    execute(session, args, hub, &mut out);
                    replies.push(String::from_utf8(out).unwrap());
                    input = &input[consumed..];
                }
                Decoded::NeedMore { consumed } => {
                    assert_eq!(consumed, input.len(), "a whole pipeline was sent");
                    return replies;
                }
                Decoded::TooLarge { .. } => panic!("nothing large here"),
            }
        }
    }

    /// Encodes commands as a client library does.
    fn wire(commands: &[&[&str]]) -> Vec<u8> {
        let mut out = Vec::new();
        for words in commands {
            resp::array_len(&mut out, words.len());
            for w in *words {
                resp::bulk(&mut out, w.as_bytes());
            }
        }
        out
    }

    fn assert_no_errors(replies: &[String]) {
        for reply in replies {
            assert!(
                !reply.starts_with('-'),
                "error reply: {reply:?} in {replies:?}"
            );
        }
    }

    const HELLO3: &str = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.4.0\r\n$5\r\nproto\r\n:3\r\n\
        $2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

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
    fn redis_py_8_connect() {
        let h = &mut hub();
        let mut s = Session::new(3, false);
        let replies = pipeline(
            &mut s,
            h,
            &wire(&[
                &["HELLO", "3"],
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
                &["CLIENT", "SETINFO", "LIB-VER", "8.0.0"],
                &["PUBLISH", "alice", "{}"],
            ]),
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
        let mut s = Session::new(3, true);
        let replies = pipeline(
            &mut s,
            h,
            &wire(&[
                &["HELLO", "3", "AUTH", "default", "s3cret"],
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
                &["CLIENT", "SETINFO", "LIB-VER", "8.0.0"],
                &["SELECT", "0"],
            ]),
        );
        assert_no_errors(&replies);
        assert!(replies[0].starts_with("%7\r\n"));
    }

    #[test]
    fn node_redis_6_connect() {
        let h = &mut hub();
        let mut s = Session::new(3, false);
        let replies = pipeline(
            &mut s,
            h,
            &wire(&[
                &["HELLO", "3", "SETNAME", "app"],
                &["CLIENT", "SETINFO", "LIB-VER", "6.0.0"],
                &["CLIENT", "SETINFO", "LIB-NAME", "node-redis"],
                &["PUBLISH", "bob", "x"],
            ]),
        );
        assert_no_errors(&replies);
        assert!(replies[0].starts_with("%7\r\n"));
        assert_eq!(replies[3], ":1\r\n");
        assert_eq!(s.name.as_deref(), Some(&b"app"[..]));
    }

    #[test]
    fn node_redis_5_and_redis_py_7_connect() {
        let h = &mut hub();
        let mut s = Session::new(3, false);
        let replies = pipeline(
            &mut s,
            h,
            &wire(&[
                &["CLIENT", "SETINFO", "LIB-VER", "5.0.0"],
                &["CLIENT", "SETINFO", "LIB-NAME", "node-redis"],
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"],
                &["CLIENT", "SETINFO", "LIB-VER", "7.0.1"],
            ]),
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
        let mut s = Session::new(3, false);
        let replies = pipeline(
            &mut s,
            h,
            &wire(&[
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
            ]),
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
    fn publish_and_hub_errors() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        assert_eq!(exec(&mut s, h, &["publish", "alice", "m"]), ":2\r\n");
        assert_eq!(exec(&mut s, h, &["PUBLISH", "nobody", "m"]), ":0\r\n");
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "a b", "m"]),
            "-ERR invalid mailbox name\r\n"
        );
        let big = "x".repeat(101);
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "alice", &big]),
            "-ERR message exceeds mailbox.max-message-size (100 bytes)\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "alice"]),
            "-ERR wrong number of arguments for 'publish' command\r\n"
        );
        assert_eq!(h.published.len(), 2);
    }

    #[test]
    fn small_commands() {
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
        assert_eq!(exec(&mut s, h, &["COMMAND"]), "*0\r\n");
        assert_eq!(
            exec(&mut s, h, &["COMMAND", "DOCS", "publish"]),
            "*0\r\n",
            "RESP2 empty map"
        );
        assert_eq!(
            exec(&mut s, h, &["COMMAND", "COUNT"]),
            format!(":{}\r\n", COMMANDS.len())
        );
        assert_eq!(
            exec(&mut s, h, &["COMMAND", "INFO", "get", "set"]),
            "*2\r\n$-1\r\n$-1\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["COMMAND", "COUNT", "x"]),
            "-ERR wrong number of arguments for 'command|count' command\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["DEL", "alice", "nobody", "alice", "bob"]),
            ":2\r\n"
        );
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
        assert_eq!(exec(&mut s, h, &["COMMAND", "DOCS"]), "%0\r\n");
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
    fn pubsub_introspection() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        for proto in ["2", "3"] {
            exec(&mut s, h, &["HELLO", proto]);
            assert_eq!(
                exec(&mut s, h, &["PUBSUB", "NUMSUB", "alice", "nobody"]),
                "*4\r\n$5\r\nalice\r\n:2\r\n$6\r\nnobody\r\n:0\r\n",
                "an array, not a map, in RESP{proto}"
            );
            assert_eq!(exec(&mut s, h, &["PUBSUB", "NUMSUB"]), "*0\r\n");
            assert_eq!(exec(&mut s, h, &["PUBSUB", "NUMPAT"]), ":0\r\n");
            assert_eq!(
                exec(&mut s, h, &["PUBSUB", "CHANNELS"]),
                "*2\r\n$5\r\nalice\r\n$3\r\nbob\r\n"
            );
            assert_eq!(
                exec(&mut s, h, &["pubsub", "channels", "a*"]),
                "*1\r\n$5\r\nalice\r\n"
            );
            assert_eq!(exec(&mut s, h, &["PUBSUB", "CHANNELS", "zz*"]), "*0\r\n");
        }
        assert_eq!(
            exec(&mut s, h, &["PUBSUB", "SHARDCHANNELS"]),
            "-ERR unknown subcommand 'SHARDCHANNELS'. Try PUBSUB HELP.\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PUBSUB", "NUMPAT", "x"]),
            "-ERR wrong number of arguments for 'pubsub|numpat' command\r\n"
        );
    }

    #[test]
    fn subscribe_points_to_http() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        assert_eq!(
            exec(&mut s, h, &["subscribe", "alice"]),
            "-ERR SUBSCRIBE is not supported by cometbox: subscribe over HTTP at /mailbox/<name>\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PSUBSCRIBE", "a*"]),
            "-ERR PSUBSCRIBE is not supported by cometbox: subscribe over HTTP at /mailbox/<name>\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["SUBSCRIBE"]),
            "-ERR wrong number of arguments for 'subscribe' command\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["UNSUBSCRIBE"]),
            "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        );
        exec(&mut s, h, &["HELLO", "3"]);
        assert_eq!(
            exec(&mut s, h, &["PUNSUBSCRIBE", "a", "b"]),
            ">3\r\n$12\r\npunsubscribe\r\n$1\r\na\r\n:0\r\n>3\r\n$12\r\npunsubscribe\r\n$1\r\nb\r\n:0\r\n"
        );
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

    #[test]
    fn info_sections() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        let info = exec(&mut s, h, &["INFO"]);
        let body = info.split_once("\r\n").unwrap().1;
        assert_eq!(
            &info[1..info.find('\r').unwrap()],
            (body.len() - 2).to_string(),
            "bulk length"
        );
        assert!(
            body.starts_with("# Server\r\nredis_version:7.4.0\r\nredis_mode:standalone\r\n"),
            "{body}"
        );
        assert!(body.contains(&format!(
            "cometbox_version:{}\r\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(body.contains(&format!("process_id:{}\r\n", std::process::id())));
        assert!(body.contains("uptime_in_seconds:90000\r\nuptime_in_days:1\r\n"));
        assert!(body.ends_with(
            "\r\n\r\n# Persistence\r\nloading:0\r\nasync_loading:0\r\n\
             \r\n# Clients\r\nconnected_clients:2\r\n\
             \r\n# Mailboxes\r\nmailboxes:3\r\n\r\n"
        ));
        assert_eq!(h.info_calls, [None]);

        h.info_calls.clear();
        let info = exec(&mut s, h, &["INFO", "Clients"]);
        assert!(
            !info.contains("# Server")
                && info.contains("loading:0")
                && info.contains("connected_clients")
        );
        assert!(!info.contains("mailboxes:"));
        assert_eq!(h.info_calls, [Some("clients".to_string())]);

        h.info_calls.clear();
        let info = exec(&mut s, h, &["INFO", "all", "server"]);
        assert!(info.contains("# Server") && info.contains("mailboxes:3"));
        assert_eq!(h.info_calls, [Some("everything".to_string())]);

        exec(&mut s, h, &["HELLO", "3"]);
        let info = exec(&mut s, h, &["INFO", "server"]);
        assert!(
            info.starts_with('=')
                && info.contains("\r\ntxt:# Server\r\n")
                && info.contains("loading:0")
        );
    }

    /// A direct port of Redis' recursive `stringmatchlen` (util.c), to check
    /// the iterative `glob_match` against.
    fn redis_stringmatch(pattern: &[u8], string: &[u8]) -> bool {
        let (mut p, mut s) = (pattern, string);
        while !p.is_empty() && !s.is_empty() {
            match p[0] {
                b'*' => {
                    while p.len() > 1 && p[1] == b'*' {
                        p = &p[1..];
                    }
                    if p.len() == 1 {
                        return true;
                    }
                    return (0..s.len()).any(|i| redis_stringmatch(&p[1..], &s[i..]));
                }
                b'?' => s = &s[1..],
                b'[' => {
                    p = &p[1..];
                    let not = p.first() == Some(&b'^');
                    if not {
                        p = &p[1..];
                    }
                    let mut matched = false;
                    loop {
                        if p.len() >= 2 && p[0] == b'\\' {
                            p = &p[1..];
                            matched |= p[0] == s[0];
                        } else if p.first() == Some(&b']') {
                            break;
                        } else if p.is_empty() {
                            // Redis steps back so the shared `pattern++` ends it.
                            p = &pattern[pattern.len() - 1..];
                            break;
                        } else if p.len() >= 3 && p[1] == b'-' {
                            let (lo, hi) = (p[0].min(p[2]), p[0].max(p[2]));
                            matched |= (lo..=hi).contains(&s[0]);
                            p = &p[2..];
                        } else {
                            matched |= p[0] == s[0];
                        }
                        p = &p[1..];
                    }
                    if matched == not {
                        return false;
                    }
                    s = &s[1..];
                }
                c => {
                    let literal = if c == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        p[0]
                    } else {
                        c
                    };
                    if literal != s[0] {
                        return false;
                    }
                    s = &s[1..];
                }
            }
            p = &p[1..];
            if s.is_empty() {
                while p.first() == Some(&b'*') {
                    p = &p[1..];
                }
                break;
            }
        }
        p.is_empty() && s.is_empty()
    }

    #[test]
    fn glob_agrees_with_redis() {
        let alphabet = b"ab*?[]^-\\";
        let mut seed: u64 = 0x2545f4914f6cdd1d;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..200_000 {
            let pattern: Vec<u8> = (0..next(8))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let name: Vec<u8> = (0..1 + next(6))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            assert_eq!(
                glob_match(&pattern, &name),
                redis_stringmatch(&pattern, &name),
                "{:?} vs {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&name)
            );
        }
    }

    #[test]
    fn glob() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "alice", true),
            ("a*", "bob", false),
            ("*e", "alice", true),
            ("a*c*e", "alice", true),
            ("a*x*e", "alice", false),
            ("a?ice", "alice", true),
            ("a?ice", "aice", false),
            ("???", "bob", true),
            ("[ab]ob", "bob", true),
            ("[^b]ob", "bob", false),
            ("[^a]ob", "bob", true),
            ("user:[0-9]", "user:7", true),
            ("user:[9-0]", "user:7", true),
            ("user:[0-9]", "user:x", false),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("[\\]]", "]", true),
            ("[]", "a", false),
            ("[^]", "a", true),
            ("[ab", "a", true),
            ("[ab", "c", false),
            ("x\\", "x\\", true),
            ("Alice", "alice", false),
            ("**a**", "banana", true),
            (
                "a*a*a*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ];
        for &(pattern, name, want) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), name.as_bytes()),
                want,
                "{pattern} vs {name}"
            );
        }
    }
}
