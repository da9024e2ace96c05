//! A small harness for tests that need real PostgreSQL servers: a private temp directory
//! (owned by `postgres` when the tests run as root), free ports on 127.0.0.1, and instance
//! managers running in-process with their HTTP servers, sharing one in-memory cluster
//! status that the test drives like an operator would. Everything stops when the harness
//! is dropped.

use crate::bootstrap::{self, Secrets};
use crate::config::Settings;
use crate::control::PgCtl;
use crate::manager::{Manager, ManagerConfig, SharedState};
use crate::pg_bin::{PgBinaries, Search};
use crate::pgdata::DataDir;
use crate::query::PgClient;
use crate::runas::{self, RunAs};
use crate::server::{self, AppState};
use crate::view::{Endpoint, MemoryView, ViewData};
use cnpg_core::status::InstanceStatus;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// This workspace's `cnpg-instance` program, built once per profile: tests and benchmarks
/// of other packages cannot name another package's binary, so they build it here.
pub fn instance_binary(release: bool) -> &'static std::path::Path {
    use std::sync::OnceLock;
    static DEBUG: OnceLock<std::path::PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<std::path::PathBuf> = OnceLock::new();
    let cell = if release { &RELEASE } else { &DEBUG };
    cell.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "cnpg-instance",
            "--bin",
            "cnpg-instance",
            "--bin",
            "cnpg-cloud",
        ]);
        if release {
            cmd.arg("--release");
        }
        let ok = cmd.current_dir(&root).status().expect("cargo runs");
        assert!(ok.success(), "building cnpg-instance failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("cnpg-instance")
    })
}

/// The release `cnpg-instance` built without its default features (no `kubernetes`, so no
/// kube-rs), as a local-only user would build it; copied to `cnpg-instance-local-only` beside
/// the default build, whose path and features stay as [`instance_binary`] makes them (call
/// that afterwards: cargo then rebuilds the default).
pub fn local_only_instance_binary() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "cnpg-instance",
            "--bin",
            "cnpg-instance",
            "--no-default-features",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(
        ok.success(),
        "building cnpg-instance --no-default-features failed"
    );
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    let copy = dir.join("cnpg-instance-local-only");
    std::fs::copy(dir.join("cnpg-instance"), &copy).expect("copy the local-only build");
    copy
}

/// A free TCP port on 127.0.0.1, outside the ephemeral range ([`crate::ports`]).
pub fn free_port() -> u16 {
    crate::ports::free_port().expect("the loopback interface has free ports")
}

