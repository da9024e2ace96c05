//! Names and labels of everything a cluster owns, as upstream names them, so existing
//! dashboards, selectors and `kubectl` habits keep working.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A reference to an object by name in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the referent.
    pub name: String,
}

/// Label: the cluster an object belongs to.
pub const LABEL_CLUSTER: &str = "cnpg.io/cluster";
/// Label: the instance a pod or PVC belongs to.
pub const LABEL_INSTANCE_NAME: &str = "cnpg.io/instanceName";
/// Label: `instance` or `pooler`.
pub const LABEL_POD_ROLE: &str = "cnpg.io/podRole";
/// Label: `primary`, `replica` or `unhealthy`; the `-rw`/`-ro` Services select on it.
pub const LABEL_INSTANCE_ROLE: &str = "cnpg.io/instanceRole";
/// Label: deprecated twin of [`LABEL_INSTANCE_ROLE`], kept in sync like upstream.
pub const LABEL_ROLE_LEGACY: &str = "role";
/// Label: `PG_DATA`, `PG_WAL` or `PG_TABLESPACE` on PVCs.
pub const LABEL_PVC_ROLE: &str = "cnpg.io/pvcRole";
/// Annotation on the Cluster: JSON list of fenced instances (`["*"]` for all).
pub const ANNOTATION_FENCED_INSTANCES: &str = "cnpg.io/fencedInstances";
/// Annotation on the Cluster: `on` or `off`.
pub const ANNOTATION_HIBERNATION: &str = "cnpg.io/hibernation";
/// Annotation: the serial of an instance.
pub const ANNOTATION_NODE_SERIAL: &str = "cnpg.io/nodeSerial";
/// Annotation on the Cluster or a Pod: a rolling restart request.
pub const ANNOTATION_RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Annotation on the Cluster: `disabled` stops reconciliation.
pub const ANNOTATION_RECONCILIATION_LOOP: &str = "cnpg.io/reconciliationLoop";
/// The `targetPrimary` marker during the first step of a failover.
pub const PENDING: &str = "pending";

/// The role an instance's pod is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Selected by `-rw`.
    Primary,
    /// Selected by `-ro`.
    Replica,
    /// Selected by neither: an old primary being failed over from.
    Unhealthy,
}

impl Role {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unhealthy => "unhealthy",
        }
    }
}

/// Name of the instance with this serial: `<cluster>-<serial>`.
pub fn instance_name(cluster: &str, serial: u32) -> String {
    format!("{cluster}-{serial}")
}

/// The serial of an instance name of this cluster (`pg-3` → 3).
pub fn serial_of(cluster: &str, instance: &str) -> Option<u32> {
    instance
        .strip_prefix(cluster)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|s| *s > 0)
}

/// The lowest serial not in use (upstream 1.30 reuses freed serials).
pub fn lowest_free_serial(used: &BTreeSet<u32>) -> u32 {
    (1..).find(|s| !used.contains(s)).unwrap_or(1)
}

/// PGDATA PVC name (the instance name).
pub fn pgdata_pvc(instance: &str) -> String {
    instance.to_owned()
}

/// WAL PVC name.
pub fn wal_pvc(instance: &str) -> String {
    format!("{instance}-wal")
}

/// Tablespace PVC name.
pub fn tablespace_pvc(instance: &str, tablespace: &str) -> String {
    format!("{instance}-tbs-{tablespace}")
}

/// The read-write Service (the primary).
pub fn service_rw(cluster: &str) -> String {
    format!("{cluster}-rw")
}

/// The read-only Service (the replicas).
pub fn service_ro(cluster: &str) -> String {
    format!("{cluster}-ro")
}

/// The read Service (every instance).
pub fn service_r(cluster: &str) -> String {
    format!("{cluster}-r")
}

/// The superuser Secret.
pub fn secret_superuser(cluster: &str) -> String {
    format!("{cluster}-superuser")
}

/// The application user Secret.
pub fn secret_app(cluster: &str) -> String {
    format!("{cluster}-app")
}

/// The `streaming_replica` client certificate Secret.
pub fn secret_replication(cluster: &str) -> String {
    format!("{cluster}-replication")
}

/// The CA Secret.
pub fn secret_ca(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// The server certificate Secret.
pub fn secret_server(cluster: &str) -> String {
    format!("{cluster}-server")
}

/// The HA replication slot of an instance: the prefix (default `_cnpg_`) and the instance
/// name lowercased with every character outside `[a-z0-9_]` turned into `_`.
pub fn replication_slot(prefix: &str, instance: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + instance.len());
    s.push_str(prefix);
    s.extend(instance.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names() {
        assert_eq!(instance_name("cluster-example", 2), "cluster-example-2");
        assert_eq!(serial_of("cluster-example", "cluster-example-12"), Some(12));
        assert_eq!(serial_of("cluster-example", "cluster-example-x"), None);
        assert_eq!(serial_of("pg", "pg-0"), None);
        assert_eq!(service_rw("pg"), "pg-rw");
        assert_eq!(wal_pvc("pg-1"), "pg-1-wal");
        assert_eq!(tablespace_pvc("pg-1", "archive"), "pg-1-tbs-archive");
        assert_eq!(
            replication_slot("_cnpg_", "cluster-example-2"),
            "_cnpg_cluster_example_2"
        );
        assert_eq!(
            lowest_free_serial(&BTreeSet::from([1, 2, 4])),
            3,
            "1.30 reuses the lowest free serial"
        );
        assert_eq!(lowest_free_serial(&BTreeSet::new()), 1);
    }
}
