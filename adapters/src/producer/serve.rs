//! The producer's HTTP server: the router on hyper's connection builder, with what
//! `axum::serve` leaves out — a header read timeout, so a client that trickles its request
//! headers (or opens a connection and says nothing) is dropped instead of holding a connection
//! forever — and a graceful shutdown that lets requests in flight finish and be answered.
//! The body has its own timeout in the handlers (`producer.body_timeout_ms`).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the connections' requests
/// in flight (a connection that has not sent its first byte yet holds the wait for at most
/// `header_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, mostly: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (app, builder, watcher) = (app.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    // The first bytes tell HTTP/1 from HTTP/2, and no timer runs while they
                    // are awaited: a connection that says nothing is closed here.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let connection = serve_connection(&builder, stream, app);
                    if let Err(e) = watcher.watch(connection).await {
                        tracing::debug!(error = %e, "a connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The connection settings every producer connection is served with: HTTP/1 or HTTP/2 by the
/// first bytes, HTTP/1 request headers within `header_timeout`.
pub fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // HTTP/1.1 lets a client shut its write side once the request is sent; without this
        // hyper drops such a request unanswered (the fuzzer's client does it to say "that is
        // all"; so does `nc -N`).
        .half_close(true);
    builder
}

/// Serves `app` on one connection (a socket, or an in-memory pipe in the fuzzer) until it ends.
pub fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    app: Router,
) -> auto::Connection<'static, TokioIo<I>, TowerToHyperService<Router>, TokioExecutor>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .into_owned()
}
