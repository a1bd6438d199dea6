//! The loader: reads a config file and the files it includes, statement by
//! statement, into the value each key was last given, then checks and stores
//! those values into a [`Config`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::env::Override;
use super::keys::{KEYS, Key, Kind, find_key};
use super::lexer::{Lexer, Tok};
use super::suggest::suggest;
use super::validate::cross_check;
use super::value::Value;
use super::{Config, ConfigError, Loaded, Setting, Source};

/// Include nesting limit. A conf.d layout needs two or three levels; the
/// bound stops a cycle that path comparison cannot see (e.g. through a file
/// that cannot be canonicalized) before it exhausts the stack.
const MAX_INCLUDE_DEPTH: usize = 16;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Assign,
    Append,
    Replace,
}

/// The value a key has so far, kept as written: `+=` extends it, a second
/// `=` is reported with the place of the first, and it is checked against
/// its key only once every file is read (so `a = "x"` then `a += "y/"` is
/// judged on "xy/", and a bad value overridden later does no harm; lighttpd
/// also checks values after parsing).
struct Assigned {
    key: &'static Key,
    value: Value,
    source: Source,
    /// Order of the last assignment, so values are checked (and the first
    /// error reported) in the order they were written.
    seq: usize,
}

struct Loader {
    assigned: HashMap<&'static str, Assigned>,
    /// Assignments made so far, for `Assigned::seq`.
    seq: usize,
    /// Files being read, outermost first: (canonical path for cycle
    /// detection, path as named for messages).
    stack: Vec<(PathBuf, PathBuf)>,
    /// Warnings to log once loading succeeds (collected, not logged here, so
    /// tests can see them without installing a logger).
    warnings: Vec<String>,
}

/// Reads the config file at `path`: its bytes must be UTF-8.
pub(super) fn read_config(path: &Path) -> Result<String, ConfigError> {
    read_text(path).map_err(|e| match e {
        ReadError::Io(e) => ConfigError::in_file(path, format!("cannot read config file: {e}")),
        ReadError::Utf8 { line } => ConfigError::at(path, line, NOT_UTF8),
    })
}

/// Parses `text` as the file `origin`, then applies `overrides` (from the
/// environment) as if each were written last with `:=`, then checks and
/// stores every value.
pub(super) fn parse(
    text: &str,
    origin: &Path,
    overrides: Vec<Override>,
) -> Result<Loaded, ConfigError> {
    let mut loader = Loader {
        assigned: HashMap::new(),
        seq: 0,
        stack: vec![(canonical(origin), origin.to_path_buf())],
        warnings: Vec::new(),
    };
    loader.parse_file(text.strip_prefix('\u{feff}').unwrap_or(text), origin)?;
    for o in overrides {
        loader.assign(o.key, Op::Replace, o.value, Source::Env(o.name))?;
    }
    loader.finish(origin)
}

impl Loader {
    /// Checks the values in the order they were written and stores them.
    fn finish(self, origin: &Path) -> Result<Loaded, ConfigError> {
        let mut written: Vec<&Assigned> = self.assigned.values().collect();
        written.sort_by_key(|a| a.seq);
        let mut config = Config::default();
        let mut stored = HashMap::new();
        for a in written {
            let typed = a.key.kind.apply(&mut config, &a.value).map_err(|m| {
                a.source
                    .error(origin, format!("invalid value for {:?}: {m}", a.key.name))
            })?;
            stored.insert(a.key.name, typed);
        }
        if let Err((keys, message)) = cross_check(&config) {
            // Point at the latest assignment of the keys involved; with only
            // defaults (which pass) there is none, so fall back to the file.
            let source = keys
                .iter()
                .filter_map(|k| self.assigned.get(k))
                .max_by_key(|a| a.seq)
                .map(|a| &a.source);
            return Err(match source {
                Some(source) => source.error(origin, message),
                None => ConfigError::in_file(origin, message),
            });
        }
        // In table order, so `-t` lists keys grouped by section.
        let settings = KEYS
            .iter()
            .filter_map(|k| {
                let typed = stored.remove(k.name)?;
                Some(Setting {
                    key: k.name,
                    value: k.show(&typed),
                    source: self.assigned[k.name].source.clone(),
                })
            })
            .collect();
        Ok(Loaded {
            config,
            path: origin.to_path_buf(),
            settings,
            warnings: self.warnings,
        })
    }
}

