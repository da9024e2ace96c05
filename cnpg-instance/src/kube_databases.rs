//! The `Database` resources of an instance manager's cluster on Kubernetes: watched (the
//! primary reconciles them, [`crate::databases`]), their status written back (server-side
//! apply on the status subresource, field manager `cnpg-instance`), and their finalizer.
//!
//! A `Database` whose reclaim policy is `delete` carries the finalizer
//! [`FINALIZER`] while it exists, so deleting it waits for the primary to drop the
//! database; the primary removes the finalizer once it has. With `retain` (the default) no
//! finalizer is kept and the object goes at once, as nothing is to be done in PostgreSQL.

use cnpg_core::api::database::DatabaseReclaimPolicy;
use cnpg_core::api::{Database, DatabaseStatus};
use cnpg_core::databases::Managed;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upstream's finalizer name for a database to drop.
pub const FINALIZER: &str = "cnpg.io/deleteDatabase";

/// The namespace's `Database` objects, kept current by a watch. Clones share them.
#[derive(Clone)]
pub struct KubeDatabases {
    api: Api<Database>,
    cluster: String,
    /// The field manager the status is applied with (the instance manager's).
    field_manager: &'static str,
    objects: Arc<Mutex<BTreeMap<String, Database>>>,
}

impl KubeDatabases {
    /// Starts watching the `Database` objects of `namespace` (so it must be called inside a
    /// Tokio runtime); those of Cluster `cluster` are this instance's. Their status is
    /// applied as `field_manager`.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        cluster: &str,
        field_manager: &'static str,
    ) -> Self {
        let me = KubeDatabases {
            api: Api::namespaced(client, namespace),
            cluster: cluster.to_owned(),
            field_manager,
            objects: Default::default(),
        };
        let (api, objects) = (me.api.clone(), me.objects.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            let mut listing = BTreeMap::new();
            while let Some(ev) = events.next().await {
                let name = |d: &Database| d.metadata.name.clone().unwrap_or_default();
                match ev {
                    Ok(watcher::Event::Init) => listing.clear(),
                    Ok(watcher::Event::InitApply(d)) => {
                        listing.insert(name(&d), d);
                    }
                    Ok(watcher::Event::InitDone) => {
                        *objects.lock().expect("databases") = std::mem::take(&mut listing);
                    }
                    Ok(watcher::Event::Apply(d)) => {
                        objects.lock().expect("databases").insert(name(&d), d);
                    }
                    Ok(watcher::Event::Delete(d)) => {
                        objects.lock().expect("databases").remove(&name(&d));
                    }
                    Err(e) => {
                        tracing::warn!("watching Databases: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        me
    }

    /// This cluster's `Database`s as the instance manager reconciles them, by name.
    pub fn managed(&self) -> Vec<Managed> {
        self.objects
            .lock()
            .expect("databases")
            .iter()
            .filter(|(_, d)| d.spec.cluster.name == self.cluster)
            .map(|(name, d)| Managed {
                object: name.clone(),
                generation: d.metadata.generation,
                deleting: d.metadata.deletion_timestamp.is_some(),
                spec: d.spec.clone(),
            })
            .collect()
    }

    /// After a pass of the primary: each status written where it changed, the finalizer
    /// added where the policy is `delete`, and removed from each object whose database
    /// the pass dropped (or whose policy is `retain`). Every object is tried; the first
    /// error is returned.
    pub async fn publish(&self, pass: &[(Managed, DatabaseStatus)]) -> Result<(), String> {
        let mut first_error = None;
        for (item, status) in pass {
            if let Err(e) = self.publish_one(item, status).await {
                tracing::warn!(object = %item.object, "Database: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn publish_one(&self, item: &Managed, status: &DatabaseStatus) -> Result<(), String> {
        let Some(current) = self
            .objects
            .lock()
            .expect("databases")
            .get(&item.object)
            .cloned()
        else {
            return Ok(());
        };
        let finalizers = current.metadata.finalizers.clone().unwrap_or_default();
        let held = finalizers.iter().any(|f| f == FINALIZER);
        let want =
            !item.deleting && item.spec.reclaim_policy == Some(DatabaseReclaimPolicy::Delete);
        let released = item.deleting && status.applied == Some(true);
        if held != want && (!item.deleting || released) {
            let mut next: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
            let added = FINALIZER.to_owned();
            if want {
                next.push(&added);
            }
            // With the version read: a conflict (someone changed the list meanwhile) is
            // tried again after the next pass, on the newer object.
            let body = json!({"metadata": {
                "resourceVersion": current.metadata.resource_version,
                "finalizers": next,
            }});
            self.api
                .patch(&item.object, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(|e| format!("finalizer {FINALIZER}: {e}"))?;
            if released {
                tracing::info!(object = %item.object, "Database deleted: its database {} dropped", item.spec.name);
            }
        }
        if item.deleting || current.status.as_ref() == Some(status) {
            return Ok(());
        }
        let body = json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Database",
            "metadata": {"name": item.object},
            "status": status,
        });
        let written = self
            .api
            .patch_status(
                &item.object,
                &PatchParams::apply(self.field_manager).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| format!("writing the status: {e}"))?;
        self.objects
            .lock()
            .expect("databases")
            .insert(item.object.clone(), written);
        Ok(())
    }
}
