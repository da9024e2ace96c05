//! The instance manager's loop: observe PostgreSQL and the cluster status, ask
//! `cnpg_core::instance::decide`, do what it says.
//!
//! The postmaster is the manager's own child process, so its death is seen the moment it
//! happens (the `wait()` future completes), not at the next poll; the status endpoint
//! reports it at once. Every decision's reason is kept for the status endpoint and logged.

use crate::config::{self, Settings, Upstream};
use crate::control::{PgControl, PgError};
use crate::pgdata::{DataDir, MARKER};
use crate::query::{PgQuery, Snapshot};
use crate::runas::{self, RunAs};
use crate::view::{ClusterView, Endpoint, ViewData};
use cnpg_core::instance::{self, InstanceAction, LocalState, PgData};
use cnpg_core::naming;
use cnpg_core::time::Timestamp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::process::Child;
use tokio::sync::watch;

/// How the manager runs one instance.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Cluster name.
    pub cluster: String,
    /// Instance name.
    pub instance: String,
    /// PGDATA.
    pub pgdata: PathBuf,
    /// PostgreSQL settings (synchronous names come from the view).
    pub settings: Settings,
    /// Where PostgreSQL's own log goes.
    pub log_file: PathBuf,
    /// A mounted volume of certificates to copy in when they change (Kubernetes).
    pub certificates_from: Option<PathBuf>,
    /// The file holding `postgres`'s password, set on a primary while the cluster
    /// enables superuser access (and removed while it does not).
    pub superuser_password: PathBuf,
    /// The managed roles' passwords the operator writes
    /// ([`crate::bootstrap::Secrets::managed_roles`]).
    pub managed_role_passwords: PathBuf,
    /// Run PostgreSQL as this user (when we are root).
    pub run_as: Option<RunAs>,
    /// How often to look when nothing happens.
    pub tick: Duration,
    /// Fast shutdown budget before an immediate one.
    pub stop_timeout: Duration,
    /// Smart shutdown budget when the manager itself stops (sessions may finish), before a
    /// fast one. Demotion and fencing never wait for sessions.
    pub smart_timeout: Duration,
}

/// What the status server and metrics read.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// The postmaster runs and accepts connections.
    pub up: bool,
    /// Its pid.
    pub pid: Option<u32>,
    /// How and when the postmaster last died unexpectedly.
    pub last_exit: Option<(String, SystemTime)>,
    /// Unexpected postmaster exits so far.
    pub deaths: u64,
    /// When the recent unexpected exits happened (the last minute's).
    pub crashes: std::collections::VecDeque<Instant>,
    /// PostgreSQL exited unexpectedly and is being restarted in place.
    pub restarting_after_crash: bool,
    /// Fenced now.
    pub fenced: bool,
    /// `pg_rewind` runs now.
    pub rewinding: bool,
    /// PostgreSQL is being started on purpose (first start, after unfencing, a restart
    /// request): the operator must not mistake it for a failure.
    pub planned_start: bool,
    /// The last decision and why.
    pub decision: String,
    /// The last snapshot.
    pub snapshot: Option<Snapshot>,
    /// The WAL volume has no room for two more segments.
    pub wal_disk_full: bool,
    /// Why this standby's WAL receiver does not stream (from PostgreSQL's log).
    pub wal_receiver_error: Option<String>,
    /// While archiving fails, the archiver's last error from PostgreSQL's log.
    pub archive_error: Option<String>,
    /// Changes on every start of the manager.
    pub session_id: String,
    /// The cluster's backups, from the view (for the metrics).
    pub backups: cnpg_core::backup::Summary,
    /// Managed roles after this primary's last pass.
    pub managed_roles: Option<cnpg_core::roles::ManagedRoles>,
    /// `Database` resources after this primary's last pass, by object name.
    pub databases: std::collections::BTreeMap<String, cnpg_core::api::DatabaseStatus>,
    /// Declarative tablespaces after this primary's last pass.
    pub tablespaces: Option<Vec<cnpg_core::api::cluster::TablespaceState>>,
}

impl Shared {
    /// Unexpected exits within the last minute.
    pub fn recent_crashes(&self) -> u32 {
        self.crashes
            .iter()
            .filter(|t| t.elapsed() < CRASH_WINDOW)
            .count() as u32
    }
}

/// How far back crashes count towards a crash loop.
const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// The handle the server reads.
pub type SharedState = Arc<Mutex<Shared>>;

/// Runs one instance.
pub struct Manager {
    cfg: ManagerConfig,
    ctl: Arc<dyn PgControl>,
    query: Arc<dyn PgQuery>,
    view: Arc<dyn ClusterView>,
    shared: SharedState,
    child: Option<Child>,
    applied_sync: Option<String>,
    applied_upstream: Option<Endpoint>,
    applied_parameters: Option<std::collections::BTreeMap<String, String>>,
    /// The user's `pg_hba`/`pg_ident` lines last written.
    applied_access: Option<(Vec<String>, Vec<String>)>,
    /// The digest of the certificate files PostgreSQL last loaded.
    applied_tls: Option<u64>,
    /// Superuser access as last applied on this primary.
    applied_superuser: Option<bool>,
    /// `streaming_replica` checked (certificate only, rewind grants) on this primary.
    replication_role_checked: bool,
    /// The pooler's role made on this primary.
    pooler_role_checked: bool,
    applied_restart: Option<Option<String>>,
    applied_reload: Option<Option<String>>,
    /// When managed roles are next compared at the latest, and what with last.
    roles_pass: Option<(Instant, RolesInputs)>,
    /// When the tablespaces are looked at again, and for which spec.
    tablespaces_pass: Option<(Instant, Vec<cnpg_core::tablespaces::Tablespace>)>,
    /// When `Database` resources are next reconciled at the latest, and from what list.
    databases_pass: Option<(Instant, Vec<cnpg_core::databases::Managed>)>,
    /// The pooler's function and the managed extensions, database by database.
    every_database: every_database::EveryDatabase,
    /// The statements [`Self::every_database`] keeps, with what they were made from.
    every_database_jobs: (every_database::Wanted, Vec<every_database::Job>),
    last_view: ViewData,
    rewind_failed: bool,
    /// The last stop was an unexpected death (a start after it is a crash restart).
    crashed: bool,
    /// The primary lease was given up since PostgreSQL last ran as the target.
    lease_released: bool,
}

