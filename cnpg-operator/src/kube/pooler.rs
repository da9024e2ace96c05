//! Poolers on Kubernetes: each `Pooler` becomes a Deployment `<pooler>` of PgBouncer pods,
//! a Service `<pooler>` (port 5432, named `pgbouncer`) in front of them, and a Secret
//! `<pooler>-config` holding what the pods' `cnpg-instance pgbouncer` reads (the same
//! [`cnpg_instance::pooler::Config`] the local platform writes, made by
//! [`crate::pooler::config`]).
//!
//! The configuration reaches running pods through their Secret volume, which the kubelet
//! refreshes in place: a change of parameters, `pg_hba` or `paused` is a reload of
//! PgBouncer, never a restart of its pods (that would cut every client). Only the pod
//! template (image, resources, the user's `template`) rolls the Deployment.
//!
//! PgBouncer reaches PostgreSQL through the cluster's `-rw`, `-ro` or `-r` Service and
//! runs `auth_query` as `cnpg_pooler_pgbouncer`, which logs in with a client certificate
//! from `<cluster>-pooler`: the Cluster's reconcile issues that Secret and lists it in
//! `status.poolerIntegrations`, which tells the primary's manager to create the role and
//! the `user_search` function. Everything here is owned by the Pooler, so deleting it
//! deletes them.

use super::meta;
use super::platform::{FIELD_MANAGER, KubePlatform, api_err, apply};
use super::secrets::{self, CertificateSecrets};
use super::specs::{self, OperatorSettings};
use crate::platform::{Platform, PlatformError};
use crate::pooler::automatic_auth;
pub use crate::pooler::{LABEL_POOLER, METRICS_PORT};
use cnpg_core::api::image_catalog::component_image;
use cnpg_core::api::pooler::{
    PgBouncerSecrets, Pooler, PoolerSecrets, PoolerStatus, SecretVersion,
};
use cnpg_core::api::{Cluster, Validate};
use cnpg_core::naming;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, Secret, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The port PgBouncer listens on in its pods, and the Service's.
pub const PGBOUNCER_PORT: i32 = 5432;
/// The PgBouncer image when the Pooler names none.
pub const DEFAULT_IMAGE: &str = "ghcr.io/cloudnative-pg/pgbouncer:1.24.1";
/// The key of the configuration in `<pooler>-config`.
pub const CONFIG_KEY: &str = "config.json";

/// The Secret holding a pooler's configuration.
pub fn config_secret(pooler: &str) -> String {
    format!("{pooler}-config")
}

/// The owner reference of everything made for `p`.
fn owner(p: &Pooler) -> OwnerReference {
    OwnerReference {
        api_version: Pooler::api_version(&()).into_owned(),
        kind: Pooler::kind(&()).into_owned(),
        name: p.name_any(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The labels of a pooler's objects and pods.
pub fn labels(p: &Pooler) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_POOLER.to_owned(), p.name_any()),
        (
            naming::LABEL_CLUSTER.to_owned(),
            p.spec.cluster.name.clone(),
        ),
        (naming::LABEL_POD_ROLE.to_owned(), "pooler".to_owned()),
    ])
}

fn object_meta(p: &Pooler, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: p.metadata.namespace.clone(),
        labels: Some(labels(p)),
        owner_references: Some(vec![owner(p)]),
        ..Default::default()
    }
}

/// The Secret of `<pooler>-config`.
pub fn config_object(p: &Pooler, config: &cnpg_instance::pooler::Config) -> Secret {
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    Secret {
        metadata: object_meta(p, &config_secret(&p.name_any())),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            ByteString(text.into_bytes()),
        )])),
        ..Default::default()
    }
}

/// Which Secret each part of the pooler's TLS comes from: the Pooler's own
/// (`spec.pgbouncer.*Secret`) or the cluster's. Named from PgBouncer's side, as upstream:
/// `server*` faces PostgreSQL, `client*` faces PgBouncer's clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolerTls {
    /// The CA PgBouncer verifies PostgreSQL with (`ca.crt`).
    pub server_ca: String,
    /// PgBouncer's client certificate toward PostgreSQL (`tls.crt`, `tls.key`).
    pub server_tls: String,
    /// The CA PgBouncer verifies its clients' certificates with (`ca.crt`).
    pub client_ca: String,
    /// The certificate PgBouncer shows its clients (`tls.crt`, `tls.key`).
    pub client_tls: String,
}

