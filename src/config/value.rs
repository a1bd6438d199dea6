//! A key's value in its two forms: as written in the file or the environment
//! ([`Value`], not yet checked) and as stored once its key accepted it
//! ([`Typed`], which `-t` writes back in config syntax).

use std::fmt;
use std::net::IpAddr;

/// A value as written, before it is checked against its key.
#[derive(Clone, Debug)]
pub(super) enum Value {
    Str(String),
    Int(String),
    List(Vec<Value>),
}

impl Value {
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Str(s) => format!("the string {s:?}"),
            Value::Int(t) => format!("the number {t}"),
            Value::List(_) => "an array".to_string(),
        }
    }
}

/// A value that passed its key's checks, as stored: what `-t` shows.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Typed {
    Int(i64),
    Bool(bool),
    Str(String),
    List(Vec<String>),
    Addr(IpAddr),
    Mode(u32),
}

/// Written back in config-file syntax, so `-t` output can be pasted into a
/// config file.
impl fmt::Display for Typed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Typed::Int(n) => write!(f, "{n}"),
            Typed::Bool(b) => f.write_str(if *b { "\"enable\"" } else { "\"disable\"" }),
            Typed::Str(s) => write_quoted(f, s),
            Typed::List(items) if items.is_empty() => f.write_str("()"),
            Typed::List(items) => {
                f.write_str("( ")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_quoted(f, item)?;
                }
                f.write_str(" )")
            }
            Typed::Addr(a) => write!(f, "\"{a}\""),
            Typed::Mode(m) => write!(f, "\"{m:04o}\""),
        }
    }
}

/// A string with the lexer's escapes, so it reads back as the same string.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}