async fn wait(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Immediate shutdown of the postmaster (SIGQUIT), and its exit awaited — never for
/// ever: a postmaster still there a second later is killed (SIGKILL; its backends exit
/// when they see it gone), and the exit is polled rather than only awaited. A postmaster
/// that has just finished crash recovery was seen not to act on SIGQUIT at all (60
/// postmaster kills in a row, each a failover: several times a run), and the manager then
/// waited for it for minutes while the operator waited for the manager — no primary.
async fn quit(child: &mut Child) {
    match child.id() {
        Some(pid) => {
            if let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGQUIT) {
                tracing::warn!(pid, "SIGQUIT to the postmaster: {e}");
            }
        }
        None => tracing::warn!("the postmaster to stop has no pid any more"),
    }
    let mut deadline = Instant::now() + Duration::from_secs(1);
    let mut killed = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {}
        }
        if Instant::now() >= deadline {
            if killed {
                tracing::error!("the postmaster outlived SIGKILL by 5 s; going on without it");
                return;
            }
            tracing::warn!("the postmaster did not stop within 1 s of SIGQUIT: SIGKILL");
            let _ = child.start_kill();
            killed = true;
            deadline = Instant::now() + Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("postmaster exited with code {c}"),
            (None, Some(sig)) => format!("postmaster killed by signal {sig}"),
            _ => "postmaster exited".to_owned(),
        },
        Err(e) => format!("postmaster lost: {e}"),
    }
}

/// The last line of PostgreSQL's log (its last 64 KiB) that `pick` accepts, as `pick`
/// shortens it.
fn last_log_line(log: &std::path::Path, pick: impl Fn(&str) -> Option<String>) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.take(TAIL).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines().rev().find_map(pick)
}

/// The last error of the WAL receiver in PostgreSQL's log: why a standby cannot reach its
/// primary, e.g. `SSL error: tlsv1 alert unknown ca` for a certificate the primary refuses.
fn last_wal_receiver_error(log: &std::path::Path) -> Option<String> {
    last_log_line(log, |l| {
        (l.contains("could not connect to the primary server")
            || l.contains("could not receive data from WAL stream"))
        .then(|| {
            l.split_once("FATAL:")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_owned()
        })
    })
}

/// Why archiving fails: the archiver's own last error line (it writes to PostgreSQL's
/// log through the archive_command's standard error, `error: cnpg-cloud wal-archive
/// <segment>: <why>`), e.g. a bucket that does not exist.
fn last_archive_error(log: &std::path::Path) -> Option<String> {
    last_log_line(log, |l| {
        l.split_once("error: cnpg-cloud wal-archive ")
            .map(|(_, m)| m.trim().to_owned())
    })
}

impl Manager {
    /// A manager (nothing runs until [`Manager::run`]).
    pub fn new(
        cfg: ManagerConfig,
        ctl: Arc<dyn PgControl>,
        query: Arc<dyn PgQuery>,
        view: Arc<dyn ClusterView>,
    ) -> Self {
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        // A re-clone that a crash of this manager cut off is finished first.
        let reclone_pending = DataDir::new(&cfg.pgdata).reclone_pending().is_some();
        let shared = Shared {
            session_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            ..Default::default()
        };
        Manager {
            cfg,
            ctl,
            query,
            view,
            shared: Arc::new(Mutex::new(shared)),
            child: None,
            applied_sync: None,
            applied_upstream: None,
            applied_parameters: None,
            applied_access: None,
            applied_tls: None,
            applied_superuser: None,
            replication_role_checked: false,
            pooler_role_checked: false,
            applied_restart: None,
            applied_reload: None,
            roles_pass: None,
            tablespaces_pass: None,
            every_database: Default::default(),
            databases_pass: None,
            every_database_jobs: Default::default(),
            last_view: ViewData::default(),
            rewind_failed: reclone_pending,
            crashed: false,
            lease_released: false,
        }
    }

