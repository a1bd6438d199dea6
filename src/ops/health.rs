//! `GET /health`: whether this gateway serves. One line of JSON either way,
//! so a load balancer's check and a human with curl read the same thing.

use std::sync::atomic::Ordering;

use crate::shared::Shared;
use crate::store::Store;

pub enum Health {
    /// 200.
    Serving(String),
    /// 503, with the reason in the line.
    Unavailable(String),
}

pub fn health(shared: &Shared) -> Health {
    if let Some(reason) = unavailable_because(shared) {
        let mut line = b"{\"status\":\"unavailable\",\"reason\":".to_vec();
        crate::transport::encode::write_json_string(&mut line, &reason);
        line.extend_from_slice(b"}\n");
        return Health::Unavailable(String::from_utf8_lossy(&line).into_owned());
    }
    let m = &shared.metrics;
    // In cluster mode, how fresh the proof that Redis delivers is.
    let cluster = match &shared.store {
        Store::Redis(redis) => {
            let age = redis.snapshot().seen_ago.unwrap_or_default();
            format!(
                ",\"redis\":\"ok\",\"redis_probe_age_seconds\":{:.3}",
                age.as_secs_f64()
            )
        }
        Store::Local(_) => String::new(),
    };
    Health::Serving(format!(
        "{{\"status\":\"ok\",\"version\":\"{}\",\"uptime_seconds\":{},\"workers\":{},\"connections\":{},\"backend_connections\":{}{cluster}}}\n",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs(),
        shared.peers.len(),
        m.connections_open.load(Ordering::Relaxed),
        m.backend_connections_open.load(Ordering::Relaxed),
    ))
}

/// Why the gateway does not serve, if it does not: draining, or in cluster
/// mode Redis out of reach, its subscription down, or its pub/sub not
/// delivering this node's probes (a connection can look healthy while its
/// subscription delivers nothing, as after a failover; `store::redis`'s
/// probe). Reads atomics only, so a health check never waits on Redis.
fn unavailable_because(shared: &Shared) -> Option<String> {
    if shared.draining.load(Ordering::Acquire) {
        return Some("shutting down".into());
    }
    match &shared.store {
        Store::Redis(redis) => redis.snapshot().unavailable_because(),
        Store::Local(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_until_draining_then_503_with_the_reason() {
        let shared = Shared::for_tests(crate::Config::default());
        let Health::Serving(line) = health(&shared) else {
            panic!("a fresh gateway serves");
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], "ok");
        assert!(line.ends_with("}\n") && line.lines().count() == 1);
        shared.draining.store(true, Ordering::Release);
        let Health::Unavailable(line) = health(&shared) else {
            panic!("draining is unavailable");
        };
        assert_eq!(
            line,
            "{\"status\":\"unavailable\",\"reason\":\"shutting down\"}\n"
        );
    }
}
