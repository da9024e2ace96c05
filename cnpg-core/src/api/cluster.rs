//! The `Cluster` resource: a PostgreSQL primary and its streaming standbys.
//!
//! Field names, types, defaults and enum values follow CloudNativePG's
//! `api/v1/cluster_types.go`, so a manifest written for CloudNativePG applies unchanged.
//! Kubernetes core types come from k8s-openapi.

use super::barman::BarmanObjectStoreConfiguration;
use super::common::{
    BackupTarget, ConfigMapKeySelector, ImageCatalogRef, LocalObjectReference, Metadata,
    OnlineConfiguration, SecretKeySelector,
};
use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EphemeralVolumeSource, ImageVolumeSource, NodeAffinity,
    PersistentVolumeClaimSpec, PodAffinity, PodAntiAffinity, PodSecurityContext,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext, ServiceSpec,
    Toleration, TopologySpreadConstraint, TypedLocalObjectReference,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::roles::{EnsureOption, ManagedRoles, PasswordState, RoleConfiguration};

fn default_instances() -> i32 {
    1
}
fn default_postgres_id() -> i64 {
    26
}
fn default_start_delay() -> i32 {
    3600
}
fn default_stop_delay() -> i32 {
    1800
}
fn default_smart_shutdown_timeout() -> i32 {
    180
}
fn default_switchover_delay() -> i32 {
    3600
}

/// The specification of a PostgreSQL cluster.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Cluster",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.instances",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.instances",
        description = "Number of instances"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyInstances",
        description = "Number of ready instances"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Cluster current status"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary",
        description = "Primary pod"
    ),
    printcolumn(
        name = "SyncTopology",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='SyncReplicationTopologySatisfied')].reason",
        description = "Whether the synchronous replicas satisfy the failure-domain constraints",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Free-text description of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels and annotations copied to every object the operator generates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_metadata: Option<Metadata>,
    /// The PostgreSQL image (tag and/or digest). Exclusive with `imageCatalogRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    /// Pick the image from an image catalog by major version. Exclusive with `imageName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_catalog_ref: Option<ImageCatalogRef>,
    /// Image pull policy (`Always`, `Never`, `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The scheduler for the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// UID of the `postgres` user inside the image.
    #[serde(default = "default_postgres_id", rename = "postgresUID")]
    pub postgres_uid: i64,
    /// GID of the `postgres` user inside the image.
    #[serde(default = "default_postgres_id", rename = "postgresGID")]
    pub postgres_gid: i64,
    /// Number of instances: one primary and `instances - 1` streaming standbys.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1))]
    pub instances: i32,
    /// Legacy synchronous replication: the lowest number of synchronous standbys.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_sync_replicas: i32,
    /// Legacy synchronous replication: the target number of synchronous standbys (0 disables).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_sync_replicas: i32,
    /// PostgreSQL configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgresConfiguration>,
    /// Replication slots management.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_slots: Option<ReplicationSlotsConfiguration>,
    /// How the cluster is created (exactly one method; `initdb` when none is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapConfiguration>,
    /// Replica cluster configuration (the whole cluster follows an external one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaClusterConfiguration>,
    /// Secret with the superuser password (generated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret: Option<LocalObjectReference>,
    /// Allow the `postgres` superuser to log in with a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_superuser_access: Option<bool>,
    /// TLS certificates: user-provided Secrets instead of operator-generated ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesConfiguration>,
    /// Pull secrets for the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Storage for PGDATA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageConfiguration>,
    /// Template for the ServiceAccount of the instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_template: Option<ServiceAccountTemplate>,
    /// Use this ServiceAccount instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Separate storage for WAL (`pg_wal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<StorageConfiguration>,
    /// Volume source for the ephemeral volumes (`/run`, `/controller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_volume_source: Option<EphemeralVolumeSource>,
    /// Seconds an instance may take to start before it is considered failed.
    #[serde(default = "default_start_delay")]
    pub start_delay: i32,
    /// Seconds an instance may take to stop (the pod's termination grace period).
    #[serde(default = "default_stop_delay")]
    pub stop_delay: i32,
    /// Seconds of `stopDelay` spent in a smart shutdown before a fast one.
    #[serde(default = "default_smart_shutdown_timeout")]
    pub smart_shutdown_timeout: i32,
    /// Seconds a demoting primary may take for its fast shutdown before an immediate one.
    #[serde(default = "default_switchover_delay")]
    pub switchover_delay: i32,
    /// Seconds to wait after the primary is seen failing before failing over.
    #[serde(default)]
    pub failover_delay: i32,
    /// Seconds of failing liveness probes before the container is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe_timeout: Option<i32>,
    /// Scheduling of the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityConfiguration>,
    /// Topology spread constraints for the instance pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Resources of the `postgres` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Size limits of the ephemeral volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_volumes_size_limit: Option<EphemeralVolumesSizeLimitConfiguration>,
    /// Priority class of the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Update the primary automatically (`unsupervised`) or wait for the user (`supervised`).
    #[serde(default)]
    pub primary_update_strategy: PrimaryUpdateStrategy,
    /// Update the primary by `restart` or by `switchover`.
    #[serde(default)]
    pub primary_update_method: PrimaryUpdateMethod,
    /// Backup configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfiguration>,
    /// Legacy node maintenance mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_maintenance_window: Option<NodeMaintenanceWindow>,
    /// Monitoring configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringConfiguration>,
    /// Other clusters this one can bootstrap or replicate from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_clusters: Vec<ExternalCluster>,
    /// Log level of the instance manager.
    #[serde(default)]
    pub log_level: LogLevel,
    /// A projected volume mounted at `/projected` in the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_volume_template: Option<ProjectedVolumeSource>,
    /// Extra environment variables for the `postgres` container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Extra environment sources for the `postgres` container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Roles and services the operator manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedConfiguration>,
    /// Seccomp profile of the instance pods (default `RuntimeDefault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
    /// Pod security context override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Container security context override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Tablespaces, each with a volume per instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<TablespaceConfiguration>,
    /// Create the primary and replica PodDisruptionBudgets (default true).
    #[serde(default, rename = "enablePDB", skip_serializing_if = "Option::is_none")]
    pub enable_pdb: Option<bool>,
    /// CNPG-I plugins enabled for this cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginConfiguration>,
    /// Probe settings of the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbesConfiguration>,
    /// The primary-election Lease timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_lease: Option<PrimaryLeaseConfiguration>,
    /// Pod selectors whose pod IPs can be used in `pg_hba` as `${podselector:NAME}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_selector_refs: Vec<PodSelectorRef>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            description: None,
            inherited_metadata: None,
            image_name: None,
            image_catalog_ref: None,
            image_pull_policy: None,
            scheduler_name: None,
            postgres_uid: default_postgres_id(),
            postgres_gid: default_postgres_id(),
            instances: default_instances(),
            min_sync_replicas: 0,
            max_sync_replicas: 0,
            postgresql: None,
            replication_slots: None,
            bootstrap: None,
            replica: None,
            superuser_secret: None,
            enable_superuser_access: None,
            certificates: None,
            image_pull_secrets: Vec::new(),
            storage: None,
            service_account_template: None,
            service_account_name: None,
            wal_storage: None,
            ephemeral_volume_source: None,
            start_delay: default_start_delay(),
            stop_delay: default_stop_delay(),
            smart_shutdown_timeout: default_smart_shutdown_timeout(),
            switchover_delay: default_switchover_delay(),
            failover_delay: 0,
            liveness_probe_timeout: None,
            affinity: None,
            topology_spread_constraints: Vec::new(),
            resources: None,
            ephemeral_volumes_size_limit: None,
            priority_class_name: None,
            primary_update_strategy: PrimaryUpdateStrategy::default(),
            primary_update_method: PrimaryUpdateMethod::default(),
            backup: None,
            node_maintenance_window: None,
            monitoring: None,
            external_clusters: Vec::new(),
            log_level: LogLevel::default(),
            projected_volume_template: None,
            env: Vec::new(),
            env_from: Vec::new(),
            managed: None,
            seccomp_profile: None,
            pod_security_context: None,
            security_context: None,
            tablespaces: Vec::new(),
            enable_pdb: None,
            plugins: Vec::new(),
            probes: None,
            primary_lease: None,
            pod_selector_refs: Vec::new(),
        }
    }
}