    /// What the status server reads.
    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }

    fn set(&self, f: impl FnOnce(&mut Shared)) {
        f(&mut self.shared.lock().expect("shared state lock"));
    }

    /// Runs until `shutdown` turns true, then stops PostgreSQL (fast, then immediate).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                status = wait(&mut self.child) => self.on_exit(status),
                _ = tick.tick() => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        self.stop_mode(self.cfg.smart_timeout).await;
                        // Stopping because the pod goes while a failover replaces us:
                        // let the new primary have the lease now.
                        if let Ok(view) = self.view.read().await {
                            self.release_lease_if_stopped(&view).await;
                        }
                        return;
                    }
                }
            }
            self.step().await;
        }
    }

    fn on_exit(&mut self, status: std::io::Result<ExitStatus>) {
        let what = describe(&status);
        self.child = None;
        self.crashed = true;
        tracing::error!(instance = %self.cfg.instance, "{what}");
        self.set(|s| {
            s.up = false;
            s.pid = None;
            s.deaths += 1;
            s.last_exit = Some((what, SystemTime::now()));
            s.restarting_after_crash = true;
            s.crashes.push_back(Instant::now());
            while s.crashes.len() > 16
                || s.crashes
                    .front()
                    .is_some_and(|t| t.elapsed() > CRASH_WINDOW)
            {
                s.crashes.pop_front();
            }
        });
    }

    /// One observe–decide–act round.
    pub async fn step(&mut self) {
        let readable = match self.view.read().await {
            Ok(v) => {
                self.last_view = v;
                true
            }
            Err(e) => {
                tracing::warn!(instance = %self.cfg.instance, "{e}");
                false
            }
        };
        let view = self.last_view.clone();
        let me = self.cfg.instance.clone();
        let fenced = view.is_fenced(&me);
        let running = self.child.is_some();
        let snapshot = if running {
            self.query.snapshot().await.ok()
        } else {
            None
        };
        let data = DataDir::new(&self.cfg.pgdata);
        let local = LocalState {
            name: me.clone(),
            pgdata: data.role(),
            running,
            wal_receiver_active: snapshot.as_ref().is_some_and(|s| s.wal_receiver_active),
            diverged: false,
            rewind_failed: self.rewind_failed,
        };
        let cview = instance::ClusterView {
            readable,
            current_primary: view.current_primary.clone(),
            target_primary: view.target_primary.clone(),
            fenced,
        };
        let decision = instance::decide(&local, &cview, Timestamp(0));
        if !matches!(decision.action, InstanceAction::Nothing) {
            tracing::info!(instance = %me, action = ?decision.action, "{}", decision.reason);
        }
        let wal_disk_full = data.check_wal_space(16).is_err();
        let wal_receiver_error = snapshot
            .as_ref()
            .filter(|s| !s.is_primary && !s.wal_receiver_active)
            .and_then(|_| last_wal_receiver_error(&self.cfg.log_file));
        let archive_error = snapshot
            .as_ref()
            .filter(|s| !s.archiving.is_archiving_wal && !s.archiving.last_failed_wal.is_empty())
            .and_then(|_| last_archive_error(&self.cfg.log_file));
        // A crashed PostgreSQL is restarted in place only while this instance should run it;
        // otherwise the operator must not wait for a restart that will not come.
        let restarting = !running && matches!(decision.action, InstanceAction::Start);
        self.set(|s| {
            s.restarting_after_crash &= restarting;
            s.fenced = fenced;
            s.wal_disk_full = wal_disk_full;
            s.wal_receiver_error = wal_receiver_error;
            s.archive_error = archive_error;
            s.backups = view.backups.clone();
            s.decision = decision.reason.clone();
            s.up = running && snapshot.is_some();
            s.snapshot = snapshot.clone();
        });
        let result = match decision.action {
            InstanceAction::Nothing | InstanceAction::WaitForWalReceiver => {
                if running {
                    self.keep_in_line(&view, local.pgdata, snapshot.as_ref())
                        .await
                } else {
                    Ok(())
                }
            }
            InstanceAction::Start => self.start(&view).await,
            InstanceAction::Stop => {
                self.demote_or_fence(&view).await;
                Ok(())
            }
            InstanceAction::Promote | InstanceAction::PublishCurrentPrimary
                if !self.lease_granted(&me).await =>
            {
                Ok(())
            }
            // Published in the same step: clients and the operator learn of the new primary
            // one tick sooner (the CHECKPOINT after promotion is done by then, so the old
            // primary's pg_rewind sees the new timeline).
            InstanceAction::Promote => match self.promote(&view).await {
                Ok(()) => self
                    .view
                    .publish_current_primary(&me)
                    .await
                    .map_err(|e| PgError::Query(e.to_string())),
                Err(e) => Err(e),
            },
            InstanceAction::PublishCurrentPrimary => self
                .view
                .publish_current_primary(&me)
                .await
                .map_err(|e| PgError::Query(e.to_string())),
            InstanceAction::Rewind { source } => self.rewind(&view, &source).await,
            InstanceAction::NeedsReclone { source } => self.reclone(&view, &source).await,
        };
        if let Err(e) = result {
            tracing::error!(instance = %me, "{e}");
            self.set(|s| s.decision = format!("{}: failed: {e}", s.decision));
        }
        if readable {
            self.release_lease_if_stopped(&view).await;
        }
    }

    /// A stopped instance that is not the target gives the primary lease up (if it holds
    /// it: after a demotion, a crash of this manager, or a pod deletion), so the instance
    /// being promoted does not wait for the lease to expire. Safe because this
    /// instance's PostgreSQL is not running: it cannot accept a write any more.
    async fn release_lease_if_stopped(&mut self, view: &ViewData) {
        let me = self.cfg.instance.as_str();
        if self.lease_released || self.child.is_some() || view.target_primary.as_deref() == Some(me)
        {
            return;
        }
        match self.view.release_primary_lease(me).await {
            Ok(()) => self.lease_released = true,
            Err(e) => tracing::warn!(instance = %me, "{e}"),
        }
    }

    /// Whether the primary lease is ours; when not, the decision says who we wait for.
    async fn lease_granted(&mut self, me: &str) -> bool {
        match self.view.acquire_primary_lease(me).await {
            Ok(true) => {
                self.lease_released = false;
                true
            }
            Ok(false) => {
                self.set(|s| {
                    s.decision = format!(
                        "{}: waiting for the primary lease (another instance holds it)",
                        s.decision
                    )
                });
                false
            }
            Err(e) => {
                self.set(|s| s.decision = format!("{}: primary lease: {e}", s.decision));
                false
            }
        }
    }

    fn upstream(&self, view: &ViewData) -> Option<Upstream> {
        view.upstream().map(|e| Upstream {
            host: e.host.clone(),
            port: e.port,
            tls: self.cfg.settings.tls.clone(),
        })
    }

    fn write(&self, name: &str, text: &str) -> Result<(), PgError> {
        let path = self.cfg.pgdata.join(name);
        std::fs::write(&path, text)
            .and_then(|_| runas::own(self.cfg.run_as, &path))
            .map_err(|source| PgError::Io { path, source })
    }

    /// Writes every file we own in PGDATA for the role PGDATA has now.
    fn write_config(&mut self, view: &ViewData) -> Result<(), PgError> {
        let mut settings = self.cfg.settings.clone();
        settings.synchronous_standby_names = view.synchronous_standby_names.clone();
        settings.pg_hba.extend(view.pg_hba.iter().cloned());
        settings.pg_ident.extend(view.pg_ident.iter().cloned());
        for (k, v) in &view.parameters {
            // The libraries to load come from the operator alone
            // (`cnpg_core::parameters::effective`).
            if cnpg_core::parameters::fixed_parameter(k).is_none()
                || k == cnpg_core::parameters::PRELOAD_LIBRARIES
            {
                settings.parameters.insert(k.clone(), v.clone());
            }
        }
        let data = DataDir::new(&self.cfg.pgdata);
        // After a crash PostgreSQL fsyncs every file of PGDATA before its redo begins: on
        // a busy disk that took 1.9 s of a 2.1 s restart in place. One syncfs() per file
        // system makes the same data durable at once (PostgreSQL 14 and later). The
        // user's value, when set, wins.
        if data.major().is_some_and(|m| m >= 14) {
            settings
                .parameters
                .entry("recovery_init_sync_method".into())
                .or_insert_with(|| "syncfs".into());
        }
        let standby = data.role() == PgData::Standby;
        let upstream = if standby { self.upstream(view) } else { None };
        let mut over = config::override_conf(&self.cfg.instance, upstream.as_ref());
        if standby {
            over.push_str(&format!(
                "primary_slot_name = '{}'\n",
                naming::replication_slot("_cnpg_", &self.cfg.instance)
            ));
        }
        self.write("custom.conf", &config::custom_conf(&settings))?;
        self.write("override.conf", &over)?;
        self.write("pg_hba.conf", &config::pg_hba(&settings))?;
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "postgres".to_owned());
        self.write(
            "pg_ident.conf",
            &config::pg_ident(&settings, &[me.as_str(), "postgres"]),
        )?;
        let conf = self.cfg.pgdata.join("postgresql.conf");
        let text = std::fs::read_to_string(&conf).unwrap_or_default();
        if !text.contains("include 'custom.conf'") {
            self.write("postgresql.conf", &format!("{text}{}", config::INCLUDES))?;
        }
        self.applied_sync = Some(view.synchronous_standby_names.clone());
        self.applied_parameters = Some(view.parameters.clone());
        self.applied_access = Some((view.pg_hba.clone(), view.pg_ident.clone()));
        self.applied_tls = Some(self.cfg.settings.tls.digest());
        self.applied_upstream = if standby { view.upstream() } else { None };
        Ok(())
    }

    async fn start(&mut self, view: &ViewData) -> Result<(), PgError> {
        let planned = !std::mem::take(&mut self.crashed);
        self.set(|s| s.planned_start = planned);
        let result = self.start_postgres(view).await;
        self.set(|s| s.planned_start = false);
        result
    }

    async fn start_postgres(&mut self, view: &ViewData) -> Result<(), PgError> {
        let data = DataDir::new(&self.cfg.pgdata);
        data.check_wal_space(16)
            .map_err(|e| PgError::Query(e.to_string()))?;
        self.write_config(view)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.log_file)
            .map_err(|source| PgError::Io {
                path: self.cfg.log_file.clone(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| PgError::Io {
            path: self.cfg.log_file.clone(),
            source,
        })?;
        self.await_old_postmaster().await;
        let mut cmd = self.ctl.postmaster();
        cmd.stdout(log).stderr(log2);
        let child = cmd.spawn().map_err(|source| PgError::Spawn {
            program: "postgres".into(),
            source,
        })?;
        let pid = child.id();
        self.child = Some(child);
        self.set(|s| s.pid = pid);
        // Wait until it accepts connections, watching for an early death.
        let began = Instant::now();
        let deadline = began + Duration::from_secs(120);
        let mut said = false;
        while Instant::now() < deadline {
            if !said && began.elapsed() > Duration::from_secs(10) {
                said = true;
                tracing::warn!(
                    instance = %self.cfg.instance,
                    starting = data.postmaster_starting(),
                    "PostgreSQL started 10 s ago and does not answer yet"
                );
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.on_exit(Ok(status));
                return Err(PgError::Failed {
                    program: "postgres".into(),
                    status: status.to_string(),
                    stderr: format!("see {}", self.cfg.log_file.display()),
                });
            }
            // The target may change while a crashed primary recovers (the operator gave up
            // waiting for it): it must never come up writable beside the new primary.
            // Bounded: on Kubernetes the view is an API request, and a slow API server must
            // not stop this loop from watching the starting PostgreSQL.
            if let Ok(Some(why)) =
                tokio::time::timeout(Duration::from_secs(1), self.no_longer_target()).await
            {
                self.kill_now().await;
                return Err(PgError::Query(why));
            }
            if !data.postmaster_starting()
                && let Ok(s) = self.query.snapshot().await
            {
                self.set(|sh| {
                    sh.up = true;
                    sh.snapshot = Some(s);
                    sh.restarting_after_crash = false;
                });
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(PgError::Query(
            "PostgreSQL did not accept connections within 120 s".into(),
        ))
    }

    /// Some reason when PGDATA is a primary's and the cluster's target primary, just read,
    /// is not this instance.
    async fn no_longer_target(&self) -> Option<String> {
        if DataDir::new(&self.cfg.pgdata).role() != PgData::Primary {
            return None;
        }
        let view = self.view.read().await.ok()?;
        let target = view.target_primary.as_deref().unwrap_or("nobody");
        (target != self.cfg.instance).then(|| {
            format!(
                "the target primary became {target} while PostgreSQL started: stopped it at once"
            )
        })
    }

    /// Immediate shutdown: no new write is accepted from this instant (crash recovery at
    /// the next start, which `pg_rewind` needs anyway).
    async fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            quit(&mut child).await;
        }
        self.set(|s| {
            s.up = false;
            s.pid = None;
        });
    }

    /// Stops PostgreSQL because the decision says so. A primary being switched over from
    /// takes a CHECKPOINT first (its target waits for it, and the shutdown checkpoint is
    /// then quick); a primary that another instance replaces in a failover refuses writes
    /// at once: fast shutdown without that CHECKPOINT, or immediate when the new primary
    /// already runs (two primaries must never both accept writes).
    async fn demote_or_fence(&mut self, view: &ViewData) {
        let me = self.cfg.instance.as_str();
        let is_primary = DataDir::new(&self.cfg.pgdata).role() == PgData::Primary;
        let target = view.target_primary.as_deref();
        let failover = target == Some(naming::PENDING);
        let replaced = target.is_some_and(|t| t != me) && view.current_primary.as_deref() == target;
        if is_primary && replaced {
            tracing::warn!(instance = %me, target = ?target, "another instance is primary already: immediate shutdown");
            self.kill_now().await;
        } else if is_primary && failover {
            self.stop_mode_inner(Duration::ZERO, false).await;
        } else {
            self.stop().await;
        }
    }

    /// Waits until the postmaster named in `postmaster.pid` is gone, so a start after a
    /// crash does not fail on the lock file. After a node crash (this manager and its
    /// postmaster killed together) the dead postmaster stays a zombie until its new parent
    /// reaps it, and PostgreSQL takes a zombie for a live owner of the data directory. A
    /// postmaster that still runs on this data directory (orphaned by a killed manager:
    /// not our child, we could not watch it) is stopped at once: immediate shutdown, crash
    /// recovery at our start.
    async fn await_old_postmaster(&self) {
        let Some(pid) = std::fs::read_to_string(self.cfg.pgdata.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            return;
        };
        let state = || crate::proc::stat(pid).map(|s| s.state);
        let ours = || {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .is_some_and(|cwd| std::fs::canonicalize(&self.cfg.pgdata).is_ok_and(|d| d == cwd))
        };
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut signalled = false;
        loop {
            match state() {
                None => return,
                Some(st) if st != 'Z' && !ours() => return, // the pid was reused
                Some(st) if st != 'Z' && !signalled => {
                    tracing::warn!(instance = %self.cfg.instance, pid, "a postmaster left by an earlier instance manager still runs on this data: immediate shutdown");
                    let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
                    signalled = true;
                }
                _ if Instant::now() >= deadline => return,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fast shutdown (a CHECKPOINT first on a primary, so the next start is quick), then
    /// immediate if it does not finish in time.
    async fn stop(&mut self) {
        self.stop_mode(Duration::ZERO).await;
    }

    /// Smart shutdown for up to `smart` (sessions may finish), then fast, then immediate.
    async fn stop_mode(&mut self, smart: Duration) {
        self.stop_mode_inner(smart, true).await;
    }

    async fn stop_mode_inner(&mut self, smart: Duration, checkpoint_first: bool) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !smart.is_zero() {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if self.smart_wait(&mut child, smart).await {
                self.set(|s| {
                    s.up = false;
                    s.pid = None;
                });
                return;
            }
        }
        if checkpoint_first && DataDir::new(&self.cfg.pgdata).role() == PgData::Primary {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.query.execute("CHECKPOINT"))
                .await;
        }
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
        }
        if tokio::time::timeout(self.cfg.stop_timeout, child.wait())
            .await
            .is_err()
        {
            quit(&mut child).await;
        }
        self.set(|s| {
            s.up = false;
            s.pid = None;
        });
    }

    /// Waits up to `smart` for a smart shutdown to end; true when PostgreSQL exited.
    ///
    /// A primary cuts it short as soon as the cluster's target primary is another
    /// instance (or `pending`): a failover has begun because this instance is going away,
    /// and the sessions a smart shutdown lets finish would keep committing on a primary
    /// that is being replaced, while the replicas, still streaming from it, hold the
    /// election back (upstream issue #11280: a deleted primary pod keeps sessions for
    /// `smartShutdownTimeout`, 180 s by default). A fast shutdown still sends the
    /// replicas every WAL record before it ends.
    async fn smart_wait(&mut self, child: &mut Child, smart: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + smart;
        let mut tick = tokio::time::interval(self.cfg.tick.min(Duration::from_millis(500)));
        loop {
            tokio::select! {
                _ = child.wait() => return true,
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = tick.tick() => {}
            }
            if DataDir::new(&self.cfg.pgdata).role() != PgData::Primary {
                continue;
            }
            let Ok(view) = self.view.read().await else {
                continue;
            };
            if view
                .target_primary
                .as_deref()
                .is_some_and(|t| t != self.cfg.instance)
            {
                tracing::info!(
                    instance = %self.cfg.instance,
                    target = ?view.target_primary,
                    "a failover has begun while this primary stops: fast shutdown now"
                );
                return false;
            }
        }
    }

    async fn promote(&mut self, view: &ViewData) -> Result<(), PgError> {
        self.ctl.promote().await?;
        if self.cfg.settings.archive.is_some() {
            // The archive goes on without a gap: what the old primary had not archived.
            match crate::archive::requeue_earlier_timelines(&self.cfg.pgdata) {
                Ok(names) if !names.is_empty() => tracing::info!(
                    instance = %self.cfg.instance,
                    "promoted: {} segment(s) of earlier timelines offered to the archive again \
                     ({}..{}); those the store lacks are uploaded",
                    names.len(),
                    names[0],
                    names[names.len() - 1]
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    instance = %self.cfg.instance,
                    "promoted, but the earlier timeline's segments could not be offered to \
                     the archive again ({e}): any the old primary had not archived are missing"
                ),
            }
        }
        self.query.execute("CHECKPOINT").await?;
        self.ensure_slots(view).await
    }

    /// pg_rewind's source: the primary, as `streaming_replica` with its certificate (the
    /// role may read what pg_rewind needs; see `bootstrap::REWIND_GRANTS`).
    fn rewind_conninfo(&self, e: &Endpoint) -> String {
        format!(
            "host={} port={} {} dbname=postgres connect_timeout=5",
            e.host,
            e.port,
            self.cfg.settings.tls.replication_conninfo()
        )
    }

    async fn rewind(&mut self, view: &ViewData, source: &str) -> Result<(), PgError> {
        let Some(endpoint) = view.endpoint_of(source) else {
            return Err(PgError::Query(format!(
                "no endpoint known for {source}; cannot rewind yet"
            )));
        };
        // A postmaster killed with this manager may still hold the data directory.
        self.await_old_postmaster().await;
        let data = DataDir::new(&self.cfg.pgdata);
        if let Err(e) = data.keep_control_file(self.cfg.run_as) {
            // No control file to read, and no copy of it: nothing can rewind this data.
            self.rewind_failed = true;
            return Err(PgError::Query(e.to_string()));
        }
        self.set(|s| s.rewinding = true);
        let result = async {
            if !self.ctl.shut_down_cleanly().await? {
                self.ctl.single_user_recovery().await?;
            }
            let marker = self.cfg.pgdata.join(MARKER);
            let saved = std::fs::read(&marker).map_err(|source| PgError::Io {
                path: marker.clone(),
                source,
            })?;
            self.ctl.rewind(&self.rewind_conninfo(&endpoint)).await?;
            // pg_rewind copied the source's files, its marker and configuration included.
            std::fs::write(&marker, saved)
                .and_then(|_| runas::own(self.cfg.run_as, &marker))
                .map_err(|source| PgError::Io {
                    path: marker,
                    source,
                })?;
            data.forget_control_file();
            data.set_standby(self.cfg.run_as)
                .map_err(|source| PgError::Io {
                    path: self.cfg.pgdata.join("standby.signal"),
                    source,
                })?;
            self.write_config(view)
        }
        .await;
        self.set(|s| s.rewinding = false);
        if let Err(e) = &result {
            // Only a rewind that ran and failed means the data cannot be rewound (nor
            // data whose state cannot even be read); not reaching the source yet, or a
            // postmaster still holding the directory, is retried at the next step.
            self.rewind_failed = match e {
                PgError::Failed {
                    program, stderr, ..
                } if program == "pg_rewind" => {
                    !stderr.contains("could not connect") && !stderr.contains("connection")
                }
                PgError::Failed {
                    program, stderr, ..
                } => {
                    (program == "pg_controldata" || program == "postgres")
                        && !stderr.contains("lock file")
                        && !stderr.contains("shared memory")
                }
                _ => false,
            };
        }
        result
    }

    /// Replaces PGDATA with a new clone of `source`, the published primary: what is left
    /// when pg_rewind cannot work. Recorded beside PGDATA first, so a crash in the middle
    /// is finished by the next manager instead of leaving a half copy to start.
    async fn reclone(&mut self, view: &ViewData, source: &str) -> Result<(), PgError> {
        let Some(endpoint) = view.endpoint_of(source) else {
            return Err(PgError::Query(format!(
                "no endpoint known for {source}; cannot clone it yet"
            )));
        };
        let me = self.cfg.instance.clone();
        tracing::warn!(instance = %me, source, "pg_rewind cannot bring this data back: replacing it with a new clone of {source}");
        self.await_old_postmaster().await;
        let data = DataDir::new(&self.cfg.pgdata);
        let io = |e: crate::pgdata::PgDataError| PgError::Query(e.to_string());
        data.begin_reclone(&self.cfg.cluster, &me, self.cfg.run_as)
            .map_err(io)?;
        self.set(|s| s.rewinding = true);
        data.empty();
        // pg_basebackup writes each tablespace where the primary has it, into an empty
        // directory: this instance's copies there go with the rest.
        for t in view.tablespaces.iter().filter(|t| !t.location.is_empty()) {
            DataDir::new(&t.location).empty();
        }
        let cloned = crate::bootstrap::clone_primary(
            self.ctl.as_ref(),
            &data,
            &self.cfg.settings.tls,
            (&self.cfg.cluster, &me),
            self.cfg.run_as,
            (&endpoint.host, endpoint.port),
        )
        .await;
        self.set(|s| s.rewinding = false);
        cloned?;
        self.write_config(view)?;
        data.end_reclone().map_err(io)?;
        self.rewind_failed = false;
        tracing::info!(instance = %me, source, "cloned {source} again: starting as its standby");
        Ok(())
    }

    /// While running: apply new synchronous names or a new upstream with a reload, and keep
    /// the replication slots of the other instances on a primary.
    async fn keep_in_line(
        &mut self,
        view: &ViewData,
        role: PgData,
        snapshot: Option<&Snapshot>,
    ) -> Result<(), PgError> {
        let standby = role == PgData::Standby;
        if self.applied_restart.is_none() {
            self.applied_restart = Some(view.restart.clone());
        }
        // A token `<instance>@<time>` is for that instance only.
        let for_me = view.restart.as_deref().is_none_or(|t| {
            t.split_once('@')
                .is_none_or(|(who, _)| who == self.cfg.instance)
        });
        if self.applied_restart.as_ref() != Some(&view.restart) && !for_me {
            self.applied_restart = Some(view.restart.clone());
        }
        if self.applied_restart.as_ref() != Some(&view.restart) {
            // Restart in place: the next step starts it again, in the same role.
            tracing::info!(instance = %self.cfg.instance, "restart requested: restarting PostgreSQL in place");
            self.applied_restart = Some(view.restart.clone());
            // Planned from before the stop, so the operator never sees a failed primary.
            self.set(|s| s.planned_start = true);
            self.stop().await;
            return self.start(view).await;
        }
        let sync_changed =
            self.applied_sync.as_deref() != Some(view.synchronous_standby_names.as_str());
        let upstream_changed = standby && self.applied_upstream != view.upstream();
        let params_changed = self.applied_parameters.as_ref() != Some(&view.parameters)
            || self
                .applied_access
                .as_ref()
                .is_none_or(|(h, i)| h != &view.pg_hba || i != &view.pg_ident);
        // A renewed or rotated certificate is loaded by a reload, without a restart.
        if let Some(from) = &self.cfg.certificates_from
            && let Err(e) = self.cfg.settings.tls.sync_from(from, self.cfg.run_as)
        {
            tracing::warn!(instance = %self.cfg.instance, "certificates from {}: {e}", from.display());
        }
        let tls_changed = self.applied_tls != Some(self.cfg.settings.tls.digest());
        if tls_changed {
            tracing::info!(instance = %self.cfg.instance, "certificates changed: reloading PostgreSQL");
        }
        let reload_asked = self
            .applied_reload
            .as_ref()
            .is_some_and(|r| r != &view.reload);
        self.applied_reload = Some(view.reload.clone());
        if sync_changed || upstream_changed || params_changed || tls_changed || reload_asked {
            self.write_config(view)?;
            if let Some(pid) = self.child.as_ref().and_then(Child::id) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
            }
        }
        if snapshot.is_some_and(|s| s.is_primary) {
            self.ensure_slots(view).await?;
            self.ensure_replication_role().await?;
            self.ensure_superuser_access(view).await?;
            if view.pooler_integration {
                self.ensure_pooler_role().await?;
            }
            self.ensure_managed_roles(view).await;
            self.ensure_tablespaces(view).await;
            self.ensure_databases(view).await;
            self.ensure_every_database(view).await;
        }
        Ok(())
    }

    /// In every database that takes connections (see [`every_database`]): while a
    /// pooler serves the cluster, the function its `auth_query` calls; the managed
    /// extensions (`pgaudit` while a `pgaudit.*` parameter is set, ...). Until a library is loaded (a restart after `shared_preload_libraries`
    /// changed) PostgreSQL refuses its extension: said, and tried again a few seconds
    /// later; it never stops the loop.
    async fn ensure_every_database(&mut self, view: &ViewData) {
        let wanted = every_database::Wanted {
            pooler_function: view.pooler_integration && self.pooler_role_checked,
            extensions: cnpg_core::parameters::managed_extensions(&view.parameters),
        };
        if self.every_database_jobs.0 != wanted {
            self.every_database_jobs = (wanted.clone(), wanted.jobs());
        }
        let jobs = &self.every_database_jobs.1;
        let outcomes = match self
            .every_database
            .ensure(self.query.as_ref(), jobs, Instant::now())
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(instance = %self.cfg.instance, "listing the databases: {e}");
                return;
            }
        };
        for o in outcomes {
            match o {
                every_database::Outcome::Done { database, key } => {
                    tracing::info!(instance = %self.cfg.instance, %database, "{key} ready");
                }
                every_database::Outcome::Refused {
                    database,
                    key,
                    error,
                } => {
                    tracing::warn!(instance = %self.cfg.instance, %database, "cannot make the {key} yet (tried again in {} s): {error}", every_database::RETRY.as_secs());
                }
            }
        }
    }

    /// The cluster's `Database` resources on this primary: a pass whenever the list (or a
    /// spec, or a deletion) changes, and every 30 s (a change made by hand is put back);
    /// 5 s after a pass where something failed. Between passes a step costs a comparison.
    async fn ensure_databases(&mut self, view: &ViewData) {
        if view.databases.is_empty() && self.databases_pass.is_none() {
            return;
        }
        if self
            .databases_pass
            .as_ref()
            .is_some_and(|(due, seen)| Instant::now() < *due && *seen == view.databases)
        {
            return;
        }
        let mut pass = Vec::new();
        for item in &view.databases {
            let st =
                crate::databases::reconcile(self.query.as_ref(), item, &self.cfg.instance).await;
            pass.push((item.clone(), st));
        }
        let mut all_applied = pass.iter().all(|(_, s)| s.applied == Some(true));
        if let Err(e) = self.view.publish_databases(&pass).await {
            tracing::warn!(instance = %self.cfg.instance, "Database status (tried again in 5 s): {e}");
            all_applied = false;
        }
        let statuses = pass.into_iter().map(|(i, s)| (i.object, s)).collect();
        self.set(|s| s.databases = statuses);
        let next = Duration::from_secs(if all_applied { 30 } else { 5 });
        self.databases_pass = Some((Instant::now() + next, view.databases.clone()));
    }

    /// `spec.tablespaces` on this primary: a pass whenever they change, and every 30 s (5 s
    /// after one that left a tablespace pending). Never blocks the loop on a failure.
    async fn ensure_tablespaces(&mut self, view: &ViewData) {
        if view.tablespaces.is_empty() && self.tablespaces_pass.is_none() {
            return;
        }
        if self
            .tablespaces_pass
            .as_ref()
            .is_some_and(|(due, seen)| Instant::now() < *due && *seen == view.tablespaces)
        {
            return;
        }
        let next = match crate::tablespaces::reconcile(
            self.query.as_ref(),
            &view.tablespaces,
            self.cfg.run_as,
        )
        .await
        {
            Ok(states) => {
                let pending = states.iter().filter(|s| s.state != "reconciled").count();
                for s in &states {
                    if let Some(e) = &s.error {
                        tracing::warn!(instance = %self.cfg.instance, tablespace = %s.name, "{e}");
                    }
                }
                self.set(|s| s.tablespaces = Some(states));
                Duration::from_secs(if pending == 0 { 30 } else { 5 })
            }
            Err(e) => {
                tracing::warn!(instance = %self.cfg.instance, "tablespaces (tried again in 5 s): {e}");
                Duration::from_secs(5)
            }
        };
        self.tablespaces_pass = Some((Instant::now() + next, view.tablespaces.clone()));
    }

    /// `spec.managed.roles` on this primary: a pass whenever the spec, the status or the
    /// passwords file changes, and every 30 s (a role changed by hand is put back). A pass
    /// that cannot read the roles is said and tried again 5 s later; it never stops the
    /// loop. Between passes a step costs one `stat` of the passwords file.
    async fn ensure_managed_roles(&mut self, view: &ViewData) {
        if view.managed_roles.is_empty() && self.roles_pass.is_none() {
            return;
        }
        let file = &self.cfg.managed_role_passwords;
        let stamp = std::fs::metadata(file).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.ino(), m.mtime(), m.mtime_nsec(), m.len())
        });
        if self.roles_pass.as_ref().is_some_and(|(due, seen)| {
            Instant::now() < *due
                && seen.passwords_file == stamp
                && seen.roles == view.managed_roles
                && seen.applied == view.role_passwords_applied
        }) {
            return;
        }
        let secrets = match crate::roles::passwords(file) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(instance = %self.cfg.instance, "managed roles: {e}");
                Default::default()
            }
        };
        // What this primary applied itself is newer than what the status says yet.
        let mut applied = view.role_passwords_applied.clone();
        if let Some(mine) = self
            .shared
            .lock()
            .expect("shared state lock")
            .managed_roles
            .as_ref()
        {
            applied.extend(mine.password_status.clone());
        }
        let next = match crate::roles::reconcile(
            self.query.as_ref(),
            &view.managed_roles,
            &secrets,
            &applied,
        )
        .await
        {
            Ok(status) => {
                self.set(|s| s.managed_roles = Some(status));
                Duration::from_secs(30)
            }
            Err(e) => {
                tracing::warn!(instance = %self.cfg.instance, "managed roles (tried again in 5 s): {e}");
                Duration::from_secs(5)
            }
        };
        let inputs = RolesInputs {
            roles: view.managed_roles.clone(),
            applied: view.role_passwords_applied.clone(),
            passwords_file: stamp,
        };
        self.roles_pass = Some((Instant::now() + next, inputs));
    }

    /// While a pooler serves the cluster: the role PgBouncer logs in as (by certificate,
    /// no password), once per manager on a primary; its function in every database is
    /// [`Self::ensure_every_database`]'s.
    async fn ensure_pooler_role(&mut self) -> Result<(), PgError> {
        if self.pooler_role_checked {
            return Ok(());
        }
        let user = crate::config::POOLER_USER;
        self.query
            .execute(&format!(
                "SET synchronous_commit = local; SET statement_timeout = '5s';\n\
                 DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') \
                 THEN CREATE ROLE {user} LOGIN; END IF; END$$;"
            ))
            .await?;
        self.pooler_role_checked = true;
        Ok(())
    }

    /// Once per manager on a primary: `streaming_replica` logs in by certificate only (no
    /// password: clusters made before certificates had one) and may serve as pg_rewind's
    /// source (the grants new clusters get at initdb). Idempotent, and a local commit: the
    /// loop must never wait for a standby it has yet to configure.
    async fn ensure_replication_role(&mut self) -> Result<(), PgError> {
        if self.replication_role_checked {
            return Ok(());
        }
        self.query
            .execute(&format!(
                "SET synchronous_commit = local; SET statement_timeout = '5s'; \
                 ALTER ROLE streaming_replica PASSWORD NULL;\n{}",
                crate::bootstrap::REWIND_GRANTS
            ))
            .await?;
        self.replication_role_checked = true;
        Ok(())
    }

    /// `enableSuperuserAccess` as upstream: `postgres` gets its password while it is on,
    /// and none (`PASSWORD NULL`: no network login at all) while it is off. Statement
    /// logging is off for this session, so the password never reaches PostgreSQL's log;
    /// the commit is local, or it would wait for a synchronous standby that this very
    /// loop has yet to configure (`dataDurability: required` with no standby yet).
    async fn ensure_superuser_access(&mut self, view: &ViewData) -> Result<(), PgError> {
        let Some(want) = view.superuser_access else {
            return Ok(());
        };
        if self.applied_superuser == Some(want) {
            return Ok(());
        }
        let password = if want {
            let pw = std::fs::read_to_string(&self.cfg.superuser_password).map_err(|source| {
                PgError::Io {
                    path: self.cfg.superuser_password.clone(),
                    source,
                }
            })?;
            format!("'{}'", pw.trim().replace('\'', "''"))
        } else {
            "NULL".to_owned()
        };
        self.query
            .execute(&format!(
                "SET log_statement = 'none'; SET log_min_duration_statement = -1; \
                 SET synchronous_commit = local; SET statement_timeout = '5s'; \
                 ALTER ROLE postgres PASSWORD {password};"
            ))
            .await?;
        tracing::info!(
            instance = %self.cfg.instance,
            "superuser access {}: postgres {}",
            if want { "enabled" } else { "disabled" },
            if want { "has its password" } else { "has no password (no network login)" }
        );
        self.applied_superuser = Some(want);
        Ok(())
    }

    async fn ensure_slots(&self, view: &ViewData) -> Result<(), PgError> {
        let wanted: Vec<String> = view
            .instances
            .iter()
            .filter(|i| **i != self.cfg.instance)
            .map(|i| naming::replication_slot("_cnpg_", i))
            .collect();
        let mut sql = String::new();
        for slot in &wanted {
            // Slot names are [a-z0-9_] by construction.
            sql.push_str(&format!(
                "SELECT pg_create_physical_replication_slot('{slot}', true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}');"
            ));
        }
        let keep = wanted
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        sql.push_str(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name LIKE '\\_cnpg\\_%' AND NOT active{};",
            if keep.is_empty() {
                String::new()
            } else {
                format!(" AND slot_name NOT IN ({keep})")
            }
        ));
        // Slots are housekeeping: never a reason for the loop to wait long.
        tokio::time::timeout(Duration::from_secs(5), self.query.execute(&sql))
            .await
            .map_err(|_| PgError::Query("replication slots: no answer within 5 s".into()))?
    }
}

/// What a managed-roles pass was made of; a step makes another only when one changes.
struct RolesInputs {
    roles: Vec<cnpg_core::roles::RoleConfiguration>,
    applied: std::collections::BTreeMap<String, cnpg_core::roles::PasswordState>,
    /// Inode, modification time and length of the passwords file (none while absent):
    /// the operator replaces it when a password changes.
    passwords_file: Option<(u64, i64, i64, u64)>,
}

mod every_database;
#[cfg(test)]
mod tests;
