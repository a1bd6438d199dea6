//! The "did you mean" hint for an unknown key: the nearest known key by edit
//! distance.

use super::keys::KEYS;

/// Unknown keys within this many single-character edits of a known key get a
/// "did you mean" hint: enough for a typo or a swapped pair of letters, few
/// enough that the hint is rarely wrong.
const SUGGEST_MAX_EDITS: usize = 2;

/// The "did you mean" for an unknown key: the nearest known key within
/// [`SUGGEST_MAX_EDITS`], comparing whole names and also the names without
/// their section, so "port" and "server.poll-timeout" find "server.port"
/// and "mailbox.poll-timeout".
pub(super) fn suggest(unknown: &str) -> Option<&'static str> {
    let short = |name: &'static str| name.split_once('.').map_or(name, |(_, rest)| rest);
    let unknown_short = unknown.split_once('.').map_or(unknown, |(_, rest)| rest);
    KEYS.iter()
        .filter_map(|k| {
            let d = edit_distance(unknown, k.name).min(edit_distance(unknown_short, short(k.name)));
            (d <= SUGGEST_MAX_EDITS).then_some((d, k.name))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, name)| name)
}

/// Levenshtein distance over chars.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::assert_err;

    #[test]
    fn unknown_keys() {
        assert_err(
            "server.prot = 8080",
            1,
            "unknown key \"server.prot\" (did you mean \"server.port\"?)",
        );
        assert_err(
            "\nmailbox.heartbeet = 5",
            2,
            "(did you mean \"mailbox.heartbeat\"?)",
        );
        assert_err("port = 8080", 1, "(did you mean \"server.port\"?)");
        assert_err(
            "server.poll-timeout = 5",
            1,
            "(did you mean \"mailbox.poll-timeout\"?)",
        );
        assert_err(
            "server.document-root = \"/var/www\"",
            1,
            "unknown key \"server.document-root\" (docs/configuration.md lists",
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}
