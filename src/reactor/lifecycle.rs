//! The end of things: a connection marked dead is reaped after the event
//! batch (so a reused slab slot never receives a stale event), and the two
//! steps of a worker's shutdown.

use std::net::IpAddr;

use super::Worker;
use crate::conn::Phase;
use crate::metrics;

impl Worker {
    /// Shutdown, first step: read no more commands from backends (replies
    /// already made are still written), so that every publish acknowledged
    /// from now on is one whose announcements were posted before the ack.
    pub(super) fn stop_publishing(&mut self) {
        self.publishing_stopped = true;
        for (key, backend) in self.backends.iter_mut() {
            backend.closing = true;
            if backend.out_len() == 0 {
                self.dead_backends.push(key);
            }
        }
        self.stop_unacknowledged = true;
    }

    /// Shutdown's first step, as soon as the acceptor asks: stop reading
    /// backends, post what this turn announced, and say so.
    pub(super) fn notice_stopping(&mut self) {
        if self.publishing_stopped
            || !self
                .shared
                .stopping
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        self.stop_publishing();
        self.post_outbox();
        self.acknowledge_stop();
    }

    /// Called after this turn's announcements are posted.
    pub(super) fn acknowledge_stop(&mut self) {
        if std::mem::take(&mut self.stop_unacknowledged) {
            let _ = self.shared.stopped.send(self.id);
        }
    }

    /// Shutdown, second step: stop accepting, answer polls, end streams,
    /// let queued output drain for up to `server.shutdown-timeout`.
    pub(super) fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        // One shutdown-timeout for both steps, from when the acceptor began
        // (or from now, for a gateway stopped without the first step).
        let own = self.after(self.shared.config().server.shutdown_timeout);
        let shared = &self.shared;
        let deadline = match shared
            .stop_deadline_ms
            .load(std::sync::atomic::Ordering::Acquire)
        {
            u64::MAX => own,
            ms => {
                let at = shared.started + std::time::Duration::from_millis(ms);
                at.saturating_duration_since(self.clock).as_millis() as u64
            }
        };
        self.shutdown_deadline = Some(deadline.min(own));
        // Stop accepting; once every handle is closed, the kernel refuses
        // new clients instead of queueing them behind a gateway going away.
        if let Some(mut listener) = self.listener.take() {
            let _ = crate::net::watch_listener(&self.poll, &mut listener, super::LISTENER, false);
        }
        for key in 0..self.conns.capacity() {
            let Some(conn) = self.conns.get_mut(key).filter(|c| !c.dead) else {
                continue;
            };
            let writing = !conn.out.is_empty();
            match conn.phase_mut() {
                Phase::Held(held) => {
                    // Answer waiting polls now, so clients re-poll elsewhere
                    // (or here, after a restart) with their cursor.
                    held.reply.keep_alive = false;
                    self.answer_timeout(key);
                }
                Phase::Stream(_) | Phase::WebSocket(_) => self.end_stream(key),
                // A response still being written is finished, whatever the
                // keep-alive state: then the connection closes.
                Phase::Head if writing => {
                    conn.set_phase(Phase::Draining, &self.shared.metrics);
                }
                Phase::Head | Phase::Attaching(_) | Phase::BayeuxWaiting(_) => self.kill(key),
                Phase::Draining => {}
            }
        }
        for (key, backend) in self.backends.iter_mut() {
            backend.closing = true;
            if backend.flush().unwrap_or(true) {
                self.dead_backends.push(key);
            }
        }
    }

    pub(super) fn kill(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.dead {
            conn.dead = true;
            self.dead.push(key);
        }
    }

    pub(super) fn release_http_slot(&self, ip: IpAddr) {
        metrics::dec(&self.shared.metrics.connections_open);
        if self.shared.config().server.max_connections_per_ip > 0 {
            self.shared.ip_limiter.release(ip);
        }
    }

    /// A connection closed while its attaches were pending: late answers
    /// give their registrations back, answered ones do so now.
    fn abandon(&mut self, attaching: crate::conn::Attaching) {
        let follows = &attaching.plan.follows;
        for &(ticket, index) in &attaching.tickets {
            self.attaching.remove(&ticket);
            self.abandoned
                .insert(ticket, follows[index].mailbox.as_str().into());
        }
        for (follow, result) in follows.iter().zip(&attaching.results) {
            if let Some(Ok(attach)) = result
                && attach.registered
            {
                self.detach_one(&follow.mailbox);
            }
        }
    }

    pub(super) fn reap(&mut self) {
        let reaping = !self.dead.is_empty();
        while let Some(key) = self.dead.pop() {
            if !self.conns.contains(key) {
                continue;
            }
            self.unsubscribe(key);
            self.timers.unlink(&mut self.conns, key);
            let conn = &mut self.conns[key];
            if let Phase::Attaching(attaching) =
                conn.set_phase(Phase::Draining, &self.shared.metrics)
            {
                self.abandon(*attaching);
            }
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.sock);
            self.release_http_slot(conn.peer);
        }
        if reaping {
            self.publish_connection_count();
        }
        if !self.ready_polls.is_empty() {
            let conns = &self.conns;
            self.ready_polls.retain(|&k| conns.contains(k));
        }
        while let Some(key) = self.dead_backends.pop() {
            if !self.backends.contains(key) {
                continue;
            }
            self.throttled.retain(|&k| k != key);
            let mut backend = self.backends.remove(key);
            let _ = self.poll.registry().deregister(&mut backend.sock);
            metrics::dec(&self.shared.metrics.backend_connections_open);
        }
    }
}
