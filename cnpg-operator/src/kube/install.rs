//! `kubectl cnpg install generate`: everything needed to run the operator on a cluster —
//! the namespace, the CRDs (the same as `config/crd/`), the RBAC, the Deployment — as one
//! multi-document YAML for `kubectl apply --server-side -f -`.
//!
//! The RBAC is [`OPERATOR_PERMISSIONS`]: exactly what the operator's code calls (a test
//! runs the operator against the fake API server and compares), plus what it must hold to
//! grant the instance managers their Role ([`INSTANCE_PERMISSIONS`]: Kubernetes refuses to
//! let anyone grant permissions they do not hold), plus what admission checks without a
//! request of ours ([`ADMISSION_PERMISSIONS`]).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Namespace, PodSpec, PodTemplateSpec, Probe,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// One RBAC grant: API group, resource (with `/subresource`), verbs.
pub type Permission = (&'static str, &'static str, &'static [&'static str]);

/// What the operator does on the API (watch and reconcile clusters; make their pods,
/// PVCs, Services, PDBs, Secrets and the instance managers' RBAC; the poolers'
/// Deployments; events; its own Lease).
/// Objects it server-side applies need `create` beside `patch`: applying an object that does
/// not exist yet creates it, and the API server checks both.
pub const OPERATOR_PERMISSIONS: &[Permission] = &[
    ("postgresql.cnpg.io", "clusters", &["get", "list", "watch"]),
    ("postgresql.cnpg.io", "clusters/status", &["patch"]),
    (
        "postgresql.cnpg.io",
        "backups",
        // get: a cluster recovered from a Backup reads it (bootstrap.recovery.backup).
        &["list", "watch", "get", "create"],
    ),
    ("postgresql.cnpg.io", "backups/status", &["patch"]),
    ("postgresql.cnpg.io", "scheduledbackups", &["list", "watch"]),
    ("postgresql.cnpg.io", "scheduledbackups/status", &["patch"]),
    ("postgresql.cnpg.io", "poolers", &["list", "watch"]),
    // spec.imageCatalogRef: the catalog the image comes from, watched for new images.
    (
        "postgresql.cnpg.io",
        "imagecatalogs",
        &["get", "list", "watch"],
    ),
    (
        "postgresql.cnpg.io",
        "clusterimagecatalogs",
        &["get", "list", "watch"],
    ),
    ("postgresql.cnpg.io", "poolers/status", &["patch"]),
    ("apps", "deployments", &["list", "watch", "create", "patch"]),
    (
        "",
        "pods",
        &["list", "watch", "get", "create", "patch", "delete"],
    ),
    (
        "",
        "persistentvolumeclaims",
        &["list", "watch", "create", "patch", "delete"],
    ),
    ("", "services", &["list", "watch", "create", "patch"]),
    (
        "",
        "secrets",
        &["list", "watch", "get", "create", "update", "delete"],
    ),
    ("", "serviceaccounts", &["create", "patch"]),
    // The user's custom monitoring queries (spec.monitoring.customQueriesConfigMap), read
    // when a Cluster names them; list/watch of their metadata wakes it on an edit.
    ("", "configmaps", &["get", "list", "watch"]),
    // spec.monitoring.enablePodMonitor (where the Prometheus Operator is installed).
    (
        "monitoring.coreos.com",
        "podmonitors",
        &["create", "patch", "delete"],
    ),
    (
        "policy",
        "poddisruptionbudgets",
        &["list", "watch", "create", "patch", "delete"],
    ),
    ("rbac.authorization.k8s.io", "roles", &["create", "patch"]),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        &["create", "patch"],
    ),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
    ("events.k8s.io", "events", &["create", "patch"]),
    // Held only to grant them to the instance managers (the primary reconciles Databases).
    (
        "postgresql.cnpg.io",
        "databases",
        &["list", "watch", "patch"],
    ),
    ("postgresql.cnpg.io", "databases/status", &["patch"]),
];

/// What no request of ours uses but the API server checks: creating objects whose owner
/// reference blocks the Cluster's deletion needs `update` on `clusters/finalizers` where
/// the OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift, for one).
pub const ADMISSION_PERMISSIONS: &[Permission] =
    &[("postgresql.cnpg.io", "clusters/finalizers", &["update"])];

