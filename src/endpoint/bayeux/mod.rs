//! The Bayeux endpoint at `bayeux.path`, for unmodified CometD and Faye
//! clients (docs/bayeux.md): reads the messages of a request (a JSON POST,
//! a form POST's `message=`, or a callback-polling GET's `?message=`), runs
//! them ([`protocol`]), and answers at once or hands the worker a held
//! `/meta/connect`, which attaches to the session's mailboxes exactly like
//! a multiplexed long-poll.

pub mod protocol;
pub mod reply;

use std::borrow::Cow;
use std::time::Instant;

use serde_json::{Map, Value};

use super::{Body, Context, Follow, Outcome, Response, Subscribe};
use crate::auth::TokenSource;
use crate::http::{self, HttpError, Method, Request, Status, cors};
use crate::session::Sessions;
use crate::shared::Shared;
use crate::transport::{self, ReplyTo, Transport};

/// What the worker does for a Bayeux request: store the batch's publishes
/// and look up its subscriptions' positions (the local store answers at
/// once, Redis later), wake the held connects it changed, then
/// [`Plan::finish`].
#[derive(Debug)]
pub struct Plan {
    pub batch: protocol::Batch,
    pub reply: ReplyTo,
}

#[derive(Debug)]
pub enum Then {
    Respond(Response),
    /// A `/meta/connect`: attach to the session's mailboxes, then hold or
    /// answer (`Connect::hold`).
    Connect(Box<Subscribe>),
}

/// The Bayeux side of a connect's subscription plan.
#[derive(Debug)]
pub struct Connect {
    pub session: crate::session::SessionRef,
    /// Tells this hold from any later one of the session.
    pub serial: u64,
    /// The connect's reply and the batch's others, JSON objects joined by
    /// `,`: the answer's array starts with them.
    pub replies: Vec<u8>,
    /// Wait for mail (else answer with what is there now).
    pub hold: bool,
}

pub use crate::session::WsSession;

/// Batches one Bayeux WebSocket may have waiting for the store: a client
/// sends a subscribe or a publish at a time, a few at most; past this its
/// messages are refused (`503::`) until the store caught up.
pub const MAX_WS_WAITING: usize = 16;

/// Suffixes CometD appends to the URL (`appendMessageTypeToURL`).
const SUFFIXES: [&[u8]; 7] = [
    b"",
    b"/",
    b"/handshake",
    b"/connect",
    b"/subscribe",
    b"/unsubscribe",
    b"/disconnect",
];

pub fn handle(
    req: &Request<'_>,
    body: &[u8],
    rest: &[u8],
    ctx: &Context,
    shared: &Shared,
) -> Result<Outcome, HttpError> {
    if !SUFFIXES.contains(&rest) {
        return Err(HttpError::new(Status::NotFound, "not found"));
    }
    match req.method() {
        Method::Options => return Ok(Outcome::Respond(preflight(ctx))),
        Method::Get | Method::Post => {}
        Method::Head | Method::Other => {
            return Err(HttpError::new(
                Status::MethodNotAllowed,
                "use POST (or GET with ?message=) on the Bayeux endpoint",
            ));
        }
    }
    if req.upgrade_websocket {
        return upgrade(req, ctx, shared);
    }
    let mut text: Option<Vec<u8>> = None;
    let mut callback: Option<Vec<u8>> = None;
    let mut query_token: Option<Vec<u8>> = None;
    for (key, value) in http::query_pairs(req.query) {
        match key.as_slice() {
            b"message" => text = Some(value),
            b"jsonp" => callback = Some(value),
            b"token" => query_token = Some(value),
            _ => {}
        }
    }
    let text: Cow<'_, [u8]> = if req.method() == Method::Post {
        post_messages(body)
    } else {
        text.map_or(Cow::Borrowed(&[][..]), Cow::Owned)
    };
    if let Some(cb) = &callback
        && !transport::is_valid_callback(cb)
    {
        return Err(HttpError::bad_request(
            "invalid jsonp callback: use a JavaScript identifier or dotted path of at most 64 characters",
        ));
    }
    let callback = callback.map(|c| {
        // Validated above: ASCII only.
        String::from_utf8(c)
            .expect("callback is ASCII")
            .into_boxed_str()
    });
    let found = crate::auth::find_token(
        req.authorization,
        query_token.as_deref(),
        req.cookie,
        shared.auth().as_ref().and_then(|a| a.cookie.as_deref()),
    );
    if matches!(found, Some((_, TokenSource::Cookie)))
        && callback.is_some()
        && !same_site(req, &shared.config().mailbox.cors_origins)
    {
        return Err(HttpError::new(
            Status::Forbidden,
            "cookie-authenticated callback-polling needs a Referer of this site or of mailbox.cors-origins; pass ext.token instead",
        ));
    }
    let env = protocol::Env {
        shared,
        token: found.map(|(t, _)| t),
        now: Instant::now(),
    };
    let batch = match protocol::lone_connect(&text, &env) {
        Some(batch) => batch,
        None => protocol::process(parse_messages(&text)?, &env),
    };
    let reply = ReplyTo {
        http11: ctx.http11,
        keep_alive: ctx.keep_alive,
        cors: ctx.cors.clone(),
        callback,
    };
    Ok(Outcome::Bayeux(Box::new(Plan { batch, reply })))
}