/// One running instance.
pub struct Instance {
    /// Name.
    pub name: String,
    /// PostgreSQL port.
    pub port: u16,
    /// Status server port.
    pub status_port: u16,
    /// PGDATA.
    pub pgdata: PathBuf,
    /// The manager's state.
    pub shared: SharedState,
    /// PostgreSQL's log.
    pub log_file: PathBuf,
    stop: Option<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A cluster of test instances.
pub struct Harness {
    /// The temp directory holding everything.
    pub root: tempfile::TempDir,
    /// The PostgreSQL programs.
    pub bin: PgBinaries,
    /// The user PostgreSQL runs as.
    pub run_as: Option<RunAs>,
    /// The cluster status the managers read.
    pub view: MemoryView,
    /// The shared secrets.
    pub secrets: Secrets,
    /// Cluster name.
    pub cluster: String,
    /// Running instances.
    pub instances: BTreeMap<String, Instance>,
    /// The smart shutdown budget of managers started from now on (zero: fast at once).
    pub smart_timeout: Duration,
    /// The bearer token the status servers of managers started from now on require
    /// ([`Harness::require_status_token`]); `status` sends it.
    pub status_token: Option<String>,
    /// The operator's client certificate and key (PEM), when the status servers of
    /// managers started from now on serve HTTPS ([`Harness::serve_status_over_tls`]);
    /// `status` presents it.
    pub operator_client: Option<(String, String)>,
    /// WAL archiving for managers started from now on.
    pub archive: Option<crate::config::Archive>,
    ports: BTreeMap<String, u16>,
}

impl Harness {
    /// A harness; fails with a clear message when PostgreSQL is not installed.
    pub fn new(cluster: &str) -> Harness {
        let bin = Search::standard(None).find().unwrap_or_else(|e| {
            panic!("these tests run real PostgreSQL servers and need it installed (.ci/run installs it): {e}")
        });
        let run_as = RunAs::detect().unwrap_or_else(|e| panic!("{e}"));
        let root = tempfile::Builder::new()
            .prefix("cnpg-test-")
            .tempdir()
            .expect("a temp directory");
        runas::own(run_as, root.path()).expect("give the temp directory to postgres");
        let secrets = Secrets {
            dir: root.path().join("secrets"),
        };
        secrets
            .ensure(cluster, &crate::tls::local_names(&[]), run_as)
            .expect("secrets");
        let view = MemoryView::new(ViewData::default());
        Harness {
            root,
            bin,
            run_as,
            view,
            secrets,
            cluster: cluster.to_owned(),
            instances: BTreeMap::new(),
            smart_timeout: Duration::ZERO,
            status_token: None,
            operator_client: None,
            archive: None,
            ports: BTreeMap::new(),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// The port an instance listens on (chosen on first use).
    pub fn port(&mut self, name: &str) -> u16 {
        *self.ports.entry(name.to_owned()).or_insert_with(free_port)
    }

    fn ctl(&self, name: &str) -> PgCtl {
        PgCtl {
            bin: self.bin.clone(),
            pgdata: self.dir(name).join("data"),
            run_as: self.run_as,
            passfile: self.secrets.passfile(),
        }
    }

    fn prepare(&mut self, name: &str) {
        let dir = self.dir(name);
        for d in [dir.clone(), dir.join("run")] {
            std::fs::create_dir_all(&d).expect("instance directory");
            runas::own(self.run_as, &d).expect("own instance directory");
        }
        let port = self.port(name);
        let members: Vec<String> = self.ports.keys().cloned().collect();
        self.view.update(|v| {
            v.endpoints.insert(
                name.to_owned(),
                Endpoint {
                    host: "127.0.0.1".into(),
                    port,
                },
            );
            v.instances = members;
        });
    }

    fn new_instance<'a>(
        &'a self,
        ctl: &'a PgCtl,
        data: &'a DataDir,
        name: &'a str,
    ) -> bootstrap::NewInstance<'a> {
        bootstrap::NewInstance {
            run_as: self.run_as,
            ctl,
            data,
            secrets: &self.secrets,
            cluster: &self.cluster,
            instance: name,
        }
    }

    /// `initdb` a new primary.
    pub async fn initdb(&mut self, name: &str) {
        self.prepare(name);
        let ctl = self.ctl(name);
        let data = DataDir::new(&ctl.pgdata);
        bootstrap::initdb(&self.new_instance(&ctl, &data, name), ("app", "app"))
            .await
            .unwrap_or_else(|e| panic!("initdb of {name}: {e}"));
    }

    /// `name` made and started as the cluster's primary (the view says so), once it
    /// reports itself primary.
    pub async fn running_primary(&mut self, name: &str) {
        self.view.update(|v| {
            v.target_primary = Some(name.into());
            v.current_primary = Some(name.into());
        });
        self.initdb(name).await;
        self.start(name).await;
        self.wait_until(&format!("{name} up"), Duration::from_secs(60), async |h| {
            if h.status(name).await.is_primary {
                Ok(())
            } else {
                Err("down".into())
            }
        })
        .await;
    }

    /// Clone a standby from `source`.
    pub async fn join(&mut self, name: &str, source: &str) {
        self.prepare(name);
        let port = self.port(source);
        let ctl = self.ctl(name);
        let data = DataDir::new(&ctl.pgdata);
        bootstrap::join(&self.new_instance(&ctl, &data, name), "127.0.0.1", port)
            .await
            .unwrap_or_else(|e| panic!("join of {name} from {source}: {e}"));
    }

    /// `name` cloned from `source` and started, once its WAL receiver streams.
    pub async fn running_replica(&mut self, name: &str, source: &str) {
        self.join(name, source).await;
        self.start(name).await;
        self.wait_until(
            &format!("{name} streaming"),
            Duration::from_secs(60),
            async |h| {
                let s = h.status(name).await;
                if s.is_wal_receiver_active {
                    Ok(())
                } else {
                    Err(format!("{s:?}"))
                }
            },
        )
        .await;
    }