/// When the primary is updated during a rolling update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryUpdateStrategy {
    /// Update the primary as soon as the replicas are done.
    #[default]
    Unsupervised,
    /// Wait for the user to switch over or restart the primary.
    Supervised,
}

/// How the primary is updated during a rolling update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryUpdateMethod {
    /// Restart the primary in place (or recreate its pod).
    #[default]
    Restart,
    /// Switch over to the most aligned replica first.
    Switchover,
}

/// Log level of the instance manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// The default.
    #[default]
    Info,
    /// Verbose.
    Debug,
    /// Very verbose.
    Trace,
}

/// PostgreSQL configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresConfiguration {
    /// `postgresql.conf` parameters. Parameters the operator manages are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Synchronous replication (exclusive with `minSyncReplicas`/`maxSyncReplicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous: Option<SynchronousReplicaConfiguration>,
    /// `pg_hba.conf` lines, placed between the operator's fixed rules and the default rule.
    #[serde(default, rename = "pg_hba", skip_serializing_if = "Vec::is_empty")]
    pub pg_hba: Vec<String>,
    /// `pg_ident.conf` lines.
    #[serde(default, rename = "pg_ident", skip_serializing_if = "Vec::is_empty")]
    pub pg_ident: Vec<String>,
    /// Legacy synchronous replication: choose standbys on other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_replica_election_constraint: Option<SyncReplicaElectionConstraints>,
    /// Extra shared libraries to preload.
    #[serde(
        default,
        rename = "shared_preload_libraries",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shared_preload_libraries: Vec<String>,
    /// LDAP authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    /// Seconds `pg_ctl promote` may take (default 40000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_timeout: Option<i32>,
    /// Allow `ALTER SYSTEM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_alter_system: Option<bool>,
    /// Extensions mounted from image volumes (PostgreSQL 18+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionConfiguration>,
}

