//! The operator's window on the world, and the loop that drives the core's decisions
//! through it.
//!
//! [`Platform`] is everything the cluster decision needs done or seen: instances (a pod and
//! its storage), role labels, the cluster-wide objects (Services, PDBs, Secrets), the
//! Cluster status and events. [`reconcile_cluster`] is the whole operator loop for one
//! Cluster — observe, let `cnpg_core::reconcile` decide, act, write the status — and knows
//! nothing of how the platform does it: [`crate::kube::platform::KubePlatform`] does it on
//! Kubernetes. (The local platform, [`crate::local`], drives the same `cnpg_core::reconcile`
//! with a loop of its own; it does not implement this trait yet.)

use async_trait::async_trait;
use cnpg_core::api::image_catalog::{ImageCatalogSpec, image_for};
use cnpg_core::api::{Cluster, ClusterStatus, HaState, Validate};
use cnpg_core::naming::Role;
use cnpg_core::phase::ClusterPhase;
use cnpg_core::reconcile::{
    self, Action, Bootstrap, ClusterState, Event, Observed, ObservedInstance,
};
use cnpg_core::sync::SyncStandbys;
use cnpg_core::time::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A platform call failed.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The API refused or could not be reached.
    #[error("{action}: {source}")]
    Api {
        /// What we were doing.
        action: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The status changed under us (an optimistic-lock conflict): decide again.
    #[error("the Cluster changed while we decided ({0}); deciding again")]
    Conflict(String),
    /// Something we built is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// What the operator writes to the Cluster status after a loop.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The status to apply (the fields the operator owns).
    pub status: ClusterStatus,
}

/// Everything the cluster loop needs from the world around it.
#[async_trait]
pub trait Platform: Send + Sync {
    /// Every instance of the cluster that has storage or a pod, with its status report
    /// (`error` set when it could not be read) and whether its pod is outdated.
    async fn observe(&self, cluster: &Cluster) -> Result<Vec<ObservedInstance>, PlatformError>;
    /// Creates or updates what the whole cluster shares: Services, PDBs, Secrets. Returns
    /// the certificate expirations, by Secret.
    async fn ensure_shared(
        &self,
        cluster: &Cluster,
    ) -> Result<std::collections::BTreeMap<String, String>, PlatformError>;
    /// Creates an instance on new storage.
    async fn create_instance(
        &self,
        cluster: &Cluster,
        name: &str,
        bootstrap: &Bootstrap,
    ) -> Result<(), PlatformError>;
    /// (Re)creates an instance's pod on its existing storage.
    async fn start_instance(&self, cluster: &Cluster, name: &str) -> Result<(), PlatformError>;
    /// Deletes an instance's pod, keeping its storage.
    async fn stop_instance(&self, cluster: &Cluster, name: &str) -> Result<(), PlatformError>;
    /// Deletes an instance's pod and storage.
    async fn delete_instance(&self, cluster: &Cluster, name: &str) -> Result<(), PlatformError>;
    /// Kills every process of an instance that does not answer but may still run, without
    /// waiting for it to stop by itself, keeping its storage: what a node's watchdog does.
    async fn kill_instance(&self, cluster: &Cluster, name: &str) -> Result<(), PlatformError>;
    /// Labels an instance's pod with a role.
    async fn set_role(
        &self,
        cluster: &Cluster,
        name: &str,
        role: Role,
    ) -> Result<(), PlatformError>;
    /// Writes the operator's part of the status, only if the Cluster is still the one
    /// observed (else [`PlatformError::Conflict`]).
    async fn write_status(
        &self,
        cluster: &Cluster,
        update: &StatusUpdate,
    ) -> Result<(), PlatformError>;
    /// Records an event on the Cluster.
    async fn record_event(&self, cluster: &Cluster, event: &Event) -> Result<(), PlatformError>;
    /// The catalog a Cluster's `spec.imageCatalogRef` names (`kind` `ImageCatalog` in the
    /// Cluster's namespace, or `ClusterImageCatalog`); `None` when there is no such one.
    async fn image_catalog(
        &self,
        cluster: &Cluster,
        kind: &str,
        name: &str,
    ) -> Result<Option<ImageCatalogSpec>, PlatformError>;
}

