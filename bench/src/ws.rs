//! A WebSocket subscriber, just enough of RFC 6455 for a load generator:
//! the handshake (the accept key is not checked: every server here is
//! ours or a known peer), server frames read in place, pings answered.

use crate::clients::{Shared, SubStats};
use crate::http::{find_stamps, parse_head};
use crate::target::Target;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame at the start of `buf`: (opcode, payload range, frame length),
/// or None while it is incomplete.
pub fn frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    // Servers do not mask; a masked frame is skipped whole, unread.
    if masked {
        at += 4;
    }
    (buf.len() >= at + len).then_some((opcode, at..at + len, at + len))
}

/// One WebSocket subscriber of `channel`, until the stop signal or close.
pub async fn ws_stream(t: Arc<Target>, channel: String, shared: &Arc<Shared>) -> SubStats {
    let mut stats = SubStats::default();
    let mut stop = shared.stop.clone();
    let Ok(mut s) = TcpStream::connect(t.pick_http()).await else {
        stats.failed = true;
        return stats;
    };
    if s.write_all(t.ws_request(&channel).as_bytes())
        .await
        .is_err()
    {
        stats.failed = true;
        return stats;
    }
    let mut chunk = vec![0u8; 8192];
    let mut buf = Vec::new();
    let mut open = false;
    let mut last = None;
    loop {
        let n = tokio::select! {
            r = s.read(&mut chunk) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = stop.changed() => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        if !open {
            let Some((head, len)) = parse_head(&buf) else {
                continue;
            };
            if head.status != 101 {
                stats.failed = true;
                break;
            }
            shared.ready.fetch_add(1, Ordering::Relaxed);
            buf.drain(..len);
            open = true;
        }
        let mut used = 0;
        while let Some((opcode, payload, len)) = frame(&buf[used..]) {
            let payload = &buf[used + payload.start..used + payload.end];
            match opcode {
                0..=2 => {
                    find_stamps(payload, |seq, sent| {
                        stats.record(shared, &mut last, seq, sent)
                    });
                }
                9 => {
                    // A pong with the ping's payload, masked with a zero key.
                    let mut pong = vec![0x8a, 0x80 | payload.len().min(125) as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload[..payload.len().min(125)]);
                    if s.write_all(&pong).await.is_err() {
                        return stats;
                    }
                }
                8 => return stats,
                _ => {}
            }
            used += len;
        }
        buf.drain(..used);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn frames_are_read_at_every_length_form() {
        assert_eq!(frame(&[0x81, 2, b'h', b'i']), Some((1, 2..4, 4)));
        assert_eq!(frame(&[0x81, 2, b'h']), None);
        let mut long = vec![0x81, 126, 0, 200];
        long.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(frame(&long), Some((1, 4..204, 204)));
        assert_eq!(frame(&long[..100]), None);
    }
}
