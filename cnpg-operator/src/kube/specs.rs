//! The Kubernetes objects of a cluster, built from its spec: instance Pods and their PVCs,
//! the `-rw`/`-ro`/`-r` Services, the PodDisruptionBudgets. Pure functions, laid out like
//! upstream's `pkg/specs` so manifests, selectors and dashboards keep working.
//!
//! Every object is built from scratch each time (server-side apply owns exactly what we
//! send) and carries an owner reference to the Cluster, so deleting the Cluster deletes
//! them all.

use cnpg_core::api::Cluster;
use cnpg_core::api::cluster::{ProbeWithStrategy, StorageConfiguration};
use cnpg_core::naming::{self, Role};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, Probe, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::meta::{cluster_labels, cluster_name, meta};
use super::secrets::{
    CertificateSecrets, app_names, archive_secret, operator_client_secret, passwords_secret,
};

/// The image used when the Cluster names none.
pub const DEFAULT_IMAGE: &str = "ghcr.io/cloudnative-pg/postgresql:18.1-system-trixie";
/// The port PostgreSQL listens on in a pod.
pub const POSTGRES_PORT: i32 = 5432;
/// The instance manager's status port.
pub const STATUS_PORT: i32 = 8000;
/// The metrics port (upstream's): `/metrics` alone, plain HTTP unless
/// `spec.monitoring.tls.enabled`; the status port serves it too.
pub const METRICS_PORT: i32 = 9187;
/// Where PGDATA's volume is mounted.
pub const PGDATA_MOUNT: &str = "/var/lib/postgresql/data";
/// PGDATA inside its volume.
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Annotation on a Pod: hash of the pod template it was made from (drift detection).
pub const ANNOTATION_POD_SPEC_HASH: &str = "cnpg.io/podSpecHash";
/// Annotation on a PVC: `initializing`, `ready` or `detached`.
pub const ANNOTATION_PVC_STATUS: &str = "cnpg.io/pvcStatus";
/// A PVC whose instance is still being made (initdb, recovery, a join copying the
/// primary): what it holds is not yet a member's data.
pub const PVC_INITIALIZING: &str = "initializing";
/// A PVC whose instance has run: its data is a member's.
pub const PVC_READY: &str = "ready";
/// Label on PVCs: the tablespace.
pub const LABEL_TABLESPACE: &str = "cnpg.io/tablespaceName";

/// What the operator knows that the Cluster does not say.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// The operator's image: its init container copies `cnpg-instance` out of it.
    pub operator_image: String,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            operator_image: "ghcr.io/cnpg-rs/cnpg-operator:0.1.0".into(),
        }
    }
}

/// The image the instances run.
pub fn image(c: &Cluster) -> String {
    c.spec
        .image_name
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned())
}

/// The labels of an instance's pod.
pub fn pod_labels(c: &Cluster, instance: &str, role: Role) -> BTreeMap<String, String> {
    let mut l = cluster_labels(c);
    l.insert(naming::LABEL_INSTANCE_NAME.into(), instance.into());
    l.insert(naming::LABEL_POD_ROLE.into(), "instance".into());
    l.insert(naming::LABEL_INSTANCE_ROLE.into(), role.as_str().into());
    l.insert(naming::LABEL_ROLE_LEGACY.into(), role.as_str().into());
    l.insert("app.kubernetes.io/name".into(), "postgresql".into());
    l.insert("app.kubernetes.io/instance".into(), cluster_name(c));
    l.insert("app.kubernetes.io/component".into(), "database".into());
    l.insert("app.kubernetes.io/managed-by".into(), "cnpg-rs".into());
    l
}

/// How an instance's first start gets its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The PVC holds data already.
    Existing,
    /// `initdb`.
    Initdb,
    /// `pg_basebackup` from the `-rw` Service.
    Join,
    /// Recovered from backups (`bootstrap.recovery`): from the backup with this id when a
    /// `Backup` object named it.
    Recover {
        /// The backup's id.
        backup_id: Option<String>,
    },
}

/// A probe from `spec.probes` over upstream's defaults (period 10 s, timeout 5 s).
fn probe(path: &str, spec: Option<&ProbeWithStrategy>, failure_threshold: i32) -> Probe {
    let s = spec.cloned().unwrap_or_default();
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(STATUS_PORT),
            // The status server speaks only HTTPS; a kubelet does not verify a probe's
            // certificate, and the probes need no client certificate.
            scheme: Some("HTTPS".into()),
            ..Default::default()
        }),
        initial_delay_seconds: s.initial_delay_seconds,
        period_seconds: Some(s.period_seconds.unwrap_or(10)),
        timeout_seconds: Some(s.timeout_seconds.unwrap_or(5)),
        success_threshold: s.success_threshold,
        failure_threshold: Some(s.failure_threshold.unwrap_or(failure_threshold)),
        termination_grace_period_seconds: s.termination_grace_period_seconds,
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// A variable the downward API fills from a field of the Pod (`metadata.name`,
/// `status.podIP`, ...).
pub fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

