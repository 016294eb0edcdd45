//! glommio streams as hyper 1.x I/O.
//!
//! glommio's streams implement the futures-io `AsyncRead`/`AsyncWrite`
//! traits; hyper 1.x has its own `rt::Read`/`rt::Write`. [`HyperIo`] bridges
//! them. HTTP/1 needs no executor from hyper, so this and a
//! `glommio::spawn_local` per connection is all hyper needs.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use hyper::rt::{Read, ReadBufCursor, Write};

/// Most bytes offered to one read. hyper hands us all the spare capacity of
/// its read buffer, uninitialised; futures-io can only read into initialised
/// memory, so we zero what we offer. Capping the offer bounds that memset
/// when hyper's buffer has grown large (after a big body).
const MAX_READ: usize = 64 << 10;

/// A futures-io stream usable as hyper I/O. Generic so the server can slip a
/// deadline layer between the socket and hyper; in production `S` is (a
/// wrapper of) the non-buffered `glommio::net::TcpStream`, whose reads go
/// straight into hyper's buffer (`recv` with `MSG_DONTWAIT`, io_uring poll
/// only on EAGAIN) — a buffered stream would only add a copy, since hyper
/// buffers itself.
///
/// Owned by its shard; never crosses cores.
#[derive(Debug)]
pub struct HyperIo<S> {
    inner: S,
}

impl<S> HyperIo<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: AsyncRead + Unpin> Read for HyperIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(MAX_READ);
        let dst = buf.initialize_unfilled_to(want);
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, dst))?;
        // SAFETY: the reader wrote `n <= want` bytes into `dst`, which
        // `initialize_unfilled_to` had already initialised.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Write for HyperIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // futures-io's close is hyper's shutdown; on a glommio socket it is
        // shutdown(SHUT_WR), i.e. a FIN.
        Pin::new(&mut self.inner).poll_close(cx)
    }

    // `is_write_vectored` stays false: glommio has no vectored send, so
    // hyper flattens head and body into one buffer and we issue one send.
}
