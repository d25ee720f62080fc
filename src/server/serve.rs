//! Our accept loop, in place of `axum::serve`: it owns the transport-level defences.
//!
//! - A client must send its request headers within `header_read_timeout` (hyper's timer;
//!   it also closes a keep-alive connection that sits idle that long).
//! - A connection whose socket stays unwritable for `client_stall` (the client stopped
//!   reading) is cut; dropping the response body drops the relay's receiver, which
//!   cancels the upstream request.
//! - At most `max_connections` are open. Beyond it a new connection gets a short
//!   `503` with `Retry-After` and a JSON body (once it has sent its request head, or
//!   after half a second), then is closed: never a hang.
//! - Closing after a response, we half-close and drain what the client is still sending
//!   for a moment ("lingering close"), so a client told `413` in the middle of its upload
//!   reads the answer instead of a connection reset.
//! - On shutdown we stop accepting, tell the app (`on_shutdown`: every relay ends its
//!   stream with an error frame), let connections finish for `shutdown_grace`, then cut
//!   whatever is left, so no stream holds shutdown hostage.
//!
//! HTTP/1.1 only, as before (`axum`'s `http1` feature). Every accepted socket gets
//! `TCP_NODELAY` (a streamed frame goes out at once) and a bound on the unsent bytes the
//! kernel queues for it (see [`tune`]). Handlers may extract `ConnectInfo<SocketAddr>`.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant, Sleep};
use tower::ServiceExt;

use crate::llm::config::Limits;
use crate::protocol::{RejectBody, Rejection};

/// What a connection refused for the cap is told to wait, in seconds.
const RETRY_AFTER_SECS: u64 = 1;
/// Refusals being written at once; beyond this a surplus connection is closed unanswered.
const REFUSING_AT_ONCE: usize = 256;
/// How long a closing connection drains what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How long a refused connection may take to receive its `503` and drain.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// How long a refused connection's request head is waited for before the `503` goes out.
const REFUSAL_WAIT: Duration = Duration::from_millis(500);
/// The most of a refused connection's request head that is read.
const REFUSAL_HEAD_BYTES: usize = 16 * 1024;
/// The most unsent bytes the kernel queues for one connection (see [`tune`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
const UNSENT_LOW_WATER: u32 = 128 * 1024;
/// The least time between two log lines about refused connections.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);
/// After an accept error that is not the peer's fault (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully:
/// stops accepting, calls `on_shutdown`, waits up to `shutdown_grace` for open
/// connections, and cuts the rest. Resolves when every connection is gone.
///
/// The settings are read from `limits` at call time; the future borrows nothing.
pub fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce() + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let transport = Transport::new(limits);
    transport.run(listener, app, shutdown, on_shutdown)
}

/// The transport settings, fixed for the server's life.
struct Transport {
    http: Arc<http1::Builder>,
    client_stall: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
    /// The whole `503` written to a connection over the cap.
    refusal: Bytes,
}

impl Transport {
    fn new(limits: &Limits) -> Transport {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        Transport {
            http: Arc::new(http),
            client_stall: limits.client_stall,
            max_connections: limits.max_connections,
            shutdown_grace: limits.shutdown_grace,
            refusal: refusal(limits.max_connections),
        }
    }

    async fn run(
        self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send,
        on_shutdown: impl FnOnce(),
    ) {
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut refused = Refused::default();
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = accept(&listener) => accepted,
            };
            tune(&stream, peer);
            if let Ok(permit) = slots.clone().try_acquire_owned() {
                let connection = Connection {
                    http: self.http.clone(),
                    app: app.clone(),
                    peer,
                    client_stall: self.client_stall,
                    stopping: stopping.clone(),
                    _permit: permit,
                };
                connections.spawn(connection.serve(stream));
            } else {
                refused.count(self.max_connections);
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    connections.spawn(refuse(stream, self.refusal.clone(), permit));
                } else {
                    tracing::debug!(%peer, "connection cap reached: closed unanswered");
                }
            }
        }
        drop(listener);
        tracing::info!(
            open = connections.len(),
            grace = ?self.shutdown_grace,
            "shutting down: no longer accepting"
        );
        on_shutdown();
        stop.send_replace(true);
        let drained = timeout(self.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                cut = connections.len(),
                "grace period over: cutting the remaining connections"
            );
            connections.shutdown().await;
        }
        tracing::info!("server stopped");
    }
}

/// Socket options of every accepted connection: `TCP_NODELAY` (a frame goes out at once)
/// and, where the system has it, `TCP_NOTSENT_LOWAT`: at most [`UNSENT_LOW_WATER`] bytes
/// wait in the kernel for a client that does not read. Without it the kernel would
/// absorb megabytes (send-buffer autotuning) before a stalled client could even be
/// noticed; what is in flight is not counted, so throughput is unchanged.
fn tune(stream: &TcpStream, peer: SocketAddr) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {err}");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(err) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_LOW_WATER) {
        tracing::debug!(%peer, "cannot set TCP_NOTSENT_LOWAT: {err}");
    }
}

