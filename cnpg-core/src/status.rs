//! What the operator knows about each instance: the report of its instance manager
//! (`GET /pg/status`) plus what the platform says (is the pod ready?).
//!
//! This is the wire contract between operator and instance manager; its JSON field names
//! follow upstream's `PostgresqlStatus` so tools reading one read the other.

use crate::lsn::Lsn;
use serde::{Deserialize, Serialize};

/// One instance as observed in a reconcile loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance (pod) name.
    pub name: String,
    /// Set when the status could not be read (PostgreSQL down, instance unreachable), with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the platform considers the instance ready (kubelet readiness, or the local
    /// platform's own probe).
    #[serde(default)]
    pub is_pod_ready: bool,
    /// `NOT pg_is_in_recovery()`.
    #[serde(default)]
    pub is_primary: bool,
    /// Timeline of the instance.
    #[serde(default, rename = "timeLineID")]
    pub timeline: u32,
    /// `pg_current_wal_lsn()` on a primary.
    #[serde(default)]
    pub current_lsn: Lsn,
    /// `pg_last_wal_receive_lsn()` on a replica.
    #[serde(default)]
    pub received_lsn: Lsn,
    /// `pg_last_wal_replay_lsn()` on a replica.
    #[serde(default)]
    pub replay_lsn: Lsn,
    /// Whether a WAL receiver is streaming (`pg_stat_wal_receiver` not empty).
    #[serde(default)]
    pub is_wal_receiver_active: bool,
    /// Why a standby does not stream: its WAL receiver's last failure to reach the primary
    /// (a refused certificate, an unreachable host), from PostgreSQL's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_receiver_error: Option<String>,
    /// A parameter change waits for a restart.
    #[serde(default)]
    pub pending_restart: bool,
    /// The instance is restarting or upgrading on purpose: its failure is expected.
    #[serde(default)]
    pub might_be_unavailable: bool,
    /// The WAL volume has no room for two more segments.
    #[serde(default)]
    pub wal_disk_full: bool,
    /// PostgreSQL exited unexpectedly and its instance manager, alive, is restarting it
    /// in place: crash recovery keeps every acknowledged commit, so the operator gives it
    /// [`Policy::crash_restart_bound`](crate::policy::Policy::crash_restart_bound) before
    /// failing over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting_after_crash: bool,
    /// Unexpected PostgreSQL exits in the last minute, as its instance manager counted
    /// them: a crash loop is failed over at once instead of restarted again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recent_crashes: u32,
    /// The PostgreSQL system identifier.
    #[serde(default, rename = "systemID", skip_serializing_if = "String::is_empty")]
    pub system_id: String,
    /// `pg_rewind` is running.
    #[serde(default)]
    pub is_pg_rewind_running: bool,
    /// The instance is fenced.
    #[serde(default)]
    pub is_fenced: bool,
    /// `synchronous_standby_names` in effect (primaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_standby_names: Option<String>,
    /// `pg_stat_replication` (primaries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication_info: Vec<ReplicationInfo>,
    /// Version of the instance manager.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_manager_version: String,
    /// Changes every time the instance manager starts.
    #[serde(
        default,
        rename = "sessionID",
        skip_serializing_if = "String::is_empty"
    )]
    pub session_id: String,
    /// The instance manager's last decision and its reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    /// Where the platform runs it (a Kubernetes node), filled in by the host as
    /// `isPodReady` is; the status and topology report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its address (the pod IP), filled in by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// WAL archiving as `pg_stat_archiver` and the WAL directory show it (upstream's
    /// field names, flattened into the report).
    #[serde(flatten)]
    pub archiving: Archiving,
    /// On a primary with managed roles: where they stand after its last pass
    /// (`status.managedRolesStatus` is copied from the primary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_roles: Option<crate::roles::ManagedRoles>,
    /// On a primary with `Database` resources: each one's status after its last pass, by
    /// the object's name (the host copies each into its `Database`'s status).
    #[cfg(feature = "api")]
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub databases: std::collections::BTreeMap<String, crate::api::DatabaseStatus>,
    /// On a primary with declarative tablespaces: each one's state after its last pass
    /// (`status.tablespacesStatus` is copied from the primary's).
    #[cfg(feature = "api")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespaces: Option<Vec<crate::api::cluster::TablespaceState>>,
}

