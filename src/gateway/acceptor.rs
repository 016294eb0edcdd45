//! The gateway's accept loop, one per shard on the shard's own listening
//! socket (SO_REUSEPORT: the kernel spreads connections over the shards, so
//! none crosses cores).
//!
//! Under a connect storm many connections wait in the backlog. The loop
//! takes each with one `accept4`, which also gives the peer's address, and
//! waits through glommio (an io_uring accept) only when the backlog is
//! empty. glommio's own `accept` costs four syscalls per connection even
//! when one is waiting (it reads, sets and restores the listener's flags
//! around a plain `accept`), and the handshake then asked for the peer's
//! address (`getpeername`) for the unauthenticated budget: five syscalls
//! where one does.

use std::io;
use std::mem::ManuallyDrop;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use socket2::Socket;

use super::connection;
use crate::limits;
use crate::shard::Shard;

/// A shard's gateway listening socket: glommio's listener (to wait with)
/// and the same socket's fd (to take what is waiting with `accept4`).
///
/// Owned by its shard; never crosses cores.
pub struct Listener {
    listener: TcpListener,
    fd: RawFd,
}

impl FromRawFd for Listener {
    /// `fd` must be a non-blocking listening TCP socket (see
    /// `node::listeners`), which this takes over.
    unsafe fn from_raw_fd(fd: RawFd) -> Listener {
        Listener {
            listener: TcpListener::from_raw_fd(fd),
            fd,
        }
    }
}

/// Accepts websockets until the shard drains.
pub async fn serve(shard: Rc<Shard>, listener: Listener) {
    let Listener { listener, fd } = listener;
    let mut last_warning: Option<Instant> = None;
    loop {
        // What is waiting, in bounded batches: the handshakes just spawned
        // (and everything else on the shard) run between two batches.
        let mut taken = 0;
        let mut failed = None;
        while taken < limits::ACCEPT_BATCH_MAX && !shard.stop.stopped() {
            match accept_waiting(fd) {
                Ok(Some((stream, source))) => {
                    spawn(&shard, stream, source);
                    taken += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            back_off(&shard, &mut last_warning, e).await;
            continue;
        }
        if taken == limits::ACCEPT_BATCH_MAX {
            futures_lite::future::yield_now().await;
            continue;
        }
        // The backlog is empty: wait for the next connection (or the drain).
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stop.wait().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let source = stream.peer_addr().ok().map(|a| a.ip());
                spawn(&shard, stream, source);
            }
            Some(Err(e)) => back_off(&shard, &mut last_warning, e.into()).await,
        }
    }
    tracing::debug!(shard = shard.id, "gateway stopped accepting");
}

fn spawn(shard: &Rc<Shard>, stream: TcpStream, source: Option<IpAddr>) {
    glommio::spawn_local(connection::run(shard.clone(), stream, source)).detach();
}

/// One connection from the backlog of the (non-blocking) listening socket
/// `fd` and its peer's address; `None` when nobody is waiting.
fn accept_waiting(fd: RawFd) -> io::Result<Option<(TcpStream, Option<IpAddr>)>> {
    // SAFETY: `fd` is the listener's open socket; ManuallyDrop keeps this
    // borrowed view of it from closing it.
    let listener = ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    loop {
        return match listener.accept() {
            Ok((socket, peer)) => {
                let source = peer.as_socket().map(|a| a.ip());
                // SAFETY: a connected TCP socket we now own, handed over
                // whole (glommio sends and receives with MSG_DONTWAIT, as
                // on the sockets its own accept returns).
                let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
                Ok(Some((stream, source)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // Interrupted, or a connection reset while it waited: the next.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => Err(e),
        };
    }
}

/// EMFILE and friends: warn (at most once a second) and back off instead of
/// spinning.
async fn back_off(shard: &Shard, last_warning: &mut Option<Instant>, e: io::Error) {
    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
        tracing::warn!(shard = shard.id, "gateway accept failed: {e}");
        *last_warning = Some(Instant::now());
    }
    glommio::timer::sleep(limits::ACCEPT_BACK_OFF).await;
}
