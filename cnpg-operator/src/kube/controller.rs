//! The operator process on Kubernetes: a kube-rs controller for Clusters, woken by changes
//! of the Pods, PVCs, Services, PodDisruptionBudgets and Secrets they own and of their
//! Poolers, one for Backups and ScheduledBackups ([`super::backup`]), and one for Poolers
//! ([`super::pooler`]: their Deployments, Services and Secrets), all gated on a Lease so that only one of several operator
//! replicas acts; health, readiness and metrics over HTTP;
//! a graceful shutdown that lets the reconcile in flight finish and releases the Lease.
//!
//! Losing the Lease stops the process (fail-stop, as kube-controller-manager does): a
//! replica that cannot prove it still leads must not keep deciding failovers.

use super::platform::KubePlatform;
use crate::clock::now;
use crate::platform::{PlatformError, reconcile_cluster};
use cnpg_core::api::Cluster;
use cnpg_core::api::Pooler;
use cnpg_core::api::backup::{Backup, ScheduledBackup};
use cnpg_core::api::image_catalog::{ClusterImageCatalog, ImageCatalog};
use cnpg_instance::lease::{Attempt, LeaseLock};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The Lease the operator replicas contend for.
pub const LEADER_LEASE: &str = "cnpg-rs-operator";

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This replica's identity in the Lease (its pod name).
    pub identity: String,
    /// Watch only this namespace (default: every namespace).
    pub watch_namespace: Option<String>,
    /// Where the leader Lease lives.
    pub lease_namespace: String,
    /// How long the Lease lasts without renewal.
    pub lease_duration: Duration,
    /// Where to serve `/healthz`, `/readyz` and `/metrics` (none: not served).
    pub health_addr: Option<SocketAddr>,
}

/// The operator's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed.
    pub failures: Counter,
    /// 1 while this replica leads.
    pub leader: Gauge,
}

/// The controller failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The API could not be reached for the Lease.
    #[error("leader election: {0}")]
    Lease(#[from] kube::Error),
    /// Another replica took the Lease.
    #[error("lost the leader lease: {0}")]
    LostLease(String),
    /// The health endpoint could not listen.
    #[error("health endpoint on {addr}: {source}")]
    Health {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

struct Ctx {
    platform: KubePlatform,
    metrics: Metrics,
}

/// `controller` woken for the objects whose image catalog reference, `(kind, name)` by
/// `names`, is a catalog that changed: a new image rolls their pods. Namespaced catalogs
/// are watched where the operator watches; cluster-wide ones everywhere.
fn watching_catalogs<K>(
    controller: Controller<K>,
    namespaced: Api<ImageCatalog>,
    cluster_wide: Api<ClusterImageCatalog>,
    names: fn(&K) -> Option<(&str, &str)>,
) -> Controller<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let users = |kind: &'static str| {
        let cache = controller.store();
        move |namespace: Option<String>, name: String| {
            cache
                .state()
                .into_iter()
                .filter(|o| {
                    names(o).is_some_and(|(k, n)| {
                        k == kind
                            && n == name
                            && (namespace.is_none() || o.namespace() == namespace)
                    })
                })
                .map(|o| ObjectRef::from_obj(&*o))
                .collect::<Vec<_>>()
        }
    };
    let (of_namespaced, of_cluster_wide) = (users("ImageCatalog"), users("ClusterImageCatalog"));
    controller
        .watches(
            namespaced,
            watcher::Config::default(),
            move |c: ImageCatalog| of_namespaced(c.namespace(), c.name_any()),
        )
        .watches(
            cluster_wide,
            watcher::Config::default(),
            move |c: ClusterImageCatalog| of_cluster_wide(None, c.name_any()),
        )
}