impl Plan {
    /// The answer, once the store answered what the batch asked: a
    /// response with the replies, or the connect to attach (reading the
    /// session's mailboxes now, subscriptions of this batch included).
    pub fn finish(self, shared: &Shared) -> Then {
        let Plan { batch, reply: to } = self;
        let Some(connect) = batch.connect else {
            let replies = join(&batch.replies);
            let callback = to.callback.as_deref();
            let kind = if callback.is_some() {
                reply::SCRIPT
            } else {
                reply::JSON
            };
            let mut headers = b"Content-Type: ".to_vec();
            headers.extend_from_slice(kind);
            headers.extend_from_slice(b"\r\nCache-Control: no-cache\r\n");
            return Then::Respond(Response {
                status: Status::Ok,
                headers,
                body: Body::Owned(reply::wrap(callback, &replies)),
                head_only: false,
                grants_any_origin: false,
            });
        };
        let mut replies = connect.reply;
        for r in &batch.replies {
            replies.push(b',');
            replies.extend_from_slice(&to_json(r));
        }
        // A subscribe after the connect in the same batch (or answered by
        // the store since) changed what the session follows.
        let follows = if batch.replies.is_empty() {
            connect.follows
        } else {
            Sessions::with_held(&connect.session, |s| s.follows.clone()).unwrap_or(connect.follows)
        };
        let follows = follows
            .into_iter()
            .map(|(mailbox, cursor)| Follow {
                mailbox,
                since: Some(cursor),
            })
            .collect();
        let transport = if to.callback.is_some() {
            Transport::Jsonp
        } else {
            Transport::LongPoll
        };
        Then::Connect(Box::new(Subscribe {
            follows,
            transport,
            reply: to,
            head_only: false,
            token_expires_at: None,
            websocket_key: None,
            subject: None,
            upstream: Vec::new(),
            bayeux_ws: None,
            bayeux: Some(Box::new(Connect {
                session: connect.session,
                serial: shared.sessions.next_serial(),
                replies,
                hold: connect.hold,
            })),
        }))
    }
}

/// A WebSocket for Bayeux messages: checked like the mailbox endpoint's
/// (version, key, Origin), then opened with no mailbox yet.
fn upgrade(req: &Request<'_>, ctx: &Context, shared: &Shared) -> Result<Outcome, HttpError> {
    let query_token = http::query_pairs(req.query)
        .find(|(k, _)| k == b"token")
        .map(|(_, v)| v);
    let found = crate::auth::find_token(
        req.authorization,
        query_token.as_deref(),
        req.cookie,
        shared.auth().as_ref().and_then(|a| a.cookie.as_deref()),
    );
    let from_cookie = matches!(found, Some((_, TokenSource::Cookie)));
    let origin_ok = super::mailbox::websocket_origin_allowed(
        req,
        &ctx.cors,
        &shared.config().mailbox.cors_origins,
        from_cookie,
    );
    transport::ws_session::check_upgrade(req, origin_ok)?;
    let session = WsSession {
        client_id: None,
        serial: shared.sessions.next_serial(),
        token: found.map(|(t, _)| t.to_vec()),
        pending_connect: None,
        waiting: 0,
        attaching: Vec::new(),
    };
    Ok(Outcome::Subscribe(Box::new(Subscribe {
        follows: Default::default(),
        transport: Transport::WebSocket,
        reply: ReplyTo {
            http11: ctx.http11,
            keep_alive: false,
            cors: ctx.cors.clone(),
            callback: None,
        },
        head_only: false,
        token_expires_at: None,
        websocket_key: req.websocket_key.map(Box::from),
        subject: None,
        upstream: Vec::new(),
        bayeux: None,
        bayeux_ws: Some(Box::new(session)),
    })))
}