/// Writes `status` (its phase and reason saying why the loop stops here; the decisions'
/// state kept) and a Warning event with the same message.
async fn stop_with<P: Platform + ?Sized>(
    platform: &P,
    cluster: &Cluster,
    mut status: ClusterStatus,
    event: &'static str,
) -> Result<(), PlatformError> {
    keep_decisions(cluster, &mut status);
    let message = status.phase_reason.clone().unwrap_or_default();
    platform
        .write_status(cluster, &StatusUpdate { status })
        .await?;
    platform
        .record_event(
            cluster,
            &Event {
                type_: reconcile::EventType::Warning,
                reason: event,
                message,
            },
        )
        .await
}

/// The Cluster with the image its `spec.imageCatalogRef` picks as its `imageName` (as is
/// when it has none), so the rest of the loop — pods, rollouts — reads one field; or why
/// it cannot run (the catalog or its major missing).
async fn with_catalog_image<P: Platform + ?Sized>(
    platform: &P,
    cluster: &Cluster,
) -> Result<Result<Option<Cluster>, String>, PlatformError> {
    let Some(r) = &cluster.spec.image_catalog_ref else {
        return Ok(Ok(None));
    };
    let what = format!("{} {}", r.kind, r.name);
    let Some(catalog) = platform.image_catalog(cluster, &r.kind, &r.name).await? else {
        return Ok(Err(format!(
            "{what} (spec.imageCatalogRef) does not exist; create it, or name another"
        )));
    };
    Ok(image_for(&catalog.images, r.major, &what).map(|image| {
        let mut c = cluster.clone();
        c.spec.image_name = Some(image);
        c.spec.image_catalog_ref = None;
        Some(c)
    }))
}

/// The decisions' state, read back from the status.
pub fn state_of(cluster: &Cluster) -> ClusterState {
    let status = cluster.status.clone().unwrap_or_default();
    let ha = status.ha_state.clone().unwrap_or_default();
    ClusterState {
        current_primary: status.current_primary.clone(),
        target_primary: status.target_primary.clone(),
        failing_since: status
            .current_primary_failing_since_timestamp
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| Timestamp(t.as_millisecond().max(0) as u64)),
        published_sync: ha
            .published_sync
            .as_deref()
            .and_then(|s| serde_json::from_str::<SyncStandbys>(s).ok()),
        hibernating: ha.hibernating,
        primary_restarting: ha.primary_restarting,
    }
}

fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.0 as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// What one loop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The phase written.
    pub phase: ClusterPhase,
    /// Why.
    pub reason: String,
    /// When to look again (absent: on the next change).
    pub requeue: Option<Duration>,
    /// Actions carried out, as text.
    pub actions: Vec<String>,
}

/// The phase upstream shows for a manifest the webhook would have refused.
const INVALID: &str = "Cluster cannot be created";

