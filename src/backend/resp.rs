//! RESP, the Redis wire protocol: an incremental request decoder and the reply
//! encoders. Pure code: bytes in, commands or a protocol error out; replies are
//! appended to a `Vec<u8>`. The framing rules, limits and error texts are
//! Redis' own (`networking.c`), because client libraries are written against
//! Redis and some match on its messages.

use std::borrow::Cow;
use std::fmt;

/// Largest multibulk count accepted (`*N`). Redis has used 1 M for a decade;
/// no command of ours needs more, and a larger claim is hostile or corrupt.
pub const MAX_MULTIBULK_LEN: i64 = 1024 * 1024;

/// Largest bulk length accepted at all: Redis' `proto-max-bulk-len` default.
/// Anything between `Limits::max_bulk` and this is skipped as it arrives and
/// answered with an error, so one oversized PUBLISH costs the backend that
/// message, not its connection and the pipelined commands behind it.
pub const MAX_BULK_LEN: i64 = 512 * 1024 * 1024;

/// Longest inline command line: Redis' `PROTO_INLINE_MAX_SIZE`. It also bounds
/// what the caller buffers while waiting for a newline.
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// Digits (with sign) allowed in a `*N` or `$N` line. An i64 never needs more
/// than 20, so a longer line can never parse: fail at once rather than buffer
/// up to 64 KiB of it as Redis does (Redis replies with the same text).
const MAX_LEN_DIGITS: usize = 20;

/// What one argument costs beyond its bytes while a command is read: its
/// end offset in [`Args`]. (As a `Vec` of its own, a 1-byte argument cost 56
/// bytes, and an unfinished `*1048576` of them held 56 MB.)
pub const ARG_OVERHEAD: usize = std::mem::size_of::<usize>();

/// Largest argument buffer the decoder keeps for the next command; a burst
/// of big PUBLISHes should not pin their memory on an idle connection.
const RECYCLE_MAX: usize = 64 * 1024;

/// The arguments of one command in one buffer, with the end of each: a
/// command costs two allocations however many arguments it has, and a
/// 1-byte argument 9 bytes. `args[i]` is the i-th argument's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Args {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| &self[i])
    }

    pub fn push(&mut self, arg: &[u8]) {
        self.bytes.extend_from_slice(arg);
        self.ends.push(self.bytes.len());
    }

    /// Keeps the first `n` arguments.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.ends.truncate(n);
            self.bytes.truncate(self.ends.last().copied().unwrap_or(0));
        }
    }

    /// Memory held, for the decoder's cap: bytes plus an end per argument.
    fn held(&self) -> usize {
        self.bytes.len() + self.len() * ARG_OVERHEAD
    }
}

impl std::ops::Index<usize> for Args {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        match self.get(i) {
            Some(arg) => arg,
            None => panic!("argument {i} of {}", self.len()),
        }
    }
}

impl<'a> FromIterator<&'a [u8]> for Args {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(iter: I) -> Args {
        let mut args = Args::default();
        for arg in iter {
            args.push(arg);
        }
        args
    }
}

/// Room beside one maximal argument in a command's memory cap: the name, a
/// mailbox, or a DEL / PUBSUB NUMSUB of some ten thousand names.
pub const COMMAND_SLACK: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest argument kept: `mailbox.max-message-size`.
    pub max_bulk: usize,
    /// Most memory the arguments of one command may hold while it arrives,
    /// counting [`ARG_OVERHEAD`] per argument (Redis'
    /// `client-query-buffer-limit`): one maximal PUBLISH fits, a million
    /// tiny arguments do not. The buffers double as they grow, so what is
    /// allocated is at most twice this.
    pub max_command: usize,
}

