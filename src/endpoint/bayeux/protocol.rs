//! Bayeux messages in, replies out: the meta channels and client publish,
//! over the shared session table and the store, without sockets. A batch
//! yields its replies (JSON objects), at most one `/meta/connect` for the
//! worker to answer or hold, what to publish and which positions to look
//! up (the worker asks the store: a shared one answers later), and which
//! held connects to wake.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::session::{Channel, MailboxName, Pattern, Session, SessionRef, Wake, channel};
use crate::shared::Shared;
use crate::store::{Cursor, Store};

/// The connection types offered in the handshake.
pub const CONNECTION_TYPES: [&str; 4] = [
    "websocket",
    "long-polling",
    "cross-origin-long-polling",
    "callback-polling",
];

/// Messages one request may carry: a client batches a handful.
pub const MAX_BATCH: usize = 100;

/// What a batch asks of the worker.
#[derive(Debug, Default)]
pub struct Batch {
    /// Replies other than the connect's, each a JSON object.
    pub replies: Vec<Value>,
    pub connect: Option<ConnectReq>,
    /// Client publishes for the worker to store (a shared store answers
    /// later); each reply says success until the store says otherwise.
    pub publishes: Vec<ToPublish>,
    /// Subscribed mailboxes whose position only a shared store knows: the
    /// subscribe's reply waits for it (see [`Lookup`]).
    pub lookups: Vec<Lookup>,
    pub wakes: Vec<Wake>,
}

/// A client publish the worker stores.
#[derive(Debug)]
pub struct ToPublish {
    /// Its reply in `Batch::replies`.
    pub reply: usize,
    pub mailbox: Arc<str>,
    /// The JSON text of the message's `data`.
    pub payload: Vec<u8>,
}

/// A mailbox a session subscribed to, where it must start from the
/// position the mailbox has *now*: in cluster mode only Redis knows it,
/// so the subscribe is answered once Redis told, and a message published
/// after the client saw its reply is never lost.
#[derive(Debug)]
pub struct Lookup {
    /// The subscribe's reply in `Batch::replies`.
    pub reply: usize,
    pub client_id: Arc<str>,
    pub mailbox: Arc<str>,
}

impl Batch {
    /// The store must answer before the batch's replies go out.
    pub fn waits(&self) -> bool {
        !self.lookups.is_empty() || !self.publishes.is_empty()
    }
}

/// A `/meta/connect` of a live session, to answer with its deliveries.
#[derive(Debug)]
pub struct ConnectReq {
    /// The session, for the hold and the answer (and its `clientId`).
    pub session: SessionRef,
    /// The reply (a JSON object), without deliveries.
    pub reply: Vec<u8>,
    /// Held until mail or the poll timeout (alone in its batch, and not
    /// `advice.timeout: 0`); otherwise answered at once.
    pub hold: bool,
    /// The mailboxes to attach and where the session stands in each.
    pub follows: crate::session::Follows,
}

/// What the request around the messages brings: its token (header, query
/// or cookie) and the time.
pub struct Env<'a> {
    pub shared: &'a Shared,
    pub token: Option<&'a [u8]>,
    pub now: Instant,
}

/// Runs a batch.
pub fn process(messages: Vec<Map<String, Value>>, env: &Env<'_>) -> Batch {
    let mut batch = Batch::default();
    let alone = messages.len() == 1;
    for message in messages {
        let reply = match message.get("channel").and_then(Value::as_str) {
            None => Some(error(&message, None, "400::channel_missing")),
            Some(name) => match channel::parse(name) {
                Err(why) => Some(error(&message, Some(name), why)),
                Ok(Channel::Meta(meta)) => meta_message(meta, &message, alone, env, &mut batch),
                Ok(Channel::Service) => Some(error(
                    &message,
                    Some(name),
                    "404::service channels are not supported",
                )),
                Ok(Channel::Pattern(_)) => Some(error(&message, Some(name), channel::INVALID)),
                Ok(Channel::Mailbox(mailbox)) => Some(publish(mailbox, &message, env, &mut batch)),
            },
        };
        batch.replies.extend(reply);
    }
    batch
}

