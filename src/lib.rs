//! cometbox: a Comet gateway. Browsers long-poll or stream per-user
//! mailboxes at `/mailbox/{name}`; backends publish into them over a Unix
//! socket that speaks the Redis protocol.
//!
//! The layout follows the architecture (docs/architecture.md):
//! `gateway` starts the threads and runs the acceptor, `reactor` is a
//! worker's event loop, `conn` a client connection and its phase, `out` the
//! one output queue, `http` request and response heads, `endpoint` what a
//! request asks for (mailbox, client script), `transport` the ways of
//! holding a mailbox open and their framing, `fanout` a worker's subscriber
//! lists, `store` the mailboxes behind one seam, `backend` the RESP side
//! socket, `shared` what threads share, `net` socket plumbing, `config` the
//! gateway.conf loader, `auth` tokens, `metrics` the counters, `ops` the metrics and health listener.

pub mod auth;
pub mod backend;
pub mod config;
pub mod conn;
pub mod endpoint;
pub mod fanout;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod out;
pub mod reactor;
pub mod session;
pub mod shared;
pub mod store;
pub mod transport;

pub use config::Config;
pub use gateway::{Gateway, StartError, run};
