//! Bayeux sessions, shared by every worker: a client's requests may land on
//! any worker, so what a `clientId` subscribed to, where it stands in each
//! mailbox (its cursors) and where its `/meta/connect` is held live here,
//! in a sharded table. A connect reads the cursors, attaches like a
//! multiplexed long-poll, and writes the new cursors back when answered:
//! nothing published between two connects is lost or repeated.
//!
//! Wildcard subscriptions are kept apart as well ([`Sessions::on_publish`]):
//! a publish to a mailbox a pattern matches, that the session does not yet
//! follow, adds it to the session with the cursor just before that message
//! and wakes the held connect, whose client connects again and reads it.

pub mod channel;
mod ws;

pub use channel::{Channel, Pattern};
pub use ws::WsSession;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::store::{Cursor, Message};

/// Shards of the table: connects from many workers rarely meet on one lock.
const SHARDS: usize = 16;

/// Mailboxes one session follows. Exact subscriptions are capped by
/// `bayeux.max-subscriptions`; wildcards discover mailboxes as they are
/// published, and past this many a session follows no new ones (each is
/// an attach on every connect).
pub const MAX_FOLLOWS: usize = 1024;

/// Bytes of randomness in a clientId: unguessable, as it is all that
/// stands between a client's mail and another reader.
const ID_BYTES: usize = 16;

/// Where a session's `/meta/connect` is held: the worker, the connection,
/// and a serial that tells this hold from a later one in a reused slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub worker: usize,
    pub key: usize,
    pub serial: u64,
}

/// A held connect to answer now (a subscription changed, a wildcard found
/// a new mailbox, the client disconnected or connected again).
pub type Wake = Hold;

/// A session, shared by the table and the `/meta/connect` that holds it:
/// the hold and its answer reach the session through this, without a
/// lookup by id. The answer comes long after the connect read the session,
/// when the table's entry and the key it compares have left the cache: the
/// lookup was the costliest step a long-polling delivery took in user space
/// (docs/BENCHMARKS.md, "Bayeux long-polling").
pub type SessionRef = Arc<Mutex<Session>>;

/// A mailbox a session follows, by name: names up to 23 bytes are kept
/// inline, so reading a session's cursors touches no other allocation.
pub type MailboxName = SmolStr;

/// The mailboxes a session follows and where it stands in each; the first
/// is kept inline (most Bayeux clients subscribe to one channel).
pub type Follows = SmallVec<[(MailboxName, Cursor); 1]>;

#[derive(Debug)]
pub struct Session {
    /// Its `clientId`, made once at the handshake: a connect that needs
    /// the text shares it instead of copying the request's.
    pub id: Arc<str>,
    /// What the client subscribed to, in order.
    pub subs: Vec<Pattern>,
    /// The mailboxes it follows and where it stands in each.
    pub follows: Follows,
    pub last_seen: Instant,
    pub held: Option<Hold>,
    /// The handshake's token (`ext.token`), for later subscribes.
    pub token: Option<Vec<u8>>,
    /// The earliest `exp` (Unix seconds) of the tokens that granted its
    /// subscriptions: past it, the client must handshake again.
    pub expires_at: Option<u64>,
    /// Disconnected or timed out: out of the table, kept alive only by a
    /// connect still holding it.
    gone: bool,
}

impl Session {
    pub fn token_expired(&self, unix_now: u64) -> bool {
        self.expires_at.is_some_and(|e| unix_now >= e)
    }

    pub fn cursor(&self, mailbox: &str) -> Option<Cursor> {
        self.follows
            .iter()
            .find(|(m, _)| m == mailbox)
            .map(|(_, c)| *c)
    }

    /// Moves a cursor forward (never back: two answers for one session may
    /// cross, the later-read one must not repeat what the other delivered).
    pub fn advance(&mut self, mailbox: &str, cursor: Cursor) {
        if let Some((_, c)) = self.follows.iter_mut().find(|(m, _)| m == mailbox)
            && !(c.reads(&cursor) && c.generation == cursor.generation && cursor.seq < c.seq)
        {
            *c = cursor;
        }
    }

