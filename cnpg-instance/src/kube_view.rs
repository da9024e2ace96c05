//! The [`ClusterView`] of an instance manager running in a Kubernetes pod: it watches its
//! own Cluster, publishes `status.currentPrimary` after a promotion (server-side apply on
//! the status subresource, field manager `cnpg-instance`), and holds the Lease named after
//! the cluster while it is (or is becoming) the primary, as upstream 1.30 does: a stale
//! primary can then never be promoted twice, because promoting needs the Lease and the
//! Lease is held by the live primary until it lets go or stops renewing it.

use crate::lease::{Attempt, LeaseLock};
use crate::view::{ClusterView, Endpoint, ViewData, ViewError};
use async_trait::async_trait;
use cnpg_core::api::Cluster;
use cnpg_core::fencing::Fencing;
use cnpg_core::naming;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The field manager the instance managers write the status with.
pub const FIELD_MANAGER: &str = "cnpg-instance";

/// An instance manager's view of its Cluster on Kubernetes. Clones share the cache.
#[derive(Clone)]
pub struct KubeView {
    clusters: Api<Cluster>,
    cluster: String,
    instance: String,
    cache: Arc<Mutex<Option<Cluster>>>,
    lease: Arc<LeaseLock>,
    lease_api: Api<Lease>,
    lease_duration: Duration,
    renewing: Arc<Mutex<bool>>,
    port: u16,
    databases: crate::kube_databases::KubeDatabases,
}

/// What the Cluster says, as an instance needs it.
pub fn view_of(c: &Cluster, port: u16) -> ViewData {
    let name = c.metadata.name.clone().unwrap_or_default();
    let status = c.status.clone().unwrap_or_default();
    let ha = status.ha_state.clone().unwrap_or_default();
    let annotations = c.metadata.annotations.clone().unwrap_or_default();
    let pg = c.spec.postgresql.as_ref();
    let tablespaces = c.tablespaces(cnpg_core::tablespaces::kubernetes_location);
    let fenced = match Fencing::parse(
        annotations
            .get(naming::ANNOTATION_FENCED_INSTANCES)
            .map(String::as_str),
    ) {
        Ok(Fencing::All) => vec!["*".to_owned()],
        Ok(Fencing::Instances(s)) => s.into_iter().collect(),
        Ok(Fencing::None) | Err(_) => vec![],
    };
    ViewData {
        current_primary: status.current_primary.clone(),
        target_primary: status.target_primary.clone(),
        fenced,
        primary_endpoint: Some(Endpoint {
            host: naming::service_rw(&name),
            port,
        }),
        synchronous_standby_names: ha.synchronous_standby_names.clone().unwrap_or_default(),
        instances: status.instance_names.clone(),
        endpoints: Default::default(),
        parameters: c.instance_parameters(&tablespaces),
        pg_hba: pg.map(|p| p.pg_hba.clone()).unwrap_or_default(),
        pg_ident: pg.map(|p| p.pg_ident.clone()).unwrap_or_default(),
        superuser_access: Some(c.spec.enable_superuser_access.unwrap_or(false)),
        restart: ha.restart.clone(),
        reload: annotations.get("cnpg.io/reloadedAt").cloned(),
        backups: cnpg_core::backup::Summary {
            first_recoverability_point: status.first_recoverability_point.clone(),
            last_successful_backup: status.last_successful_backup.clone(),
            last_failed_backup: status.last_failed_backup.clone(),
        },
        pooler_integration: status
            .pooler_integrations
            .as_ref()
            .is_some_and(|p| p.pg_bouncer_integration.is_some()),
        managed_roles: c
            .spec
            .managed
            .as_ref()
            .map(|m| m.roles.clone())
            .unwrap_or_default(),
        role_passwords_applied: status
            .managed_roles_status
            .map(|m| m.password_status)
            .unwrap_or_default(),
        // From the Database objects, not the Cluster: [`KubeView::read`] fills them in.
        databases: Vec::new(),
        tablespaces,
    }
}

