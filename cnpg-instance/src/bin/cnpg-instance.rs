//! `cnpg-instance`: the cnpg-rs instance manager.

use clap::{Args, Parser, Subcommand};
use cnpg_instance::bootstrap::{self, Secrets};
use cnpg_instance::config::Settings;
use cnpg_instance::control::PgCtl;
use cnpg_instance::manager::{Manager, ManagerConfig};
use cnpg_instance::pg_bin::{PgBinaries, Search};
use cnpg_instance::pgdata::DataDir;
use cnpg_instance::query::PgClient;
use cnpg_instance::runas::{self, RunAs};
use cnpg_instance::server::{self, AppState};
use cnpg_instance::tls;
use cnpg_instance::view::{ClusterView, FileView};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long one monitoring query may run before PostgreSQL cancels it (a scrape never
/// waits for it: see `cnpg_instance::monitoring`).
const MONITORING_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs beside one PostgreSQL server and makes it do what the operator decides: start it,
/// stop it, promote it, demote it through pg_rewind, fence it, and report its status.
#[derive(Debug, Parser)]
#[command(name = "cnpg-instance", version)]
struct Cli {
    /// Directory holding the PostgreSQL programs (default: $PG_BIN, `pg_config --bindir`,
    /// then the highest /usr/lib/postgresql/*/bin).
    #[arg(long, global = true, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Instance {
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    pgdata: PathBuf,
    /// Cluster name.
    #[arg(long)]
    cluster: String,
    /// Instance name (`<cluster>-<serial>`).
    #[arg(long)]
    name: String,
    /// Directory of the cluster's password files (created, with generated passwords, when
    /// missing; shared by every instance of the cluster).
    #[arg(long, value_name = "DIR")]
    secrets: PathBuf,
    /// initdb/join: succeed without doing anything when the data directory already holds
    /// this instance (a pod whose bootstrap was interrupted after it finished).
    #[arg(long)]
    skip_if_initialized: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the first instance of a new cluster (initdb, roles, application database).
    Initdb {
        #[command(flatten)]
        instance: Instance,
        /// Application database.
        #[arg(long, default_value = "app")]
        app_db: String,
        /// Owner of the application database.
        #[arg(long, default_value = "app")]
        app_owner: String,
    },
    /// Create the first instance of a new cluster from another cluster's backups
    /// (`bootstrap.recovery`): restore a base backup from its object store, replay its
    /// archived WAL to the target (or the end of the archive), promote, and give it this
    /// cluster's credentials.
    Recover {
        #[command(flatten)]
        instance: Instance,
        /// The source's object store (`cnpg-cloud`'s JSON configuration); PostgreSQL's
        /// user must be able to read it (restore_command reads it).
        #[arg(long, value_name = "FILE")]
        source_config: PathBuf,
        /// The backup to start from (default: the newest that ended before a time or LSN
        /// target, else the newest).
        #[arg(long)]
        backup_id: Option<String>,
        /// Stop at this time (RFC 3339, or `YYYY-MM-DD HH:MM:SS`, UTC without a zone).
        #[arg(long)]
        target_time: Option<String>,
        /// Stop at this LSN.
        #[arg(long)]
        target_lsn: Option<String>,
        /// Stop at this transaction's commit.
        #[arg(long)]
        target_xid: Option<String>,
        /// Stop at this restore point.
        #[arg(long)]
        target_name: Option<String>,
        /// Stop as soon as the backup is consistent.
        #[arg(long)]
        target_immediate: bool,
        /// The timeline to follow: latest (default), current or a number.
        #[arg(long)]
        target_tli: Option<String>,
        /// Stop just before the target instead of just after it.
        #[arg(long)]
        exclusive: bool,
        /// Application database (created when the backup lacks it).
        #[arg(long, default_value = "app")]
        app_db: String,
        /// Owner of the application database (created when the backup lacks it; given this
        /// cluster's application password).
        #[arg(long, default_value = "app")]
        app_owner: String,
        /// Publish the progress in the Cluster's `status.recoveryProgress` as it goes
        /// (in-cluster credentials or kubeconfig).
        #[arg(long)]
        kubernetes: bool,
        /// The Cluster's namespace (with --kubernetes).
        #[arg(long, env = "NAMESPACE", default_value = "default")]
        namespace: String,
    },
    /// Create a standby by cloning the primary (pg_basebackup).
    Join {
        #[command(flatten)]
        instance: Instance,
        /// Host of the primary.
        #[arg(long, default_value = "127.0.0.1")]
        source_host: String,
        /// Port of the primary.
        #[arg(long)]
        source_port: u16,
    },
    /// Run the instance: keep PostgreSQL in the role the cluster status gives it, and serve
    /// /pg/status, /healthz, /readyz, /startupz and /metrics.
    Run {
        #[command(flatten)]
        instance: Instance,
        /// PostgreSQL's port.
        #[arg(long)]
        port: u16,
        /// Address PostgreSQL listens on.
        #[arg(long, default_value = "127.0.0.1")]
        listen: String,
        /// Directory for PostgreSQL's Unix socket (default: <pgdata>/../run).
        #[arg(long, value_name = "DIR")]
        socket_dir: Option<PathBuf>,
        /// Port of the status server.
        #[arg(long)]
        status_port: u16,
        /// Address of the status server.
        #[arg(long, default_value = "127.0.0.1")]
        status_listen: String,
        /// The cluster status file the operator writes (JSON). `currentPrimary` is published
        /// in `current-primary.json` beside it.
        #[arg(long, value_name = "FILE", required_unless_present = "kubernetes")]
        cluster_status: Option<PathBuf>,
        /// Read the cluster status from the Cluster on Kubernetes (in-cluster credentials
        /// or kubeconfig) instead of a file; publish `currentPrimary` there, and hold the
        /// primary Lease before promoting.
        #[arg(long, conflicts_with = "cluster_status")]
        kubernetes: bool,
        /// The Cluster's namespace (with --kubernetes).
        #[arg(long, env = "NAMESPACE", default_value = "default")]
        namespace: String,
        /// A PostgreSQL parameter, as NAME=VALUE (repeatable).
        #[arg(long = "parameter", value_name = "NAME=VALUE")]
        parameters: Vec<String>,
        /// PostgreSQL's log file (default: <pgdata>/../postgres.log).
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        /// Seconds a smart shutdown may take when the manager stops, before a fast one.
        #[arg(long, default_value_t = 180)]
        smart_shutdown_timeout: u64,
        /// Seconds a fast shutdown may take (demotion, fencing), before an immediate one.
        #[arg(long, default_value_t = 60)]
        stop_timeout: u64,
        /// A mounted volume of certificates (the cluster's Secrets): copied into the
        /// secrets directory whenever they change, and PostgreSQL reloaded.
        #[arg(long, value_name = "DIR")]
        certificates_from: Option<PathBuf>,
        /// Serve the status server over HTTPS (TLS 1.3, the server certificate), and let
        /// `/pg/status` answer only the operator (a client certificate its CA,
        /// `operator-ca.crt` among the certificates, signed) or the cluster's status
        /// token. The probes and `/metrics` stay open.
        #[arg(long)]
        status_tls: bool,
        /// Also serve `/metrics` alone on this port (upstream's 9187, which PodMonitors
        /// and Prometheus scrape), over plain HTTP unless --metrics-tls.
        #[arg(long)]
        metrics_port: Option<u16>,
        /// Serve the metrics port over HTTPS with the server certificate
        /// (`spec.monitoring.tls.enabled`).
        #[arg(long, requires = "metrics_port")]
        metrics_tls: bool,
    },
    /// Print an instance's status (GET /pg/status).
    Status {
        /// Port of its status server.
        #[arg(long)]
        status_port: u16,
        /// Host of its status server.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The cluster's `status-token` file, when it has one (a local cluster's secrets,
        /// or `/controller/secrets/status-token` in a pod).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Over HTTPS (an instance run with --status-tls), verifying the server against
        /// this CA (`ca.crt` among the certificates).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// The name the server's certificate must hold (with --ca; default: the host).
        #[arg(long, value_name = "NAME", requires = "ca")]
        server_name: Option<String>,
    },
    /// Show which PostgreSQL installation would be used, and why.
    FindPostgres,
    /// Run one PgBouncer of a Pooler: render its files from the operator's configuration,
    /// keep it running, reload it on changes, pause and resume it, serve its metrics.
    Pgbouncer {
        /// The pooler's configuration (JSON, written by the operator; re-read every 100 ms).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// This PgBouncer's own directory (its files, socket and log).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster's certificates (`ca.crt`, `server.crt`, `server.key`,
        /// `cnpg_pooler_pgbouncer.crt`, `cnpg_pooler_pgbouncer.key`, `client-ca.crt`).
        #[arg(long, value_name = "DIR")]
        certificates: PathBuf,
        /// Where PgBouncer listens (the pooler's other processes share the port).
        #[arg(long, default_value = "127.0.0.1")]
        listen_addr: String,
        /// PgBouncer's port.
        #[arg(long)]
        port: u16,
        /// Port of `/status`, `/metrics`, `/pause` and `/resume`.
        #[arg(long)]
        http_port: u16,
        /// Address of that endpoint.
        #[arg(long, default_value = "127.0.0.1")]
        http_addr: String,
        /// The token `/pause` and `/resume` take (the cluster's `status-token`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The `pgbouncer` program (default: $PGBOUNCER, then PATH, then /usr/sbin).
        #[arg(long, value_name = "FILE")]
        pgbouncer: Option<PathBuf>,
    },
    /// Pod init container: copy this program into a shared volume (so any PostgreSQL
    /// image can run it) and the cluster's passwords beside it.
    Install {
        /// Directory to install into (`cnpg-instance`, `secrets/`, `run/`, `tmp/`).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Directory holding the password files (a mounted Secret).
        #[arg(long, value_name = "DIR")]
        passwords: Option<PathBuf>,
        /// Directory holding the certificates (mounted Secrets: `ca.crt`, `server.crt`,
        /// `server.key`, `streaming_replica.crt`, `streaming_replica.key`, optionally
        /// `client-ca.crt`).
        #[arg(long, value_name = "DIR")]
        certificates: Option<PathBuf>,
    },
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

/// What `initdb`, `join` and `recover` share: nothing to do when PGDATA already holds the
/// instance (`Ok(false)`, said), else its directories and secrets prepared and `make` run
/// on it (`Ok(true)` once made).
async fn bootstrapping<E: std::fmt::Display>(
    bin: &PgBinaries,
    instance: &Instance,
    run_as: Option<RunAs>,
    make: impl AsyncFnOnce(&bootstrap::NewInstance<'_>) -> Result<(), E>,
) -> Result<bool, String> {
    let secrets = Secrets {
        dir: instance.secrets.clone(),
    };
    if already_initialized(instance) {
        return Ok(false);
    }
    if DataDir::new(&instance.pgdata).reclone_pending().is_some() {
        // Never initdb (or a second clone) over it: `run` finishes the re-clone.
        println!(
            "{}: a re-clone from the primary was cut off; the instance manager finishes it",
            instance.pgdata.display()
        );
        return Ok(false);
    }
    prepare(instance, &secrets, run_as)?;
    let c = ctl(bin, instance, run_as, &secrets);
    let data = DataDir::new(&instance.pgdata);
    make(&bootstrap::NewInstance {
        run_as,
        ctl: &c,
        data: &data,
        secrets: &secrets,
        cluster: &instance.cluster,
        instance: &instance.name,
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(true)
}

fn ctl(bin: &PgBinaries, i: &Instance, run_as: Option<RunAs>, secrets: &Secrets) -> PgCtl {
    PgCtl {
        bin: bin.clone(),
        pgdata: i.pgdata.clone(),
        run_as,
        passfile: secrets.passfile(),
    }
}

/// The async runtime: one thread is plenty for one PostgreSQL (or one PgBouncer), and
/// keeps the manager small.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::Status {
        status_port,
        host,
        token_file,
        ca,
        server_name,
    } = &cli.command
    {
        let token = match token_file.as_ref().map(std::fs::read_to_string) {
            None => None,
            Some(Ok(t)) => Some(t.trim().to_owned()),
            Some(Err(e)) => return fail(format!("--token-file: {e}")),
        };
        let tls = match ca.as_ref().map(std::fs::read_to_string) {
            None => None,
            Some(Err(e)) => return fail(format!("--ca: {e}")),
            Some(Ok(pem)) => match cnpg_instance::https::ClientTls::new(
                &pem,
                None,
                server_name.as_deref().unwrap_or(host),
            ) {
                Ok(t) => Some(t),
                Err(e) => return fail(format!("--ca: {e}")),
            },
        };
        return status(host, *status_port, token.as_deref(), tls.as_ref());
    }
    if let Command::Install {
        to,
        passwords,
        certificates,
    } = &cli.command
    {
        return install(to, passwords.as_deref(), certificates.as_deref());
    }
    if let Command::Pgbouncer { .. } = &cli.command {
        return pgbouncer(cli.command);
    }
    let bin = match Search::standard(cli.pg_bin.clone()).find() {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Command::FindPostgres = cli.command {
        println!(
            "PostgreSQL {} in {} (found through {})",
            bin.version,
            bin.dir.display(),
            bin.source
        );
        return ExitCode::SUCCESS;
    }
    let run_as = match RunAs::detect() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        match cli.command {
            Command::Initdb {
                instance,
                app_db,
                app_owner,
            } => {
                let made = bootstrapping(&bin, &instance, run_as, async |new| {
                    bootstrap::initdb(new, (&app_db, &app_owner)).await
                })
                .await;
                match made {
                    Ok(true) => {
                        println!(
                            "initialized {} ({}) in {}",
                            instance.name,
                            instance.cluster,
                            instance.pgdata.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Ok(false) => ExitCode::SUCCESS,
                    Err(e) => fail(format!("initdb of {}: {e}", instance.name)),
                }
            }
            Command::Recover {
                instance,
                source_config,
                backup_id,
                target_time,
                target_lsn,
                target_xid,
                target_name,
                target_immediate,
                target_tli,
                exclusive,
                app_db,
                app_owner,
                kubernetes,
                namespace,
            } => {
                let config = match cnpg_instance::archive::read_config(&source_config) {
                    Ok(c) => c,
                    Err(e) => return fail(format!("--source-config: {e}")),
                };
                let program = match std::env::current_exe() {
                    Ok(me) => me.with_file_name(cnpg_instance::archive::PROGRAM),
                    Err(e) => return fail(format!("restore_command needs this program's path: {e}")),
                };
                if !program.exists() {
                    return fail(format!(
                        "recovery replays WAL through {}, which is missing: install it beside this program",
                        program.display()
                    ));
                }
                let source = cnpg_instance::recovery::Source {
                    config,
                    config_path: source_config,
                    program,
                    backup_id,
                    target: cnpg_core::recovery::Target {
                        time: target_time,
                        lsn: target_lsn,
                        xid: target_xid,
                        name: target_name,
                        immediate: target_immediate,
                        timeline: target_tli,
                        exclusive,
                    },
                };
                // Refused before anything is made.
                if let Err(e) = source.target.settings() {
                    return fail(format!("recoveryTarget.{e}"));
                }
                let publisher = if kubernetes {
                    match recovery_publisher(&namespace, &instance).await {
                        Ok(p) => Some(p),
                        Err(e) => return fail(e),
                    }
                } else {
                    None
                };
                let mut recovered = None;
                let made = bootstrapping(&bin, &instance, run_as, async |new| {
                    let info =
                        cnpg_instance::recovery::recover(new, (&app_db, &app_owner), &source)
                            .await
                            .map_err(|e| e.to_string())?;
                    recovered = Some(info);
                    Ok::<(), String>(())
                })
                .await;
                if let Some(p) = publisher {
                    p.finish().await;
                }
                match (made, recovered) {
                    (Ok(true), Some(info)) => {
                        println!(
                            "recovered {} ({}) from backup {} of {} in {}",
                            instance.name,
                            instance.cluster,
                            info.backup_id,
                            source.config.server_name,
                            instance.pgdata.display()
                        );
                        ExitCode::SUCCESS
                    }
                    (Ok(_), _) => ExitCode::SUCCESS,
                    (Err(e), _) => fail(format!("recovery of {}: {e}", instance.name)),
                }
            }
            Command::Join {
                instance,
                source_host,
                source_port,
            } => {
                let made = bootstrapping(&bin, &instance, run_as, async |new| {
                    bootstrap::join(new, &source_host, source_port).await
                })
                .await;
                match made {
                    Ok(true) => {
                        println!(
                            "cloned {} from {source_host}:{source_port} into {}",
                            instance.name,
                            instance.pgdata.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Ok(false) => ExitCode::SUCCESS,
                    Err(e) => fail(format!("join of {}: {e}", instance.name)),
                }
            }
            Command::Run {
                instance,
                port,
                listen,
                socket_dir,
                status_port,
                status_listen,
                cluster_status,
                kubernetes,
                namespace,
                parameters,
                log_file,
                smart_shutdown_timeout,
                stop_timeout,
                certificates_from,
                status_tls,
                metrics_port,
                metrics_tls,
            } => {
                let source = match (kubernetes, cluster_status) {
                    (true, _) => ViewSource::Kubernetes { namespace },
                    (false, Some(path)) => ViewSource::File(path),
                    (false, None) => {
                        return fail("give --cluster-status FILE or --kubernetes");
                    }
                };
                let timeouts = (
                    Duration::from_secs(smart_shutdown_timeout),
                    Duration::from_secs(stop_timeout),
                );
                run(
                    bin,
                    run_as,
                    instance,
                    port,
                    listen,
                    socket_dir,
                    status_port,
                    status_listen,
                    source,
                    parameters,
                    log_file,
                    timeouts,
                    (certificates_from, status_tls),
                    metrics_port.map(|p| (p, metrics_tls)),
                )
                .await
            }
            Command::Status { .. }
            | Command::FindPostgres
            | Command::Install { .. }
            | Command::Pgbouncer { .. } => {
                unreachable!("handled above")
            }
        }
    })
}

/// Sends `true` on `tx` at the first SIGTERM or SIGINT.
async fn stop_on_signal(tx: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = tx.send(true);
}

/// `cnpg-instance pgbouncer`: the pooler manager, until SIGTERM or SIGINT.
fn pgbouncer(command: Command) -> ExitCode {
    use cnpg_instance::pooler::{self, manager};
    let Command::Pgbouncer {
        config,
        dir,
        certificates,
        listen_addr,
        port,
        http_port,
        http_addr,
        token_file,
        pgbouncer,
    } = command
    else {
        unreachable!("called for pgbouncer only")
    };
    let program = match pooler::find_pgbouncer(pgbouncer.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let version = match pooler::version(&program) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let token = match token_file.as_ref().map(std::fs::read_to_string) {
        None => None,
        Some(Ok(t)) => Some(t.trim().to_owned()),
        Some(Err(e)) => return fail(format!("--token-file: {e}")),
    };
    let opts = manager::Options {
        config,
        dir: pooler::Dir(dir),
        tls: pooler::Tls::of(&tls::Files { dir: certificates }),
        listen: (listen_addr, port),
        pgbouncer: (program, version),
        token,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let http = match tokio::net::TcpListener::bind((http_addr.as_str(), http_port)).await {
            Ok(l) => l,
            Err(e) => return fail(format!("--http-port {http_port}: {e}")),
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(stop_on_signal(tx));
        // The local operator adopts a running pooler manager after its own restart by
        // this pid.
        let pid_file = opts.dir.0.join("manager.pid");
        let _ = std::fs::create_dir_all(&opts.dir.0);
        let _ = std::fs::write(&pid_file, std::process::id().to_string());
        let done = manager::run(opts, http, rx).await;
        let _ = std::fs::remove_file(&pid_file);
        match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}

/// With `--skip-if-initialized`: whether PGDATA already holds this instance (then say so).
fn already_initialized(i: &Instance) -> bool {
    let done = i.skip_if_initialized && DataDir::new(&i.pgdata).verify(&i.cluster, &i.name).is_ok();
    if done {
        println!("{} is already initialized", i.pgdata.display());
    }
    done
}

/// Creates the directories an instance needs, owned by PostgreSQL's user, and the secrets.
fn prepare(i: &Instance, secrets: &Secrets, run_as: Option<RunAs>) -> Result<(), String> {
    if i.pgdata.join("PG_VERSION").exists() {
        return Err(format!(
            "{} already holds a data directory; refusing to overwrite it",
            i.pgdata.display()
        ));
    }
    let parent = i
        .pgdata
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    runas::own(run_as, &parent)
        .map_err(|e| format!("cannot give {} to postgres: {e}", parent.display()))?;
    secrets
        .ensure(&i.cluster, &tls::local_names(&[]), run_as)
        .map_err(|e| format!("secrets: {e}"))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    bin: PgBinaries,
    run_as: Option<RunAs>,
    instance: Instance,
    port: u16,
    listen: String,
    socket_dir: Option<PathBuf>,
    status_port: u16,
    status_listen: String,
    source: ViewSource,
    parameters: Vec<String>,
    log_file: Option<PathBuf>,
    (smart_timeout, stop_timeout): (Duration, Duration),
    (certificates_from, status_tls): (Option<PathBuf>, bool),
    metrics: Option<(u16, bool)>,
) -> ExitCode {
    let data = DataDir::new(&instance.pgdata);
    // An unfinished re-clone of this very instance: the manager replaces the half copy.
    let recloning = data
        .reclone_pending()
        .is_some_and(|m| m.cluster == instance.cluster && m.instance == instance.name);
    if !recloning
        && let Err(e) = data
            .verify(&instance.cluster, &instance.name)
            .and_then(|_| data.check_wal_space(16))
    {
        return fail(e);
    }
    if let ViewSource::File(cluster_status) = &source
        && !cluster_status.exists()
    {
        return fail(format!(
            "the cluster status file {} does not exist; the operator writes it (kubectl-cnpg local up), or write one with currentPrimary/targetPrimary",
            cluster_status.display()
        ));
    }
    let mut params = BTreeMap::new();
    for p in &parameters {
        match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                if let Some(hint) = cnpg_core::parameters::fixed_parameter(k.trim()) {
                    return fail(format!(
                        "--parameter {k}: managed by the instance manager, it cannot be set{}",
                        if hint.is_empty() {
                            String::new()
                        } else {
                            format!(" ({hint})")
                        }
                    ));
                }
                params.insert(k.trim().to_owned(), v.to_owned());
            }
            _ => return fail(format!("--parameter {p:?}: write NAME=VALUE")),
        }
    }
    let base = instance
        .pgdata
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let socket_dir = socket_dir.unwrap_or_else(|| base.join("run"));
    if let Err(e) =
        std::fs::create_dir_all(&socket_dir).and_then(|_| runas::own(run_as, &socket_dir))
    {
        return fail(format!(
            "cannot prepare the socket directory {}: {e}",
            socket_dir.display()
        ));
    }
    let secrets = Secrets {
        dir: instance.secrets.clone(),
    };
    if let Some(from) = &certificates_from
        && let Err(e) = secrets.tls().sync_from(from, run_as)
    {
        return fail(format!("certificates from {}: {e}", from.display()));
    }
    if let Err(e) = secrets.ensure(
        &instance.cluster,
        &tls::local_names(&[listen.as_str()]),
        run_as,
    ) {
        return fail(format!("secrets: {e}"));
    }
    let listener = match tokio::net::TcpListener::bind((status_listen.as_str(), status_port)).await
    {
        Ok(l) => l,
        Err(e) => {
            return fail(format!(
                "cannot listen on {status_listen}:{status_port} for the status server: {e} (is the port in use?)"
            ));
        }
    };
    // Metrics on a port of their own, on the status server's address.
    let metrics_listener = match metrics {
        Some((port, _)) => {
            match tokio::net::TcpListener::bind((status_listen.as_str(), port)).await {
                Ok(l) => Some(l),
                Err(e) => {
                    return fail(format!(
                        "cannot listen on {status_listen}:{port} for metrics: {e} (is the port in use?)"
                    ));
                }
            }
        }
        None => None,
    };
    // The cluster archives WAL when its configuration came with the certificates (the
    // operator writes it from spec.backup.barmanObjectStore).
    let archive_config = secrets.dir.join("archive.json");
    let archive = if archive_config.exists() {
        let program =
            std::env::current_exe().map(|me| me.with_file_name(cnpg_instance::archive::PROGRAM));
        match program {
            Ok(p) if p.exists() => Some(cnpg_instance::config::Archive {
                program: p,
                config: archive_config,
            }),
            Ok(p) => {
                return fail(format!(
                    "the cluster archives WAL, and {} is missing: install it beside this program",
                    p.display()
                ));
            }
            Err(e) => return fail(format!("archive_command needs this program's path: {e}")),
        }
    } else {
        None
    };
    // Base backups go to the same object store, through the same program.
    let backups = archive.as_ref().map(|a| {
        cnpg_instance::backup_job::BackupJobs::new(
            a.program.clone(),
            a.config.clone(),
            instance.pgdata.clone(),
            socket_dir.clone(),
            port,
            run_as,
            instance
                .pgdata
                .parent()
                .unwrap_or(&instance.pgdata)
                .join("backups"),
        )
    });
    let cfg = ManagerConfig {
        cluster: instance.cluster.clone(),
        instance: instance.name.clone(),
        pgdata: instance.pgdata.clone(),
        settings: Settings {
            cluster: instance.cluster.clone(),
            instance: instance.name.clone(),
            listen,
            port,
            socket_dir: socket_dir.display().to_string(),
            parameters: params,
            synchronous_standby_names: String::new(),
            pg_hba: vec![],
            pg_ident: vec![],
            tls: secrets.tls(),
            archive,
        },
        log_file: log_file.unwrap_or_else(|| base.join("postgres.log")),
        certificates_from,
        superuser_password: secrets.superuser(),
        managed_role_passwords: secrets.managed_roles(),
        run_as,
        tick: Duration::from_millis(200),
        stop_timeout,
        smart_timeout,
    };
    let ctl = PgCtl {
        bin,
        pgdata: instance.pgdata.clone(),
        run_as,
        passfile: secrets.passfile(),
    };
    let query = Arc::new(PgClient { socket_dir, port });
    let view: Arc<dyn ClusterView> = match source {
        ViewSource::File(cluster_status) => {
            let published = cluster_status.with_file_name("current-primary.json");
            Arc::new(FileView {
                path: cluster_status,
                published,
            })
        }
        ViewSource::Kubernetes { namespace } => {
            match kubernetes_view(&namespace, &instance.cluster, &instance.name, port).await {
                Ok(view) => view,
                Err(e) => return fail(e),
            }
        }
    };
    let manager = Manager::new(cfg, Arc::new(ctl), query.clone(), view);
    // Where the cluster has a status token (the local platform, and pods: from the
    // instance passwords Secret), /pg/status wants it.
    let token = std::fs::read_to_string(secrets.status_token())
        .ok()
        .map(|t| t.trim().to_owned());
    let tls_files = secrets.tls();
    if status_tls && let Err(e) = cnpg_instance::https::server_config(&tls_files) {
        return fail(format!(
            "--status-tls: {e} (the server certificate and the operator's CA, operator-ca.crt, \
             come with --certificates-from)"
        ));
    }
    let monitoring = cnpg_instance::monitoring::Monitoring::new(
        (*query).clone(),
        secrets.monitoring(),
        MONITORING_QUERY_TIMEOUT,
    );
    let state = AppState {
        monitoring: Some(monitoring),
        instance: instance.name.clone(),
        shared: manager.shared(),
        query,
        token,
        operator_tls: status_tls,
        backups,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let serving = |listener, app, tls: bool| {
        let mut srx = rx.clone();
        let files = tls_files.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = srx.wait_for(|s| *s).await;
            };
            if tls {
                cnpg_instance::https::serve(listener, app, files, stopped).await;
            } else {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
            }
        })
    };
    let metrics_server = metrics_listener.map(|l| {
        let tls = metrics.is_some_and(|(_, tls)| tls);
        serving(l, server::metrics_router(state.clone()), tls)
    });
    let server = serving(listener, server::router(state), status_tls);
    let signals = tokio::spawn(stop_on_signal(tx));
    // The local operator adopts a running instance manager after its own restart by this pid.
    let pid_file = base.join("manager.pid");
    let _ = std::fs::write(&pid_file, std::process::id().to_string());
    tracing::info!(instance = %instance.name, status_port, "instance manager running");
    manager.run(rx).await;
    let _ = std::fs::remove_file(&pid_file);
    signals.abort();
    let _ = server.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    tracing::info!(instance = %instance.name, "stopped");
    ExitCode::SUCCESS
}

/// What publishes a recovery's progress in its Cluster's status.
#[cfg(feature = "kubernetes")]
type RecoveryPublisher = cnpg_instance::kube_view::RecoveryPublisher;
#[cfg(not(feature = "kubernetes"))]
struct RecoveryPublisher;
#[cfg(not(feature = "kubernetes"))]
impl RecoveryPublisher {
    async fn finish(self) {}
}

/// The recovery's progress file, published in its Cluster's status as it changes.
#[cfg(feature = "kubernetes")]
async fn recovery_publisher(namespace: &str, i: &Instance) -> Result<RecoveryPublisher, String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("--kubernetes: no Kubernetes API: {e}"))?;
    Ok(RecoveryPublisher::start(
        kube::Api::namespaced(client, namespace),
        &i.cluster,
        cnpg_instance::recovery::progress_file(&i.pgdata),
    ))
}

/// Without the `kubernetes` feature there is no API client: say so.
#[cfg(not(feature = "kubernetes"))]
async fn recovery_publisher(_namespace: &str, _i: &Instance) -> Result<RecoveryPublisher, String> {
    Err(
        "--kubernetes: this cnpg-instance was built without Kubernetes support (cargo feature \
         `kubernetes`); leave --kubernetes out, or build it with the default features"
            .to_owned(),
    )
}

/// The view of the Cluster on Kubernetes: its spec gives the primary Lease's duration.
#[cfg(feature = "kubernetes")]
async fn kubernetes_view(
    namespace: &str,
    cluster: &str,
    name: &str,
    port: u16,
) -> Result<Arc<dyn ClusterView>, String> {
    use cnpg_instance::kube_view::KubeView;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes API: {e}"))?;
    let clusters: kube::Api<cnpg_core::api::Cluster> =
        kube::Api::namespaced(client.clone(), namespace);
    let lease = match clusters.get(cluster).await {
        Ok(c) => c.spec.primary_lease.unwrap_or_default().effective().0,
        Err(e) => return Err(format!("cannot read Cluster {namespace}/{cluster}: {e}")),
    };
    Ok(Arc::new(
        KubeView::start(client, namespace, cluster, name, port)
            .with_lease_duration(Duration::from_secs(lease.max(1) as u64)),
    ))
}

/// Without the `kubernetes` feature there is no API client: say so instead of failing later.
#[cfg(not(feature = "kubernetes"))]
async fn kubernetes_view(
    _namespace: &str,
    _cluster: &str,
    _name: &str,
    _port: u16,
) -> Result<Arc<dyn ClusterView>, String> {
    Err(
        "this cnpg-instance was built without Kubernetes support (cargo feature `kubernetes`); \
         use --cluster-status FILE, or build it with the default features"
            .to_owned(),
    )
}

/// Where the cluster status comes from.
enum ViewSource {
    /// A file the local operator writes.
    File(PathBuf),
    /// The Cluster on Kubernetes.
    Kubernetes {
        /// Its namespace.
        namespace: String,
    },
}

/// Copies this program to `<to>/cnpg-instance` and the password and certificate files to
/// `<to>/secrets` (0600: a Secret volume's files are readable by the pod's group).
fn install(
    to: &std::path::Path,
    passwords: Option<&std::path::Path>,
    certificates: Option<&std::path::Path>,
) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let result = (|| -> std::io::Result<()> {
        let me = std::env::current_exe()?;
        for d in ["run", "tmp", "log"] {
            std::fs::create_dir_all(to.join(d))?;
        }
        let target = to.join("cnpg-instance");
        std::fs::copy(&me, &target)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        // The archive_command, a program of its own (the manager stays small).
        let archiver = me.with_file_name(cnpg_instance::archive::PROGRAM);
        if archiver.exists() {
            let target = to.join(cnpg_instance::archive::PROGRAM);
            std::fs::copy(&archiver, &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        }
        if let Some(p) = passwords {
            let secrets = to.join("secrets");
            std::fs::create_dir_all(&secrets)?;
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))?;
            for f in ["superuser-password", "app-password", "status-token"] {
                let src = p.join(f);
                if src.exists() {
                    std::fs::copy(&src, secrets.join(f))?;
                    std::fs::set_permissions(
                        secrets.join(f),
                        std::fs::Permissions::from_mode(0o600),
                    )?;
                }
            }
        }
        if let Some(c) = certificates {
            let files = tls::Files {
                dir: to.join("secrets"),
            };
            std::fs::create_dir_all(&files.dir)?;
            std::fs::set_permissions(&files.dir, std::fs::Permissions::from_mode(0o700))?;
            files.sync_from(c, None).map_err(std::io::Error::other)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            println!("installed cnpg-instance into {}", to.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("install into {}: {e}", to.display())),
    }
}

fn status(
    host: &str,
    port: u16,
    token: Option<&str>,
    tls: Option<&cnpg_instance::https::ClientTls>,
) -> ExitCode {
    let timeout = Duration::from_secs(30);
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                match tls {
                    Some(tls) => {
                        cnpg_instance::https::get(host, port, "/pg/status", timeout, tls, token)
                            .await
                    }
                    None => {
                        cnpg_instance::http::get_authorized(
                            host,
                            port,
                            "/pg/status",
                            timeout,
                            token,
                        )
                        .await
                    }
                }
            })
        });
    let body = match answer {
        Ok((_, body)) => body,
        Err(e) => {
            return fail(format!(
                "cannot reach the instance manager at {host}:{port}: {e}"
            ));
        }
    };
    let body = body.as_str();
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            if v.get("error").is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(_) => fail(format!("unexpected answer: {body}")),
    }
}
