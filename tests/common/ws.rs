//! A minimal WebSocket client for tests: the handshake, reading server
//! frames, sending masked client frames.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;

use super::{Gateway, read_head};

pub struct Ws {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

pub fn connect(gw: &Gateway, target: &str) -> Ws {
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    write!(
        w,
        "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 101);
    Ws { r, w }
}

impl Ws {
    /// The next frame: (opcode, payload).
    pub fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.r.read_exact(&mut h).unwrap();
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut b = [0u8; 2];
            self.r.read_exact(&mut b).unwrap();
            len = u16::from_be_bytes(b) as usize;
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.r.read_exact(&mut b).unwrap();
            len = u64::from_be_bytes(b) as usize;
        }
        let mut payload = vec![0; len];
        self.r.read_exact(&mut payload).unwrap();
        (h[0] & 0x0f, payload)
    }

    /// The next text frame as JSON, skipping pings.
    pub fn json(&mut self) -> serde_json::Value {
        loop {
            let (op, payload) = self.frame();
            if op == 1 {
                return serde_json::from_slice(&payload).unwrap();
            }
        }
    }

    /// A masked text frame (under 126 bytes).
    pub fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        assert!(payload.len() < 126);
        let key = [1u8, 2, 3, 4];
        let mut f = vec![0x81, 0x80 | payload.len() as u8];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.w.write_all(&f).unwrap();
    }
}