/// One loop of the operator for one Cluster: validate, observe, decide, act, record.
///
/// A Cluster whose spec is invalid starts nothing: its status says why and an event names
/// every field. A deleted Cluster is left to the garbage collector (every object it made
/// carries an owner reference to it).
pub async fn reconcile_cluster<P: Platform + ?Sized>(
    platform: &P,
    cluster: &Cluster,
    now: Timestamp,
) -> Result<Outcome, PlatformError> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Outcome {
            phase: ClusterPhase::Healthy,
            reason: "being deleted".into(),
            requeue: None,
            actions: vec![],
        });
    }
    let errors = cluster.validate();
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let reason = format!("the spec is invalid: {}", text.join("; "));
        let status = ClusterStatus {
            phase: Some(INVALID.into()),
            phase_reason: Some(reason.clone()),
            ..Default::default()
        };
        stop_with(platform, cluster, status, "InvalidSpec").await?;
        return Ok(Outcome {
            phase: ClusterPhase::Healthy,
            reason,
            requeue: None,
            actions: vec![],
        });
    }
    let resolved = match with_catalog_image(platform, cluster).await? {
        Ok(c) => c,
        Err(reason) => {
            let before = cluster.status.clone().unwrap_or_default();
            let phase = ClusterPhase::ImageCatalogError.as_str();
            if before.phase.as_deref() != Some(phase)
                || before.phase_reason.as_deref() != Some(&reason)
            {
                let status = ClusterStatus {
                    phase: Some(phase.into()),
                    phase_reason: Some(reason.clone()),
                    ..before
                };
                stop_with(platform, cluster, status, "ImageCatalogError").await?;
            }
            // A change to the catalog wakes the Cluster; look again anyway in case the
            // catalog's watch missed it.
            return Ok(Outcome {
                phase: ClusterPhase::ImageCatalogError,
                reason,
                requeue: Some(Duration::from_secs(30)),
                actions: vec![],
            });
        }
    };
    let cluster = resolved.as_ref().unwrap_or(cluster);
    let (policy, fencing_warning) = cluster.policy();
    if let Some(w) = fencing_warning {
        platform
            .record_event(
                cluster,
                &Event {
                    type_: reconcile::EventType::Warning,
                    reason: "InvalidFencing",
                    message: w.to_string(),
                },
            )
            .await?;
    }
    // Both before deciding, neither waiting for the other: the shared objects are not
    // what a failover waits for.
    let (shared, observed) =
        futures::join!(platform.ensure_shared(cluster), platform.observe(cluster));
    let (expirations, instances) = match (shared, observed) {
        (Ok(e), Ok(i)) => (e, i),
        (Err(e), _) | (_, Err(e)) => {
            report_blocked(platform, cluster, &e).await;
            return Err(e);
        }
    };
    let state = state_of(cluster);
    let sync_in_effect = state
        .current_primary
        .as_ref()
        .and_then(|p| instances.iter().find(|i| &i.name == p))
        .and_then(|i| i.status.synchronous_standby_names.clone());
    let observed = Observed {
        instances,
        state,
        sync_in_effect,
    };
    let plan = reconcile::reconcile(&policy, &observed, now);
    let before = cluster.status.clone().unwrap_or_default();
    let mut ha = before.ha_state.clone().unwrap_or_default();
    ha.hibernating = plan.state.hibernating;
    ha.primary_restarting = plan.state.primary_restarting;
    ha.published_sync = plan
        .state
        .published_sync
        .as_ref()
        .and_then(|s| serde_json::to_string(s).ok());
    let published_before = before
        .ha_state
        .as_ref()
        .and_then(|h| h.published_sync.clone());
    if ha.published_sync != published_before {
        match plan.state.published_sync.as_ref() {
            Some(s) => {
                tracing::info!(cluster = ?cluster.metadata.name, "synchronous configuration confirmed by the primary: {s}")
            }
            None => {
                tracing::info!(cluster = ?cluster.metadata.name, "no synchronous configuration is confirmed until the primary applies the new one")
            }
        }
    }
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for action in &plan.actions {
        let result = match action {
            Action::CreateInstance { name, bootstrap } => {
                platform.create_instance(cluster, name, bootstrap).await
            }
            Action::StartInstance { name } => platform.start_instance(cluster, name).await,
            Action::StopInstance { name } => platform.stop_instance(cluster, name).await,
            Action::DeleteInstance { name } => platform.delete_instance(cluster, name).await,
            Action::SetRole { name, role } => platform.set_role(cluster, name, *role).await,
            Action::ApplySyncStandbyNames { value, .. } => {
                ha.synchronous_standby_names = Some(value.clone());
                Ok(())
            }
            Action::RestartInPlace { name } => {
                ha.restart = Some(format!("{name}@{}", now.0));
                Ok(())
            }
            Action::KillInstance { name, reason } => {
                tracing::warn!(instance = %name, "{reason}");
                platform.kill_instance(cluster, name).await
            }
        };
        match result {
            Ok(()) => done.push(format!("{action:?}")),
            Err(e) => failures.push(format!("{action:?}: {e}")),
        }
    }
    let mut status = ClusterStatus {
        phase: Some(plan.phase.as_str().to_owned()),
        phase_reason: Some(plan.phase_reason.clone()),
        target_primary: plan.state.target_primary.clone(),
        target_primary_timestamp: if plan.state.target_primary != before.target_primary {
            Some(rfc3339(now))
        } else {
            before.target_primary_timestamp.clone()
        },
        current_primary_failing_since_timestamp: plan.state.failing_since.map(rfc3339),
        ha_state: Some(ha),
        ..Default::default()
    };
    fill_counts(cluster, &observed, &mut status);
    // The image the instances run: `imageName`, the catalog's pick, or the default.
    status.image = Some(crate::kube::specs::image(cluster));
    // `managedRolesStatus` and `tablespacesStatus`: the primary's last passes (kept while
    // no primary reports them).
    let primary = observed
        .state
        .current_primary
        .as_ref()
        .and_then(|p| observed.instances.iter().find(|i| &i.name == p));
    status.managed_roles_status = primary
        .and_then(|p| p.status.managed_roles.clone())
        .or_else(|| before.managed_roles_status.clone());
    status.tablespaces_status = primary
        .and_then(|p| p.status.tablespaces.clone())
        .unwrap_or_else(|| before.tablespaces_status.clone());
    status.conditions = conditions(cluster, &before, &status, now);
    archiving_status(cluster, &observed, &before, &mut status, now);
    if !expirations.is_empty() {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        status.certificates = Some(cnpg_core::api::cluster::CertificatesStatus {
            server_ca_secret: Some(cnpg_core::naming::secret_ca(&name)),
            client_ca_secret: Some(cnpg_core::naming::secret_ca(&name)),
            server_tls_secret: Some(cnpg_core::naming::secret_server(&name)),
            replication_tls_secret: Some(cnpg_core::naming::secret_replication(&name)),
            expirations,
            ..Default::default()
        });
    }
    // A managed role the primary has yet to report reconciled: look again soon. Its pass
    // runs beside this loop, and nothing on the API server changes when it ends.
    let roles_pending = cluster
        .spec
        .managed
        .iter()
        .flat_map(|m| m.roles.iter())
        .any(|r| {
            !status
                .managed_roles_status
                .as_ref()
                .and_then(|m| m.by_status.get("reconciled"))
                .is_some_and(|done| done.contains(&r.name))
        });
    platform
        .write_status(cluster, &StatusUpdate { status })
        .await?;
    for e in &plan.events {
        // Events are best effort: a lost one must not undo a decision already recorded.
        if let Err(err) = platform.record_event(cluster, e).await {
            tracing::warn!(reason = e.reason, "cannot record event: {err}");
        }
    }
    for f in &failures {
        let _ = platform
            .record_event(
                cluster,
                &Event {
                    type_: reconcile::EventType::Warning,
                    reason: "ActionFailed",
                    message: f.clone(),
                },
            )
            .await;
    }
    Ok(Outcome {
        phase: plan.phase,
        reason: plan.phase_reason,
        requeue: if !failures.is_empty() {
            Some(Duration::from_secs(1))
        } else if roles_pending {
            Some(plan.requeue.map_or(ROLES_RECHECK, |r| r.min(ROLES_RECHECK)))
        } else {
            plan.requeue
        },
        actions: done,
    })
}

