//! cometbox: a Comet gateway. Browsers long-poll or stream per-user
//! mailboxes at `/mailbox/{name}`; backends publish into them over a Unix
//! socket that speaks the Redis protocol.
//!
//! The layout follows the architecture (docs/architecture.md):
//! `server` binds and accepts, `reactor` is a worker's event loop, `conn` a
//! client connection, `http` request/response heads, `transport` the ways
//! of holding a mailbox open, `mailbox` the shared store, `backend` the RESP
//! side socket, `config` the gateway.conf loader, `metrics` the counters.

pub mod auth;
pub mod backend;
pub mod config;
pub mod conn;
pub mod http;
pub mod mailbox;
pub mod metrics;
pub mod reactor;
pub mod server;
pub mod transport;

pub use config::Config;
pub use server::{Gateway, StartError, run};
