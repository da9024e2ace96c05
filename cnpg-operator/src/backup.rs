//! The Backup controller's half that does not depend on the platform: what a `Backup`'s
//! status says when it starts on an instance, when its instance manager reports on it, and
//! while it may not start. Both platforms' controllers (the local operator's loop and the
//! kube-rs controller) choose the instance with [`cnpg_core::backup::choose`], ask its
//! manager (`POST /pg/backup`) and write what these functions make of the answer.

use cnpg_core::api::backup::{Backup, BackupStatus, InstanceId, ScheduledBackup, phase};
use cnpg_core::api::barman::BarmanObjectStoreConfiguration;
use cnpg_core::backup::Choice;
use cnpg_instance::backup::BackupInfo;

/// Now, as Kubernetes writes times (RFC 3339, whole seconds, UTC): such times compare as
/// text, which [`cnpg_core::backup::Summary::of`] relies on.
pub fn rfc3339_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Whether the Backup has ended (completed or failed): nothing more is done for it.
pub fn ended(st: &BackupStatus) -> bool {
    matches!(st.phase.as_deref(), Some(phase::COMPLETED | phase::FAILED))
}

/// The instance a started Backup runs on, once chosen.
pub fn instance(st: &BackupStatus) -> Option<String> {
    st.instance_id.as_ref().and_then(|i| i.pod_name.clone())
}

/// Whether the Backup wants the primary (`target: primary`, on the Backup or else the
/// cluster's `spec.backup.target`); otherwise a standby is preferred.
pub fn prefer_standby(
    backup: &Backup,
    cluster_target: Option<cnpg_core::api::common::BackupTarget>,
) -> bool {
    backup.spec.target.or(cluster_target).unwrap_or_default()
        == cnpg_core::api::common::BackupTarget::PreferStandby
}

/// The Backup fails before it starts, with `why` (no object store, an unsupported method,
/// no such cluster).
pub fn fail(st: &mut BackupStatus, why: String) {
    st.phase = Some(phase::FAILED.into());
    st.error = Some(why);
    st.stopped_at = Some(rfc3339_now());
}

/// Why a Backup for `store` with `method` cannot be taken here, if it cannot.
pub fn refusal(backup: &Backup, store: Option<&BarmanObjectStoreConfiguration>) -> Option<String> {
    use cnpg_core::api::common::BackupMethod;
    if backup.spec.method != BackupMethod::BarmanObjectStore {
        let method = serde_json::to_value(backup.spec.method).unwrap_or_default();
        return Some(format!(
            "method {} is not supported yet: use barmanObjectStore",
            method.as_str().unwrap_or("?")
        ));
    }
    store
        .is_none()
        .then(|| "the cluster has no object store (spec.backup.barmanObjectStore)".to_owned())
}

/// The Backup waits, as upstream's does, because WAL archiving fails (`why`: the
/// `ContinuousArchiving` condition's message). True when the status changed.
pub fn wait_for_archiving(st: &mut BackupStatus, why: &str) -> bool {
    let why = Some(why.to_owned());
    let changed = st.error != why || st.phase.as_deref() != Some(phase::WAL_ARCHIVING_FAILING);
    st.phase = Some(phase::WAL_ARCHIVING_FAILING.into());
    st.error = why;
    changed
}

/// The Backup waits for an instance that can take it (`why`). True when it changed.
pub fn wait_for_instance(st: &mut BackupStatus, why: &str) -> bool {
    let pending = Some(format!("waiting for an instance to take it: {why}"));
    let changed = st.error != pending;
    st.phase = Some(phase::PENDING.into());
    st.error = pending;
    changed
}

/// The Backup starts on the chosen instance, to `store` under `server_name`.
pub fn start(
    st: &mut BackupStatus,
    backup: &Backup,
    store: &BarmanObjectStoreConfiguration,
    cluster: &str,
    choice: &Choice,
) {
    st.phase = Some(phase::STARTED.into());
    st.error = None;
    st.instance_id = Some(InstanceId {
        pod_name: Some(choice.instance.clone()),
        ..Default::default()
    });
    st.method = Some(backup.spec.method);
    // Where it went and how to reach it, as upstream records it: what a recovery from
    // this Backup (`bootstrap.recovery.backup`) reads.
    st.destination_path = Some(store.destination_path.clone());
    st.endpoint_url = store.endpoint_url.clone();
    st.endpoint_ca = store.endpoint_ca.clone();
    st.s3_credentials = store.s3_credentials.clone();
    st.azure_credentials = store.azure_credentials.clone();
    st.google_credentials = store.google_credentials.clone();
    st.server_name = Some(
        store
            .server_name
            .clone()
            .unwrap_or_else(|| cluster.to_owned()),
    );
    st.started_at = Some(rfc3339_now());
}