/// Runs one WebSocket text message: the replies to send now (JSON objects
/// joined by `,`, possibly none), and the batch for the worker. An empty
/// array (faye's keep-alive) asks nothing.
pub fn websocket_batch(
    text: &[u8],
    token: Option<&[u8]>,
    shared: &Shared,
) -> Result<protocol::Batch, Vec<u8>> {
    if text.trim_ascii() == b"[]" {
        return Ok(protocol::Batch::default());
    }
    let env = protocol::Env {
        shared,
        token,
        now: Instant::now(),
    };
    if let Some(batch) = protocol::lone_connect(text, &env) {
        return Ok(batch);
    }
    let messages = parse_messages(text).map_err(|e| {
        let reply = serde_json::json!({"successful": false, "error": format!("400::{}", e.why)});
        to_json(&reply)
    })?;
    Ok(protocol::process(messages, &env))
}

/// JSON objects joined by `,`.
pub fn join(replies: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&to_json(r));
    }
    out
}

pub fn to_json(value: &Value) -> Vec<u8> {
    // A Value serialises into a Vec without fail.
    serde_json::to_vec(value).expect("JSON to a Vec")
}

/// A POST's messages: the body itself when it is JSON (long-polling sends
/// `application/json`), else the `message` field of a form
/// (cross-origin-long-polling posts `message=<urlencoded JSON>`).
fn post_messages(body: &[u8]) -> Cow<'_, [u8]> {
    let trimmed = body.trim_ascii_start();
    if trimmed.starts_with(b"[") || trimmed.starts_with(b"{") {
        return Cow::Borrowed(body);
    }
    Cow::Owned(
        http::query_pairs(body)
            .find(|(k, _)| k == b"message")
            .map(|(_, v)| v)
            .unwrap_or_default(),
    )
}

/// One message object or an array of them; anything else is a 400.
pub fn parse_messages(text: &[u8]) -> Result<Vec<Map<String, Value>>, HttpError> {
    let bad =
        || HttpError::bad_request("malformed Bayeux message: expected a JSON array of objects");
    let value: Value = serde_json::from_slice(text).map_err(|_| bad())?;
    let list = match value {
        Value::Array(list) => list,
        object @ Value::Object(_) => vec![object],
        _ => return Err(bad()),
    };
    if list.is_empty() || list.len() > protocol::MAX_BATCH {
        return Err(HttpError::bad_request(
            "a Bayeux request carries 1 to 100 messages",
        ));
    }
    list.into_iter()
        .map(|v| match v {
            Value::Object(map) => Ok(map),
            _ => Err(bad()),
        })
        .collect()
}

fn preflight(ctx: &Context) -> Response {
    let mut headers = Vec::new();
    if ctx.cors != http::Cors::None {
        headers.extend_from_slice(
            b"Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
              Access-Control-Allow-Headers: Authorization, Accept, Cache-Control, Content-Type, Pragma, X-Requested-With\r\n\
              Access-Control-Max-Age: 86400\r\n",
        );
    }
    Response {
        status: Status::NoContent,
        headers,
        body: Body::Empty,
        head_only: true,
        grants_any_origin: false,
    }
}

/// A callback-polling request comes from a `<script>` tag: with a cookie
/// token, its Referer must name this site or a listed origin.
fn same_site(req: &Request<'_>, allowed: &[String]) -> bool {
    match req.origin.or(req.referer) {
        Some(from) => cors::origin_allowed(from, req.host, allowed),
        None => false,
    }
}
