//! The `Pooler` resource: a PgBouncer Deployment and Service in front of a `Cluster`.

use super::cluster::RelabelConfig;
use super::cluster::ServiceTemplateSpec;
use super::common::{ImageCatalogComponentRef, LocalObjectReference};
use k8s_openapi::api::apps::v1::DeploymentStrategy;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The specification of a connection pooler.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Pooler",
    plural = "poolers",
    namespaced,
    status = "PoolerStatus",
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.instances"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
pub struct PoolerSpec {
    /// The Cluster this pooler connects to (immutable).
    pub cluster: LocalObjectReference,
    /// Which Service of the cluster it points at: `rw` (default), `ro` or `r`.
    #[serde(default, rename = "type")]
    pub type_: PoolerType,
    /// Number of PgBouncer pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub instances: Option<i32>,
    /// Template of the PgBouncer pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateSpec>,
    /// PgBouncer configuration.
    pub pgbouncer: PgBouncerSpec,
    /// Deployment strategy of the PgBouncer Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_strategy: Option<DeploymentStrategy>,
    /// Monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<PoolerMonitoringConfiguration>,
    /// Template of the pooler's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_template: Option<ServiceTemplateSpec>,
    /// Use this ServiceAccount instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// Which Service of the cluster a pooler targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolerType {
    /// The primary (`<cluster>-rw`).
    #[default]
    Rw,
    /// The replicas (`<cluster>-ro`).
    Ro,
    /// Every instance (`<cluster>-r`).
    R,
}

/// PgBouncer pool mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PgBouncerPoolMode {
    /// A server connection per client session.
    #[default]
    Session,
    /// A server connection per transaction.
    Transaction,
}

/// PgBouncer configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncerSpec {
    /// `session` (default) or `transaction`.
    #[serde(default)]
    pub pool_mode: PgBouncerPoolMode,
    /// Server TLS certificate Secret.
    #[serde(
        default,
        rename = "serverTLSSecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_tls_secret: Option<LocalObjectReference>,
    /// Server CA Secret.
    #[serde(
        default,
        rename = "serverCASecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_ca_secret: Option<LocalObjectReference>,
    /// Client CA Secret.
    #[serde(
        default,
        rename = "clientCASecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ca_secret: Option<LocalObjectReference>,
    /// Client TLS certificate Secret.
    #[serde(
        default,
        rename = "clientTLSSecret",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_tls_secret: Option<LocalObjectReference>,
    /// Credentials used by the auth query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query_secret: Option<LocalObjectReference>,
    /// The auth query (default `SELECT usename, passwd FROM public.user_search($1)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query: Option<String>,
    /// `pgbouncer.ini` parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// `pg_hba` lines of PgBouncer.
    #[serde(default, rename = "pg_hba", skip_serializing_if = "Vec::is_empty")]
    pub pg_hba: Vec<String>,
    /// Pause the pooler (`PAUSE`/`RESUME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The PgBouncer image (the operator's default when unset). Exclusive with
    /// `imageCatalogRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pick the PgBouncer image from an image catalog's `componentImages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_catalog_ref: Option<ImageCatalogComponentRef>,
}

/// Pooler monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerMonitoringConfiguration {
    /// Create a PodMonitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_pod_monitor: Option<bool>,
    /// Metric relabelings of the PodMonitor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_monitor_metric_relabelings: Vec<RelabelConfig>,
    /// Relabelings of the PodMonitor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_monitor_relabelings: Vec<RelabelConfig>,
}

/// The observed state of a pooler.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerStatus {
    /// Secrets in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<PoolerSecrets>,
    /// Number of PgBouncer pods.
    #[serde(default)]
    pub instances: i32,
    /// `active`, `paused`, `inactive` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the pooler is in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_reason: Option<String>,
    /// The PgBouncer image in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A Secret and the version in use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    /// Secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its resource version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Secrets a pooler uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerSecrets {
    /// Server TLS Secret.
    #[serde(default, rename = "serverTLS", skip_serializing_if = "Option::is_none")]
    pub server_tls: Option<SecretVersion>,
    /// Server CA Secret.
    #[serde(default, rename = "serverCA", skip_serializing_if = "Option::is_none")]
    pub server_ca: Option<SecretVersion>,
    /// Client CA Secret.
    #[serde(default, rename = "clientCA", skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<SecretVersion>,
    /// PgBouncer's own Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bouncer_secrets: Option<PgBouncerSecrets>,
}

/// PgBouncer's own Secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncerSecrets {
    /// The auth query Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query: Option<SecretVersion>,
}