impl KubeView {
    /// A view of Cluster `cluster` in `namespace` for `instance`; starts watching it (so
    /// it must be called inside a Tokio runtime). PostgreSQL listens on `port` in every pod.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        cluster: &str,
        instance: &str,
        port: u16,
    ) -> Self {
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
        let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let view = KubeView {
            clusters: clusters.clone(),
            cluster: cluster.to_owned(),
            instance: instance.to_owned(),
            cache: Arc::new(Mutex::new(None)),
            lease: Arc::new(LeaseLock::new(
                leases.clone(),
                cluster,
                instance,
                Duration::from_secs(15),
            )),
            lease_api: leases,
            lease_duration: Duration::from_secs(15),
            renewing: Arc::new(Mutex::new(false)),
            port,
            databases: crate::kube_databases::KubeDatabases::start(
                client,
                namespace,
                cluster,
                FIELD_MANAGER,
            ),
        };
        let cache = view.cache.clone();
        let name = cluster.to_owned();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        tokio::spawn(async move {
            let mut events = watcher(clusters, config).boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))
                        if c.metadata.name.as_deref() == Some(name.as_str()) =>
                    {
                        *cache.lock().expect("view cache") = Some(c);
                    }
                    Ok(watcher::Event::Delete(c))
                        if c.metadata.name.as_deref() == Some(name.as_str()) =>
                    {
                        *cache.lock().expect("view cache") = None;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("watching cluster {name}: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        view
    }

    /// Uses a primary lease of this duration instead of upstream's 15 s
    /// (`spec.primaryLease.leaseDurationSeconds`).
    pub fn with_lease_duration(mut self, duration: Duration) -> Self {
        self.lease = Arc::new(LeaseLock::new(
            self.lease_api.clone(),
            &self.cluster,
            &self.instance,
            duration,
        ));
        self.lease_duration = duration;
        self
    }

    async fn cluster(&self) -> Result<Cluster, ViewError> {
        if let Some(c) = self.cache.lock().expect("view cache").clone() {
            return Ok(c);
        }
        let c = tokio::time::timeout(
            Duration::from_millis(2000),
            self.clusters.get(&self.cluster),
        )
        .await
        .map_err(|_| ViewError(format!("reading cluster {}: timed out", self.cluster)))?
        .map_err(|e| ViewError(format!("reading cluster {}: {e}", self.cluster)))?;
        *self.cache.lock().expect("view cache") = Some(c.clone());
        Ok(c)
    }

    /// Keeps renewing the lease while this instance is (or is becoming) the primary; lets
    /// it go when it no longer is.
    fn keep_renewing(&self) {
        {
            let mut r = self.renewing.lock().expect("renewing flag");
            if *r {
                return;
            }
            *r = true;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep((me.lease_duration / 3).max(Duration::from_millis(100))).await;
                let still = me.cluster().await.ok().is_some_and(|c| {
                    let s = c.status.unwrap_or_default();
                    s.target_primary.as_deref() == Some(me.instance.as_str())
                        || (s.current_primary.as_deref() == Some(me.instance.as_str())
                            && s.target_primary.is_none())
                });
                if !still {
                    if let Err(e) = me.lease.release().await {
                        tracing::warn!("releasing the primary lease: {e}");
                    }
                    *me.renewing.lock().expect("renewing flag") = false;
                    return;
                }
                match me.lease.try_acquire().await {
                    Ok(Attempt::Held) => {}
                    Ok(Attempt::Busy(why)) => {
                        // Someone took it: we are not the primary any more. Stop renewing;
                        // the operator's target makes us stop PostgreSQL.
                        tracing::error!("lost the primary lease: {why}");
                        *me.renewing.lock().expect("renewing flag") = false;
                        return;
                    }
                    Err(e) => tracing::warn!("renewing the primary lease: {e}"),
                }
            }
        });
    }
}

#[async_trait]
impl ClusterView for KubeView {
    async fn read(&self) -> Result<ViewData, ViewError> {
        let mut view = view_of(&self.cluster().await?, self.port);
        view.databases = self.databases.managed();
        // The primary keeps its Lease, also after this manager restarted (nothing promotes
        // it again, so nothing else would take the Lease back).
        let me = Some(self.instance.as_str());
        if view.current_primary.as_deref() == me && view.target_primary.as_deref() == me {
            self.keep_renewing();
        }
        Ok(view)
    }

