//! Environment overrides: `COMETBOX_<SECTION>_<KEY>`, the key in capitals
//! with `.` and `-` as `_`, sets that key as if written last in the config
//! file (`COMETBOX_SERVER_PORT=9000` is `server.port := 9000`). The
//! environment is passed in, never read here, so tests need not touch the
//! process's own.

use std::ffi::OsStr;
use std::path::Path;

use super::ConfigError;
use super::keys::{KEYS, Key, Kind};
use super::suggest::{edit_distance, suggest};
use super::value::Value;

const PREFIX: &str = "COMETBOX_";

/// `COMETBOX_` variables that are not overrides: the config path, and those
/// the test runner, the benchmarks and the backend examples read (an app and
/// the gateway often share one environment, so these must not be errors).
const NOT_OVERRIDES: &[&str] = &[
    "COMETBOX_CONFIG",
    "COMETBOX_BIN",
    "COMETBOX_UPDATE_DOCS",
    "COMETBOX_SOCKET",
    "COMETBOX_JWT_SECRET_FILE",
    "COMETBOX_URL",
];

/// A variable outside every section prefix is still taken for a misspelt
/// override (and refused) when it is this close to one: `COMETBOX_SERVR_PORT`.
const TYPO_MAX_EDITS: usize = 2;

/// One key set from the environment, its value not yet checked.
pub(super) struct Override {
    pub(super) key: &'static Key,
    /// The variable, for messages and `-t`.
    pub(super) name: String,
    pub(super) value: Value,
}

/// The variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    format!(
        "{PREFIX}{}",
        key.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

