//! Turning a request into action: the endpoints decide ([`endpoint::handle`]),
//! the worker writes plain responses and errors here, with one function
//! each, and hands subscriptions to `subscribe`.

use crate::conn::Phase;
use crate::endpoint::{self, Body, Context, Outcome, Response};
use crate::http::{self, Cors, HttpError, Request, Status};
use crate::metrics;
use crate::out::Part;
use crate::transport::encode;

use super::Worker;

impl Worker {
    pub(super) fn handle_request(&mut self, key: usize, req: &Request<'_>, body: &[u8]) {
        let cors = Cors::grant(req.origin, &self.shared.config().mailbox.cors_origins);
        let ctx = Context {
            http11: req.http11,
            keep_alive: req.keep_alive
                && self.shutdown_deadline.is_none()
                && !self.conns[key].peer_closed,
            cors,
        };
        match endpoint::handle(req, body, &ctx, &self.shared) {
            Ok(Outcome::Respond(response)) => self.respond(key, &ctx, response),
            Ok(Outcome::Subscribe(plan)) => self.subscribe(key, *plan),
            Ok(Outcome::Bayeux(plan)) => self.bayeux_plan(key, &ctx, *plan),
            Ok(Outcome::Upstream(post)) => {
                let post = *post;
                self.upstream(post.mailbox, post.subject.as_deref(), &post.data);
                self.respond(key, &ctx, post.response);
            }
            Err(error) => self.respond_error(key, error, ctx.http11, ctx.keep_alive, &ctx.cors),
        }
    }

    /// A complete response from an endpoint.
    pub(super) fn respond(&mut self, key: usize, ctx: &Context, response: Response) {
        let head = &mut self.scratch.head;
        head.clear();
        http::write_head(head, response.status, ctx.http11, self.date.get());
        head.extend_from_slice(&response.headers);
        // An endpoint that grants every origin itself (the client script:
        // `Access-Control-Allow-Origin: *`) must not get a second grant.
        if !response.grants_any_origin {
            ctx.cors
                .write_headers(head, &self.shared.config().mailbox.cors_origins);
        }
        http::write_connection(head, ctx.http11, ctx.keep_alive);
        let body_len = match &response.body {
            Body::Empty => 0,
            Body::Static(bytes) => bytes.len(),
            Body::Owned(bytes) => bytes.len(),
        };
        if !matches!(response.status, Status::NoContent | Status::NotModified) {
            http::write_content_length(head, body_len);
        }
        head.extend_from_slice(b"\r\n");
        let body = match (&response.body, response.head_only) {
            (_, true) | (Body::Empty, _) => Part::Static(b""),
            (Body::Static(bytes), false) => Part::Static(bytes),
            (Body::Owned(bytes), false) => Part::Copy(bytes),
        };
        let result = self.conns[key].send(&mut self.counts.bytes_out, &[Part::Copy(head), body]);
        self.finish_response(key, result, ctx.keep_alive);
    }

    /// The one way errors are written: the status from the [`HttpError`], a
    /// JSON body `{"error": why}`, and the connection closed if the error
    /// says so or the client asked. `keep_alive` is what the request allows.
    /// Errors found before the version was read are answered as HTTP/1.1
    /// (RFC 9112 2.3: the highest version we conform to).
    pub(super) fn respond_error(
        &mut self,
        key: usize,
        error: HttpError,
        http11: bool,
        keep_alive: bool,
        cors: &Cors,
    ) {
        let m = &self.shared.metrics;
        match error.status {
            Status::Unauthorized => metrics::inc(&m.requests_unauthorized),
            Status::Forbidden => metrics::inc(&m.requests_forbidden),
            Status::ServiceUnavailable => m.count_unavailable(error.unavailable()),
            _ => {}
        }
        if let Some(denied) = error.denied {
            metrics::inc(&m.auth_failures[denied as usize]);
        }
        let keep_alive = keep_alive && !error.close && self.shutdown_deadline.is_none();
        let head = &mut self.scratch.head;
        head.clear();
        http::write_head(head, error.status, http11, self.date.get());
        head.extend_from_slice(b"Content-Type: application/json\r\nCache-Control: no-cache\r\n");
        head.extend_from_slice(error.headers);
        cors.write_headers(head, &self.shared.config().mailbox.cors_origins);
        let body = &mut self.scratch.tail;
        body.clear();
        body.extend_from_slice(b"{\"error\":");
        encode::write_json_string(body, &error.why);
        body.extend_from_slice(b"}\n");
        http::write_connection(head, http11, keep_alive);
        http::write_content_length(head, body.len());
        head.extend_from_slice(b"\r\n");
        let result = self.conns[key].send(
            &mut self.counts.bytes_out,
            &[Part::Copy(head), Part::Copy(body)],
        );
        self.finish_response(key, result, keep_alive);
    }

    /// After a complete response: next request, or close once written.
    pub(super) fn finish_response(
        &mut self,
        key: usize,
        written: std::io::Result<()>,
        keep_alive: bool,
    ) {
        if written.is_err() {
            return self.kill(key);
        }
        let conn = &mut self.conns[key];
        if keep_alive && !conn.peer_closed {
            conn.set_phase(Phase::Head, &self.shared.metrics);
            let idle = self.after(self.shared.config().server.keepalive_timeout);
            self.set_deadline(key, idle);
        } else {
            conn.set_phase(Phase::Draining, &self.shared.metrics);
            let drain = self.after(self.shared.config().server.shutdown_timeout);
            self.set_deadline(key, drain);
            self.after_io(key);
        }
    }
}