/// How the synchronous standbys are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousMethod {
    /// Quorum: `ANY n (...)`.
    Any,
    /// Priority: `FIRST n (...)`.
    First,
}

/// Whether writes wait for synchronous standbys even when too few are ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataDurability {
    /// Never lower the number of synchronous standbys: writes block rather than lose RPO 0.
    #[default]
    Required,
    /// List only ready standbys and lower the number to match: writes never block.
    Preferred,
}

/// The `synchronous` stanza.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SynchronousReplicaConfiguration {
    /// `any` (quorum) or `first` (priority).
    pub method: SynchronousMethod,
    /// How many synchronous standbys a commit waits for.
    #[schemars(range(min = 1))]
    pub number: i32,
    /// Cap on the number of this cluster's instances listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_standby_names_from_cluster: Option<i32>,
    /// External standby names listed before this cluster's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby_names_pre: Vec<String>,
    /// External standby names listed after this cluster's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby_names_post: Vec<String>,
    /// `required` (default) or `preferred`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_durability: Option<DataDurability>,
    /// Refuse automatic failover unless the promoted replica surely has every commit (R+W>N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_quorum: Option<bool>,
    /// Pod label keys defining failure domains for synchronous standbys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_failure_domain_keys: Vec<String>,
    /// Node label keys defining failure domains for synchronous standbys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_failure_domain_keys: Vec<String>,
}

/// Legacy sync replica anti-affinity by node labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncReplicaElectionConstraints {
    /// Whether the constraint is applied.
    pub enabled: bool,
    /// Node labels whose values must differ from the primary's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_labels_anti_affinity: Vec<String>,
}

/// LDAP authentication settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LdapConfig {
    /// LDAP server host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// LDAP server port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// `ldap` or `ldaps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<LdapScheme>,
    /// Simple bind mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_as_auth: Option<LdapBindAsAuth>,
    /// Search+bind mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_search_auth: Option<LdapBindSearchAuth>,
    /// Use StartTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

/// LDAP URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LdapScheme {
    /// Plain LDAP.
    Ldap,
    /// LDAP over TLS.
    Ldaps,
}

/// LDAP simple bind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LdapBindAsAuth {
    /// Prefix of the bind DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Suffix of the bind DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

/// LDAP search+bind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LdapBindSearchAuth {
    /// Root DN to start the search from.
    #[serde(default, rename = "baseDN", skip_serializing_if = "Option::is_none")]
    pub base_dn: Option<String>,
    /// DN of the user that searches.
    #[serde(default, rename = "bindDN", skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,
    /// Password of the user that searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password: Option<SecretKeySelector>,
    /// Attribute matched against the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_attribute: Option<String>,
    /// Search filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_filter: Option<String>,
}

/// An extension mounted from an image volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionConfiguration {
    /// Name of the extension.
    pub name: String,
    /// The image holding the extension.
    pub image: ImageVolumeSource,
    /// Directories added to `extension_control_path`.
    #[serde(
        default,
        rename = "extension_control_path",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub extension_control_path: Vec<String>,
    /// Directories added to `dynamic_library_path`.
    #[serde(
        default,
        rename = "dynamic_library_path",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dynamic_library_path: Vec<String>,
    /// Directories added to `LD_LIBRARY_PATH`.
    #[serde(
        default,
        rename = "ld_library_path",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ld_library_path: Vec<String>,
}

/// Replication slots management.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSlotsConfiguration {
    /// Physical slots for the standbys of this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_availability: Option<ReplicationSlotsHaConfiguration>,
    /// Seconds between slot updates on standbys (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub update_interval: Option<i32>,
    /// Mirror user-defined slots on standbys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronize_replicas: Option<SynchronizeReplicasConfiguration>,
}

/// HA replication slots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSlotsHaConfiguration {
    /// Whether HA slots are used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Prefix of slot names (default `_cnpg_`); only `[0-9a-z_]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_prefix: Option<String>,
    /// Synchronize logical decoding slots to standbys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronize_logical_decoding: Option<bool>,
}

/// Mirroring of user-defined replication slots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SynchronizeReplicasConfiguration {
    /// Whether user slots are mirrored (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Slots whose name matches one of these regular expressions are not mirrored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_patterns: Vec<String>,
}

/// How the cluster is created.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapConfiguration {
    /// A new, empty cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<BootstrapInitDb>,
    /// Restore from a backup, object store or volume snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<BootstrapRecovery>,
    /// Clone a live server with `pg_basebackup`.
    #[serde(
        default,
        rename = "pg_basebackup",
        skip_serializing_if = "Option::is_none"
    )]
    pub pg_basebackup: Option<BootstrapPgBaseBackup>,
}

