//! Bayeux channel names and patterns, and how they map to mailboxes: the
//! channel `/a/b/c` is the mailbox `a/b/c`. `/meta/**` and `/service/**`
//! are the protocol's own and never mailboxes. A pattern ends in `/*` (one
//! more segment) or `/**` (any depth); wildcards elsewhere are invalid, as
//! in faye's grammar.

use crate::store;

/// What a channel name in a message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    /// `/meta/...`: the rest after `/meta/`.
    Meta(&'a str),
    /// `/service/...`: never stored, never delivered.
    Service,
    /// A mailbox's channel: the mailbox name.
    Mailbox(&'a str),
    /// A subscription pattern.
    Pattern(Pattern),
}

/// A subscription: one mailbox, or the mailboxes under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `/a/b`: exactly the mailbox `a/b`.
    Exact(String),
    /// `/a/*`: `a/` plus one segment (`/*`: every name without `/`). Holds
    /// the prefix with its `/` (`""` for `/*`).
    One(String),
    /// `/a/**`: anything under `a/` (`/**`: every mailbox).
    Any(String),
}

impl Pattern {
    pub fn matches(&self, mailbox: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == mailbox,
            Pattern::One(prefix) => mailbox
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
            Pattern::Any(prefix) => mailbox.len() > prefix.len() && mailbox.starts_with(prefix),
        }
    }

    pub fn is_wild(&self) -> bool {
        !matches!(self, Pattern::Exact(_))
    }

    /// The name a token must grant for this subscription: the mailbox, or
    /// the prefix every match starts with (granted by a claim `prefix*`).
    pub fn grant_name(&self) -> &str {
        match self {
            Pattern::Exact(name) | Pattern::One(name) | Pattern::Any(name) => name,
        }
    }
}

/// Why a channel name was refused (the Bayeux error's text).
pub const INVALID: &str = "405::channel_invalid";

/// Reads a channel name. Segments are mailbox characters; `*` and `**` only
/// as the last segment.
pub fn parse(channel: &str) -> Result<Channel<'_>, &'static str> {
    let Some(body) = channel.strip_prefix('/') else {
        return Err(INVALID);
    };
    if let Some(rest) = body.strip_prefix("meta/") {
        return Ok(Channel::Meta(rest));
    }
    if body == "service" || body.starts_with("service/") {
        return Ok(Channel::Service);
    }
    let (prefix, wild) = match body.rsplit_once('/') {
        Some((head, "*")) => (Some(head), Some(false)),
        Some((head, "**")) => (Some(head), Some(true)),
        None if body == "*" => (None, Some(false)),
        None if body == "**" => (None, Some(true)),
        _ => (Some(body), None),
    };
    let prefix = prefix.unwrap_or("");
    let top_pattern = prefix.is_empty() && wild.is_some();
    if !top_pattern && !store::is_valid_name(prefix.as_bytes()) {
        return Err(INVALID);
    }
    let with_slash = |p: &str| {
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    };
    Ok(match wild {
        None => Channel::Mailbox(prefix),
        Some(false) => Channel::Pattern(Pattern::One(with_slash(prefix))),
        Some(true) => Channel::Pattern(Pattern::Any(with_slash(prefix))),
    })
}

/// The channel of a mailbox, written as a JSON string's content (mailbox
/// names need no escaping).
pub fn of_mailbox(mailbox: &str) -> String {
    format!("/{mailbox}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_mailboxes_and_meta_is_not() {
        assert_eq!(parse("/chat/room42"), Ok(Channel::Mailbox("chat/room42")));
        assert_eq!(parse("/a"), Ok(Channel::Mailbox("a")));
        assert_eq!(parse("/meta/connect"), Ok(Channel::Meta("connect")));
        assert_eq!(parse("/service/x"), Ok(Channel::Service));
        assert_eq!(parse("/service"), Ok(Channel::Service));
        for bad in [
            "", "a", "/", "//a", "/a/", "/a//b", "/a/*/b", "/a*", "/*/a", "/a b", "/a/***",
        ] {
            assert_eq!(parse(bad), Err(INVALID), "{bad:?}");
        }
        assert_eq!(of_mailbox("a/b"), "/a/b");
    }

    #[test]
    fn wildcards_match_one_segment_or_any_depth() {
        let Ok(Channel::Pattern(one)) = parse("/a/*") else {
            panic!()
        };
        let Ok(Channel::Pattern(any)) = parse("/a/**") else {
            panic!()
        };
        let Ok(Channel::Pattern(top)) = parse("/*") else {
            panic!()
        };
        let Ok(Channel::Pattern(all)) = parse("/**") else {
            panic!()
        };
        assert!(one.matches("a/b") && !one.matches("a/b/c") && !one.matches("a"));
        assert!(!one.matches("ab/c") && !one.matches("b/c"));
        assert!(any.matches("a/b") && any.matches("a/b/c") && !any.matches("a"));
        assert!(!any.matches("ab/c"));
        assert!(top.matches("a") && !top.matches("a/b"));
        assert!(all.matches("a") && all.matches("a/b/c"));
        assert_eq!(any.grant_name(), "a/");
        assert!(any.is_wild() && !Pattern::Exact("a".into()).is_wild());
    }
}