    /// Drops the mailboxes no subscription matches any more.
    pub fn prune(&mut self) {
        let subs = &self.subs;
        self.follows
            .retain(|(m, _)| subs.iter().any(|p| p.matches(m)));
    }

    pub fn wild(&self) -> Vec<Pattern> {
        self.subs.iter().filter(|p| p.is_wild()).cloned().collect()
    }
}

/// A clientId's 128 bits: the tables are keyed by them, so a lookup
/// compares two integers instead of reading a key string from the heap.
type Key = u128;

/// The key of a clientId this table could have made (32 lowercase hex
/// digits); None for anything else, which names no session.
fn key_of(id: &str) -> Option<Key> {
    let digits = id.as_bytes();
    if digits.len() != ID_BYTES * 2
        || !digits
            .iter()
            .all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    Key::from_str_radix(id, 16).ok()
}

pub struct Sessions {
    shards: Vec<Mutex<HashMap<Key, SessionRef>>>,
    count: AtomicUsize,
    /// Sessions with wildcard subscriptions, and their patterns.
    wild: Mutex<HashMap<Key, Vec<Pattern>>>,
    wild_count: AtomicUsize,
    serial: AtomicU64,
    max_sessions: usize,
    timeout: Duration,
    /// How long past `timeout` a session with a held connect lives: the
    /// hold ends within the poll timeout, unless its connection died.
    hold_grace: Duration,
}

