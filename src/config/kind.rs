//! What a key is: its name, how its value is read, checked and stored
//! ([`Kind`]), and how it is shown and documented. The table of keys
//! itself is `keys`.

use std::net::IpAddr;

use super::Config;
use super::keys::UNBOUNDED;
use super::validate::{parse_bind, parse_mode};
use super::value::{Typed, Value};

/// One known key: its name, how its value is read and stored, and its
/// documentation (rendered into docs/configuration.md).
// `default` and `doc` are read only by the tests that check the defaults and
// keep docs/configuration.md in step with this table.
#[cfg_attr(not(test), expect(dead_code))]
pub(super) struct Key {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    /// The default, written as it would be in the config file; `""` for a
    /// key that is unset by default (an empty string means unset).
    pub(super) default: &'static str,
    /// What the key does, for docs/configuration.md.
    pub(super) doc: &'static str,
}

/// How a key's value is read. Each variant carries its setter, so the type a
/// key is checked against and the field it writes cannot disagree.
pub(super) enum Kind {
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
    /// A quoted string; `what` says what it holds.
    Str {
        what: Text,
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

/// What a string key holds, which decides how it is described, checked and
/// shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Text {
    /// Any string the key's own check accepts.
    Plain,
    /// A filesystem path, used as written.
    Path,
    /// A path that must name a readable file: `-t` and the start check it
    /// (config/files.rs).
    File,
    /// A password: `-t` does not print it.
    Secret,
}

#[derive(Clone, Copy)]
pub(super) enum Unit {
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

impl Key {
    /// A stored value as `-t` prints it: in config syntax, secrets hidden.
    pub(super) fn show(&self, value: &Typed) -> String {
        match self.kind {
            Kind::Str {
                what: Text::Secret, ..
            } => "(hidden)".to_string(),
            _ => value.to_string(),
        }
    }
}

impl Kind {
    /// `+=` concatenates strings and appends arrays, as in lighttpd; on
    /// anything else it is an error rather than a surprise.
    pub(super) fn appendable(&self) -> bool {
        matches!(self, Kind::Str { .. } | Kind::List { .. })
    }

    /// What an error says was expected.
    pub(super) fn expected(&self) -> String {
        match self {
            Kind::Int { unit, min, max, .. } => {
                let noun = match unit {
                    Unit::Count => "a whole number".to_string(),
                    u => format!("a whole number of {}", u.noun()),
                };
                format!("{noun} {}", range_words(*min, *max))
            }
            Kind::Bool(_) => r#""enable" or "disable""#.to_string(),
            Kind::Str {
                what: Text::Path | Text::File,
                ..
            } => "a path in double quotes".to_string(),
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
    pub(super) fn doc_type(&self) -> String {
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
            Kind::Str { what, .. } => match what {
                Text::Plain => "string",
                Text::Path => "path",
                Text::File => "path of a readable file",
                Text::Secret => "string, not shown by -t",
            }
            .to_string(),
            Kind::List { .. } => "array of strings".to_string(),
            Kind::Addr(_) => "IP address".to_string(),
            Kind::Mode(_) => "octal mode, 0 to 0777".to_string(),
        }
    }

    /// Checks `value` against this kind and stores it, returning what was
    /// stored. The error says what was wrong and what was expected; the
    /// caller adds key and location.
    pub(super) fn apply(&self, config: &mut Config, value: &Value) -> Result<Typed, String> {
        Ok(match self {
            Kind::Int { min, max, set, .. } => {
                let n = self.read_int(value)?;
                if n < *min || n > *max {
                    return Err(format!("{n} is out of range: expected {}", self.expected()));
                }
                set(config, n);
                Typed::Int(n)
            }
            Kind::Bool(set) => {
                let b = self.read_bool(value)?;
                set(config, b);
                Typed::Bool(b)
            }
            Kind::Str { check, set, .. } => {
                let s = self.read_str(value)?;
                check(&s)?;
                set(config, s.clone());
                Typed::Str(s)
            }
            Kind::List { check, set } => {
                let strings = self.read_list(value)?;
                check(&strings)?;
                set(config, strings.clone());
                Typed::List(strings)
            }
            Kind::Addr(set) => {
                let Value::Str(s) = value else {
                    return Err(self.mismatch(value));
                };
                let addr = parse_bind(s)?;
                set(config, addr);
                Typed::Addr(addr)
            }
            Kind::Mode(set) => {
                let (Value::Str(text) | Value::Int(text)) = value else {
                    return Err(format!("expected {}, found an array", self.expected()));
                };
                let mode = parse_mode(text)?;
                set(config, mode);
                Typed::Mode(mode)
            }
        })
    }

    fn mismatch(&self, value: &Value) -> String {
        format!("expected {}, found {}", self.expected(), value.describe())
    }

    fn read_int(&self, value: &Value) -> Result<i64, String> {
        match value {
            Value::Int(text) => text
                .parse::<i64>()
                .map_err(|_| format!("{text} is too large: expected {}", self.expected())),
            // lighttpd reads a quoted number as a number.
            Value::Str(s) => s.parse::<i64>().map_err(|_| self.mismatch(value)),
            Value::List(_) => Err(self.mismatch(value)),
        }
    }

    fn read_bool(&self, value: &Value) -> Result<bool, String> {
        let text = match value {
            Value::Str(s) => s.as_str(),
            Value::Int(t) => t.as_str(),
            Value::List(_) => "",
        };
        match text.to_ascii_lowercase().as_str() {
            "enable" | "true" | "on" | "1" => Ok(true),
            "disable" | "false" | "off" | "0" => Ok(false),
            _ => Err(format!(
                "expected {} (or true/false, on/off, 1/0), found {}",
                self.expected(),
                value.describe()
            )),
        }
    }

    fn read_str(&self, value: &Value) -> Result<String, String> {
        match value {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(t) => Err(format!(
                "expected {}, found the bare number {t}: write \"{t}\"",
                self.expected()
            )),
            Value::List(_) => Err(format!("expected {}, found an array", self.expected())),
        }
    }

    fn read_list(&self, value: &Value) -> Result<Vec<String>, String> {
        match value {
            Value::List(items) => items
                .iter()
                .map(|item| match item {
                    Value::Str(s) => Ok(s.clone()),
                    other => Err(format!(
                        "expected only strings in the array, found {}",
                        other.describe()
                    )),
                })
                .collect(),
            Value::Str(s) => Err(format!(
                "expected {}, found a single string: write ( {s:?} )",
                self.expected()
            )),
            Value::Int(_) => Err(self.mismatch(value)),
        }
    }
}

fn range_words(min: i64, max: i64) -> String {
    if max == UNBOUNDED {
        format!("of at least {min}")
    } else {
        format!("from {min} to {max}")
    }
}
