//! The few fields of a Cluster that HA decisions depend on, as a small plain value, so the
//! decisions compile without kube and any controller can build one from its own data.
//! (`api::Cluster::policy()` builds it from a manifest.)

use crate::fencing::Fencing;
use crate::sync::SyncPolicy;
use std::time::Duration;

/// When the primary is updated in a rolling update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpdateStrategy {
    /// Right after the replicas.
    #[default]
    Unsupervised,
    /// When the user says so (`kubectl cnpg promote` or `restart`).
    Supervised,
}

/// How the primary is updated in a rolling update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpdateMethod {
    /// Restart it (in place when possible).
    #[default]
    Restart,
    /// Switch over to the most aligned replica first.
    Switchover,
}

/// What the HA decisions need to know about a cluster's specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Cluster name (instances are `<cluster>-<serial>`).
    pub cluster: String,
    /// Desired number of instances.
    pub instances: u32,
    /// Synchronous replication.
    pub sync: SyncPolicy,
    /// Wait this long after the primary is seen failing before failing over.
    pub failover_delay: Duration,
    /// Rolling updates: when the primary goes.
    pub primary_update_strategy: UpdateStrategy,
    /// Rolling updates: how the primary goes.
    pub primary_update_method: UpdateMethod,
    /// Fenced instances.
    pub fencing: Fencing,
    /// Hibernation requested (`cnpg.io/hibernation: on`).
    pub hibernation: bool,
    /// Reconciliation disabled (`cnpg.io/reconciliationLoop: disabled`).
    pub reconciliation_disabled: bool,
}

impl Policy {
    /// A policy with upstream's defaults: asynchronous, no delay, unsupervised restart.
    pub fn new(cluster: &str, instances: u32) -> Self {
        Policy {
            cluster: cluster.to_owned(),
            instances,
            sync: SyncPolicy::Async,
            failover_delay: Duration::ZERO,
            primary_update_strategy: UpdateStrategy::Unsupervised,
            primary_update_method: UpdateMethod::Restart,
            fencing: Fencing::None,
            hibernation: false,
            reconciliation_disabled: false,
        }
    }
}