/// What an instance manager does on the API (read its Cluster, publish `currentPrimary`,
/// hold the primary Lease, record events, reconcile the `Database`s: watch them, write
/// their status and finalizer): the Role the operator grants each cluster.
pub const INSTANCE_PERMISSIONS: &[Permission] = &[
    (
        "postgresql.cnpg.io",
        "databases",
        &["list", "watch", "patch"],
    ),
    ("postgresql.cnpg.io", "databases/status", &["patch"]),
    ("postgresql.cnpg.io", "clusters", &["get", "list", "watch"]),
    ("postgresql.cnpg.io", "clusters/status", &["patch"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// RBAC rules from permissions, one rule per resource.
pub fn rules(perms: &[Permission]) -> Vec<PolicyRule> {
    perms
        .iter()
        .map(|(group, resource, verbs)| PolicyRule {
            api_groups: Some(vec![(*group).into()]),
            resources: Some(vec![(*resource).into()]),
            verbs: verbs.iter().map(|v| (*v).into()).collect(),
            ..Default::default()
        })
        .collect()
}

/// The flags of `install generate`.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Namespace of the operator.
    pub namespace: String,
    /// The operator image.
    pub image: String,
    /// Operator replicas (more than one: leader election picks the active one).
    pub replicas: i32,
    /// Watch only this namespace (default: all).
    pub watch_namespace: Option<String>,
}

const NAME: &str = "cnpg-controller-manager";
const SA: &str = "cnpg-manager";

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), "cnpg-rs".to_owned())])
}

fn to_yaml<T: serde::Serialize>(api_version: &str, kind: &str, v: &T) -> String {
    let mut value = serde_json::to_value(v).expect("Kubernetes objects serialize");
    if let Some(m) = value.as_object_mut() {
        m.insert("apiVersion".into(), api_version.into());
        m.insert("kind".into(), kind.into());
    }
    serde_saphyr::to_string(&value).expect("JSON values serialize to YAML")
}

/// The manifest: Namespace, CRDs, ServiceAccount, ClusterRole, ClusterRoleBinding,
/// Deployment.
pub fn generate(o: &InstallOptions) -> String {
    let meta = |name: &str, ns: bool| ObjectMeta {
        name: Some(name.into()),
        namespace: ns.then(|| o.namespace.clone()),
        labels: Some(labels()),
        ..Default::default()
    };
    let mut docs = vec![to_yaml(
        "v1",
        "Namespace",
        &Namespace {
            metadata: meta(&o.namespace, false),
            ..Default::default()
        },
    )];
    for crd in cnpg_core::api::crds() {
        docs.push(serde_saphyr::to_string(&crd).expect("CRDs serialize"));
    }
    docs.push(to_yaml(
        "v1",
        "ServiceAccount",
        &ServiceAccount {
            metadata: meta(SA, true),
            ..Default::default()
        },
    ));
    docs.push(to_yaml(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        &ClusterRole {
            metadata: meta(SA, false),
            rules: Some(rules(
                &[OPERATOR_PERMISSIONS, ADMISSION_PERMISSIONS].concat(),
            )),
            ..Default::default()
        },
    ));
    docs.push(to_yaml(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        &ClusterRoleBinding {
            metadata: meta(SA, false),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: SA.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: SA.into(),
                namespace: Some(o.namespace.clone()),
                ..Default::default()
            }]),
        },
    ));
    let mut args = vec!["--health-addr".to_owned(), "0.0.0.0:8081".to_owned()];
    if let Some(ns) = &o.watch_namespace {
        args.extend(["--watch-namespace".to_owned(), ns.clone()]);
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(8081),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(NAME, true),
        spec: Some(DeploymentSpec {
            replicas: Some(o.replicas),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(SA.into()),
                    containers: vec![Container {
                        name: "manager".into(),
                        image: Some(o.image.clone()),
                        command: Some(vec!["/usr/local/bin/cnpg-operator".into()]),
                        args: Some(args),
                        env: Some(vec![
                            EnvVar {
                                name: "OPERATOR_IMAGE".into(),
                                value: Some(o.image.clone()),
                                ..Default::default()
                            },
                            super::specs::env_from_field("POD_NAME", "metadata.name"),
                            super::specs::env_from_field("POD_NAMESPACE", "metadata.namespace"),
                        ]),
                        ports: Some(vec![ContainerPort {
                            name: Some("health".into()),
                            container_port: 8081,
                            ..Default::default()
                        }]),
                        liveness_probe: Some(probe("/healthz")),
                        readiness_probe: Some(probe("/readyz")),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    docs.push(to_yaml("apps/v1", "Deployment", &deployment));
    docs.iter()
        .map(|d| format!("---\n{}", d.trim_start_matches("---\n")))
        .collect::<Vec<_>>()
        .join("")
}