async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Ctx>) -> Result<Action, PlatformError> {
    ctx.metrics.reconciles.inc();
    match reconcile_cluster(&ctx.platform, &cluster, now()).await {
        Ok(outcome) => {
            tracing::info!(
                cluster = cluster.metadata.name.as_deref().unwrap_or(""),
                phase = %outcome.phase,
                "{}",
                outcome.reason
            );
            Ok(outcome
                .requeue
                .map_or(Action::requeue(Duration::from_secs(300)), Action::requeue))
        }
        // The Cluster changed while we decided: decide again at once, on the new one.
        Err(PlatformError::Conflict(why)) => {
            tracing::debug!("{why}");
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(e) => Err(e),
    }
}

async fn reconcile_backup(backup: Arc<Backup>, ctx: Arc<Ctx>) -> Result<Action, PlatformError> {
    match super::backup::reconcile_backup(&backup, &ctx.platform).await {
        Err(PlatformError::Conflict(why)) => {
            tracing::debug!("{why}");
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        other => other,
    }
}

async fn reconcile_schedule(
    sb: Arc<ScheduledBackup>,
    ctx: Arc<Ctx>,
) -> Result<Action, PlatformError> {
    super::backup::reconcile_schedule(&sb, &ctx.platform).await
}

async fn reconcile_pooler(p: Arc<Pooler>, ctx: Arc<Ctx>) -> Result<Action, PlatformError> {
    super::pooler::reconcile_pooler(&p, &ctx.platform).await
}

fn pooler_error_policy(p: Arc<Pooler>, e: &PlatformError, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.failures.inc();
    tracing::warn!(
        pooler = p.metadata.name.as_deref().unwrap_or(""),
        "reconcile failed: {e}"
    );
    Action::requeue(Duration::from_secs(5))
}

fn schedule_error_policy(sb: Arc<ScheduledBackup>, e: &PlatformError, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.failures.inc();
    tracing::warn!(
        schedule = sb.metadata.name.as_deref().unwrap_or(""),
        "reconcile failed: {e}"
    );
    Action::requeue(Duration::from_secs(5))
}

fn backup_error_policy(backup: Arc<Backup>, e: &PlatformError, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.failures.inc();
    tracing::warn!(
        backup = backup.metadata.name.as_deref().unwrap_or(""),
        "reconcile failed: {e}"
    );
    Action::requeue(Duration::from_secs(5))
}

fn error_policy(cluster: Arc<Cluster>, e: &PlatformError, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.failures.inc();
    tracing::warn!(
        cluster = cluster.metadata.name.as_deref().unwrap_or(""),
        "reconcile failed: {e}"
    );
    Action::requeue(Duration::from_secs(5))
}

async fn serve_health(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>, ControllerError> {
    let mut registry = Registry::default();
    registry.register(
        "cnpg_operator_reconciles",
        "Reconciles run",
        metrics.reconciles.clone(),
    );
    registry.register(
        "cnpg_operator_reconcile_failures",
        "Reconciles that failed",
        metrics.failures.clone(),
    );
    registry.register(
        "cnpg_operator_leader",
        "1 while this replica leads",
        metrics.leader.clone(),
    );
    let registry = Arc::new(registry);
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    text
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ControllerError::Health { addr, source })?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// Runs the operator until `shutdown` resolves (then finishes the reconciles in flight and
/// releases the Lease) or the Lease is lost (an error: the process should exit).
pub async fn run(
    client: kube::Client,
    platform: KubePlatform,
    config: ControllerConfig,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let ready = Arc::new(AtomicBool::new(false));
    let health = match config.health_addr {
        Some(addr) => Some(serve_health(addr, metrics.clone(), ready.clone()).await?),
        None => None,
    };
    let lock = Arc::new(LeaseLock::new(
        Api::<Lease>::namespaced(client.clone(), &config.lease_namespace),
        LEADER_LEASE,
        &config.identity,
        config.lease_duration,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown_rx = stop_rx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Wait to lead (or to be told to stop while waiting).
    let retry = (config.lease_duration / 5).max(Duration::from_millis(100));
    loop {
        if *shutdown_rx.borrow() {
            return Ok(());
        }
        match lock.try_acquire().await {
            Ok(Attempt::Held) => break,
            Ok(Attempt::Busy(why)) => tracing::info!("standing by: {why}"),
            Err(e) => tracing::warn!("leader election: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown_rx.changed() => {}
        }
    }
    tracing::info!(identity = %config.identity, "leading");
    metrics.leader.set(1);
    ready.store(true, Ordering::Relaxed);
    // Keep the Lease; losing it stops everything.
    let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel::<String>();
    let renewer = {
        let lock = lock.clone();
        let duration = config.lease_duration;
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep((duration / 3).max(Duration::from_millis(50))).await;
                match lock.try_acquire().await {
                    Ok(Attempt::Held) => last_ok = tokio::time::Instant::now(),
                    Ok(Attempt::Busy(why)) => {
                        let _ = lost_tx.send(why);
                        return;
                    }
                    Err(e) if last_ok.elapsed() > duration => {
                        let _ = lost_tx.send(format!("cannot renew for {duration:?}: {e}"));
                        return;
                    }
                    Err(e) => tracing::warn!("renewing the leader lease: {e}"),
                }
            }
        })
    };
    let clusters: Api<Cluster> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    fn owned<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = &config.watch_namespace;
    let labelled = || watcher::Config::default().labels(cnpg_core::naming::LABEL_CLUSTER);
    let ctx = Arc::new(Ctx { platform, metrics });
    let mut stop_on = stop_rx.clone();
    let (lost_why_tx, lost_why_rx) = tokio::sync::oneshot::channel::<String>();
    // Both controllers stop together: when told to, or when the Lease is lost.
    let (halt_tx, halt_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = stop_on.wait_for(|s| *s) => {}
            why = &mut lost_rx => {
                let _ = lost_why_tx.send(why.unwrap_or_default());
            }
        }
        let _ = halt_tx.send(true);
    });
    let halted = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|h| *h).await;
    };
    // A Pooler's cluster makes its client certificate and the primary its role: a new
    // Pooler wakes the Cluster too.
    let pooler_cluster = |p: Pooler| {
        let ns = p.namespace().unwrap_or_default();
        Some(ObjectRef::<Cluster>::new(&p.spec.cluster.name).within(&ns))
    };
    let clusters = Controller::new(clusters, watcher::Config::default());
    // A Secret of the user's that a Cluster reads (a managed role's password, the store's
    // credentials, a certificate) wakes that Cluster when it changes. Only their metadata
    // is watched: the operator holds no copy of Secrets it does not own.
    // The same for the user's ConfigMaps a Cluster reads (custom monitoring queries): an
    // edit reaches the instances at once, not at the next periodic loop.
    fn naming<K: kube::Resource>(
        cache: kube::runtime::reflector::Store<Cluster>,
        names: fn(&Cluster, &str) -> bool,
    ) -> impl Fn(kube::core::PartialObjectMeta<K>) -> Vec<ObjectRef<Cluster>> {
        move |o| {
            let (ns, name) = (o.namespace(), o.name_any());
            cache
                .state()
                .into_iter()
                .filter(|c| c.namespace() == ns && names(c, &name))
                .map(|c| ObjectRef::from_obj(&*c))
                .collect()
        }
    }
    let secret_clusters = naming::<Secret>(clusters.store(), |c, name| {
        super::secrets::referenced(c).contains(name)
    });
    let config_map_clusters = naming::<ConfigMap>(clusters.store(), |c, name| {
        super::secrets::monitoring_config_maps(c)
            .iter()
            .any(|n| n == name)
    });
    fn cluster_ref(c: &Cluster) -> Option<(&str, &str)> {
        let r = c.spec.image_catalog_ref.as_ref()?;
        Some((&r.kind, &r.name))
    }
    let clusters = watching_catalogs(
        clusters,
        owned(&client, ns),
        Api::all(client.clone()),
        cluster_ref,
    )
    .watches(
        owned::<kube::core::PartialObjectMeta<Secret>>(&client, ns),
        watcher::Config::default(),
        secret_clusters,
    )
    .watches(
        owned::<kube::core::PartialObjectMeta<ConfigMap>>(&client, ns),
        watcher::Config::default(),
        config_map_clusters,
    )
    .watches(
        owned::<Pooler>(&client, ns),
        watcher::Config::default(),
        pooler_cluster,
    )
    .owns(owned::<Pod>(&client, ns), labelled())
    .owns(owned::<PersistentVolumeClaim>(&client, ns), labelled())
    .owns(owned::<Service>(&client, ns), labelled())
    .owns(owned::<PodDisruptionBudget>(&client, ns), labelled())
    .owns(owned::<Secret>(&client, ns), labelled())
    .graceful_shutdown_on(halted(halt_rx.clone()))
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!("controller: {e}");
        }
    });
    let backups = Controller::new(owned::<Backup>(&client, ns), watcher::Config::default())
        .graceful_shutdown_on(halted(halt_rx.clone()))
        .run(reconcile_backup, backup_error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("backup controller: {e}");
            }
        });
    let pooled = || watcher::Config::default().labels(super::pooler::LABEL_POOLER);
    // PgBouncer's image from a catalog's componentImages: a new one rolls the Deployment.
    fn pooler_ref(p: &Pooler) -> Option<(&str, &str)> {
        let r = p.spec.pgbouncer.image_catalog_ref.as_ref()?;
        Some((&r.kind, &r.name))
    }
    let poolers = watching_catalogs(
        Controller::new(owned::<Pooler>(&client, ns), watcher::Config::default()),
        owned(&client, ns),
        Api::all(client.clone()),
        pooler_ref,
    )
    .owns(owned::<Deployment>(&client, ns), pooled())
    .owns(owned::<Service>(&client, ns), pooled())
    .owns(owned::<Secret>(&client, ns), pooled())
    .graceful_shutdown_on(halted(halt_rx.clone()))
    .run(reconcile_pooler, pooler_error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!("pooler controller: {e}");
        }
    });
    let schedules = Controller::new(
        owned::<ScheduledBackup>(&client, ns),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(halted(halt_rx))
    .run(reconcile_schedule, schedule_error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!("scheduled backup controller: {e}");
        }
    });
    futures::join!(clusters, backups, schedules, poolers);
    renewer.abort();
    ready.store(false, Ordering::Relaxed);
    if let Some(h) = health {
        h.abort();
    }
    if let Ok(why) = lost_why_rx.await {
        return Err(ControllerError::LostLease(why));
    }
    if let Err(e) = lock.release().await {
        tracing::warn!("releasing the leader lease: {e}");
    }
    tracing::info!("stopped");
    Ok(())
}