#[cfg(test)]
pub(super) fn load_with_warnings(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    parse_with_warnings(&read_config(path)?, path)
}

#[cfg(test)]
pub(super) fn parse_with_warnings(
    text: &str,
    origin: &Path,
) -> Result<(Config, Vec<String>), ConfigError> {
    parse(text, origin, Vec::new()).map(|l| (l.config, l.warnings))
}

const NOT_UTF8: &str = "not valid UTF-8 (the first bad byte is on this line)";

enum ReadError {
    Io(std::io::Error),
    Utf8 { line: usize },
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(ReadError::Io)?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ReadError::Utf8 {
            line: 1 + good.iter().filter(|&&b| b == b'\n').count(),
        }
    })
}

/// A path's identity for cycle detection; a file that cannot be resolved
/// (e.g. the origin of `parse_str`) is compared by name.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Loader {
    fn parse_file(&mut self, text: &str, file: &Path) -> Result<(), ConfigError> {
        let mut lex = Lexer::new(text, file);
        loop {
            let (tok, line) = lex.next()?;
            match tok {
                Tok::Newline => {}
                Tok::Eof => return Ok(()),
                Tok::Word(w) => match w.as_str() {
                    "include" => {
                        let target = match lex.next()? {
                            (Tok::Str(s), _) => s,
                            (other, l) => {
                                return Err(lex.err(
                                    l,
                                    format!(
                                        "expected a file name in double quotes after include, \
                                        found {}",
                                        other.describe()
                                    ),
                                ));
                            }
                        };
                        end_of_statement(&mut lex, "the include")?;
                        self.include(file, line, &target)?;
                    }
                    "include_shell" => {
                        return Err(lex.err(
                            line,
                            "include_shell is not supported by cometbox: generate the file \
                            beforehand and use include",
                        ));
                    }
                    "else" | "elseif" | "elsif" => {
                        return Err(lex.err(line, CONDITIONALS_UNSUPPORTED));
                    }
                    _ => self.assignment(&mut lex, w, line)?,
                },
                Tok::Dollar => return Err(lex.err(line, CONDITIONALS_UNSUPPORTED)),
                Tok::LBrace | Tok::RBrace => return Err(lex.err(line, BLOCKS_UNSUPPORTED)),
                Tok::Str(s) => {
                    return Err(lex.err(
                        line,
                        format!(
                            "expected a key name at the start of a line, found the string \
                            {s:?}: keys are written without quotes"
                        ),
                    ));
                }
                other => {
                    return Err(lex.err(
                        line,
                        format!(
                            "expected a key name at the start of a line, found {}",
                            other.describe()
                        ),
                    ));
                }
            }
        }
    }

    fn assignment(&mut self, lex: &mut Lexer, key: String, line: usize) -> Result<(), ConfigError> {
        if key.starts_with("var.") {
            return Err(lex.err(
                line,
                format!(
                    "variables ({key}) are not supported by cometbox: write the value where \
                    it is used"
                ),
            ));
        }
        if key.starts_with("env.") {
            return Err(lex.err(
                line,
                format!("environment variables ({key}) are not supported by cometbox"),
            ));
        }
        let op = match lex.next()? {
            (Tok::Assign, _) => Op::Assign,
            (Tok::Append, _) => Op::Append,
            (Tok::Replace, _) => Op::Replace,
            (Tok::LBrace, l) => return Err(lex.err(l, BLOCKS_UNSUPPORTED)),
            (other, l) => {
                return Err(lex.err(
                    l,
                    format!("expected '=' after key {key:?}, found {}", other.describe()),
                ));
            }
        };
        let Some(def) = find_key(&key) else {
            let hint = match suggest(&key) {
                Some(s) => format!(" (did you mean {s:?}?)"),
                None => " (docs/configuration.md lists the keys cometbox knows)".to_string(),
            };
            return Err(lex.err(line, format!("unknown key {key:?}{hint}")));
        };
        let value = parse_value(lex, def.name)?;
        end_of_statement(lex, &format!("the value of {:?}", def.name))?;
        let source = Source::File {
            file: lex.file.to_path_buf(),
            line,
        };
        self.assign(def, op, value, source)
    }

    fn assign(
        &mut self,
        def: &'static Key,
        op: Op,
        value: Value,
        source: Source,
    ) -> Result<(), ConfigError> {
        // Errors below come from '+=', which only a file can write.
        let err = |msg: String| source.error(&self.stack[0].1, msg);
        let previous = self.assigned.get(def.name);
        let value = match op {
            Op::Assign | Op::Replace => {
                if let (Op::Assign, Some(prev)) = (op, previous) {
                    let hint = if matches!(def.kind, Kind::List { .. }) {
                        "; use += to append to it"
                    } else {
                        "; use := to replace it on purpose"
                    };
                    self.warnings.push(format!(
                        "{source}: {:?} is set again (first at {}); the later value wins{hint}",
                        def.name, prev.source
                    ));
                }
                value
            }
            Op::Append => {
                if !def.kind.appendable() {
                    return Err(err(format!(
                        "'+=' appends to arrays and strings, but {:?} takes {}: use '='",
                        def.name,
                        def.kind.expected()
                    )));
                }
                match (previous.map(|p| &p.value), value) {
                    // Like lighttpd, += on a key not yet set acts as =.
                    (None, v) => v,
                    (Some(Value::Str(a)), Value::Str(b)) => Value::Str(format!("{a}{b}")),
                    (Some(Value::List(a)), Value::List(b)) => {
                        Value::List(a.iter().cloned().chain(b).collect())
                    }
                    (Some(old), new) => {
                        return Err(err(format!(
                            "cannot append {} to {:?}, which holds {}: '+=' needs the same type \
                            on both sides",
                            new.describe(),
                            def.name,
                            old.describe()
                        )));
                    }
                }
            }
        };
        self.seq += 1;
        let seq = self.seq;
        self.assigned.insert(
            def.name,
            Assigned {
                key: def,
                value,
                source,
                seq,
            },
        );
        Ok(())
    }

    fn include(&mut self, from: &Path, line: usize, target: &str) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::at(from, line, msg);
        if target.is_empty() {
            return Err(err("include needs a file name".to_string()));
        }
        if target.contains(['*', '?']) {
            return Err(err(format!(
                "include {target:?}: wildcards in include are not supported by cometbox; \
                include each file by name"
            )));
        }
        // Relative to the including file, so a config tree can be moved whole.
        let path = match from.parent() {
            Some(dir) if Path::new(target).is_relative() => dir.join(target),
            _ => PathBuf::from(target),
        };
        let key = canonical(&path);
        let chain = |stack: &[(PathBuf, PathBuf)]| {
            stack
                .iter()
                .map(|(_, shown)| shown.display().to_string())
                .chain([path.display().to_string()])
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        if let Some(start) = self.stack.iter().position(|(c, _)| *c == key) {
            return Err(err(format!(
                "include cycle: {}",
                chain(&self.stack[start..])
            )));
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "includes nested more than {MAX_INCLUDE_DEPTH} deep: {}",
                chain(&self.stack)
            )));
        }
        let text = match read_text(&path) {
            Ok(text) => text,
            Err(ReadError::Io(e)) => {
                return Err(err(format!(
                    "cannot include {:?}: {e}",
                    path.display().to_string()
                )));
            }
            Err(ReadError::Utf8 { line }) => return Err(ConfigError::at(&path, line, NOT_UTF8)),
        };
        self.stack.push((key, path.clone()));
        self.parse_file(text.strip_prefix('\u{feff}').unwrap_or(&text), &path)?;
        self.stack.pop();
        Ok(())
    }
}

