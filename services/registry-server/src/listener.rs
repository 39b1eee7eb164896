//! The gRPC listener: accepts TCP connections, completes TLS handshakes off
//! the accept loop, and hands tonic connections that know their [`Peer`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use registry_api::auth::{ClientCertificate, Peer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::tls::SharedConfig;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; beyond that, accepting waits.
const HANDSHAKES_IN_FLIGHT: usize = 256;

/// One accepted connection.
#[derive(Debug)]
pub struct Connection {
    io: Io,
    peer: Peer,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// The connections `listener` accepts, over TLS when `tls` is given. The
/// accepting task ends when the stream is dropped.
pub fn incoming(listener: TcpListener, tls: Option<SharedConfig>) -> impl Stream<Item = io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept(listener, tls, tx));
    ReceiverStream::new(rx)
}

async fn accept(listener: TcpListener, tls: Option<SharedConfig>, tx: mpsc::Sender<io::Result<Connection>>) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT));
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        // gRPC answers are small frames; do not hold them back.
        let _ = stream.set_nodelay(true);
        let Some(tls) = &tls else {
            let peer = Peer {
                address: Some(address),
                certificate: None,
            };
            if tx
                .send(Ok(Connection {
                    io: Io::Plain(stream),
                    peer,
                }))
                .await
                .is_err()
            {
                return;
            }
            continue;
        };
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(connection) = handshake(acceptor, stream, address).await {
                let _ = tx.send(Ok(connection)).await;
            }
        });
    }
}

async fn handshake(acceptor: TlsAcceptor, stream: TcpStream, address: SocketAddr) -> Option<Connection> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(peer = %address, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::info!(peer = %address, "TLS handshake timed out");
            return None;
        }
    };
    let certificate = match stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
        None => None,
        Some(der) => match ClientCertificate::from_der(der) {
            Ok(certificate) => Some(Arc::new(certificate)),
            Err(reason) => {
                tracing::info!(peer = %address, %reason, "client certificate refused");
                return None;
            }
        },
    };
    Some(Connection {
        io: Io::Tls(Box::new(stream)),
        peer: Peer {
            address: Some(address),
            certificate,
        },
    })
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
