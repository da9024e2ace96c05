//! The few fields of a Cluster that HA decisions depend on, as a small plain value, so the
//! decisions compile without kube and any controller can build one from its own data.
//! (`api::Cluster::policy()` builds it from a manifest.)

use crate::fencing::Fencing;
use crate::sync::SyncPolicy;
use std::time::Duration;

/// The default [`Policy::crash_restart_bound`]: crash recovery of a busy instance takes a
/// fraction of a second to a few seconds here; a restart that takes longer than this is
/// treated as a failure.
pub const CRASH_RESTART_BOUND: Duration = Duration::from_secs(5);

/// Unexpected PostgreSQL exits within a minute that make a crash loop: the primary is
/// failed over at once rather than restarted in place again.
pub const CRASH_LOOP: u32 = 3;

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
    /// How long a primary whose instance manager restarts PostgreSQL in place after a
    /// crash gets before the operator fails over instead (when `failover_delay` is longer,
    /// that applies). A crash loop ([`CRASH_LOOP`] exits within a minute) is not waited for.
    pub crash_restart_bound: Duration,
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
            crash_restart_bound: CRASH_RESTART_BOUND,
            primary_update_strategy: UpdateStrategy::Unsupervised,
            primary_update_method: UpdateMethod::Restart,
            fencing: Fencing::None,
            hibernation: false,
            reconciliation_disabled: false,
        }
    }
}