    /// Starts the instance manager (and its status server) of `name`.
    pub async fn start(&mut self, name: &str) {
        let port = self.port(name);
        let dir = self.dir(name);
        let settings = Settings {
            cluster: self.cluster.clone(),
            instance: name.to_owned(),
            listen: "127.0.0.1".into(),
            port,
            socket_dir: dir.join("run").display().to_string(),
            parameters: BTreeMap::from([
                ("fsync".to_owned(), "off".to_owned()),
                ("shared_buffers".to_owned(), "16MB".to_owned()),
                ("max_connections".to_owned(), "30".to_owned()),
                ("wal_retrieve_retry_interval".to_owned(), "500ms".to_owned()),
            ]),
            synchronous_standby_names: String::new(),
            pg_hba: vec![],
            pg_ident: vec![],
            tls: self.secrets.tls(),
            archive: self.archive.clone(),
        };
        let ctl = self.ctl(name);
        let log_file = dir.join("postgres.log");
        let cfg = ManagerConfig {
            cluster: self.cluster.clone(),
            instance: name.to_owned(),
            pgdata: ctl.pgdata.clone(),
            settings,
            log_file: log_file.clone(),
            certificates_from: None,
            superuser_password: self.secrets.superuser(),
            managed_role_passwords: self.secrets.managed_roles(),
            run_as: self.run_as,
            tick: Duration::from_millis(100),
            stop_timeout: Duration::from_secs(20),
            smart_timeout: self.smart_timeout,
        };
        DataDir::new(&ctl.pgdata)
            .verify(&self.cluster, name)
            .unwrap_or_else(|e| panic!("{e}"));
        let query = Arc::new(PgClient {
            socket_dir: dir.join("run"),
            port,
        });
        let manager = Manager::new(
            cfg,
            Arc::new(ctl),
            query.clone(),
            Arc::new(self.view.clone()),
        );
        let shared = manager.shared();
        let (tx, rx) = watch::channel(false);
        let status_port = free_port();
        let monitoring = crate::monitoring::Monitoring::new(
            (*query).clone(),
            self.secrets.monitoring(),
            Duration::from_secs(5),
        );
        let app = server::router(AppState {
            monitoring: Some(monitoring),
            instance: name.to_owned(),
            shared: shared.clone(),
            query,
            token: self.status_token.clone(),
            operator_tls: self.operator_client.is_some(),
            backups: self.archive.as_ref().map(|a| {
                crate::backup_job::BackupJobs::new(
                    a.program.clone(),
                    a.config.clone(),
                    dir.join("data"),
                    dir.join("run"),
                    port,
                    self.run_as,
                    dir.join("backups"),
                )
            }),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", status_port))
            .await
            .expect("status port");
        let mut srx = rx.clone();
        let tls = self.operator_client.is_some().then(|| self.secrets.tls());
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = srx.wait_for(|stop| *stop).await;
            };
            match tls {
                Some(files) => crate::https::serve(listener, app, files, stopped).await,
                None => {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                }
            }
        });
        let task = tokio::spawn(manager.run(rx));
        self.instances.insert(
            name.to_owned(),
            Instance {
                name: name.to_owned(),
                port,
                status_port,
                pgdata: dir.join("data"),
                shared,
                log_file,
                stop: Some(tx),
                tasks: vec![task, server],
            },
        );
    }

    /// Stops an instance manager (PostgreSQL shuts down, smart for up to
    /// [`Harness::smart_timeout`], then fast).
    pub async fn stop(&mut self, name: &str) {
        for t in self.begin_stop(name) {
            let _ = t.await;
        }
    }

    /// Tells an instance manager to stop, as SIGTERM does, and returns its tasks, which
    /// end when it has stopped.
    pub fn begin_stop(&mut self, name: &str) -> Vec<JoinHandle<()>> {
        let Some(mut i) = self.instances.remove(name) else {
            return Vec::new();
        };
        if let Some(tx) = i.stop.take() {
            let _ = tx.send(true);
        }
        i.tasks.drain(..).collect()
    }

    /// Managers started from now on want the cluster's status token (made as the local
    /// platform makes it) on `/pg/status`.
    pub fn require_status_token(&mut self) {
        let token = self
            .secrets
            .ensure_status_token(self.run_as)
            .expect("a status token");
        self.status_token = Some(token);
    }