/// How soon a loop looks again while a managed role is not reconciled.
const ROLES_RECHECK: Duration = Duration::from_secs(5);

/// Nothing can progress until the platform lets us create or see the cluster's objects:
/// say so in the status from the very first loop (phase `Unable to create required cluster
/// objects`, with the platform's own words, e.g. an RBAC refusal) and in a Warning event.
/// Both are best effort: the refusal may cover them too, and the error is returned anyway.
async fn report_blocked<P: Platform + ?Sized>(platform: &P, cluster: &Cluster, e: &PlatformError) {
    let reason = e.to_string();
    let before = cluster.status.clone().unwrap_or_default();
    let phase = ClusterPhase::CannotCreateClusterObjects.as_str();
    if before.phase.as_deref() == Some(phase) && before.phase_reason.as_deref() == Some(&reason) {
        return;
    }
    let mut status = ClusterStatus {
        phase: Some(phase.into()),
        phase_reason: Some(reason.clone()),
        ..before
    };
    keep_decisions(cluster, &mut status);
    if let Err(err) = platform
        .write_status(cluster, &StatusUpdate { status })
        .await
    {
        tracing::warn!("cannot write the status saying why nothing progresses: {err}");
    }
    let event = Event {
        type_: reconcile::EventType::Warning,
        reason: "ReconcileBlocked",
        message: reason,
    };
    if let Err(err) = platform.record_event(cluster, &event).await {
        tracing::warn!("cannot record event: {err}");
    }
}