/// `initdb` bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapInitDb {
    /// Application database (default `app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Owner of the application database (default: the database name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Secret with the owner's credentials (generated `<cluster>-app` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalObjectReference>,
    /// Deprecated raw `initdb` options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Enable data checksums (`initdb -k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_checksums: Option<bool>,
    /// Database encoding (default `UTF8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// `LC_COLLATE` (default `C`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale_collate: Option<String>,
    /// `LC_CTYPE` (default `C`).
    #[serde(
        default,
        rename = "localeCType",
        skip_serializing_if = "Option::is_none"
    )]
    pub locale_c_type: Option<String>,
    /// Locale for all categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Locale provider (`libc`, `icu`, `builtin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale_provider: Option<String>,
    /// ICU locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_locale: Option<String>,
    /// ICU collation rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_rules: Option<String>,
    /// Builtin provider locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin_locale: Option<String>,
    /// WAL segment size in MB (1 to 1024, a power of 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub wal_segment_size: Option<i32>,
    /// SQL run as superuser in the `postgres` database after creation.
    #[serde(default, rename = "postInitSQL", skip_serializing_if = "Vec::is_empty")]
    pub post_init_sql: Vec<String>,
    /// SQL run as superuser in the application database after creation.
    #[serde(
        default,
        rename = "postInitApplicationSQL",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub post_init_application_sql: Vec<String>,
    /// SQL run as superuser in `template1` after creation.
    #[serde(
        default,
        rename = "postInitTemplateSQL",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub post_init_template_sql: Vec<String>,
    /// Logical import from an external cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<Import>,
    /// SQL from Secrets/ConfigMaps run in the application database.
    #[serde(
        default,
        rename = "postInitApplicationSQLRefs",
        skip_serializing_if = "Option::is_none"
    )]
    pub post_init_application_sql_refs: Option<SqlRefs>,
    /// SQL from Secrets/ConfigMaps run in `template1`.
    #[serde(
        default,
        rename = "postInitTemplateSQLRefs",
        skip_serializing_if = "Option::is_none"
    )]
    pub post_init_template_sql_refs: Option<SqlRefs>,
    /// SQL from Secrets/ConfigMaps run in `postgres`.
    #[serde(
        default,
        rename = "postInitSQLRefs",
        skip_serializing_if = "Option::is_none"
    )]
    pub post_init_sql_refs: Option<SqlRefs>,
}

/// SQL scripts kept in Secrets and ConfigMaps (Secrets run first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqlRefs {
    /// Secret keys holding SQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_refs: Vec<SecretKeySelector>,
    /// ConfigMap keys holding SQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_map_refs: Vec<ConfigMapKeySelector>,
}

/// Kind of logical import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportType {
    /// One database into the application database.
    Microservice,
    /// Several databases and roles.
    Monolith,
}

/// A logical import.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Import {
    /// The external cluster to import from.
    pub source: ImportSource,
    /// `microservice` or `monolith`.
    #[serde(rename = "type")]
    pub type_: ImportType,
    /// Databases to import.
    pub databases: Vec<String>,
    /// Roles to import (monolith only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// SQL run after the import in the application database.
    #[serde(
        default,
        rename = "postImportApplicationSQL",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub post_import_application_sql: Vec<String>,
    /// Import the schema only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_only: Option<bool>,
    /// Extra `pg_dump` options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pg_dump_extra_options: Vec<String>,
    /// Extra `pg_restore` options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pg_restore_extra_options: Vec<String>,
}

/// The source of a logical import.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSource {
    /// Name of an entry of `externalClusters`.
    pub external_cluster: String,
}

/// Recovery bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRecovery {
    /// A `Backup` object to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSource>,
    /// An `externalClusters` entry whose object store or plugin holds the backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Volume snapshots to restore from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshots: Option<DataSource>,
    /// Point-in-time recovery target (full recovery when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_target: Option<RecoveryTarget>,
    /// Application database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Application database owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Secret with the owner's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalObjectReference>,
}

/// A `Backup` object to recover from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSource {
    /// Name of the `Backup`.
    pub name: String,
    /// CA bundle of the object store endpoint.
    #[serde(
        default,
        rename = "endpointCA",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ca: Option<SecretKeySelector>,
}

/// Volume snapshots to recover from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    /// Snapshot of PGDATA.
    pub storage: TypedLocalObjectReference,
    /// Snapshot of the WAL volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<TypedLocalObjectReference>,
    /// Snapshots of tablespaces, by tablespace name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tablespace_storage: BTreeMap<String, TypedLocalObjectReference>,
}

/// Point-in-time recovery target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTarget {
    /// The backup to start from.
    #[serde(default, rename = "backupID", skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Target timeline (`latest`, `current` or a number).
    #[serde(default, rename = "targetTLI", skip_serializing_if = "Option::is_none")]
    pub target_tli: Option<String>,
    /// Target transaction id.
    #[serde(default, rename = "targetXID", skip_serializing_if = "Option::is_none")]
    pub target_xid: Option<String>,
    /// Target restore point name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// Target LSN.
    #[serde(default, rename = "targetLSN", skip_serializing_if = "Option::is_none")]
    pub target_lsn: Option<String>,
    /// Target time (RFC 3339 or PostgreSQL timestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
    /// Stop as soon as a consistent state is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_immediate: Option<bool>,
    /// Stop just before the target (default: just after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
}

