//! The Backup controller on Kubernetes: one reconcile per `Backup`, as upstream's.
//!
//! A Backup that has not ended is refused (no such cluster, no object store, a method we do
//! not take yet), waits (`walArchivingFailing` while the Cluster's `ContinuousArchiving`
//! condition is false; `pending` while no instance can take it), or starts on the instance
//! [`cnpg_core::backup::choose`] picks and is followed through that instance manager
//! (`POST /pg/backup` over HTTPS with the operator's client certificate; asking again for
//! the same name returns the backup already started, so a restarted operator carries on).
//! When it ends, the Cluster's status gets upstream's backup fields and the
//! `LastBackupSucceeded` condition, from every ended Backup of that cluster — written
//! before the Backup's own end, so a conflict on the Cluster only means asking again.
//!
//! ScheduledBackups ([`reconcile_schedule`]) create those Backups when
//! [`cnpg_core::schedule::decide`] says one is due, and sleep until the next occurrence.

use super::platform::{KubePlatform, api_err};
use crate::backup as b;
use crate::platform::PlatformError;
use cnpg_core::api::Cluster;
use cnpg_core::api::backup::{Backup, BackupOwnerReference, BackupStatus, ScheduledBackup};
use cnpg_core::reconcile::EventType;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::time::Duration;

/// How often a running backup is followed.
const FOLLOW: Duration = Duration::from_secs(2);
/// How often a waiting backup looks again.
const WAIT: Duration = Duration::from_secs(5);

/// One step of one Backup.
pub async fn reconcile_backup(
    backup: &Backup,
    platform: &KubePlatform,
) -> Result<Action, PlatformError> {
    let before = backup.status.clone().unwrap_or_default();
    if b::ended(&before) {
        return Ok(Action::await_change());
    }
    let ns = backup.namespace().unwrap_or_else(|| "default".into());
    let name = backup.name_any();
    let client = platform.client().clone();
    let cluster_name = backup.spec.cluster.name.clone();
    let cluster = Api::<Cluster>::namespaced(client.clone(), &ns)
        .get_opt(&cluster_name)
        .await
        .map_err(api_err(format!("reading cluster {cluster_name}")))?;
    let mut st = before.clone();
    let event = |type_, reason: &'static str, message: String| {
        let object = backup.object_ref(&());
        async move { platform.event_on(&object, type_, reason, &message).await }
    };
    let Some(cluster) = cluster else {
        let why = format!("cluster {cluster_name} does not exist in namespace {ns}");
        event(EventType::Warning, "BackupFailed", why.clone()).await;
        b::fail(&mut st, why);
        write(&client, backup, &st).await?;
        return Ok(Action::await_change());
    };
    let store = cluster
        .spec
        .backup
        .as_ref()
        .and_then(|s| s.barman_object_store.clone());
    if let Some(why) = b::refusal(backup, store.as_ref()) {
        event(EventType::Warning, "BackupFailed", why.clone()).await;
        b::fail(&mut st, why);
        write(&client, backup, &st).await?;
        return Ok(Action::await_change());
    }
    let Some(store) = store else {
        return Ok(Action::await_change());
    };
    let instance = match b::instance(&st) {
        Some(i) => i,
        None => {
            let status = cluster.status.clone().unwrap_or_default();
            let failing = status
                .conditions
                .iter()
                .find(|c| c.type_ == crate::platform::CONTINUOUS_ARCHIVING && c.status == "False");
            if let Some(c) = failing {
                if b::wait_for_archiving(&mut st, &c.message) {
                    event(
                        EventType::Warning,
                        "WalArchivingFailing",
                        format!(
                            "Backup {name} waits: WAL archiving is failing ({})",
                            c.message
                        ),
                    )
                    .await;
                    write(&client, backup, &st).await?;
                }
                return Ok(Action::requeue(WAIT));
            }
            let observed = crate::platform::Platform::observe(platform, &cluster).await?;
            let statuses: Vec<_> = observed.into_iter().map(|i| i.status).collect();
            let target = cluster.spec.backup.as_ref().map(|s| s.target);
            match cnpg_core::backup::choose(
                &cluster_name,
                b::prefer_standby(backup, target),
                status.current_primary.as_deref(),
                &statuses,
            ) {
                Ok(choice) => {
                    event(
                        EventType::Normal,
                        "Starting",
                        format!(
                            "Backup {name} starting on {}: {}",
                            choice.instance, choice.reason
                        ),
                    )
                    .await;
                    b::start(&mut st, backup, &store, &cluster_name, &choice);
                    // Recorded before asking: a restarted operator follows the same
                    // instance rather than starting a second backup elsewhere.
                    write(&client, backup, &st).await?;
                    choice.instance
                }
                Err(why) => {
                    if b::wait_for_instance(&mut st, &why) {
                        write(&client, backup, &st).await?;
                    }
                    return Ok(Action::requeue(WAIT));
                }
            }
        }
    };
    let answer = platform
        .start_backup(&cluster, &instance, b::request(backup))
        .await;
    match b::answer(&instance, answer) {
        Ok(Some(info)) => {
            if let Some(message) = b::follow(&mut st, &info, &name) {
                let failed = info.status != "DONE";
                record_on_cluster(&client, &cluster, &name, &st).await?;
                event(
                    if failed {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    if failed { "BackupFailed" } else { "Completed" },
                    message,
                )
                .await;
            }
        }
        Ok(None) => {}
        Err(b::Answer::Retry(why)) if b::never_answered(&st, jiff::Timestamp::now()) => {
            let why = format!(
                "{instance} never answered in {} s: {why}",
                b::NEVER_ANSWERED.as_secs()
            );
            b::fail(&mut st, why.clone());
            record_on_cluster(&client, &cluster, &name, &st).await?;
            event(EventType::Warning, "BackupFailed", why).await;
        }
        Err(b::Answer::Retry(why)) => {
            tracing::info!(backup = %name, "asking {instance} again: {why}");
        }
        Err(b::Answer::Failed(why)) => {
            b::fail(&mut st, why.clone());
            record_on_cluster(&client, &cluster, &name, &st).await?;
            event(EventType::Warning, "BackupFailed", why).await;
        }
    }
    if st != before {
        write(&client, backup, &st).await?;
    }
    Ok(if b::ended(&st) {
        Action::await_change()
    } else {
        Action::requeue(FOLLOW)
    })
}

