//! What a reload (SIGHUP) may change while the gateway runs, and what only
//! a restart can: the listeners, the worker count, the store (its kind,
//! directory, fsync policy and limits), the backend socket and the Bayeux
//! session table are fixed at start. [`Config::keep_restart_only`] puts
//! those back to what runs, so the live config never claims a value
//! that is not in force, and names them for the log.

use super::{Config, Setting};

impl Config {
    /// Copies the keys that need a restart from `running` into `self`;
    /// returns the names of those that differed.
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<&'static str> {
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($section:ident . $field:ident => $key:literal),* $(,)?) => {$(
                if self.$section.$field != running.$section.$field {
                    self.$section.$field = running.$section.$field.clone();
                    kept.push($key);
                }
            )*};
        }
        keep!(
            server.bind => "server.bind",
            server.port => "server.port",
            server.workers => "server.workers",
            server.listen_backlog => "server.listen-backlog",
            mailbox.url_prefix => "mailbox.url-prefix",
            mailbox.backend_socket => "mailbox.backend-socket",
            mailbox.backend_socket_mode => "mailbox.backend-socket-mode",
            mailbox.backend_socket_group => "mailbox.backend-socket-group",
            mailbox.backend_port => "mailbox.backend-port",
            mailbox.backend_bind => "mailbox.backend-bind",
            mailbox.max_messages => "mailbox.max-messages",
            mailbox.message_ttl => "mailbox.message-ttl",
            mailbox.max_message_size => "mailbox.max-message-size",
            mailbox.max_mailboxes => "mailbox.max-mailboxes",
            mailbox.max_subscribers => "mailbox.max-subscribers",
            mailbox.max_memory => "mailbox.max-memory",
            mailbox.max_mailbox_bytes => "mailbox.max-mailbox-bytes",
            mailbox.store => "mailbox.store",
            mailbox.store_dir => "mailbox.store-dir",
            mailbox.store_fsync => "mailbox.store-fsync",
            bayeux.session_timeout => "bayeux.session-timeout",
            bayeux.max_sessions => "bayeux.max-sessions",
        );
        kept
    }
}

/// Keys whose value differs between two loads (set in one and not the
/// other, or set to another value), sorted, each once.
pub fn changed_keys(old: &[Setting], new: &[Setting]) -> Vec<&'static str> {
    let value =
        |list: &[Setting], key: &str| list.iter().find(|s| s.key == key).map(|s| s.value.clone());
    let mut keys: Vec<&'static str> = old
        .iter()
        .chain(new)
        .map(|s| s.key)
        .filter(|&k| value(old, k) != value(new, k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> super::super::Loaded {
        Config::parse_with_env(
            text,
            Path::new("gateway.conf"),
            Vec::<(String, String)>::new(),
        )
        .expect("valid")
    }

    #[test]
    fn restart_only_keys_are_put_back_and_named() {
        let running = load("server.port = 8080\nserver.workers = 2\n").config;
        let mut new = load(
            "server.port = 9090\nserver.workers = 2\nmailbox.cors-origins = (\"https://a.example\")\nmailbox.max-messages = 5\n",
        )
        .config;
        let kept = new.keep_restart_only(&running);
        assert_eq!(kept, ["server.port", "mailbox.max-messages"]);
        assert_eq!(new.server.port, 8080);
        assert_eq!(new.mailbox.max_messages, running.mailbox.max_messages);
        assert_eq!(
            new.mailbox.cors_origins,
            ["https://a.example"],
            "live keys change"
        );
    }

    #[test]
    fn changed_keys_compare_values_not_sources() {
        let a = load("server.port = 8080\nmailbox.heartbeat = 10\n");
        let b = load("\nmailbox.heartbeat = 10\nmailbox.upstream = \"enable\"\n");
        assert_eq!(
            changed_keys(&a.settings, &b.settings),
            ["mailbox.upstream", "server.port"]
        );
    }
}
