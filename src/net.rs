//! Socket plumbing shared by the acceptor and the workers: the HTTP
//! listener (bound with the configured backlog), how a worker waits on it
//! (EPOLLEXCLUSIVE on Linux, plain mio elsewhere), and the backend socket
//! enum.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Poll, Registry, Token};

/// Binds a TCP listener with `backlog` pending connections allowed (std
/// uses 128, which a reconnect storm overflows: SYNs are dropped and
/// clients wait a second or more to retry).
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Restarts must not wait for TIME_WAIT sockets of the last run.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Starts (or stops) a worker's wait on the shared HTTP listener.
///
/// On Linux the listener joins the worker's epoll set with EPOLLEXCLUSIVE,
/// which mio does not expose: of the workers waiting, one is woken per
/// arrival instead of all of them. Edge-triggered, like mio's own
/// registrations; mio reads the token back from the event's data as usual.
#[cfg(target_os = "linux")]
pub fn watch_listener(
    poll: &Poll,
    listener: &mut mio::net::TcpListener,
    token: Token,
    watch: bool,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = if watch {
        libc::EPOLL_CTL_ADD
    } else {
        libc::EPOLL_CTL_DEL
    };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE | libc::EPOLLET) as u32,
        u64: token.0 as u64,
    };
    // SAFETY: both descriptors are open for the duration of the call and
    // `event` is a valid epoll_event.
    let rc = unsafe { libc::epoll_ctl(poll.as_raw_fd(), op, listener.as_raw_fd(), &mut event) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere (kqueue on macOS and the BSDs) every waiting worker is woken
/// per arrival; the ones that lose the race see WouldBlock and go back to
/// sleep. Correct, a little less efficient.
#[cfg(not(target_os = "linux"))]
pub fn watch_listener(
    poll: &Poll,
    listener: &mut mio::net::TcpListener,
    token: Token,
    watch: bool,
) -> io::Result<()> {
    if watch {
        poll.registry()
            .register(listener, token, Interest::READABLE)
    } else {
        poll.registry().deregister(listener)
    }
}

/// A backend's socket: the Unix socket, or the optional TCP listener
/// (`mailbox.backend-port`).
pub enum BackendStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for BackendStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BackendStream::Unix(s) => s.read(buf),
            BackendStream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for BackendStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BackendStream::Unix(s) => s.write(buf),
            BackendStream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for BackendStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            BackendStream::Unix(s) => s.register(registry, token, interests),
            BackendStream::Tcp(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            BackendStream::Unix(s) => s.reregister(registry, token, interests),
            BackendStream::Tcp(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            BackendStream::Unix(s) => s.deregister(registry),
            BackendStream::Tcp(s) => s.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener split compiles per target; on every target, a worker's
    /// wait on the shared listener is woken by an arrival.
    #[test]
    fn a_watched_listener_reports_an_arrival() {
        let std_listener = listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut listener = mio::net::TcpListener::from_std(std_listener);
        let mut poll = Poll::new().unwrap();
        watch_listener(&poll, &mut listener, Token(7), true).unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.token() == Token(7) && e.is_readable())
        );
        assert!(listener.accept().is_ok());
        watch_listener(&poll, &mut listener, Token(7), false).unwrap();
    }
}