const CONDITIONALS_UNSUPPORTED: &str = "conditionals ($HTTP[...] { ... }, else) are not \
    supported by cometbox: it has one global configuration";
const BLOCKS_UNSUPPORTED: &str =
    "blocks { ... } are not supported by cometbox: it has one global configuration";

fn parse_value(lex: &mut Lexer, key: &str) -> Result<Value, ConfigError> {
    let (tok, line) = lex.next()?;
    match tok {
        Tok::Str(s) => Ok(Value::Str(s)),
        Tok::Int(t) => Ok(Value::Int(t)),
        Tok::LParen => parse_list(lex, line),
        Tok::Newline | Tok::Eof => Err(lex.err(
            line,
            format!(
                "missing value after '=' for \
            {key:?}"
            ),
        )),
        Tok::Word(w) if w.starts_with("var.") || w.starts_with("env.") => Err(lex.err(
            line,
            format!("variables ({w}) are not supported by cometbox: write the value itself"),
        )),
        Tok::Word(w) => Err(lex.err(
            line,
            format!(
                "expected a value for {key:?}, found the bare word {w}: put strings in \
                double quotes (\"{w}\")"
            ),
        )),
        other => Err(lex.err(
            line,
            format!("expected a value for {key:?}, found {}", other.describe()),
        )),
    }
}