impl Sessions {
    pub fn new(max_sessions: usize, timeout: Duration, hold_grace: Duration) -> Sessions {
        Sessions {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            count: AtomicUsize::new(0),
            wild: Mutex::default(),
            wild_count: AtomicUsize::new(0),
            serial: AtomicU64::new(1),
            max_sessions,
            timeout,
            hold_grace,
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys are random: their low bits spread them over the shards.
    fn shard(&self, key: Key) -> MutexGuard<'_, HashMap<Key, SessionRef>> {
        lock(&self.shards[key as usize % SHARDS])
    }

    /// A new session; None at `bayeux.max-sessions`.
    pub fn create(&self, now: Instant, token: Option<Vec<u8>>) -> Option<Arc<str>> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sessions).then_some(n + 1)
            });
        if taken.is_err() {
            return None;
        }
        loop {
            let key = random_key();
            let mut shard = self.shard(key);
            // 2^-128 a draw; a repeat would hand one client another's mail.
            if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(key) {
                let id: Arc<str> = format!("{key:032x}").into();
                slot.insert(Arc::new(Mutex::new(Session {
                    id: id.clone(),
                    subs: Vec::new(),
                    follows: Follows::new(),
                    last_seen: now,
                    held: None,
                    token,
                    expires_at: None,
                    gone: false,
                })));
                return Some(id);
            }
        }
    }

    /// Runs `f` on a live session; None if it is unknown (or timed out).
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.with_key(key_of(id)?, f)
    }

    fn with_key<R>(&self, key: Key, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.shard(key).get(&key).map(|s| f(&mut lock(s)))
    }

    /// [`Sessions::with`], and the session itself for
    /// [`Sessions::with_held`] later.
    pub fn with_ref<R>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Option<(R, SessionRef)> {
        let key = key_of(id)?;
        let shard = self.shard(key);
        let session = shard.get(&key)?;
        let r = f(&mut lock(session));
        Some((r, session.clone()))
    }

    /// Runs `f` on a session found earlier; None if it has gone since.
    pub fn with_held<R>(session: &SessionRef, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let mut s = lock(session);
        (!s.gone).then(|| f(&mut s))
    }

    /// `/meta/disconnect`: the session's held connect, to answer.
    pub fn remove(&self, id: &str) -> Option<Option<Wake>> {
        let key = key_of(id)?;
        let session = self.shard(key).remove(&key)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.set_wild_key(key, Vec::new());
        let mut session = lock(&session);
        session.gone = true;
        Some(session.held)
    }

    /// Registers (or with an empty list forgets) a session's patterns.
    pub fn set_wild(&self, id: &str, patterns: Vec<Pattern>) {
        if let Some(key) = key_of(id) {
            self.set_wild_key(key, patterns);
        }
    }

    fn set_wild_key(&self, key: Key, patterns: Vec<Pattern>) {
        let mut wild = lock(&self.wild);
        if patterns.is_empty() {
            wild.remove(&key);
        } else {
            wild.insert(key, patterns);
        }
        self.wild_count.store(wild.len(), Ordering::Release);
    }

    pub fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    /// A message was stored: sessions whose patterns match its mailbox but
    /// which do not follow it yet start following it from just before it.
    /// Returns the held connects to wake. Costs one atomic load per
    /// publish while no session has a wildcard.
    pub fn on_publish(&self, message: &Message) -> Vec<Wake> {
        self.on_stored(&message.mailbox, message.cursor)
    }

    /// [`Sessions::on_publish`] from a mailbox name and the message's id:
    /// in cluster mode, what this node hears of every node's publishes,
    /// cached here or not.
    pub fn on_stored(&self, mailbox: &str, cursor: Cursor) -> Vec<Wake> {
        if self.wild_count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let keys: Vec<Key> = lock(&self.wild)
            .iter()
            .filter(|(_, patterns)| patterns.iter().any(|p| p.matches(mailbox)))
            .map(|(key, _)| *key)
            .collect();
        let before = Cursor {
            seq: cursor.seq.saturating_sub(1),
            ..cursor
        };
        let name = MailboxName::new(mailbox);
        let mut wakes = Vec::new();
        for key in keys {
            self.with_key(key, |s| {
                if s.cursor(mailbox).is_none() && s.follows.len() < MAX_FOLLOWS {
                    s.follows.push((name.clone(), before));
                    wakes.extend(s.held);
                }
            });
        }
        wakes
    }

    /// Forgets sessions whose client has not connected within the timeout
    /// (a held connect counts as connecting, for up to `hold_grace`).
    /// About once a second.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut gone: Vec<Key> = Vec::new();
        for shard in &self.shards {
            lock(shard).retain(|key, s| {
                let mut s = lock(s);
                let limit = match s.held {
                    Some(_) => self.timeout + self.hold_grace,
                    None => self.timeout,
                };
                let alive = now.duration_since(s.last_seen) < limit;
                if !alive {
                    s.gone = true;
                    gone.push(*key);
                }
                alive
            });
        }
        self.count.fetch_sub(gone.len(), Ordering::AcqRel);
        for &key in &gone {
            self.set_wild_key(key, Vec::new());
        }
        gone.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 128 bits from the kernel's random source: a clientId is all that stands