pub(crate) fn port(name: &str, p: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The instance manager's flag to serve its status over HTTPS, taking the operator by its
/// client certificate.
pub const STATUS_TLS_FLAG: &str = "--status-tls";

/// Where the cluster's certificates are mounted (read-only; the instance manager copies
/// them into its secrets directory, private, and again whenever they change).
const CERTIFICATES: &str = "/projected/certificates";

/// These keys of a Secret, each at its path in a projected volume.
pub(crate) fn secret_projection(
    secret: &str,
    items: &[(&str, &str)],
) -> k8s_openapi::api::core::v1::VolumeProjection {
    use k8s_openapi::api::core::v1::{KeyToPath, SecretProjection, VolumeProjection};
    VolumeProjection {
        secret: Some(SecretProjection {
            name: secret.to_owned(),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).into(),
                        path: (*path).into(),
                        mode: None,
                    })
                    .collect(),
            ),
            optional: None,
        }),
        ..Default::default()
    }
}

/// The WAL archive's configuration, when the cluster archives: `archive.json` and the
/// endpoint's CA, from [`archive_secret`].
fn archive_projection(c: &Cluster) -> Option<k8s_openapi::api::core::v1::VolumeProjection> {
    let store = c.spec.backup.as_ref()?.barman_object_store.as_ref()?;
    let mut items = vec![("archive.json", "archive.json")];
    if store.endpoint_ca.is_some() {
        items.push(("archive-ca.crt", "archive-ca.crt"));
    }
    Some(secret_projection(
        &archive_secret(&c.metadata.name.clone().unwrap_or_default()),
        &items,
    ))
}

/// The recovery source's configuration, when the cluster is made from backups (optional:
/// only the first instance's first start reads it).
fn recovery_projection(c: &Cluster) -> Option<k8s_openapi::api::core::v1::VolumeProjection> {
    if !crate::recovery::recovering(c) {
        return None;
    }
    let mut p = secret_projection(
        &crate::kube::secrets::recovery_secret(&c.metadata.name.clone().unwrap_or_default()),
        &[
            ("recovery-source.json", "recovery-source.json"),
            ("recovery-source-ca.crt", "recovery-source-ca.crt"),
        ],
    );
    if let Some(s) = p.secret.as_mut() {
        s.optional = Some(true);
    }
    Some(p)
}

/// `file` of the operator's Secret `secret`, optional: the managed roles' passwords and
/// the monitoring configuration are always projected, so a role given a password or a
/// custom query later rolls no pod.
fn optional_file(secret: &str, file: &str) -> k8s_openapi::api::core::v1::VolumeProjection {
    let mut p = secret_projection(secret, &[(file, file)]);
    if let Some(s) = p.secret.as_mut() {
        s.optional = Some(true);
    }
    p
}

/// The certificates an instance needs, from the Secrets that hold them (the user's or the
/// operator's), under the names `cnpg-instance` expects — and never a CA's key.
fn certificates_volume(c: &Cluster) -> Volume {
    use k8s_openapi::api::core::v1::ProjectedVolumeSource;
    let names = CertificateSecrets::of(c);
    let project = secret_projection;
    let cluster = c.metadata.name.clone().unwrap_or_default();
    Volume {
        name: "certificates".into(),
        projected: Some(ProjectedVolumeSource {
            // Readable by the pod's group only; the manager's copies are 0600.
            default_mode: Some(0o440),
            sources: Some(
                vec![
                    project(&names.server_ca, &[("ca.crt", "ca.crt")]),
                    project(
                        &names.server_tls,
                        &[("tls.crt", "server.crt"), ("tls.key", "server.key")],
                    ),
                    project(&names.client_ca, &[("ca.crt", "client-ca.crt")]),
                    project(
                        &names.replication_tls,
                        &[
                            ("tls.crt", "streaming_replica.crt"),
                            ("tls.key", "streaming_replica.key"),
                        ],
                    ),
                    // Only the CA of the operator's client certificate: its key is the
                    // operator's alone.
                    project(
                        &operator_client_secret(&cluster),
                        &[("ca.crt", "operator-ca.crt")],
                    ),
                ]
                .into_iter()
                .chain(archive_projection(c))
                .chain(recovery_projection(c))
                .chain([
                    optional_file(
                        &crate::kube::secrets::managed_roles_secret(&cluster),
                        "managed-roles.json",
                    ),
                    optional_file(
                        &crate::kube::secrets::monitoring_secret(&cluster),
                        "monitoring.json",
                    ),
                ])
                .collect(),
            ),
        }),
        ..Default::default()
    }
}