fn meta_message(
    meta: &str,
    message: &Map<String, Value>,
    alone: bool,
    env: &Env<'_>,
    batch: &mut Batch,
) -> Option<Value> {
    let channel = format!("/meta/{meta}");
    if meta == "handshake" {
        return Some(handshake(message, env));
    }
    if !matches!(meta, "connect" | "subscribe" | "unsubscribe" | "disconnect") {
        return Some(error(message, Some(&channel), "400::unknown meta channel"));
    }
    let Some(client_id) = message.get("clientId").and_then(Value::as_str) else {
        return Some(error(message, Some(&channel), "402::clientId missing"));
    };
    let expired = env
        .shared
        .sessions
        .with(client_id, |s| s.token_expired(unix_now()));
    match expired {
        None => return Some(unknown_session(message, &channel)),
        Some(true) => {
            // The token that granted its subscriptions ran out.
            if let Some(Some(held)) = env.shared.sessions.remove(client_id) {
                batch.wakes.push(held);
            }
            return Some(unknown_session(message, &channel));
        }
        Some(false) => {}
    }
    match meta {
        "connect" => {
            if batch.connect.is_some() {
                return Some(error(
                    message,
                    Some(&channel),
                    "400::one connect per request",
                ));
            }
            batch.connect = connect(client_id, message, alone, env);
            None
        }
        "subscribe" => Some(subscribe(client_id, message, env, batch, true)),
        "unsubscribe" => Some(subscribe(client_id, message, env, batch, false)),
        _ => {
            if let Some(Some(held)) = env.shared.sessions.remove(client_id) {
                batch.wakes.push(held);
            }
            Some(ok(message, &channel, Some(client_id)))
        }
    }
}

fn handshake(message: &Map<String, Value>, env: &Env<'_>) -> Value {
    let channel = "/meta/handshake";
    let mut reply = if message.get("version").and_then(Value::as_str).is_none() {
        error(
            message,
            Some(channel),
            "402:version:Missing required parameter",
        )
    } else if !message
        .get("supportedConnectionTypes")
        .and_then(Value::as_array)
        .is_some_and(|types| {
            types
                .iter()
                .any(|t| t.as_str().is_some_and(|t| CONNECTION_TYPES.contains(&t)))
        })
    {
        error(
            message,
            Some(channel),
            "301::connection types not supported",
        )
    } else {
        let token = ext_token(message).map(<[u8]>::to_vec);
        match env.shared.sessions.create(env.now, token) {
            None => {
                let mut r = error(message, Some(channel), "503::too many sessions");
                r["advice"] = json!({"reconnect": "retry", "interval": 5000});
                return r;
            }
            Some(id) => {
                let mut r = ok(message, channel, Some(&id));
                r["advice"] = advice(env);
                r
            }
        }
    };
    reply["version"] = json!("1.0");
    reply["minimumVersion"] = json!("1.0");
    reply["supportedConnectionTypes"] = json!(CONNECTION_TYPES);
    reply
}

fn advice(env: &Env<'_>) -> Value {
    let timeout = env.shared.config().mailbox.poll_timeout.as_millis() as u64;
    json!({"reconnect": "retry", "interval": 0, "timeout": timeout})
}

fn connect(
    client_id: &str,
    message: &Map<String, Value>,
    alone: bool,
    env: &Env<'_>,
) -> Option<ConnectReq> {
    let at_once = message
        .get("advice")
        .and_then(|a| a.get("timeout"))
        .and_then(Value::as_u64)
        == Some(0);
    let id = message
        .get("id")
        .map(|id| serde_json::to_vec(id).expect("JSON to a Vec"));
    let (follows, session) = env.shared.sessions.with_ref(client_id, |s| {
        s.last_seen = env.now;
        s.follows.clone()
    })?;
    Some(ConnectReq {
        session,
        reply: connect_reply(id.as_deref(), client_id, env),
        hold: alone && !at_once,
        follows,
    })
}

/// The `/meta/connect` every poll and every WebSocket delivery brings
/// back, alone in its request: read into borrowed fields, no JSON tree.
/// Fields other than these are ignored, as the general path ignores them.
#[derive(serde::Deserialize)]
struct LoneConnect<'a> {
    channel: &'a str,
    #[serde(rename = "clientId")]
    client_id: &'a str,
    #[serde(borrow, default)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    advice: Option<ConnectAdvice>,
}

#[derive(serde::Deserialize)]
struct ConnectAdvice {
    #[serde(default)]
    timeout: Option<u64>,
}

