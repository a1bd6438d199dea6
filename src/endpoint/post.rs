//! `POST {url-prefix}{name}` with `mailbox.upstream` on: the body, a
//! message from the browser, goes to backends subscribed to
//! `__cometbox:upstream` as `{"mailbox":…,"subject":…,"data":…}`, as a
//! WebSocket text frame does (docs/protocol.md). Nothing is stored. The
//! answer is 204; off, 405; not granted, 403; too big, 413.

use std::sync::Arc;

use super::{Body, Outcome, Response};
use crate::auth::TokenSource;
use crate::http::{self, HttpError, Request, Status, cors};
use crate::metrics;
use crate::shared::Shared;
use crate::store;

/// What the worker hands on, then the answer.
#[derive(Debug)]
pub struct Upstream {
    pub mailbox: Arc<str>,
    pub subject: Option<Arc<str>>,
    pub data: String,
    pub response: Response,
}

pub fn handle(
    req: &Request<'_>,
    raw_name: &[u8],
    body: &[u8],
    shared: &Shared,
) -> Result<Outcome, HttpError> {
    let config = shared.config();
    if !config.mailbox.upstream {
        return Err(HttpError::new(
            Status::MethodNotAllowed,
            "POST to a mailbox needs mailbox.upstream = \"enable\"; use GET, HEAD or OPTIONS",
        ));
    }
    let refused = |e: HttpError| {
        metrics::inc(&shared.metrics.upstream_refused);
        Err(e)
    };
    let name = http::percent_decode(raw_name, false);
    if !store::is_valid_name(&name) {
        return refused(HttpError::bad_request(
            "invalid mailbox name: POST names one mailbox",
        ));
    }
    let name = String::from_utf8(name).expect("valid names are ASCII");
    let limit = config.mailbox.max_message_size;
    if body.len() > limit {
        return refused(HttpError::new(
            Status::PayloadTooLarge,
            format!("a POSTed message is at most mailbox.max-message-size ({limit} bytes)"),
        ));
    }
    let Ok(data) = std::str::from_utf8(body) else {
        return refused(HttpError::bad_request(
            "a POSTed message must be UTF-8 text",
        ));
    };
    let mut subject = None;
    if let Some(auth) = &*shared.auth() {
        let query_token = http::query_pairs(req.query)
            .find(|(k, _)| k == b"token")
            .map(|(_, v)| v);
        let found = crate::auth::find_token(
            req.authorization,
            query_token.as_deref(),
            req.cookie,
            auth.cookie.as_deref(),
        );
        if matches!(found, Some((_, TokenSource::Cookie)))
            && !req.origin.or(req.referer).is_some_and(|from| {
                cors::origin_allowed(from, req.host, &config.mailbox.cors_origins)
            })
        {
            // Any site's form would carry the user's cookie.
            return refused(HttpError::new(
                Status::Forbidden,
                "a cookie-authenticated POST needs an Origin of this site or of mailbox.cors-origins",
            ));
        }
        match auth.check_publish(found.map(|(t, _)| t), &name) {
            Ok(grant) => subject = grant.subject.map(Into::into),
            Err(denied) => return refused(denied.into()),
        }
    }
    Ok(Outcome::Upstream(Box::new(Upstream {
        mailbox: name.into(),
        subject,
        data: data.to_string(),
        response: Response {
            status: Status::NoContent,
            headers: Vec::new(),
            body: Body::Empty,
            head_only: true,
            grants_any_origin: false,
        },
    })))
}