/// `pg_basebackup` bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapPgBaseBackup {
    /// Name of the `externalClusters` entry to clone.
    pub source: String,
    /// Application database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Application database owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Secret with the owner's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalObjectReference>,
}

/// Replica cluster configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaClusterConfiguration {
    /// Name of this cluster in the distributed topology.
    #[serde(default, rename = "self", skip_serializing_if = "Option::is_none")]
    pub self_: Option<String>,
    /// Which cluster of the topology is primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The `externalClusters` entry to replicate from.
    pub source: String,
    /// Whether this is a replica cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Demotion token of the former primary cluster, for a controlled promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_token: Option<String>,
    /// Delay applying WAL by this duration (e.g. `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_apply_delay: Option<String>,
}

/// TLS certificates configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificatesConfiguration {
    /// Secret with the CA that signs server certificates.
    #[serde(
        default,
        rename = "serverCASecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_ca_secret: Option<String>,
    /// Secret with the server certificate and key.
    #[serde(
        default,
        rename = "serverTLSSecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_tls_secret: Option<String>,
    /// Secret with the `streaming_replica` client certificate.
    #[serde(
        default,
        rename = "replicationTLSSecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub replication_tls_secret: Option<String>,
    /// Secret with the CA that verifies client certificates.
    #[serde(
        default,
        rename = "clientCASecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ca_secret: Option<String>,
    /// Extra DNS names for the server certificate.
    #[serde(
        default,
        rename = "serverAltDNSNames",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub server_alt_dns_names: Vec<String>,
}

/// Storage of one volume kind (PGDATA, WAL or a tablespace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageConfiguration {
    /// Storage class (the default class when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Size of the volume (a Kubernetes quantity such as `10Gi`); it cannot shrink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Resize bound volumes when the size grows (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_in_use_volumes: Option<bool>,
    /// Template for the PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_template: Option<PersistentVolumeClaimSpec>,
}

/// ServiceAccount template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountTemplate {
    /// Labels and annotations of the ServiceAccount.
    pub metadata: Metadata,
}

/// Size limits of the ephemeral volumes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralVolumesSizeLimitConfiguration {
    /// Limit of `/dev/shm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm: Option<Quantity>,
    /// Limit of the temporary data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_data: Option<Quantity>,
}

/// Scheduling of the instance pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffinityConfiguration {
    /// Generate anti-affinity among the cluster's pods (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_pod_anti_affinity: Option<bool>,
    /// Topology key of the generated anti-affinity (default `kubernetes.io/hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_key: Option<String>,
    /// Node selector of the instance pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node affinity of the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    /// Tolerations of the instance pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// `preferred` (default) or `required` generated anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity_type: Option<PodAntiAffinityType>,
    /// Extra pod anti-affinity terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_pod_anti_affinity: Option<PodAntiAffinity>,
    /// Extra pod affinity terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_pod_affinity: Option<PodAffinity>,
}

/// Strength of the generated pod anti-affinity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodAntiAffinityType {
    /// Scheduling prefers other nodes (weight 100).
    #[default]
    Preferred,
    /// Scheduling requires other nodes.
    Required,
}

/// Backup configuration of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfiguration {
    /// Volume snapshot settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<VolumeSnapshotConfiguration>,
    /// Barman Cloud object store (deprecated in-tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barman_object_store: Option<BarmanObjectStoreConfiguration>,
    /// Retention policy such as `30d`, `4w`, `6m` (Barman only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<String>,
    /// Where backups run: `prefer-standby` (default) or `primary`.
    #[serde(default)]
    pub target: BackupTarget,
}

/// Owner of the VolumeSnapshots a backup creates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotOwnerReference {
    /// No owner: snapshots outlive the backup and the cluster.
    #[default]
    None,
    /// Owned by the Cluster.
    Cluster,
    /// Owned by the Backup.
    Backup,
}

/// Volume snapshot settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotConfiguration {
    /// Labels of the snapshots.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the snapshots.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// VolumeSnapshotClass for PGDATA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// VolumeSnapshotClass for WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_class_name: Option<String>,
    /// VolumeSnapshotClass per tablespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tablespace_class_name: BTreeMap<String, String>,
    /// Owner of the snapshots.
    #[serde(default)]
    pub snapshot_owner_reference: SnapshotOwnerReference,
    /// Hot (true, default) or cold backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Settings of hot backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_configuration: Option<OnlineConfiguration>,
}

/// Legacy node maintenance window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeMaintenanceWindow {
    /// Whether maintenance is in progress.
    #[serde(default)]
    pub in_progress: bool,
    /// Wait for the node and reuse its volumes (default true) instead of re-cloning.
    #[serde(default, rename = "reusePVC", skip_serializing_if = "Option::is_none")]
    pub reuse_pvc: Option<bool>,
}