    /// Managers started from now on serve their status over HTTPS and take the operator
    /// by a client certificate, as in a pod: an operator CA is issued, its certificate
    /// written as `operator-ca.crt` among the secrets, and one client certificate kept in
    /// [`Harness::operator_client`].
    pub fn serve_status_over_tls(&mut self) {
        let now = jiff::Timestamp::now().as_millisecond();
        let ca = crate::tls::issue_ca("pg-operator", now).expect("an operator CA");
        let leaf = crate::tls::issue_leaf(&ca.cert, &ca.key, "cnpg-operator", vec![], true, now)
            .expect("an operator certificate");
        let files = self.secrets.tls();
        crate::tls::write_private(&files.operator_ca(), &ca.cert, self.run_as)
            .expect("operator-ca.crt");
        self.operator_client = Some((leaf.cert, leaf.key));
    }

    /// How a client reaches a status server over HTTPS: verifying it against the
    /// cluster's CA, presenting `identity` (a certificate and key, PEM) when given.
    pub fn status_tls(&self, identity: Option<(&str, &str)>) -> crate::https::ClientTls {
        let ca = std::fs::read_to_string(self.secrets.tls().server_ca()).expect("ca.crt");
        crate::https::ClientTls::new(&ca, identity, "localhost").expect("a client")
    }

    /// `GET /pg/status` of an instance (with the status token, when required; over HTTPS
    /// as the operator, when served so).
    pub async fn status(&self, name: &str) -> InstanceStatus {
        let port = self.instances[name].status_port;
        let (timeout, token) = (Duration::from_secs(5), self.status_token.as_deref());
        let got = match &self.operator_client {
            Some((cert, key)) => {
                let tls = self.status_tls(Some((cert, key)));
                crate::https::get("127.0.0.1", port, "/pg/status", timeout, &tls, token).await
            }
            None => {
                crate::http::get_authorized("127.0.0.1", port, "/pg/status", timeout, token).await
            }
        };
        let got = got
            .and_then(|(_, body)| serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")));
        got.unwrap_or_else(|e| InstanceStatus::unreachable(name, &e))
    }

    /// Ends the current WAL segment of `name` (a primary) and waits, up to `timeout`, until
    /// its archiver has archived it: everything committed so far is in the archive.
    /// Returns that segment's name.
    pub async fn switch_and_archive(&self, name: &str, timeout: Duration) -> String {
        // pg_switch_wal gives the end of the segment it finished: pg_walfile_name names it.
        let last: String = self
            .connect(name)
            .await
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await
            .expect("a WAL switch")
            .get(0);
        self.wait_until("the archive holds the last segment", timeout, async |h| {
            let row = h
                .connect(name)
                .await
                .query_one(
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            let archived: String = row.get(0);
            if archived.len() == 24 && archived >= last {
                Ok(())
            } else {
                Err(format!("last archived {archived}, want {last}"))
            }
        })
        .await;
        last
    }

    /// Waits (polling every 50 ms) until `f` holds, or panics with what was last seen.
    pub async fn wait_until<F>(&self, what: &str, timeout: Duration, mut f: F)
    where
        F: AsyncFnMut(&Harness) -> Result<(), String>,
    {
        let start = Instant::now();
        loop {
            match f(self).await {
                Ok(()) => return,
                Err(last) if start.elapsed() > timeout => {
                    let logs: String = self
                        .instances
                        .values()
                        .map(|i| {
                            format!(
                                "--- {} ({})\n{}\n",
                                i.name,
                                i.shared.lock().expect("lock").decision,
                                tail(&i.log_file)
                            )
                        })
                        .collect();
                    panic!("timed out after {timeout:?} waiting for {what}: {last}\n{logs}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Runs `sql` with the real `psql` on `conninfo` as PostgreSQL's user (libpq reads a
    /// client key only when its owner runs it): see [`psql`].
    pub async fn psql(&self, conninfo: &str, sql: &str) -> Result<String, String> {
        let (conninfo, sql, run_as) = (conninfo.to_owned(), sql.to_owned(), self.run_as);
        let home = self.root.path().to_owned();
        tokio::task::spawn_blocking(move || psql(&conninfo, &sql, run_as, &home))
            .await
            .map_err(|e| e.to_string())?
    }

    /// A superuser connection to an instance over TCP (scram-sha-256).
    pub async fn connect(&self, name: &str) -> tokio_postgres::Client {
        let pw = std::fs::read_to_string(self.secrets.superuser()).expect("superuser password");
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.instances[name].port)
            .user("postgres")
            .password(pw.trim())
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {name}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Stop every postmaster even if a test panicked: fast shutdown by signal.
        for i in self.instances.values_mut() {
            if let Some(tx) = i.stop.take() {
                let _ = tx.send(true);
            }
            if let Some(pid) = i.shared.lock().map(|s| s.pid).unwrap_or(None) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGQUIT,
                );
            }
        }
    }
}

fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs `sql` with the real `psql` (libpq, so every TLS option works as for users) on
/// `conninfo`, as `run_as` when given, with `home` as its home (libpq looks for default
/// certificates in `~/.postgresql`); its output (unaligned, tuples only), or its error.
pub fn psql(
    conninfo: &str,
    sql: &str,
    run_as: Option<RunAs>,
    home: &std::path::Path,
) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let bin = Search::standard(None)
        .find()
        .map_err(|e| format!("PostgreSQL's programs are needed: {e}"))?;
    let mut cmd = std::process::Command::new(bin.dir.join("psql"));
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
        conninfo,
    ])
    .env("PGCONNECT_TIMEOUT", "5")
    .env("HOME", home);
    if let Some(r) = run_as {
        cmd.uid(r.uid).gid(r.gid);
    }
    let out = cmd.output().map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `compressed` decompressed by the reference reader of `c`: python-snappy's stream
/// reader for snappy (the pip package, as .ci/run installs it), the command-line tool
/// otherwise.
pub fn reference_decompress(c: crate::archive::Compression, compressed: Vec<u8>) -> Vec<u8> {
    use crate::archive::Compression;
    let (tool, args): (&str, &[&str]) = match c {
        Compression::Snappy => (
            "python3",
            &[
                "-c",
                "import snappy, sys; snappy.stream_decompress(sys.stdin.buffer, sys.stdout.buffer)",
            ],
        ),
        other => (other.name(), &["-d", "-c"]),
    };
    let mut child = std::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e} (.ci/run installs it)"));
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&compressed)
    });
    let out = child.wait_with_output().expect(tool);
    writer.join().expect("join").expect("write");
    assert!(
        out.status.success(),
        "{tool} could not read {c} (for snappy: python3 -m pip install python-snappy)"
    );
    out.stdout
}

