//! A GRIP origin for Pushpin: what it needs to hold a subscriber's stream.
//! (The floor server is in floor.rs, the report in report.rs.)

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GRIP origin: answers every GET with `Grip-Hold: stream` on the channel
/// named by the last path segment, so Pushpin holds the client's SSE
/// stream open and publishes reach it.
pub async fn grip_origin(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    eprintln!(
        "grip origin listening on {}",
        listener.local_addr().unwrap()
    );
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/");
                    let channel = path
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .split('?')
                        .next()
                        .unwrap_or("");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nGrip-Hold: stream\r\nGrip-Channel: {channel}\r\nContent-Length: 0\r\n\r\n"
                    );
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}