impl PoolerTls {
    /// The Secrets of `p`, whose cluster is `c`.
    pub fn of(p: &Pooler, c: &Cluster) -> Self {
        let cluster = CertificateSecrets::of(c);
        let b = &p.spec.pgbouncer;
        let or = |given: &Option<cnpg_core::api::common::LocalObjectReference>, ours: &str| {
            given
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_else(|| ours.to_owned())
        };
        PoolerTls {
            server_ca: or(&b.server_ca_secret, &cluster.server_ca),
            server_tls: or(
                &b.server_tls_secret,
                &secrets::pooler_secret(&meta::cluster_name(c)),
            ),
            client_ca: or(&b.client_ca_secret, &cluster.client_ca),
            client_tls: or(&b.client_tls_secret, &cluster.server_tls),
        }
    }
}

/// The image PgBouncer's container runs.
pub fn image(p: &Pooler) -> String {
    p.spec
        .pgbouncer
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned())
}

/// The Deployment of `p`'s PgBouncer pods (cluster `c`): the user's `template` as the
/// base, our `pgbouncer` container (or the user's of that name, completed with ours), the
/// init container that copies `cnpg-instance` out of the operator's image.
pub fn deployment(p: &Pooler, c: &Cluster, settings: &OperatorSettings) -> Deployment {
    use k8s_openapi::api::core::v1::{PodSecurityContext, SeccompProfile};
    let name = p.name_any();
    let tls = PoolerTls::of(p, c);
    let project = specs::secret_projection;
    let certificates = Volume {
        name: "certificates".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(
                [
                    Some(project(&tls.server_ca, &[("ca.crt", "ca.crt")])),
                    // A client certificate only where PgBouncer logs in with one (not
                    // with the user's authQuerySecret).
                    (automatic_auth(p) || p.spec.pgbouncer.server_tls_secret.is_some()).then(
                        || {
                            project(
                                &tls.server_tls,
                                &[
                                    ("tls.crt", "cnpg_pooler_pgbouncer.crt"),
                                    ("tls.key", "cnpg_pooler_pgbouncer.key"),
                                ],
                            )
                        },
                    ),
                    Some(project(&tls.client_ca, &[("ca.crt", "client-ca.crt")])),
                    Some(project(
                        &tls.client_tls,
                        &[("tls.crt", "server.crt"), ("tls.key", "server.key")],
                    )),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
        }),
        ..Default::default()
    };
    let secret_volume = |volume: &str, secret: String, items: Option<&[&str]>| Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o440),
            items: items.map(|keys| {
                keys.iter()
                    .map(|k| k8s_openapi::api::core::v1::KeyToPath {
                        key: (*k).into(),
                        path: (*k).into(),
                        mode: None,
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ours_volumes = vec![
        Volume {
            name: "scratch-data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        secret_volume("config", config_secret(&name), None),
        // Only the status token (what `/pause` and `/resume` take) of the cluster's
        // passwords: the pooler needs no password of PostgreSQL's.
        secret_volume(
            "token",
            secrets::passwords_secret(&meta::cluster_name(c)),
            Some(&["status-token"]),
        ),
        certificates,
    ];
    let mounts = vec![
        specs::mount("scratch-data", "/controller"),
        specs::mount("config", "/config"),
        specs::mount("token", "/token"),
        specs::mount("certificates", "/certificates"),
    ];
    let args: Vec<String> = [
        "pgbouncer",
        "--config",
        "/config/config.json",
        "--dir",
        "/controller/pgbouncer",
        "--certificates",
        "/certificates",
        "--listen-addr",
        "$(POD_IP)",
        "--port",
        &PGBOUNCER_PORT.to_string(),
        "--http-addr",
        "$(POD_IP)",
        "--http-port",
        &METRICS_PORT.to_string(),
        "--token-file",
        "/token/status-token",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let ours = Container {
        name: "pgbouncer".into(),
        image: Some(image(p)),
        command: Some(vec!["/controller/cnpg-instance".into()]),
        args: Some(args),
        env: Some(vec![specs::env_from_field("POD_IP", "status.podIP")]),
        ports: Some(vec![
            specs::port("pgbouncer", PGBOUNCER_PORT),
            specs::port("metrics", METRICS_PORT),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::Int(METRICS_PORT),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        security_context: Some(specs::hardened_container()),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    let mut template = p.spec.template.clone().unwrap_or_default();
    let mut spec = template.spec.take().unwrap_or_default();
    let container = match spec.containers.iter().position(|x| x.name == "pgbouncer") {
        Some(i) => complete(spec.containers.remove(i), ours),
        None => ours,
    };
    spec.containers.insert(0, container);
    let mut init = vec![specs::install_container(
        settings,
        &[],
        vec![specs::mount("scratch-data", "/controller")],
        specs::hardened_container(),
    )];
    init.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init);
    let mut volumes = ours_volumes;
    volumes.extend(spec.volumes.take().unwrap_or_default());
    spec.volumes = Some(volumes);
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        });
    }
    if spec.service_account_name.is_none() {
        spec.service_account_name = p.spec.service_account_name.clone();
    }
    let mut pod_meta = template.metadata.take().unwrap_or_default();
    pod_meta.labels.get_or_insert_default().extend(labels(p));
    Deployment {
        metadata: object_meta(p, &name),
        spec: Some(DeploymentSpec {
            replicas: Some(p.spec.instances.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL_POOLER.to_owned(), name.clone())])),
                ..Default::default()
            },
            strategy: p.spec.deployment_strategy.clone(),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec { ..spec }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The user's `pgbouncer` container completed with ours: what they set stays, what they
/// left out is ours, and our mounts and variables are added to theirs.
fn complete(mut user: Container, ours: Container) -> Container {
    user.image = user.image.or(ours.image);
    user.command = user.command.or(ours.command);
    user.args = user.args.or(ours.args);
    user.ports = user.ports.or(ours.ports);
    user.readiness_probe = user.readiness_probe.or(ours.readiness_probe);
    user.security_context = user.security_context.or(ours.security_context);
    let mut env = ours.env.unwrap_or_default();
    env.extend(user.env.take().unwrap_or_default());
    user.env = Some(env);
    let mut mounts = ours.volume_mounts.unwrap_or_default();
    mounts.extend(user.volume_mounts.take().unwrap_or_default());
    user.volume_mounts = Some(mounts);
    user
}

/// The Service `<pooler>`: the user's `serviceTemplate` as the base, our port and selector.
pub fn service(p: &Pooler) -> Service {
    let name = p.name_any();
    let template = p.spec.service_template.clone().unwrap_or_default();
    let mut metadata = object_meta(p, &name);
    if let Some(m) = template.metadata {
        metadata.labels.get_or_insert_default().extend(m.labels);
        if !m.annotations.is_empty() {
            metadata.annotations = Some(m.annotations);
        }
    }
    let spec = template.spec.unwrap_or_default();
    Service {
        metadata,
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("pgbouncer".into()),
                port: PGBOUNCER_PORT,
                target_port: Some(IntOrString::String("pgbouncer".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            selector: Some(BTreeMap::from([(LABEL_POOLER.to_owned(), name)])),
            ..spec
        }),
        ..Default::default()
    }
}

/// The Pooler's status from its Deployment (pods wanted and ready), the spec (paused),
/// and the Secrets in use with their versions.
pub fn status(p: &Pooler, deployment: Option<&Deployment>, secrets: PoolerSecrets) -> PoolerStatus {
    let st = deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let wanted = p.spec.instances.unwrap_or(1);
    let ready = st.ready_replicas.unwrap_or(0);
    let (phase, reason) = if p.spec.pgbouncer.paused == Some(true) {
        (
            "paused",
            format!("spec.pgbouncer.paused: clients wait; {ready} of {wanted} pods ready"),
        )
    } else if ready > 0 {
        ("active", format!("{ready} of {wanted} pods ready"))
    } else {
        ("inactive", format!("no pod ready yet ({wanted} wanted)"))
    };
    PoolerStatus {
        secrets: Some(secrets),
        instances: st.replicas.unwrap_or(0),
        phase: Some(phase.into()),
        phase_reason: Some(reason),
        image: Some(image(p)),
    }
}

/// A failure of one Pooler's reconcile that its status should say.
fn failed(reason: String) -> PoolerStatus {
    PoolerStatus {
        phase: Some("failed".into()),
        phase_reason: Some(reason),
        ..Default::default()
    }
}

fn api<K>(platform: &KubePlatform, p: &Pooler) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(
        platform.client().clone(),
        p.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

/// Creates `<pooler>-config`, or replaces it when its contents differ (create and update:
/// the same verbs as the cluster's Secrets).
async fn put_config(
    platform: &KubePlatform,
    p: &Pooler,
    want: Secret,
) -> Result<(), PlatformError> {
    let api = api::<Secret>(platform, p);
    let name = want.name_any();
    match api
        .get_opt(&name)
        .await
        .map_err(api_err(format!("reading secret {name}")))?
    {
        None => api
            .create(&PostParams::default(), &want)
            .await
            .map(|_| ())
            .map_err(api_err(format!("creating secret {name}"))),
        Some(old) if old.data != want.data => {
            let mut s = want;
            s.metadata.resource_version = old.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &s)
                .await
                .map(|_| ())
                .map_err(api_err(format!("updating secret {name}")))
        }
        Some(_) => Ok(()),
    }
}

async fn write_status(
    platform: &KubePlatform,
    p: &Pooler,
    status: &PoolerStatus,
) -> Result<(), PlatformError> {
    let name = p.name_any();
    let body = json!({
        "apiVersion": Pooler::api_version(&()),
        "kind": Pooler::kind(&()),
        "metadata": {"name": name},
        "status": status,
    });
    api::<Pooler>(platform, p)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
        .map_err(api_err(format!("writing the status of Pooler {name}")))
}

/// One Pooler: its configuration Secret, Deployment and Service, then its status. A
/// Pooler that cannot run (an invalid spec — a parameter users may not set, say —, no such
/// cluster, a bad `authQuerySecret`) says why in its status and changes nothing.
pub async fn reconcile_pooler(
    p: &Pooler,
    platform: &KubePlatform,
) -> Result<Action, PlatformError> {
    let name = p.name_any();
    // What an admission webhook would refuse starts nothing, and says every field.
    let errors = p.validate();
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let why = format!("the spec is invalid; nothing changed: {}", text.join("; "));
        write_status(platform, p, &failed(why)).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let cluster_name = &p.spec.cluster.name;
    let Some(c) = api::<Cluster>(platform, p)
        .get_opt(cluster_name)
        .await
        .map_err(api_err(format!("reading Cluster {cluster_name}")))?
    else {
        let why = format!(
            "spec.cluster: Cluster {cluster_name:?} does not exist in this namespace; create it, \
             or point the Pooler at one that does"
        );
        write_status(platform, p, &failed(why)).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    // PgBouncer's image from a catalog: the rest reads `pgbouncer.image`.
    let resolved;
    let p = match &p.spec.pgbouncer.image_catalog_ref {
        None => p,
        Some(r) => {
            let what = format!("{} {}", r.kind, r.name);
            let image = match platform.image_catalog(&c, &r.kind, &r.name).await? {
                None => Err(format!(
                    "{what} (spec.pgbouncer.imageCatalogRef) does not exist; create it, or name another"
                )),
                Some(catalog) => component_image(&catalog.component_images, &r.key, &what),
            };
            match image {
                Ok(image) => {
                    let mut with_image = p.clone();
                    with_image.spec.pgbouncer.image = Some(image);
                    with_image.spec.pgbouncer.image_catalog_ref = None;
                    resolved = with_image;
                    &resolved
                }
                Err(why) => {
                    write_status(platform, p, &failed(why)).await?;
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
            }
        }
    };
    let mut user = BTreeMap::new();
    if let Some(r) = &p.spec.pgbouncer.auth_query_secret
        && let Some(s) = api::<Secret>(platform, p)
            .get_opt(&r.name)
            .await
            .map_err(api_err(format!("reading secret {}", r.name)))?
    {
        user.insert(r.name.clone(), s);
    }
    let suffix = crate::pooler::service_suffix(p.spec.type_);
    let target = format!("{cluster_name}-{suffix}");
    let config = match crate::pooler::config(p, (&target, specs::POSTGRES_PORT as u16), &user) {
        Ok(config) => config,
        Err(e) => {
            write_status(platform, p, &failed(e.to_string())).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    put_config(platform, p, config_object(p, &config)).await?;
    let settings = platform.settings();
    let (want, svc) = (deployment(p, &c, settings), service(p));
    let (deployments, services) = (api::<Deployment>(platform, p), api::<Service>(platform, p));
    let (deployment, _) = futures::try_join!(
        apply(&deployments, &name, &want),
        apply(&services, &name, &svc),
    )?;
    // The versions of the Secrets in use, as upstream reports them.
    let tls = PoolerTls::of(p, &c);
    let version = |s: Option<&Secret>, name: &str| SecretVersion {
        name: Some(name.to_owned()),
        version: s.and_then(|s| s.metadata.resource_version.clone()),
    };
    let secrets_api = api::<Secret>(platform, p);
    let get = |n: String| {
        let api = secrets_api.clone();
        async move { api.get_opt(&n).await.ok().flatten() }
    };
    let (server_tls, server_ca, client_ca) = futures::join!(
        get(tls.client_tls.clone()),
        get(tls.server_ca.clone()),
        get(tls.client_ca.clone()),
    );
    let secrets =
        PoolerSecrets {
            server_tls: Some(version(server_tls.as_ref(), &tls.client_tls)),
            server_ca: Some(version(server_ca.as_ref(), &tls.server_ca)),
            client_ca: Some(version(client_ca.as_ref(), &tls.client_ca)),
            pg_bouncer_secrets: p.spec.pgbouncer.auth_query_secret.as_ref().map(|r| {
                PgBouncerSecrets {
                    auth_query: Some(version(user.get(&r.name), &r.name)),
                }
            }),
        };
    let st = status(p, Some(&deployment), secrets);
    tracing::info!(
        pooler = %name,
        phase = st.phase.as_deref().unwrap_or(""),
        "{}",
        st.phase_reason.as_deref().unwrap_or("")
    );
    write_status(platform, p, &st).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooler(extra: &str) -> Pooler {
        let yaml = format!(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Pooler\nmetadata: {{name: p, namespace: db, uid: u1}}\nspec:\n  cluster: {{name: c}}\n  instances: 2\n  pgbouncer:\n    poolMode: transaction\n{extra}"
        );
        serde_json::from_value(crate::manifests::parse_documents(&yaml).expect("yaml")[0].clone())
            .expect("pooler")
    }

    fn cluster() -> Cluster {
        serde_json::from_value(json!({
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "db", "uid": "c1"},
            "spec": {"instances": 3, "storage": {"size": "1Gi"}}
        }))
        .expect("cluster")
    }

    #[test]
    fn the_deployment_runs_the_pooler_manager_with_the_clusters_certificates() {
        let p = pooler("");
        let d = deployment(&p, &cluster(), &OperatorSettings::default());
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(
            d.metadata.owner_references.expect("owner")[0].kind,
            "Pooler"
        );
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.name, "pgbouncer");
        assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE));
        let args = c.args.clone().expect("args").join(" ");
        assert!(
            args.starts_with("pgbouncer --config /config/config.json"),
            "{args}"
        );
        let volumes = serde_json::to_string(&pod.volumes).expect("json");
        // PgBouncer's client certificate toward PostgreSQL is the cluster's pooler one;
        // the CA's key never reaches the pod.
        assert!(volumes.contains("\"c-pooler\""), "{volumes}");
        assert!(!volumes.contains("ca.key"), "{volumes}");
        assert!(volumes.contains("\"p-config\""), "{volumes}");
        let labels = spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        assert_eq!(labels[LABEL_POOLER], "p");
        assert_eq!(labels["cnpg.io/podRole"], "pooler");
    }

    #[test]
    fn the_users_template_and_service_template_are_the_base() {
        let p = pooler(
            "  template:\n    metadata: {labels: {team: a}}\n    spec:\n      containers:\n      - name: pgbouncer\n        image: my/pgbouncer:1\n        resources: {limits: {cpu: '1'}}\n  serviceTemplate:\n    metadata: {annotations: {a: b}}\n    spec: {type: LoadBalancer}\n",
        );
        let d = deployment(&p, &cluster(), &OperatorSettings::default());
        let tpl = d.spec.expect("spec").template;
        assert_eq!(
            tpl.metadata.expect("meta").labels.expect("labels")["team"],
            "a"
        );
        let c = &tpl.spec.expect("pod").containers[0];
        assert_eq!(c.image.as_deref(), Some("my/pgbouncer:1"));
        assert!(c.resources.is_some());
        assert!(c.args.as_ref().is_some_and(|a| a[0] == "pgbouncer"));
        let s = service(&p);
        let spec = s.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.expect("ports")[0].port, 5432);
        assert_eq!(s.metadata.annotations.expect("annotations")["a"], "b");
    }

    #[test]
    fn the_status_says_why() {
        let p = pooler("    paused: true\n");
        let st = status(&p, None, PoolerSecrets::default());
        assert_eq!(st.phase.as_deref(), Some("paused"));
        let st = status(&pooler(""), None, PoolerSecrets::default());
        assert_eq!(st.phase.as_deref(), Some("inactive"));
        assert!(st.phase_reason.expect("reason").contains("2 wanted"));
    }
}
