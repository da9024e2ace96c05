//! The local operator: one process that keeps a cluster of local `cnpg-instance`
//! processes as its manifest says.
//!
//! Every 100 ms it observes the instances over HTTP (`/pg/status`), calls
//! `cnpg_core::reconcile::reconcile`, and applies the plan: starting, stopping and cloning
//! instance managers, writing the view they read (target primary, fencing, synchronous
//! standby names), pointing the [`super::services`] at the right members, and writing
//! `status.json` with the events that explain each decision.

use super::error::LocalError;
use super::layout::{InstanceLine, Layout, OperatorLock, Ports, StatusFile};
use super::services::{Routes, Service};
use crate::clock::now;
use cnpg_core::api::Cluster;
use cnpg_core::api::manifest::check_document;
use cnpg_core::fencing::Fencing;
use cnpg_core::naming::Role;
use cnpg_core::policy::Policy;
use cnpg_core::reconcile::{self, Action, Bootstrap, ClusterState, Observed, ObservedInstance};
use cnpg_core::status::InstanceStatus;
use cnpg_instance::view::{Endpoint, FileView, ViewData, write_atomically};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// What a local operator needs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// `<state-dir>`.
    pub state_dir: PathBuf,
    /// The `cnpg-instance` program.
    pub instance_bin: PathBuf,
    /// `--pg-bin` for the instances.
    pub pg_bin: Option<PathBuf>,
}

/// How long a manager this operator started may take to answer before it counts as
/// failing: it starts in well under a second alone, several on a loaded machine.
const START_GRACE_MS: u64 = 15_000;

/// Writes a `Backup` document back whole.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether a switchover is under way (see [`crate::pooler::switching`]).
fn switching(st: &ClusterState) -> bool {
    crate::pooler::switching(st.target_primary.as_deref(), st.current_primary.as_deref())
}

/// How often the local issuer looks for certificates about to expire.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(3600);

/// Reads and validates a Cluster manifest: every problem, or the typed Cluster.
pub fn load_manifest(path: &Path) -> Result<Cluster, LocalError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let docs =
        crate::manifests::parse_documents(&text).map_err(|e| LocalError::Invalid(e.to_string()))?;
    let doc = docs
        .into_iter()
        .find(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Cluster"))
        .ok_or_else(|| LocalError::Invalid(format!("{} holds no Cluster", path.display())))?;
    let report = check_document(&doc);
    if !report.is_valid() {
        let lines: Vec<String> = report.errors.iter().map(|e| format!("  {e}")).collect();
        return Err(LocalError::Invalid(lines.join("\n")));
    }
    serde_json::from_value(doc).map_err(|e| LocalError::Invalid(e.to_string()))
}

/// The documents of `kind` a manifest file carries beside its Cluster, by name.
fn manifest_objects<K: serde::de::DeserializeOwned>(path: &Path, kind: &str) -> Vec<K> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let docs = crate::manifests::parse_documents(&text).unwrap_or_default();
    docs.into_iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .filter_map(|d| serde_json::from_value::<K>(d).ok())
        .collect()
}

/// The Secrets a manifest file carries beside its Cluster (what its `secretKeyRef`s and
/// `s3Credentials` name: there is no API server to hold them locally), by name.
pub fn manifest_secrets(path: &Path) -> BTreeMap<String, k8s_openapi::api::core::v1::Secret> {
    use k8s_openapi::ByteString;
    manifest_objects::<k8s_openapi::api::core::v1::Secret>(path, "Secret")
        .into_iter()
        .filter_map(|mut s| {
            // `stringData` is written into `data`, as the API server does.
            let strings = s.string_data.take().unwrap_or_default();
            let data = s.data.get_or_insert_default();
            for (k, v) in strings {
                data.insert(k, ByteString(v.into_bytes()));
            }
            Some((s.metadata.name.clone()?, s))
        })
        .collect()
}

/// The ConfigMaps a manifest file carries (custom monitoring queries), by name.
pub fn manifest_config_maps(
    path: &Path,
) -> BTreeMap<String, k8s_openapi::api::core::v1::ConfigMap> {
    manifest_objects::<k8s_openapi::api::core::v1::ConfigMap>(path, "ConfigMap")
        .into_iter()
        .filter_map(|c| Some((c.metadata.name.clone()?, c)))
        .collect()
}

/// A free port on 127.0.0.1, outside the ephemeral range, so no client socket takes it
/// before the server that owns it binds it ([`cnpg_instance::ports`]).
pub fn free_port() -> Result<u16, LocalError> {
    cnpg_instance::ports::free_port()
        .map_err(|e| LocalError::Other(format!("no free port on 127.0.0.1: {e}")))
}

/// Writes the WAL archive's configuration among the cluster's secrets (0600) when the
/// manifest asks for an object store, as the operator does on Kubernetes, with the
/// credentials from the Secrets the manifest file carries; removes it when it no longer
/// does. Instance managers archive with it from their next start.
fn write_archive(
    layout: &Layout,
    cluster: &Cluster,
    user: &BTreeMap<String, k8s_openapi::api::core::v1::Secret>,
) -> Result<(), LocalError> {
    let secrets = layout.secrets();
    let (json, ca) = (secrets.join("archive.json"), secrets.join("archive-ca.crt"));
    let made = crate::kube::secrets::archive_config(cluster, user, &ca)
        .map_err(|e| LocalError::Invalid(e.to_string()))?;
    match made {
        None => {
            let _ = std::fs::remove_file(&json);
            let _ = std::fs::remove_file(&ca);
        }
        Some((config, ca_pem)) => {
            let text =
                serde_json::to_string(&config).map_err(|e| LocalError::Other(e.to_string()))?;
            write_secret_file(&json, &text)?;
            if let Some(pem) = ca_pem {
                write_secret_file(&ca, &pem)?;
            }
        }
    }
    Ok(())
}

/// Writes the managed roles' passwords among the cluster's secrets (0600) for the
/// primary's instance manager, from the Secrets the manifest file carries, as the
/// operator does on Kubernetes ([`crate::kube::secrets::role_passwords`]).
fn write_role_passwords(
    layout: &Layout,
    cluster: &Cluster,
    user: &BTreeMap<String, k8s_openapi::api::core::v1::Secret>,
) -> Result<(), LocalError> {
    let path = cnpg_instance::bootstrap::Secrets {
        dir: layout.secrets(),
    }
    .managed_roles();
    let out = crate::kube::secrets::role_passwords(cluster, user);
    write_json_or_remove(&path, Some(out).filter(|o| !o.is_empty()))
}

/// `value` as JSON in the secret file `path`; no file for `None`.
fn write_json_or_remove(
    path: &Path,
    value: Option<impl serde::Serialize>,
) -> Result<(), LocalError> {
    match value {
        None => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Some(v) => {
            let text = serde_json::to_string(&v).map_err(|e| LocalError::Other(e.to_string()))?;
            write_secret_file(path, &text)
        }
    }
}

/// Writes the instances' monitoring configuration among the cluster's secrets, with the
/// custom queries from the ConfigMaps and Secrets the manifest file carries, as the
/// operator does on Kubernetes ([`crate::kube::secrets::monitoring_config`]); without
/// `spec.monitoring`, none (the instances' defaults).
fn write_monitoring(
    layout: &Layout,
    cluster: &Cluster,
    user: &BTreeMap<String, k8s_openapi::api::core::v1::Secret>,
) -> Result<(), LocalError> {
    let path = cnpg_instance::bootstrap::Secrets {
        dir: layout.secrets(),
    }
    .monitoring();
    let config_maps = manifest_config_maps(&layout.manifest());
    let config = crate::kube::secrets::monitoring_config(cluster, &config_maps, user)
        .map_err(|e| LocalError::Invalid(e.to_string()))?;
    write_json_or_remove(&path, config)
}

