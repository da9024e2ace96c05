//! [`Platform`] on Kubernetes, through kube-rs.
//!
//! The operator creates and deletes instance Pods itself (no StatefulSet), so it chooses
//! which instance goes and which PVCs a recreated Pod reattaches. Shared objects (Services,
//! PDBs, the instance managers' ServiceAccount and Role) are server-side applied by one
//! field manager, `cnpg-operator`, every loop; Pods and PVCs are created once (their specs
//! are mostly immutable) and replaced by deleting and recreating; Secrets are created when
//! missing and never rewritten. Role labels change by merge patch. The status goes through
//! the status subresource, applied with the resourceVersion the loop observed, so a
//! concurrent change (a `kubectl cnpg promote`, an instance publishing itself) makes the
//! write fail and the loop decide again rather than overwrite it.

use super::meta;
use super::specs::{self, DataSource, OperatorSettings};
use super::{install, secrets};
use crate::platform::{Platform, PlatformError, StatusUpdate};
use async_trait::async_trait;
use cnpg_core::api::Cluster;
use cnpg_core::api::image_catalog::{ClusterImageCatalog, ImageCatalog, ImageCatalogSpec};
use cnpg_core::naming::{self, Role};
use cnpg_core::reconcile::{Bootstrap, Event, EventType, ObservedInstance};
use cnpg_core::status::InstanceStatus;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role as RbacRole, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "cnpg-operator";

/// How the operator proves itself to a cluster's instance managers, from the cluster's
/// Secrets ([`secrets::status_access`]): each way to try, in order, or why there is none.
pub type InstanceAccess = Result<Vec<cnpg_instance::https::ClientTls>, String>;

/// How the operator reads an instance's `/pg/status`.
#[async_trait]
pub trait InstanceClient: Send + Sync {
    /// The status of the instance running in `pod`, reached with `access`; an unreachable
    /// status (with `error`) when it cannot be read.
    async fn status(&self, pod: &Pod, access: &InstanceAccess) -> InstanceStatus;

    /// `POST /pg/backup` with `body` to the instance running in `pod`: the status code and
    /// body, or why it could not be asked.
    async fn backup(
        &self,
        pod: &Pod,
        access: &InstanceAccess,
        body: String,
    ) -> Result<(u16, String), String> {
        let _ = (access, body);
        Err(format!(
            "{}: this instance client does not take backups",
            pod.name_any()
        ))
    }
}

/// `GET https://<pod IP>:8000/pg/status` with the operator's client certificate.
#[derive(Debug, Clone)]
pub struct HttpInstanceClient {
    /// How long one request may take.
    pub timeout: Duration,
}

impl Default for HttpInstanceClient {
    fn default() -> Self {
        HttpInstanceClient {
            timeout: Duration::from_secs(5),
        }
    }
}

#[async_trait]
impl InstanceClient for HttpInstanceClient {
    async fn status(&self, pod: &Pod, access: &InstanceAccess) -> InstanceStatus {
        let name = pod.name_any();
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            return InstanceStatus::unreachable(&name, "the pod has no IP yet");
        };
        let answer = if serves_https(pod) {
            match access {
                Ok(ways) => read_status(&ip, ways, self.timeout).await,
                Err(why) => return InstanceStatus::unreachable(&name, why),
            }
        } else {
            // A pod made before its manager served HTTPS (an operator upgrade): read as
            // it serves until the rolling update replaces it.
            let port = specs::STATUS_PORT as u16;
            cnpg_instance::http::get(&ip, port, "/pg/status", self.timeout).await
        };
        match answer {
            Ok((200, body)) => serde_json::from_str::<InstanceStatus>(&body).unwrap_or_else(|e| {
                InstanceStatus::unreachable(&name, &format!("bad status: {e}"))
            }),
            Ok((code, body)) => {
                InstanceStatus::unreachable(&name, &format!("HTTP {code}: {}", body.trim()))
            }
            Err(e) => InstanceStatus::unreachable(&name, &e),
        }
    }

    async fn backup(
        &self,
        pod: &Pod,
        access: &InstanceAccess,
        body: String,
    ) -> Result<(u16, String), String> {
        let name = pod.name_any();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or_else(|| format!("{name} has no IP yet"))?;
        if !serves_https(pod) {
            return Err(format!(
                "{name} runs an instance manager from before HTTPS: it takes backups once \
                 the rolling update has replaced it"
            ));
        }
        let ways = access.as_ref().map_err(|e| format!("{name}: {e}"))?;
        let port = specs::STATUS_PORT as u16;
        as_operator(ways, |tls| {
            cnpg_instance::https::post(
                ip.as_str(),
                port,
                "/pg/backup",
                self.timeout,
                tls,
                body.clone(),
            )
        })
        .await
    }
}