/// Every file under `dir`, recursively (what a test greps for leaked secrets).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A GET on 127.0.0.1 for tests ([`crate::http::get`], 5 s deadline).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    crate::http::get("127.0.0.1", port, path, Duration::from_secs(5)).await
}

/// A real S3 API server on loopback for archive and backup tests: moto's (from PyPI,
/// `pip install 'moto[server]'`; `.ci/run` installs it), on a free port, killed when
/// dropped. It takes any credentials.
pub struct S3Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`, the `endpointURL` to give.
    pub endpoint: String,
    port: u16,
    /// Unsigned requests it takes before it checks credentials (None: it never does).
    checks_after: Option<u32>,
}

impl S3Server {
    /// Starts one and waits until it answers; panics saying what to install when it
    /// cannot. It takes any credentials.
    pub fn start() -> S3Server {
        Self::start_with(None)
    }

    /// One that checks credentials as S3 does (moto's IAM mode) once one bucket is
    /// created: it knows no access key, so every signed request is refused with
    /// `InvalidAccessKeyId`, the answer a wrong key gets from S3.
    pub fn start_checking_credentials() -> S3Server {
        Self::start_with(Some(1))
    }

    fn start_with(checks_after: Option<u32>) -> S3Server {
        let port = free_port();
        S3Server {
            child: Self::spawn(port, checks_after),
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            checks_after,
        }
    }

    /// Stops the server: the store becomes unreachable (what it held is gone with it).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, empty, on the same address.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, self.checks_after);
    }

    fn spawn(port: u16, checks_after: Option<u32>) -> std::process::Child {
        let mut cmd = std::process::Command::new("python3");
        if let Some(n) = checks_after {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let mut child = cmd
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("these tests run moto's S3 server: python3: {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "moto's S3 server exited ({st}): install it with pip install 'moto[server]' \
                     (.ci/run does)"
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto's S3 server did not listen on 127.0.0.1:{port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// Creates a bucket (moto takes an unsigned request). moto may listen a moment before
    /// it answers (an empty answer was seen on a loaded machine): tried again for 30 s.
    pub fn create_bucket(&self, name: &str) {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut answer = String::new();
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port))
                && write!(
                    s,
                    "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.port
                )
                .is_ok()
            {
                let _ = s.read_to_string(&mut answer);
            }
            if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                return;
            }
            assert!(
                !answer.is_empty() || std::time::Instant::now() < deadline,
                "creating bucket {name}: no answer from moto within 30 s"
            );
            assert!(answer.is_empty(), "creating bucket {name}: {answer}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl S3Server {
    /// How to reach `destination` here (gzip, one segment at a time), as `key_id` with
    /// `secret`.
    pub fn archive_config(
        &self,
        destination: &str,
        server_name: &str,
        (key_id, secret): (&str, &str),
    ) -> crate::archive::ArchiveConfig {
        crate::archive::ArchiveConfig {
            destination_path: destination.to_owned(),
            server_name: server_name.to_owned(),
            endpoint_url: Some(self.endpoint.clone()),
            endpoint_ca: None,
            compression: Some(crate::archive::Compression::Gzip),
            encryption: None,
            max_parallel: 1,
            s3: Some(crate::archive::S3Credentials {
                access_key_id: key_id.to_owned(),
                secret_access_key: secret.to_owned(),
                session_token: None,
                region: Some("us-east-1".into()),
            }),
            azure: None,
            data: crate::archive::DataConfig::default(),
            retention_policy: None,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where barman-cloud finds the Azure client library it needs (`azure-storage-blob`, which
/// Debian packages only inside a 500 MB bundle): `pip install --target` of it, at
/// `$CNPG_BARMAN_AZURE_PATH` or `/opt/barman-azure` (`.ci/run` installs it there). Panics
/// saying so when it is missing.
pub fn barman_azure_pythonpath() -> PathBuf {
    let dir = std::env::var_os("CNPG_BARMAN_AZURE_PATH")
        .map_or_else(|| PathBuf::from("/opt/barman-azure"), PathBuf::from);
    assert!(
        dir.join("azure/storage/blob").is_dir(),
        "barman-cloud's Azure library is not in {}: python3 -m pip install --target {} \
         azure-storage-blob (.ci/run does)",
        dir.display(),
        dir.display()
    );
    dir
}

/// Azurite's well-known account (every Azurite has it).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known key for [`AZURITE_ACCOUNT`] (published by Microsoft; not a secret).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A real Azure Blob Storage API server on loopback: Azurite, Microsoft's emulator (from
/// npm, `npm install -g azurite`; `.ci/run` installs it), on a free port with its data in
/// a temporary directory, killed when dropped. It checks Shared Key signatures as Azure does.
pub struct AzureServer {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
    /// `http://127.0.0.1:PORT/devstoreaccount1`: the account's endpoint.
    pub endpoint: String,
}

