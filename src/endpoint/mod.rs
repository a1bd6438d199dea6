//! What a request asks for, decided without sockets: the router maps a
//! path to an [`Endpoint`], and each endpoint turns a parsed request into an
//! [`Outcome`] (or an [`HttpError`]) that the worker acts on. Routing, auth
//! and the choice of transport are unit-tested here.
//!
//! Endpoints today: the mailbox (`mailbox.url-prefix`), Bayeux
//! (`bayeux.path`, for CometD and Faye clients), the browser client script,
//! and `OPTIONS *`.

pub mod bayeux;
pub mod mailbox;
pub mod post;
pub mod script;

use crate::http::{Cors, HttpError, Method, Request, Status};
use crate::shared::Shared;
use crate::store::{Cursor, Register};
use crate::transport::{ReplyTo, Transport};

/// Where a path leads.
#[derive(Debug)]
pub enum Endpoint<'r> {
    /// `{url-prefix}{name}`: the name still percent-encoded.
    Mailbox(&'r [u8]),
    /// `{bayeux.path}` and what follows it (CometD appends `/connect` …).
    Bayeux(&'r [u8]),
    ClientScript(&'static script::ClientScript),
    /// `OPTIONS *`: what the server as a whole allows.
    Server,
    NotFound,
}

pub fn route<'r>(req: &Request<'r>, url_prefix: &str, bayeux_path: &str) -> Endpoint<'r> {
    if let Some(name) = req.path.strip_prefix(url_prefix.as_bytes()) {
        return Endpoint::Mailbox(name);
    }
    if !bayeux_path.is_empty()
        && let Some(rest) = req.path.strip_prefix(bayeux_path.as_bytes())
        && (rest.is_empty() || rest.starts_with(b"/"))
    {
        return Endpoint::Bayeux(rest);
    }
    if req.path == b"*" {
        return Endpoint::Server;
    }
    match script::find(req.path) {
        Some(script) => Endpoint::ClientScript(script),
        None => Endpoint::NotFound,
    }
}

/// What the worker knows of a request before any endpoint looks at it,
/// and what every answer to it needs.
#[derive(Debug)]
pub struct Context {
    pub http11: bool,
    /// Keep the connection after the answer: the client asked, and the
    /// gateway is not shutting down.
    pub keep_alive: bool,
    pub cors: Cors,
}

/// A complete response to write at once.
#[derive(Debug)]
pub struct Response {
    pub status: Status,
    /// Header lines beyond the ones every response carries, each ending
    /// in CRLF; `Content-Length` is added from the body.
    pub headers: Vec<u8>,
    pub body: Body,
    /// The head only (HEAD, 304): the length of `body` is still announced
    /// unless `status` has no body.
    pub head_only: bool,
    /// `headers` carry `Access-Control-Allow-Origin: *`: no per-origin
    /// grant is added (two such headers make browsers refuse the response).
    pub grants_any_origin: bool,
}

#[derive(Debug)]
pub enum Body {
    Empty,
    /// Embedded in the binary: queued by reference, never copied.
    Static(&'static [u8]),
    /// Built for this request (a Bayeux reply).
    Owned(Vec<u8>),
}

/// One mailbox a subscription follows, and where the client stands in it.
#[derive(Debug)]
pub struct Follow {
    pub mailbox: crate::session::MailboxName,
    pub since: Option<Cursor>,
}

/// The mailboxes of one request: the first without an allocation.
pub type FollowList = smallvec::SmallVec<[Follow; 1]>;

/// Attach to the mailboxes (one, or several on one connection), then hold,
/// stream or upgrade as `transport` says.
#[derive(Debug)]
pub struct Subscribe {
    pub follows: FollowList,
    pub transport: Transport,
    pub reply: ReplyTo,
    /// HEAD: answer what a GET would, without registering or a body.
    pub head_only: bool,
    /// The token's `exp` (Unix seconds): what is held open ends then.
    pub token_expires_at: Option<u64>,
    /// The client's `Sec-WebSocket-Key`, for the 101.
    pub websocket_key: Option<Box<[u8]>>,
    /// The token's `sub` claim: the subject of presence and upstream events.
    pub subject: Option<std::sync::Arc<str>>,
    /// With `mailbox.upstream` on: the followed mailboxes this client may
    /// send to (all without auth; those the `publish` claim grants with).
    pub upstream: Vec<std::sync::Arc<str>>,
    /// A Bayeux `/meta/connect` (or a Bayeux WebSocket): what the answer
    /// carries besides deliveries, and the session to write cursors to.
    pub bayeux: Option<Box<bayeux::Connect>>,
    /// A WebSocket for Bayeux messages (`bayeux.path` upgraded).
    pub bayeux_ws: Option<Box<bayeux::WsSession>>,
}

impl Subscribe {
    /// Several mailboxes: messages name theirs, cursors are composite.
    pub fn is_multiplexed(&self) -> bool {
        self.follows.len() > 1
    }

