//! The listener: plain HTTP or TLS (OpenSSL). With `--client-ca`, TLS asks every client for a
//! certificate and verifies any it gets against that CA; customers connect without one, nodes
//! present theirs. Each request carries the connection's facts (`ConnInfo`) so the node
//! endpoints can bind the verified certificate to a server record.

use axum::http::header::{HeaderValue, CONNECTION};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// SHA-256 (lowercase hex) of the DER of a client certificate that OpenSSL verified.
    pub client_cert_sha256: Option<String>,
}

pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

pub fn tls_acceptor(files: &TlsFiles) -> Result<Arc<SslAcceptor>, openssl::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_certificate_chain_file(files.cert)?;
    builder.set_private_key_file(files.key, SslFiletype::PEM)?;
    builder.check_private_key()?;
    if let Some(ca) = files.client_ca {
        builder.set_ca_file(ca)?;
        // Ask for a certificate, verify it if sent, but let customers in without one.
        builder.set_verify(SslVerifyMode::PEER);
        let names = openssl::x509::X509::stack_from_pem(&std::fs::read(ca).unwrap_or_default())?;
        for cert in names {
            builder.add_client_ca(&cert)?;
        }
    }
    builder.set_alpn_select_callback(|_, _| Err(openssl::ssl::AlpnError::NOACK));
    Ok(Arc::new(builder.build()))
}

pub async fn serve(listener: TcpListener, tls: Option<Arc<SslAcceptor>>, app: Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let info = ConnInfo { peer, tls: false, client_cert_sha256: None };
                    serve_connection(TokioIo::new(stream), info, app).await
                }
                Some(acceptor) => {
                    let Ok(ssl) = Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, stream) else {
                        return;
                    };
                    let handshake =
                        tokio::time::timeout(std::time::Duration::from_secs(10), Pin::new(&mut stream).accept()).await;
                    if !matches!(handshake, Ok(Ok(()))) {
                        return;
                    }
                    let client_cert_sha256 = stream
                        .ssl()
                        .peer_certificate()
                        .and_then(|cert| cert.to_der().ok())
                        .map(|der| crate::crypto::sha256_hex(&der));
                    let info = ConnInfo { peer, tls: true, client_cert_sha256 };
                    serve_connection(TokioIo::new(stream), info, app).await
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, info: ConnInfo, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        let info = info.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(info);
            // The whole (bounded) body is read before any handler answers. A handler that
            // answers early (401, 404, a validation error) would otherwise leave unread bytes
            // behind, and hyper drops such a connection while a keep-alive client is already
            // sending its next request on it.
            match axum::body::to_bytes(axum::body::Body::new(body), crate::body::MAX_BODY).await {
                Ok(bytes) => app.oneshot(hyper::Request::from_parts(parts, axum::body::Body::from(bytes))).await,
                Err(_) => {
                    let mut response = crate::error::ApiError::too_large().into_response();
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    Ok(response)
                }
            }
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(io, service)
        .await;
}

/// SHA-256 fingerprint of a PEM certificate file, as the admin CLI binds it to a server.
pub fn certificate_fingerprint(pem: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    let cert = openssl::x509::X509::from_pem(pem)?;
    Ok(crate::crypto::sha256_hex(&cert.to_der()?))
}