/// The Prometheus Operator's PodMonitor for the cluster's instances
/// (`spec.monitoring.enablePodMonitor`): their `metrics` port, over HTTPS when
/// `spec.monitoring.tls.enabled`, with the user's relabelings. Owned by the Cluster.
pub fn pod_monitor(c: &Cluster) -> serde_json::Value {
    let name = cluster_name(c);
    let m = c.spec.monitoring.clone().unwrap_or_default();
    let tls = m.tls.as_ref().is_some_and(|t| t.enabled);
    let mut endpoint = serde_json::json!({
        "port": "metrics",
        "scheme": if tls { "https" } else { "http" },
    });
    if !m.pod_monitor_relabelings.is_empty() {
        endpoint["relabelings"] = serde_json::json!(m.pod_monitor_relabelings);
    }
    if !m.pod_monitor_metric_relabelings.is_empty() {
        endpoint["metricRelabelings"] = serde_json::json!(m.pod_monitor_metric_relabelings);
    }
    if tls {
        // The server certificate names the Services, not the pods' addresses.
        endpoint["tlsConfig"] = serde_json::json!({"insecureSkipVerify": true});
    }
    serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": name,
            "namespace": c.metadata.namespace,
            "labels": cluster_labels(c),
            "ownerReferences": [super::meta::owner(c)],
        },
        "spec": {
            "selector": {"matchLabels": {
                naming::LABEL_CLUSTER: name,
                naming::LABEL_POD_ROLE: "instance",
            }},
            "podMetricsEndpoints": [endpoint],
        },
    })
}

