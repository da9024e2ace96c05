//! The one interface every cluster command is written against, and how the plugin picks
//! the cluster it means.
//!
//! A command such as `fencing on pg pg-2` is the same decision wherever the cluster runs —
//! read the cluster's fencing annotation, fence one more instance, write it back — and only
//! the reading and writing differ. [`ClusterAccess`] is that difference and nothing more; a
//! local cluster (`on_local::LocalAccess`) and a Cluster on Kubernetes
//! (`on_kube::KubeAccess`) implement it, and `control` and `status` hold the commands.
//! This file depends on none of them.

use async_trait::async_trait;
use cnpg_core::status::InstanceStatus;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// A plugin command failed; the message says why and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The kubeconfig could not be used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// The API refused.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The request makes no sense for this cluster (unknown instance, the primary, ...), or
    /// the cluster is not there.
    #[error("{0}")]
    Usage(String),
    /// A file or the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the commands need to know about a cluster before they act.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The cluster's name.
    pub name: String,
    /// Its instances.
    pub instances: Vec<String>,
    /// The primary now.
    pub current_primary: Option<String>,
    /// The primary being switched to (equal to the current one when none is).
    pub target_primary: Option<String>,
    /// The Cluster's annotations (fencing, hibernation, restarts).
    pub annotations: BTreeMap<String, String>,
}

impl Facts {
    /// An error naming the instances there are, when `instance` is not one of them.
    pub fn require_instance(&self, instance: &str) -> Result<(), PluginError> {
        if self.instances.iter().any(|i| i == instance) {
            return Ok(());
        }
        Err(PluginError::Usage(format!(
            "{instance} is not an instance of {} (instances: {})",
            self.name,
            self.instances.join(", ")
        )))
    }

    /// Whether `instance` is the primary, or the one being switched to.
    pub fn is_primary(&self, instance: &str) -> bool {
        self.current_primary.as_deref() == Some(instance)
            || self.target_primary.as_deref() == Some(instance)
    }
}

/// Reading a cluster and asking its operator for something, wherever the cluster runs.
/// (Not `Send`: the plugin runs each command on a current-thread runtime.)
///
/// Like upstream's plugin, requests change what the operator reads (annotations, the
/// target primary, request files) and let it act; only destroying an instance and
/// restarting a replica remove anything themselves.
#[async_trait(?Send)]
pub trait ClusterAccess {
    /// The facts the commands check before acting.
    async fn facts(&self) -> Result<Facts, PluginError>;
    /// Sets (or, with `None`, removes) an annotation of the Cluster.
    async fn annotate(&self, key: &str, value: Option<String>) -> Result<(), PluginError>;
    /// Asks for a switchover to `instance`.
    async fn switchover(&self, instance: &str) -> Result<(), PluginError>;
    /// Restarts one instance: the primary in place (no failover), a replica by restarting
    /// its instance; returns what happens, for the user.
    async fn restart_instance(&self, instance: &str, primary: bool) -> Result<String, PluginError>;
    /// Deletes a replica and its storage; the operator makes a new one from the primary.
    async fn destroy_instance(&self, instance: &str) -> Result<(), PluginError>;
    /// Everything `status` shows.
    async fn status(&self) -> Result<StatusReport, PluginError>;
    /// Collects the manifest, status and logs (never secrets) into `output` or `out`.
    async fn report(&self, output: Option<PathBuf>, out: &mut dyn Write)
    -> Result<(), PluginError>;
    /// Creates a `Backup` for the operator to run.
    async fn create_backup(
        &self,
        backup: &cnpg_core::api::backup::Backup,
    ) -> Result<(), PluginError>;
    /// A `Backup` as the operator last wrote it.
    async fn read_backup(
        &self,
        name: &str,
    ) -> Result<Option<cnpg_core::api::backup::Backup>, PluginError>;
}

/// Everything `status` shows; what a platform does not know stays empty and is not shown.
#[derive(Debug, Clone, Default)]
pub struct StatusReport {
    /// The cluster's name (`namespace/name` on Kubernetes).
    pub name: String,
    /// The PostgreSQL image (Kubernetes).
    pub image: Option<String>,
    /// The primary now.
    pub current_primary: Option<String>,
    /// The primary being switched to.
    pub target_primary: Option<String>,
    /// The last election's explanation of its choice.
    pub why_primary: Option<String>,
    /// The phase (upstream's strings) and why.
    pub phase: String,
    /// Why the cluster is in that phase.
    pub phase_reason: String,
    /// How many instances the cluster has.
    pub instances: usize,
    /// How many are ready.
    pub ready: usize,
    /// Where clients connect (local services).
    pub services: Option<String>,
    /// Where each instance's metrics are scraped (local instances: `name URL`).
    pub metrics: Vec<String>,
    /// Certificate Secrets and when they expire.
    pub certificates: BTreeMap<String, String>,
    /// Each instance's own report (`/pg/status`), or why it could not be read.
    pub reports: Vec<InstanceStatus>,
    /// Pods: name, role label, ready, node (Kubernetes).
    pub pods: Vec<PodLine>,
    /// Recent events, oldest first, and where more are.
    pub events: Vec<String>,
    /// Where the events come from.
    pub events_source: Option<String>,
    /// The backups the cluster's status records, when it archives to an object store
    /// (upstream's "Continuous Backup status" section, with the primary's archiver).
    pub backups: Option<cnpg_core::backup::Summary>,
    /// How the recovery from backups that made the first instance went, where the
    /// cluster was made so.
    pub recovery: Option<cnpg_instance::recovery::Progress>,
    /// The poolers in front of the cluster: a line each (name, type, address, processes
    /// ready, phase).
    pub poolers: Vec<String>,
}

/// One Pod in `status`.
#[derive(Debug, Clone, Default)]
pub struct PodLine {
    /// The Pod.
    pub name: String,
    /// Its `cnpg.io/instanceRole` label.
    pub role: String,
    /// Ready.
    pub ready: bool,
    /// The node it is bound to.
    pub node: String,
}