/// Monitoring configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringConfiguration {
    /// Do not load the operator's default metric queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_default_queries: Option<bool>,
    /// ConfigMaps with custom metric queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_queries_config_map: Vec<ConfigMapKeySelector>,
    /// Secrets with custom metric queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_queries_secret: Vec<SecretKeySelector>,
    /// Create a PodMonitor (deprecated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_pod_monitor: Option<bool>,
    /// TLS on the metrics port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterMonitoringTls>,
    /// Cache lifetime of query-based metrics (e.g. `30s`).
    #[serde(
        default,
        rename = "metricsQueriesTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics_queries_ttl: Option<String>,
    /// Metric relabelings of the PodMonitor (deprecated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_monitor_metric_relabelings: Vec<RelabelConfig>,
    /// Relabelings of the PodMonitor (deprecated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_monitor_relabelings: Vec<RelabelConfig>,
}

/// TLS of the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMonitoringTls {
    /// Serve metrics over HTTPS.
    #[serde(default)]
    pub enabled: bool,
}

/// A Prometheus relabeling rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelabelConfig {
    /// Source labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    /// Separator of concatenated source labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// Target label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    /// Regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Modulus for `hashmod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modulus: Option<i64>,
    /// Replacement value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// Action (`replace`, `keep`, `drop`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// Another PostgreSQL cluster, for bootstrap, import or replica mode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCluster {
    /// Name used to refer to it.
    pub name: String,
    /// libpq connection parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connection_parameters: BTreeMap<String, String>,
    /// Client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_cert: Option<SecretKeySelector>,
    /// Client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_key: Option<SecretKeySelector>,
    /// Server CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<SecretKeySelector>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeySelector>,
    /// Its Barman object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barman_object_store: Option<BarmanObjectStoreConfiguration>,
    /// Its CNPG-I plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginConfiguration>,
}

/// A CNPG-I plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfiguration {
    /// Name of the plugin.
    pub name: String,
    /// Whether the plugin is enabled (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Whether the plugin archives WAL (at most one per cluster).
    #[serde(
        default,
        rename = "isWALArchiver",
        skip_serializing_if = "Option::is_none"
    )]
    pub is_wal_archiver: Option<bool>,
    /// Plugin parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// Roles and services managed by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedConfiguration {
    /// Database roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleConfiguration>,
    /// Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ManagedServices>,
}

/// Which instances a Service selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceSelectorType {
    /// The primary.
    Rw,
    /// Every instance.
    R,
    /// The replicas.
    Ro,
}

/// How a managed Service is updated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceUpdateStrategy {
    /// Patch the existing Service.
    #[default]
    Patch,
    /// Delete and recreate it.
    Replace,
}

/// Managed Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedServices {
    /// Default Services not to create (`r`, `ro`; `rw` cannot be disabled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_default_services: Vec<ServiceSelectorType>,
    /// Extra Services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<ManagedService>,
}

/// An extra Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedService {
    /// Which instances it selects.
    pub selector_type: ServiceSelectorType,
    /// How it is updated.
    #[serde(default)]
    pub update_strategy: ServiceUpdateStrategy,
    /// The Service template.
    pub service_template: ServiceTemplateSpec,
}

/// A Service template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplateSpec {
    /// Labels, annotations and name of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// The Service spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceSpec>,
}

/// A tablespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TablespaceConfiguration {
    /// Tablespace name.
    pub name: String,
    /// Its volume.
    pub storage: StorageConfiguration,
    /// Use it for temporary objects.
    #[serde(default)]
    pub temporary: bool,
    /// Owner role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<DatabaseRoleRef>,
}

/// A reference to a database role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRoleRef {
    /// Role name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Probe settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbesConfiguration {
    /// Startup probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeWithStrategy>,
    /// Liveness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<LivenessProbe>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeWithStrategy>,
}

/// How readiness/startup is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProbeStrategyType {
    /// PostgreSQL accepts connections.
    #[serde(rename = "pg_isready")]
    PgIsReady,
    /// The replica streams with lag under `maximumLag`.
    #[serde(rename = "streaming")]
    Streaming,
    /// A query succeeds.
    #[serde(rename = "query")]
    Query,
}

/// A readiness or startup probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeWithStrategy {
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds before a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Successes needed after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Failures needed to give up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// Grace period after a probe failure kills the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// `pg_isready` (default), `streaming` or `query`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ProbeStrategyType>,
    /// Largest lag tolerated by the `streaming` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_lag: Option<Quantity>,
}

/// The liveness probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LivenessProbe {
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds before a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Successes needed after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Failures needed to give up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// Grace period after a probe failure kills the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Primary self-isolation check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_check: Option<IsolationCheckConfiguration>,
}

/// The primary's isolation check in the liveness probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsolationCheckConfiguration {
    /// Whether the check runs (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Request timeout in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<i32>,
    /// Connection timeout in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<i32>,
}

/// Primary-election Lease timings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryLeaseConfiguration {
    /// Lease time-to-live in seconds (default 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub lease_duration_seconds: Option<i32>,
    /// Seconds the holder keeps trying to renew (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub renew_deadline_seconds: Option<i32>,
    /// Seconds between attempts of non-holders (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retry_period_seconds: Option<i32>,
    /// Time-to-live written on a clean release (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub released_lease_duration_seconds: Option<i32>,
}

