//! A client that commits numbered rows through a cluster's `-rw` endpoint as fast as it
//! can, reconnecting on errors and retrying an unacknowledged number: what failover tests
//! and benchmarks watch (no acknowledged row may go missing; how long do writes stop?).
//! Behind the `testkit` feature.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address of `-rw`: 127.0.0.1 for a local cluster, the ClusterIP on Kubernetes.
    pub host: String,
    /// Port of `-rw`.
    pub port: u16,
    /// User (and database) name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Further ports on `host` tried in order after `port`, keeping the first server that
    /// accepts writes: a multi-host connection string with `target_session_attrs=read-write`
    /// (straight to the instances, the way clients fail over without `-rw`). Empty: `port`
    /// only.
    pub more_ports: Vec<u16>,
    /// The cluster's CA: connect over TLS and verify the server's certificate and name
    /// (`host`) with it, as a careful client does (`sslmode=verify-full`). `None`: no TLS.
    pub ca: Option<std::path::PathBuf>,
}

/// A TLS connector trusting only `ca` (rustls checks the chain and the host name).
fn verifying(ca: &std::path::Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .unwrap_or_else(|e| panic!("{}: {e}", ca.display()))
        .flatten()
    {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .expect("TLS 1.3 with ring")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

impl Target {
    /// A connection (its driver runs on the current runtime).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host).port(self.port);
        for p in &self.more_ports {
            cfg.host(&self.host).port(*p);
        }
        if !self.more_ports.is_empty() {
            cfg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        cfg.user(&self.user)
            .password(&self.password)
            .dbname(&self.user)
            .connect_timeout(Duration::from_secs(1));
        let Some(ca) = &self.ca else {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return Ok(client);
        };
        cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
        let (client, conn) = cfg.connect(verifying(ca)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The numbers present in table `rows` now (through `-rw`).
    pub fn rows(&self) -> BTreeSet<i64> {
        self.rows_in("rows")
    }

    /// The numbers present in `table` now (through `-rw`).
    pub fn rows_in(&self, table: &str) -> BTreeSet<i64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            // -rw may be moving right now (its connections are cut): retry for a while.
            let start = Instant::now();
            loop {
                let attempt = async {
                    let c = self.connect().await?;
                    c.query(&format!("SELECT n FROM {table}"), &[]).await
                };
                match attempt.await {
                    Ok(rows) => break rows.iter().map(|r| r.get(0)).collect(),
                    Err(e) if start.elapsed() > Duration::from_secs(60) => {
                        panic!(
                            "cannot read the rows through -rw at {}:{}: {e}",
                            self.host, self.port
                        )
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    }
}

/// One connection the writer made, for explaining a lost row afterwards: which server
/// acknowledged it.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The first number written over it.
    pub from: i64,
    /// The server's port (`inet_server_port()`): which instance, or `-rw` itself.
    pub port: Option<u16>,
    /// When it was made.
    pub at: Instant,
}

/// The writing client (its own thread and runtime).
pub struct Writer {
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    /// Each connection made: the first number it wrote, the server's port, when.
    connections: Arc<Mutex<Vec<Connection>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts writing 1, 2, 3, ... into table `rows`, one commit each.
    pub fn start(target: Target) -> Writer {
        Writer::start_into(target, "rows")
    }

    /// Starts writing 1, 2, 3, ... into `table`, one commit each: several writers, each its
    /// own table.
    pub fn start_into(target: Target, table: &'static str) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, conns) = (acked.clone(), stop.clone(), connections.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let mut next = 1i64;
                let mut client: Option<tokio_postgres::Client> = None;
                while !s.load(Ordering::Relaxed) {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        match target.connect().await {
                            Ok(c) => {
                                let _ = c
                                    .batch_execute(&format!(
                                        "CREATE TABLE IF NOT EXISTS {table} (n bigint PRIMARY KEY)"
                                    ))
                                    .await;
                                // Unnamed statements only (one round trip each): a
                                // pooler in transaction mode may run each round trip
                                // on another server connection.
                                let port = c
                                    .query_typed("SELECT inet_server_port()", &[])
                                    .await
                                    .ok()
                                    .and_then(|rows| rows.first()?.get::<_, Option<i32>>(0))
                                    .and_then(|p| u16::try_from(p).ok());
                                conns.lock().expect("connections lock").push(Connection {
                                    from: next,
                                    port,
                                    at: Instant::now(),
                                });
                                client = Some(c);
                            }
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        }
                    }
                    let c = client.as_ref().expect("connected just above");
                    let n = next;
                    let sql = format!("INSERT INTO {table} VALUES ($1) ON CONFLICT DO NOTHING");
                    let params = [(
                        &n as &(dyn tokio_postgres::types::ToSql + Sync),
                        tokio_postgres::types::Type::INT8,
                    )];
                    let insert = c.execute_typed(&sql, &params);
                    match tokio::time::timeout(Duration::from_secs(3), insert).await {
                        Ok(Ok(_)) => {
                            a.lock().expect("acked lock").push((n, Instant::now()));
                            next += 1;
                        }
                        // Not acknowledged: reconnect and retry the same number.
                        _ => client = None,
                    }
                }
            });
        });
        Writer {
            acked,
            connections,
            stop,
            handle: Some(handle),
        }
    }

    /// Commits acknowledged so far.
    pub fn count(&self) -> usize {
        self.acked.lock().expect("acked lock").len()
    }

    /// The numbers acknowledged so far.
    pub fn acked(&self) -> Vec<i64> {
        self.acked
            .lock()
            .expect("acked lock")
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }

    /// Waits until more than `than + 20` commits are acknowledged; panics after `timeout`.
    pub fn wait_for_more(&self, than: usize, timeout: Duration) {
        let start = Instant::now();
        while self.count() <= than + 20 {
            assert!(
                start.elapsed() < timeout,
                "writes did not resume: {} acked",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The numbers acknowledged so far, with when.
    pub fn acked_at(&self) -> Vec<(i64, Instant)> {
        self.acked.lock().expect("acked lock").clone()
    }

    /// Every connection made so far, in order.
    pub fn connections(&self) -> Vec<Connection> {
        self.connections.lock().expect("connections lock").clone()
    }

    /// How long after `t` the first commit was acknowledged (waits up to `timeout`).
    pub fn first_ack_after(&self, t: Instant, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            let found = self
                .acked
                .lock()
                .expect("acked lock")
                .iter()
                .rev()
                .take_while(|(_, at)| *at > t)
                .last()
                .map(|(_, at)| at.duration_since(t));
            if found.is_some() || start.elapsed() > timeout {
                return found;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The longest time without an acknowledged commit between `from` and `to`,
    /// counted from the last commit acknowledged before `from`: the outage a fault
    /// caused, however late after it the writes stopped (a deleted pod keeps serving
    /// until its kubelet acts).
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let acked = self.acked.lock().expect("acked lock");
        let mut prev = acked
            .iter()
            .rev()
            .find(|(_, at)| *at <= from)
            .map_or(from, |(_, at)| *at);
        let mut longest = Duration::ZERO;
        for (_, at) in acked.iter().filter(|(_, at)| *at > from && *at <= to) {
            longest = longest.max(at.duration_since(prev));
            prev = *at;
        }
        longest.max(to.saturating_duration_since(prev))
    }

    /// Stops writing; returns every acknowledged number.
    pub fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.acked()
    }
}