/// Writes the Backup's status subresource.
async fn write(
    client: &kube::Client,
    backup: &Backup,
    st: &BackupStatus,
) -> Result<(), PlatformError> {
    let ns = backup.namespace().unwrap_or_else(|| "default".into());
    let name = backup.name_any();
    Api::<Backup>::namespaced(client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": st })),
        )
        .await
        .map(|_| ())
        .map_err(api_err(format!("writing the status of backup {name}")))
}

/// The Cluster's backup fields and `LastBackupSucceeded`, from every ended Backup of the
/// cluster with `this` (named `name`) as it ends now. Onto the Cluster as read (its
/// resourceVersion): a conflict is decided again.
async fn record_on_cluster(
    client: &kube::Client,
    cluster: &Cluster,
    name: &str,
    this: &BackupStatus,
) -> Result<(), PlatformError> {
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let cluster_name = cluster.name_any();
    let all = Api::<Backup>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(api_err(format!("listing the backups of {cluster_name}")))?;
    let mut ended: Vec<(String, String)> = all
        .items
        .iter()
        .filter(|o| o.spec.cluster.name == cluster_name && o.name_any() != name)
        .filter_map(|o| o.status.clone())
        .filter(b::ended)
        .map(|s| {
            (
                s.phase.unwrap_or_default(),
                s.stopped_at.unwrap_or_default(),
            )
        })
        .collect();
    ended.push((
        this.phase.clone().unwrap_or_default(),
        this.stopped_at.clone().unwrap_or_default(),
    ));
    let summary =
        cnpg_core::backup::Summary::of(ended.iter().map(|(p, at)| (p.as_str(), at.as_str())));
    let mut conditions = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some(ok) = summary.last_succeeded() {
        let message = if ok {
            format!("Backup {name} completed")
        } else {
            format!(
                "Backup {name} failed: {}",
                this.error.clone().unwrap_or_default()
            )
        };
        crate::platform::set_condition(
            &mut conditions,
            cluster,
            "LastBackupSucceeded",
            ok,
            if ok {
                "LastBackupSucceeded"
            } else {
                "LastBackupFailed"
            },
            message,
            crate::clock::now(),
        );
    }
    let mut body = json!({
        "status": {
            "firstRecoverabilityPoint": summary.first_recoverability_point,
            "lastSuccessfulBackup": summary.last_successful_backup,
            "lastFailedBackup": summary.last_failed_backup,
            "conditions": conditions,
        }
    });
    if let Some(rv) = &cluster.metadata.resource_version {
        body["metadata"] = json!({ "resourceVersion": rv });
    }
    Api::<Cluster>::namespaced(client.clone(), &ns)
        .patch_status(&cluster_name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .map(|_| ())
        .map_err(api_err(format!(
            "recording backup {name} on cluster {cluster_name}"
        )))
}

/// One step of one ScheduledBackup: when due, its Backup is created (owned as
/// `backupOwnerReference` says; one already there of that name is the same occurrence) and
/// the occurrence recorded in its status; then it sleeps until the next occurrence.
pub async fn reconcile_schedule(
    sb: &ScheduledBackup,
    platform: &KubePlatform,
) -> Result<Action, PlatformError> {
    use cnpg_core::schedule::Decision;
    let client = platform.client().clone();
    let ns = sb.namespace().unwrap_or_else(|| "default".into());
    let name = sb.name_any();
    let now = crate::clock::now();
    let before = sb.status.clone().unwrap_or_default();
    let mut st = before.clone();
    let object = sb.object_ref(&());
    let wake = match b::schedule_decision(sb, now) {
        Ok(Decision::Create {
            at,
            name: backup_name,
            reason,
            next,
        }) => {
            let mut backup = b::scheduled(sb, &backup_name);
            backup.metadata.namespace = Some(ns.clone());
            backup.metadata.owner_references = match sb.spec.backup_owner_reference {
                BackupOwnerReference::None => None,
                BackupOwnerReference::SelfRef => sb.controller_owner_ref(&()).map(|o| vec![o]),
                BackupOwnerReference::Cluster => Api::<Cluster>::namespaced(client.clone(), &ns)
                    .get_opt(&sb.spec.cluster.name)
                    .await
                    .map_err(api_err(format!("reading cluster {}", sb.spec.cluster.name)))?
                    .and_then(|c| c.controller_owner_ref(&()))
                    .map(|o| vec![o]),
            };
            match Api::<Backup>::namespaced(client.clone(), &ns)
                .create(&Default::default(), &backup)
                .await
            {
                Ok(_) => {
                    platform
                        .event_on(
                            &object,
                            EventType::Normal,
                            "BackupSchedule",
                            &format!("created Backup {backup_name}: {reason}"),
                        )
                        .await
                }
                // The same occurrence, created before its status was recorded.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(api_err(format!("creating backup {backup_name}"))(e)),
            }
            st.last_schedule_time = Some(b::rfc3339(at));
            st.next_schedule_time = Some(b::rfc3339(next));
            Some(next)
        }
        Ok(Decision::Wait { next }) => {
            st.next_schedule_time = Some(b::rfc3339(next));
            Some(next)
        }
        Ok(Decision::Suspended) => {
            st.next_schedule_time = None;
            None
        }
        Err(why) => {
            platform
                .event_on(&object, EventType::Warning, "InvalidSchedule", &why)
                .await;
            None
        }
    };
    if st != before {
        st.last_check_time = Some(b::rfc3339(now));
        Api::<ScheduledBackup>::namespaced(client, &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": st })),
            )
            .await
            .map_err(api_err(format!(
                "writing the status of scheduledbackup {name}"
            )))?;
    }
    Ok(match wake {
        // Waking a little late is harmless (the occurrence is then due); early, a no-op.
        Some(next) => Action::requeue(next.since(now).max(Duration::from_millis(500))),
        None => Action::await_change(),
    })
}