impl PrimaryLeaseConfiguration {
    /// `(duration, renewDeadline, retryPeriod, releasedDuration)` with upstream's defaults.
    pub fn effective(&self) -> (i32, i32, i32, i32) {
        (
            self.lease_duration_seconds.unwrap_or(15),
            self.renew_deadline_seconds.unwrap_or(10),
            self.retry_period_seconds.unwrap_or(2),
            self.released_lease_duration_seconds.unwrap_or(1),
        )
    }
}

/// A named pod selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSelectorRef {
    /// Name used in `${podselector:NAME}`.
    pub name: String,
    /// The selector.
    pub selector: LabelSelector,
}

// ---------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------

/// The observed state of a cluster, as upstream reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Number of PVC groups (instances), which may differ from the number of pods.
    #[serde(default)]
    pub instances: i32,
    /// Number of ready instances.
    #[serde(default)]
    pub ready_instances: i32,
    /// Instance names by state: `healthy`, `replicating`, `failed`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances_status: BTreeMap<String, Vec<String>>,
    /// What each instance reported in the last loop.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances_reported_state: BTreeMap<String, InstanceReportedState>,
    /// Names of the instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_names: Vec<String>,
    /// The instance currently primary (written by the promoted instance manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// When `currentPrimary` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary_timestamp: Option<String>,
    /// The instance that should be primary (`pending` during a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary: Option<String>,
    /// When `targetPrimary` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary_timestamp: Option<String>,
    /// Since when the primary is failing (set while `failoverDelay` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary_failing_since_timestamp: Option<String>,
    /// The cluster's timeline.
    #[serde(
        default,
        rename = "timelineID",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeline_id: Option<i32>,
    /// PostgreSQL system identifier.
    #[serde(default, rename = "systemID", skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// Current phase (one of upstream's exact strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the cluster is in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_reason: Option<String>,
    /// Conditions (`Ready`, `Initialized`, `ContinuousArchiving`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Failure-domain data of the instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// The read-write Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_service: Option<String>,
    /// The read Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_service: Option<String>,
    /// Label selector of the instance pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Number of PVCs.
    #[serde(default, rename = "pvcCount", skip_serializing_if = "Option::is_none")]
    pub pvc_count: Option<i32>,
    /// Number of Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_count: Option<i32>,
    /// PVCs without a pod.
    #[serde(default, rename = "danglingPVC", skip_serializing_if = "Vec::is_empty")]
    pub dangling_pvc: Vec<String>,
    /// PVCs being resized.
    #[serde(default, rename = "resizingPVC", skip_serializing_if = "Vec::is_empty")]
    pub resizing_pvc: Vec<String>,
    /// PVCs being initialized.
    #[serde(
        default,
        rename = "initializingPVC",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub initializing_pvc: Vec<String>,
    /// Healthy PVCs.
    #[serde(default, rename = "healthyPVC", skip_serializing_if = "Vec::is_empty")]
    pub healthy_pvc: Vec<String>,
    /// PVCs that cannot be used.
    #[serde(default, rename = "unusablePVC", skip_serializing_if = "Vec::is_empty")]
    pub unusable_pvc: Vec<String>,
    /// Deprecated: highest serial generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_generated_node: Option<i32>,
    /// Versions of the Secrets the instances use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_resource_version: Option<SecretsResourceVersion>,
    /// Versions of the ConfigMaps the instances use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_resource_version: Option<ConfigMapResourceVersion>,
    /// Certificates in use and their expirations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesStatus>,
    /// Deprecated: first point of recoverability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    /// Deprecated: first point of recoverability by backup method.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub first_recoverability_point_by_method: BTreeMap<String, String>,
    /// Deprecated: last successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// Deprecated: last successful backup by method.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_successful_backup_by_method: BTreeMap<String, String>,
    /// Deprecated: last failed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_backup: Option<String>,
    /// State of the managed roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_roles_status: Option<ManagedRoles>,
    /// Where the recovery that makes the first instance stands (`bootstrap.recovery`),
    /// published by that instance while it restores and replays, and kept once done or
    /// failed. Not upstream's: its clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_progress: Option<crate::recovery::Progress>,
    /// State of the tablespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces_status: Vec<TablespaceState>,
    /// Pooler integrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler_integrations: Option<PoolerIntegrations>,
    /// Commit hash of the operator.
    #[serde(
        default,
        rename = "cloudNativePGCommitHash",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg_commit_hash: Option<String>,
    /// Hash of the operator binary.
    #[serde(
        default,
        rename = "cloudNativePGOperatorHash",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg_operator_hash: Option<String>,
    /// Fingerprint of the operator's client certificate (instance API pinning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_certificate_fingerprint: Option<String>,
    /// Architectures the instance manager is available for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_architectures: Vec<AvailableArchitecture>,
    /// Whether online instance-manager upgrades are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_update_enabled: Option<bool>,
    /// The image in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image and major version of PGDATA.
    #[serde(
        default,
        rename = "pgDataImageInfo",
        skip_serializing_if = "Option::is_none"
    )]
    pub pg_data_image_info: Option<ImageInfo>,
    /// Image and major version PGDATA is being upgraded to.
    #[serde(
        default,
        rename = "targetPgDataImageInfo",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_pg_data_image_info: Option<ImageInfo>,
    /// Status of the plugins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_status: Vec<PluginStatus>,
    /// Replica-cluster switch in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_replica_cluster_status: Option<SwitchReplicaClusterStatus>,
    /// Demotion token published by a demoted primary cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demotion_token: Option<String>,
    /// The last promotion token used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promotion_token: Option<String>,
    /// cnpg-rs: the rest of the HA decisions' state (not in upstream's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_state: Option<HaState>,
}

