//! Publishing stamped payloads, each server its own way: RESP PUBLISH on
//! cometbox's Unix socket, one line each on the floor's control socket,
//! pipelined POSTs to nchan, JSON batches to Pushpin.

use crate::http::parse_head;
use crate::target::{Kind, Target};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Publishes batches of (channel, payload), pipelined, each server its way.
pub enum Publisher {
    /// cometbox: PUBLISH over the RESP socket; the floor: one line each.
    Unix(UnixStream, Kind),
    /// nchan: POST /pub/CHANNEL on keep-alive connections, pipelined.
    Nchan(Vec<TcpStream>),
    /// Pushpin: POST /publish/ with a JSON batch; its publish endpoint
    /// closes the connection after each answer, so one connection a batch.
    Pushpin(String),
}

impl Publisher {
    pub async fn connect(t: &Target) -> std::io::Result<Publisher> {
        Ok(match t.kind {
            Kind::Cometbox | Kind::Floor => {
                Publisher::Unix(UnixStream::connect(&t.publish).await?, t.kind)
            }
            Kind::Nchan => {
                let mut conns = Vec::new();
                for _ in 0..4 {
                    let s = TcpStream::connect(&t.publish).await?;
                    s.set_nodelay(true)?;
                    conns.push(s);
                }
                Publisher::Nchan(conns)
            }
            Kind::Pushpin => Publisher::Pushpin(t.publish.clone()),
        })
    }

    /// Sends the batch and waits for every reply; returns how many failed.
    pub async fn publish(&mut self, batch: &[(String, String)]) -> std::io::Result<usize> {
        match self {
            Publisher::Unix(s, Kind::Floor) => {
                let mut out = Vec::new();
                for (_, p) in batch {
                    out.extend_from_slice(p.as_bytes());
                    out.push(b'\n');
                }
                s.write_all(&out).await?;
                Ok(0)
            }
            Publisher::Unix(s, _) => {
                let mut out = Vec::new();
                for (c, p) in batch {
                    out.extend_from_slice(
                        format!(
                            "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{c}\r\n${}\r\n{p}\r\n",
                            c.len(),
                            p.len()
                        )
                        .as_bytes(),
                    );
                }
                s.write_all(&out).await?;
                // Replies are one line each: ":N\r\n" or "-ERR …\r\n".
                let (mut lines, mut failed, mut buf) = (0, 0, vec![0u8; 64 * 1024]);
                let mut partial_is_error = None;
                while lines < batch.len() {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    for &b in &buf[..n] {
                        if partial_is_error.is_none() {
                            partial_is_error = Some(b == b'-');
                        }
                        if b == b'\n' {
                            lines += 1;
                            failed += usize::from(partial_is_error == Some(true));
                            partial_is_error = None;
                        }
                    }
                }
                Ok(failed)
            }
            Publisher::Nchan(conns) => {
                let per_conn: Vec<Vec<&(String, String)>> = (0..conns.len())
                    .map(|i| batch.iter().skip(i).step_by(conns.len()).collect())
                    .collect();
                for (conn, items) in conns.iter_mut().zip(&per_conn) {
                    let mut out = Vec::new();
                    for (c, p) in items {
                        out.extend_from_slice(
                            format!("POST /pub/{c} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{p}", p.len())
                                .as_bytes(),
                        );
                    }
                    conn.write_all(&out).await?;
                }
                let mut failed = 0;
                for (conn, items) in conns.iter_mut().zip(&per_conn) {
                    failed += read_responses(conn, items.len()).await?;
                }
                Ok(failed)
            }
            Publisher::Pushpin(addr) => {
                let list: Vec<Value> = batch
                    .iter()
                    .map(|(c, p)| json!({"channel": c, "formats": {"http-stream": {"content": format!("data: {p}\n\n")}}}))
                    .collect();
                let body = json!({ "items": list }).to_string();
                let mut conn = TcpStream::connect(addr.as_str()).await?;
                conn.write_all(
                    format!(
                        "POST /publish/ HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await?;
                read_responses(&mut conn, 1).await
            }
        }
    }
}

/// Reads `count` pipelined responses with Content-Length bodies; returns
/// how many were not 2xx.
pub async fn read_responses(conn: &mut TcpStream, count: usize) -> std::io::Result<usize> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut done, mut failed) = (0, 0);
    while done < count {
        if let Some((head, len)) = parse_head(&buf) {
            let body: usize = head
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= len + body {
                failed += usize::from(!(200..300).contains(&head.status));
                buf.drain(..len + body);
                done += 1;
                continue;
            }
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(failed)
}
