//! The metadata every Kubernetes object of a cluster carries: its name, namespace, the
//! `cnpg.io/cluster` label, and a controlling owner reference to the Cluster, so that
//! deleting the Cluster lets the garbage collector delete everything made for it.
//!
//! Kept apart from [`super::specs`] and [`super::secrets`] because both build objects with
//! it: each depends on this file, neither on the other's internals.

use cnpg_core::api::Cluster;
use cnpg_core::naming;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use std::collections::BTreeMap;

/// The Cluster's name.
pub fn cluster_name(c: &Cluster) -> String {
    c.metadata.name.clone().unwrap_or_default()
}

/// The owner reference every object of the cluster carries.
pub fn owner(c: &Cluster) -> OwnerReference {
    OwnerReference {
        api_version: Cluster::api_version(&()).into_owned(),
        kind: Cluster::kind(&()).into_owned(),
        name: cluster_name(c),
        uid: c.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata for an object `name` of the cluster, in its namespace, owned by it.
pub fn meta(c: &Cluster, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: c.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![owner(c)]),
        ..Default::default()
    }
}

/// The labels every object of the cluster carries.
pub fn cluster_labels(c: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([(naming::LABEL_CLUSTER.to_owned(), cluster_name(c))])
}