/// between a client's mail and another reader, so it must be unguessable.
fn random_key() -> Key {
    let mut bytes = [0u8; ID_BYTES];
    let mut filled = 0;
    while filled < ID_BYTES {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `bytes`, which getrandom(2) writes at most that many bytes into.
        let n =
            unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), ID_BYTES - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else {
            let e = std::io::Error::last_os_error();
            // Only EINTR is possible with flags 0 once the pool is ready.
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "getrandom: {e}");
        }
    }
    Key::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[test]
    fn sessions_are_bounded_and_expire_unless_held() {
        let t = Sessions::new(2, Duration::from_secs(60), Duration::from_secs(30));
        let now = Instant::now();
        let a = t.create(now, None).unwrap();
        let b = t.create(now, None).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(t.create(now, None).is_none(), "max-sessions");
        t.with(&b, |s| {
            s.held = Some(Hold {
                worker: 0,
                key: 1,
                serial: 1,
            })
        });
        assert_eq!(t.sweep(now + Duration::from_secs(61)), 1);
        assert!(t.with(&a, |_| ()).is_none());
        assert!(t.with(&b, |_| ()).is_some(), "held: alive");
        assert!(t.create(now, None).is_some(), "room again");
        assert!(t.remove(&b).unwrap().is_some());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn only_the_ids_the_table_makes_name_a_session() {
        let t = Sessions::new(4, Duration::from_secs(60), Duration::from_secs(30));
        let id = t.create(Instant::now(), None).unwrap();
        assert!(
            id.bytes()
                .all(|d| d.is_ascii_hexdigit() && !d.is_ascii_uppercase())
        );
        assert!(t.with(&id, |_| ()).is_some());
        for other in [
            id.to_ascii_uppercase(),
            format!("+{}", &id[1..]),
            id[1..].to_string(),
            format!("{id}0"),
            format!("{}g", &id[..31]),
            String::new(),
        ] {
            if other != *id {
                assert!(t.with(&other, |_| ()).is_none(), "{other:?}");
                assert!(t.remove(&other).is_none(), "{other:?}");
            }
        }
    }

    #[test]
    fn a_held_session_is_reached_directly_until_it_goes() {
        let t = Sessions::new(4, Duration::from_secs(60), Duration::from_secs(30));
        let now = Instant::now();
        let a = t.create(now, None).unwrap();
        let b = t.create(now, None).unwrap();
        let (_, held_a) = t.with_ref(&a, |_| ()).unwrap();
        let (_, held_b) = t.with_ref(&b, |_| ()).unwrap();
        Sessions::with_held(&held_a, |s| s.expires_at = Some(7)).unwrap();
        assert_eq!(
            t.with(&a, |s| s.expires_at),
            Some(Some(7)),
            "the same session"
        );
        t.remove(&a).unwrap();
        assert!(
            Sessions::with_held(&held_a, |_| ()).is_none(),
            "disconnected"
        );
        assert_eq!(t.sweep(now + Duration::from_secs(61)), 1);
        assert!(Sessions::with_held(&held_b, |_| ()).is_none(), "timed out");
    }

    #[test]
    fn a_wildcard_follows_new_mailboxes_from_just_before_their_message() {
        let t = Sessions::new(10, Duration::from_secs(60), Duration::from_secs(30));
        let now = Instant::now();
        let id = t.create(now, None).unwrap();
        let message = testing::message(b"x"); // mailbox "box", seq 1
        assert!(t.on_publish(&message).is_empty(), "no patterns yet");
        t.with(&id, |s| s.subs.push(Pattern::Any(String::new())));
        t.set_wild(&id, vec![Pattern::Any(String::new())]);
        let hold = Hold {
            worker: 1,
            key: 7,
            serial: 3,
        };
        t.with(&id, |s| s.held = Some(hold));
        assert_eq!(t.on_publish(&message), vec![hold]);
        let cursor = t.with(&id, |s| s.cursor("box")).unwrap().unwrap();
        assert_eq!(cursor.seq, 0);
        assert_eq!(cursor.follows(&message.cursor), crate::store::Follows::Next);
        assert!(t.on_publish(&message).is_empty(), "followed already");
    }

    #[test]
    fn cursors_only_move_forward_and_unmatched_mailboxes_are_pruned() {
        let t = Sessions::new(10, Duration::from_secs(60), Duration::from_secs(30));
        let id = t.create(Instant::now(), None).unwrap();
        let c = |seq| Cursor {
            store: 1,
            generation: 1,
            seq,
        };
        t.with(&id, |s| {
            s.subs.push(Pattern::Exact("a".into()));
            s.follows.push(("a".into(), c(1)));
            s.follows.push(("b".into(), c(1)));
            s.advance("a", c(5));
            s.advance("a", c(3));
            assert_eq!(s.cursor("a"), Some(c(5)));
            s.prune();
            assert_eq!(s.follows.len(), 1);
        });
    }
}