impl Limits {
    /// Limits for arguments of at most `max_bulk` bytes, the command cap
    /// derived from it.
    pub fn new(max_bulk: usize) -> Limits {
        Limits {
            max_bulk,
            max_command: max_bulk.saturating_add(COMMAND_SLACK),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole command yet. The first `consumed` bytes were used up (parsed
    /// into the decoder, or skipped payload): drop them, keep the rest, read
    /// more and call again.
    NeedMore { consumed: usize },
    /// One whole command; `args[0]` is the command name as sent.
    Command { args: Args, consumed: usize },
    /// A whole command had an argument longer than `Limits::max_bulk`: it was
    /// skipped (possibly over several calls, so the caller never buffers it)
    /// and the connection is still in step. `name` is the command name, empty
    /// if the name itself was the oversized argument; `len` is the first
    /// oversized argument's length. Answer `-ERR` and go on.
    TooLarge {
        name: Vec<u8>,
        len: usize,
        consumed: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Malformed input. Display gives Redis' text: reply
    /// `-ERR Protocol error: {self}` and close the connection.
    Malformed(Cow<'static, str>),
    /// A command named `POST` or `Host:`: somebody is sending HTTP to the
    /// backend socket (cross-protocol scripting, as Redis guards against).
    /// Close without a reply and log a warning.
    CrossProtocol,
}

impl ProtocolError {
    pub fn is_cross_protocol(&self) -> bool {
        matches!(self, ProtocolError::CrossProtocol)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Malformed(text) => f.write_str(text),
            ProtocolError::CrossProtocol => {
                f.write_str("a command named POST or Host: (HTTP sent to the RESP socket?)")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

fn malformed(text: &'static str) -> ProtocolError {
    ProtocolError::Malformed(Cow::Borrowed(text))
}

/// Where the decoder stands in the input. Each variant says what moves it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands. A whole `*N` line moves to `BulkHeader` (or stays
    /// here for `N <= 0`); a whole inline line yields a command and stays.
    Idle,
    /// Inside a multibulk, expecting `$len`. A whole line moves to `BulkData`,
    /// or to `Skip` when `len` is over `Limits::max_bulk`.
    BulkHeader,
    /// Waiting until `len` bytes plus CRLF are all in the caller's buffer; then
    /// the argument is copied out and we go to `BulkHeader` or finish.
    BulkData(usize),
    /// Dropping an oversized argument as it arrives: this many bytes to go,
    /// then CRLF, then `BulkHeader` or finish.
    Skip(usize),
}

pub struct Decoder {
    limits: Limits,
    state: State,
    /// Arguments of the multibulk being read. Grows as arguments arrive, never
    /// sized from the `*N` claim. Once an argument is oversized, only the name
    /// is kept.
    args: Args,
    /// Index of the next argument of the multibulk; `count` is its `N`.
    index: usize,
    count: usize,
    /// Length of the first oversized argument of this multibulk.
    oversized: Option<usize>,
    /// Memory `args` holds by the [`Limits::max_command`] count: bytes plus
    /// [`ARG_OVERHEAD`] per argument, including the one being awaited.
    held: usize,
    /// Bytes of an unfinished inline line already searched for `\n`, so a
    /// line trickling in is not rescanned from its start on every read.
    inline_scanned: usize,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            state: State::Idle,
            args: Args::default(),
            index: 0,
            count: 0,
            oversized: None,
            held: 0,
            inline_scanned: 0,
        }
    }

    /// Takes back a command's arguments once it has run, so the next
    /// command reuses their buffers instead of allocating.
    pub fn recycle(&mut self, mut args: Args) {
        if self.args.bytes.capacity() == 0 && args.bytes.capacity() <= RECYCLE_MAX {
            args.truncate(0);
            self.args = args;
        }
    }

    /// Memory the unfinished command holds (see [`Limits::max_command`]),
    /// for a cap shared by many connections.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Decodes the next command from `buf`, the unconsumed input. After an
    /// error the decoder is out of step with the stream: close the connection.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, ProtocolError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            let need_more = Ok(Decoded::NeedMore { consumed: pos });
            match self.state {
                State::Idle => {
                    let Some(&first) = rest.first() else {
                        return need_more;
                    };
                    if first != b'*' {
                        let Some((args, used)) = self.inline_line(rest)? else {
                            return need_more;
                        };
                        pos += used;
                        if args.is_empty() {
                            continue; // an empty line is skipped, as in Redis
                        }
                        return self.finish_inline(args, pos);
                    }
                    let Some((n, used)) = length_line(rest, "invalid multibulk length")? else {
                        return need_more;
                    };
                    if n > MAX_MULTIBULK_LEN {
                        return Err(malformed("invalid multibulk length"));
                    }
                    pos += used;
                    if n <= 0 {
                        continue; // `*0`, `*-1` (and any `*-N`) carry no command, as in Redis
                    }
                    self.count = n as usize; // 1..=MAX_MULTIBULK_LEN
                    self.index = 0;
                    self.oversized = None;
                    self.held = 0;
                    self.state = State::BulkHeader;
                }
                State::BulkHeader => {
                    let Some(&first) = rest.first() else {
                        return need_more;
                    };
                    if first != b'$' {
                        return Err(ProtocolError::Malformed(Cow::Owned(format!(
                            "expected '$', got '{}'",
                            printable(first)
                        ))));
                    }
                    let Some((n, used)) = length_line(rest, "invalid bulk length")? else {
                        return need_more;
                    };
                    if !(0..=MAX_BULK_LEN).contains(&n) {
                        return Err(malformed("invalid bulk length"));
                    }
                    pos += used;
                    let len = n as usize; // 0..=512 MiB
                    if len > self.limits.max_bulk {
                        if self.oversized.is_none() {
                            self.oversized = Some(len);
                            self.args.truncate(1); // keep only the name
                            self.held = self.args.held();
                        }
                        self.state = State::Skip(len);
                    } else {
                        if self.oversized.is_none() {
                            self.charge(len)?;
                        }
                        self.state = State::BulkData(len);
                    }
                }
                State::BulkData(len) => {
                    // `len` ≤ 512 MiB, so `len + 2` cannot overflow.
                    if rest.len() < len + 2 {
                        return need_more;
                    }
                    if &rest[len..len + 2] != b"\r\n" {
                        return Err(malformed("expected CRLF after bulk data"));
                    }
                    if self.oversized.is_none() {
                        self.args.push(&rest[..len]);
                    }
                    pos += len + 2;
                    if let Some(done) = self.next_argument(pos) {
                        return done;
                    }
                }
                State::Skip(0) => {
                    if rest.len() < 2 {
                        return need_more;
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(malformed("expected CRLF after bulk data"));
                    }
                    pos += 2;
                    if let Some(done) = self.next_argument(pos) {
                        return done;
                    }
                }
                State::Skip(left) => {
                    let take = left.min(rest.len());
                    pos += take;
                    self.state = State::Skip(left - take);
                    if take < left {
                        return Ok(Decoded::NeedMore { consumed: pos });
                    }
                }
            }
        }
    }

    /// Counts an argument of `len` bytes against [`Limits::max_command`]
    /// before it is buffered.
    fn charge(&mut self, len: usize) -> Result<(), ProtocolError> {
        let held = self.held.saturating_add(len + ARG_OVERHEAD); // len ≤ 512 MiB
        if held > self.limits.max_command {
            return Err(ProtocolError::Malformed(Cow::Owned(format!(
                "too big multibulk request: argument {} of {} would hold {held} bytes, over the {} allowed",
                self.index + 1,
                self.count,
                self.limits.max_command
            ))));
        }
        self.held = held;
        Ok(())
    }

    /// One argument of the multibulk is done; returns the command if it was
    /// the last.
    fn next_argument(&mut self, pos: usize) -> Option<Result<Decoded, ProtocolError>> {
        self.index += 1;
        if self.index < self.count {
            self.state = State::BulkHeader;
            return None;
        }
        self.state = State::Idle;
        self.held = 0;
        let args = std::mem::take(&mut self.args);
        let oversized = self.oversized.take();
        Some(self.finish(args, oversized, pos))
    }

    fn finish(
        &self,
        args: Args,
        oversized: Option<usize>,
        consumed: usize,
    ) -> Result<Decoded, ProtocolError> {
        if args.get(0).is_some_and(is_http) {
            return Err(ProtocolError::CrossProtocol);
        }
        Ok(match oversized {
            None => Decoded::Command { args, consumed },
            Some(len) => Decoded::TooLarge {
                name: args.get(0).unwrap_or_default().to_vec(),
                len,
                consumed,
            },
        })
    }

    fn finish_inline(
        &self,
        mut words: Vec<Vec<u8>>,
        consumed: usize,
    ) -> Result<Decoded, ProtocolError> {
        let max = self.limits.max_bulk;
        let oversized = words.iter().map(Vec::len).find(|&len| len > max);
        if words[0].len() > max {
            words[0].clear(); // same as multibulk: an oversized name is not kept
        }
        let args = words.iter().map(Vec::as_slice).collect();
        self.finish(args, oversized, consumed)
    }

    /// Reads one inline line from `rest` (which does not start with `*`):
    /// Ok(None) until the newline is there.
    fn inline_line(&mut self, rest: &[u8]) -> Result<Option<InlineLine>, ProtocolError> {
        // A line of MAX_INLINE_LEN bytes plus its `\n` is allowed; whether a
        // line is too long does not depend on how it was split into reads.
        let window = &rest[..rest.len().min(MAX_INLINE_LEN + 1)];
        let from = self.inline_scanned.min(window.len());
        let Some(newline) = window[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| from + i)
        else {
            if rest.len() > MAX_INLINE_LEN {
                return Err(malformed("too big inline request"));
            }
            self.inline_scanned = window.len();
            return Ok(None);
        };
        self.inline_scanned = 0;
        let mut line = &rest[..newline];
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        match split_args(line) {
            Some(args) => Ok(Some((args, newline + 1))),
            None => Err(malformed("unbalanced quotes in request")),
        }
    }
}

/// An inline command's arguments and the bytes its line used.
type InlineLine = (Vec<Vec<u8>>, usize);

/// Parses a `*N` or `$N` line at the start of `rest`: Ok(None) until the CRLF
/// is there, else the number and the bytes used.
fn length_line(rest: &[u8], error: &'static str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let body = &rest[1..];
    let window = &body[..body.len().min(MAX_LEN_DIGITS + 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if body.len() > MAX_LEN_DIGITS {
            return Err(malformed(error));
        }
        return Ok(None);
    };
    if body.len() < cr + 2 {
        return Ok(None);
    }
    // Redis assumes the byte after `\r` is `\n`; we check it.
    if body[cr + 1] != b'\n' {
        return Err(malformed(error));
    }
    match parse_integer(&body[..cr]) {
        Some(n) => Ok(Some((n, 1 + cr + 2))),
        None => Err(malformed(error)),
    }
}

/// Parses a decimal i64 the way Redis' `string2ll` does: optional `-`, no
/// `+`, no spaces, no leading zeros, no `-0`, no overflow.
pub fn parse_integer(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        // -(2^63) is the one magnitude that fits only as a negative.
        if value <= i64::MAX as u64 + 1 {
            Some((value as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(value).ok()
    }
}

/// Redis' cross-protocol guard: HTTP's `POST /x HTTP/1.1` and `Host: x`
/// lines parse as inline commands named `POST` and `Host:`.
fn is_http(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

/// The byte of an "expected '$', got 'X'" message. Redis writes it raw; we
/// escape what is not printable ASCII so the message stays valid UTF-8.
fn printable(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        char::from(b).to_string()
    } else {
        format!("\\x{b:02x}")
    }
}

/// Splits an inline command line exactly like Redis' `sdssplitargs`: blanks
/// separate arguments; `"…"` understands `\n \r \t \b \a \xHH` and `\<any>`;
/// `'…'` is literal except `\'`; a closing quote must be followed by a blank or
/// the end. None for unbalanced quotes. Like the C original, the line ends at
/// the first NUL byte.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // The C code reads a NUL-terminated string; 0 past the end mirrors that.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let is_blank = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while is_blank(at(i)) {
            i += 1;
        }
        if at(i) == 0 {
            return Some(args);
        }
        let mut current = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(i);
            if in_double {
                if c == b'\\'
                    && at(i + 1) == b'x'
                    && at(i + 2).is_ascii_hexdigit()
                    && at(i + 3).is_ascii_hexdigit()
                {
                    current.push(hex_value(at(i + 2)) * 16 + hex_value(at(i + 3)));
                    i += 3;
                } else if c == b'\\' && at(i + 1) != 0 {
                    i += 1;
                    current.push(match at(i) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(i + 1) != 0 && !is_blank(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(i + 1) == b'\'' {
                    i += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(i + 1) != 0 && !is_blank(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            i += 1;
                        }
                        break;
                    }
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => current.push(c),
                }
            }
            i += 1;
        }
        args.push(current);
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

// ----- encoders ------------------------------------------------------------
//
// `proto` is the connection's RESP version, 2 or 3 (set by HELLO). Where RESP3
// has a type RESP2 lacks, the RESP2 form is what Redis sends.

/// `+text`. CR and LF would end the line early, so they become spaces.
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_line_text(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-ERR text`: `msg` starts with the error code (`ERR`, `NOAUTH`, …). CR and
/// LF become spaces, as in Redis' `addReplyErrorFormat`.
pub fn error(out: &mut Vec<u8>, msg: &str) {
    error_bytes(out, msg.as_bytes());
}

/// [`error`] for a message that may hold the client's bytes.
pub fn error_bytes(out: &mut Vec<u8>, msg: &[u8]) {
    let msg = msg.strip_prefix(b"-").unwrap_or(msg);
    out.push(b'-');
    push_line_text(out, msg);
    out.extend_from_slice(b"\r\n");
}

fn push_line_text(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// `:n`
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$len` and the bytes.
pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    push_decimal(out, data.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// RESP3 `_`, RESP2 the null bulk `$-1`.
pub fn null(out: &mut Vec<u8>, proto: u8) {
    out.extend_from_slice(if proto >= 3 { b"_\r\n" } else { b"$-1\r\n" });
}

/// `*n`: `n` replies follow.
pub fn array_len(out: &mut Vec<u8>, n: usize) {
    header(out, b'*', n);
}

/// RESP3 `%n`; RESP2 a flat array of `2n` (Redis' `addReplyMapLen`). `n`
/// key/value pairs follow.
pub fn map_len(out: &mut Vec<u8>, proto: u8, n: usize) {
    if proto >= 3 {
        header(out, b'%', n);
    } else {
        header(out, b'*', n.saturating_mul(2));
    }
}

/// RESP3 `=len\r\nfmt:text`; RESP2 a bulk of `text` alone. `format` is
/// three bytes, `txt` or `mkd`.
pub fn verbatim(out: &mut Vec<u8>, proto: u8, format: &str, text: &[u8]) {
    debug_assert_eq!(format.len(), 3, "verbatim formats are three bytes");
    if proto < 3 {
        return bulk(out, text);
    }
    header(out, b'=', format.len() + 1 + text.len());
    out.extend_from_slice(format.as_bytes());
    out.push(b':');
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// RESP3 `#t`/`#f`; RESP2 `:1`/`:0`, as Redis' `addReplyBool`.
pub fn boolean(out: &mut Vec<u8>, proto: u8, value: bool) {
    out.extend_from_slice(match (proto >= 3, value) {
        (true, true) => b"#t\r\n",
        (true, false) => b"#f\r\n",
        (false, true) => b":1\r\n",
        (false, false) => b":0\r\n",
    });
}

/// RESP3 `>n` (out of band); RESP2 `*n`, as Redis sends pub/sub messages.
pub fn push_len(out: &mut Vec<u8>, proto: u8, n: usize) {
    header(out, if proto >= 3 { b'>' } else { b'*' }, n);
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    push_u64(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a caller sees, without the `consumed` counts (which depend on how
    /// the input was split).
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Command(Vec<Vec<u8>>),
        TooLarge(Vec<u8>, usize),
        Error(ProtocolError),
    }

    fn cmd(args: &[&str]) -> Event {
        Event::Command(args.iter().map(|a| a.as_bytes().to_vec()).collect())
    }

    fn err(text: &str) -> Event {
        Event::Error(ProtocolError::Malformed(Cow::Owned(text.to_string())))
    }

    /// A caller as `BackendConn` is one: append what arrived, decode until
    /// NeedMore, drop what was consumed. Returns the events, the bytes left
    /// buffered and the most it ever buffered.
    struct Caller {
        decoder: Decoder,
        buf: Vec<u8>,
        events: Vec<Event>,
        max_buffered: usize,
        failed: bool,
    }

    impl Caller {
        fn new(max_bulk: usize) -> Self {
            Caller::with_limits(Limits::new(max_bulk))
        }

        fn with_limits(limits: Limits) -> Self {
            Caller {
                decoder: Decoder::new(limits),
                buf: Vec::new(),
                events: Vec::new(),
                max_buffered: 0,
                failed: false,
            }
        }

        fn feed(&mut self, chunk: &[u8]) {
            if self.failed {
                return;
            }
            self.buf.extend_from_slice(chunk);
            self.max_buffered = self.max_buffered.max(self.buf.len());
            loop {
                let consumed = match self.decoder.decode(&self.buf) {
                    Ok(Decoded::NeedMore { consumed }) => {
                        self.buf.drain(..consumed);
                        return;
                    }
                    Ok(Decoded::Command { args, consumed }) => {
                        self.events
                            .push(Event::Command(args.iter().map(<[u8]>::to_vec).collect()));
                        consumed
                    }
                    Ok(Decoded::TooLarge {
                        name,
                        len,
                        consumed,
                    }) => {
                        self.events.push(Event::TooLarge(name, len));
                        consumed
                    }
                    Err(e) => {
                        self.events.push(Event::Error(e));
                        self.failed = true;
                        return;
                    }
                };
                assert!(
                    consumed > 0 && consumed <= self.buf.len(),
                    "consumed {consumed}"
                );
                self.buf.drain(..consumed);
            }
        }
    }

    fn run(max_bulk: usize, chunks: &[&[u8]]) -> (Vec<Event>, usize) {
        let mut caller = Caller::new(max_bulk);
        for chunk in chunks {
            caller.feed(chunk);
        }
        (caller.events, caller.buf.len())
    }

    /// Feeds `input` whole, split in two at every offset, and byte by byte;
    /// every way must give `expected`, and leave `left` bytes buffered.
    fn check_with(max_bulk: usize, input: &[u8], expected: &[Event], left: usize) {
        let (events, rest) = run(max_bulk, &[input]);
        assert_eq!(
            events,
            expected,
            "whole input {:?}",
            String::from_utf8_lossy(input)
        );
        if !matches!(expected.last(), Some(Event::Error(_))) {
            assert_eq!(rest, left, "bytes left buffered");
        }
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let (events, _) = run(max_bulk, &[a, b]);
            assert_eq!(events, expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (events, _) = run(max_bulk, &bytes);
        assert_eq!(events, expected, "byte by byte");
    }

    fn check(input: &[u8], expected: &[Event]) {
        check_with(1024, input, expected, 0);
    }

    #[test]
    fn multibulk_command() {
        check(
            b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nalice\r\n$11\r\n{\"n\":\"\r\n\"}x\r\n",
            &[cmd(&["PUBLISH", "alice", "{\"n\":\"\r\n\"}x"])],
        );
        check(b"*1\r\n$0\r\n\r\n", &[cmd(&[""])]);
    }

    #[test]
    fn binary_payload_is_kept_whole() {
        let mut input = b"*2\r\n$4\r\nECHO\r\n$256\r\n".to_vec();
        let payload: Vec<u8> = (0..=255).collect();
        input.extend_from_slice(&payload);
        input.extend_from_slice(b"\r\n");
        check(&input, &[Event::Command(vec![b"ECHO".to_vec(), payload])]);
    }

    #[test]
    fn pipeline_of_mixed_multibulk_and_inline() {
        let input = b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n\
            PING\r\n\
            *0\r\n*-1\r\n\r\n  \t \r\n\n\
            PUBLISH  \"a b\" 'c\\'d' \"\\x41\\n\\t\\\\\\\"\"\n\
            *1\r\n$4\r\nQUIT\r\n\
            client setinfo lib-name redis-py\r\n";
        check(
            input,
            &[
                cmd(&["PING", "hi"]),
                cmd(&["PING"]),
                cmd(&["PUBLISH", "a b", "c'd", "A\n\t\\\""]),
                cmd(&["QUIT"]),
                cmd(&["client", "setinfo", "lib-name", "redis-py"]),
            ],
        );
    }

    #[test]
    fn partial_command_waits() {
        check_with(1024, b"*2\r\n$4\r\nPING\r\n$2\r\nh", &[], 1);
        check_with(1024, b"PING", &[], 4);
        check_with(1024, b"*2\r\n$4\r\nPING\r\n$2\r\n", &[], 0);
    }

    #[test]
    fn inline_splitting_like_sdssplitargs() {
        let split = |s: &[u8]| {
            split_args(s).map(|v| {
                v.into_iter()
                    .map(|a| String::from_utf8(a).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            split(b"  a  b\tc "),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(split(b""), Some(vec![]));
        assert_eq!(
            split(b"a\"b c\"d"),
            None,
            "closing quote must be followed by a blank"
        );
        assert_eq!(
            split(b"a\"b c\" d"),
            Some(vec!["ab c".into(), "d".into()]),
            "quote opened mid-token"
        );
        assert_eq!(
            split(b"\"\\x4a\\x4B\\xzz\\q\""),
            Some(vec!["JKxzzq".into()])
        );
        assert_eq!(split(b"\"\\b\\a\\r\""), Some(vec!["\x08\x07\r".into()]));
        assert_eq!(split(b"'a\\nb' ''"), Some(vec!["a\\nb".into(), "".into()]));
        assert_eq!(split(b"'it\\'s'"), Some(vec!["it's".into()]));
        assert_eq!(split(b"\"abc"), None);
        assert_eq!(split(b"'abc"), None);
        assert_eq!(split(b"'abc'x"), None);
        assert_eq!(split(b"\"abc\\"), None);
        assert_eq!(
            split(b"a\x0bb"),
            Some(vec!["a\x0bb".into()]),
            "VT only separates between tokens"
        );
        assert_eq!(
            split(b"a b\0c d"),
            Some(vec!["a".into(), "b".into()]),
            "a NUL ends the line"
        );
    }

    #[test]
    fn every_protocol_error_text() {
        let cases: &[(&[u8], &str)] = &[
            (b"*abc\r\n", "invalid multibulk length"),
            (b"*\r\n", "invalid multibulk length"),
            (b"*+1\r\n", "invalid multibulk length"),
            (b"*01\r\n", "invalid multibulk length"),
            (b"*1\rx", "invalid multibulk length"),
            (b"*1048577\r\n", "invalid multibulk length"),
            (b"*99999999999999999999\r\n", "invalid multibulk length"),
            (b"*123456789012345678901234", "invalid multibulk length"),
            (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
            (b"*1\r\n\r\n", "expected '$', got '\\x0d'"),
            (b"*1\r\n\x01", "expected '$', got '\\x01'"),
            (b"*2\r\n$4\r\nPING\r\n:1\r\n", "expected '$', got ':'"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$-2\r\n", "invalid bulk length"),
            (b"*1\r\n$x\r\n", "invalid bulk length"),
            (b"*1\r\n$536870913\r\n", "invalid bulk length"),
            (b"*1\r\n$9999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$123456789012345678901234", "invalid bulk length"),
            (b"*1\r\n$4\r\nPINGxx", "expected CRLF after bulk data"),
            (b"*1\r\n$4\r\nPING\n\r", "expected CRLF after bulk data"),
            (b"PING \"unterminated\r\n", "unbalanced quotes in request"),
            (b"PING 'x'y\n", "unbalanced quotes in request"),
        ];
        for &(input, text) in cases {
            check(input, &[err(text)]);
        }
        // Missing CRLF after a skipped oversized bulk.
        let mut input = b"*2\r\n$4\r\nECHO\r\n$2000\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 2002]);
        check(&input, &[err("expected CRLF after bulk data")]);
        // Text before the error still comes out.
        check(
            b"PING\r\n*x\r\n",
            &[cmd(&["PING"]), err("invalid multibulk length")],
        );
    }

    #[test]
    fn display_gives_redis_text() {
        let e = Decoder::new(Limits::new(10))
            .decode(b"*1\r\n$x\r\n")
            .unwrap_err();
        assert_eq!(
            format!("Protocol error: {e}"),
            "Protocol error: invalid bulk length"
        );
        assert!(!e.is_cross_protocol());
    }

    #[test]
    fn inline_size_limit() {
        let mut line = vec![b'a'; MAX_INLINE_LEN];
        line.push(b'\n');
        let (events, _) = run(MAX_INLINE_LEN, &[&line]);
        assert_eq!(events, [Event::Command(vec![vec![b'a'; MAX_INLINE_LEN]])]);

        let too_long = vec![b'a'; MAX_INLINE_LEN + 1];
        let (events, _) = run(MAX_INLINE_LEN, &[&too_long]);
        assert_eq!(events, [err("too big inline request")]);
        // The same, arriving in pieces, newline too late.
        let mut caller = Caller::new(MAX_INLINE_LEN);
        for chunk in too_long.chunks(1000) {
            caller.feed(chunk);
        }
        caller.feed(b"\n");
        assert_eq!(caller.events, [err("too big inline request")]);
        // A shorter, unfinished line just waits.
        let (events, left) = run(MAX_INLINE_LEN, &[&too_long[..MAX_INLINE_LEN]]);
        assert_eq!((events, left), (vec![], MAX_INLINE_LEN));
    }

    #[test]
    fn inline_line_is_not_rescanned() {
        // Resumed scanning must still find the newline and the right bytes.
        let mut caller = Caller::new(1024);
        for chunk in [&b"PUB"[..], b"LISH a", b" b", b"\r", b"\nPING\r\n"] {
            caller.feed(chunk);
        }
        assert_eq!(caller.events, [cmd(&["PUBLISH", "a", "b"]), cmd(&["PING"])]);
    }

    #[test]
    fn cross_protocol_guard() {
        let post = || Event::Error(ProtocolError::CrossProtocol);
        check(b"POST /mailbox/x HTTP/1.1\r\nHost: a\r\n\r\n", &[post()]);
        check(
            b"GET /mailbox/x HTTP/1.1\r\nhost: a\r\n\r\n",
            &[cmd(&["GET", "/mailbox/x", "HTTP/1.1"]), post()],
        );
        check(b"*1\r\n$4\r\npost\r\n", &[post()]);
        check(b"*2\r\n$5\r\nHOST:\r\n$1\r\nx\r\n", &[post()]);
        check(b"POSTS\r\nHost\r\n", &[cmd(&["POSTS"]), cmd(&["Host"])]);
        assert!(ProtocolError::CrossProtocol.is_cross_protocol());
    }

    #[test]
    fn too_large_is_skipped_and_reported() {
        let mut input = b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nalice\r\n$20\r\n".to_vec();
        input.extend_from_slice(b"0123456789abcdefghij\r\n");
        input
            .extend_from_slice(b"*3\r\n$25\r\n0123456789012345678901234\r\n$1\r\na\r\n$1\r\nb\r\n");
        input.extend_from_slice(b"PUBLISH a 0123456789abcdefghijklmno\r\n");
        input.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$1\r\na\r\n$1\r\nb\r\n");
        check_with(
            10,
            &input,
            &[
                Event::TooLarge(b"PUBLISH".to_vec(), 20),
                Event::TooLarge(Vec::new(), 25),
                Event::TooLarge(b"PUBLISH".to_vec(), 25),
                cmd(&["PUBLISH", "a", "b"]),
            ],
            0,
        );
    }

    #[test]
    fn too_large_payload_is_never_buffered() {
        let max_bulk = 64 * 1024;
        let len = 10 * 1024 * 1024;
        let mut caller = Caller::new(max_bulk);
        caller.feed(format!("*3\r\n$7\r\nPUBLISH\r\n$5\r\nalice\r\n${len}\r\n").as_bytes());
        let piece = vec![b'x'; 1500];
        let mut sent = 0;
        while sent < len {
            let n = piece.len().min(len - sent);
            caller.feed(&piece[..n]);
            sent += n;
            assert!(
                caller.buf.len() <= 4096,
                "caller holds {} bytes",
                caller.buf.len()
            );
        }
        caller.feed(b"\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            caller.events,
            [Event::TooLarge(b"PUBLISH".to_vec(), len), cmd(&["PING"])]
        );
        assert!(
            caller.max_buffered <= 4096,
            "caller held {} bytes",
            caller.max_buffered
        );
        assert!(caller.buf.is_empty());
    }

    #[test]
    fn largest_legal_bulk_is_skipped_without_buffering() {
        let mut decoder = Decoder::new(Limits::new(1024));
        let head = b"*2\r\n$4\r\nECHO\r\n$536870912\r\n";
        assert_eq!(
            decoder.decode(head),
            Ok(Decoded::NeedMore {
                consumed: head.len()
            })
        );
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..512 {
            assert_eq!(
                decoder.decode(&chunk),
                Ok(Decoded::NeedMore {
                    consumed: chunk.len()
                })
            );
        }
        assert_eq!(
            decoder.decode(b"\r\n"),
            Ok(Decoded::TooLarge {
                name: b"ECHO".to_vec(),
                len: 1 << 29,
                consumed: 2
            })
        );
    }

    #[test]
    fn hostile_lengths_do_not_allocate_or_panic() {
        // Redis skips any `*N` with N <= 0.
        check(b"*-5\r\n*1\r\n$4\r\nPING\r\n", &[cmd(&["PING"])]);
        check(b"*-9223372036854775808\r\n", &[]);
        check(
            b"*-9223372036854775809\r\n",
            &[err("invalid multibulk length")],
        );
        check(
            b"*9223372036854775807\r\n",
            &[err("invalid multibulk length")],
        );
        check(
            b"*1\r\n$9223372036854775807\r\n",
            &[err("invalid bulk length")],
        );

        // A huge count or bulk claim reserves nothing before the bytes come.
        let mut decoder = Decoder::new(Limits::new(usize::MAX));
        assert_eq!(
            decoder.decode(b"*1048576\r\n"),
            Ok(Decoded::NeedMore { consumed: 10 })
        );
        assert!(decoder.args.ends.capacity() <= 16 && decoder.args.bytes.capacity() <= 16);
        assert_eq!(
            decoder.decode(b"$100000000\r\nabc"),
            Ok(Decoded::NeedMore { consumed: 12 })
        );
        assert!(decoder.args.ends.capacity() <= 16 && decoder.args.bytes.capacity() <= 16);
        assert_eq!(decoder.state, State::BulkData(100_000_000));
    }

    /// Regression: `*1048576` followed by 1-byte arguments, never finished,
    /// held 56 MB per connection with no cap.
    #[test]
    fn unfinished_multibulk_memory_is_capped() {
        let limits = Limits {
            max_bulk: 1024,
            max_command: 64 * 1024,
        };
        let mut caller = Caller::with_limits(limits);
        caller.feed(b"*1048576\r\n");
        let mut sent = 0;
        while !caller.failed {
            caller.feed(b"$1\r\nx\r\n");
            sent += 1;
            assert!(caller.decoder.held() <= limits.max_command);
        }
        let most = limits.max_command / (1 + ARG_OVERHEAD);
        assert_eq!(sent, most + 1, "refused at the first argument past the cap");
        assert_eq!(
            caller.events,
            [err(&format!(
                "too big multibulk request: argument {} of 1048576 would hold {} bytes, over the 65536 allowed",
                most + 1,
                (most + 1) * (1 + ARG_OVERHEAD)
            ))]
        );
        // Any split of the same input fails the same way.
        let mut input = b"*1048576\r\n".to_vec();
        input.extend(b"$1\r\nx\r\n".repeat(most + 1));
        let bytes: Vec<&[u8]> = input.chunks(997).collect();
        let mut caller = Caller::with_limits(limits);
        for chunk in bytes {
            caller.feed(chunk);
        }
        assert_eq!(caller.events.len(), 1);
        assert!(
            matches!(&caller.events[0], Event::Error(e) if e.to_string().starts_with("too big multibulk"))
        );
    }

    #[test]
    fn command_cap_fits_a_maximal_publish_and_resets_between_commands() {
        let max_bulk = 64 * 1024;
        let mut input = Vec::new();
        for _ in 0..3 {
            input.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nalice\r\n");
            input.extend_from_slice(format!("${max_bulk}\r\n").as_bytes());
            input.extend(std::iter::repeat_n(b'x', max_bulk));
            input.extend_from_slice(b"\r\n");
        }
        let (events, _) = run(max_bulk, &[&input]);
        assert_eq!(events.len(), 3);
        assert!(
            events
                .iter()
                .all(|e| matches!(e, Event::Command(a) if a.len() == 3))
        );
        // An oversized argument is skipped, not held: it costs nothing.
        let mut decoder = Decoder::new(Limits::new(1024));
        let head = b"*3\r\n$4\r\nECHO\r\n$1\r\na\r\n$999999\r\n";
        assert!(decoder.decode(head).is_ok());
        assert_eq!(decoder.held(), 4 + ARG_OVERHEAD, "only the name is kept");
    }

    #[test]
    fn args_share_one_buffer() {
        let mut args: Args = [&b"PUBLISH"[..], b"", b"alice"].into_iter().collect();
        assert_eq!(
            (args.len(), &args[0], &args[1], &args[2]),
            (3, &b"PUBLISH"[..], &b""[..], &b"alice"[..])
        );
        assert_eq!(args.get(3), None);
        assert_eq!(args.held(), 12 + 3 * ARG_OVERHEAD);
        args.truncate(1);
        args.push(b"x");
        assert_eq!(args.iter().collect::<Vec<_>>(), [&b"PUBLISH"[..], b"x"]);
        args.truncate(0);
        assert!(args.is_empty() && args.bytes.is_empty());
    }

    #[test]
    fn recycled_buffers_are_reused_unless_big() {
        let mut decoder = Decoder::new(Limits::new(1 << 20));
        let Ok(Decoded::Command { args, .. }) = decoder.decode(b"*1\r\n$4\r\nPING\r\n") else {
            panic!("a command");
        };
        let buffer = args.bytes.as_ptr();
        decoder.recycle(args);
        let Ok(Decoded::Command { args, .. }) = decoder.decode(b"*1\r\n$4\r\nPONG\r\n") else {
            panic!("a command");
        };
        assert_eq!((&args[0], args.bytes.as_ptr()), (&b"PONG"[..], buffer));
        let mut big = Args::default();
        big.push(&vec![0; RECYCLE_MAX + 1]);
        decoder.recycle(big);
        assert_eq!(decoder.args.bytes.capacity(), 0, "a big buffer is let go");
    }

    #[test]
    fn parse_integer_is_string2ll() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-1"), Some(-1));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1x",
        ] {
            assert_eq!(
                parse_integer(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random bytes biased towards RESP syntax.
        let alphabet = b"*$\r\n0123456789-+: \"'\\xPOSTab";
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let (whole, _) = run(8, &[&input]);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let (split, _) = run(8, &bytes);
            assert_eq!(whole, split, "{:?}", String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        simple(&mut out, "OK");
        error(&mut out, "ERR bad\r\nthing");
        error(&mut out, "-ERR dash");
        integer(&mut out, -42);
        integer(&mut out, i64::MIN);
        bulk(&mut out, b"hi");
        bulk(&mut out, b"");
        null(&mut out, 2);
        null(&mut out, 3);
        array_len(&mut out, 0);
        map_len(&mut out, 2, 3);
        map_len(&mut out, 3, 3);
        verbatim(&mut out, 3, "txt", b"a:1");
        verbatim(&mut out, 2, "txt", b"a:1");
        boolean(&mut out, 3, true);
        boolean(&mut out, 2, false);
        push_len(&mut out, 3, 3);
        push_len(&mut out, 2, 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+OK\r\n-ERR bad  thing\r\n-ERR dash\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n$0\r\n\r\n\
             $-1\r\n_\r\n*0\r\n*6\r\n%3\r\n=7\r\ntxt:a:1\r\n$3\r\na:1\r\n#t\r\n:0\r\n>3\r\n*3\r\n"
        );
    }
}
