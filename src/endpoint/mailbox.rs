//! The mailbox endpoint, `GET|HEAD|OPTIONS {url-prefix}{name}`: validates the
//! name, the transport and the cursor, checks the token, and answers with
//! the plan the worker carries out ([`Subscribe`]), a CORS preflight, or an
//! error. `POST` (messages back up, `mailbox.upstream`) is [`super::post`].

use super::{Body, Context, Follow, Outcome, Response, Subscribe};
use crate::auth::TokenSource;
use crate::http::{self, HttpError, Method, Request, Status, cors};
use crate::shared::Shared;
use crate::store::{self, Cursor};
use crate::transport::{self, ReplyTo, Transport, ws_session};

pub fn handle(
    req: &Request<'_>,
    raw_name: &[u8],
    body: &[u8],
    ctx: &Context,
    shared: &Shared,
) -> Result<Outcome, HttpError> {
    match req.method() {
        Method::Get | Method::Head => {}
        Method::Post => return super::post::handle(req, raw_name, body, shared),
        Method::Options => {
            let upstream = shared.config().mailbox.upstream;
            return Ok(Outcome::Respond(preflight(ctx, upstream)));
        }
        Method::Other => {
            // With upstream on, POST is one of the methods a mailbox takes.
            if shared.config().mailbox.upstream {
                let mut refused = HttpError::new(
                    Status::MethodNotAllowed,
                    "use GET, HEAD, POST or OPTIONS on a mailbox",
                );
                refused.headers = b"Allow: GET, HEAD, POST, OPTIONS\r\n";
                return Err(refused);
            }
            return Err(HttpError::new(
                Status::MethodNotAllowed,
                "use GET, HEAD or OPTIONS on a mailbox",
            ));
        }
    }
    let names = mailbox_names(raw_name, shared.config().mailbox.max_per_connection)?;
    let choice = transport::choose(req)?;
    let cursors = cursors(choice.since.as_deref(), names.len())?;
    let cors_origins = &shared.config().mailbox.cors_origins;
    let mut token_expires_at: Option<u64> = None;
    let mut subject: Option<std::sync::Arc<str>> = None;
    let upstream_on = shared.config().mailbox.upstream;
    // Without auth every followed mailbox may be sent to (when upstream is
    // on); with it, those the token's `publish` claim grants.
    let mut publish: Option<Vec<String>> = shared.auth().is_some().then(Vec::new);
    let mut from_cookie = false;
    if let Some(auth) = &*shared.auth()
        && names.iter().any(|name| auth.needs_token(name))
    {
        let found = crate::auth::find_token(
            req.authorization,
            choice.token.as_deref(),
            req.cookie,
            auth.cookie.as_deref(),
        );
        from_cookie = matches!(found, Some((_, TokenSource::Cookie)));
        if from_cookie
            && choice.transport == Transport::Jsonp
            && !jsonp_same_site(req, cors_origins)
        {
            // A `<script>` tag on any site would carry the user's cookie:
            // cookie-authenticated JSONP is for pages of this site (or a
            // listed origin); others pass `?token=`.
            return Err(HttpError::new(
                Status::Forbidden,
                "cookie-authenticated JSONP needs a Referer of this site or of mailbox.cors-origins; pass ?token= instead",
            ));
        }
        // Every mailbox must be granted; what is held open ends when the
        // token does.
        for name in names.iter().filter(|name| auth.needs_token(name)) {
            let grant = auth.check(found.map(|(token, _)| token), name)?;
            token_expires_at =
                Some(token_expires_at.map_or(grant.expires_at, |e| e.min(grant.expires_at)));
            subject = grant.subject.map(Into::into);
            publish = Some(grant.publish);
        }
    }
    let upstream = match (upstream_on, &publish) {
        (false, _) => Vec::new(),
        (true, None) => names.iter().map(|n| n.as_str().into()).collect(),
        (true, Some(claim)) => names
            .iter()
            .filter(|n| crate::auth::grants(claim, n))
            .map(|n| n.as_str().into())
            .collect(),
    };
    let follows = names
        .into_iter()
        .zip(cursors)
        .map(|(mailbox, since)| Follow {
            mailbox: mailbox.into(),
            since,
        })
        .collect();
    let websocket_key = if choice.transport == Transport::WebSocket {
        let origin_ok = websocket_origin_allowed(req, &ctx.cors, cors_origins, from_cookie);
        ws_session::check_upgrade(req, origin_ok)?;
        req.websocket_key.map(Box::from)
    } else {
        None
    };
    Ok(Outcome::Subscribe(Box::new(Subscribe {
        follows,
        transport: choice.transport,
        reply: ReplyTo {
            http11: ctx.http11,
            keep_alive: ctx.keep_alive,
            cors: ctx.cors.clone(),
            callback: choice.callback,
        },
        head_only: req.method() == Method::Head,
        token_expires_at,
        websocket_key,
        subject,
        upstream,
        bayeux: None,
        bayeux_ws: None,
    })))
}