/// The first answer of `ask` for each client certificate of `ways` in turn, while the
/// instance refuses it (the TLS alert of an unknown certificate, or a 401: a pod that has
/// not seen a renewal yet takes the previous one).
async fn as_operator<'a, F, Fut>(
    ways: &'a [cnpg_instance::https::ClientTls],
    ask: F,
) -> Result<(u16, String), String>
where
    F: Fn(&'a cnpg_instance::https::ClientTls) -> Fut,
    Fut: std::future::Future<Output = Result<(u16, String), String>>,
{
    let mut answer = Err("no client certificate".to_owned());
    for tls in ways {
        answer = ask(tls).await;
        let refused = match &answer {
            Ok((401, _)) => true,
            Err(e) => e.starts_with("TLS:"),
            Ok(_) => false,
        };
        if !refused {
            break;
        }
    }
    answer
}

/// Whether the instance manager of `pod` serves its status over HTTPS (`--status-tls`).
pub fn serves_https(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .any(|c| c.args.iter().flatten().any(|a| a == specs::STATUS_TLS_FLAG))
}

/// `GET https://<ip>:8000/pg/status` as the operator (each of its client certificates in
/// turn, as `as_operator` tries them): the status code and body, or why there is none.
pub async fn read_status(
    ip: &str,
    ways: &[cnpg_instance::https::ClientTls],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let port = specs::STATUS_PORT as u16;
    as_operator(ways, |tls| {
        cnpg_instance::https::get(ip, port, "/pg/status", timeout, tls, None)
    })
    .await
}

/// How to reach a cluster's instance managers as the operator: its server CA and the
/// operator's client certificate, from `api` (the cluster's namespace); read each loop,
/// as they change on renewal.
pub async fn instance_access(api: &Api<Secret>, c: &Cluster) -> InstanceAccess {
    let ca_name = secrets::CertificateSecrets::of(c).server_ca;
    let operator_name = secrets::operator_client_secret(&c.name_any());
    let (ca, operator) = futures::join!(api.get_opt(&ca_name), api.get_opt(&operator_name));
    let read = |r: Result<Option<Secret>, kube::Error>, name: &str| match r {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(format!("secret {name} does not exist yet")),
        Err(e) => Err(format!("reading secret {name}: {e}")),
    };
    let (ca, operator) = (read(ca, &ca_name)?, read(operator, &operator_name)?);
    secrets::status_access(c, &ca, &operator).map_err(|e| e.to_string())
}

/// The operator's [`Platform`] on a Kubernetes API server.
#[derive(Clone)]
pub struct KubePlatform {
    client: kube::Client,
    instances: Arc<dyn InstanceClient>,
    settings: OperatorSettings,
    recorder: Recorder,
    /// The rw poolers paused for a switchover, by `namespace/cluster`.
    held: Arc<std::sync::Mutex<BTreeMap<String, Held>>>,
}

/// A cluster's rw poolers during a switchover.
#[derive(Debug, Clone)]
enum Held {
    /// Paused since then: these pods' managers.
    Paused(std::time::Instant, Vec<crate::pooler::Manager>),
    /// Resumed after [`crate::pooler::HOLD_MAX`] although the switchover goes on: not
    /// paused again for it.
    GaveUp,
}

/// An API error as the platform reports it: a 409 is a conflict to decide again on.
pub(crate) fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> PlatformError {
    let action = action.into();
    move |e| match e {
        kube::Error::Api(s) if s.code == 409 => {
            PlatformError::Conflict(format!("{action}: {}", s.message))
        }
        other => PlatformError::Api {
            action,
            source: Box::new(other),
        },
    }
}

/// An event as the API server takes it (the note cut to its 1 KiB limit).
fn kube_event(type_: EventType, reason: &str, message: &str) -> KubeEvent {
    KubeEvent {
        type_: match type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: reason.to_owned(),
        note: Some(message.chars().take(1024).collect()),
        action: reason.to_owned(),
        secondary: None,
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn namespace(c: &Cluster) -> String {
    c.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

/// Server-side applies `object` as `name` with the operator's field manager, taking the
/// fields it sends (forced), and returns the object as the API server now holds it.
pub(crate) async fn apply<K>(api: &Api<K>, name: &str, object: &K) -> Result<K, PlatformError>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut body =
        serde_json::to_value(object).map_err(|e| PlatformError::Invalid(format!("{name}: {e}")))?;
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(K::kind(&()));
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(api_err(format!("applying {} {name}", K::kind(&()))))
}

/// Whether the kubelet says the pod is Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod is running (or starting) and not on its way out.
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Failed" | "Succeeded"))
}

/// How the pod's bootstrap step (initdb, recovery, join) last failed, if it did: its exit
/// code, how often it was tried, and the last line of its log (its termination message).
fn bootstrap_failure(pod: &Pod) -> Option<String> {
    let st = pod
        .status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "bootstrap")?;
    let failed = st.last_state.as_ref()?.terminated.as_ref()?;
    if failed.exit_code == 0 {
        return None;
    }
    let said = failed
        .message
        .as_deref()
        .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    Some(format!(
        "its bootstrap step failed (exit {}, tried {} times){said}",
        failed.exit_code,
        st.restart_count + 1
    ))
}

impl KubePlatform {
    /// The PVCs of one instance (data, WAL, tablespaces), as they are now.
    async fn instance_pvcs(
        &self,
        c: &Cluster,
        name: &str,
    ) -> Result<Vec<PersistentVolumeClaim>, PlatformError> {
        Ok(self
            .api::<PersistentVolumeClaim>(c)
            .list(&Self::selector(
                c,
                &format!(",{}={name}", naming::LABEL_INSTANCE_NAME),
            ))
            .await
            .map_err(api_err("listing PVCs"))?
            .items)
    }

    /// A platform on this client.
    pub fn new(
        client: kube::Client,
        instances: Arc<dyn InstanceClient>,
        settings: OperatorSettings,
        reporter_instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: reporter_instance,
            },
        );
        KubePlatform {
            client,
            instances,
            settings,
            recorder,
            held: Arc::default(),
        }
    }

    /// The API client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// What the operator knows that the Cluster does not say.
    pub fn settings(&self) -> &OperatorSettings {
        &self.settings
    }

    /// The Poolers in front of `c`.
    async fn poolers_of(&self, c: &Cluster) -> Result<Vec<cnpg_core::api::Pooler>, PlatformError> {
        let name = c.name_any();
        Ok(self
            .api::<cnpg_core::api::Pooler>(c)
            .list(&ListParams::default())
            .await
            .map_err(api_err("listing poolers"))?
            .items
            .into_iter()
            .filter(|p| p.spec.cluster.name == name)
            .collect())
    }

    /// The pooler managers of `c`'s rw Poolers whose pods are ready.
    async fn rw_pooler_managers(
        &self,
        c: &Cluster,
        poolers: &[cnpg_core::api::Pooler],
    ) -> Result<Vec<crate::pooler::Manager>, PlatformError> {
        use cnpg_core::api::pooler::PoolerType;
        let mut out = Vec::new();
        for p in poolers.iter().filter(|p| p.spec.type_ == PoolerType::Rw) {
            let pods = self
                .api::<Pod>(c)
                .list(&ListParams::default().labels(&format!(
                    "{}={}",
                    crate::pooler::LABEL_POOLER,
                    p.name_any()
                )))
                .await
                .map_err(api_err("listing pooler pods"))?;
            out.extend(pods.items.into_iter().filter(pod_ready).filter_map(|pod| {
                Some(crate::pooler::Manager {
                    host: pod.status.as_ref()?.pod_ip.clone()?,
                    name: pod.name_any(),
                    port: crate::pooler::METRICS_PORT as u16,
                })
            }));
        }
        Ok(out)
    }

    /// The token the cluster's instance and pooler managers take.
    async fn status_token(&self, c: &Cluster) -> Result<String, PlatformError> {
        let passwords = secrets::passwords_secret(&c.name_any());
        let s = self
            .api::<Secret>(c)
            .get(&passwords)
            .await
            .map_err(api_err(format!("reading secret {passwords}")))?;
        secrets::value(&s, "status-token").map_err(|e| PlatformError::Invalid(e.to_string()))
    }

    /// Around a switchover, the rw poolers: paused before the operator publishes the new
    /// target primary (each `PAUSE` returns once its running transactions end, so the
    /// primary changes while no query is in flight and clients wait instead of failing),
    /// or as soon as it sees one that `kubectl cnpg promote` published; resumed once the
    /// new primary has published itself, or after [`crate::pooler::HOLD_MAX`].
    async fn hold_poolers_around(
        &self,
        c: &Cluster,
        poolers: &[cnpg_core::api::Pooler],
        update: &StatusUpdate,
    ) -> Result<(), PlatformError> {
        use crate::pooler::{HOLD_MAX, hold, release, switching};
        let before = c.status.clone().unwrap_or_default();
        let current = before.current_primary.as_deref();
        let was = switching(before.target_primary.as_deref(), current);
        let is = switching(update.status.target_primary.as_deref(), current);
        let key = format!("{}/{}", namespace(c), c.name_any());
        let entry = {
            let held = self.held.lock().expect("held");
            held.get(&key).cloned()
        };
        match entry {
            None if is => {
                let managers = self.rw_pooler_managers(c, poolers).await?;
                if managers.is_empty() {
                    return Ok(());
                }
                let token = self.status_token(c).await?;
                let begun = std::time::Instant::now();
                let said = hold(&managers, &token).await;
                self.note(
                    c,
                    "PoolersPaused",
                    &format!(
                        "for the switchover{} in {} ms: {}",
                        if was {
                            " (it was already under way)"
                        } else {
                            ""
                        },
                        begun.elapsed().as_millis(),
                        said.join("; ")
                    ),
                )
                .await;
                self.held
                    .lock()
                    .expect("held")
                    .insert(key, Held::Paused(begun, managers));
            }
            Some(Held::Paused(since, managers)) if !is || since.elapsed() > HOLD_MAX => {
                let token = self.status_token(c).await?;
                release(&managers, &token).await;
                {
                    let mut held = self.held.lock().expect("held");
                    if is {
                        held.insert(key, Held::GaveUp);
                    } else {
                        held.remove(&key);
                    }
                }
                self.note(
                    c,
                    "PoolersResumed",
                    &format!(
                        "after {} ms{}",
                        since.elapsed().as_millis(),
                        if is {
                            " (the switchover did not end in time)"
                        } else {
                            ""
                        }
                    ),
                )
                .await;
            }
            Some(Held::GaveUp) if !is => {
                self.held.lock().expect("held").remove(&key);
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a Pooler of `c` logs in with the cluster's poolers' certificate (so the
    /// primary must make `cnpg_pooler_pgbouncer` and `user_search`).
    async fn integrated_poolers(&self, c: &Cluster) -> Result<bool, PlatformError> {
        Ok(self
            .poolers_of(c)
            .await?
            .iter()
            .any(crate::pooler::automatic_auth))
    }

    /// Asks the instance manager of `instance` (a pod of `c`) for a base backup (`body`:
    /// `POST /pg/backup`'s), as the operator.
    pub async fn start_backup(
        &self,
        c: &Cluster,
        instance: &str,
        body: String,
    ) -> Result<(u16, String), String> {
        let pod = self
            .api::<Pod>(c)
            .get_opt(instance)
            .await
            .map_err(|e| format!("reading pod {instance}: {e}"))?
            .ok_or_else(|| format!("pod {instance} does not exist"))?;
        let access = self.instance_access(c).await;
        self.instances.backup(&pod, &access, body).await
    }

    /// An event on `object` (a Backup, say) from the operator; best effort.
    pub async fn event_on(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self
            .recorder
            .publish(&kube_event(type_, reason, message), object)
            .await
        {
            tracing::warn!(reason, "cannot record event: {e}");
        }
    }

    fn api<K>(&self, c: &Cluster) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &namespace(c))
    }

    fn selector(c: &Cluster, extra: &str) -> ListParams {
        let name = c.metadata.name.clone().unwrap_or_default();
        ListParams::default().labels(&format!("{}={name}{extra}", naming::LABEL_CLUSTER))
    }

    async fn apply<K>(&self, c: &Cluster, name: &str, object: &K) -> Result<(), PlatformError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        apply(&self.api::<K>(c), name, object).await.map(|_| ())
    }

    async fn create<K>(&self, c: &Cluster, object: &K) -> Result<(), PlatformError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        match self
            .api::<K>(c)
            .create(&PostParams::default(), object)
            .await
        {
            Ok(_) => Ok(()),
            // Already there (a previous loop, or another operator replica): fine.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(api_err(format!("creating {} {name}", K::kind(&())))(e)),
        }
    }

    async fn delete<K>(&self, c: &Cluster, name: &str) -> Result<(), PlatformError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match self
            .api::<K>(c)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("deleting {} {name}", K::kind(&())))(e)),
        }
    }

    async fn pod(&self, c: &Cluster, name: &str) -> Result<Option<Pod>, PlatformError> {
        self.api::<Pod>(c)
            .get_opt(name)
            .await
            .map_err(api_err(format!("reading pod {name}")))
    }

    /// The ServiceAccount, Role and RoleBinding the instance managers run with: read their
    /// Cluster, publish `currentPrimary`, hold the primary Lease, record events.
    fn instance_rbac(c: &Cluster) -> (ServiceAccount, RbacRole, RoleBinding) {
        let name = c.metadata.name.clone().unwrap_or_default();
        let meta = || k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            namespace: c.metadata.namespace.clone(),
            labels: Some(meta::cluster_labels(c)),
            owner_references: Some(vec![meta::owner(c)]),
            ..Default::default()
        };
        let role = RbacRole {
            metadata: meta(),
            rules: Some(install::rules(install::INSTANCE_PERMISSIONS)),
        };
        let binding = RoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                namespace: c.metadata.namespace.clone(),
                ..Default::default()
            }]),
        };
        let sa = ServiceAccount {
            metadata: meta(),
            ..Default::default()
        };
        (sa, role, binding)
    }

    async fn ensure_services(&self, c: &Cluster) -> Result<(), PlatformError> {
        let services = specs::services(c);
        futures::future::try_join_all(
            services.iter().map(|svc| {
                self.apply::<Service>(c, svc.metadata.name.as_deref().unwrap_or(""), svc)
            }),
        )
        .await
        .map(|_| ())
    }

    async fn ensure_pdbs(&self, c: &Cluster) -> Result<(), PlatformError> {
        let wanted = specs::pdbs(c);
        let existing = self
            .api::<PodDisruptionBudget>(c)
            .list(&Self::selector(c, ""))
            .await
            .map_err(api_err("listing PDBs"))?;
        for pdb in &wanted {
            let name = pdb.name_any();
            self.apply::<PodDisruptionBudget>(c, &name, pdb).await?;
        }
        for name in specs::pdb_names(c) {
            let exists = existing.items.iter().any(|p| p.name_any() == name);
            if exists && !wanted.iter().any(|p| p.name_any() == name) {
                self.delete::<PodDisruptionBudget>(c, &name).await?;
            }
        }
        Ok(())
    }

    /// The PodMonitor while `spec.monitoring.enablePodMonitor` is true, where the
    /// Prometheus Operator's CRD exists (without it, the API server has no such resource
    /// and nothing is done); deleted when it is set to false. Unset: left alone, and no
    /// request is made.
    async fn ensure_pod_monitor(&self, c: &Cluster) -> Result<(), PlatformError> {
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let Some(enabled) = c
            .spec
            .monitoring
            .as_ref()
            .and_then(|m| m.enable_pod_monitor)
        else {
            return Ok(());
        };
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "podmonitors");
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &c.namespace().unwrap_or_default(),
            &resource,
        );
        let name = c.name_any();
        let done = if enabled {
            let object: DynamicObject = serde_json::from_value(specs::pod_monitor(c))
                .map_err(|e| PlatformError::Invalid(e.to_string()))?;
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .map(|_| ())
        } else {
            api.delete(&name, &DeleteParams::default())
                .await
                .map(|_| ())
        };
        match done {
            Err(e) if is_not_found(&e) => {
                tracing::debug!(cluster = %name, "no PodMonitor (or no PodMonitor CRD): {e}");
                Ok(())
            }
            other => other.map_err(api_err(format!("PodMonitor {name}"))),
        }
    }

    async fn ensure_instance_rbac(&self, c: &Cluster) -> Result<(), PlatformError> {
        let (sa, role, binding) = Self::instance_rbac(c);
        let name = sa.name_any();
        // The binding after its Role: the API server checks that whoever binds a Role holds
        // what it grants, and it cannot look at a Role that does not exist yet.
        futures::try_join!(
            self.apply::<ServiceAccount>(c, &name, &sa),
            self.apply::<RbacRole>(c, &name, &role),
        )?;
        self.apply::<RoleBinding>(c, &name, &binding).await
    }

    /// Creates the missing Secrets, renews expiring certificates; returns the expirations.
    async fn ensure_secrets(&self, c: &Cluster) -> Result<BTreeMap<String, String>, PlatformError> {
        let secrets: BTreeMap<String, Secret> = self
            .api::<Secret>(c)
            .list(&Self::selector(c, ""))
            .await
            .map_err(api_err("listing secrets"))?
            .items
            .into_iter()
            .map(|s| (s.name_any(), s))
            .collect();
        // The user's certificate Secrets (cert-manager's, say) carry none of our labels.
        let mut secrets = secrets;
        for (_, name) in secrets::CertificateSecrets::of(c).user {
            if let Some(s) = self
                .api::<Secret>(c)
                .get_opt(&name)
                .await
                .map_err(api_err(format!("reading secret {name}")))?
            {
                secrets.insert(name, s);
            }
        }
        let mut due = secrets::due(c, &secrets, now_ms())
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        // The poolers' client certificate, while a Pooler logs in with it.
        let pooler = secrets::pooler_secret(&c.name_any());
        if self.integrated_poolers(c).await? {
            let client_ca = secrets::CertificateSecrets::of(c).client_ca;
            let renewed = due.iter().find(|s| s.name_any() == client_ca).cloned();
            if let Some(s) = secrets::pooler_certificate(c, &secrets, now_ms(), renewed.as_ref())
                .map_err(|e| PlatformError::Invalid(e.to_string()))?
            {
                due.push(s);
            }
        } else if secrets.contains_key(&pooler) {
            self.delete::<Secret>(c, &pooler).await?;
        }
        // WAL archiving's configuration never holds up the rest (a failover among it).
        if let Err(e) = self.ensure_archive(c, &secrets).await {
            self.warn(c, "ArchiveConfiguration", &format!("WAL archiving: {e}"))
                .await;
        }
        if let Err(e) = self.ensure_managed_roles(c, &secrets).await {
            self.warn(c, "ManagedRoles", &format!("managed roles' passwords: {e}"))
                .await;
        }
        if let Err(e) = self.ensure_monitoring(c, &secrets).await {
            self.warn(c, "Monitoring", &format!("monitoring queries: {e}"))
                .await;
        }
        let mut all = secrets.clone();
        for mut s in due {
            let name = s.name_any();
            match secrets.get(&name) {
                None => self.create::<Secret>(c, &s).await?,
                Some(old) => {
                    // Replaced only if unchanged since we read it (another replica may
                    // renew it too).
                    s.metadata.resource_version = old.metadata.resource_version.clone();
                    self.api::<Secret>(c)
                        .replace(&name, &PostParams::default(), &s)
                        .await
                        .map_err(api_err(format!("renewing certificate {name}")))?;
                    let certificate = s
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(secrets::ANNOTATION_EXPIRATION));
                    if certificate {
                        self.note(
                            c,
                            "CertificateRenewed",
                            &format!("renewed the certificate in {name}"),
                        )
                        .await;
                    }
                }
            }
            all.insert(name, s);
        }
        Ok(secrets::expirations(all.values()))
    }

    /// The archive configuration's Secret as the spec and the Secrets it names say
    /// (removed when the spec has no object store any more).
    async fn ensure_archive(
        &self,
        c: &Cluster,
        ours: &BTreeMap<String, Secret>,
    ) -> Result<(), PlatformError> {
        let user = self.user_secrets(c, secrets::archive_sources(c)).await?;
        let want = secrets::archive(c, &user).map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let name = secrets::archive_secret(&c.name_any());
        self.put_secret(c, &name, want, ours.get(&name)).await
    }

    /// The managed roles' passwords, from the user's Secrets, for the pods
    /// ([`secrets::managed_roles_secret`]).
    async fn ensure_managed_roles(
        &self,
        c: &Cluster,
        ours: &BTreeMap<String, Secret>,
    ) -> Result<(), PlatformError> {
        let user = self
            .user_secrets(c, secrets::managed_roles_sources(c))
            .await?;
        let want =
            secrets::managed_roles(c, &user).map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let name = secrets::managed_roles_secret(&c.name_any());
        self.put_secret(c, &name, want, ours.get(&name)).await
    }

    /// The instances' monitoring configuration, with the custom queries from the user's
    /// ConfigMaps and Secrets ([`secrets::monitoring_secret`]); left as it was when one
    /// is missing or does not parse.
    async fn ensure_monitoring(
        &self,
        c: &Cluster,
        ours: &BTreeMap<String, Secret>,
    ) -> Result<(), PlatformError> {
        let user = self.user_secrets(c, secrets::monitoring_sources(c)).await?;
        let api = self.api::<k8s_openapi::api::core::v1::ConfigMap>(c);
        let mut config_maps = BTreeMap::new();
        for name in secrets::monitoring_config_maps(c) {
            if let Some(cm) = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("reading ConfigMap {name}")))?
            {
                config_maps.insert(name, cm);
            }
        }
        let want = secrets::monitoring(c, &config_maps, &user)
            .map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let name = secrets::monitoring_secret(&c.name_any());
        self.put_secret(c, &name, want, ours.get(&name)).await
    }

    /// The user's Secrets of these names that exist, by name.
    async fn user_secrets(
        &self,
        c: &Cluster,
        names: Vec<String>,
    ) -> Result<BTreeMap<String, Secret>, PlatformError> {
        let api = self.api::<Secret>(c);
        let mut user = BTreeMap::new();
        for name in names {
            if let Some(s) = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("reading secret {name}")))?
            {
                user.insert(name, s);
            }
        }
        Ok(user)
    }

    /// Brings our Secret `name` to `want`: created, replaced when its data differs, deleted
    /// when no longer wanted.
    async fn put_secret(
        &self,
        c: &Cluster,
        name: &str,
        want: Option<Secret>,
        old: Option<&Secret>,
    ) -> Result<(), PlatformError> {
        match (want, old) {
            (Some(s), None) => self.create::<Secret>(c, &s).await,
            (Some(mut s), Some(old)) if s.data != old.data => {
                s.metadata.resource_version = old.metadata.resource_version.clone();
                self.api::<Secret>(c)
                    .replace(name, &PostParams::default(), &s)
                    .await
                    .map_err(api_err(format!("updating secret {name}")))?;
                Ok(())
            }
            (None, Some(_)) => self.delete::<Secret>(c, name).await,
            _ => Ok(()),
        }
    }

    /// The recovery source's Secret, made (or brought up to date) before the pod that
    /// reads it: from the `externalClusters` entry's store, or from what the `Backup`
    /// named recorded. Returns that backup's id.
    async fn ensure_recovery(&self, c: &Cluster) -> Result<Option<String>, PlatformError> {
        let named = c
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.recovery.as_ref())
            .and_then(|r| r.backup.as_ref())
            .map(|b| b.name.clone());
        let backup = match &named {
            Some(name) => self
                .api::<cnpg_core::api::backup::Backup>(c)
                .get_opt(name)
                .await
                .map_err(api_err(format!("reading Backup {name}")))?,
            None => None,
        };
        let user = self
            .user_secrets(c, secrets::recovery_sources(c, backup.as_ref()))
            .await?;
        let Some((want, backup_id)) = secrets::recovery(c, backup.as_ref(), &user)
            .map_err(|e| PlatformError::Invalid(e.to_string()))?
        else {
            return Ok(None);
        };
        let name = want.name_any();
        let old = self
            .api::<Secret>(c)
            .get_opt(&name)
            .await
            .map_err(api_err(format!("reading secret {name}")))?;
        self.put_secret(c, &name, Some(want), old.as_ref()).await?;
        Ok(backup_id)
    }

    /// See [`instance_access`].
    async fn instance_access(&self, c: &Cluster) -> InstanceAccess {
        instance_access(&self.api::<Secret>(c), c).await
    }

    /// A Warning event on the Cluster; best effort.
    async fn warn(&self, c: &Cluster, reason: &'static str, message: &str) {
        self.event(c, EventType::Warning, reason, message).await;
    }

    /// A Normal event on the Cluster; best effort.
    async fn note(&self, c: &Cluster, reason: &'static str, message: &str) {
        self.event(c, EventType::Normal, reason, message).await;
    }

    async fn event(&self, c: &Cluster, type_: EventType, reason: &'static str, message: &str) {
        let event = Event {
            type_,
            reason,
            message: message.to_owned(),
        };
        if let Err(e) = self.record_event(c, &event).await {
            tracing::warn!("cannot record event: {e}");
        }
    }

    /// The pod that makes an instance: the first one (initdb, or a recovery from backups
    /// as `spec.bootstrap` says) or a replica copying the primary.
    async fn bootstrap_pod(
        &self,
        c: &Cluster,
        name: &str,
        first: bool,
    ) -> Result<Pod, PlatformError> {
        let (role, source) = if !first {
            (Role::Replica, DataSource::Join)
        } else if crate::recovery::recovering(c) {
            let backup_id = self.ensure_recovery(c).await?;
            (Role::Primary, DataSource::Recover { backup_id })
        } else {
            (Role::Primary, DataSource::Initdb)
        };
        Ok(specs::instance_pod(c, &self.settings, name, role, &source))
    }

    /// The instance has run: its PVCs are marked ready, and from then on it is started
    /// again on its data, never bootstrapped.
    async fn mark_made(&self, c: &Cluster, name: &str) -> Result<(), PlatformError> {
        let patch = json!({"metadata": {"annotations": {
            specs::ANNOTATION_PVC_STATUS: specs::PVC_READY,
        }}});
        for p in self.instance_pvcs(c, name).await? {
            if p.annotations()
                .get(specs::ANNOTATION_PVC_STATUS)
                .map(String::as_str)
                == Some(specs::PVC_READY)
            {
                continue;
            }
            self.api::<PersistentVolumeClaim>(c)
                .patch(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(api_err(format!("marking PVC {} ready", p.name_any())))?;
        }
        tracing::info!(instance = name, "made: its PVCs are ready");
        Ok(())
    }

    fn role_of(c: &Cluster, name: &str) -> Role {
        let status = c.status.as_ref();
        let primary = status
            .and_then(|s| s.current_primary.as_deref())
            .or_else(|| status.and_then(|s| s.target_primary.as_deref()));
        if primary == Some(name) {
            Role::Primary
        } else {
            Role::Replica
        }
    }
}

