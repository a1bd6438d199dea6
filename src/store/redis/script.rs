//! What cometbox keeps in Redis and the Lua library (a Redis Function
//! library, Redis 7+) that changes it. Every change to a mailbox is one
//! function call, so it is atomic and ordered by Redis alone:
//!
//! ```text
//! {prefix}meta:{mailbox}  HASH    e = epoch (microseconds at birth), s = last seq
//! {prefix}log:{mailbox}   STREAM  entries "<seq>-0" with field d = payload
//! {prefix}notify          PUB/SUB "m <epoch> <seq> <mailbox> <payload>" | "d <mailbox>"
//! {prefix}health          PUB/SUB "<node> <seq>", each node's probe (`probe`)
//! ```
//!
//! Names in key positions come after a fixed type word, so a mailbox name
//! (which may hold `:`) can never make one key look like another.

use std::time::Duration;

/// A mailbox's meta hash outlives its last publish by this much (or by the
/// message TTL, if longer), so a cursor from a quiet week ago is still
/// recognised as this incarnation and answered exactly (or `missed`, if
/// its mail expired) rather than as another epoch.
const META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The names one deployment uses in Redis.
#[derive(Clone, Debug)]
pub struct Names {
    pub prefix: String,
    /// The Function library and its functions' common prefix:
    /// `cometbox:` → `cometbox`, functions `cometbox_publish` and so on.
    pub library: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        let base: String = prefix
            .trim_end_matches(':')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let library = if base.is_empty() {
            "cometbox".into()
        } else {
            base
        };
        Names {
            prefix: prefix.to_string(),
            library,
        }
    }

    pub fn channel(&self) -> String {
        format!("{}notify", self.prefix)
    }

    /// Where every node publishes its probes (`probe`), apart from the
    /// mail so a probe never reaches the cache.
    pub fn health_channel(&self) -> String {
        format!("{}health", self.prefix)
    }

    pub fn function(&self, what: &str) -> String {
        format!("{}_{what}", self.library)
    }
}

/// What the library needs from the gateway's config, inlined as constants
/// (every node loads the same text; the last one loaded wins, so give all
/// nodes the same mailbox settings).
pub struct Settings {
    pub max_messages: usize,
    pub message_ttl: Duration,
    pub max_message_size: usize,
}