/// What `POST /pg/backup` carries for this Backup: its name, and `immediateCheckpoint`
/// when its `onlineConfiguration` says.
pub fn request(backup: &Backup) -> String {
    let mut body = serde_json::json!({
        "name": backup.metadata.name.clone().unwrap_or_default(),
    });
    if let Some(i) = backup
        .spec
        .online_configuration
        .as_ref()
        .and_then(|o| o.immediate_checkpoint)
    {
        body["immediateCheckpoint"] = serde_json::json!(i);
    }
    body.to_string()
}

/// Follows the instance manager's report of the backup (`backup.info`'s fields). Returns
/// the event to record when the backup has just ended.
pub fn follow(st: &mut BackupStatus, info: &BackupInfo, name: &str) -> Option<String> {
    st.phase = Some(cnpg_core::backup::phase(&info.status).into());
    if !info.backup_id.is_empty() {
        st.backup_id = Some(info.backup_id.clone());
    }
    st.backup_name = info.backup_name.clone();
    st.begin_lsn = info.begin_lsn.map(|l| l.to_string());
    st.end_lsn = info.end_lsn.map(|l| l.to_string());
    st.begin_wal = info.begin_wal.clone();
    st.end_wal = info.end_wal.clone();
    st.error = info.error.clone();
    st.backup_label_file = info.backup_label.clone();
    st.online = Some(true);
    st.major_version = info.version.map(|v| (v / 10000) as i32);
    if !matches!(info.status.as_str(), "DONE" | "FAILED") {
        return None;
    }
    if st.stopped_at.is_none() {
        st.stopped_at = Some(rfc3339_now());
    }
    let on = instance(st).unwrap_or_default();
    Some(match info.status.as_str() {
        "DONE" => format!("Backup {name} completed on {on}: {}", info.backup_id),
        _ => format!(
            "Backup {name} failed on {on}: {}",
            info.error.clone().unwrap_or_default()
        ),
    })
}

/// What the instance manager's answer to `POST /pg/backup` means: its report, `Ok(None)`
/// while another backup runs there (ask again), or the failure to record.
pub fn answer(
    instance: &str,
    answer: Result<(u16, String), String>,
) -> Result<Option<BackupInfo>, Answer> {
    match answer {
        Ok((202, body)) => serde_json::from_str::<BackupInfo>(&body)
            .map(Some)
            .map_err(|e| Answer::Retry(format!("{instance}: unreadable report: {e}"))),
        Ok((409, why)) if why.contains("is running") => Ok(None),
        Ok((code, why)) => Err(Answer::Failed(format!(
            "{instance} refused it ({code}): {}",
            why.trim()
        ))),
        Err(e) => Err(Answer::Retry(format!("{instance}: {e}"))),
    }
}

/// How long a started Backup may go without its instance manager ever answering before
/// it fails (the instance is gone, say, after a failover removed it).
pub const NEVER_ANSWERED: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a Backup started at `started_at` whose instance never reported on it (no
/// backup ID yet) has waited longer than [`NEVER_ANSWERED`] at `now` (RFC 3339).
pub fn never_answered(st: &BackupStatus, now: jiff::Timestamp) -> bool {
    st.backup_id.is_none()
        && st
            .started_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| now.duration_since(t).as_secs() >= NEVER_ANSWERED.as_secs() as i64)
}

/// An answer that is not a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Could not ask (unreachable, timed out): ask again.
    Retry(String),
    /// The instance refused: the Backup fails with this.
    Failed(String),
}

/// What schedule `sb` wants at `now` (see [`cnpg_core::schedule::decide`]); its
/// creation time and last scheduled time are read from its metadata and status.
pub fn schedule_decision(
    sb: &ScheduledBackup,
    now: cnpg_core::time::Timestamp,
) -> Result<cnpg_core::schedule::Decision, String> {
    let ms = |t: &str| {
        t.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| cnpg_core::time::Timestamp(t.as_millisecond().max(0) as u64))
    };
    let created = sb
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| cnpg_core::time::Timestamp(t.0.as_millisecond().max(0) as u64))
        .unwrap_or(now);
    let name = sb.metadata.name.clone().unwrap_or_default();
    let last = sb
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_deref())
        .and_then(ms);
    cnpg_core::schedule::decide(
        &cnpg_core::schedule::Schedule {
            name: &name,
            cron: &sb.spec.schedule,
            immediate: sb.spec.immediate.unwrap_or(false),
            suspend: sb.spec.suspend.unwrap_or(false),
            created,
            last,
        },
        now,
    )
}