fn runtime_default() -> k8s_openapi::api::core::v1::SeccompProfile {
    k8s_openapi::api::core::v1::SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// Upstream's hardened default for every container, unless the user gives
/// `spec.securityContext`: no privilege escalation, every capability dropped, not
/// privileged, the runtime's seccomp profile, and a read-only root filesystem (PostgreSQL
/// and the manager write only to their volumes — PGDATA, `/controller` with its socket and
/// temporary directories — and to the `/dev/shm` every container runtime mounts).
fn container_security_context(c: &Cluster) -> k8s_openapi::api::core::v1::SecurityContext {
    c.spec
        .security_context
        .clone()
        .unwrap_or_else(hardened_container)
}

/// The hardened container security context upstream gives every container it makes.
pub(crate) fn hardened_container() -> k8s_openapi::api::core::v1::SecurityContext {
    use k8s_openapi::api::core::v1::{Capabilities, SecurityContext};
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// The init container that copies `cnpg-instance` out of the operator's image into
/// `/controller` (so any PostgreSQL or PgBouncer image can run it), with `more` arguments.
pub(crate) fn install_container(
    settings: &OperatorSettings,
    more: &[&str],
    volume_mounts: Vec<VolumeMount>,
    security: k8s_openapi::api::core::v1::SecurityContext,
) -> Container {
    let mut command: Vec<String> = [
        "/usr/local/bin/cnpg-instance",
        "install",
        "--to",
        "/controller",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    command.extend(more.iter().map(|s| (*s).to_owned()));
    Container {
        name: "bootstrap-controller".into(),
        image: Some(settings.operator_image.clone()),
        command: Some(command),
        volume_mounts: Some(volume_mounts),
        security_context: Some(security),
        ..Default::default()
    }
}

/// The instance manager's common arguments.
fn instance_args(c: &Cluster, instance: &str) -> Vec<String> {
    vec![
        "--pgdata".into(),
        PGDATA.into(),
        "--cluster".into(),
        cluster_name(c),
        "--name".into(),
        instance.into(),
        "--secrets".into(),
        "/controller/secrets".into(),
    ]
}

/// The pod of an instance. Its spec hash (annotation [`ANNOTATION_POD_SPEC_HASH`]) tells
/// when a running pod is outdated: it covers everything but the role label and the data
/// source (a pod recreated on existing data is the same pod).
pub fn instance_pod(
    c: &Cluster,
    settings: &OperatorSettings,
    instance: &str,
    role: Role,
    source: &DataSource,
) -> Pod {
    let name = cluster_name(c);
    let controller = mount("scratch-data", "/controller");
    let mut mounts = vec![
        controller.clone(),
        mount("pgdata", PGDATA_MOUNT),
        mount("certificates", CERTIFICATES),
    ];
    let mut volumes = vec![
        Volume {
            name: "scratch-data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "pgdata".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: naming::pgdata_pvc(instance),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "passwords".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(passwords_secret(&name)),
                ..Default::default()
            }),
            ..Default::default()
        },
        certificates_volume(c),
    ];
    if c.spec.wal_storage.is_some() {
        mounts.push(mount("pg-wal", "/var/lib/postgresql/wal"));
        volumes.push(Volume {
            name: "pg-wal".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: naming::wal_pvc(instance),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    for t in &c.spec.tablespaces {
        let vol = format!("tbs-{}", t.name);
        mounts.push(mount(
            &vol,
            &format!("/var/lib/postgresql/tablespaces/{}", t.name),
        ));
        volumes.push(Volume {
            name: vol,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: naming::tablespace_pvc(instance, &t.name),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut envs = vec![
        env("PGDATA", PGDATA),
        env("CLUSTER_NAME", &name),
        env("PGHOST", "/controller/run"),
        env("PGPORT", &POSTGRES_PORT.to_string()),
        env("TMPDIR", "/controller/tmp"),
        env_from_field("POD_NAME", "metadata.name"),
        env_from_field("POD_IP", "status.podIP"),
        env_from_field("NAMESPACE", "metadata.namespace"),
    ];
    envs.extend(c.spec.env.iter().cloned());
    let mut run_args = vec!["run".to_owned()];
    run_args.extend(instance_args(c, instance));
    // The pod's own address (and localhost, for `kubectl port-forward`) rather than every
    // address: the same inside a pod, and pods sharing a host's network (a test kubelet,
    // hostNetwork) do not take each other's ports. PostgreSQL starts when at least one of
    // its addresses can be bound.
    run_args.extend([
        "--kubernetes".into(),
        "--port".into(),
        POSTGRES_PORT.to_string(),
        "--listen".into(),
        "$(POD_IP),localhost".into(),
        "--status-port".into(),
        STATUS_PORT.to_string(),
        "--status-listen".into(),
        "$(POD_IP)".into(),
        "--smart-shutdown-timeout".into(),
        c.spec.smart_shutdown_timeout.to_string(),
        "--stop-timeout".into(),
        c.spec.switchover_delay.to_string(),
        "--certificates-from".into(),
        CERTIFICATES.into(),
        STATUS_TLS_FLAG.into(),
        // Upstream's metrics port, where PodMonitors and Prometheus scrape.
        "--metrics-port".into(),
        METRICS_PORT.to_string(),
    ]);
    if c.spec
        .monitoring
        .as_ref()
        .and_then(|m| m.tls.as_ref())
        .is_some_and(|t| t.enabled)
    {
        run_args.push("--metrics-tls".into());
    }
    let probes = c.spec.probes.clone().unwrap_or_default();
    let start_threshold = (c.spec.start_delay.max(10) + 9) / 10;
    let liveness = probes.liveness.as_ref().map(|l| ProbeWithStrategy {
        initial_delay_seconds: l.initial_delay_seconds,
        timeout_seconds: l.timeout_seconds,
        period_seconds: l.period_seconds,
        success_threshold: l.success_threshold,
        failure_threshold: l.failure_threshold,
        termination_grace_period_seconds: l.termination_grace_period_seconds,
        ..Default::default()
    });
    let liveness_threshold = c
        .spec
        .liveness_probe_timeout
        .map_or(3, |t| ((t + 9) / 10).max(1));
    let postgres = Container {
        name: "postgres".into(),
        image: Some(image(c)),
        image_pull_policy: c.spec.image_pull_policy.clone(),
        command: Some(vec!["/controller/cnpg-instance".into()]),
        args: Some(run_args),
        env: Some(envs.clone()),
        env_from: (!c.spec.env_from.is_empty()).then(|| c.spec.env_from.clone()),
        ports: Some(vec![
            port("postgresql", POSTGRES_PORT),
            port("metrics", METRICS_PORT),
            port("status", STATUS_PORT),
        ]),
        startup_probe: Some(probe("/startupz", probes.startup.as_ref(), start_threshold)),
        readiness_probe: Some(probe("/readyz", probes.readiness.as_ref(), 3)),
        liveness_probe: Some(probe("/healthz", liveness.as_ref(), liveness_threshold)),
        resources: c.spec.resources.clone(),
        security_context: Some(container_security_context(c)),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    let mut init = vec![install_container(
        settings,
        &["--passwords", "/passwords", "--certificates", CERTIFICATES],
        vec![
            controller,
            mount("passwords", "/passwords"),
            mount("certificates", CERTIFICATES),
        ],
        container_security_context(c),
    )];
    let bootstrap = match source {
        DataSource::Existing => None,
        DataSource::Initdb => {
            let (db, owner) = app_names(c);
            Some(vec![
                "initdb".to_owned(),
                "--app-db".into(),
                db,
                "--app-owner".into(),
                owner,
            ])
        }
        DataSource::Recover { backup_id } => {
            // Its progress goes to the Cluster's status as it runs.
            let mut args = vec!["recover".to_owned(), "--kubernetes".to_owned()];
            args.extend(crate::recovery::recover_args(
                c,
                crate::kube::secrets::RECOVERY_CONFIG_IN_POD,
                backup_id.clone(),
            ));
            Some(args)
        }
        DataSource::Join => Some(vec![
            "join".to_owned(),
            "--source-host".into(),
            naming::service_rw(&name),
            "--source-port".into(),
            POSTGRES_PORT.to_string(),
        ]),
    };
    if let Some(mut args) = bootstrap {
        let verb = args.remove(0);
        let mut all = vec![verb];
        all.extend(instance_args(c, instance));
        all.push("--skip-if-initialized".into());
        all.extend(args);
        init.push(Container {
            name: "bootstrap".into(),
            image: Some(image(c)),
            command: Some(vec!["/controller/cnpg-instance".into()]),
            args: Some(all),
            env: Some(envs),
            volume_mounts: Some(mounts),
            resources: c.spec.resources.clone(),
            security_context: Some(container_security_context(c)),
            // Why it failed reaches the pod's status, and from there the Cluster's.
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Default::default()
        });
    }
    let affinity = c.spec.affinity.clone().unwrap_or_default();
    let spec = PodSpec {
        init_containers: Some(init),
        containers: vec![postgres],
        volumes: Some(volumes),
        affinity: pod_affinity(c, &affinity),
        node_selector: (!affinity.node_selector.is_empty()).then(|| affinity.node_selector.clone()),
        tolerations: (!affinity.tolerations.is_empty()).then(|| affinity.tolerations.clone()),
        topology_spread_constraints: (!c.spec.topology_spread_constraints.is_empty())
            .then(|| c.spec.topology_spread_constraints.clone()),
        // Upstream's default: everything runs as the image's postgres user (26), and the
        // volumes belong to its group, so the init container's copies are readable.
        security_context: Some(c.spec.pod_security_context.clone().unwrap_or_else(|| {
            k8s_openapi::api::core::v1::PodSecurityContext {
                run_as_user: Some(c.spec.postgres_uid),
                run_as_group: Some(c.spec.postgres_gid),
                fs_group: Some(c.spec.postgres_gid),
                run_as_non_root: Some(true),
                seccomp_profile: Some(runtime_default()),
                ..Default::default()
            }
        })),
        scheduler_name: c.spec.scheduler_name.clone(),
        priority_class_name: c.spec.priority_class_name.clone(),
        service_account_name: Some(
            c.spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| name.clone()),
        ),
        automount_service_account_token: Some(true),
        termination_grace_period_seconds: Some(i64::from(c.spec.stop_delay)),
        hostname: Some(instance.into()),
        subdomain: Some(format!("{name}-any")),
        image_pull_secrets: (!c.spec.image_pull_secrets.is_empty()).then(|| {
            c.spec
                .image_pull_secrets
                .iter()
                .map(|r| k8s_openapi::api::core::v1::LocalObjectReference {
                    name: r.name.clone(),
                })
                .collect()
        }),
        ..Default::default()
    };
    let hash = spec_hash(c, settings, instance);
    let mut m = meta(c, instance, pod_labels(c, instance, role));
    let serial = naming::serial_of(&name, instance).unwrap_or(0);
    let mut annotations = BTreeMap::from([
        (
            naming::ANNOTATION_NODE_SERIAL.to_owned(),
            serial.to_string(),
        ),
        (ANNOTATION_POD_SPEC_HASH.to_owned(), hash),
    ]);
    if let Some(r) = restart_annotation(c) {
        annotations.insert(naming::ANNOTATION_RESTARTED_AT.into(), r);
    }
    m.annotations = Some(annotations);
    Pod {
        metadata: m,
        spec: Some(spec),
        status: None,
    }
}

/// Affinity: upstream's anti-affinity between the cluster's instances (on by default,
/// `preferred` with weight 100 on `kubernetes.io/hostname`, or `required`), merged with
/// the user's node affinity and additional pod (anti-)affinity.
fn pod_affinity(
    c: &Cluster,
    a: &cnpg_core::api::cluster::AffinityConfiguration,
) -> Option<k8s_openapi::api::core::v1::Affinity> {
    use cnpg_core::api::cluster::PodAntiAffinityType;
    use k8s_openapi::api::core::v1::{
        Affinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    let mut anti = a.additional_pod_anti_affinity.clone().unwrap_or_default();
    if a.enable_pod_anti_affinity != Some(false) {
        let term = PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (naming::LABEL_CLUSTER.to_owned(), cluster_name(c)),
                    (naming::LABEL_POD_ROLE.to_owned(), "instance".to_owned()),
                ])),
                ..Default::default()
            }),
            topology_key: a
                .topology_key
                .clone()
                .unwrap_or_else(|| "kubernetes.io/hostname".into()),
            ..Default::default()
        };
        match a.pod_anti_affinity_type.unwrap_or_default() {
            PodAntiAffinityType::Required => anti
                .required_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new)
                .push(term),
            PodAntiAffinityType::Preferred => anti
                .preferred_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new)
                .push(WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                }),
        }
    }
    let anti = (anti != PodAntiAffinity::default()).then_some(anti);
    let out = Affinity {
        node_affinity: a.node_affinity.clone(),
        pod_affinity: a.additional_pod_affinity.clone(),
        pod_anti_affinity: anti,
    };
    (out != Affinity::default()).then_some(out)
}