/// After '(' : strings or numbers separated by commas, over any number of
/// lines, with an optional trailing comma.
fn parse_list(lex: &mut Lexer, open_line: usize) -> Result<Value, ConfigError> {
    let mut items = Vec::new();
    loop {
        let (tok, line) = next_in_list(lex)?;
        match tok {
            Tok::RParen => return Ok(Value::List(items)),
            Tok::Str(s) => items.push(Value::Str(s)),
            Tok::Int(t) => items.push(Value::Int(t)),
            Tok::LParen => {
                return Err(lex.err(line, "nested arrays are not supported by cometbox"));
            }
            Tok::Eof => return Err(unclosed(lex, open_line)),
            Tok::Word(w) => {
                return Err(lex.err(
                    line,
                    format!(
                        "expected a string in the array, found the bare word {w}: put it in \
                        double quotes (\"{w}\")"
                    ),
                ));
            }
            other => {
                return Err(lex.err(
                    line,
                    format!(
                        "expected a string or ')' in the array, found {}",
                        other.describe()
                    ),
                ));
            }
        }
        match next_in_list(lex)? {
            (Tok::Comma, _) => {}
            (Tok::RParen, _) => return Ok(Value::List(items)),
            (Tok::Arrow, l) => {
                return Err(lex.err(
                    l,
                    "key => value arrays are not supported by cometbox: list plain strings",
                ));
            }
            (Tok::Eof, _) => return Err(unclosed(lex, open_line)),
            (other, l) => {
                return Err(lex.err(
                    l,
                    format!(
                        "expected ',' or ')' in the array, found {}",
                        other.describe()
                    ),
                ));
            }
        }
    }
}

/// Arrays may span lines, so newlines inside one are only whitespace.
fn next_in_list(lex: &mut Lexer) -> Result<(Tok, usize), ConfigError> {
    loop {
        match lex.next()? {
            (Tok::Newline, _) => {}
            t => return Ok(t),
        }
    }
}

fn unclosed(lex: &Lexer, open_line: usize) -> ConfigError {
    lex.err(open_line, "the array opened here has no closing ')'")
}