/// The decisions' fields must survive a status write that is about something else.
fn keep_decisions(cluster: &Cluster, status: &mut ClusterStatus) {
    let before = cluster.status.clone().unwrap_or_default();
    status.target_primary = before.target_primary;
    status.target_primary_timestamp = before.target_primary_timestamp;
    status.current_primary_failing_since_timestamp = before.current_primary_failing_since_timestamp;
    status.ha_state = before.ha_state.or(Some(HaState::default()));
}

/// Upstream's conditions that follow the phase: `Ready` (true exactly when the cluster
/// is healthy) and `Initialized` (true from the first running instance on, never cleared).
/// Others already there are kept; a condition's transition time moves only when its
/// status does.
fn conditions(
    cluster: &Cluster,
    before: &ClusterStatus,
    now_status: &ClusterStatus,
    now: Timestamp,
) -> Vec<Condition> {
    let healthy = now_status.phase.as_deref() == Some(ClusterPhase::Healthy.as_str());
    let initialized = before
        .conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True")
        || before.current_primary.is_some()
        || now_status.ready_instances > 0;
    let (ready_reason, ready_message) = if healthy {
        ("ClusterIsReady", "Cluster is Ready".to_owned())
    } else {
        (
            "ClusterIsNotReady",
            format!(
                "Cluster Is Not Ready: {}",
                now_status.phase.clone().unwrap_or_default()
            ),
        )
    };
    let (init_reason, init_message) = if initialized {
        ("BootstrapCompleted", "the first instance is running")
    } else {
        ("BootstrapPending", "waiting for the first instance to run")
    };
    let mut out = before.conditions.clone();
    for (type_, ok, reason, message) in [
        ("Ready", healthy, ready_reason, ready_message),
        (
            "Initialized",
            initialized,
            init_reason,
            init_message.to_owned(),
        ),
    ] {
        set_condition(&mut out, cluster, type_, ok, reason, message, now);
    }
    out
}

/// Sets condition `type_` in `out`; its transition time moves only when its status does.
pub(crate) fn set_condition(
    out: &mut Vec<Condition>,
    cluster: &Cluster,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    let at = out
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| {
            Time(k8s_openapi::jiff::Timestamp::from_millisecond(now.0 as i64).unwrap_or_default())
        });
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: at,
        observed_generation: cluster.metadata.generation,
    };
    match out.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => out.push(condition),
    }
}