/// The mailboxes a path names: one, or several separated by `,` (each
/// percent-decoded and valid, no name twice, at most `max`).
fn mailbox_names(raw: &[u8], max: usize) -> Result<Vec<String>, HttpError> {
    let mut names: Vec<String> = Vec::new();
    for raw_name in raw.split(|&b| b == b',') {
        let name = http::percent_decode(raw_name, false);
        if !store::is_valid_name(&name) {
            return Err(HttpError::bad_request(
                "invalid mailbox name: use 1-200 characters of A-Z a-z 0-9 . _ : @ - and / between segments (several separated by ,)",
            ));
        }
        // Validated above: ASCII.
        let name = String::from_utf8(name).expect("mailbox names are ASCII");
        if names.contains(&name) {
            return Err(HttpError::bad_request("a mailbox is named twice"));
        }
        names.push(name);
    }
    if names.len() > max {
        return Err(HttpError::new(
            Status::BadRequest,
            format!("too many mailboxes on one connection (mailbox.max-per-connection = {max})"),
        ));
    }
    Ok(names)
}

/// The cursor of each mailbox: one for one mailbox; for several, as many
/// as there are mailboxes, joined by `,` in the same order (an empty one
/// means "from the start").
fn cursors(raw: Option<&[u8]>, count: usize) -> Result<Vec<Option<Cursor>>, HttpError> {
    let Some(raw) = raw else {
        return Ok((0..count).map(|_| None).collect());
    };
    let parts: Vec<&[u8]> = raw.split(|&b| b == b',').collect();
    if parts.len() != count {
        return Err(HttpError::bad_request(
            "the cursor must hold one position per mailbox, joined by ,",
        ));
    }
    parts
        .into_iter()
        .map(|part| match part {
            b"" => Ok(None),
            text => Cursor::parse(text)
                .map(Some)
                .ok_or(HttpError::bad_request("unparsable cursor")),
        })
        .collect()
}