/// Counts connections refused for the cap, and says so in the log at most every
/// [`REFUSED_LOG_EVERY`], not once per connection of a flood.
#[derive(Default)]
struct Refused {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl Refused {
    fn count(&mut self, max_connections: usize) {
        self.since_logged += 1;
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < REFUSED_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            max_connections,
            refused = self.since_logged,
            "connection cap reached: refusing with 503"
        );
        self.since_logged = 0;
        self.logged_at = Some(Instant::now());
    }
}

/// The next connection. Errors that concern one peer are skipped; others (out of file
/// descriptors) are logged and retried after a pause rather than spinning.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) if is_peer_error(&err) => continue,
            Err(err) => {
                tracing::error!("accept failed: {err}");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn is_peer_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection, holding its slot under the cap until it is gone.
struct Connection {
    http: Arc<http1::Builder>,
    app: Router,
    peer: SocketAddr,
    client_stall: Duration,
    stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let Connection {
            http,
            app,
            peer,
            client_stall,
            mut stopping,
            _permit,
        } = self;
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            Box::pin(app.clone().oneshot(request))
        });
        let io = TokioIo::new(StallGuard::new(stream, client_stall));
        let mut connection = http.serve_connection(io, service);
        let mut stop = Box::pin(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        let mut draining = false;
        let ended = poll_fn(|cx| {
            if !draining && stop.as_mut().poll(cx).is_ready() {
                draining = true;
                Pin::new(&mut connection).graceful_shutdown();
            }
            connection.poll_without_shutdown(cx)
        })
        .await;
        match ended {
            // On shutdown the hard stop bounds the wait anyway; don't linger into it.
            Ok(()) if draining => {}
            Ok(()) => linger(connection.into_parts().io.into_inner().io, LINGER).await,
            Err(err) => tracing::debug!(%peer, "connection closed: {err}"),
        }
    }
}

/// The `503` for a connection over the cap: status line, `Retry-After`, a JSON body.
fn refusal(max_connections: usize) -> Bytes {
    let body = RejectBody {
        error: Rejection {
            code: "too_many_connections".into(),
            field: None,
            message: format!(
                "服务器连接数已达上限（{max_connections} 个），请 {RETRY_AFTER_SECS} 秒后重试"
            ),
        },
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: application/json\r\n\
         retry-after: {RETRY_AFTER_SECS}\r\n\
         connection: close\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    Bytes::from(head + &body)
}

/// Answers `503` to the request, then closes politely. The answer waits for the request
/// head (at most [`REFUSAL_WAIT`]): an HTTP client that reads a response before it has
/// sent its request takes it for garbage and reports a broken connection instead.
async fn refuse(mut stream: TcpStream, refusal: Bytes, _permit: OwnedSemaphorePermit) {
    let _ = timeout(REFUSAL_WAIT, read_head(&mut stream)).await;
    if timeout(REFUSAL_LINGER, stream.write_all(&refusal))
        .await
        .is_ok_and(|written| written.is_ok())
    {
        linger(stream, REFUSAL_LINGER).await;
    }
}

/// Reads (and discards) until the blank line that ends a request head, the end of the
/// input, or [`REFUSAL_HEAD_BYTES`].
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while head.len() < REFUSAL_HEAD_BYTES {
        let Ok(n @ 1..) = stream.read(&mut buffer).await else {
            return;
        };
        head.extend_from_slice(&buffer[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return;
        }
    }
}

/// Half-closes, then reads and discards what the client still sends, for at most `limit`.
/// Closing a socket with unread input makes the kernel reset the connection, and a reset
/// can destroy the answer before the client reads it (a `413` in mid-upload).
async fn linger(mut stream: TcpStream, limit: Duration) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 8192];
    // Most often the client has closed already (that is what ended the connection): its
    // end of input is here, and no timer is needed.
    if matches!(stream.try_read(&mut sink), Ok(0)) {
        return;
    }
    let _ = timeout(limit, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

/// The socket, with a deadline on writes: a write that cannot progress for `stall`
/// (the client's window stays shut) fails with `TimedOut`, and hyper drops the connection.
struct StallGuard {
    io: TcpStream,
    stall: Duration,
    /// Armed while a write is pending.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    fn new(io: TcpStream, stall: Duration) -> StallGuard {
        StallGuard {
            io,
            stall,
            deadline: None,
        }
    }

    /// Passes a write's outcome through, timing how long it stays pending.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.deadline = None;
            return polled;
        }
        let stall = self.stall;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(sleep(stall)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {stall:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