/// The time as the status writes it.
pub fn rfc3339(t: cnpg_core::time::Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.0 as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The Backup schedule `sb` creates, named `name`: its cluster, target, method and online
/// settings, labelled with the cluster and the schedule (upstream's
/// `cnpg.io/scheduled-backup`). Owner references are the host's (Kubernetes only).
pub fn scheduled(sb: &ScheduledBackup, name: &str) -> Backup {
    let mut b = Backup::new(
        name,
        cnpg_core::api::backup::BackupSpec {
            cluster: sb.spec.cluster.clone(),
            target: sb.spec.target,
            method: sb.spec.method,
            plugin_configuration: sb.spec.plugin_configuration.clone(),
            online: sb.spec.online,
            online_configuration: sb.spec.online_configuration.clone(),
        },
    );
    b.metadata.namespace = sb.metadata.namespace.clone();
    b.metadata.labels = Some(
        [
            (
                cnpg_core::naming::LABEL_CLUSTER.to_owned(),
                sb.spec.cluster.name.clone(),
            ),
            (
                "cnpg.io/scheduled-backup".to_owned(),
                sb.metadata.name.clone().unwrap_or_default(),
            ),
        ]
        .into(),
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> Backup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Backup",
            "metadata": {"name": "nightly"},
            "spec": {"cluster": {"name": "pg"}, "onlineConfiguration": {"immediateCheckpoint": true}}
        }))
        .expect("a Backup")
    }

    #[test]
    fn a_backup_starts_is_followed_and_ends_with_an_event() {
        let b = backup();
        let store: BarmanObjectStoreConfiguration =
            serde_json::from_value(serde_json::json!({"destinationPath": "s3://bucket/here"}))
                .expect("store");
        assert_eq!(refusal(&b, Some(&store)), None);
        assert!(
            refusal(&b, None)
                .expect("refused")
                .contains("barmanObjectStore")
        );
        let mut st = BackupStatus::default();
        assert!(wait_for_archiving(&mut st, "archiving 0001 failed"));
        assert!(!wait_for_archiving(&mut st, "archiving 0001 failed"));
        assert_eq!(st.phase.as_deref(), Some(phase::WAL_ARCHIVING_FAILING));
        let choice = Choice {
            instance: "pg-2".into(),
            reason: "first standby".into(),
        };
        start(&mut st, &b, &store, "pg", &choice);
        assert_eq!(st.server_name.as_deref(), Some("pg"));
        assert_eq!(st.error, None);
        assert_eq!(instance(&st).as_deref(), Some("pg-2"));
        let body: serde_json::Value = serde_json::from_str(&request(&b)).expect("json");
        assert_eq!(body["name"], "nightly");
        assert_eq!(body["immediateCheckpoint"], true);
        let info = BackupInfo {
            backup_id: "20261201T100000".into(),
            status: "STARTED".into(),
            ..Default::default()
        };
        assert_eq!(follow(&mut st, &info, "nightly"), None);
        assert_eq!(st.phase.as_deref(), Some("running"));
        let done = BackupInfo {
            status: "DONE".into(),
            ..info
        };
        let event = follow(&mut st, &done, "nightly").expect("ended");
        assert!(event.contains("completed on pg-2"), "{event}");
        assert!(ended(&st) && st.stopped_at.is_some());
        assert_eq!(
            answer("pg-2", Ok((409, "another backup is running".into()))),
            Ok(None)
        );
        assert!(matches!(
            answer("pg-2", Ok((400, "no archive".into()))),
            Err(Answer::Failed(_))
        ));
        let mut waiting = BackupStatus {
            started_at: Some("2026-12-01T10:00:00Z".into()),
            ..Default::default()
        };
        let at = |t: &str| t.parse::<jiff::Timestamp>().expect("time");
        assert!(!never_answered(&waiting, at("2026-12-01T10:04:00Z")));
        assert!(never_answered(&waiting, at("2026-12-01T10:05:00Z")));
        waiting.backup_id = Some("20261201T100000".into());
        assert!(!never_answered(&waiting, at("2026-12-01T11:00:00Z")));
    }
}