/// With `upstream`, browsers may POST too.
fn preflight(ctx: &Context, upstream: bool) -> Response {
    let mut headers = Vec::new();
    if ctx.cors != http::Cors::None {
        // The CORS grant itself is written with every response.
        headers.extend_from_slice(if upstream {
            b"Access-Control-Allow-Methods: GET, HEAD, POST, OPTIONS\r\n"
        } else {
            b"Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
        });
        headers.extend_from_slice(
            b"Access-Control-Allow-Headers: Last-Event-ID, Authorization, Accept, Cache-Control, Content-Type, X-Requested-With\r\n\
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

/// Browsers do not apply CORS to WebSocket, so the gateway checks Origin
/// itself: when `mailbox.cors-origins` is set, or whenever a cookie carried
/// the token (any site's page would send it). Listed origins and the
/// gateway's own host are let in; a request without Origin is not from a
/// browser page.
pub(super) fn websocket_origin_allowed(
    req: &Request<'_>,
    cors: &http::Cors,
    allowed: &[String],
    from_cookie: bool,
) -> bool {
    let Some(origin) = req.origin else {
        return true;
    };
    if (allowed.is_empty() && !from_cookie) || *cors != http::Cors::None {
        return true;
    }
    cors::origin_allowed(origin, req.host, allowed)
}

/// A JSONP request comes from a `<script>` tag, which sends no Origin but
/// (unless the page forbids it) a Referer: it must name this site or a
/// listed origin.
fn jsonp_same_site(req: &Request<'_>, allowed: &[String]) -> bool {
    match req.origin.or(req.referer) {
        Some(from) => cors::origin_allowed(from, req.host, allowed),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::request;
    use super::*;
    use crate::http::Cors;

    fn context() -> Context {
        Context {
            http11: true,
            keep_alive: true,
            cors: Cors::None,
        }
    }

    fn shared(extra: &str) -> std::sync::Arc<Shared> {
        let config = crate::Config::parse_str(extra, std::path::Path::new("test.conf")).unwrap();
        Shared::for_tests(config)
    }

    fn outcome(raw: &str, shared: &Shared) -> Result<Outcome, HttpError> {
        let req = request(raw);
        super::super::handle(&req, b"", &context(), shared)
    }

    fn subscribe(raw: &str, shared: &Shared) -> Subscribe {
        match outcome(raw, shared) {
            Ok(Outcome::Subscribe(s)) => *s,
            other => panic!("{raw}: {other:?}"),
        }
    }

    fn status(raw: &str, shared: &Shared) -> u16 {
        match outcome(raw, shared) {
            Err(e) => e.status.code(),
            Ok(Outcome::Respond(r)) => r.status.code(),
            Ok(Outcome::Subscribe(_)) => 200,
            Ok(Outcome::Upstream(_)) => 204,
            Ok(Outcome::Bayeux(_)) => panic!("{raw}: the mailbox endpoint answered for Bayeux"),
        }
    }

    #[test]
    fn the_transport_comes_from_the_url_and_headers() {
        let s = shared("");
        let cases = [
            (
                "GET /mailbox/a HTTP/1.1\r\nHost: h\r\n\r\n",
                Transport::LongPoll,
            ),
            (
                "GET /mailbox/a?callback=cb HTTP/1.1\r\nHost: h\r\n\r\n",
                Transport::Jsonp,
            ),
            (
                "GET /mailbox/a HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n",
                Transport::Stream(transport::StreamKind::Sse),
            ),
            (
                "GET /mailbox/a?transport=stream HTTP/1.1\r\nHost: h\r\n\r\n",
                Transport::Stream(transport::StreamKind::Ndjson),
            ),
            (
                "GET /mailbox/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                Transport::WebSocket,
            ),
        ];
        for (raw, transport) in cases {
            let plan = subscribe(raw, &s);
            assert_eq!(plan.transport, transport, "{raw}");
            assert_eq!(plan.follows[0].mailbox, "a");
        }
        let head = subscribe("HEAD /mailbox/a HTTP/1.1\r\nHost: h\r\n\r\n", &s);
        assert_eq!(head.register(), crate::store::Register::Never);
    }

    #[test]
    fn several_mailboxes_with_one_cursor_each() {
        let s = shared("mailbox.max-per-connection = 3\n");
        let plan = subscribe(
            "GET /mailbox/user:alice,room%3A42,ticker?since=,1.2-0000000003, HTTP/1.1\r\nHost: h\r\n\r\n",
            &s,
        );
        let names: Vec<&str> = plan.follows.iter().map(|f| f.mailbox.as_str()).collect();
        assert_eq!(names, ["user:alice", "room:42", "ticker"]);
        assert!(plan.is_multiplexed());
        assert_eq!(plan.follows[1].since.unwrap().seq, 3);
        assert!(plan.follows[0].since.is_none() && plan.follows[2].since.is_none());
        for bad in [
            "GET /mailbox/a,b,c,d HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /mailbox/a,a HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /mailbox/a,,b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /mailbox/a,b?since=1.2-0000000003 HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(status(bad, &s), 400, "{bad}");
        }
    }

    #[test]
    fn bad_requests_get_their_status() {
        let s = shared("");
        for (raw, code) in [
            ("GET /mailbox/a%2F%2Fb HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET /mailbox/a/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET /mailbox/a?since=zzz HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (
                "GET /mailbox/a?transport=carrier-pigeon HTTP/1.1\r\nHost: h\r\n\r\n",
                400,
            ),
            ("DELETE /mailbox/a HTTP/1.1\r\nHost: h\r\n\r\n", 405),
            ("OPTIONS /mailbox/a HTTP/1.1\r\nHost: h\r\n\r\n", 204),
            ("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 204),
            ("GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n", 404),
            (
                "GET /mailbox/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                426,
            ),
        ] {
            assert_eq!(status(raw, &s), code, "{raw}");
        }
    }

    #[test]
    fn cookie_tokens_need_a_same_site_origin_for_websocket_and_jsonp() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let key = b"0123456789abcdef0123456789abcdef";
        std::fs::write(&secret, key).unwrap();
        let s = shared(&format!(
            "auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\nauth.cookie = \"cbt\"\n",
            secret.display()
        ));
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"exp": exp, "mailboxes": ["a"]}),
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap();
        let ws = |origin: &str| {
            format!(
                "GET /mailbox/a HTTP/1.1\r\nHost: push.example\r\nOrigin: {origin}\r\nCookie: cbt={token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
        };
        assert_eq!(status(&ws("https://push.example"), &s), 200);
        assert_eq!(status(&ws("https://evil.example"), &s), 403);
        let jsonp = |referer: &str| {
            format!(
                "GET /mailbox/a?callback=cb HTTP/1.1\r\nHost: push.example\r\n{referer}Cookie: cbt={token}\r\n\r\n"
            )
        };
        assert_eq!(
            status(&jsonp("Referer: https://push.example/page\r\n"), &s),
            200
        );
        assert_eq!(
            status(&jsonp("Referer: https://evil.example/page\r\n"), &s),
            403
        );
        assert_eq!(status(&jsonp(""), &s), 403);
        // The same token in the URL is the page's own choice: allowed.
        let query = format!(
            "GET /mailbox/a?callback=cb&token={token} HTTP/1.1\r\nHost: push.example\r\nReferer: https://evil.example/\r\n\r\n"
        );
        assert_eq!(status(&query, &s), 200);
    }
}
