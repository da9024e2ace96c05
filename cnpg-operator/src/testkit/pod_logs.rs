//! The test kubelet's HTTPS endpoint for container logs: what the API server proxies
//! `pods/log` to (`GET /containerLogs/{namespace}/{pod}/{container}`), so `kubectl logs` and
//! the plugin's `logs cluster` read real Pods' output through the real API server.
//!
//! As a kubelet serves it: `tailLines` (the last N lines), `follow` (the stream stays open
//! and carries what the container writes until its Pod goes away), `limitBytes`. Lines carry
//! no timestamps (the test kubelet's log files have none): `timestamps` is accepted and
//! ignored. The API server does not verify a kubelet's certificate unless it is told a CA
//! for it (`--kubelet-certificate-authority`, which the test control plane does not set), so
//! a self-signed certificate for 127.0.0.1 does.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cnpg_instance::tls::{Files, issue_ca, issue_leaf};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Finds a running Pod's uid by namespace and name.
pub(crate) type Lookup = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

#[derive(Clone)]
struct Logs {
    root: PathBuf,
    lookup: Lookup,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    follow: Option<bool>,
}

/// Serves the logs under `root/pods/<uid>/logs/<container>.log` on 127.0.0.1 until `stop`
/// is set; its port (the Node's `daemonEndpoints.kubeletEndpoint.Port`).
pub(crate) async fn serve(root: PathBuf, lookup: Lookup, mut stop: watch::Receiver<bool>) -> u16 {
    let tls = Files {
        dir: root.join("kubelet-tls"),
    };
    std::fs::create_dir_all(&tls.dir).expect("kubelet TLS directory");
    let now = jiff::Timestamp::now().as_millisecond();
    let ca = issue_ca("test kubelet", now).expect("kubelet CA");
    let leaf = issue_leaf(
        &ca.cert,
        &ca.key,
        "test kubelet",
        vec!["127.0.0.1".into(), "localhost".into()],
        false,
        now,
    )
    .expect("kubelet certificate");
    for (path, text) in [
        (tls.server_cert(), &leaf.cert),
        (tls.server_key(), &leaf.key),
        (tls.operator_ca(), &ca.cert),
    ] {
        std::fs::write(path, text).expect("kubelet TLS files");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("kubelet port");
    let port = listener.local_addr().expect("kubelet address").port();
    let app = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_log),
        )
        .with_state(Logs { root, lookup });
    tokio::spawn(cnpg_instance::https::serve(
        listener,
        app,
        tls,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    port
}

async fn container_log(
    State(logs): State<Logs>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(p): Query<Params>,
) -> Response {
    let Some(uid) = (logs.lookup)(&namespace, &pod) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} does not run on this node"),
        )
            .into_response();
    };
    let path = logs
        .root
        .join("pods")
        .join(&uid)
        .join("logs")
        .join(format!("{container}.log"));
    let Ok(text) = tokio::fs::read(&path).await else {
        return (
            StatusCode::BAD_REQUEST,
            format!("container {container} of pod {namespace}/{pod} has not started"),
        )
            .into_response();
    };
    // The last `tailLines` lines: from just after the n-th newline before the final one.
    let start = match p.tail_lines {
        None => 0,
        Some(0) => text.len(),
        Some(n) => {
            let body = text.strip_suffix(b"\n").unwrap_or(&text);
            body.iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| **b == b'\n')
                .nth(n - 1)
                .map_or(0, |(i, _)| i + 1)
        }
    };
    let mut first = text[start..].to_vec();
    if let Some(limit) = p.limit_bytes {
        first.truncate(limit);
    }
    if !p.follow.unwrap_or(false) {
        return first.into_response();
    }
    // Follow: what is there now, then whatever the container appends, while its Pod runs.
    let offset = text.len() as u64;
    let stream = futures::stream::unfold(
        (Some(first), offset, logs, namespace, pod, path),
        |(pending, offset, logs, ns, pod, path)| async move {
            if let Some(chunk) = pending {
                return Some((
                    Ok::<_, std::io::Error>(chunk),
                    (None, offset, logs, ns, pod, path),
                ));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                (logs.lookup)(&ns, &pod)?;
                let chunk = appended(&path, offset).await.ok()?;
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((Ok(chunk), (None, next, logs, ns, pod, path)));
                }
            }
        },
    );
    Body::from_stream(stream).into_response()
}

/// What the file holds past `offset`.
async fn appended(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    Ok(buf)
}
