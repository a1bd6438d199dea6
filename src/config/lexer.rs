//! Tokens of gateway.conf and the lexer that makes them. Newlines are tokens
//! (they end statements); comments and other blanks are skipped. Every token
//! carries the line it starts on, for error messages.

use std::path::Path;

use super::ConfigError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// A key or keyword: letters, digits, '_', '.', '-', not starting with a
    /// digit or '-'.
    Word(String),
    /// A double-quoted string, escapes resolved.
    Str(String),
    /// A whole number, kept as written so modes can be read as octal.
    Int(String),
    Assign,
    Append,
    /// lighttpd's `:=`: assign, replacing an earlier value on purpose.
    Replace,
    /// `=>`, lighttpd's key-value arrays (unsupported).
    Arrow,
    LParen,
    RParen,
    Comma,
    /// lighttpd's value concatenation (unsupported).
    Plus,
    /// Starts a lighttpd conditional (unsupported).
    Dollar,
    LBrace,
    RBrace,
    /// Ends a statement, except inside an array.
    Newline,
    Eof,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("the bare word {w}"),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Int(t) => format!("the number {t}"),
            Tok::Assign => "'='".into(),
            Tok::Append => "'+='".into(),
            Tok::Replace => "':='".into(),
            Tok::Arrow => "'=>'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Plus => "'+'".into(),
            Tok::Dollar => "'$'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    pub(super) file: &'a Path,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str, file: &'a Path) -> Self {
        Lexer {
            src,
            pos: 0,
            line: 1,
            file,
        }
    }

    pub(super) fn err(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, line, message)
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn eat(&mut self, want: char) -> bool {
        let hit = self.peek() == Some(want);
        if hit {
            self.bump();
        }
        hit
    }

    /// The next token and the line it starts on.
    pub(super) fn next(&mut self) -> Result<(Tok, usize), ConfigError> {
        self.skip_blanks_and_comments();
        let line = self.line;
        let Some(c) = self.peek() else {
            return Ok((Tok::Eof, line));
        };
        let tok = match c {
            '\n' => {
                self.bump();
                Tok::Newline
            }
            '"' => self.string()?,
            '-' | '0'..='9' => self.number()?,
            c if c.is_ascii_alphabetic() || c == '_' => self.word(),
            '=' | '+' | ':' => self.operator(c)?,
            c => self.punctuation(c)?,
        };
        Ok((tok, line))
    }

    /// Skips spaces, tabs and comments, but not newlines: they end statements.
    fn skip_blanks_and_comments(&mut self) {
        loop {
            match self.peek() {
                // '\r' too, so files with CRLF line ends read the same.
                Some(' ' | '\t' | '\r') => {
                    self.bump();
                }
                Some('#') => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    /// `=`, `=>`, `+=`, `+` and `:=`, which all start with `=`, `+` or `:`.
    fn operator(&mut self, first: char) -> Result<Tok, ConfigError> {
        let line = self.line;
        self.bump();
        Ok(match first {
            '=' if self.eat('>') => Tok::Arrow,
            '=' => Tok::Assign,
            '+' if self.eat('=') => Tok::Append,
            '+' => Tok::Plus,
            _ if self.eat('=') => Tok::Replace,
            _ => {
                return Err(self.err(line, "unexpected ':' (assignment is '=', '+=' or ':=')"));
            }
        })
    }

    /// The one-character tokens; anything else is not part of the syntax.
    fn punctuation(&mut self, c: char) -> Result<Tok, ConfigError> {
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '$' => Tok::Dollar,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            other => return Err(self.err(self.line, format!("unexpected character {other:?}"))),
        };
        self.bump();
        Ok(tok)
    }

    fn string(&mut self) -> Result<Tok, ConfigError> {
        let start = self.line;
        self.bump(); // the opening quote
        let mut s = String::new();
        loop {
            match self.bump() {
                // A missing quote would otherwise swallow the rest of the
                // file, so strings end on their line.
                None | Some('\n') => return Err(self.unterminated(start)),
                Some('"') => return Ok(Tok::Str(s)),
                Some('\\') => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    None | Some('\n') => return Err(self.unterminated(start)),
                    Some(c) => {
                        return Err(self.err(
                            self.line,
                            format!(
                                "unknown escape \"\\{c}\" in a string: the escapes are \\\" \
                                \\\\ \\n \\t"
                            ),
                        ));
                    }
                },
                Some(c) => s.push(c),
            }
        }
    }

    fn unterminated(&self, start: usize) -> ConfigError {
        self.err(
            start,
            "unterminated string: the closing '\"' is missing (strings cannot span lines)",
        )
    }

    fn number(&mut self) -> Result<Tok, ConfigError> {
        let line = self.line;
        let start = self.pos;
        if self.eat('-') && !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.err(line, "'-' must be followed by digits"));
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek().is_some_and(is_word_char) {
            while self.peek().is_some_and(is_word_char) {
                self.bump();
            }
            return Err(self.err(
                line,
                format!(
                    "malformed number {:?}: write whole decimal numbers without units (the unit \
                    of each key is in docs/configuration.md)",
                    &self.src[start..self.pos]
                ),
            ));
        }
        Ok(Tok::Int(self.src[start..self.pos].to_string()))
    }

    fn word(&mut self) -> Tok {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.bump();
        }
        Tok::Word(self.src[start..self.pos].to_string())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_util::{assert_err, parse};

    #[test]
    fn string_escapes() {
        let c = parse(r#"mailbox.backend-password = "a\tb\nc""#).unwrap();
        assert_eq!(c.mailbox.backend_password.as_deref(), Some("a\tb\nc"));
        assert_err(
            "\nmailbox.backend-password = \"a\\qb\"",
            2,
            "unknown escape \"\\q\"",
        );
    }

    #[test]
    fn hash_inside_strings_is_not_a_comment() {
        let c = parse("mailbox.backend-password = \"pa#ss\" # the real comment \"x\"\n").unwrap();
        assert_eq!(c.mailbox.backend_password.as_deref(), Some("pa#ss"));
        // The '#' reaches the URL prefix's own check, so it was not taken
        // for a comment.
        assert_err(
            "mailbox.url-prefix = \"/m#x/\" # comment",
            1,
            "cannot appear in a URL path",
        );
    }

    #[test]
    fn crlf_line_ends() {
        let c = parse("server.port = 81\r\nmailbox.cors-origins = (\r\n \"*\",\r\n)\r\n").unwrap();
        assert_eq!(c.server.port, 81);
        assert_eq!(c.mailbox.cors_origins, vec!["*"]);
    }
}