/// The part of the decisions' persisted state that upstream keeps elsewhere (a
/// FailoverQuorum object, conditions, phases): kept here so an operator restarted at any
/// moment decides again from the status alone, and so instance managers read the
/// synchronous configuration they must apply. A cnpg-rs extension of the status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HaState {
    /// `synchronous_standby_names` the primary must apply (`""`: asynchronous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_standby_names: Option<String>,
    /// The synchronous configuration the primary confirmed in effect (JSON), which
    /// quorum-gated failovers rely on; absent while unknown or changing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_sync: Option<String>,
    /// Hibernation has begun.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hibernating: bool,
    /// The primary's pod is being recreated on purpose (no failover meanwhile).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub primary_restarting: bool,
    /// A token that changes when the primary must restart PostgreSQL in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
}

/// What an instance reported in the last loop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReportedState {
    /// Whether it is primary.
    pub is_primary: bool,
    /// Its timeline.
    #[serde(
        default,
        rename = "timeLineID",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_line_id: Option<i32>,
    /// Its pod IP.
    #[serde(default)]
    pub ip: String,
}

/// Failure-domain data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// Labels of each instance's failure domain.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, BTreeMap<String, String>>,
    /// Number of distinct nodes used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_used: Option<i32>,
    /// Whether the topology could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successfully_extracted: Option<bool>,
}

/// Resource versions of the Secrets the instances use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretsResourceVersion {
    /// Superuser Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret_version: Option<String>,
    /// Replication Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_secret_version: Option<String>,
    /// Application Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_secret_version: Option<String>,
    /// Managed role Secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub managed_role_secret_version: BTreeMap<String, String>,
    /// CA Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_version: Option<String>,
    /// Client CA Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_secret_version: Option<String>,
    /// Server CA Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ca_secret_version: Option<String>,
    /// Server Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_secret_version: Option<String>,
    /// Barman endpoint CA Secret.
    #[serde(
        default,
        rename = "barmanEndpointCA",
        skip_serializing_if = "Option::is_none"
    )]
    pub barman_endpoint_ca: Option<String>,
    /// External cluster Secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_cluster_secret_version: BTreeMap<String, String>,
    /// Metrics Secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, String>,
}

/// Resource versions of the ConfigMaps the instances use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapResourceVersion {
    /// Metrics ConfigMaps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, String>,
}

/// Certificates in use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificatesStatus {
    /// Secret with the server CA.
    #[serde(
        default,
        rename = "serverCASecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_ca_secret: Option<String>,
    /// Secret with the server certificate.
    #[serde(
        default,
        rename = "serverTLSSecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_tls_secret: Option<String>,
    /// Secret with the replication client certificate.
    #[serde(
        default,
        rename = "replicationTLSSecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub replication_tls_secret: Option<String>,
    /// Secret with the client CA.
    #[serde(
        default,
        rename = "clientCASecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ca_secret: Option<String>,
    /// Extra DNS names of the server certificate.
    #[serde(
        default,
        rename = "serverAltDNSNames",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub server_alt_dns_names: Vec<String>,
    /// Expiration time of each certificate, by Secret name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expirations: BTreeMap<String, String>,
}

/// State of a tablespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TablespaceState {
    /// Tablespace name.
    pub name: String,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `reconciled` or `pending`.
    pub state: String,
    /// Error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Pooler integrations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerIntegrations {
    /// PgBouncer integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bouncer_integration: Option<PgBouncerIntegrationStatus>,
}

/// PgBouncer integration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncerIntegrationStatus {
    /// Secrets shared with poolers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// An architecture the instance manager is available for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AvailableArchitecture {
    /// Go-style architecture name (`amd64`, `arm64`).
    pub go_arch: String,
    /// Hash of the binary.
    pub hash: String,
}

/// An image and its PostgreSQL major version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    /// Image.
    pub image: String,
    /// Major version.
    pub major_version: i32,
}

/// Status of a plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Operator capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_capabilities: Vec<String>,
    /// WAL capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wal_capabilities: Vec<String>,
    /// Backup capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_capabilities: Vec<String>,
    /// Restore job hook capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_job_hook_capabilities: Vec<String>,
    /// Free-form status reported by the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A replica-cluster switch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchReplicaClusterStatus {
    /// Whether a switch is in progress.
    #[serde(default)]
    pub in_progress: bool,
}
