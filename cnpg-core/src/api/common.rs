//! Small types shared by several resources, shaped like CloudNativePG's own (they differ from
//! Kubernetes' core types of the same name: `name` is required, and metadata templates carry
//! only labels and annotations).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group of every resource of this API.
pub const GROUP: &str = "postgresql.cnpg.io";
/// The API version of every resource of this API.
pub const VERSION: &str = "v1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "postgresql.cnpg.io/v1";

pub use crate::naming::LocalObjectReference;

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    pub name: String,
    /// The key to select.
    pub key: String,
}

/// A key of a ConfigMap in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeySelector {
    /// Name of the ConfigMap.
    pub name: String,
    /// The key to select.
    pub key: String,
}

/// Labels and annotations to put on generated objects (a template's metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Name of the generated object, where the template allows choosing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where a backup runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupTarget {
    /// Always on the primary.
    #[serde(rename = "primary")]
    Primary,
    /// On the most aligned ready standby, falling back to the primary.
    #[default]
    #[serde(rename = "prefer-standby")]
    PreferStandby,
}

/// How a backup is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupMethod {
    /// Barman Cloud to an object store (deprecated in-tree support).
    #[default]
    #[serde(rename = "barmanObjectStore")]
    BarmanObjectStore,
    /// CSI volume snapshots of the instance's volumes.
    #[serde(rename = "volumeSnapshot")]
    VolumeSnapshot,
    /// A CNPG-I plugin.
    #[serde(rename = "plugin")]
    Plugin,
}

/// Settings for an online (hot) volume-snapshot backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineConfiguration {
    /// Wait for the WAL needed by the backup to be archived before finishing (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_archive: Option<bool>,
    /// Request an immediate checkpoint at backup start instead of a spread one (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_checkpoint: Option<bool>,
}

/// The plugin that takes a backup, and its parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPluginConfiguration {
    /// Name of the plugin.
    pub name: String,
    /// Parameters passed to the plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// An image of another component (PgBouncer) selected from an (Cluster)ImageCatalog's
/// `componentImages` by its key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageCatalogComponentRef {
    /// API group of the catalog (`postgresql.cnpg.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// `ImageCatalog` or `ClusterImageCatalog`.
    pub kind: String,
    /// Name of the catalog.
    pub name: String,
    /// The key of the entry in the catalog's `componentImages` (e.g. `pgbouncer`).
    pub key: String,
}

/// An image selected from an (Cluster)ImageCatalog by PostgreSQL major version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageCatalogRef {
    /// API group of the catalog (`postgresql.cnpg.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// `ImageCatalog` or `ClusterImageCatalog`.
    pub kind: String,
    /// Name of the catalog.
    pub name: String,
    /// The PostgreSQL major version to take from the catalog.
    pub major: i32,
}