/// The fast path for a request that is one `/meta/connect` of a live
/// session (a JSON array of one object, or the object). None for anything
/// else (another channel, more messages, an escaped string, a field of
/// another type, an unknown or expired session): [`process`] then runs
/// it and answers as it answers every batch. The general path's JSON tree,
/// its reply built as a `Value` and two more session lookups cost a Bayeux
/// long-polling delivery about a fifth more (docs/BENCHMARKS.md).
pub fn lone_connect(text: &[u8], env: &Env<'_>) -> Option<Batch> {
    let text = text.trim_ascii();
    let message: LoneConnect<'_> = if text.starts_with(b"[") {
        serde_json::from_slice::<(LoneConnect<'_>,)>(text).ok()?.0
    } else {
        serde_json::from_slice(text).ok()?
    };
    if message.channel != "/meta/connect" {
        return None;
    }
    let unix_now = unix_now();
    let (follows, session) = env.shared.sessions.with_ref(message.client_id, |s| {
        (!s.token_expired(unix_now)).then(|| {
            s.last_seen = env.now;
            s.follows.clone()
        })
    })?;
    let follows = follows?;
    let at_once = message.advice.and_then(|a| a.timeout) == Some(0);
    let id = message.id.map(|raw| raw.get().as_bytes());
    Some(Batch {
        connect: Some(ConnectReq {
            session,
            reply: connect_reply(id, message.client_id, env),
            hold: !at_once,
            follows,
        }),
        ..Batch::default()
    })
}

