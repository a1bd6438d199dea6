//! Redis' glob (`stringmatchlen`), as PUBSUB CHANNELS uses it. A pattern is
//! compiled once into tokens, each class into a 256-bit set, so matching
//! never rereads the pattern text: a class of a million bytes costs one pass
//! to compile, then one bit test per name byte.

/// One compiled pattern element. Every token but `Star` matches exactly one
/// byte, which is what lets [`Glob::matches`] remember only the last star.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*` (a run of them is one): any number of bytes.
    Star,
    /// `?`: any one byte.
    Any,
    /// A literal byte, or `\x` for a literal `x`.
    Byte(u8),
    /// `[...]` or `[^...]`, negation already applied: bit `b` set means
    /// byte `b` matches.
    Class([u64; 4]),
}

/// A compiled glob, case-sensitive: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`
/// (reversed ranges allowed), `\x` for a literal `x`, and Redis' quirks
/// with unterminated classes (checked against a port of the C code in the
/// tests). One difference: `*` matches an empty name here, Redis' does not;
/// mailbox names are never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern` in one pass over its bytes.
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut p = 0;
        while p < pattern.len() {
            let token = match pattern[p] {
                b'*' => {
                    p += 1;
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                b'?' => {
                    p += 1;
                    Token::Any
                }
                b'\\' if p + 1 < pattern.len() => {
                    p += 2;
                    Token::Byte(pattern[p - 1])
                }
                b'[' => {
                    let (set, next) = class(pattern, p + 1);
                    p = next;
                    Token::Class(set)
                }
                literal => {
                    p += 1;
                    Token::Byte(literal)
                }
            };
            tokens.push(token);
        }
        Glob { tokens }
    }

    /// True if `name` matches. The classic two-pointer walk: on a mismatch
    /// the last `*` swallows one more byte and matching resumes after it.
    /// Earlier stars never need revisiting because every other token is one
    /// byte wide, so this is O(tokens × name) at worst, never exponential.
    pub fn matches(&self, name: &[u8]) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut n) = (0, 0);
        // After a `*`: the token after it, and the name position it last
        // tried from.
        let mut star: Option<(usize, usize)> = None;
        loop {
            if tokens.get(t) == Some(&Token::Star) {
                t += 1;
                if t == tokens.len() {
                    return true;
                }
                star = Some((t, n));
                continue;
            }
            if n == name.len() {
                return tokens[t..].iter().all(|token| *token == Token::Star);
            }
            if tokens.get(t).is_some_and(|token| token.matches(name[n])) {
                t += 1;
                n += 1;
                continue;
            }
            match star {
                Some((resume, from)) => {
                    star = Some((resume, from + 1));
                    t = resume;
                    n = from + 1;
                }
                None => return false,
            }
        }
    }
}

impl Token {
    fn matches(&self, byte: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(b) => *b == byte,
            Token::Class(set) => set[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0,
        }
    }
}

/// Parses a class whose body starts at `pattern[q]` (just after `[`).
/// Returns the set, negation applied, and the index after the closing `]`;
/// an unterminated class runs to the end of the pattern, as in Redis.
fn class(pattern: &[u8], mut q: usize) -> ([u64; 4], usize) {
    let mut set = [0u64; 4];
    let mut add = |lo: u8, hi: u8| {
        for b in lo..=hi {
            set[usize::from(b >> 6)] |= 1 << (b & 63);
        }
    };
    let negate = pattern.get(q) == Some(&b'^');
    if negate {
        q += 1;
    }
    while q < pattern.len() {
        let c = pattern[q];
        if c == b'\\' && q + 1 < pattern.len() {
            add(pattern[q + 1], pattern[q + 1]);
            q += 2;
        } else if c == b']' {
            q += 1;
            break;
        } else if q + 2 < pattern.len() && pattern[q + 1] == b'-' {
            add(c.min(pattern[q + 2]), c.max(pattern[q + 2]));
            q += 3;
        } else {
            add(c, c);
            q += 1;
        }
    }
    if negate {
        for word in &mut set {
            *word = !*word;
        }
    }
    (set, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
        Glob::new(pattern).matches(name)
    }

    /// A direct port of Redis' recursive `stringmatchlen` (util.c), to check
    /// the compiled `Glob` against.
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

    /// Regression: `*[xxx…` with a 1,000 KiB class over 300 names took 34 s,
    /// because the class was rescanned for every name byte the star tried.
    /// Compiled once, it is one bit test per byte; this asserts the answers
    /// (the speed is what lets it finish at all in a debug build).
    #[test]
    fn huge_class_after_a_star_is_compiled_once() {
        let mut pattern = b"*[".to_vec();
        pattern.extend(std::iter::repeat_n(b'x', 1000 * 1024));
        let unterminated = Glob::new(&pattern);
        pattern.push(b']');
        let closed = Glob::new(&pattern);
        for i in 0..300 {
            let miss = format!("mailbox-{i:04}-abcdefghijklmnopqrstuvw");
            let hit = format!("{miss}x");
            for glob in [&unterminated, &closed] {
                assert!(!glob.matches(miss.as_bytes()), "{miss}");
                assert!(glob.matches(hit.as_bytes()), "{hit}");
            }
        }
        assert_eq!(closed.tokens.len(), 2, "a star and one class");
    }

    #[test]
    fn stars_collapse_and_classes_negate() {
        assert_eq!(Glob::new(b"a***b").tokens.len(), 3);
        let glob = Glob::new(b"[^a-c\\\\]");
        assert!(glob.matches(b"d") && glob.matches(&[0xff]) && glob.matches(&[0]));
        assert!(!glob.matches(b"b") && !glob.matches(b"\\"));
    }
}