/// Upstream's `ContinuousArchiving` condition, from the primary's report (where upstream's
/// archiver sets it after each attempt); gone when the cluster no longer archives. The
/// backup information the backup runner keeps in the status survives the rewrite.
fn archiving_status(
    cluster: &Cluster,
    observed: &Observed,
    before: &ClusterStatus,
    status: &mut ClusterStatus,
    now: Timestamp,
) {
    status.first_recoverability_point = before.first_recoverability_point.clone();
    status.first_recoverability_point_by_method =
        before.first_recoverability_point_by_method.clone();
    status.last_successful_backup = before.last_successful_backup.clone();
    status.last_successful_backup_by_method = before.last_successful_backup_by_method.clone();
    status.last_failed_backup = before.last_failed_backup.clone();
    let archives = cluster
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| b.barman_object_store.is_some());
    if !archives {
        status
            .conditions
            .retain(|c| c.type_ != CONTINUOUS_ARCHIVING);
        return;
    }
    let primary = observed
        .state
        .current_primary
        .as_ref()
        .and_then(|p| observed.instances.iter().find(|i| &i.name == p));
    if let Some(c) = primary.and_then(|p| cnpg_core::backup::archiving(&p.status)) {
        set_condition(
            &mut status.conditions,
            cluster,
            CONTINUOUS_ARCHIVING,
            c.ok,
            c.reason,
            c.message,
            now,
        );
    }
}

/// The condition saying whether WAL archiving works.
pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";

fn fill_counts(cluster: &Cluster, observed: &Observed, status: &mut ClusterStatus) {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let mut names: Vec<String> = observed.instances.iter().map(|i| i.name.clone()).collect();
    names.sort_by_key(|n| cnpg_core::naming::serial_of(&name, n).unwrap_or(u32::MAX));
    let ready: Vec<String> = observed
        .instances
        .iter()
        .filter(|i| i.running && i.status.is_reachable() && i.status.is_pod_ready)
        .map(|i| i.name.clone())
        .collect();
    let failed: Vec<String> = names
        .iter()
        .filter(|n| !ready.contains(n))
        .cloned()
        .collect();
    status.instances = names.len() as i32;
    status.ready_instances = ready.len() as i32;
    status.instance_names = names.clone();
    if !ready.is_empty() {
        status.instances_status.insert("healthy".into(), ready);
    }
    if !failed.is_empty() {
        status.instances_status.insert("failed".into(), failed);
    }
    status.latest_generated_node = names
        .iter()
        .filter_map(|n| cnpg_core::naming::serial_of(&name, n))
        .max()
        .map(|s| s as i32);
    status.write_service = Some(cnpg_core::naming::service_rw(&name));
    status.read_service = Some(cnpg_core::naming::service_r(&name));
    status.selector = Some(format!("cnpg.io/cluster={name},cnpg.io/podRole=instance"));
    status.pvc_count = Some(names.len() as i32);
    for i in &observed.instances {
        if i.status.is_reachable() {
            status.instances_reported_state.insert(
                i.name.clone(),
                cnpg_core::api::cluster::InstanceReportedState {
                    is_primary: i.status.is_primary,
                    time_line_id: Some(i.status.timeline as i32),
                    ip: i.status.ip.clone().unwrap_or_default(),
                },
            );
        }
    }
    // Every instance observed has its storage (that is what makes it an instance); that of
    // one still being made is initializing, as upstream says it.
    for i in &observed.instances {
        let pvcs = if i.creating {
            &mut status.initializing_pvc
        } else {
            &mut status.healthy_pvc
        };
        pvcs.push(i.name.clone());
        if cluster.spec.wal_storage.is_some() {
            pvcs.push(cnpg_core::naming::wal_pvc(&i.name));
        }
    }
    // Where the instances run: the nodes used, when the platform has nodes.
    let nodes: BTreeSet<&str> = observed
        .instances
        .iter()
        .filter_map(|i| i.status.node.as_deref())
        .collect();
    if !nodes.is_empty() {
        status.topology = Some(cnpg_core::api::cluster::Topology {
            instances: observed
                .instances
                .iter()
                .filter(|i| i.status.node.is_some())
                .map(|i| (i.name.clone(), BTreeMap::new()))
                .collect(),
            nodes_used: Some(nodes.len() as i32),
            successfully_extracted: Some(true),
        });
    }
    if let Some(ts) = observed
        .instances
        .iter()
        .find(|i| i.status.is_primary)
        .map(|i| i.status.timeline)
    {
        status.timeline_id = Some(ts as i32);
    }
}