/// The overrides in `env`, sorted by name so that checks and errors do not
/// depend on the order of the environment. `origin` is the config file they
/// apply to, named by the errors.
pub(super) fn overrides<I, K, V>(env: I, origin: &Path) -> Result<Vec<Override>, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut found = Vec::new();
    for (name, value) in env {
        // A name that is not UTF-8 cannot spell a key.
        let Some(name) = name.as_ref().to_str() else {
            continue;
        };
        if !name.starts_with(PREFIX) || NOT_OVERRIDES.contains(&name) {
            continue;
        }
        let err = |message: String| ConfigError::in_env(origin, name, message);
        let Some(key) = key_for(name).map_err(err)? else {
            continue;
        };
        let Some(raw) = value.as_ref().to_str() else {
            return Err(err(format!(
                "the value for {:?} is not valid UTF-8",
                key.name
            )));
        };
        found.push(Override {
            key,
            name: name.to_string(),
            value: value_for(&key.kind, raw),
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// The key `name` overrides; `None` for a `COMETBOX_` variable that is not
/// meant for the gateway; an error for one that is but names no key.
fn key_for(name: &str) -> Result<Option<&'static Key>, String> {
    if let Some(key) = KEYS.iter().find(|k| env_name(k.name) == name) {
        return Ok(Some(key));
    }
    let rest = &name[PREFIX.len()..];
    let in_a_section = KEYS.iter().any(|k| {
        let section = k.name.split_once('.').map_or(k.name, |(s, _)| s);
        rest.strip_prefix(&section.to_ascii_uppercase())
            .is_some_and(|r| r.starts_with('_'))
    });
    if in_a_section {
        let hint = match suggest(&key_spelling(rest)) {
            Some(k) => format!(" (did you mean {}, which sets {k:?}?)", env_name(k)),
            None => " (docs/configuration.md lists the keys cometbox knows)".to_string(),
        };
        return Err(format!(
            "{name} sets no config key: the variable for a key is COMETBOX_ and the key in \
            capitals with '.' and '-' as '_'{hint}"
        ));
    }
    let typo = KEYS
        .iter()
        .map(|k| (edit_distance(name, &env_name(k.name)), k.name))
        .filter(|&(d, _)| d <= TYPO_MAX_EDITS)
        .min_by_key(|&(d, _)| d);
    match typo {
        Some((_, k)) => Err(format!(
            "{name} sets no config key (did you mean {}, which sets {k:?}?)",
            env_name(k)
        )),
        None => Ok(None),
    }
}

/// `SERVER_MAX_CONNECTIONS` as the key it most likely means,
/// `server.max-connections`, for the "did you mean" search.
fn key_spelling(rest: &str) -> String {
    let lower = rest.to_ascii_lowercase();
    match lower.split_once('_') {
        Some((section, key)) => format!("{section}.{}", key.replace('_', "-")),
        None => lower,
    }
}

/// The raw text of a variable as the value its key's kind reads: no quotes
/// around strings, and a list separated by commas. Numbers become number
/// tokens, so they read (and fail) as they would in the file.
fn value_for(kind: &Kind, raw: &str) -> Value {
    let is_number = |t: &str| {
        let digits = t.strip_prefix('-').unwrap_or(t);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    match kind {
        Kind::List { .. } => Value::List(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::Str(item.to_string()))
                .collect(),
        ),
        // Strings are taken as they are: a password may end in a space.
        Kind::Str { .. } => Value::Str(raw.to_string()),
        _ if is_number(raw.trim()) => Value::Int(raw.trim().to_string()),
        _ => Value::Str(raw.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Loaded, Source};
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;

    fn with_env(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        Config::parse_with_env(text, Path::new("g.conf"), env.iter().copied())
    }

    #[track_caller]
    fn env_err(env: &[(&str, &str)]) -> ConfigError {
        match with_env("", env) {
            Ok(l) => panic!("expected an error for {env:?}, got {:?}", l.config),
            Err(e) => e,
        }
    }

    #[test]
    fn names_follow_one_rule() {
        assert_eq!(env_name("server.port"), "COMETBOX_SERVER_PORT");
        assert_eq!(
            env_name("mailbox.max-messages"),
            "COMETBOX_MAILBOX_MAX_MESSAGES"
        );
        assert_eq!(
            env_name("auth.jwt-secret-file"),
            "COMETBOX_AUTH_JWT_SECRET_FILE"
        );
        for (i, k) in KEYS.iter().enumerate() {
            let name = env_name(k.name);
            assert!(
                KEYS[i + 1..].iter().all(|o| env_name(o.name) != name),
                "{name} names two keys"
            );
            assert!(!NOT_OVERRIDES.contains(&name.as_str()), "{name}");
        }
    }

    #[test]
    fn every_kind_is_read_from_its_raw_text() {
        let l = with_env(
            "server.port = 8080\nmailbox.backend-password = \"file\"\n",
            &[
                ("COMETBOX_SERVER_PORT", "9000"),
                ("COMETBOX_MAILBOX_MAX_MESSAGES", " 50 "),
                ("COMETBOX_AUTH_REQUIRED", "enable"),
                ("COMETBOX_AUTH_JWT_SECRET_FILE", "/etc/cometbox/jwt.secret"),
                (
                    "COMETBOX_MAILBOX_CORS_ORIGINS",
                    "https://a.example, https://b.example,",
                ),
                ("COMETBOX_MAILBOX_URL_PREFIX", "/box/"),
                ("COMETBOX_MAILBOX_BACKEND_SOCKET_MODE", "0600"),
                ("COMETBOX_SERVER_BIND", "::1"),
                ("COMETBOX_MAILBOX_BACKEND_PASSWORD", "two words"),
                ("COMETBOX_AUTH_CLOCK_LEEWAY", "30"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        let c = &l.config;
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.mailbox.max_messages, 50);
        assert!(c.auth.required);
        assert_eq!(
            c.auth.jwt_secret_file,
            Some(PathBuf::from("/etc/cometbox/jwt.secret"))
        );
        assert_eq!(
            c.mailbox.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(c.mailbox.url_prefix, "/box/");
        assert_eq!(c.mailbox.backend_socket_mode, 0o600);
        assert_eq!(c.server.bind, "::1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(c.mailbox.backend_password.as_deref(), Some("two words"));
        assert_eq!(c.auth.clock_leeway, std::time::Duration::from_secs(30));
        // An override replaces the file's value without a "set twice" warning.
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let port = l.settings.iter().find(|s| s.key == "server.port").unwrap();
        assert_eq!(port.source, Source::Env("COMETBOX_SERVER_PORT".into()));
        // An empty value unsets a string key, as "" does in the file.
        let l = with_env(
            "mailbox.backend-password = \"x\"\n",
            &[("COMETBOX_MAILBOX_BACKEND_PASSWORD", "")],
        )
        .unwrap();
        assert_eq!(l.config.mailbox.backend_password, None);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let e = env_err(&[("COMETBOX_SERVER_PORT", "80x")]);
        assert_eq!(e.env_var(), Some("COMETBOX_SERVER_PORT"));
        assert_eq!(e.line(), None);
        assert_eq!(e.file(), Path::new("g.conf"));
        assert_eq!(
            e.to_string(),
            "env COMETBOX_SERVER_PORT: invalid value for \"server.port\": expected a whole \
            number from 0 to 65535, found the string \"80x\""
        );
        let e = env_err(&[("COMETBOX_SERVER_PORT", "70000")]);
        assert!(e.message().contains("70000 is out of range"), "{e}");
        let e = env_err(&[("COMETBOX_AUTH_REQUIRED", "yes")]);
        assert!(
            e.message().contains("expected \"enable\" or \"disable\""),
            "{e}"
        );
        let e = env_err(&[("COMETBOX_MAILBOX_CORS_ORIGINS", "example.com")]);
        assert!(e.message().contains("write the scheme too"), "{e}");
        // Of two bad values, the first by name is reported, whatever the
        // order of the environment.
        let bad = [
            ("COMETBOX_SERVER_WORKERS", "x"),
            ("COMETBOX_SERVER_PORT", "x"),
        ];
        let reversed = [bad[1], bad[0]];
        assert_eq!(env_err(&bad), env_err(&reversed));
        assert_eq!(env_err(&bad).env_var(), Some("COMETBOX_SERVER_PORT"));
    }

    #[test]
    fn a_rule_between_keys_blames_the_variable() {
        let e = env_err(&[("COMETBOX_AUTH_REQUIRED", "1")]);
        assert_eq!(e.env_var(), Some("COMETBOX_AUTH_REQUIRED"), "{e}");
        assert!(e.message().contains("neither auth.jwt-secret-file"), "{e}");
    }

    #[test]
    fn unknown_variables() {
        let e = env_err(&[("COMETBOX_SERVER_PROT", "1")]);
        assert_eq!(e.env_var(), Some("COMETBOX_SERVER_PROT"));
        assert!(
            e.message()
                .contains("(did you mean COMETBOX_SERVER_PORT, which sets \"server.port\"?)"),
            "{e}"
        );
        // A misspelt section is still a typo of an override.
        let e = env_err(&[("COMETBOX_SERVR_PORT", "1")]);
        assert!(
            e.message().contains("did you mean COMETBOX_SERVER_PORT"),
            "{e}"
        );
        let e = env_err(&[("COMETBOX_MAILBOX_MAX_MESAGES", "1")]);
        assert!(e.message().contains("COMETBOX_MAILBOX_MAX_MESSAGES"), "{e}");
        let e = env_err(&[("COMETBOX_SERVER_DOCUMENT_ROOT", "/var/www")]);
        assert!(e.message().contains("docs/configuration.md lists"), "{e}");
        // Variables of the family that other tools read, and ones far from
        // any override, are left alone.
        let ignored = [
            ("COMETBOX_CONFIG", "/x.conf"),
            ("COMETBOX_BIN", "/x"),
            ("COMETBOX_SOCKET", "/tmp/s"),
            ("COMETBOX_JWT_SECRET_FILE", "/s"),
            ("COMETBOX_URL", "http://x"),
            ("COMETBOX_UPDATE_DOCS", "1"),
            ("COMETBOX_SOMETHING_ELSE", "1"),
            ("NOT_COMETBOX_SERVER_PORT", "1"),
        ];
        assert_eq!(with_env("", &ignored).unwrap().config, Config::default());
    }

    #[test]
    fn non_utf8_values_are_refused() {
        let env = [(
            OsString::from("COMETBOX_AUTH_COOKIE"),
            OsString::from_vec(vec![0xff, b'x']),
        )];
        let e = Config::parse_with_env("", Path::new("g.conf"), env).unwrap_err();
        assert!(e.message().contains("not valid UTF-8"), "{e}");
        // A name that is not UTF-8 is no override.
        let env = [(OsString::from_vec(vec![b'C', 0xff]), OsString::from("1"))];
        Config::parse_with_env("", Path::new("g.conf"), env).unwrap();
    }
}