    /// When this subscriber wants to be counted for live messages.
    pub fn register(&self) -> Register {
        if self.bayeux.as_ref().is_some_and(|b| !b.hold) {
            return Register::Never;
        }
        match (self.head_only, &self.transport) {
            (true, _) => Register::Never,
            (false, Transport::LongPoll | Transport::Jsonp) => Register::IfIdle,
            (false, Transport::Stream(_) | Transport::WebSocket) => Register::Always,
        }
    }
}

/// What the worker does next.
#[derive(Debug)]
pub enum Outcome {
    Respond(Response),
    Subscribe(Box<Subscribe>),
    /// Bayeux: publishes to announce and held connects to wake, then a
    /// response or a held connect.
    Bayeux(Box<bayeux::Plan>),
    /// A POSTed message for `__cometbox:upstream`, then its answer.
    Upstream(Box<post::Upstream>),
}

/// Routes and runs the endpoint for one request; `body` is its
/// Content-Length bytes.
pub fn handle(
    req: &Request<'_>,
    body: &[u8],
    ctx: &Context,
    shared: &Shared,
) -> Result<Outcome, HttpError> {
    let config = shared.config();
    match route(req, &config.mailbox.url_prefix, &config.bayeux.path) {
        Endpoint::Mailbox(raw_name) => mailbox::handle(req, raw_name, body, ctx, shared),
        Endpoint::Bayeux(rest) => bayeux::handle(req, body, rest, ctx, shared),
        Endpoint::ClientScript(script) => script::respond(req, script),
        Endpoint::Server => match req.method() {
            Method::Options => Ok(Outcome::Respond(Response {
                status: Status::NoContent,
                headers: b"Allow: GET, HEAD, OPTIONS\r\n".to_vec(),
                body: Body::Empty,
                head_only: true,
                grants_any_origin: false,
            })),
            _ => Err(HttpError::bad_request("* is a target for OPTIONS only")),
        },
        Endpoint::NotFound => Err(HttpError::new(Status::NotFound, "not found")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::http::{Parsed, parse_request};

    pub(crate) fn request(raw: &str) -> Request<'_> {
        match parse_request(raw.as_bytes(), 8192) {
            Parsed::Complete(req, _) => req,
            other => panic!("bad test request: {other:?}"),
        }
    }

    #[test]
    fn paths_route_to_their_endpoint() {
        let route_of = |raw: &'static str| route(&request(raw), "/mailbox/", "/bayeux");
        assert!(matches!(
            route_of("GET /mailbox/alice HTTP/1.1\r\nHost: a\r\n\r\n"),
            Endpoint::Mailbox(b"alice")
        ));
        assert!(matches!(
            route_of("GET http://a/mailbox/bob?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Endpoint::Mailbox(b"bob")
        ));
        assert!(matches!(
            route_of("GET /cometbox.js HTTP/1.1\r\nHost: a\r\n\r\n"),
            Endpoint::ClientScript(_)
        ));
        assert!(matches!(
            route_of("POST /bayeux/connect HTTP/1.1\r\nHost: a\r\n\r\n"),
            Endpoint::Bayeux(b"/connect")
        ));
        assert!(matches!(
            route_of("GET /bayeuxx HTTP/1.1\r\nHost: a\r\n\r\n"),
            Endpoint::NotFound
        ));
        assert!(matches!(
            route_of("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Endpoint::Server
        ));
        assert!(matches!(
            route_of("GET /elsewhere HTTP/1.1\r\nHost: a\r\n\r\n"),
            Endpoint::NotFound
        ));
    }
}