#[async_trait]
impl Platform for KubePlatform {
    async fn observe(&self, c: &Cluster) -> Result<Vec<ObservedInstance>, PlatformError> {
        let cluster = c.metadata.name.clone().unwrap_or_default();
        let (pod_api, pod_selector) = (
            self.api::<Pod>(c),
            Self::selector(c, ",cnpg.io/podRole=instance"),
        );
        let (pods, access) = futures::join!(pod_api.list(&pod_selector), self.instance_access(c));
        let pods = pods.map_err(api_err("listing pods"))?;
        let access = &access;
        let pvcs = self
            .api::<PersistentVolumeClaim>(c)
            .list(&Self::selector(c, ",cnpg.io/pvcRole=PG_DATA"))
            .await
            .map_err(api_err("listing PVCs"))?;
        let mut names: Vec<String> = pvcs
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.labels().get(naming::LABEL_INSTANCE_NAME).cloned())
            .collect();
        let mut orphans = Vec::new();
        for p in &pods.items {
            let n = p.name_any();
            if names.contains(&n) {
                continue;
            }
            // A pod that never started and whose storage no longer exists at all (not even
            // on its way out) waits for a volume that will never come: remove it, and the
            // instance is made again from scratch.
            let pending = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
            let claimed = pvcs
                .items
                .iter()
                .any(|c| c.labels().get(naming::LABEL_INSTANCE_NAME) == Some(&n));
            if pending && !claimed && p.metadata.deletion_timestamp.is_none() {
                orphans.push(n);
                continue;
            }
            names.push(n);
        }
        for n in &orphans {
            tracing::warn!(instance = %n, "removing a pending pod whose storage is gone");
            self.delete::<Pod>(c, n).await?;
        }
        names.sort_by_key(|n| naming::serial_of(&cluster, n).unwrap_or(u32::MAX));
        let restart = specs::restart_annotation(c);
        let mut out = Vec::new();
        // Every instance is asked at once: one unreachable pod must not delay the others.
        let items = &pods.items;
        let reports = futures::future::join_all(names.iter().map(|name| async move {
            match items
                .iter()
                .find(|p| &p.name_any() == name)
                .filter(|p| pod_active(p))
            {
                Some(p) => self.instances.status(p, access).await,
                None => InstanceStatus::unreachable(name, "no pod"),
            }
        }))
        .await;
        for (name, mut status) in names.into_iter().zip(reports) {
            let pod = pods.items.iter().find(|p| p.name_any() == name);
            let running = pod.is_some_and(pod_active);
            let mut creating = pvcs.items.iter().any(|p| {
                p.labels().get(naming::LABEL_INSTANCE_NAME) == Some(&name)
                    && p.annotations()
                        .get(specs::ANNOTATION_PVC_STATUS)
                        .map(String::as_str)
                        == Some(specs::PVC_INITIALIZING)
            });
            if creating && status.is_reachable() {
                // Its manager answers, and it runs only once the pod's bootstrap step
                // has ended: the instance is made.
                if let Err(e) = self.mark_made(c, &name).await {
                    tracing::warn!(instance = %name, "cannot mark its PVCs ready: {e}");
                }
                creating = false;
            } else if creating && running {
                // A recovery from backups says how far it got (it publishes that itself).
                let recovering = c
                    .status
                    .as_ref()
                    .and_then(|s| s.recovery_progress.as_ref())
                    .filter(|p| p.phase != "done" && p.phase != "failed");
                let why = pod.and_then(bootstrap_failure).map_or_else(
                    || match recovering {
                        Some(p) => format!("being created: {}", p.line()),
                        None => "being created (its pod's bootstrap step is running)".to_owned(),
                    },
                    |f| format!("being created: {f}"),
                );
                status = InstanceStatus::unreachable(&name, &why);
                status.might_be_unavailable = true;
            }
            status.name = name.clone();
            // The kubelet's readiness is what Services act on.
            status.is_pod_ready = pod.is_some_and(pod_ready) && status.is_reachable();
            status.node = pod.and_then(|p| p.spec.as_ref()?.node_name.clone());
            status.ip = pod.and_then(|p| p.status.as_ref()?.pod_ip.clone());
            let role = pod
                .and_then(|p| p.labels().get(naming::LABEL_INSTANCE_ROLE).cloned())
                .and_then(|r| match r.as_str() {
                    "primary" => Some(Role::Primary),
                    "replica" => Some(Role::Replica),
                    "unhealthy" => Some(Role::Unhealthy),
                    _ => None,
                });
            let mut outdated = None;
            let mut restart_only = false;
            if let Some(p) = pod.filter(|p| pod_active(p)) {
                let ann = p.annotations();
                let want = specs::spec_hash(c, &self.settings, &name);
                let have_image = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|ct| ct.image.clone())
                    .unwrap_or_default();
                if have_image != specs::image(c) {
                    outdated = Some(format!(
                        "the image changed from {have_image} to {}",
                        specs::image(c)
                    ));
                } else if ann.get(specs::ANNOTATION_POD_SPEC_HASH) != Some(&want) {
                    outdated = Some("the pod template changed".into());
                } else if ann.get(naming::ANNOTATION_RESTARTED_AT) != restart.as_ref() {
                    outdated = Some("a restart was requested (kubectl cnpg restart)".into());
                } else if status.pending_restart {
                    outdated = Some("a parameter change needs a restart".into());
                    restart_only = true;
                }
            }
            out.push(ObservedInstance {
                name,
                running,
                role,
                status,
                outdated,
                restart_only,
                creating,
            });
        }
        Ok(out)
    }

    async fn ensure_shared(&self, c: &Cluster) -> Result<BTreeMap<String, String>, PlatformError> {
        // Independent of each other: sent together, so a loop waits for one round trip
        // instead of one per object.
        let (_, _, _, _, expirations) = futures::try_join!(
            self.ensure_services(c),
            self.ensure_pdbs(c),
            self.ensure_instance_rbac(c),
            self.ensure_pod_monitor(c),
            self.ensure_secrets(c),
        )?;
        Ok(expirations)
    }

    async fn create_instance(
        &self,
        c: &Cluster,
        name: &str,
        bootstrap: &Bootstrap,
    ) -> Result<(), PlatformError> {
        // The storage of an instance of the same name (destroyed, or scaled down) may still
        // be on its way out, held by its protection finalizer: applying the new PVC would
        // only touch the old one, and the new pod would start on storage that vanishes.
        let leaving: Vec<String> = self
            .instance_pvcs(c, name)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .map(|p| p.name_any())
            .collect();
        if !leaving.is_empty() {
            tracing::info!(
                instance = name,
                "waiting for the PVCs {} of a removed instance of that name to be gone before creating it",
                leaving.join(", ")
            );
            return Ok(());
        }
        // What a recovery reads comes first, so nothing is made before this can fail.
        let pod = self
            .bootstrap_pod(c, name, matches!(bootstrap, Bootstrap::Initdb))
            .await?;
        for pvc in specs::instance_pvcs(c, name) {
            self.create::<PersistentVolumeClaim>(c, &pvc).await?;
        }
        self.create::<Pod>(c, &pod).await
    }

    async fn start_instance(&self, c: &Cluster, name: &str) -> Result<(), PlatformError> {
        if self.pod(c, name).await?.is_some() {
            // Still terminating: it is recreated once it is gone.
            return Ok(());
        }
        // Its storage must still be there: the loop saw it a moment ago, but an instance
        // being destroyed loses its PVCs as its pod goes, and a pod on storage that is gone
        // would wait for it forever.
        let data = naming::pgdata_pvc(name);
        let pvcs = self.instance_pvcs(c, name).await?;
        let Some(data) = pvcs
            .iter()
            .find(|p| p.name_any() == data && p.metadata.deletion_timestamp.is_none())
        else {
            tracing::info!(
                instance = name,
                "not starting it again: its storage is gone or going"
            );
            return Ok(());
        };
        let role = Self::role_of(c, name);
        let pod = if data
            .annotations()
            .get(specs::ANNOTATION_PVC_STATUS)
            .map(String::as_str)
            == Some(specs::PVC_INITIALIZING)
        {
            // Its pod went away before the instance was made: what the storage holds is
            // not a member's data, so the bootstrap step runs again (it starts over on a
            // half-made directory, and does nothing on a finished one).
            tracing::info!(
                instance = name,
                "its storage was never made ready: bootstrapping it again"
            );
            self.bootstrap_pod(c, name, role == Role::Primary).await?
        } else {
            specs::instance_pod(c, &self.settings, name, role, &DataSource::Existing)
        };
        self.create::<Pod>(c, &pod).await
    }

    async fn stop_instance(&self, c: &Cluster, name: &str) -> Result<(), PlatformError> {
        self.delete::<Pod>(c, name).await
    }

    /// The pod deleted with a one-second grace period: its kubelet kills whatever still
    /// runs in it (a hung process gets its SIGKILL a second later), and the Pod object
    /// stays until the kubelet says its containers are gone, so no new pod takes the
    /// instance's name and storage while the old one may run on a node that does not
    /// answer (a grace period of 0 would remove the object at once). Behind that, the
    /// primary Lease and the instance manager's own check of the target primary fence it.
    async fn kill_instance(&self, c: &Cluster, name: &str) -> Result<(), PlatformError> {
        match self
            .api::<Pod>(c)
            .delete(name, &DeleteParams::default().grace_period(1))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("killing Pod {name}"))(e)),
        }
    }

    async fn delete_instance(&self, c: &Cluster, name: &str) -> Result<(), PlatformError> {
        self.delete::<Pod>(c, name).await?;
        for p in self.instance_pvcs(c, name).await? {
            self.delete::<PersistentVolumeClaim>(c, &p.name_any())
                .await?;
        }
        Ok(())
    }

    async fn set_role(&self, c: &Cluster, name: &str, role: Role) -> Result<(), PlatformError> {
        let patch = json!({"metadata": {"labels": {
            naming::LABEL_INSTANCE_ROLE: role.as_str(),
            naming::LABEL_ROLE_LEGACY: role.as_str(),
        }}});
        match self
            .api::<Pod>(c)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("labelling {name} {}", role.as_str()))(e)),
        }
    }

    async fn write_status(&self, c: &Cluster, update: &StatusUpdate) -> Result<(), PlatformError> {
        let name = c.name_any();
        let mut body = json!({
            "apiVersion": Cluster::api_version(&()),
            "kind": Cluster::kind(&()),
            "metadata": {"name": name},
            "status": update.status,
        });
        let poolers = self.poolers_of(c).await?;
        if let Err(e) = self.hold_poolers_around(c, &poolers, update).await {
            self.warn(c, "PoolersNotPaused", &e.to_string()).await;
        }
        // Upstream's sign for the primary to make what PgBouncer's auth_query needs.
        if let Some(st) = body["status"].as_object_mut() {
            if poolers.iter().any(crate::pooler::automatic_auth) {
                st.insert(
                    "poolerIntegrations".into(),
                    json!({"pgBouncerIntegration": {"secrets": [secrets::pooler_secret(&name)]}}),
                );
            } else {
                st.remove("poolerIntegrations");
            }
        }
        // The optimistic lock: only onto the Cluster this loop observed.
        if let Some(rv) = &c.metadata.resource_version {
            body["metadata"]["resourceVersion"] = json!(rv);
        }
        self.api::<Cluster>(c)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(|_| ())
            .map_err(api_err(format!("writing the status of {name}")))
    }

    async fn image_catalog(
        &self,
        c: &Cluster,
        kind: &str,
        name: &str,
    ) -> Result<Option<ImageCatalogSpec>, PlatformError> {
        let api_error = |source: kube::Error| PlatformError::Api {
            action: format!("reading {kind} {name}"),
            source: Box::new(source),
        };
        Ok(if kind == "ClusterImageCatalog" {
            Api::<ClusterImageCatalog>::all(self.client.clone())
                .get_opt(name)
                .await
                .map_err(api_error)?
                .map(|c| c.spec.into())
        } else {
            self.api::<ImageCatalog>(c)
                .get_opt(name)
                .await
                .map_err(api_error)?
                .map(|c| c.spec)
        })
    }

    async fn record_event(&self, c: &Cluster, event: &Event) -> Result<(), PlatformError> {
        self.recorder
            .publish(
                &kube_event(event.type_, event.reason, &event.message),
                &c.object_ref(&()),
            )
            .await
            .map_err(api_err(format!("recording event {}", event.reason)))
    }
}
