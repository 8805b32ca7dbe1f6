//! TLS to upstreams (`[services.tls]`): a per-service rustls client config
//! (trust roots, optional client certificate, ALPN by protocol) and the
//! connection stream the pool, our HTTP/1.1 client, hyper's clients and the
//! health probes all speak over.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::TlsError;

/// `[services.tls]` as configured, paths resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTlsSource {
    /// Name verified in the upstream's certificate and sent as SNI
    /// (`None`: the endpoint's IP address).
    pub server_name: Option<ServerName<'static>>,
    /// PEM trust roots (`None`: the webpki roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for mTLS.
    pub cert: Option<PathBuf>,
    /// Its PEM private key.
    pub key: Option<PathBuf>,
}

/// Which `[services.tls]` field a [`TlsError`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceField {
    /// `ca`.
    Ca,
    /// `cert`.
    Cert,
    /// `key`.
    Key,
}

/// A service's compiled upstream TLS settings.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    source: UpstreamTlsSource,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Build the client config; `alpn` is the one protocol offered
    /// (`h2` or `http/1.1`).
    ///
    /// # Errors
    /// The field at fault and why: an unreadable or bad CA, certificate or
    /// key file, or a key that does not match the certificate.
    pub fn build(source: &UpstreamTlsSource, alpn: &[u8]) -> Result<Self, (SourceField, TlsError)> {
        let mut roots = rustls::RootCertStore::empty();
        match &source.ca {
            Some(ca) => {
                for der in super::read_chain(ca).map_err(|e| (SourceField::Ca, e))? {
                    roots.add(der).map_err(|e| {
                        (
                            SourceField::Ca,
                            TlsError::BadCert {
                                path: ca.clone(),
                                why: format!("not a usable CA certificate: {e}"),
                            },
                        )
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(super::VERSIONS)
            .map_err(|e| (SourceField::Ca, e.into()))?
            .with_root_certificates(roots);
        let mut config = match (&source.cert, &source.key) {
            (Some(cert), Some(key)) => {
                // Checked as the listener's are: a mismatch is a config error,
                // not a handshake the upstream refuses.
                let certified = super::load_certified_key(cert, key).map_err(|e| {
                    let field = if e.is_key() {
                        SourceField::Key
                    } else {
                        SourceField::Cert
                    };
                    (field, e)
                })?;
                let key_der = super::read_key(key).map_err(|e| (SourceField::Key, e))?;
                builder
                    .with_client_auth_cert(certified.cert, key_der)
                    .map_err(|e| (SourceField::Key, e.into()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            source: source.clone(),
        })
    }

    /// What it was built from: a config reload compares it to tell a
    /// changed service (new pools) from an unchanged one.
    pub fn source(&self) -> &UpstreamTlsSource {
        &self.source
    }

    /// The TLS handshake over a connected socket to `addr`.
    ///
    /// # Errors
    /// When the handshake fails (untrusted or misnamed certificate, client
    /// certificate refused, no common protocol).
    pub async fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> io::Result<UpstreamStream> {
        let name = self
            .source
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let tls = self.connector.connect(name, tcp).await?;
        Ok(UpstreamStream::Tls(Box::new(tls)))
    }
}

/// A connection to an upstream: plain TCP, or TLS over it (boxed: rustls'
/// state is large and the plain case should not carry its size).
pub enum UpstreamStream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(s) => s,
            UpstreamStream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
