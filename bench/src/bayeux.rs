//! Bayeux subscribers for the fan-out scenarios (cometbox only): a client
//! that does what faye and CometD do on the wire, over long-polling
//! (handshake, subscribe, then one `/meta/connect` after another on a
//! keep-alive connection) or over WebSocket (the same messages as text
//! frames; deliveries pushed, a new connect sent whenever one is answered).
//! `clients::subscriber` and `clients::poller` count a failed one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clients::{Shared, SubStats};
use crate::http::{find_stamps, parse_head};
use crate::target::Target;
use crate::ws::frame as server_frame;

fn post(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /bayeux HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn handshake() -> Value {
    json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling", "websocket"]}])
}

fn subscribe_and_connect(client: &str, channel: &str, ws: bool) -> Value {
    let kind = if ws { "websocket" } else { "long-polling" };
    json!([
        {"channel": "/meta/subscribe", "clientId": client, "subscription": format!("/{channel}")},
        {"channel": "/meta/connect", "clientId": client, "connectionType": kind, "advice": {"timeout": 0}},
    ])
}

fn connect(client: &str, ws: bool) -> Value {
    let kind = if ws { "websocket" } else { "long-polling" };
    json!([{"channel": "/meta/connect", "clientId": client, "connectionType": kind}])
}

fn client_id(reply: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(reply).ok()?;
    v[0]["clientId"].as_str().map(str::to_string)
}

/// Reads one response with a Content-Length body; None on EOF or stop.
async fn response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Vec<u8>> {
    loop {
        if let Some((head, len)) = parse_head(buf) {
            let body_len: usize = head
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= len + body_len {
                let body = buf[len..len + body_len].to_vec();
                buf.drain(..len + body_len);
                return Some(body);
            }
        }
        let n = tokio::select! {
            r = s.read(chunk) => match r { Ok(0) | Err(_) => return None, Ok(n) => n },
            _ = stop.changed() => return None,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A Bayeux long-polling client of `channel`: handshake, subscribe, then
/// connects until `expect` stamps or stop. Each connect written counts in
/// `shared.polls` (the first one also as ready), as `poll_client`'s polls.
pub async fn longpoll_subscriber(
    t: Arc<Target>,
    channel: String,
    expect: u64,
    shared: Arc<Shared>,
) -> SubStats {
    let mut stats = SubStats::default();
    let mut stop = shared.stop.clone();
    let Ok(mut s) = TcpStream::connect(t.http).await else {
        stats.failed = true;
        return stats;
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last = None;
    let setup = async {
        s.write_all(&post(&handshake())).await.ok()?;
        let client = client_id(&response(&mut s, &mut buf, &mut chunk, &mut stop).await?)?;
        s.write_all(&post(&subscribe_and_connect(&client, &channel, false)))
            .await
            .ok()?;
        response(&mut s, &mut buf, &mut chunk, &mut stop).await?;
        Some(client)
    };
    let Some(client) = setup.await else {
        stats.failed = true;
        return stats;
    };
    let request = post(&connect(&client, false));
    let mut first = true;
    let mut got = 0u64;
    while got < expect {
        if s.write_all(&request).await.is_err() {
            stats.failed = true;
            break;
        }
        shared.polls.fetch_add(1, Ordering::Relaxed);
        if first {
            shared.ready.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let Some(body) = response(&mut s, &mut buf, &mut chunk, &mut stop).await else {
            break;
        };
        find_stamps(&body, |seq, sent| {
            got += 1;
            stats.record(&shared, &mut last, seq, sent)
        });
    }
    stats
}

/// A masked client text frame.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x5a, 0x13, 0xc7, 0x02];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Takes whole server frames off the front of `buf`: (opcode, payload).
fn frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some((opcode, payload, len)) = server_frame(&buf[used..]) {
        out.push((
            opcode,
            buf[used + payload.start..used + payload.end].to_vec(),
        ));
        used += len;
    }
    buf.drain(..used);
    out
}

/// A Bayeux WebSocket client of `channel`, until the stop signal or close:
/// ready once subscribed and its first connect answered.
pub async fn websocket_subscriber(
    t: Arc<Target>,
    channel: String,
    shared: Arc<Shared>,
) -> SubStats {
    let mut stats = SubStats::default();
    let mut stop = shared.stop.clone();
    let fail = |mut stats: SubStats| {
        stats.failed = true;
        stats
    };
    let Ok(mut s) = TcpStream::connect(t.http).await else {
        return fail(stats);
    };
    let upgrade = "GET /bayeux HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    if s.write_all(upgrade.as_bytes()).await.is_err() {
        return fail(stats);
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut client: Option<String> = None;
    let mut upgraded = false;
    let mut ready = false;
    let mut last = None;
    loop {
        let n = tokio::select! {
            r = s.read(&mut chunk) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = stop.changed() => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        if !upgraded {
            let Some((head, len)) = parse_head(&buf) else {
                continue;
            };
            if head.status != 101 {
                return fail(stats);
            }
            buf.drain(..len);
            upgraded = true;
            if s.write_all(&frame(handshake().to_string().as_bytes()))
                .await
                .is_err()
            {
                return fail(stats);
            }
        }
        for (opcode, payload) in frames(&mut buf) {
            if opcode != 1 {
                continue; // pings: the server counts any frame as an answer
            }
            let Some(id) = &client else {
                let Some(id) = client_id(&payload) else {
                    return fail(stats);
                };
                let first = subscribe_and_connect(&id, &channel, true).to_string();
                if s.write_all(&frame(first.as_bytes())).await.is_err() {
                    return fail(stats);
                }
                client = Some(id);
                continue;
            };
            if payload.windows(13).any(|w| w == b"/meta/connect") {
                if !ready {
                    // Subscribed, and the first connect answered.
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                    ready = true;
                }
                let next = connect(id, true).to_string();
                if s.write_all(&frame(next.as_bytes())).await.is_err() {
                    return stats;
                }
            }
            find_stamps(&payload, |seq, sent| {
                stats.record(&shared, &mut last, seq, sent)
            });
        }
    }
    stats
}
