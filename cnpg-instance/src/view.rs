//! What the cluster status says, as the instance manager sees it: who is (and should be)
//! primary, whether this instance is fenced, where the primary is, and the
//! `synchronous_standby_names` the operator decided. On Kubernetes this is a watch of the
//! Cluster; locally it is a file the operator writes, or shared memory in tests.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A host and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host or IP.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// The cluster status, as one instance needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewData {
    /// `status.currentPrimary`.
    #[serde(default)]
    pub current_primary: Option<String>,
    /// `status.targetPrimary`.
    #[serde(default)]
    pub target_primary: Option<String>,
    /// Fenced instances.
    #[serde(default)]
    pub fenced: Vec<String>,
    /// Where standbys stream from (the primary, or the `-rw` endpoint).
    #[serde(default)]
    pub primary_endpoint: Option<Endpoint>,
    /// `synchronous_standby_names` to apply.
    #[serde(default)]
    pub synchronous_standby_names: String,
    /// Every instance of the cluster (the primary keeps a replication slot for the others).
    #[serde(default)]
    pub instances: Vec<String>,
    /// Where each instance listens, for when no `-rw` endpoint is given.
    #[serde(default)]
    pub endpoints: std::collections::BTreeMap<String, Endpoint>,
    /// PostgreSQL parameters from the cluster spec (over the command line's).
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
    /// The user's `pg_hba.conf` lines (`spec.postgresql.pg_hba`), between the fixed rules
    /// and the final password rule.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// The user's `pg_ident.conf` lines (`spec.postgresql.pg_ident`).
    #[serde(default)]
    pub pg_ident: Vec<String>,
    /// `spec.enableSuperuserAccess`: whether `postgres` has a password (logins over the
    /// network); `None` leaves it as it is.
    #[serde(default)]
    pub superuser_access: Option<bool>,
    /// A restart request: when this changes, the instance restarts PostgreSQL in place
    /// (a parameter that needs a restart, or `kubectl cnpg restart`).
    #[serde(default)]
    pub restart: Option<String>,
    /// A reload request: when this changes, the instance reloads its configuration.
    #[serde(default)]
    pub reload: Option<String>,
    /// The cluster's backups as its status sums them up (first point of recoverability,
    /// last successful and last failed backup): the instance exports them as metrics.
    #[serde(default)]
    pub backups: cnpg_core::backup::Summary,
    /// A pooler serves the cluster: the primary keeps what PgBouncer's `auth_query`
    /// needs (the `cnpg_pooler_pgbouncer` role and, in every database, `user_search`).
    #[serde(default)]
    pub pooler_integration: bool,
    /// `spec.managed.roles`: the primary makes PostgreSQL's roles match them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_roles: Vec<cnpg_core::roles::RoleConfiguration>,
    /// The role passwords already applied (`status.managedRolesStatus.passwordStatus`),
    /// so a new primary does not set them again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub role_passwords_applied: std::collections::BTreeMap<String, cnpg_core::roles::PasswordState>,
    /// The cluster's `Database` resources: the primary makes PostgreSQL's databases match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<cnpg_core::databases::Managed>,
    /// `spec.tablespaces`, placed where this platform keeps them: the primary makes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<cnpg_core::tablespaces::Tablespace>,
}

impl ViewData {
    /// Where standbys stream from: the `-rw` endpoint when given, else the current primary.
    pub fn upstream(&self) -> Option<Endpoint> {
        self.primary_endpoint.clone().or_else(|| {
            self.current_primary
                .as_ref()
                .and_then(|p| self.endpoints.get(p))
                .cloned()
        })
    }

    /// Where `instance` can be reached (its own endpoint, else the `-rw` endpoint).
    pub fn endpoint_of(&self, instance: &str) -> Option<Endpoint> {
        self.endpoints
            .get(instance)
            .cloned()
            .or_else(|| self.primary_endpoint.clone())
    }

    /// Whether `instance` is fenced (`*` fences all).
    pub fn is_fenced(&self, instance: &str) -> bool {
        self.fenced.iter().any(|f| f == instance || f == "*")
    }
}

/// Reading or writing the status failed.
#[derive(Debug, thiserror::Error)]
#[error("cluster status unavailable: {0}")]
pub struct ViewError(pub String);

