//! CloudNativePG's `postgresql.cnpg.io/v1` API: the custom resources, their
//! CustomResourceDefinitions, and manifest checking.
//!
//! * [`Cluster`], [`Pooler`], [`Backup`], [`ScheduledBackup`], [`Database`], [`ImageCatalog`],
//!   [`ClusterImageCatalog`]: field-compatible with
//!   upstream (same camelCase names, types, defaults and enum values), so existing
//!   CloudNativePG manifests parse unchanged.
//! * [`crds`]: the CustomResourceDefinitions, structural, with status (and, for
//!   `Cluster` and `Pooler`, scale) subresources and upstream's printer columns.
//! * [`validation`]: the rules upstream's admission webhook enforces, as pure functions
//!   returning every error at once.
//! * [`manifest`]: checks an untyped document (unknown fields, wrong types, rule
//!   violations), the engine behind `kubectl-cnpg validate`.

// kube's derive takes one `printcolumn(...)` per column, all with the same keys (`type_`,
// `json_path`); clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod backup;
pub mod barman;
pub mod cluster;
pub mod common;
pub mod database;
pub mod image_catalog;
pub mod manifest;
pub mod policy;
pub mod pooler;
pub mod schema;
pub mod validation;

pub use backup::{Backup, BackupSpec, BackupStatus, ScheduledBackup, ScheduledBackupSpec};
pub use cluster::{Cluster, ClusterSpec, ClusterStatus, HaState};
pub use common::{API_VERSION, GROUP, VERSION};
pub use database::{Database, DatabaseSpec, DatabaseStatus};
pub use image_catalog::{ClusterImageCatalog, ImageCatalog};
pub use pooler::{Pooler, PoolerSpec, PoolerStatus};
pub use validation::{FieldError, Validate};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CustomResourceDefinitions, in a stable order: alphabetical by plural, like
/// upstream's `config/crd/bases`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Backup::crd(),
        ClusterImageCatalog::crd(),
        Cluster::crd(),
        Database::crd(),
        ImageCatalog::crd(),
        Pooler::crd(),
        ScheduledBackup::crd(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_is_structural() {
        for crd in crds() {
            let problems = schema::structural_problems(&crd);
            assert!(
                problems.is_empty(),
                "{:?}: {problems:#?}",
                crd.metadata.name
            );
        }
    }

    #[test]
    fn no_preserve_unknown_fields_anywhere() {
        // Upstream's CRDs only preserve unknown fields where an embedded free-form
        // object demands it; ours have none, so every unknown field is reported.
        for crd in crds() {
            assert_eq!(
                schema::preserve_unknown_fields_paths(&crd),
                Vec::<String>::new()
            );
        }
    }

    #[test]
    fn cluster_crd_has_upstream_shape() {
        let crd = Cluster::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("clusters.postgresql.cnpg.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1");
        let sub = v.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.instances");
        assert_eq!(scale.status_replicas_path, ".status.instances");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let cols: Vec<(&str, &str)> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            &cols[..5],
            &[
                ("Age", ".metadata.creationTimestamp"),
                ("Instances", ".status.instances"),
                ("Ready", ".status.readyInstances"),
                ("Status", ".status.phase"),
                ("Primary", ".status.currentPrimary"),
            ]
        );
    }

    #[test]
    fn quantities_are_int_or_string() {
        let crd = Cluster::crd();
        let spec = &crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"))
            .cloned()
            .expect("spec schema");
        let shm = spec
            .properties
            .as_ref()
            .and_then(|p| p.get("ephemeralVolumesSizeLimit"))
            .and_then(|p| p.properties.as_ref())
            .and_then(|p| p.get("shm"))
            .expect("shm");
        assert_eq!(shm.x_kubernetes_int_or_string, Some(true));
        assert!(shm.type_.is_none());
    }
}