/// A file among the cluster's secrets, 0600 and PostgreSQL's user's (its processes read
/// it: archive_command, the instance manager), rewritten only when it changed.
fn write_secret_file(path: &Path, text: &str) -> Result<(), LocalError> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let run_as = cnpg_instance::runas::RunAs::detect().ok().flatten();
    cnpg_instance::tls::write_private(path, text, run_as)
        .map_err(|e| LocalError::Other(e.to_string()))
}

/// An instance being made by `cnpg-instance initdb|recover|join`, run beside the loop: a
/// replica copying a large database (minutes) must not hold up a failover, as it does not on
/// Kubernetes, where a joining pod's init step runs while the operator goes on. Until it
/// ends the instance is observed as started but not answering (what a pod in its init step
/// looks like), so nothing else is created, elected or started there.
struct Creation {
    /// `initdb`, `recover` or `join`.
    sub: &'static str,
    recovering: bool,
    /// Its process group's leader.
    pid: Option<i32>,
    done: tokio::task::JoinHandle<std::io::Result<std::process::Output>>,
}

/// The file that marks an instance directory still being made: an operator that finds it
/// without a creation of its own (it was restarted meanwhile) discards the directory, which
/// never held a running instance, and the instance is created again.
const CREATING: &str = "creating";

/// A running local cluster.
pub struct LocalOperator {
    layout: Layout,
    opts: LocalOptions,
    cluster: String,
    ports: Ports,
    children: BTreeMap<String, Child>,
    /// Instance managers started by an earlier run of the operator and still alive.
    adopted: BTreeMap<String, i32>,
    roles: BTreeMap<String, Role>,
    routes: Routes,
    state: ClusterState,
    sync_value: String,
    /// `managedRolesStatus`: the primary's last report (kept across operator restarts).
    managed_roles: Option<cnpg_core::roles::ManagedRoles>,
    /// `spec.tablespaces` as the primary last reported them.
    tablespaces: Vec<cnpg_core::api::cluster::TablespaceState>,
    /// The `Database` documents as last handed to the instance managers.
    databases: Vec<cnpg_core::databases::Managed>,
    restart: Option<String>,
    reload: Option<String>,
    /// When each instance manager was started by this operator (adopted ones: unknown, 0).
    spawned_at: BTreeMap<String, u64>,
    /// The last `kubectl.kubernetes.io/restartedAt` seen, and when it was first seen.
    restart_seen: Option<(String, u64)>,
    events: VecDeque<String>,
    /// The last reason the archive configuration, and the monitoring configuration, could
    /// not be written (an event when it changes, not every loop).
    problems: [Option<String>; 2],
    /// Why the recovery of the first instance failed: not tried again (it would fail the
    /// same way) until the operator restarts.
    recovery_failed: Option<String>,
    /// Instances being created (initdb, recovery, a join), each by a process of its own.
    creating: BTreeMap<String, Creation>,
    /// The backups the status shows (from the ended Backups), once the cluster archives.
    backup_summary: Option<cnpg_core::backup::Summary>,
    last_election: Option<String>,
    manifest: Cluster,
    last_view: String,
    /// What the instance managers' `/pg/status` wants from us (`secrets/status-token`):
    /// their status servers listen on loopback, and nobody else on the machine needs it.
    status_token: String,
    /// The cluster's poolers.
    poolers: super::poolers::Poolers,
    /// When the poolers were held paused for a switchover.
    held_since: Option<Instant>,
    /// Where to stop for a test to kill the operator (`CNPG_LOCAL_PAUSE_AT`).
    pause_at: Option<PausePoint>,
    /// `operator.pid`, locked for as long as this operator lives.
    _lock: OperatorLock,
}

/// A point of a failover (or switchover) at which the operator stops, so that a test or
/// the fault suite can kill it exactly there: `CNPG_LOCAL_PAUSE_AT=<move>:<step>`, where
/// `<move>` is `pending` (the loop that takes the target away from the primary: to
/// `pending`, or straight to the new primary when no WAL receiver is left to wait for)
/// or `elected` (the loop that names the new primary), and `<step>` is `actions` (its
/// actions carried out, nothing written), `state` (its decision saved, the instances not
/// told) or `view` (both written). The operator writes `paused` in the cluster's directory
/// and waits there for a minute. Unset, nothing of this runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PausePoint {
    pending: bool,
    step: String,
}

impl PausePoint {
    const VAR: &'static str = "CNPG_LOCAL_PAUSE_AT";

    fn from_env() -> Option<PausePoint> {
        let v = std::env::var(Self::VAR).ok()?;
        let parsed = match v.split_once(':') {
            Some((m @ ("pending" | "elected"), step @ ("actions" | "state" | "view"))) => {
                Some(PausePoint {
                    pending: m == "pending",
                    step: step.to_owned(),
                })
            }
            _ => None,
        };
        if parsed.is_none() {
            tracing::warn!(
                "{}={v:?} ignored: expected pending|elected:actions|state|view",
                Self::VAR
            );
        }
        parsed
    }
}