fn end_of_statement(lex: &mut Lexer, what: &str) -> Result<(), ConfigError> {
    match lex.next()? {
        (Tok::Newline | Tok::Eof, _) => Ok(()),
        (Tok::Plus, l) => Err(lex.err(
            l,
            "joining values with '+' is not supported by cometbox: write the whole value in one \
            string",
        )),
        (other, l) => Err(lex.err(
            l,
            format!(
                "expected the end of the line after {what}, found {} (one setting per line)",
                other.describe()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::{TempDir, assert_err, parse};
    use std::time::Duration;

    #[test]
    fn arrays_over_several_lines() {
        let c = parse(
            r#"
mailbox.cors-origins = (
    "https://app.example.com",   # the web app
    # a comment line inside the array
    "http://localhost:3000",

)
auth.public-prefixes = ( "public." )
"#,
        )
        .unwrap();
        assert_eq!(
            c.mailbox.cors_origins,
            vec!["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(c.auth.public_prefixes, vec!["public."]);
        assert!(
            parse("mailbox.cors-origins = ()")
                .unwrap()
                .mailbox
                .cors_origins
                .is_empty()
        );
        assert_eq!(
            parse("mailbox.cors-origins = ( \"*\" )")
                .unwrap()
                .mailbox
                .cors_origins,
            vec!["*"]
        );
        assert_err(
            "mailbox.cors-origins = (\n\"https://a.example\"\n",
            1,
            "no closing ')'",
        );
        assert_err(
            "mailbox.cors-origins = ( \"https://a.example\" \"https://b.example\" )",
            1,
            "expected ',' or ')'",
        );
        assert_err(
            "mailbox.cors-origins = \"https://a.example\"",
            1,
            "write ( \"https://a.example\" )",
        );
        assert_err("mailbox.cors-origins = ( 5 )", 1, "only strings");
        assert_err("mailbox.cors-origins = ( ( \"a\" ) )", 1, "nested arrays");
        assert_err(
            "mailbox.cors-origins = ( \"a\" => \"b\" )",
            1,
            "key => value arrays are not supported by cometbox",
        );
    }

    #[test]
    fn append() {
        let c = parse(
            r#"
mailbox.cors-origins = ( "https://a.example" )
mailbox.cors-origins += ( "https://b.example", "https://c.example" )
auth.public-prefixes += ( "pub." )
mailbox.url-prefix = "/comet"
mailbox.url-prefix += "/box/"
"#,
        )
        .unwrap();
        assert_eq!(
            c.mailbox.cors_origins,
            vec![
                "https://a.example",
                "https://b.example",
                "https://c.example"
            ]
        );
        // += on a key not set yet acts as = (lighttpd does the same).
        assert_eq!(c.auth.public_prefixes, vec!["pub."]);
        assert_eq!(c.mailbox.url_prefix, "/comet/box/");
        assert_err("server.port += 1", 1, "'+=' appends to arrays and strings");
        assert_err(
            "mailbox.cors-origins = ( \"https://a.example\" )\nmailbox.cors-origins += \
            \"https://b.example\"",
            2,
            "cannot append",
        );
    }

    #[test]
    fn values_are_judged_once_every_file_is_read() {
        // A bad value overridden later does no harm (the later one wins)...
        let (c, warnings) = parse_with_warnings(
            "server.port = 99999\nserver.port = 80\n",
            Path::new("t.conf"),
        )
        .unwrap();
        assert_eq!(c.server.port, 80);
        assert_eq!(warnings.len(), 1);
        // ...and of two bad values the one written first is reported.
        assert_err(
            "\nserver.workers = 100\nserver.port = 99999\n",
            2,
            "\"server.workers\"",
        );
        // A value is judged where it was last written.
        assert_err(
            "mailbox.url-prefix = \"/a/\"\nmailbox.url-prefix += \"b\"\n",
            2,
            "must start and end with '/'",
        );
    }

    #[test]
    fn every_error_names_file_and_line() {
        for (text, line, needle) in [
            (
                "server.port 8080",
                1,
                "expected '=' after key \"server.port\", found the number 8080",
            ),
            ("\n\nserver.port =", 3, "missing value"),
            ("server.port = \n9", 1, "missing value"),
            ("\nserver.bind = \"127.0.0.1", 2, "unterminated string"),
            (
                "server.port = 80 81",
                1,
                "expected the end of the line after the value of \"server.port\", found the \
                number 81",
            ),
            (
                "server.port = 80 + 1",
                1,
                "joining values with '+' is not supported by cometbox",
            ),
            ("server.port = 8k", 1, "malformed number \"8k\""),
            ("server.port = 1.5", 1, "malformed number \"1.5\""),
            ("server.port = - 1", 1, "'-' must be followed by digits"),
            ("\"server.port\" = 1", 1, "keys are written without quotes"),
            ("server.port = @", 1, "unexpected character '@'"),
            (
                "auth.required = enable",
                1,
                "put strings in double quotes (\"enable\")",
            ),
            (
                "\n$HTTP[\"host\"] == \"x\" {\n}",
                2,
                "conditionals ($HTTP[...] { ... }, else) are not supported by cometbox",
            ),
            ("else {", 1, "not supported by cometbox"),
            ("}", 1, "blocks { ... } are not supported by cometbox"),
            (
                "globals {",
                1,
                "blocks { ... } are not supported by cometbox",
            ),
            (
                "var.dir = \"/x\"",
                1,
                "variables (var.dir) are not supported by cometbox",
            ),
            (
                "server.port = var.port",
                1,
                "variables (var.port) are not supported by cometbox",
            ),
            (
                "mailbox.url-prefix = env.HOME",
                1,
                "not supported by cometbox",
            ),
            (
                "\ninclude_shell \"cat x\"",
                2,
                "include_shell is not supported by cometbox",
            ),
            (
                "include \"*.conf\"",
                1,
                "wildcards in include are not supported by cometbox",
            ),
            (
                "include 5",
                1,
                "expected a file name in double quotes after include",
            ),
            ("server.port : 5", 1, "unexpected ':'"),
        ] {
            assert_err(text, line, needle);
        }
    }

    #[test]
    fn later_assignment_wins_with_a_warning() {
        let (c, warnings) = parse_with_warnings(
            "server.port = 1\nserver.port = 2\nserver.workers = 1\nserver.workers := 2\n",
            Path::new("d.conf"),
        )
        .unwrap();
        assert_eq!(c.server.port, 2);
        assert_eq!(c.server.workers, 2);
        // := replaces on purpose, so only the plain = is reported.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("d.conf:2: \"server.port\" is set again (first at d.conf:1)")
        );
    }

    #[test]
    fn include_is_relative_to_the_including_file() {
        let dir = TempDir::new("include");
        let main = dir.write(
            "main.conf",
            "server.port = 1\ninclude \"conf.d/mailbox.conf\"\nserver.workers = 2\n",
        );
        dir.write(
            "conf.d/mailbox.conf",
            "mailbox.poll-timeout = 7\ninclude \"more.conf\"\n",
        );
        dir.write(
            "conf.d/more.conf",
            "mailbox.cors-origins += ( \"https://a.example\" )\n",
        );
        let c = Config::load(&main).unwrap();
        assert_eq!(c.server.port, 1);
        assert_eq!(c.server.workers, 2);
        assert_eq!(c.mailbox.poll_timeout, Duration::from_secs(7));
        assert_eq!(c.mailbox.cors_origins, vec!["https://a.example"]);

        // parse_str resolves includes against the origin's directory too.
        let c = Config::parse_str(
            "include \"conf.d/mailbox.conf\"",
            &dir.0.join("virtual.conf"),
        )
        .unwrap();
        assert_eq!(c.mailbox.poll_timeout, Duration::from_secs(7));

        // An error inside an included file names that file and its line.
        dir.write("bad.conf", "\n\nserver.port = \"x\"\n");
        let e = Config::parse_str("include \"bad.conf\"", &dir.0.join("top.conf")).unwrap_err();
        assert_eq!(e.file(), dir.0.join("bad.conf"));
        assert_eq!(e.line(), Some(3));

        // A missing include names the include line and the resolved path.
        let e =
            Config::parse_str("\ninclude \"missing.conf\"", &dir.0.join("top.conf")).unwrap_err();
        assert_eq!(e.file(), dir.0.join("top.conf"));
        assert_eq!(e.line(), Some(2));
        assert!(e.message().contains("missing.conf"), "{e}");
    }

    #[test]
    fn include_cycle_is_an_error() {
        let dir = TempDir::new("cycle");
        let a = dir.write("a.conf", "server.port = 1\ninclude \"b.conf\"\n");
        dir.write("b.conf", "\n\ninclude \"a.conf\"\n");
        let e = Config::load(&a).unwrap_err();
        assert_eq!(e.file(), dir.0.join("b.conf"));
        assert_eq!(e.line(), Some(3));
        assert!(e.message().starts_with("include cycle: "), "{e}");
        assert!(e.message().contains("a.conf -> "), "{e}");
        assert!(e.message().contains("b.conf -> "), "{e}");

        let self_include = dir.write("self.conf", "include \"self.conf\"\n");
        let e = Config::load(&self_include).unwrap_err();
        assert!(e.message().starts_with("include cycle: "), "{e}");
    }

    #[test]
    fn include_depth_is_limited() {
        let dir = TempDir::new("depth");
        for i in 0..=MAX_INCLUDE_DEPTH {
            dir.write(
                &format!("{i}.conf"),
                &format!("include \"{}.conf\"\n", i + 1),
            );
        }
        dir.write(&format!("{}.conf", MAX_INCLUDE_DEPTH + 1), "");
        let e = Config::load(&dir.0.join("0.conf")).unwrap_err();
        assert!(e.message().contains("nested more than 16 deep"), "{e}");
        assert_eq!(
            e.file(),
            dir.0.join(format!("{}.conf", MAX_INCLUDE_DEPTH - 1))
        );
        // Exactly the limit is fine: 2.conf to 17.conf is 16 files.
        Config::load(&dir.0.join("2.conf")).unwrap();
    }

    #[test]
    fn unreadable_files() {
        let dir = TempDir::new("read");
        let e = Config::load(&dir.0.join("nope.conf")).unwrap_err();
        assert_eq!(e.line(), None);
        assert!(
            e.to_string().starts_with(&format!(
                "{}: cannot read config file",
                dir.0.join("nope.conf").display()
            )),
            "{e}"
        );
        let bad = dir.0.join("latin1.conf");
        std::fs::write(&bad, b"server.port = 1\n# caf\xe9\n").unwrap();
        let e = Config::load(&bad).unwrap_err();
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.message().contains("UTF-8"));
    }

    /// Every token class, a multi-line array with comments, `+=` and `:=`,
    /// and a non-ASCII comment, so prefixes end inside each of them.
    const SAMPLE: &str = "# cometbox — a sample\n\
        server.bind = \"127.0.0.1\"   # loopback\n\
        server.port = 8081\n\
        server.workers := \"2\"\n\
        mailbox.url-prefix = \"/box/\"\n\
        mailbox.url-prefix += \"m/\"\n\
        mailbox.backend-password = \"p\\\"w\\\\d\\tx#y\"\n\
        mailbox.backend-socket-mode = 0640\n\
        mailbox.cors-origins = (\n\
        \x20   \"https://a.example\",  # first\n\
        \x20   \"http://localhost:3000\",\n\
        )\n\
        auth.public-prefixes = ( \"public:\" )\n";

    /// The loader reads whole text, so instead of feeding it in pieces every
    /// prefix is parsed: each must give a config or an error pointing into
    /// the prefix, never a panic.
    #[test]
    fn every_prefix_parses_or_fails_cleanly() {
        let full = parse(SAMPLE).unwrap();
        assert_eq!(full.server.port, 8081);
        assert_eq!(full.mailbox.url_prefix, "/box/m/");
        assert_eq!(
            full.mailbox.backend_password.as_deref(),
            Some("p\"w\\d\tx#y")
        );
        assert_eq!(full.mailbox.cors_origins.len(), 2);
        for cut in (0..=SAMPLE.len()).filter(|&i| SAMPLE.is_char_boundary(i)) {
            let prefix = &SAMPLE[..cut];
            if let Err(e) = parse(prefix) {
                let lines = 1 + prefix.matches('\n').count();
                let line = e.line().unwrap_or_else(|| panic!("no line at {cut}: {e}"));
                assert!((1..=lines).contains(&line), "cut {cut}: {e}");
            }
        }
    }

    #[test]
    fn crlf_config_parses_the_same() {
        let crlf = SAMPLE.replace('\n', "\r\n");
        assert_eq!(parse(&crlf).unwrap(), parse(SAMPLE).unwrap());
        // Errors point at the same line either way.
        let bad = SAMPLE.replace("8081", "99999");
        let (lf, crlf) = (
            parse(&bad).unwrap_err(),
            parse(&bad.replace('\n', "\r\n")).unwrap_err(),
        );
        assert_eq!(lf.line(), crlf.line());
        assert_eq!(lf.message(), crlf.message());
    }
}