impl AzureServer {
    /// Starts one and waits until it answers; panics saying what to install when it cannot.
    pub fn start() -> AzureServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("azurite's directory");
        let mut child = std::process::Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path())
            .args(["--silent", "--skipApiVersionCheck"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("these tests run Azurite: azurite-blob: {e} (npm install -g azurite; .ci/run does)")
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("Azurite exited ({st})");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Azurite did not listen on 127.0.0.1:{port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        AzureServer {
            child,
            _dir: dir,
            port,
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        }
    }

    /// The connection string for the account (what `azureCredentials.connectionString`
    /// holds for an emulator).
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.endpoint
        )
    }

    /// Creates a container: one request signed with the account's key (Shared Key).
    pub fn create_container(&self, name: &str) {
        use base64::Engine;
        use std::io::{Read, Write};
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        // Verb, eleven standard headers (none set), the x-ms- headers, the resource.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &b64.decode(AZURITE_KEY).expect("the key is base64"),
        );
        let signature = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("azurite");
        write!(
            s,
            "PUT /{AZURITE_ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("request");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 201"),
            "creating container {name}: {answer}"
        );
    }

    /// How to archive to `container` (and `path` in it) here, authenticated by the
    /// connection string (gzip, one segment at a time).
    pub fn archive_config(
        &self,
        container_path: &str,
        server_name: &str,
    ) -> crate::archive::ArchiveConfig {
        let config = serde_json::json!({
            "destinationPath": format!("{}/{container_path}", self.endpoint),
            "serverName": server_name,
            "compression": "gzip",
            "azure": {"connectionString": self.connection_string()},
        });
        serde_json::from_value(config).expect("an archive configuration")
    }
}

impl Drop for AzureServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
