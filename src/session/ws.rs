//! The per-socket half of a Bayeux session carried over a WebSocket. It
//! lives here, beside the session table, rather than in the Bayeux
//! endpoint, because the WebSocket transport's state holds it and the
//! endpoint builds on the transports (no module cycle).

use std::sync::Arc;

/// A Bayeux session over a WebSocket: the socket carries the client's
/// messages and the replies, and deliveries are pushed as they arrive
/// (the connection follows its session's mailboxes like a stream). A
/// `/meta/connect` is answered at the next heartbeat, which paces the
/// client's connects (docs/bayeux.md).
#[derive(Debug)]
pub struct WsSession {
    /// Bound by the first `/meta/connect` on this socket.
    pub client_id: Option<Arc<str>>,
    /// Tells this socket's hold of the session from any other.
    pub serial: u64,
    /// The upgrade request's token (query or cookie), for subscribes.
    pub token: Option<Vec<u8>>,
    /// The reply to a connect, to send at the next heartbeat.
    pub pending_connect: Option<Vec<u8>>,
    /// Batches whose replies wait for the store (cluster mode), at most
    /// `MAX_WS_WAITING`.
    pub waiting: usize,
    /// Mailboxes being attached (the store answers later): not asked twice.
    pub attaching: Vec<Arc<str>>,
}