/// How WAL archiving goes on an instance. Times are RFC 3339 in UTC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archiving {
    /// The last archiving attempt succeeded (the last success is newer than the last
    /// failure), as upstream computes it. False until the first segment is archived.
    #[serde(
        default,
        rename = "isArchivingWAL",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_archiving_wal: bool,
    /// The last segment archived.
    #[serde(
        default,
        rename = "lastArchivedWAL",
        skip_serializing_if = "String::is_empty"
    )]
    pub last_archived_wal: String,
    /// When.
    #[serde(
        default,
        rename = "lastArchivedWALTime",
        skip_serializing_if = "String::is_empty"
    )]
    pub last_archived_wal_time: String,
    /// The last segment whose archiving failed.
    #[serde(
        default,
        rename = "lastFailedWAL",
        skip_serializing_if = "String::is_empty"
    )]
    pub last_failed_wal: String,
    /// When.
    #[serde(
        default,
        rename = "lastFailedWALTime",
        skip_serializing_if = "String::is_empty"
    )]
    pub last_failed_wal_time: String,
    /// The segment being written (primary).
    #[serde(
        default,
        rename = "currentWAL",
        skip_serializing_if = "String::is_empty"
    )]
    pub current_wal: String,
    /// Segments waiting to be archived (`.ready` files in `pg_wal/archive_status`).
    #[serde(default, rename = "readyWalFiles", skip_serializing_if = "is_zero")]
    pub ready_wal_files: u32,
    /// While archiving fails: the archiver's last error (our addition; upstream puts it in
    /// the `ContinuousArchiving` condition only).
    #[serde(
        default,
        rename = "archiveError",
        skip_serializing_if = "String::is_empty"
    )]
    pub archive_error: String,
    /// Segments archived since the statistics were reset.
    #[serde(default, rename = "archivedCount", skip_serializing_if = "is_zero_i64")]
    pub archived_count: i64,
    /// Failed attempts since the statistics were reset.
    #[serde(default, rename = "failedCount", skip_serializing_if = "is_zero_i64")]
    pub failed_count: i64,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One row of `pg_stat_replication`, as upstream's `replicationInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationInfo {
    /// The standby's `application_name` (its instance name).
    pub application_name: String,
    /// `streaming`, `catchup`, ...
    pub state: String,
    /// WAL sent.
    pub sent_lsn: Lsn,
    /// WAL written by the standby.
    pub write_lsn: Lsn,
    /// WAL flushed by the standby.
    pub flush_lsn: Lsn,
    /// WAL replayed by the standby.
    pub replay_lsn: Lsn,
    /// `async`, `potential`, `sync` or `quorum`.
    pub sync_state: String,
    /// Priority in `synchronous_standby_names`.
    pub sync_priority: i32,
}

impl InstanceStatus {
    /// Whether the status could be read.
    pub fn is_reachable(&self) -> bool {
        self.error.is_none()
    }

    /// Whether its instance manager answered (possibly to say PostgreSQL is down): a
    /// report carries the manager's version; a status made up by the host because the
    /// request failed does not.
    pub fn manager_answered(&self) -> bool {
        self.is_reachable() || !self.instance_manager_version.is_empty()
    }

    /// How far the instance has WAL: on a primary its current position; on a replica the
    /// received position, raised to the replay position when that is further (a replica
    /// restored from archive has replayed WAL it never received by streaming).
    pub fn wal_position(&self) -> Lsn {
        if self.is_primary {
            self.current_lsn
        } else {
            self.received_lsn.max(self.replay_lsn)
        }
    }

    /// A reachable status; convenient for tests and embedders.
    pub fn replica(name: &str, timeline: u32, received: Lsn) -> Self {
        InstanceStatus {
            name: name.to_owned(),
            is_pod_ready: true,
            timeline,
            received_lsn: received,
            replay_lsn: received,
            is_wal_receiver_active: true,
            ..Default::default()
        }
    }

    /// A reachable primary status; convenient for tests and embedders.
    pub fn primary(name: &str, timeline: u32, current: Lsn) -> Self {
        InstanceStatus {
            name: name.to_owned(),
            is_pod_ready: true,
            is_primary: true,
            timeline,
            current_lsn: current,
            ..Default::default()
        }
    }

    /// An instance whose status could not be read.
    pub fn unreachable(name: &str, why: &str) -> Self {
        InstanceStatus {
            name: name.to_owned(),
            error: Some(why.to_owned()),
            ..Default::default()
        }
    }
}