/// A successful connect's reply: `id` is the request's, as JSON text.
/// Written directly, with the handshake's advice ([`advice`]) and keys in
/// the order the general path's replies have; `client_id` is a live
/// session's, so hexadecimal digits that need no escaping.
fn connect_reply(id: Option<&[u8]>, client_id: &str, env: &Env<'_>) -> Vec<u8> {
    let timeout = env.shared.config().mailbox.poll_timeout.as_millis() as u64;
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(br#"{"advice":{"interval":0,"reconnect":"retry","timeout":"#);
    out.extend_from_slice(itoa::Buffer::new().format(timeout).as_bytes());
    out.extend_from_slice(br#"},"channel":"/meta/connect","clientId":""#);
    out.extend_from_slice(client_id.as_bytes());
    out.push(b'"');
    if let Some(id) = id {
        out.extend_from_slice(br#","id":"#);
        out.extend_from_slice(id);
    }
    out.extend_from_slice(br#","successful":true}"#);
    out
}

/// `/meta/subscribe` (`adding`) or `/meta/unsubscribe`.
fn subscribe(
    client_id: &str,
    message: &Map<String, Value>,
    env: &Env<'_>,
    batch: &mut Batch,
    adding: bool,
) -> Value {
    let channel = if adding {
        "/meta/subscribe"
    } else {
        "/meta/unsubscribe"
    };
    let subscription = message.get("subscription").cloned().unwrap_or(Value::Null);
    let names: Vec<&str> = match &subscription {
        Value::String(s) => vec![s.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        return error(
            message,
            Some(channel),
            "402:subscription:Missing required parameter",
        );
    }
    let mut patterns = Vec::with_capacity(names.len());
    for name in &names {
        match channel::parse(name) {
            Ok(Channel::Mailbox(m)) => patterns.push(Pattern::Exact(m.to_string())),
            Ok(Channel::Pattern(p)) => patterns.push(p),
            Ok(Channel::Meta(_) | Channel::Service) => {
                return with_subscription(
                    error(message, Some(channel), "403::subscription_invalid"),
                    subscription,
                );
            }
            Err(why) => return with_subscription(error(message, Some(channel), why), subscription),
        }
    }
    let outcome = if adding {
        add(client_id, patterns, message, env).map(|(changed, lookups)| {
            let reply = batch.replies.len();
            batch
                .lookups
                .extend(lookups.into_iter().map(|mailbox| Lookup {
                    reply,
                    client_id: client_id.into(),
                    mailbox,
                }));
            changed
        })
    } else {
        env.shared
            .sessions
            .with(client_id, |s| {
                s.subs.retain(|p| !patterns.contains(p));
                s.prune();
                (s.wild(), s.held)
            })
            .ok_or("402::session_unknown")
    };
    let reply = match outcome {
        Ok((wild, held)) => {
            env.shared.sessions.set_wild(client_id, wild);
            batch.wakes.extend(held);
            ok(message, channel, Some(client_id))
        }
        Err(why) => error(message, Some(channel), why),
    };
    with_subscription(reply, subscription)
}

type Changed = (Vec<Pattern>, Option<Wake>);

/// The subscription is recorded; the mailboxes it names start from where
/// they stand now: read from the local store here, or (a shared store)
/// returned as lookups for the worker.
fn add(
    client_id: &str,
    patterns: Vec<Pattern>,
    message: &Map<String, Value>,
    env: &Env<'_>,
) -> Result<(Changed, Vec<Arc<str>>), &'static str> {
    let max = env.shared.config().bayeux.max_subscriptions;
    // The node's cache of Redis may lag the mailbox's real position.
    let shared_store = matches!(env.shared.store, Store::Redis(_));
    let positions: Vec<(Arc<str>, Option<Cursor>)> = patterns
        .iter()
        .filter_map(|p| match p {
            Pattern::Exact(m) => Some((
                m.as_str().into(),
                (!shared_store).then(|| env.shared.store.position(m, env.now)),
            )),
            _ => None,
        })
        .collect();
    let stored_token = env
        .shared
        .sessions
        .with(client_id, |s| s.token.clone())
        .flatten();
    let token = ext_token(message).or(stored_token.as_deref()).or(env.token);
    let mut expires_at: Option<u64> = None;
    if let Some(auth) = &*env.shared.auth() {
        for p in patterns.iter().filter(|p| auth.needs_token(p.grant_name())) {
            match auth.check(token, p.grant_name()) {
                Ok(grant) => {
                    expires_at =
                        Some(expires_at.map_or(grant.expires_at, |e| e.min(grant.expires_at)))
                }
                Err(denied) if denied.is_forbidden() => return Err("403::mailbox not granted"),
                Err(denied) => return Err(denied_text(denied)),
            }
        }
    }
    env.shared
        .sessions
        .with(client_id, |s: &mut Session| {
            let new = patterns.iter().filter(|p| !s.subs.contains(p)).count();
            if s.subs.len() + new > max {
                return Err("403::too many subscriptions (bayeux.max-subscriptions)");
            }
            if let Some(e) = expires_at {
                s.expires_at = Some(s.expires_at.map_or(e, |old| old.min(e)));
            }
            for p in patterns {
                if !s.subs.contains(&p) {
                    s.subs.push(p);
                }
            }
            let mut lookups = Vec::new();
            for (mailbox, position) in positions {
                if s.cursor(&mailbox).is_some() {
                    continue;
                }
                match position {
                    Some(position) => s.follows.push((MailboxName::new(&*mailbox), position)),
                    None => lookups.push(mailbox),
                }
            }
            Ok(((s.wild(), s.held), lookups))
        })
        .unwrap_or(Err("402::session_unknown"))
}

fn denied_text(denied: crate::auth::Denied) -> &'static str {
    use crate::auth::Denied;
    match denied {
        Denied::Missing => "401::token required",
        Denied::Expired => "401::token expired",
        _ => "401::invalid token",
    }
}

/// A client's publish to a mailbox's channel.
fn publish(mailbox: &str, message: &Map<String, Value>, env: &Env<'_>, batch: &mut Batch) -> Value {
    let channel = channel::of_mailbox(mailbox);
    if !env.shared.config().bayeux.client_publish {
        return error(message, Some(&channel), "403::publish not allowed");
    }
    let Some(data) = message.get("data") else {
        return error(
            message,
            Some(&channel),
            "402:data:Missing required parameter",
        );
    };
    let client_id = message.get("clientId").and_then(Value::as_str);
    let known = client_id.and_then(|id| env.shared.sessions.with(id, |s| s.token.clone()));
    let Some(stored_token) = known else {
        return unknown_session(message, &channel);
    };
    if let Some(auth) = &*env.shared.auth() {
        let token = ext_token(message).or(stored_token.as_deref()).or(env.token);
        if let Err(denied) = auth.check_publish(token, mailbox) {
            let why = if denied.is_forbidden() {
                "403::publish not granted"
            } else {
                denied_text(denied)
            };
            return error(message, Some(&channel), why);
        }
    }
    // A Value serialises into a Vec without fail.
    let payload = serde_json::to_vec(data).expect("JSON to a Vec");
    batch.publishes.push(ToPublish {
        reply: batch.replies.len(),
        mailbox: mailbox.into(),
        payload,
    });
    ok(message, &channel, None)
}

fn ext_token(message: &Map<String, Value>) -> Option<&[u8]> {
    message
        .get("ext")
        .and_then(|e| e.get("token"))
        .and_then(Value::as_str)
        .map(str::as_bytes)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A successful reply echoing the request's channel and id.
fn ok(message: &Map<String, Value>, channel: &str, client_id: Option<&str>) -> Value {
    let mut reply = json!({"channel": channel, "successful": true});
    if let Some(id) = message.get("id") {
        reply["id"] = id.clone();
    }
    if let Some(client) = client_id {
        reply["clientId"] = json!(client);
    }
    reply
}

/// A refusal: `successful: false` and a Bayeux error string.
pub fn error(message: &Map<String, Value>, channel: Option<&str>, why: &str) -> Value {
    let mut reply = json!({"successful": false, "error": why});
    if let Some(channel) = channel {
        reply["channel"] = json!(channel);
    }
    if let Some(id) = message.get("id") {
        reply["id"] = id.clone();
    }
    if let Some(client) = message.get("clientId") {
        reply["clientId"] = client.clone();
    }
    reply
}

/// Unknown or expired clientId: both clients handshake again on this advice.
fn unknown_session(message: &Map<String, Value>, channel: &str) -> Value {
    let mut reply = error(message, Some(channel), "402::session_unknown");
    reply["advice"] = json!({"reconnect": "handshake", "interval": 0});
    reply
}

fn with_subscription(mut reply: Value, subscription: Value) -> Value {
    reply["subscription"] = subscription;
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Answer, Published};

    fn shared(extra: &str) -> Arc<Shared> {
        let config = crate::Config::parse_str(extra, std::path::Path::new("test.conf")).unwrap();
        Shared::for_tests(config)
    }

    fn publish(shared: &Shared, mailbox: &[u8], payload: &[u8], now: Instant) -> Published {
        match shared.store.publish(mailbox, payload.to_vec(), now, 0) {
            Answer::Ready(Ok(published)) => published,
            _ => panic!("the local store stores at once"),
        }
    }

    fn run(shared: &Shared, messages: Value) -> Batch {
        let Value::Array(list) = messages else {
            panic!("an array")
        };
        let maps = list
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => m,
                _ => panic!("objects"),
            })
            .collect();
        let env = Env {
            shared,
            token: None,
            now: Instant::now(),
        };
        process(maps, &env)
    }

    fn handshake(shared: &Shared) -> String {
        let batch = run(
            shared,
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling", "websocket"], "id": "1"}]),
        );
        let reply = &batch.replies[0];
        assert_eq!(reply["successful"], true);
        assert_eq!(reply["id"], "1");
        assert_eq!(reply["advice"]["timeout"], 30000);
        reply["clientId"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_connect_follows_what_was_subscribed_from_where_the_mailbox_stood() {
        let s = shared("");
        let now = Instant::now();
        publish(&s, b"a/b", b"old", now);
        let id = handshake(&s);
        let batch = run(
            &s,
            json!([{"channel": "/meta/subscribe", "clientId": id,
                    "subscription": ["/a/b", "/c/**"], "id": "2"}]),
        );
        assert_eq!(batch.replies[0]["successful"], true);
        assert_eq!(batch.replies[0]["subscription"], json!(["/a/b", "/c/**"]));
        let batch = run(
            &s,
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]),
        );
        let connect = batch.connect.expect("a connect to answer");
        assert!(connect.hold, "alone and without timeout 0: held");
        assert_eq!(
            connect.follows.len(),
            1,
            "the exact channel; patterns follow on publish"
        );
        assert_eq!(connect.follows[0].1.seq, 1, "from after the old message");
        // A publish under the pattern adds the mailbox, from just before it.
        let published = publish(&s, b"c/d/e", b"new", now);
        assert!(
            s.sessions.on_publish(&published.message).is_empty(),
            "not held"
        );
        let follows = s.sessions.with(&id, |s| s.follows.clone()).unwrap();
        assert_eq!(follows.len(), 2);
        assert_eq!(follows[1].1.seq, 0);
        // Batched with another message, or with timeout 0: answered at once.
        let batch = run(
            &s,
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
                    "advice": {"timeout": 0}}]),
        );
        assert!(!batch.connect.unwrap().hold);
    }

    #[test]
    fn client_publish_is_refused_by_default_and_stored_as_json_when_enabled() {
        let s = shared("");
        let id = handshake(&s);
        let batch = run(
            &s,
            json!([{"channel": "/x", "clientId": id, "data": {"a": 1}, "id": "p"}]),
        );
        assert_eq!(batch.replies[0]["error"], "403::publish not allowed");
        assert!(batch.publishes.is_empty());
        let s = shared("bayeux.client-publish = \"enable\"\n");
        let id = handshake(&s);
        let batch = run(
            &s,
            json!([{"channel": "/x/y", "clientId": id, "data": {"a": [1, "b"]}, "id": "p"}]),
        );
        assert_eq!(
            batch.replies[0],
            json!({"channel": "/x/y", "successful": true, "id": "p"})
        );
        assert_eq!(batch.publishes[0].payload, br#"{"a":[1,"b"]}"#);
        assert_eq!(&*batch.publishes[0].mailbox, "x/y");
        let batch = run(&s, json!([{"channel": "/x/*", "clientId": id, "data": 1}]));
        assert_eq!(batch.replies[0]["error"], channel::INVALID);
    }

    #[test]
    fn unsubscribe_drops_the_mailbox_and_disconnect_the_session() {
        let s = shared("");
        let id = handshake(&s);
        run(
            &s,
            json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/a"}]),
        );
        let batch = run(
            &s,
            json!([{"channel": "/meta/unsubscribe", "clientId": id, "subscription": "/a"}]),
        );
        assert_eq!(batch.replies[0]["successful"], true);
        assert!(s.sessions.with(&id, |s| s.follows.is_empty()).unwrap());
        let batch = run(&s, json!([{"channel": "/meta/disconnect", "clientId": id}]));
        assert_eq!(batch.replies[0]["successful"], true);
        let batch = run(
            &s,
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]),
        );
        assert!(batch.connect.is_none());
        assert_eq!(batch.replies[0]["advice"]["reconnect"], "handshake");
    }

    /// What the general path makes of `text`, for comparing the fast one.
    fn general(shared: &Shared, text: &str) -> Batch {
        let list: Value = serde_json::from_str(text).unwrap();
        let list = if list.is_array() { list } else { json!([list]) };
        run(shared, list)
    }

    #[test]
    fn a_lone_connect_is_answered_as_the_general_path_answers_it() {
        let s = shared("");
        let id = handshake(&s);
        run(
            &s,
            json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/a/b"}]),
        );
        let env = Env {
            shared: &s,
            token: None,
            now: Instant::now(),
        };
        let c = format!(
            r#""channel":"/meta/connect","clientId":"{id}","connectionType":"long-polling""#
        );
        // Taken by the fast path, each exactly as the general path does it.
        for text in [
            format!("[{{{c}}}]"),
            format!(" {{{c}}} "),
            format!(r#"[{{{c},"id":"7"}}]"#),
            format!(r#"[{{{c},"id":42,"advice":{{"timeout":0,"interval":0}}}}]"#),
            format!(r#"[{{{c},"advice":{{"timeout":30000}},"ext":{{"ack":3}}}}]"#),
            format!(r#"[{{{c},"id":{{"nested":["x"]}}}}]"#),
        ] {
            let fast = lone_connect(text.as_bytes(), &env)
                .expect(&text)
                .connect
                .unwrap();
            let slow = general(&s, &text).connect.unwrap();
            let as_json = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
            assert_eq!(as_json(&fast.reply), as_json(&slow.reply), "{text}");
            assert_eq!(fast.hold, slow.hold, "{text}");
            assert_eq!(fast.follows, slow.follows, "{text}");
            assert!(Arc::ptr_eq(&fast.session, &slow.session), "{text}");
        }
        // Left to the general path.
        let other =
            format!(r#"{{"channel":"/meta/subscribe","clientId":"{id}","subscription":"/x"}}"#);
        for text in [
            format!("[{{{c}}},{{{c}}}]"),
            other.clone(),
            format!("[{other}]"),
            r#"[{"channel":"/meta/connect","clientId":"nobody"}]"#.to_string(),
            format!(r#"[{{"channel":"\/meta\/connect","clientId":"{id}"}}]"#),
            format!(r#"[{{{c},"advice":{{"timeout":"0"}}}}]"#),
            format!(r#"[{{{c},"clientId":"{id}"}}]"#),
            "[]".to_string(),
            "[1]".to_string(),
            "not json".to_string(),
        ] {
            assert!(lone_connect(text.as_bytes(), &env).is_none(), "{text}");
        }
        // An expired session: the general path tells it to handshake.
        s.sessions.with(&id, |s| s.expires_at = Some(1));
        assert!(lone_connect(format!("[{{{c}}}]").as_bytes(), &env).is_none());
    }
}