/// The Cluster's rolling-restart request, copied on the pods it made.
pub fn restart_annotation(c: &Cluster) -> Option<String> {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(naming::ANNOTATION_RESTARTED_AT))
        .cloned()
}

/// A hash of what makes an instance's pod: when it changes, the pod is outdated.
pub fn spec_hash(c: &Cluster, settings: &OperatorSettings, instance: &str) -> String {
    let pod = instance_pod_template(c, settings, instance);
    let text = serde_json::to_string(&pod).unwrap_or_default();
    // FNV-1a: stable across runs and Rust versions (DefaultHasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What the hash covers: the main container and the pod-level scheduling fields.
fn instance_pod_template(
    c: &Cluster,
    settings: &OperatorSettings,
    instance: &str,
) -> serde_json::Value {
    serde_json::json!({
        "image": image(c),
        "operatorImage": settings.operator_image,
        "resources": c.spec.resources,
        "env": c.spec.env,
        "envFrom": c.spec.env_from,
        "affinity": c.spec.affinity,
        "topologySpreadConstraints": c.spec.topology_spread_constraints,
        "securityContext": c.spec.security_context,
        "podSecurityContext": c.spec.pod_security_context,
        "probes": c.spec.probes,
        "schedulerName": c.spec.scheduler_name,
        "priorityClassName": c.spec.priority_class_name,
        "instance": instance,
    })
}

fn pvc(
    c: &Cluster,
    name: &str,
    instance: &str,
    role: &str,
    storage: &StorageConfiguration,
    tablespace: Option<&str>,
) -> PersistentVolumeClaim {
    let mut labels = cluster_labels(c);
    labels.insert(naming::LABEL_INSTANCE_NAME.into(), instance.into());
    labels.insert(naming::LABEL_PVC_ROLE.into(), role.into());
    if let Some(t) = tablespace {
        labels.insert(LABEL_TABLESPACE.into(), t.into());
    }
    let mut m = meta(c, name, labels);
    let serial = naming::serial_of(&cluster_name(c), instance).unwrap_or(0);
    m.annotations = Some(BTreeMap::from([
        (
            naming::ANNOTATION_NODE_SERIAL.to_owned(),
            serial.to_string(),
        ),
        // Created before the instance is made: the operator marks it ready once the
        // instance first answers (upstream's states, so its tools read them alike).
        (
            ANNOTATION_PVC_STATUS.to_owned(),
            PVC_INITIALIZING.to_owned(),
        ),
    ]));
    let mut spec = storage.pvc_template.clone().unwrap_or_default();
    if spec.access_modes.is_none() {
        spec.access_modes = Some(vec!["ReadWriteOnce".into()]);
    }
    if let Some(sc) = &storage.storage_class {
        spec.storage_class_name = Some(sc.clone());
    }
    if let Some(size) = &storage.size {
        let mut res = spec.resources.unwrap_or_default();
        res.requests
            .get_or_insert_with(BTreeMap::new)
            .insert("storage".into(), Quantity(size.clone()));
        spec.resources = Some(res);
    } else if spec.resources.is_none() {
        spec.resources = Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity("1Gi".into()),
            )])),
            ..Default::default()
        });
    }
    PersistentVolumeClaim {
        metadata: m,
        spec: Some(PersistentVolumeClaimSpec { ..spec }),
        status: None,
    }
}