/// The instance manager's window on the cluster status.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ClusterView: Send + Sync {
    /// The status now.
    async fn read(&self) -> Result<ViewData, ViewError>;
    /// Records that `instance` is now the primary (`status.currentPrimary`).
    async fn publish_current_primary(&self, instance: &str) -> Result<(), ViewError>;
    /// Takes (or renews) the primary lease for `instance` before it promotes itself or
    /// claims the primary role: `false` while another instance holds it. Views without a
    /// lease (local files, memory) always grant it: there the operator alone decides.
    async fn acquire_primary_lease(&self, instance: &str) -> Result<bool, ViewError> {
        let _ = instance;
        Ok(true)
    }
    /// After a pass over the `Database` resources on the primary: each one's status (on
    /// Kubernetes, written to the object, and its finalizer handled). Locally the
    /// operator reads them from the primary's status report instead.
    async fn publish_databases(
        &self,
        _pass: &[(
            cnpg_core::databases::Managed,
            cnpg_core::api::DatabaseStatus,
        )],
    ) -> Result<(), ViewError> {
        Ok(())
    }
    /// Gives the primary lease up if `instance` holds it, once its PostgreSQL is stopped
    /// and it is not the target: the promoted instance then takes it at once instead of
    /// waiting for it to expire. Views without a lease have nothing to do.
    async fn release_primary_lease(&self, instance: &str) -> Result<(), ViewError> {
        let _ = instance;
        Ok(())
    }
}

/// A status in shared memory (tests, embedding). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryView {
    inner: Arc<Mutex<ViewData>>,
    readable: Arc<Mutex<bool>>,
}

impl MemoryView {
    /// A view holding `data`.
    pub fn new(data: ViewData) -> Self {
        MemoryView {
            inner: Arc::new(Mutex::new(data)),
            readable: Arc::new(Mutex::new(true)),
        }
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut ViewData)) {
        f(&mut self.inner.lock().expect("view lock"));
    }

    /// A copy of the status.
    pub fn get(&self) -> ViewData {
        self.inner.lock().expect("view lock").clone()
    }

    /// Simulates losing (or regaining) access to the status.
    pub fn set_readable(&self, readable: bool) {
        *self.readable.lock().expect("view lock") = readable;
    }
}

#[async_trait]
impl ClusterView for MemoryView {
    async fn read(&self) -> Result<ViewData, ViewError> {
        if !*self.readable.lock().expect("view lock") {
            return Err(ViewError("unreachable (simulated)".into()));
        }
        Ok(self.get())
    }

    async fn publish_current_primary(&self, instance: &str) -> Result<(), ViewError> {
        if !*self.readable.lock().expect("view lock") {
            return Err(ViewError("unreachable (simulated)".into()));
        }
        self.update(|d| d.current_primary = Some(instance.to_owned()));
        Ok(())
    }
}

/// A status kept in a JSON file the operator replaces atomically (write + rename), with
/// `currentPrimary` published by the instance managers in a file of its own, so each file
/// has one writer and no update is ever lost between them.
#[derive(Debug, Clone)]
pub struct FileView {
    /// The status file (the operator writes it).
    pub path: PathBuf,
    /// The `currentPrimary` file (the promoted instance manager writes it).
    pub published: PathBuf,
}

/// The content of the `currentPrimary` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The instance that is primary now.
    pub current_primary: String,
}

impl FileView {
    /// The `currentPrimary` published, if any.
    pub fn published(path: &std::path::Path) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str::<Published>(&text)
            .ok()
            .map(|p| p.current_primary)
    }
}

/// Writes `text` to `path` atomically (a temp file in the same directory, then rename).
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[async_trait]
impl ClusterView for FileView {
    async fn read(&self) -> Result<ViewData, ViewError> {
        // A few kilobytes of a local file: read in place, cheaper than a trip through the
        // blocking pool.
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| ViewError(format!("{}: {e}", self.path.display())))?;
        let mut data: ViewData = serde_json::from_str(&text)
            .map_err(|e| ViewError(format!("{}: {e}", self.path.display())))?;
        if let Some(p) = Self::published(&self.published) {
            data.current_primary = Some(p);
        }
        Ok(data)
    }

    async fn publish_current_primary(&self, instance: &str) -> Result<(), ViewError> {
        let text = serde_json::to_string(&Published {
            current_primary: instance.to_owned(),
        })
        .expect("publication serializes");
        write_atomically(&self.published, &text)
            .map_err(|e| ViewError(format!("{}: {e}", self.published.display())))
    }
}
