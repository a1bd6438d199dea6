//! What a client asks about the server: INFO (ioredis' ready check waits
//! for its `loading:0`) and COMMAND (interactive redis-cli builds its hints
//! from it; we describe nothing and say so in the Redis shapes).

use std::fmt::Write as _;

use super::{COMMANDS, Hub, Session};
use crate::backend::resp;

/// The Redis version we claim in HELLO and INFO. At least 7.2 so clients that
/// gate features by server version (CLIENT SETINFO, HELLO) treat us as modern.
pub const REDIS_VERSION: &str = "7.4.0";

pub(super) const COMMAND_HELP: &[&str] = &[
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

/// `COMMAND INFO name…`: Redis answers null for a command it does not
/// describe, and we describe none.
pub(super) fn command_info(proto: u8, names: &[&[u8]], out: &mut Vec<u8>) {
    resp::array_len(out, names.len());
    for _ in names {
        resp::null(out, proto);
    }
}

pub(super) fn command_list(out: &mut Vec<u8>) {
    resp::array_len(out, COMMANDS.len());
    for spec in COMMANDS {
        resp::bulk(out, spec.name.as_bytes());
    }
}

/// The sections an `INFO [section …]` asks for, lowercase, each once.
struct Sections {
    named: Vec<String>,
    /// `all` or `everything`.
    everything: bool,
    /// No section, or `default`.
    default: bool,
}

impl Sections {
    fn parse(args: &[&[u8]]) -> Sections {
        let mut named: Vec<String> = Vec::with_capacity(args.len());
        for arg in args {
            let name = String::from_utf8_lossy(arg).to_ascii_lowercase();
            if !named.contains(&name) {
                named.push(name);
            }
        }
        Sections {
            everything: named
                .iter()
                .any(|s| matches!(s.as_str(), "all" | "everything")),
            default: named.is_empty() || named.iter().any(|s| s == "default"),
            named,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.everything || self.default || self.named.iter().any(|s| s == name)
    }
}

/// `INFO [section …]`: our `# Server` and `# Persistence` sections, then the
/// gateway's. `loading:0` is always there: ioredis waits for it on connect.
pub(super) fn info<H: Hub>(session: &Session, args: &[&[u8]], hub: &mut H, out: &mut Vec<u8>) {
    let sections = Sections::parse(args);
    let mut text = String::new();
    if sections.wants("server") {
        server_section(hub, &mut text);
    }
    // Always, whatever was asked: clients that wait for `loading:0` must
    // never see its absence as "still loading".
    if !text.is_empty() {
        text.push_str("\r\n");
    }
    text.push_str("# Persistence\r\nloading:0\r\nasync_loading:0\r\n");

    let mut extra = String::new();
    if sections.everything {
        hub.info(Some("everything"), &mut extra);
    } else if sections.default && sections.named.len() <= 1 {
        hub.info(None, &mut extra);
    } else {
        for section in &sections.named {
            hub.info(
                (section != "default").then_some(section.as_str()),
                &mut extra,
            );
        }
    }
    append_hub_sections(&sections, &extra, &mut text);
    resp::verbatim(out, session.proto, "txt", text.as_bytes());
}

fn server_section<H: Hub>(hub: &H, text: &mut String) {
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

/// Appends the hub's text normalised: CRLF line ends and one blank line
/// before each section header, as Redis separates sections. A hub may write
/// more than it was asked (the gateway's `clients` and `stats` come as one
/// block), and is asked once per named section, so a section is kept only
/// if it was asked for and has not been written yet: `INFO clients stats`
/// printed both sections twice.
fn append_hub_sections(sections: &Sections, extra: &str, text: &mut String) {
    let mut written: Vec<String> = Vec::new();
    let mut keep = true;
    for line in extra.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('#') {
            let name = header.trim().to_ascii_lowercase();
            keep = sections.wants(&name) && !written.contains(&name);
            if keep {
                written.push(name);
                text.push_str("\r\n");
            }
        }
        if keep {
            text.push_str(line);
            text.push_str("\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn command_subcommands() {
        let h = &mut hub();
        let mut s = Session::new(42, false);
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
        exec(&mut s, h, &["HELLO", "3"]);
        assert_eq!(exec(&mut s, h, &["COMMAND", "DOCS"]), "%0\r\n");
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

    /// Regression: the gateway's hub writes `# Clients` and `# Stats` as one
    /// block, once per named section, so `INFO clients stats` printed both
    /// twice.
    #[test]
    fn info_sections_are_printed_once() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        for words in [
            &["INFO", "clients", "stats"][..],
            &["INFO", "stats", "clients"],
            &["INFO", "all"],
            &["INFO"],
            &["INFO", "clients", "clients"],
            &["INFO", "default", "clients"],
            &["INFO", "everything", "stats"],
        ] {
            let info = exec(&mut s, h, words);
            for header in info.lines().filter(|l| l.starts_with('#')) {
                let times = info.lines().filter(|l| l == &header).count();
                assert_eq!(times, 1, "{header} in {words:?}: {info}");
            }
        }
        let info = exec(&mut s, h, &["INFO", "clients", "stats"]);
        assert!(info.contains("# Clients\r\nconnected_clients:2\r\n\r\n# Stats\r\n"));
        let info = exec(&mut s, h, &["INFO", "stats"]);
        assert!(
            info.contains("# Stats") && !info.contains("# Clients"),
            "only what was asked: {info}"
        );
    }
}
