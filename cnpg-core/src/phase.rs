//! The phases a `Cluster` goes through, with the exact strings CloudNativePG writes to
//! `status.phase`.
//!
//! Tools and dashboards match on these strings (`kubectl get cluster` shows them in the
//! `STATUS` column), so they must be byte-for-byte upstream's.

use std::fmt;
use std::str::FromStr;

/// A phase of a `Cluster`, as written to `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterPhase {
    /// Every instance is up and the cluster needs nothing.
    Healthy,
    /// The first primary is being created.
    FirstPrimary,
    /// A replica is being cloned.
    CreatingReplica,
    /// A planned change of primary is under way.
    Switchover,
    /// The primary failed and a replica is being promoted.
    FailOver,
    /// A rolling update is under way.
    Upgrade,
    /// A major-version upgrade is under way.
    MajorUpgrade,
    /// A rolling update waits for its turn.
    UpgradeDelayed,
    /// A supervised update waits for the user to switch over or restart the primary.
    WaitingForUser,
    /// The primary is restarting in place (no switchover).
    InplacePrimaryRestart,
    /// The primary pod is being recreated without a switchover.
    InplaceDeletePrimaryRestart,
    /// A plugin the cluster needs is unknown.
    UnknownPlugin,
    /// Talking to a plugin failed.
    FailurePlugin,
    /// The image catalog is incomplete or invalid.
    ImageCatalogError,
    /// The cluster cannot heal itself.
    Unrecoverable,
    /// The binary for an architecture is missing for an online upgrade.
    ArchitectureBinaryMissing,
    /// Instances are not yet active.
    WaitingForInstancesToBeActive,
    /// The instance managers are being upgraded online.
    OnlineUpgrading,
    /// A new configuration is being applied.
    ApplyingConfiguration,
    /// A replica cluster is being promoted to primary cluster.
    ReplicaClusterPromotion,
    /// Objects the cluster needs could not be created.
    CannotCreateClusterObjects,
    /// The manifest is invalid.
    DefinitionInvalid,
    /// No ready instance answered the status request.
    InstanceStatusExtractionError,
    /// An instance has no space left for WAL: failover is blocked.
    NotEnoughDiskSpace,
}

impl ClusterPhase {
    /// Every phase, in declaration order.
    pub const ALL: [ClusterPhase; 24] = [
        Self::Healthy,
        Self::FirstPrimary,
        Self::CreatingReplica,
        Self::Switchover,
        Self::FailOver,
        Self::Upgrade,
        Self::MajorUpgrade,
        Self::UpgradeDelayed,
        Self::WaitingForUser,
        Self::InplacePrimaryRestart,
        Self::InplaceDeletePrimaryRestart,
        Self::UnknownPlugin,
        Self::FailurePlugin,
        Self::ImageCatalogError,
        Self::Unrecoverable,
        Self::ArchitectureBinaryMissing,
        Self::WaitingForInstancesToBeActive,
        Self::OnlineUpgrading,
        Self::ApplyingConfiguration,
        Self::ReplicaClusterPromotion,
        Self::CannotCreateClusterObjects,
        Self::DefinitionInvalid,
        Self::InstanceStatusExtractionError,
        Self::NotEnoughDiskSpace,
    ];

    /// The exact string upstream writes to `status.phase`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Cluster in healthy state",
            Self::FirstPrimary => "Setting up primary",
            Self::CreatingReplica => "Creating a new replica",
            Self::Switchover => "Switchover in progress",
            Self::FailOver => "Failing over",
            Self::Upgrade => "Upgrading cluster",
            Self::MajorUpgrade => "Upgrading Postgres major version",
            Self::UpgradeDelayed => "Cluster upgrade delayed",
            Self::WaitingForUser => "Waiting for user action",
            Self::InplacePrimaryRestart => "Primary instance is being restarted in-place",
            Self::InplaceDeletePrimaryRestart => {
                "Primary instance is being restarted without a switchover"
            }
            Self::UnknownPlugin => {
                "Cluster cannot proceed to reconciliation due to an unknown plugin being required"
            }
            Self::FailurePlugin => {
                "Cluster cannot proceed to reconciliation due to an error while interacting with plugins"
            }
            Self::ImageCatalogError => "Cluster has incomplete or invalid image catalog",
            Self::Unrecoverable => "Cluster is unrecoverable and needs manual intervention",
            Self::ArchitectureBinaryMissing => {
                "Cluster cannot execute instance online upgrade due to missing architecture binary"
            }
            Self::WaitingForInstancesToBeActive => "Waiting for the instances to become active",
            Self::OnlineUpgrading => "Online upgrade in progress",
            Self::ApplyingConfiguration => "Applying configuration",
            Self::ReplicaClusterPromotion => "Promoting to primary cluster",
            Self::CannotCreateClusterObjects => "Unable to create required cluster objects",
            Self::DefinitionInvalid => "Invalid cluster definition",
            Self::InstanceStatusExtractionError => {
                "Instance Status Extraction Error: HTTP communication issue"
            }
            Self::NotEnoughDiskSpace => "Not enough disk space",
        }
    }

    /// Whether the `Ready` condition is true in this phase (only when healthy).
    pub const fn is_ready(self) -> bool {
        matches!(self, Self::Healthy)
    }
}

impl fmt::Display for ClusterPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not one of upstream's phase strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cluster phase {0:?}")]
pub struct UnknownPhase(pub String);

impl FromStr for ClusterPhase {
    type Err = UnknownPhase;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPhase(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_strings_round_trip_and_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for p in ClusterPhase::ALL {
            assert!(seen.insert(p.as_str()), "duplicate phase string {}", p);
            assert_eq!(p.as_str().parse::<ClusterPhase>(), Ok(p));
        }
        assert!("healthy".parse::<ClusterPhase>().is_err());
    }

    #[test]
    fn exact_upstream_strings() {
        assert_eq!(ClusterPhase::Healthy.as_str(), "Cluster in healthy state");
        assert_eq!(ClusterPhase::FailOver.as_str(), "Failing over");
        assert_eq!(ClusterPhase::Switchover.as_str(), "Switchover in progress");
        assert!(ClusterPhase::Healthy.is_ready());
        assert!(!ClusterPhase::FailOver.is_ready());
    }
}