    async fn acquire_primary_lease(&self, instance: &str) -> Result<bool, ViewError> {
        debug_assert_eq!(instance, self.instance);
        match self.lease.try_acquire().await {
            Ok(Attempt::Held) => {
                self.keep_renewing();
                Ok(true)
            }
            Ok(Attempt::Busy(why)) => {
                tracing::info!(instance, "waiting to promote: {why}");
                Ok(false)
            }
            Err(e) => Err(ViewError(format!("primary lease: {e}"))),
        }
    }

    async fn release_primary_lease(&self, instance: &str) -> Result<(), ViewError> {
        debug_assert_eq!(instance, self.instance);
        self.lease
            .release()
            .await
            .map_err(|e| ViewError(format!("releasing the primary lease: {e}")))
    }

    async fn publish_databases(
        &self,
        pass: &[(
            cnpg_core::databases::Managed,
            cnpg_core::api::DatabaseStatus,
        )],
    ) -> Result<(), ViewError> {
        self.databases.publish(pass).await.map_err(ViewError)
    }

    async fn publish_current_primary(&self, instance: &str) -> Result<(), ViewError> {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let body = json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": self.cluster},
            "status": {"currentPrimary": instance, "currentPrimaryTimestamp": now},
        });
        let c = self
            .clusters
            .patch_status(
                &self.cluster,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| ViewError(format!("publishing currentPrimary {instance}: {e}")))?;
        *self.cache.lock().expect("view cache") = Some(c);
        Ok(())
    }
}

/// The field manager a recovering instance publishes its progress with: its own, so that
/// the instance manager's later applies (which leave the field out) do not remove it.
pub const RECOVERY_FIELD_MANAGER: &str = "cnpg-instance-recovery";

/// Publishes a recovery's progress file (`cnpg-instance recover`, run in the first pod's
/// bootstrap step) to the Cluster's `status.recoveryProgress`, every time it changes,
/// until dropped; [`RecoveryPublisher::finish`] publishes the last state. A failed write
/// is logged and tried again at the next change: the status never holds up a recovery.
pub struct RecoveryPublisher {
    task: tokio::task::JoinHandle<()>,
    clusters: Api<Cluster>,
    cluster: String,
    file: std::path::PathBuf,
}

impl RecoveryPublisher {
    /// Starts publishing `file` to Cluster `cluster`, checking it every second.
    pub fn start(clusters: Api<Cluster>, cluster: &str, file: std::path::PathBuf) -> Self {
        let (c, name, f) = (clusters.clone(), cluster.to_owned(), file.clone());
        let task = tokio::spawn(async move {
            let mut published = None;
            loop {
                publish_progress(&c, &name, &f, &mut published).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        RecoveryPublisher {
            task,
            clusters,
            cluster: cluster.to_owned(),
            file,
        }
    }

    /// Stops following the file and publishes what it says now (`done`, or `failed` and
    /// why).
    pub async fn finish(self) {
        self.task.abort();
        publish_progress(&self.clusters, &self.cluster, &self.file, &mut None).await;
    }
}

impl Drop for RecoveryPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One look at the progress file: applied to the status when it changed since
/// `published`.
async fn publish_progress(
    clusters: &Api<Cluster>,
    cluster: &str,
    file: &std::path::Path,
    published: &mut Option<cnpg_core::recovery::Progress>,
) {
    let Some(progress) = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<cnpg_core::recovery::Progress>(&t).ok())
    else {
        return;
    };
    if published.as_ref() == Some(&progress) {
        return;
    }
    let body = json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": cluster},
        "status": {"recoveryProgress": progress},
    });
    match clusters
        .patch_status(
            cluster,
            &PatchParams::apply(RECOVERY_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => *published = Some(progress),
        Err(e) => tracing::warn!(cluster, "publishing the recovery's progress: {e}"),
    }
}
