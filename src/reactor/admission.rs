//! Admission: the connection caps applied to each browser connection a
//! worker accepts. 503 at once rather than leaving anyone hanging.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::metrics;
use crate::shared::Shared;

/// Applies the connection caps to a browser connection a worker just
/// accepted: true if it may stay (and is now counted as open); false if it
/// was answered 503 and is to be dropped.
pub fn admit(shared: &Shared, sock: &mut mio::net::TcpStream, addr: SocketAddr) -> bool {
    let server = &shared.config().server;
    let metrics = &shared.metrics;
    metrics::inc(&metrics.connections_total);
    // One atomic step: workers admitting at once cannot overshoot the cap.
    let max = server.max_connections as u64;
    let counted =
        metrics
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            });
    if counted.is_err() {
        metrics::inc(&metrics.connections_rejected);
        refuse(sock, "too many connections");
        return false;
    }
    if server.max_connections_per_ip > 0
        && !shared
            .ip_limiter
            .acquire(addr.ip(), server.max_connections_per_ip)
    {
        metrics::dec(&metrics.connections_open);
        metrics::inc(&metrics.connections_rejected_per_ip);
        refuse(sock, "too many connections from your address");
        return false;
    }
    // Small writes (one message) must not wait for Nagle.
    let _ = sock.set_nodelay(true);
    true
}

/// Answers 503 on a connection we will not serve, without waiting on it.
fn refuse(sock: &mut mio::net::TcpStream, why: &str) {
    let body = format!("{{\"error\":\"{why}\"}}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: cometbox/{}\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let _ = sock.write(response.as_bytes());
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Two workers admitting at once each see room for one more: only one
    /// may have it (the old load-then-increment let both in).
    #[test]
    fn admission_never_overshoots_the_cap_under_races() {
        let mut config = crate::Config::default();
        config.server.max_connections = 50;
        let shared = Shared::for_tests(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut admitted = 0;
                    for _ in 0..40 {
                        let client = std::net::TcpStream::connect(addr).unwrap();
                        let mut sock = mio::net::TcpStream::from_std(client);
                        if admit(&shared, &mut sock, addr) {
                            admitted += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let accept = std::thread::spawn(move || {
            let mut held = Vec::new();
            for _ in 0..160 {
                held.push(listener.accept().unwrap());
            }
            held
        });
        let admitted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        drop(accept.join().unwrap());
        assert_eq!(admitted, 50);
        assert_eq!(shared.metrics.connections_open.load(Ordering::Relaxed), 50);
    }
}
