//! Sockets: the accept loop and one hyper HTTP/1 connection per client, serving the axum router.
//! Written by hand instead of `axum::serve` because a simulated reset must close the connection
//! without any answer, which only an error from the hyper service can do.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use super::SimTls;
use super::routes::DropConnection;

/// How long to back off when `accept` fails (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The error that makes hyper abandon a connection mid-request.
#[derive(Debug, thiserror::Error)]
#[error("simulated connection reset")]
struct ConnectionReset;

/// Accepts connections until `shutdown` changes or its sender is dropped; then asks every open
/// connection to finish its in-flight request and close.
pub(super) async fn serve(
    listener: TcpListener,
    (router, tls): (Router, Option<SimTls>),
    (latency, in_flight): (Duration, Arc<AtomicUsize>),
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Small JSON answers must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let serving = (
            router.clone(),
            (latency, Arc::clone(&in_flight)),
            shutdown.clone(),
        );
        match &tls {
            None => drop(tokio::spawn(serve_connection(stream, serving))),
            Some(tls) => drop(tokio::spawn(handshake(tls.0.clone(), stream, serving))),
        }
    }
}

/// One request being answered, counted until it is done or dropped (a client that hangs up).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: Arc<AtomicUsize>) -> Counted {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What serving one connection needs: the routes, the added latency and the in-flight count,
/// and the shutdown signal.
type Serving = (Router, (Duration, Arc<AtomicUsize>), watch::Receiver<bool>);

/// The TLS handshake, then the connection; a client that refuses the certificate (or never
/// finishes the handshake) just goes away.
async fn handshake(acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream, serving: Serving) {
    let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    if let Ok(Ok(stream)) = shaken {
        serve_connection(stream, serving).await;
    }
}

async fn serve_connection<S>(stream: S, (router, (latency, in_flight), mut shutdown): Serving)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        let in_flight = Arc::clone(&in_flight);
        async move {
            let _counted = Counted::new(in_flight);
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if response.extensions().get::<DropConnection>().is_some() {
                return Err(ConnectionReset);
            }
            Ok::<_, ConnectionReset>(response)
        }
    });
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    // Errors are the client's business (or a simulated reset): the connection just ends.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = shutdown.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