/// The PVCs of an instance: data, WAL (with `walStorage`) and one per tablespace.
pub fn instance_pvcs(c: &Cluster, instance: &str) -> Vec<PersistentVolumeClaim> {
    let data = c.spec.storage.clone().unwrap_or_default();
    let mut out = vec![pvc(
        c,
        &naming::pgdata_pvc(instance),
        instance,
        "PG_DATA",
        &data,
        None,
    )];
    if let Some(wal) = &c.spec.wal_storage {
        out.push(pvc(
            c,
            &naming::wal_pvc(instance),
            instance,
            "PG_WAL",
            wal,
            None,
        ));
    }
    for t in &c.spec.tablespaces {
        out.push(pvc(
            c,
            &naming::tablespace_pvc(instance, &t.name),
            instance,
            "PG_TABLESPACE",
            &t.storage,
            Some(&t.name),
        ));
    }
    out
}

/// The Services: `-rw` (the primary), `-ro` (replicas), `-r` (every instance), all on
/// 5432, port name `postgres`; `-ro`/`-r` can be turned off in `managed.services`.
pub fn services(c: &Cluster) -> Vec<Service> {
    let name = cluster_name(c);
    let disabled: Vec<String> = c
        .spec
        .managed
        .as_ref()
        .and_then(|m| m.services.as_ref())
        .map(|s| {
            s.disabled_default_services
                .iter()
                .map(|d| format!("{d:?}").to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let svc = |svc_name: String, selector: BTreeMap<String, String>| Service {
        metadata: meta(c, &svc_name, cluster_labels(c)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: POSTGRES_PORT,
                target_port: Some(IntOrString::Int(POSTGRES_PORT)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let by_role = |role: Role| {
        let mut s = cluster_labels(c);
        s.insert(naming::LABEL_INSTANCE_ROLE.into(), role.as_str().into());
        s
    };
    let mut all = cluster_labels(c);
    all.insert(naming::LABEL_POD_ROLE.into(), "instance".into());
    let mut out = vec![svc(naming::service_rw(&name), by_role(Role::Primary))];
    if !disabled.iter().any(|d| d == "ro") {
        out.push(svc(naming::service_ro(&name), by_role(Role::Replica)));
    }
    if !disabled.iter().any(|d| d == "r") {
        out.push(svc(naming::service_r(&name), all));
    }
    out
}

/// The PodDisruptionBudgets the core decides ([`cnpg_core::pdb::pdbs`]).
pub fn pdbs(c: &Cluster) -> Vec<PodDisruptionBudget> {
    let name = cluster_name(c);
    let reuse = c
        .spec
        .node_maintenance_window
        .as_ref()
        .is_some_and(|w| w.in_progress && w.reuse_pvc.unwrap_or(true));
    cnpg_core::pdb::pdbs(
        &name,
        c.spec.instances.max(0) as u32,
        c.spec.enable_pdb.unwrap_or(true),
        reuse,
    )
    .into_iter()
    .map(|p| {
        let mut selector = cluster_labels(c);
        selector.insert(naming::LABEL_INSTANCE_ROLE.into(), p.role.as_str().into());
        PodDisruptionBudget {
            metadata: meta(c, &p.name, cluster_labels(c)),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(p.min_available as i32)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    })
    .collect()
}

/// The names of every PDB the cluster may have (to delete the ones no longer wanted).
pub fn pdb_names(c: &Cluster) -> [String; 2] {
    let name = cluster_name(c);
    [format!("{name}-primary"), name]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> Cluster {
        let mut c: Cluster = serde_saphyr::from_str(yaml).expect("test manifest parses");
        c.metadata.uid = Some("uid-1".into());
        c
    }

    const BASE: &str = "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec:\n  instances: 3\n  storage: {size: 2Gi}\n";

    #[test]
    fn pod_follows_upstream_layout() {
        let c = cluster(BASE);
        let pod = instance_pod(
            &c,
            &OperatorSettings::default(),
            "pg-2",
            Role::Replica,
            &DataSource::Join,
        );
        assert!(crate::kube::platform::serves_https(&pod));
        let spec = pod.spec.expect("spec");
        let init = spec.init_containers.clone().expect("init containers");
        assert_eq!(init[0].name, "bootstrap-controller");
        assert_eq!(init[1].name, "bootstrap");
        assert!(
            init[1]
                .args
                .as_ref()
                .expect("args")
                .contains(&"pg-rw".to_owned())
        );
        let main = &spec.containers[0];
        let ports: Vec<i32> = main
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, vec![5432, 9187, 8000]);
        let ready = main.readiness_probe.as_ref().expect("readiness");
        assert_eq!(
            (
                ready.period_seconds,
                ready.timeout_seconds,
                ready.failure_threshold
            ),
            (Some(10), Some(5), Some(3))
        );
        assert_eq!(
            main.startup_probe
                .as_ref()
                .and_then(|p| p.failure_threshold),
            Some(360)
        );
        // Hardened as upstream: every container, and the pod.
        for c in init.iter().chain(&spec.containers) {
            let sc = c.security_context.as_ref().expect("security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().and_then(|k| k.drop.clone()),
                Some(vec!["ALL".to_owned()])
            );
            assert_eq!(
                sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                Some("RuntimeDefault")
            );
        }
        let psc = spec
            .security_context
            .as_ref()
            .expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(26));
        // The certificates come from the cluster's Secrets, renamed, without a CA key.
        let certs = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "certificates")
            .and_then(|v| v.projected.clone())
            .expect("certificates volume");
        let paths: Vec<(String, String, String)> = certs
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.secret.clone())
            .flat_map(|s| {
                s.items
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |i| (s.name.clone(), i.key, i.path))
            })
            .collect();
        assert!(paths.contains(&("pg-ca".into(), "ca.crt".into(), "ca.crt".into())));
        assert!(paths.contains(&("pg-server".into(), "tls.key".into(), "server.key".into())));
        assert!(paths.contains(&(
            "pg-replication".into(),
            "tls.crt".into(),
            "streaming_replica.crt".into()
        )));
        assert!(paths.iter().all(|(_, key, _)| key != "ca.key"), "{paths:?}");
        // The status over HTTPS, probes too.
        let postgres = &spec.containers[0];
        for p in [
            &postgres.readiness_probe,
            &postgres.liveness_probe,
            &postgres.startup_probe,
        ] {
            let get = p
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("HTTP probe");
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        }
        // The operator's CA, never its client key.
        assert!(paths.contains(&(
            "pg-operator-client".into(),
            "ca.crt".into(),
            "operator-ca.crt".into()
        )));
        assert!(
            !paths
                .iter()
                .any(|(s, key, _)| s == "pg-operator-client" && key != "ca.crt"),
            "{paths:?}"
        );
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels["cnpg.io/instanceRole"], "replica");
        assert_eq!(labels["role"], "replica");
        assert_eq!(
            pod.metadata.owner_references.expect("owner")[0].uid,
            "uid-1"
        );
        let on_existing = instance_pod(
            &c,
            &OperatorSettings::default(),
            "pg-2",
            Role::Primary,
            &DataSource::Existing,
        );
        assert_eq!(
            on_existing
                .spec
                .expect("spec")
                .init_containers
                .expect("init")
                .len(),
            1
        );
    }

    #[test]
    fn scheduling_fields_pass_through_and_change_the_hash() {
        let c = cluster(BASE);
        let before = spec_hash(&c, &OperatorSettings::default(), "pg-1");
        let c2 = cluster(&format!(
            "{BASE}  affinity:\n    nodeSelector: {{disk: ssd}}\n    tolerations: [{{key: dedicated, operator: Exists}}]\n  resources: {{requests: {{cpu: '1'}}}}\n  topologySpreadConstraints: [{{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}}]\n"
        ));
        let pod = instance_pod(
            &c2,
            &OperatorSettings::default(),
            "pg-1",
            Role::Primary,
            &DataSource::Existing,
        );
        let spec = pod.spec.expect("spec");
        let anti = spec
            .affinity
            .clone()
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .expect("upstream's default anti-affinity");
        assert_eq!(anti[0].weight, 100);
        assert_eq!(
            anti[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(spec.node_selector.expect("nodeSelector")["disk"], "ssd");
        assert_eq!(spec.tolerations.expect("tolerations").len(), 1);
        assert_eq!(spec.topology_spread_constraints.expect("tsc").len(), 1);
        assert!(spec.containers[0].resources.is_some());
        assert_ne!(before, spec_hash(&c2, &OperatorSettings::default(), "pg-1"));
        let c3 = cluster(&BASE.replace("instances: 3", "instances: 5"));
        assert_eq!(
            before,
            spec_hash(&c3, &OperatorSettings::default(), "pg-1"),
            "scaling does not touch pods"
        );
    }

    #[test]
    fn pvcs_services_and_pdbs() {
        let c = cluster(&format!(
            "{BASE}  walStorage: {{size: 1Gi}}\n  tablespaces: [{{name: tbs1, storage: {{size: 1Gi}}}}]\n"
        ));
        let names: Vec<String> = instance_pvcs(&c, "pg-1")
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["pg-1", "pg-1-wal", "pg-1-tbs-tbs1"]);
        let size = instance_pvcs(&c, "pg-1")[0]
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone());
        assert_eq!(size.as_deref(), Some("2Gi"));
        let svcs: Vec<String> = services(&c)
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(svcs, vec!["pg-rw", "pg-ro", "pg-r"]);
        let p = pdbs(&c);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1].spec.as_ref().and_then(|s| s.min_available.clone()),
            Some(IntOrString::Int(1))
        );
    }
}
