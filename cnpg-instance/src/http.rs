//! One HTTP GET with a deadline: how the operator, the plugin and the tests read an
//! instance manager's `/pg/status` and probes. hyper's client (the one kube-rs uses too)
//! does the protocol; no connection is kept, so a restarted instance manager is never
//! reached through a stale one.

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// `GET http://host:port/path`: the status code and the body, or why it failed (including
/// `timed out` past `timeout`). IPv6 hosts are written without brackets.
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    get_authorized(host, port, path, timeout, None).await
}

/// [`get`] with `Authorization: Bearer <token>` when a token is given.
pub async fn get_authorized(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    send(
        http::Method::GET,
        host,
        port,
        path,
        timeout,
        token,
        String::new(),
    )
    .await
}

/// `POST` of a JSON `body`, as [`get_authorized`] (how a base backup is asked for).
pub async fn post_authorized(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
    body: String,
) -> Result<(u16, String), String> {
    send(http::Method::POST, host, port, path, timeout, token, body).await
}

async fn send(
    method: http::Method,
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
    body: String,
) -> Result<(u16, String), String> {
    let authority = authority(host, port);
    let uri: http::Uri = format!("http://{authority}{path}")
        .parse()
        .map_err(|e| format!("bad address {authority}{path}: {e}"))?;
    let client: Client<_, String> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(body).map_err(|e| e.to_string())?;
    let fetch = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        answer(response).await
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// `host:port` as a `Host` header and a URI write it (IPv6 in brackets).
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A response's status code and its whole body as text.
pub(crate) async fn answer<B>(response: http::Response<B>) -> Result<(u16, String), String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn status_body_and_refusal() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route(
            "/pg/status",
            axum::routing::get(|| async {
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let got = super::get(
            "127.0.0.1",
            port,
            "/pg/status",
            std::time::Duration::from_secs(5),
        )
        .await;
        assert_eq!(got, Ok((500, "down".to_owned())));
        let free = crate::ports::free_port().expect("port");
        let refused = super::get("127.0.0.1", free, "/", std::time::Duration::from_secs(5)).await;
        assert!(refused.is_err());
    }
}
