//! Backend connections on a worker: adopt, read, run commands, write
//! replies. Whether a backend is paused (its replies unread) is derived
//! from its output queue after every flush, in one place.

use log::warn;
use mio::Interest;

use super::{READ_BUDGET, Worker, backend_token};
use crate::backend::{BackendConn, WorkerHub};
use crate::metrics;
use crate::net::BackendStream;
use crate::store::{StoreError, Ticket};

/// A backend that does not read its replies stops being read once this much
/// is waiting for it (like Redis' client output buffer limit, but pausing
/// instead of disconnecting: the backend is trusted).
const BACKEND_MAX_PENDING_REPLIES: usize = 1 << 20;

impl Worker {
    pub(super) fn adopt_backend(&mut self, mut sock: BackendStream) {
        let entry = self.backends.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            backend_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register backend connection: {e}");
            return;
        }
        let config = &self.shared.config().mailbox;
        let budget = self.shared.backend_budget.clone();
        let backend = entry.insert(BackendConn::with_budget(sock, key as u64, config, budget));
        metrics::inc(&self.shared.metrics.backend_connections_open);
        metrics::inc(&self.shared.metrics.backend_connections_total);
        if self.publishing_stopped {
            // Shutting down: no new commands; close once told so.
            backend.closing = true;
            self.dead_backends.push(key);
            return;
        }
        // A backend may have written before we registered it.
        self.again.push(backend_token(key));
    }

    pub(super) fn backend_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(backend) = self.backends.get_mut(key) else {
            return;
        };
        if backend.dead {
            return;
        }
        if writable {
            match backend.flush() {
                Ok(true) if backend.closing => return self.kill_backend(key),
                Ok(_) => self.after_backend_io(key),
                Err(_) => return self.kill_backend(key),
            }
        }
        if readable {
            self.backend_read(key);
        }
    }

    /// Pause while the replies waiting exceed the cap; resume (and read
    /// what waited) as soon as they do not.
    fn after_backend_io(&mut self, key: usize) {
        let backend = &mut self.backends[key];
        let paused = backend.out_len() > BACKEND_MAX_PENDING_REPLIES;
        if backend.paused && !paused {
            self.again.push(backend_token(key));
        }
        backend.paused = paused;
    }

    /// Reads throttled backends again once no worker is backed up.
    pub(super) fn retry_throttled(&mut self) {
        if self.throttled.is_empty() || self.shared.peers.iter().any(|p| p.is_backed_up()) {
            return;
        }
        for key in std::mem::take(&mut self.throttled) {
            if self.backends.get(key).is_some_and(|b| !b.dead) {
                self.again.push(backend_token(key));
            }
        }
    }

    pub(super) fn kill_backend(&mut self, key: usize) {
        let backend = &mut self.backends[key];
        if !backend.dead {
            backend.dead = true;
            let listening = backend.is_listening();
            self.dead_backends.push(key);
            self.note_listening(listening, false);
        }
    }

    /// Writes what is queued for a backend (events between its commands).
    pub(super) fn flush_backend(&mut self, key: usize) {
        match self.backends[key].flush() {
            Ok(_) => self.after_backend_io(key),
            Err(_) => self.kill_backend(key),
        }
    }

    /// A store's late answers to commands run here (PUBLISH, DEL): each
    /// fills its reply slot, and each connection touched writes what
    /// became ready.
    pub(super) fn published(&mut self, mut done: Vec<(Ticket, Result<u64, StoreError>)>) {
        self.bayeux_published(&mut done);
        let mut touched: Vec<usize> = Vec::new();
        for (ticket, answer) in done {
            let Some(key) = self.publishing.remove(&ticket) else {
                continue; // its connection closed meanwhile
            };
            if let Some(backend) = self.backends.get_mut(key)
                && backend.complete(ticket, answer)
                && !touched.contains(&key)
            {
                touched.push(key);
            }
        }
        for key in touched {
            let backend = &mut self.backends[key];
            if backend.dead {
                continue;
            }
            match backend.flush() {
                Ok(true) if backend.closing => self.kill_backend(key),
                Ok(_) => self.after_backend_io(key),
                Err(_) => self.kill_backend(key),
            }
        }
    }

    fn backend_read(&mut self, key: usize) {
        let backend = &mut self.backends[key];
        if backend.closing || backend.paused {
            return;
        }
        if self.shared.peers.iter().any(|p| p.is_backed_up()) {
            // A worker is behind on announcements: publish no more until it
            // catches up (the backend's socket buffers push back on it).
            if !self.throttled.contains(&key) {
                self.throttled.push(key);
            }
            return;
        }
        let (eof, more) = backend.read_some(READ_BUDGET);
        if more {
            self.again.push(backend_token(key));
        }
        let now = self.now();
        let mut hub = WorkerHub {
            shared: &self.shared,
            config: self.shared.config(),
            outbox: &mut self.outbox,
            now,
            announced: self.announced,
            commands: &mut self.counts.backend_commands,
            worker: self.id,
            tickets: Vec::new(),
        };
        let backend = &mut self.backends[key];
        let was_listening = backend.is_listening();
        let waiting = backend.execute_buffered(&mut hub);
        self.announced = hub.announced;
        for ticket in hub.tickets {
            self.publishing.insert(ticket, key);
        }
        let is_listening = backend.is_listening();
        self.note_listening(was_listening, is_listening);
        if waiting {
            // The turn's fan-out is full: the rest after this turn's writes.
            self.again.push(backend_token(key));
        }
        let backend = &mut self.backends[key];
        match backend.flush() {
            Ok(done) if done && (backend.closing || eof) => return self.kill_backend(key),
            // The client half-closed: finish writing, then close.
            Ok(_) if eof => backend.closing = true,
            Ok(_) => {}
            Err(_) => return self.kill_backend(key),
        }
        self.after_backend_io(key);
    }
}