/// The library's source for `FUNCTION LOAD REPLACE`.
pub fn library(names: &Names, settings: &Settings) -> String {
    let ttl_ms = settings.message_ttl.as_millis().max(1);
    let meta_ttl_ms = META_TTL.as_millis().max(ttl_ms);
    let lib = &names.library;
    format!(
        r#"#!lua name={lib}
local P = '{prefix}'
local MAXLEN = {maxlen}
local MAXSIZE = {maxsize}
local TTL = {ttl_ms}
local META_TTL = {meta_ttl_ms}
local function meta_of(n) return P .. 'meta:' .. n end
local function log_of(n) return P .. 'log:' .. n end
-- As is_valid_name: '/' separates segments (not first, not last, not doubled).
local function valid(n)
  return type(n) == 'string' and #n >= 1 and #n <= 200 and string.match(n, '^[%w%._:@%-/]+$') ~= nil
    and string.sub(n, 1, 1) ~= '/' and string.sub(n, -1) ~= '/' and string.find(n, '//', 1, true) == nil
end

-- FCALL {lib}_publish 1 mailbox payload -> {{epoch, seq}}
local function publish(keys, args)
  local name, payload = keys[1], args[1]
  if #keys ~= 1 or #args ~= 1 then
    return redis.error_reply('ERR usage: FCALL {lib}_publish 1 mailbox payload')
  end
  if not valid(name) then
    return redis.error_reply('ERR invalid mailbox name: use 1-200 characters of A-Z a-z 0-9 . _ : @ - and / between segments')
  end
  if #payload > MAXSIZE then
    return redis.error_reply('ERR message exceeds mailbox.max-message-size (' .. MAXSIZE .. ' bytes)')
  end
  local meta, log = meta_of(name), log_of(name)
  local e = redis.call('HGET', meta, 'e')
  if not e then
    -- A new incarnation: its epoch is the time, so a later one is larger;
    -- a stale log (the meta was lost) must not lend it old ids.
    local t = redis.call('TIME')
    e = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('DEL', log)
    redis.call('HSET', meta, 'e', e)
  end
  local s = redis.call('HINCRBY', meta, 's', 1)
  redis.call('XADD', log, 'MAXLEN', MAXLEN, s .. '-0', 'd', payload)
  redis.call('PEXPIRE', log, TTL)
  redis.call('PEXPIRE', meta, META_TTL)
  redis.call('PUBLISH', P .. 'notify', 'm ' .. e .. ' ' .. s .. ' ' .. name .. ' ' .. payload)
  return {{e, s}}
end

-- FCALL {lib}_read 1 mailbox epoch seq -> {{}} | {{epoch, last, entries}}:
-- the entries after seq if epoch is the mailbox's, else the newest ones,
-- oldest first.
local function read(keys, args)
  local meta, log = meta_of(keys[1]), log_of(keys[1])
  local m = redis.call('HMGET', meta, 'e', 's')
  if not m[1] then return {{}} end
  local entries
  if args[1] == m[1] then
    entries = redis.call('XRANGE', log, (tonumber(args[2]) + 1) .. '-0', '+', 'COUNT', MAXLEN)
  else
    entries = redis.call('XREVRANGE', log, '+', '-', 'COUNT', MAXLEN)
    local n = #entries
    for i = 1, math.floor(n / 2) do
      entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i]
    end
  end
  return {{m[1], tonumber(m[2]) or 0, entries}}
end

-- FCALL {lib}_delete N mailbox... -> how many existed
local function delete(keys, args)
  local n = 0
  for _, name in ipairs(keys) do
    if redis.call('DEL', meta_of(name), log_of(name)) > 0 then n = n + 1 end
    redis.call('PUBLISH', P .. 'notify', 'd ' .. name)
  end
  return n
end

redis.register_function('{lib}_publish', publish)
redis.register_function{{function_name='{lib}_read', callback=read, flags={{'no-writes'}}}}
redis.register_function('{lib}_delete', delete)
"#,
        prefix = names.prefix,
        maxlen = settings.max_messages.max(1),
        maxsize = settings.max_message_size,
    )
}

/// A notification from the channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    Message {
        name: String,
        epoch: u64,
        seq: u64,
        payload: Vec<u8>,
    },
    Deleted {
        name: String,
    },
}

/// Parses a notification; None for anything else (a newer gateway's
/// kinds, a liveness probe).
pub fn parse_note(frame: &[u8]) -> Option<Note> {
    let mut parts = frame.splitn(5, |&b| b == b' ');
    fn word(p: Option<&[u8]>) -> Option<&str> {
        p.and_then(|b| std::str::from_utf8(b).ok())
    }
    match parts.next()? {
        b"m" => {
            let epoch = word(parts.next())?.parse().ok()?;
            let seq = word(parts.next())?.parse().ok()?;
            let name = word(parts.next())?.to_string();
            let payload = parts.next()?.to_vec();
            Some(Note::Message {
                name,
                epoch,
                seq,
                payload,
            })
        }
        b"d" => {
            let name = word(parts.next())?.to_string();
            Some(Note::Deleted { name })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("cometbox:");
        assert_eq!(n.function("publish"), "cometbox_publish");
        assert_eq!(n.channel(), "cometbox:notify");
        assert_eq!(Names::new("shop-2:").function("read"), "shop_2_read");
    }

    #[test]
    fn notes_keep_spaces_in_the_payload() {
        assert_eq!(
            parse_note(b"m 1700000000000001 7 box a b c"),
            Some(Note::Message {
                name: "box".into(),
                epoch: 1_700_000_000_000_001,
                seq: 7,
                payload: b"a b c".to_vec()
            })
        );
        assert_eq!(
            parse_note(b"m 1 1 box "),
            Some(Note::Message {
                name: "box".into(),
                epoch: 1,
                seq: 1,
                payload: Vec::new()
            })
        );
        assert_eq!(
            parse_note(b"d box"),
            Some(Note::Deleted { name: "box".into() })
        );
        assert_eq!(parse_note(b"m x 1 box p"), None);
        assert_eq!(parse_note(b"ping"), None);
    }
}
