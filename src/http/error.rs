//! The one HTTP error type: every refusal a request can meet, from parsing
//! to auth to the store, becomes an [`HttpError`], and every status it can
//! carry is chosen here, in one place. The worker writes it with one
//! function (a JSON body `{"error": "…"}`).

use std::borrow::Cow;

use super::Status;
use crate::auth::Denied;
use crate::metrics::Unavailable;

/// The 503 text when a remote store does not answer an attach in time.
pub const STORE_TIMEOUT: &str = "the store did not answer";
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: Status,
    pub why: Cow<'static, str>,
    /// Header lines the status needs (each ends in CRLF).
    pub headers: &'static [u8],
    /// Close the connection after the answer (the request stream cannot be
    /// trusted any more: a malformed head, a body we would have to skip).
    pub close: bool,
    /// The token check that refused, for the metrics' reasons.
    pub denied: Option<Denied>,
    /// The limit behind a 503, for the metrics' causes.
    pub cause: Option<Unavailable>,
}

impl HttpError {
    pub fn new(status: Status, why: impl Into<Cow<'static, str>>) -> HttpError {
        let headers: &'static [u8] = match status {
            Status::MethodNotAllowed => b"Allow: GET, HEAD, OPTIONS\r\n",
            Status::UpgradeRequired => b"Sec-WebSocket-Version: 13\r\n",
            Status::Unauthorized => {
                b"WWW-Authenticate: Bearer realm=\"cometbox\", error=\"invalid_token\"\r\n"
            }
            // Tell clients and proxies when to come back, not just "later".
            Status::ServiceUnavailable => b"Retry-After: 1\r\n",
            _ => b"",
        };
        HttpError {
            status,
            why: why.into(),
            headers,
            close: false,
            denied: None,
            cause: None,
        }
    }

    pub fn bad_request(why: &'static str) -> HttpError {
        HttpError::new(Status::BadRequest, why)
    }

    /// Why a 503 was given, as the metrics count it.
    pub fn unavailable(&self) -> Unavailable {
        match self.cause {
            Some(cause) => cause,
            None if self.why == STORE_TIMEOUT => Unavailable::StoreTimeout,
            None => Unavailable::Other,
        }
    }

    /// The answer ends the connection.
    pub fn closing(mut self) -> HttpError {
        self.close = true;
        self
    }
}

impl From<(Status, &'static str)> for HttpError {
    fn from((status, why): (Status, &'static str)) -> HttpError {
        HttpError::new(status, why)
    }
}

/// The store refuses for lack of room (mailboxes, subscribers, memory):
/// a temporary condition, 503 with `Retry-After`; a bad name is the
/// client's, 400.
impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        let status = match e {
            StoreError::BadName => Status::BadRequest,
            _ => Status::ServiceUnavailable,
        };
        let cause = match e {
            StoreError::TooManyMailboxes { .. } => Some(Unavailable::Mailboxes),
            StoreError::TooManySubscribers { .. } => Some(Unavailable::Subscribers),
            StoreError::OutOfMemory { .. } => Some(Unavailable::Memory),
            _ => None,
        };
        let mut error = HttpError::new(status, e.to_string());
        error.cause = cause;
        error
    }
}

/// No token or a bad one is 401 (with `WWW-Authenticate`); a good token
/// that does not grant the mailbox is 403.
impl From<Denied> for HttpError {
    fn from(denied: Denied) -> HttpError {
        let status = if denied.is_forbidden() {
            Status::Forbidden
        } else {
            Status::Unauthorized
        };
        let mut error = HttpError::new(status, denied.reason());
        error.denied = Some(denied);
        error
    }
}
