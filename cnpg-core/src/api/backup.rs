//! The `Backup` resource (one physical backup request) and `ScheduledBackup` (a cron that
//! creates `Backup`s).

use super::barman::{AzureCredentials, EncryptionType, GoogleCredentials, S3Credentials};
use super::common::{
    BackupMethod, BackupPluginConfiguration, BackupTarget, LocalObjectReference,
    OnlineConfiguration, SecretKeySelector,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The phases of a `Backup`, as upstream writes them to `status.phase`.
pub mod phase {
    /// Created, not started yet.
    pub const PENDING: &str = "pending";
    /// Started.
    pub const STARTED: &str = "started";
    /// Running.
    pub const RUNNING: &str = "running";
    /// Waiting for volume snapshots to be ready to use.
    pub const FINALIZING: &str = "finalizing";
    /// Done.
    pub const COMPLETED: &str = "completed";
    /// Failed.
    pub const FAILED: &str = "failed";
    /// Waiting because WAL archiving is not working.
    pub const WAL_ARCHIVING_FAILING: &str = "walArchivingFailing";
}

/// A request for one backup of a cluster.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Backup",
    plural = "backups",
    namespaced,
    status = "BackupStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Method", type_ = "string", json_path = ".spec.method"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Error", type_ = "string", json_path = ".status.error")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The cluster to back up.
    pub cluster: LocalObjectReference,
    /// Where the backup runs (default: the cluster's `backup.target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// `barmanObjectStore` (default), `volumeSnapshot` or `plugin`.
    #[serde(default)]
    pub method: BackupMethod,
    /// The plugin, for `method: plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_configuration: Option<BackupPluginConfiguration>,
    /// Hot (true) or cold volume snapshot (default: the cluster's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Settings of a hot volume snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_configuration: Option<OnlineConfiguration>,
}

/// The observed state of a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// S3 credentials used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_credentials: Option<S3Credentials>,
    /// Azure credentials used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_credentials: Option<AzureCredentials>,
    /// Google credentials used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_credentials: Option<GoogleCredentials>,
    /// CA of the endpoint.
    #[serde(
        default,
        rename = "endpointCA",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ca: Option<SecretKeySelector>,
    /// Endpoint URL.
    #[serde(
        default,
        rename = "endpointURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_url: Option<String>,
    /// Destination path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_path: Option<String>,
    /// Server name in the object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Encryption used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionType>,
    /// Backup id.
    #[serde(default, rename = "backupId", skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Backup name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Phase (see [`phase`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// End time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// First WAL file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_wal: Option<String>,
    /// Last WAL file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_wal: Option<String>,
    /// Start LSN.
    #[serde(default, rename = "beginLSN", skip_serializing_if = "Option::is_none")]
    pub begin_lsn: Option<String>,
    /// End LSN.
    #[serde(default, rename = "endLSN", skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<String>,
    /// Error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output of the backup command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_output: Option<String>,
    /// Error output of the backup command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_error: Option<String>,
    /// `backup_label` of a hot snapshot (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_label_file: Option<String>,
    /// `tablespace_map` of a hot snapshot (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_map_file: Option<String>,
    /// The instance that took the backup.
    #[serde(
        default,
        rename = "instanceID",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_id: Option<InstanceId>,
    /// Snapshots taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_backup_status: Option<BackupSnapshotStatus>,
    /// Method used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<BackupMethod>,
    /// Whether it was hot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Metadata of the plugin that took it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_metadata: BTreeMap<String, String>,
    /// PostgreSQL major version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_version: Option<i32>,
}

/// The instance that took a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceId {
    /// Pod name.
    #[serde(default, rename = "podName", skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Container id.
    #[serde(
        default,
        rename = "ContainerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// Instance manager session id.
    #[serde(default, rename = "sessionID", skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Snapshots taken by a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSnapshotStatus {
    /// One per volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<BackupSnapshotElementStatus>,
}

/// One snapshot of a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSnapshotElementStatus {
    /// VolumeSnapshot name.
    pub name: String,
    /// `PG_DATA`, `PG_WAL` or `PG_TABLESPACE`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Tablespace name, for `PG_TABLESPACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_name: Option<String>,
}

/// Who owns the `Backup`s a schedule creates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupOwnerReference {
    /// No owner.
    #[default]
    None,
    /// The ScheduledBackup.
    #[serde(rename = "self")]
    SelfRef,
    /// The Cluster.
    Cluster,
}

/// A schedule of backups.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "ScheduledBackup",
    plural = "scheduledbackups",
    namespaced,
    status = "ScheduledBackupStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupSpec {
    /// Stop creating backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Take the first backup right away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate: Option<bool>,
    /// Six-field cron expression, seconds first (e.g. `0 0 0 * * *`).
    pub schedule: String,
    /// The cluster to back up.
    pub cluster: LocalObjectReference,
    /// Owner of the created backups: `none` (default), `self` or `cluster`.
    #[serde(default)]
    pub backup_owner_reference: BackupOwnerReference,
    /// Where backups run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// Backup method.
    #[serde(default)]
    pub method: BackupMethod,
    /// The plugin, for `method: plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_configuration: Option<BackupPluginConfiguration>,
    /// Hot or cold volume snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Settings of a hot volume snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_configuration: Option<OnlineConfiguration>,
}

/// The observed state of a schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupStatus {
    /// Last time the schedule was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<String>,
    /// Last time a backup was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// Next time a backup will be created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_reference_values_match_upstream() {
        let v: Vec<String> = [
            BackupOwnerReference::None,
            BackupOwnerReference::SelfRef,
            BackupOwnerReference::Cluster,
        ]
        .iter()
        .map(|o| serde_json::to_string(o).expect("serializes"))
        .collect();
        assert_eq!(v, ["\"none\"", "\"self\"", "\"cluster\""]);
    }
}
