//! The node's listening sockets: one per shard and listener, all on the same
//! port, grouped with SO_REUSEPORT so the kernel spreads connections across
//! the shards.
//!
//! # Only one node per port
//!
//! SO_REUSEPORT lets any socket of the same user that also sets it join the
//! group, so a second `transponder serve` on the same ports used to start
//! as well and silently take a share of every listener's connections. To
//! stop that, the FIRST socket of each listener binds *without*
//! SO_REUSEPORT: the kernel refuses that bind (EADDRINUSE) if anything at
//! all holds the port, reuseport or not. It sets SO_REUSEPORT after the
//! bind, before `listen()`, so it founds a reuseport group; our other
//! shards' sockets bind with SO_REUSEPORT and join it.
//!
//! Checked on Linux 6.18 (4 sockets, 400 connections): every socket of the
//! group, the first included, accepts about a quarter; a second process's
//! exclusive bind fails with EADDRINUSE; port 0 works the same way (the
//! first bind picks the port, the others reuse it). There is no window
//! between two starting nodes: whichever binds first wins, the other's very
//! first bind fails.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{IntoRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Which listener, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Api,
    Admin,
    /// Node links (a cluster only).
    Link,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Api => "Web API",
            Role::Admin => "admin",
            Role::Link => "node link",
        }
    }

    fn port_flag(self) -> &'static str {
        match self {
            Role::Gateway => "--gateway-port",
            Role::Api => "--api-port",
            Role::Admin => "--admin-port",
            Role::Link => "--link-port",
        }
    }
}

/// One listener's sockets, one per shard (raw: glommio 0.9 builds its
/// `TcpListener` from an fd, and its socket2 is older than ours).
pub struct Listener {
    pub fds: Vec<RawFd>,
    pub addr: SocketAddr,
}

/// Binds `shards` listening sockets for `role` on `host:port` (0: any free
/// port, the same for all). Fails, naming the listener and the reason, if
/// the port is held by anyone, another Transponder included.
pub fn bind(
    role: Role,
    host: IpAddr,
    port: u16,
    shards: usize,
    backlog: u32,
) -> Result<Listener, String> {
    let mut addr = SocketAddr::new(host, port);
    let fail = |addr: SocketAddr, e: io::Error| bind_error(role, addr, &e);
    let mut sockets = Vec::with_capacity(shards);
    for i in 0..shards {
        let founder = i == 0;
        let s = socket(addr, founder, backlog).map_err(|e| fail(addr, e))?;
        if founder {
            addr = s
                .local_addr()
                .map_err(|e| fail(addr, e))?
                .as_socket()
                .expect("an inet socket has an inet address");
        }
        sockets.push(s);
    }
    // Until here a failure drops (closes) the sockets made so far.
    Ok(Listener {
        fds: sockets.into_iter().map(Socket::into_raw_fd).collect(),
        addr,
    })
}

/// One listening socket. The founder binds exclusively, then opens the
/// reuseport group; the others join it.
fn socket(addr: SocketAddr, founder: bool, backlog: u32) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR only lets a restart bind over its predecessor's
    // TIME_WAIT connections; it never allows two listeners on one port.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    // Linux copies the listener's TCP_NODELAY to every socket it accepts,
    // which saves the gateway a setsockopt per connection (a connect storm
    // pays each syscall tens of thousands of times a second). Every
    // listener wants Nagle off: answers and frames are written whole.
    s.set_tcp_nodelay(true)?;
    if !founder {
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    if founder {
        s.set_reuse_port(true)?;
    }
    s.listen(backlog as i32)?;
    Ok(s)
}

/// `cannot bind the gateway listener on 127.0.0.1:7770: address in use (…)`.
fn bind_error(role: Role, addr: SocketAddr, e: &io::Error) -> String {
    let why = match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "address in use (is another Transponder running? choose another port with {})",
            role.port_flag()
        ),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_string()
        }
        io::ErrorKind::AddrNotAvailable => format!(
            "address not available (is {} an address of this host? see --host)",
            addr.ip()
        ),
        _ => e.to_string(),
    };
    format!("cannot bind the {} listener on {addr}: {why}", role.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_second_bind_of_a_held_port_names_the_listener() {
        let first = bind(Role::Api, LOCALHOST, 0, 3, 16).unwrap();
        assert_eq!(first.fds.len(), 3);
        let port = first.addr.port();
        let err = match bind(Role::Api, LOCALHOST, port, 2, 16) {
            Err(e) => e,
            Ok(_) => panic!("a second node bound port {port}"),
        };
        assert_eq!(
            err,
            format!(
                "cannot bind the Web API listener on 127.0.0.1:{port}: address in use \
                 (is another Transponder running? choose another port with --api-port)"
            )
        );
        close(first);
    }

    #[test]
    fn a_port_held_by_a_plain_reuseport_socket_is_refused_too() {
        let other = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        other.set_reuse_port(true).unwrap();
        other.bind(&SocketAddr::new(LOCALHOST, 0).into()).unwrap();
        other.listen(1).unwrap();
        let port = other.local_addr().unwrap().as_socket().unwrap().port();
        assert!(bind(Role::Gateway, LOCALHOST, port, 1, 16).is_err());
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let l = bind(Role::Gateway, LOCALHOST, 0, 1, 16).unwrap();
        let _client = std::net::TcpStream::connect(l.addr).unwrap();
        // SAFETY: a view of the listener's fd; `close` below closes it.
        let listener = std::mem::ManuallyDrop::new(unsafe {
            <Socket as std::os::fd::FromRawFd>::from_raw_fd(l.fds[0])
        });
        let accepted = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(
            accepted.tcp_nodelay().unwrap(),
            "Nagle is on for an accepted socket"
        );
        close(l);
    }

    fn close(l: Listener) {
        for fd in l.fds {
            // SAFETY: each fd was made by `bind` and is owned by the test.
            drop(unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
}
