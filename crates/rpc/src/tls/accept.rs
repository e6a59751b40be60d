//! Accepting TLS connections: each handshake runs on its own task with a time limit,
//! so a slow or silent client holds up no one, and a refused one is logged with why.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::{ServerTls, TlsMismatch};

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes finished and not yet taken by the server.
const BACKLOG: usize = 64;

/// How long a refused client gets to read the alert that says why.
const LINGER: Duration = Duration::from_secs(2);

/// The connections of `listener` that completed a TLS handshake. Accepting stops when
/// the stream is dropped (the server stopped).
pub fn incoming(
    listener: TcpListener,
    tls: &ServerTls,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let acceptor = TlsAcceptor::from(tls.config.clone());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Best effort, as for plaintext connections: a failure only costs latency.
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = acceptor.accept(tcp).into_fallible();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => {
                        // The server stopped meanwhile: the connection just closes.
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err((e, tcp))) => {
                        let reason =
                            TlsMismatch::find(&e).map_or_else(|| e.to_string(), |m| m.refusal());
                        tracing::info!(%peer, %reason, "refused a TLS connection");
                        linger(tcp).await;
                    }
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Closes a refused connection so that the client reads the alert saying why. With
/// TLS 1.3 a client sends its first request right after its certificate, before the
/// server refused it; closing with that request unread would reset the connection,
/// and the reset would discard the alert on its way. So: send the end of the stream,
/// then read what the client sent until it closes too, for a short while.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