impl LocalOperator {
    /// Prepares a cluster from its manifest (validated; nothing starts when invalid):
    /// state directory, ports (kept across restarts), the services' listeners.
    pub async fn prepare(
        manifest_path: &Path,
        opts: LocalOptions,
    ) -> Result<(Self, Vec<(Service, TcpListener)>), LocalError> {
        let manifest = load_manifest(manifest_path)?;
        let cluster = manifest
            .metadata
            .name
            .clone()
            .ok_or_else(|| LocalError::Invalid("metadata.name is missing".into()))?;
        let layout = Layout::new(&opts.state_dir, &cluster);
        std::fs::create_dir_all(layout.root.join("instances")).map_err(io(&layout.root))?;
        std::fs::create_dir_all(layout.root.join("requests")).map_err(io(&layout.root))?;
        let probe = layout.root.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| {
            LocalError::Other(format!(
                "the state directory {} is not writable: {e}; choose another with --state-dir",
                layout.root.display()
            ))
        })?;
        let _ = std::fs::remove_file(&probe);
        // PostgreSQL runs as `postgres` when we are root: it must reach its files, or every
        // start fails on the first one and is retried for ever.
        if let Ok(Some(user)) = cnpg_instance::runas::RunAs::detect() {
            user.can_enter(&layout.root).map_err(|why| {
                LocalError::Other(format!(
                    "the state directory {} is out of reach of the postgres user: {why} \
                     (or pass another --state-dir)",
                    layout.root.display()
                ))
            })?;
        }
        let lock = layout.lock_operator().map_err(LocalError::Other)?;
        if manifest_path != layout.manifest() {
            std::fs::copy(manifest_path, layout.manifest()).map_err(io(&layout.manifest()))?;
            // Poolers in the same file as the Cluster start with it.
            super::apply::apply_poolers(&opts.state_dir, manifest_path)?;
        }
        let mut ports: Ports = std::fs::read_to_string(layout.ports())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if ports.rw == 0 {
            ports.rw = free_port()?;
            ports.ro = free_port()?;
            ports.r = free_port()?;
        }
        if ports.replication == 0 {
            ports.replication = free_port()?;
        }
        let mut listeners = Vec::new();
        for (svc, port) in [
            (Service::Rw, ports.rw),
            (Service::Ro, ports.ro),
            (Service::R, ports.r),
            (Service::Replication, ports.replication),
        ] {
            let l = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
                LocalError::Other(format!("port {port} (the {svc:?} service) is in use: {e}; stop what uses it, or remove {}", layout.ports().display()))
            })?;
            listeners.push((svc, l));
        }
        let status_token = cnpg_instance::bootstrap::Secrets {
            dir: layout.secrets(),
        }
        .ensure_status_token(None)
        .map_err(|e| LocalError::Other(format!("the status token: {e}")))?;
        let user = manifest_secrets(&layout.manifest());
        write_archive(&layout, &manifest, &user)?;
        write_role_passwords(&layout, &manifest, &user)?;
        write_monitoring(&layout, &manifest, &user)?;
        let saved: Option<StatusFile> = std::fs::read_to_string(layout.status())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let layout_copy = layout.clone();
        let mut op = LocalOperator {
            managed_roles: saved.as_ref().and_then(|s| s.managed_roles_status.clone()),
            tablespaces: saved
                .as_ref()
                .map(|s| s.tablespaces_status.clone())
                .unwrap_or_default(),
            databases: Vec::new(),
            state: saved.map(|s| s.state).unwrap_or_default(),
            layout,
            opts,
            cluster,
            ports,
            children: BTreeMap::new(),
            adopted: BTreeMap::new(),
            roles: BTreeMap::new(),
            routes: Routes::default(),
            sync_value: String::new(),
            restart: None,
            reload: None,
            spawned_at: BTreeMap::new(),
            restart_seen: None,
            events: VecDeque::new(),
            problems: Default::default(),
            recovery_failed: None,
            creating: BTreeMap::new(),
            backup_summary: None,
            last_election: None,
            manifest,
            last_view: String::new(),
            status_token,
            poolers: super::poolers::Poolers::new(layout_copy),
            held_since: None,
            pause_at: PausePoint::from_env(),
            _lock: lock,
        };
        // What the instances were told last stays what they run until this operator
        // decides otherwise. Published empty by a new operator, it turned synchronous
        // replication off for one loop (commits acknowledged by the primary alone) and
        // dropped the confirmed configuration, so a failover then was refused (found by
        // killing the operator at each step of a failover); an empty restart or reload
        // request is a new request to an instance that carried out the last one: every
        // instance restarted PostgreSQL again.
        if let Some(last) = std::fs::read_to_string(op.layout.view())
            .ok()
            .and_then(|t| serde_json::from_str::<ViewData>(&t).ok())
        {
            op.sync_value = last.synchronous_standby_names;
            op.restart = last.restart;
            op.reload = last.reload;
            op.backup_summary =
                Some(last.backups).filter(|b| *b != cnpg_core::backup::Summary::default());
        }
        op.save_ports()?;
        op.discard_abandoned_creations();
        Ok((op, listeners))
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Runs until `stop` fires, then stops every instance (PostgreSQL shuts down cleanly).
    pub async fn run(
        mut self,
        listeners: Vec<(Service, TcpListener)>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        healthy: tokio::sync::oneshot::Sender<String>,
    ) -> Result<(), LocalError> {
        for (svc, l) in listeners {
            tokio::spawn(self.routes.clone().serve(l, svc));
        }
        let mut healthy = Some(healthy);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut certificates_checked: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            if certificates_checked.is_none_or(|t| t.elapsed() > CERTIFICATE_CHECK) {
                certificates_checked = Some(Instant::now());
                self.renew_certificates();
            }
            let phase = self.step().await;
            if phase == cnpg_core::phase::ClusterPhase::Healthy
                && self.roles.len() as u32 == self.policy().0.instances
                && let Some(tx) = healthy.take()
            {
                let _ = tx.send(self.connection_strings());
            }
        }
        self.shutdown().await;
        let _ = std::fs::remove_file(self.layout.pid());
        Ok(())
    }

    fn policy(&self) -> (Policy, Option<cnpg_core::fencing::FencingParseError>) {
        self.manifest.policy()
    }

    /// The connection strings of the services: TLS verified against the cluster's CA
    /// (`sslmode=verify-full`; the server certificate names 127.0.0.1 and localhost), the
    /// password in a libpq password file beside the other secrets (0600), so the strings
    /// can be printed and logged without giving it away.
    pub fn connection_strings(&self) -> String {
        let secrets = self.layout.secrets();
        let pw = std::fs::read_to_string(secrets.join("app-password")).unwrap_or_default();
        let passfile = secrets.join("app.pgpass");
        if let Err(e) = cnpg_instance::tls::write_private(
            &passfile,
            &format!("*:*:*:app:{}\n", pw.trim()),
            None,
        ) {
            tracing::warn!(cluster = %self.cluster, "cannot write the password file: {e}");
        }
        let ca = secrets.join("ca.crt");
        let line = |label: &str, port: u16| {
            format!(
                "{label} postgresql://app@127.0.0.1:{port}/app?sslmode=verify-full&sslrootcert={}&passfile={}",
                ca.display(),
                passfile.display()
            )
        };
        [
            line("read-write:", self.ports.rw),
            line("read-only: ", self.ports.ro),
            line("any:       ", self.ports.r),
        ]
        .join("\n")
    }

    fn save_ports(&self) -> Result<(), LocalError> {
        write_atomically(
            &self.layout.ports(),
            &serde_json::to_string_pretty(&self.ports).expect("ports serialize"),
        )
        .map_err(io(&self.layout.ports()))
    }

    /// The local platform is its own issuer: certificates expiring within a week are
    /// renewed in the secrets directory (the instance managers see them change and reload
    /// PostgreSQL), as the operator renews its Secrets on Kubernetes.
    fn renew_certificates(&mut self) {
        let files = cnpg_instance::tls::Files {
            dir: self.layout.secrets(),
        };
        let run_as = cnpg_instance::runas::RunAs::detect().ok().flatten();
        let names = cnpg_instance::tls::local_names(&[]);
        match files.renew(&self.cluster, &names, run_as, now().millis() as i64, true) {
            Ok(renewed) if !renewed.is_empty() => self.event(format!(
                "CertificateRenewed: {} (expiring within {} days)",
                renewed.join(", "),
                cnpg_instance::tls::RENEW_BEFORE_DAYS
            )),
            Ok(_) => {}
            Err(e) => self.event(format!("CertificateRenewalFailed: {e}")),
        }
    }

    fn event(&mut self, text: String) {
        tracing::info!(cluster = %self.cluster, "{text}");
        self.events.push_back(format!("{} {text}", now().millis()));
        while self.events.len() > 30 {
            self.events.pop_front();
        }
    }

    /// Instances with storage.
    fn instances(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.layout.root.join("instances"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.path().join("data").join("PG_VERSION").exists()
                            && !e.path().join(CREATING).exists()
                    })
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|n| cnpg_core::naming::serial_of(&self.cluster, n).unwrap_or(u32::MAX));
        v
    }

    async fn observe(&mut self) -> Observed {
        self.creations_ended().await;
        // Reap instance processes that exited.
        let mut gone = Vec::new();
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                gone.push((name.clone(), status));
            }
        }
        for (name, status) in gone {
            self.children.remove(&name);
            self.event(format!("instance manager of {name} exited ({status})"));
        }
        // Adopt instance managers a previous operator started (their pid file names a live
        // process): the operator can be restarted at any moment without touching them.
        for name in self.instances() {
            if self.children.contains_key(&name) {
                continue;
            }
            let pid = std::fs::read_to_string(self.layout.instance(&name).join("manager.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .filter(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), None).is_ok());
            match pid {
                Some(p) => {
                    if self.adopted.insert(name.clone(), p).is_none() {
                        self.event(format!(
                            "adopted the running instance manager of {name} (pid {p})"
                        ));
                    }
                }
                None => {
                    self.adopted.remove(&name);
                }
            }
        }
        if let Some(p) = FileView::published(&self.layout.published()) {
            self.state.current_primary = Some(p);
        }
        let names = self.instances();
        // Every instance at once: one that hangs costs the loop one timeout, not one each.
        let asks = names.iter().map(|name| {
            let running = self.children.contains_key(name) || self.adopted.contains_key(name);
            let port = self.ports.instances.get(name).map(|(_, sp)| *sp);
            let token = self.status_token.as_str();
            async move {
                match (running, port) {
                    (true, Some(sp)) => {
                        match cnpg_instance::http::get_authorized(
                            "127.0.0.1",
                            sp,
                            "/pg/status",
                            Duration::from_millis(500),
                            Some(token),
                        )
                        .await
                        {
                            Ok((_, body)) => serde_json::from_str::<InstanceStatus>(&body)
                                .unwrap_or_else(|e| {
                                    InstanceStatus::unreachable(name, &e.to_string())
                                }),
                            Err(e) => InstanceStatus::unreachable(name, &e),
                        }
                    }
                    _ => InstanceStatus::unreachable(name, "instance is not running"),
                }
            }
        });
        let statuses = futures::future::join_all(asks).await;
        let mut instances = Vec::new();
        for (name, status) in names.into_iter().zip(statuses) {
            let running = self.children.contains_key(&name) || self.adopted.contains_key(&name);
            // A rolling restart was asked after this instance manager started: outdated.
            let outdated = self.restart_seen.as_ref().and_then(|(_, seen)| {
                (self.spawned_at.get(&name).copied().unwrap_or(0) < *seen)
                    .then(|| "a restart was requested (kubectl-cnpg restart)".to_owned())
            });
            // A manager this operator has just started does not answer until its status
            // server listens: starting on purpose, not failing (waking from hibernation,
            // a slower primary was failed over from while it started, on a loaded machine).
            let mut status = status;
            let started = self.spawned_at.get(&name).copied().unwrap_or(0);
            if running
                && status.instance_manager_version.is_empty()
                && started > 0
                && now().millis().saturating_sub(started) < START_GRACE_MS
            {
                status.might_be_unavailable = true;
            }
            // A parameter that needs a restart (shared_preload_libraries, max_connections):
            // restarted in place, in the rollout's order, as on Kubernetes.
            let restart_only = outdated.is_none() && status.pending_restart;
            let outdated = outdated
                .or_else(|| restart_only.then(|| "a parameter change needs a restart".to_owned()));
            instances.push(ObservedInstance {
                name: name.clone(),
                running,
                role: self.roles.get(&name).copied(),
                status,
                outdated,
                restart_only,
                creating: false,
            });
        }
        // Being created: started, not answering yet (a pod in its init step).
        for (name, c) in &self.creating {
            if instances.iter().any(|i: &ObservedInstance| &i.name == name) {
                continue;
            }
            let mut status = InstanceStatus::unreachable(
                name,
                &format!("being created ({} in progress)", c.sub),
            );
            status.might_be_unavailable = true;
            instances.push(ObservedInstance {
                name: name.clone(),
                running: true,
                role: self.roles.get(name).copied(),
                status,
                outdated: None,
                restart_only: false,
                creating: true,
            });
        }
        instances.sort_by_key(|i| {
            cnpg_core::naming::serial_of(&self.cluster, &i.name).unwrap_or(u32::MAX)
        });
        let sync_in_effect = self
            .state
            .current_primary
            .as_ref()
            .and_then(|p| instances.iter().find(|i| &i.name == p))
            .and_then(|i| i.status.synchronous_standby_names.clone());
        Observed {
            instances,
            state: self.state.clone(),
            sync_in_effect,
        }
    }

    /// One loop: requests, observe, decide, act, write the status. Returns the phase.
    pub async fn step(&mut self) -> cnpg_core::phase::ClusterPhase {
        // The manifest may have changed (fencing, hibernation, parameters, scale).
        if let Ok(m) = load_manifest(&self.layout.manifest()) {
            self.manifest = m;
            // Said once per new problem, not every loop.
            let user = manifest_secrets(&self.layout.manifest());
            if let Err(e) = write_role_passwords(&self.layout, &self.manifest, &user) {
                tracing::warn!("managed roles' passwords: {e}");
            }
            let problems = [
                write_archive(&self.layout, &self.manifest, &user)
                    .err()
                    .map(|e| format!("WAL archiving is not configured: {e}")),
                write_monitoring(&self.layout, &self.manifest, &user)
                    .err()
                    .map(|e| format!("the monitoring queries are left as they were: {e}")),
            ];
            for (i, problem) in problems.into_iter().enumerate() {
                if problem.is_some() && problem != self.problems[i] {
                    self.event(problem.clone().unwrap_or_default());
                }
                self.problems[i] = problem;
            }
        }
        let (policy, warning) = self.policy();
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        let was_switching = switching(&self.state);
        let target_before = self.state.target_primary.clone();
        if let Ok(target) = std::fs::read_to_string(self.layout.promote_request()) {
            let _ = std::fs::remove_file(self.layout.promote_request());
            let target = target.trim().to_owned();
            if !self.instances().contains(&target) {
                self.event(format!(
                    "Switchover to {target:?} refused: no such instance"
                ));
            } else if self.state.current_primary.as_deref() != Some(target.as_str()) {
                self.state.target_primary = Some(target.clone());
                self.event(format!("Switchover requested to {target}"));
            }
        }
        let annotations = self
            .manifest
            .metadata
            .annotations
            .clone()
            .unwrap_or_default();
        let annotation = |k: &str| annotations.get(k).cloned();
        if let Some(v) = annotation("kubectl.kubernetes.io/restartedAt")
            && self.restart_seen.as_ref().map(|(s, _)| s) != Some(&v)
        {
            // The first sighting after an operator restart is not a new request.
            let at = if self.restart_seen.is_none() && self.spawned_at.is_empty() {
                0
            } else {
                now().millis()
            };
            self.restart_seen = Some((v.clone(), at));
            if at > 0 {
                self.event(format!("rolling restart requested ({v})"));
            }
        }
        self.reload = annotation("cnpg.io/reloadedAt");
        let restart_one = self.layout.restart_request();
        if let Ok(name) = std::fs::read_to_string(&restart_one) {
            let _ = std::fs::remove_file(&restart_one);
            let name = name.trim().to_owned();
            if self.state.current_primary.as_deref() == Some(name.as_str()) {
                // The primary restarts in place (no failover, no switchover).
                self.restart = Some(format!("{name}@{}", now().millis()));
                self.event(format!("restarting the primary {name} in place"));
            } else if self.instances().contains(&name) {
                self.stop_instance(&name).await;
                self.event(format!("restarting {name}"));
            }
        }
        let destroy = self.layout.destroy_request();
        if let Ok(name) = std::fs::read_to_string(&destroy) {
            let _ = std::fs::remove_file(&destroy);
            let name = name.trim().to_owned();
            let deletable = self.instances().contains(&name)
                && self.state.current_primary.as_deref() != Some(name.as_str());
            if deletable
                && let Err(e) = self
                    .apply(
                        Action::DeleteInstance { name: name.clone() },
                        &Observed::default(),
                    )
                    .await
            {
                self.event(format!("destroying {name} failed: {e}"));
            }
        }
        let observed = self.observe().await;
        let primary = self
            .state
            .current_primary
            .as_ref()
            .and_then(|p| observed.instances.iter().find(|i| &i.name == p))
            .filter(|p| p.status.is_primary);
        if let Some(m) = primary.and_then(|p| p.status.managed_roles.clone()) {
            self.managed_roles = Some(m);
        }
        if let Some(t) = primary.and_then(|p| p.status.tablespaces.clone()) {
            self.tablespaces = t;
        }
        let (databases, said) =
            super::databases::sync(&self.layout, primary.map(|p| &p.status.databases));
        self.databases = databases;
        for e in said {
            self.event(e);
        }
        let plan = reconcile::reconcile(&policy, &observed, now());
        for e in &plan.events {
            if e.reason == "FailoverTarget" || e.reason == "Switchover" {
                self.last_election = Some(e.message.clone());
            }
            self.event(format!("{}: {}", e.reason, e.message));
        }
        // A switchover begins: the poolers in front of the primary pause first (each PAUSE
        // returns once its running transactions end), so the primary changes while no
        // query is in flight and their clients wait instead of failing.
        if switching(&plan.state) && !was_switching && !self.poolers.lines().is_empty() {
            let begun = Instant::now();
            let said = self.poolers.hold(&self.status_token).await;
            if !said.is_empty() {
                self.held_since = Some(begun);
                self.event(format!(
                    "PoolersPaused for the switchover in {} ms: {}",
                    begun.elapsed().as_millis(),
                    said.join("; ")
                ));
            }
        }
        self.state = plan.state.clone();
        let moved = (self.state.target_primary != target_before)
            .then(|| Some((target_before?, self.state.target_primary.clone()?)))
            .flatten();
        for action in plan.actions {
            if let Err(e) = self.apply(action, &observed).await {
                self.event(format!("action failed: {e}"));
            }
        }
        self.pause_if_asked(moved.as_ref(), "actions").await;
        self.update_routes();
        // The decision state is saved before the view that acts on it is published: an
        // operator killed in between restarts from the new state and publishes it again.
        // Saved after, a kill there (CI: 150 ms into a failover) restarted from the
        // target the instances were no longer told, read the promoted replica as a
        // switchover away from it, and "switched back" to the dead primary's old timeline.
        // Backups report in the next loop's status.
        self.write_status(&plan.phase, &plan.phase_reason, &observed);
        self.pause_if_asked(moved.as_ref(), "state").await;
        self.write_view(&policy);
        self.pause_if_asked(moved.as_ref(), "view").await;
        self.run_poolers().await;
        self.run_schedules();
        self.run_backups(&observed).await;
        plan.phase
    }

    /// Stops here for a minute when `CNPG_LOCAL_PAUSE_AT` names this step of this move
    /// of the target primary (`from`, `to`; see [`PausePoint`]).
    async fn pause_if_asked(&self, moved: Option<&(String, String)>, step: &str) {
        let Some((at, (from, to))) = self.pause_at.as_ref().zip(moved) else {
            return;
        };
        let pending = cnpg_core::naming::PENDING;
        let this_move = if at.pending {
            from != pending
        } else {
            to != pending
        };
        if at.step != step || !this_move {
            return;
        }
        let what = format!("target {from} -> {to}, step {step}");
        tracing::warn!("{}: pausing at {what}", PausePoint::VAR);
        let _ = std::fs::write(self.layout.root.join("paused"), &what);
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    /// The Pooler controller's pass, and the end of a switchover's pause: once the new
    /// primary is served through `-rw` (or after [`crate::pooler::HOLD_MAX`], whatever happened).
    async fn run_poolers(&mut self) {
        let user = manifest_secrets(&self.layout.manifest());
        let secrets = self.layout.secrets();
        let ctx = super::poolers::Context {
            instance_bin: &self.opts.instance_bin,
            services: (self.ports.rw, self.ports.ro, self.ports.r),
            secrets: &secrets,
            user_secrets: &user,
        };
        for e in self.poolers.step(&ctx).await {
            self.event(e);
        }
        if let Some(since) = self.held_since {
            let primary = self.state.current_primary.clone();
            let served = primary.is_some()
                && primary == self.state.target_primary
                && primary
                    .as_ref()
                    .is_some_and(|p| self.roles.get(p) == Some(&Role::Primary));
            if served || since.elapsed() > crate::pooler::HOLD_MAX {
                self.poolers.release(&self.status_token).await;
                self.held_since = None;
                self.event(format!(
                    "PoolersResumed after {} ms{}",
                    since.elapsed().as_millis(),
                    if served {
                        ""
                    } else {
                        " (the switchover did not end in time)"
                    }
                ));
            }
        }
    }

    /// The Backup controller of the local platform: each `Backup` not yet ended is started
    /// on the instance [`cnpg_core::backup::choose`] picks (once: its status names the
    /// instance), then followed through that instance manager until it ends; its status
    /// carries upstream's fields.
    async fn run_backups(&mut self, observed: &Observed) {
        use crate::backup as b;
        use cnpg_core::api::backup::Backup;
        let dir = self.layout.backups();
        let store = self
            .manifest
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.barman_object_store.clone());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            self.backup_summary = store.is_some().then(Default::default);
            return;
        };
        let archiving = self
            .state
            .current_primary
            .as_ref()
            .and_then(|p| observed.instances.iter().find(|i| &i.name == p))
            .and_then(|p| cnpg_core::backup::archiving(&p.status));
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut ended: Vec<(String, String)> = Vec::new();
        for path in files {
            let Some(mut backup) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Backup>(&t).ok())
            else {
                continue;
            };
            let mut st = backup.status.clone().unwrap_or_default();
            if !b::ended(&st) {
                self.run_backup(
                    &backup,
                    &mut st,
                    store.as_ref(),
                    archiving.as_ref(),
                    observed,
                )
                .await;
                if backup.status.as_ref() != Some(&st) {
                    backup.status = Some(st.clone());
                    super::objects::write_status(&path, &backup);
                }
            }
            if b::ended(&st) {
                ended.push((
                    st.phase.clone().unwrap_or_default(),
                    st.stopped_at.clone().unwrap_or_default(),
                ));
            }
        }
        self.backup_summary = store.is_some().then(|| {
            cnpg_core::backup::Summary::of(ended.iter().map(|(p, at)| (p.as_str(), at.as_str())))
        });
    }

    /// The ScheduledBackup controller of the local platform: each schedule due creates its
    /// Backup in `backups/` (which [`Self::run_backups`] runs) and records the occurrence;
    /// a Backup of that name already there is the same occurrence, never a second one.
    fn run_schedules(&mut self) {
        use cnpg_core::api::backup::{ScheduledBackup, ScheduledBackupStatus};
        use cnpg_core::schedule::Decision;
        let Ok(entries) = std::fs::read_dir(self.layout.scheduled_backups()) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let now_ms = now();
        for path in files {
            let Some(mut sb) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<ScheduledBackup>(&t).ok())
            else {
                continue;
            };
            let name = sb.metadata.name.clone().unwrap_or_default();
            let before = sb.status.clone();
            let mut st = before
                .clone()
                .unwrap_or_else(ScheduledBackupStatus::default);
            match crate::backup::schedule_decision(&sb, now_ms) {
                Ok(Decision::Create {
                    at,
                    name: backup,
                    reason,
                    next,
                }) => {
                    let file = self.layout.backups().join(format!("{backup}.json"));
                    if super::objects::create(&file, &crate::backup::scheduled(&sb, &backup)) {
                        self.event(format!(
                            "ScheduledBackup {name} created Backup {backup}: {reason}"
                        ));
                    }
                    st.last_schedule_time = Some(crate::backup::rfc3339(at));
                    st.next_schedule_time = Some(crate::backup::rfc3339(next));
                }
                Ok(Decision::Wait { next }) => {
                    st.next_schedule_time = Some(crate::backup::rfc3339(next));
                }
                Ok(Decision::Suspended) => st.next_schedule_time = None,
                Err(why) => {
                    if self.events.back().is_none_or(|e| !e.contains(&why)) {
                        self.event(format!("ScheduledBackup {name}: {why}"));
                    }
                }
            }
            if Some(&st) != before.as_ref() {
                st.last_check_time = Some(crate::backup::rfc3339(now_ms));
                sb.status = Some(st);
                super::objects::write_status(&path, &sb);
            }
        }
    }

    /// One step of one Backup: refused, waiting, started on the chosen instance, or
    /// followed through its instance manager.
    async fn run_backup(
        &mut self,
        backup: &cnpg_core::api::backup::Backup,
        st: &mut cnpg_core::api::backup::BackupStatus,
        store: Option<&cnpg_core::api::barman::BarmanObjectStoreConfiguration>,
        archiving: Option<&cnpg_core::backup::ArchivingCondition>,
        observed: &Observed,
    ) {
        use crate::backup as b;
        let name = backup.metadata.name.clone().unwrap_or_default();
        if let Some(why) = b::refusal(backup, store) {
            self.event(format!("Backup {name} failed: {why}"));
            b::fail(st, why);
            return;
        }
        let Some(store) = store else { return };
        let instance = match b::instance(st) {
            Some(i) => i,
            // As upstream: a backup is of no use without the WAL that makes it
            // consistent, so none starts while archiving fails.
            None if archiving.is_some_and(|a| !a.ok) => {
                let why = archiving.map(|a| a.message.clone()).unwrap_or_default();
                if b::wait_for_archiving(st, &why) {
                    self.event(format!(
                        "Backup {name} waits: WAL archiving is failing ({why})"
                    ));
                }
                return;
            }
            None => {
                let statuses: Vec<InstanceStatus> = observed
                    .instances
                    .iter()
                    .map(|i| i.status.clone())
                    .collect();
                let target = self.manifest.spec.backup.as_ref().map(|b| b.target);
                match cnpg_core::backup::choose(
                    &self.cluster,
                    b::prefer_standby(backup, target),
                    self.state.current_primary.as_deref(),
                    &statuses,
                ) {
                    Ok(c) => {
                        self.event(format!(
                            "Backup {name} starting on {}: {}",
                            c.instance, c.reason
                        ));
                        b::start(st, backup, store, &self.cluster, &c);
                        c.instance
                    }
                    Err(why) => {
                        b::wait_for_instance(st, &why);
                        return;
                    }
                }
            }
        };
        let Some(sp) = self.ports.instances.get(&instance).map(|(_, sp)| *sp) else {
            return;
        };
        // Asking again for the same name returns the one already started.
        let answer = cnpg_instance::http::post_authorized(
            "127.0.0.1",
            sp,
            "/pg/backup",
            Duration::from_secs(2),
            Some(self.status_token.as_str()),
            b::request(backup),
        )
        .await;
        match b::answer(&instance, answer) {
            Ok(Some(info)) => {
                if let Some(e) = b::follow(st, &info, &name) {
                    self.event(e);
                }
            }
            Err(b::Answer::Retry(why)) if b::never_answered(st, jiff::Timestamp::now()) => {
                let why = format!(
                    "{instance} never answered in {} s: {why}",
                    b::NEVER_ANSWERED.as_secs()
                );
                self.event(format!("Backup {name} failed: {why}"));
                b::fail(st, why);
            }
            Ok(None) | Err(b::Answer::Retry(_)) => {}
            Err(b::Answer::Failed(why)) => {
                self.event(format!("Backup {name} failed: {why}"));
                b::fail(st, why);
            }
        }
    }

    fn endpoint(&self, name: &str) -> Option<SocketAddr> {
        self.ports
            .instances
            .get(name)
            .map(|(p, _)| SocketAddr::from(([127, 0, 0, 1], *p)))
    }

    fn update_routes(&mut self) {
        let alive = |n: &String| self.children.contains_key(n) || self.adopted.contains_key(n);
        let pick = |want: &dyn Fn(Role) -> bool| -> Vec<(String, SocketAddr)> {
            self.roles
                .iter()
                .filter(|(n, role)| want(**role) && alive(n))
                .filter_map(|(n, _)| self.endpoint(n).map(|a| (n.clone(), a)))
                .collect()
        };
        let rw = pick(&|r| r == Role::Primary).into_iter().next();
        let ro = pick(&|r| r == Role::Replica);
        let all = pick(&|r| r != Role::Unhealthy);
        // Standbys follow the current primary through a switchover (its shutdown
        // checkpoint must reach the target) and are cut loose once a failover begins.
        let replication = self
            .state
            .current_primary
            .clone()
            .filter(|_| self.state.target_primary.as_deref() != Some(cnpg_core::naming::PENDING))
            .filter(|p| alive(p))
            .and_then(|p| self.endpoint(&p).map(|a| (p, a)));
        self.routes.set(rw, ro, all, replication);
    }

    fn write_view(&mut self, policy: &Policy) {
        let fenced = match &policy.fencing {
            Fencing::None => vec![],
            Fencing::All => vec!["*".into()],
            Fencing::Instances(s) => s.iter().cloned().collect(),
        };
        let pg = self.manifest.spec.postgresql.as_ref();
        // All instances share this machine's file system: a tablespace lives inside each
        // one's PGDATA (in place), where a path outside could only be one instance's.
        let tablespaces = self.manifest.tablespaces(|_| String::new());
        let view = ViewData {
            current_primary: None, // published by the instance managers themselves
            target_primary: self.state.target_primary.clone(),
            fenced,
            primary_endpoint: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: self.ports.replication,
            }),
            synchronous_standby_names: self.sync_value.clone(),
            instances: self.instances(),
            endpoints: self
                .ports
                .instances
                .iter()
                .map(|(n, (p, _))| {
                    (
                        n.clone(),
                        Endpoint {
                            host: "127.0.0.1".into(),
                            port: *p,
                        },
                    )
                })
                .collect(),
            parameters: self.manifest.instance_parameters(&tablespaces),
            pg_hba: pg.map(|p| p.pg_hba.clone()).unwrap_or_default(),
            pg_ident: pg.map(|p| p.pg_ident.clone()).unwrap_or_default(),
            superuser_access: Some(self.manifest.spec.enable_superuser_access.unwrap_or(false)),
            restart: self.restart.clone(),
            reload: self.reload.clone(),
            backups: self.backup_summary.clone().unwrap_or_default(),
            pooler_integration: !self.poolers.lines().is_empty(),
            managed_roles: self
                .manifest
                .spec
                .managed
                .as_ref()
                .map(|m| m.roles.clone())
                .unwrap_or_default(),
            role_passwords_applied: self
                .managed_roles
                .as_ref()
                .map(|m| m.password_status.clone())
                .unwrap_or_default(),
            databases: self.databases.clone(),
            tablespaces,
        };
        let text = serde_json::to_string_pretty(&view).expect("view serializes");
        if text != self.last_view && write_atomically(&self.layout.view(), &text).is_ok() {
            self.last_view = text;
        }
    }

    fn write_status(
        &self,
        phase: &cnpg_core::phase::ClusterPhase,
        reason: &str,
        observed: &Observed,
    ) {
        let status = StatusFile {
            state: self.state.clone(),
            phase: phase.as_str().to_owned(),
            phase_reason: reason.to_owned(),
            instances: observed
                .instances
                .iter()
                .map(|i| InstanceLine {
                    name: i.name.clone(),
                    role: self
                        .roles
                        .get(&i.name)
                        .map(|r| r.as_str().to_owned())
                        .unwrap_or_default(),
                    running: i.running,
                    status: i.status.clone(),
                })
                .collect(),
            last_election: self.last_election.clone(),
            backups: self.backup_summary.clone(),
            recovery: self.recovery_progress(),
            poolers: self.poolers.lines(),
            managed_roles_status: self.managed_roles.clone(),
            tablespaces_status: self.tablespaces.clone(),
            events: self.events.iter().cloned().collect(),
            ports: self.ports.clone(),
            operator_pid: std::process::id(),
        };
        let _ = write_atomically(
            &self.layout.status(),
            &serde_json::to_string_pretty(&status).expect("status serializes"),
        );
    }

    fn instance_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.opts.instance_bin);
        if let Some(b) = &self.opts.pg_bin {
            cmd.arg("--pg-bin").arg(b);
        }
        cmd.args(args).stdin(Stdio::null()).env("RUST_LOG", "info");
        cmd
    }

    fn ports_for(&mut self, name: &str) -> Result<(u16, u16), LocalError> {
        if let Some(p) = self.ports.instances.get(name) {
            return Ok(*p);
        }
        let p = (free_port()?, free_port()?);
        self.ports.instances.insert(name.to_owned(), p);
        self.save_ports()?;
        Ok(p)
    }

    async fn bootstrap(&mut self, name: &str, bootstrap: &Bootstrap) -> Result<(), LocalError> {
        self.ports_for(name)?;
        let data = self
            .layout
            .instance(name)
            .join("data")
            .display()
            .to_string();
        let secrets = self.layout.secrets().display().to_string();
        let mut args = vec![
            "--pgdata",
            data.as_str(),
            "--cluster",
            self.cluster.as_str(),
            "--name",
            name,
            "--secrets",
            secrets.as_str(),
        ];
        let source_port;
        let recovering =
            matches!(bootstrap, Bootstrap::Initdb) && crate::recovery::recovering(&self.manifest);
        let recovery_args;
        let sub = match bootstrap {
            Bootstrap::Initdb if recovering => {
                if self.recovery_failed.is_some() {
                    // The same recovery would fail the same way: the status says why.
                    return Ok(());
                }
                recovery_args = self.recovery_args()?;
                args.extend(recovery_args.iter().map(String::as_str));
                "recover"
            }
            Bootstrap::Initdb => "initdb",
            Bootstrap::Join { source } => {
                source_port = self
                    .ports
                    .instances
                    .get(source)
                    .map(|p| p.0.to_string())
                    .ok_or_else(|| LocalError::Other(format!("no port known for {source}")))?;
                args.extend(["--source-port", source_port.as_str()]);
                "join"
            }
        };
        let mut full = vec![sub];
        full.extend(args);
        let dir = self.layout.instance(name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::write(dir.join(CREATING), sub).map_err(io(&dir.join(CREATING)))?;
        let child = self
            .instance_command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_file(dir.join(CREATING));
                LocalError::Other(format!(
                    "cannot run {}: {e}",
                    self.opts.instance_bin.display()
                ))
            })?;
        let pid = child.id().map(|p| p as i32);
        // Its pid, for an operator that finds the marker after a restart.
        if let Some(p) = pid {
            let _ = std::fs::write(dir.join(CREATING), format!("{sub} {p}"));
        }
        self.creating.insert(
            name.to_owned(),
            Creation {
                sub,
                recovering,
                pid,
                done: tokio::spawn(child.wait_with_output()),
            },
        );
        Ok(())
    }

    /// Takes in the creations that ended: a made instance's manager starts, a failed one
    /// says why (a failed recovery is not tried again).
    async fn creations_ended(&mut self) {
        let ended: Vec<String> = self
            .creating
            .iter()
            .filter(|(_, c)| c.done.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            let Some(c) = self.creating.remove(&name) else {
                continue;
            };
            let dir = self.layout.instance(&name);
            let _ = std::fs::remove_file(dir.join(CREATING));
            let out = match c.done.await {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => {
                    self.event(format!("{} of {name} failed: {e}", c.sub));
                    continue;
                }
                Err(e) => {
                    self.event(format!("{} of {name} failed: {e}", c.sub));
                    continue;
                }
            };
            if !out.status.success() {
                let why = format!(
                    "{} of {name} failed: {}",
                    c.sub,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                if c.recovering {
                    self.recovery_failed = Some(why.clone());
                }
                tracing::warn!("{why}");
                self.event(why);
                continue;
            }
            if c.recovering {
                self.event(format!(
                    "{name} {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ));
            }
            self.event(format!("{name} created ({})", c.sub));
            if let Err(e) = self.spawn(&name) {
                self.event(format!("{name}: {e}"));
            }
        }
    }

    /// Discards what creations of an earlier operator left half made (their directory
    /// still holds the marker): once, at start, as only a stopped operator leaves them.
    fn discard_abandoned_creations(&mut self) {
        for d in std::fs::read_dir(self.layout.root.join("instances"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = d.file_name().to_string_lossy().into_owned();
            if d.path().join(CREATING).exists() && !self.creating.contains_key(&name) {
                // Its process may outlive the operator that started it: it must not go on
                // writing (or cleaning up) where the instance will be made again. Its
                // command line names this directory, so a reused pid is left alone.
                let marker = std::fs::read_to_string(d.path().join(CREATING)).unwrap_or_default();
                if let Some(pid) = marker
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<i32>().ok())
                    .filter(|pid| {
                        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                            String::from_utf8_lossy(&c).contains(&*d.path().to_string_lossy())
                        })
                    })
                {
                    super::process::signal_instance(pid, nix::sys::signal::Signal::SIGKILL);
                }
                self.event(format!(
                    "{name} was being created when the operator stopped: discarding it to create it again"
                ));
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }

    /// Stops the creation of `name`, if one runs, and discards what it made.
    async fn abandon_creation(&mut self, name: &str) {
        if let Some(c) = self.creating.remove(name) {
            if let Some(pid) = c.pid {
                super::process::signal_instance(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = c.done.await;
            let _ = std::fs::remove_dir_all(self.layout.instance(name));
            self.event(format!(
                "{} of {name} stopped; what it made is discarded",
                c.sub
            ));
        }
    }

    /// Where the recovery that makes the first instance stands (from the file that
    /// `cnpg-instance recover` keeps beside its PGDATA), when the cluster is made so.
    fn recovery_progress(&self) -> Option<cnpg_instance::recovery::Progress> {
        self.manifest.spec.bootstrap.as_ref()?.recovery.as_ref()?;
        self.layout.recovery_progress()
    }

    /// What `cnpg-instance recover` needs beyond the instance: the source's store
    /// configuration (written among the secrets, PostgreSQL's user's, as `archive.json`
    /// is), the backup and the target, the application database and owner.
    fn recovery_args(&self) -> Result<Vec<String>, LocalError> {
        let Some(rec) = self
            .manifest
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.recovery.as_ref())
        else {
            return Ok(vec![]);
        };
        let secrets = self.layout.secrets();
        let (json, ca) = (
            secrets.join("recovery-source.json"),
            secrets.join("recovery-source-ca.crt"),
        );
        let backup = match &rec.backup {
            Some(b) => Some(self.find_backup(&b.name)?),
            None => None,
        };
        let user = manifest_secrets(&self.layout.manifest());
        let made =
            crate::kube::secrets::recovery_config(&self.manifest, backup.as_ref(), &user, &ca)
                .map_err(|e| LocalError::Invalid(e.to_string()))?;
        let Some((config, ca_pem, backup_id)) = made else {
            return Err(LocalError::Invalid(
                "spec.bootstrap.recovery: say what to recover from: backup or source".into(),
            ));
        };
        std::fs::create_dir_all(&secrets).map_err(io(&secrets))?;
        let run_as = cnpg_instance::runas::RunAs::detect().ok().flatten();
        let text = serde_json::to_string(&config).map_err(|e| LocalError::Other(e.to_string()))?;
        cnpg_instance::tls::write_private(&json, &text, run_as)
            .map_err(|e| LocalError::Other(e.to_string()))?;
        if let Some(pem) = ca_pem {
            cnpg_instance::tls::write_private(&ca, &pem, run_as)
                .map_err(|e| LocalError::Other(e.to_string()))?;
        }
        Ok(crate::recovery::recover_args(
            &self.manifest,
            &json.display().to_string(),
            backup_id,
        ))
    }

    /// The `Backup` named `name` among the local clusters of this state directory (each
    /// keeps its Backups in its own `backups/`).
    fn find_backup(&self, name: &str) -> Result<cnpg_core::api::backup::Backup, LocalError> {
        let state = self.layout.root.parent().unwrap_or(&self.layout.root);
        let mut found = Vec::new();
        if let Ok(clusters) = std::fs::read_dir(state) {
            for c in clusters.flatten() {
                let file = c.path().join("backups").join(format!("{name}.json"));
                if let Ok(text) = std::fs::read_to_string(&file)
                    && let Ok(b) = serde_json::from_str::<cnpg_core::api::backup::Backup>(&text)
                {
                    found.push(b);
                }
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(LocalError::Invalid(format!(
                "spec.bootstrap.recovery.backup.name: no Backup {name:?} in any local cluster of {} \
                 (each keeps its Backups in CLUSTER/backups; kubectl-cnpg backup CLUSTER makes one)",
                state.display()
            ))),
            n => Err(LocalError::Invalid(format!(
                "spec.bootstrap.recovery.backup.name: {n} local clusters have a Backup {name:?}; \
                 recover with source (an externalClusters entry with that cluster's \
                 barmanObjectStore) and recoveryTarget.backupID instead"
            ))),
        }
    }

    fn spawn(&mut self, name: &str) -> Result<(), LocalError> {
        if self.children.contains_key(name) || self.adopted.contains_key(name) {
            return Ok(());
        }
        let (pg, st) = self.ports_for(name)?;
        let dir = self.layout.instance(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("manager.log"))
            .map_err(io(&dir))?;
        let log2 = log.try_clone().map_err(io(&dir))?;
        let (data, secrets, view, pg_s, st_s) = (
            dir.join("data").display().to_string(),
            self.layout.secrets().display().to_string(),
            self.layout.view().display().to_string(),
            pg.to_string(),
            st.to_string(),
        );
        // The view must exist before the instance reads it.
        let (policy, _) = self.policy();
        self.write_view(&policy);
        let mut cmd = self.instance_command(&[
            "run",
            "--pgdata",
            &data,
            "--cluster",
            &self.cluster,
            "--name",
            name,
            "--secrets",
            &secrets,
            "--port",
            &pg_s,
            "--status-port",
            &st_s,
            "--cluster-status",
            &view,
            "--smart-shutdown-timeout",
            "5",
            "--stop-timeout",
            "30",
        ]);
        // Own process group: a Ctrl-C in the terminal reaches the operator, which stops the
        // instances in order, not every process at once.
        cmd.stdout(log).stderr(log2).process_group(0);
        let child = cmd.spawn().map_err(|e| {
            LocalError::Other(format!(
                "cannot start {}: {e}",
                self.opts.instance_bin.display()
            ))
        })?;
        self.children.insert(name.to_owned(), child);
        self.spawned_at.insert(name.to_owned(), now().millis());
        Ok(())
    }

    /// SIGKILL to every process of the instance (its manager, the postmaster, each
    /// backend), stopped by SIGSTOP or not. What a node's watchdog does; its storage stays,
    /// and the next loop starts its manager again, which rejoins as a replica.
    async fn kill_instance(&mut self, name: &str) {
        let pid = match (self.children.get(name), self.adopted.get(name)) {
            (Some(c), _) => c.id().map(|p| p as i32),
            (None, Some(p)) => Some(*p),
            _ => None,
        };
        if let Some(pid) = pid {
            super::process::signal_instance(pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.adopted.remove(name);
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.wait().await;
        }
    }

    async fn stop_instance(&mut self, name: &str) {
        if let Some(pid) = self.adopted.remove(name) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = std::time::Instant::now();
            while nix::sys::signal::kill(pid, None).is_ok()
                && start.elapsed() < Duration::from_secs(45)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return;
        }
        if let Some(mut child) = self.children.remove(name) {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(45), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    async fn apply(&mut self, action: Action, _observed: &Observed) -> Result<(), LocalError> {
        match action {
            Action::CreateInstance { name, .. } if self.creating.contains_key(&name) => Ok(()),
            Action::CreateInstance { name, bootstrap } => self.bootstrap(&name, &bootstrap).await,
            Action::StartInstance { name } if self.creating.contains_key(&name) => Ok(()),
            Action::StartInstance { name } => self.spawn(&name),
            Action::StopInstance { name } => {
                self.abandon_creation(&name).await;
                self.stop_instance(&name).await;
                Ok(())
            }
            Action::DeleteInstance { name } if self.creating.contains_key(&name) => {
                self.abandon_creation(&name).await;
                self.roles.remove(&name);
                self.ports.instances.remove(&name);
                self.save_ports()
            }
            Action::DeleteInstance { name } => {
                self.stop_instance(&name).await;
                self.roles.remove(&name);
                self.ports.instances.remove(&name);
                self.save_ports()?;
                let dir = self.layout.instance(&name);
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                self.event(format!("{name} deleted with its data"));
                Ok(())
            }
            Action::SetRole { name, role } => {
                self.roles.insert(name, role);
                self.update_routes();
                Ok(())
            }
            Action::ApplySyncStandbyNames { value, .. } => {
                self.sync_value = value;
                Ok(())
            }
            Action::RestartInPlace { name } => {
                self.restart = Some(format!("{name}@{}", now().millis()));
                Ok(())
            }
            Action::KillInstance { name, reason } => {
                self.abandon_creation(&name).await;
                self.kill_instance(&name).await;
                self.event(format!("KillInstance: {reason}"));
                Ok(())
            }
        }
    }

    async fn shutdown(&mut self) {
        self.poolers.stop_all().await;
        let made: Vec<String> = self.creating.keys().cloned().collect();
        for n in made {
            self.abandon_creation(&n).await;
        }
        let mut names: Vec<String> = self.children.keys().cloned().collect();
        names.extend(self.adopted.keys().cloned());
        // Replicas first, the primary last, so nothing fails over on the way down.
        let primary = self.state.current_primary.clone();
        let mut order: Vec<String> = names
            .iter()
            .filter(|n| Some(*n) != primary.as_ref())
            .cloned()
            .collect();
        order.extend(names.into_iter().filter(|n| Some(n) == primary.as_ref()));
        for n in order {
            self.stop_instance(&n).await;
        }
        self.event("stopped; data kept".into());
    }
}
