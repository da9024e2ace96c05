//! The instance manager's endpoints over HTTPS, as on Kubernetes: TLS 1.3 with the server
//! certificate PostgreSQL uses, and client certificates checked against the operator's CA
//! (`operator-ca.crt`, the public half of a CA whose only certificate is the operator's).
//!
//! Why client certificates and not a ServiceAccount token: the operator is not always a
//! pod with a token (the tests run it beside the API server), a token review would need
//! every instance manager to reach the API server and hold cluster-wide rights, and a
//! certificate check costs nothing per request. A client without a certificate still
//! completes the handshake — the kubelet's probes present none and must pass — and each
//! request is then authorized by what its connection proved ([`Peer`]).
//!
//! The configuration is rebuilt when the certificate files change (a renewal, a rotated
//! Secret), so a new certificate is served from the next connection on, without a restart.

use crate::tls::{Files, TlsError};
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The header a status token may also come in: the API server's pod proxy (how
/// `kubectl cnpg status` reaches an instance) drops `Authorization` once it has
/// authenticated the caller, and passes this one on.
pub const TOKEN_HEADER: &str = "x-cnpg-status-token";

/// What a connection proved about its client: `operator` when it presented a certificate
/// the operator's CA signed (rustls has verified the chain and the key by then).
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    /// The client is the operator.
    pub operator: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: impl Into<String>) -> impl FnOnce(String) -> TlsError {
    let what = what.into();
    move |why| TlsError::Invalid { what, why }
}

/// The certificates in a PEM text (`what` names it in errors).
pub fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what)(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(what)("no certificate in it".into()));
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn private_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error of a key's parser may quote the key: say only that it is unreadable.
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| invalid(what)("no readable private key in it".into()))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn roots(pem: &str, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certificates(pem, what)? {
        roots.add(c).map_err(|e| invalid(what)(e.to_string()))?;
    }
    Ok(roots)
}

/// The status server's TLS: the server certificate and key of `files`, TLS 1.3, and
/// client certificates verified against `files.operator_ca()` when presented.
pub fn server_config(files: &Files) -> Result<ServerConfig, TlsError> {
    let (cert, key, ca) = (files.server_cert(), files.server_key(), files.operator_ca());
    let chain = certificates(&read(&cert)?, &cert.display().to_string())?;
    let key = private_key(&read(&key)?, &key.display().to_string())?;
    let what = ca.display().to_string();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&read(&ca)?, &what)?),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| invalid(&what)(e.to_string()))?;
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid("TLS versions")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| invalid(cert.display().to_string())(e.to_string()))
}

/// How a client reaches an instance manager over HTTPS: the CA it verifies the server
/// with, the name it expects in the server's certificate, and its own certificate.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    // The configuration holds a private key: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Verifying the server against `ca_pem` under `server_name`; presenting `identity`
    /// (a certificate chain and its key, PEM) when given.
    pub fn new(
        ca_pem: &str,
        identity: Option<(&str, &str)>,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| invalid("TLS versions")(e.to_string()))?
            .with_root_certificates(roots(ca_pem, "the server CA")?);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    certificates(cert, "the client certificate")?,
                    private_key(key, "the client key")?,
                )
                .map_err(|e| invalid("the client certificate")(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        Self::from_config(Arc::new(config), server_name)
    }

    /// Any rustls configuration (a test kubelet's, which like a kubelet verifies nothing).
    pub fn from_config(config: Arc<ClientConfig>, server_name: &str) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| invalid(format!("server name {server_name:?}"))(e.to_string()))?;
        Ok(ClientTls {
            config,
            server_name,
        })
    }
}

/// `GET https://host:port/path` with `tls`, and `token` in [`TOKEN_HEADER`] when given:
/// the status code and the body, or why it failed (`timed out` past `timeout`; a refused
/// certificate as the TLS alert that says so).
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    tls: &ClientTls,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    send(
        http::Method::GET,
        host,
        port,
        path,
        timeout,
        tls,
        token,
        String::new(),
    )
    .await
}

/// `POST` of a JSON `body`, as [`get`] (how the operator asks for a base backup).
pub async fn post(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    tls: &ClientTls,
    body: String,
) -> Result<(u16, String), String> {
    send(
        http::Method::POST,
        host,
        port,
        path,
        timeout,
        tls,
        None,
        body,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn send(
    method: http::Method,
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    tls: &ClientTls,
    token: Option<&str>,
    body: String,
) -> Result<(u16, String), String> {
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, crate::http::authority(host, port));
        if let Some(t) = token {
            request = request.header(TOKEN_HEADER, t);
        }
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(body).map_err(|e| e.to_string())?;
        // In TLS 1.3 the server judges the client's certificate after the client thinks
        // the handshake is over: a refusal arrives here, as an alert.
        let response = sender.send_request(request).await.map_err(|e| {
            match std::error::Error::source(&e) {
                Some(cause) => format!("TLS: {cause}"),
                None => e.to_string(),
            }
        })?;
        crate::http::answer(response).await
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over HTTPS on `listener` until `shutdown` resolves, each request carrying
/// its connection's [`Peer`]. The certificates are read again when `files` change; a set
/// that cannot be loaded (a Secret half rotated) leaves the last good one in use, and
/// until there is one, connections are closed after a logged reason.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    files: Files,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut current: Option<(u64, Arc<ServerConfig>)> = None;
    let mut failed_digest = None;
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("status server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let digest = files.digest();
        if current.as_ref().is_none_or(|(d, _)| *d != digest) && failed_digest != Some(digest) {
            match server_config(&files) {
                Ok(c) => {
                    if current.is_some() {
                        tracing::info!("status server: certificates reloaded");
                    }
                    current = Some((digest, Arc::new(c)));
                    failed_digest = None;
                }
                Err(e) => {
                    tracing::warn!("status server: cannot load the certificates: {e}");
                    failed_digest = Some(digest);
                }
            }
        }
        let Some((_, config)) = current.clone() else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await else {
                return;
            };
            let operator = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let service = TowerToHyperService::new(app.layer(Extension(Peer { operator })));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
