//! Base backups: which instance takes one, and what the instance's report of it means for
//! the `Backup`'s phase. Pure, like the rest of the core: the host reads the instances'
//! statuses and the reports, and does the asking.
//!
//! Where, as upstream: `prefer-standby` (the default) takes the first ready standby that
//! streams from the primary, in serial order — a backup reads the whole database and is
//! better kept off the primary — and falls back to the primary; `primary` always takes
//! the primary.

use crate::status::InstanceStatus;

/// Where the chosen backup runs, and why there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The instance.
    pub instance: String,
    /// Why it, for the Backup's events and logs.
    pub reason: String,
}

/// The instance that takes the backup of `cluster` (`prefer_standby` unless the target is
/// `primary`), or why none can now.
pub fn choose(
    cluster: &str,
    prefer_standby: bool,
    primary: Option<&str>,
    statuses: &[InstanceStatus],
) -> Result<Choice, String> {
    let ready = |s: &&InstanceStatus| s.is_reachable() && s.is_pod_ready && !s.is_fenced;
    if prefer_standby {
        let mut standbys: Vec<&InstanceStatus> = statuses
            .iter()
            .filter(ready)
            .filter(|s| !s.is_primary && Some(s.name.as_str()) != primary)
            .filter(|s| s.is_wal_receiver_active)
            .collect();
        standbys.sort_by_key(|s| crate::naming::serial_of(cluster, &s.name).unwrap_or(u32::MAX));
        if let Some(s) = standbys.first() {
            return Ok(Choice {
                instance: s.name.clone(),
                reason: format!(
                    "{} is the first ready standby streaming from the primary (target prefer-standby)",
                    s.name
                ),
            });
        }
    }
    let Some(p) = primary else {
        return Err("the cluster has no primary yet".into());
    };
    match statuses.iter().find(|s| s.name == p) {
        Some(s) if ready(&s) && s.is_primary => Ok(Choice {
            instance: p.to_owned(),
            reason: if prefer_standby {
                format!("no standby is ready and streaming: the primary {p} takes it")
            } else {
                format!("{p} is the primary (target primary)")
            },
        }),
        Some(s) => Err(format!(
            "the primary {p} cannot take it now: {}",
            s.error.as_deref().unwrap_or("not ready")
        )),
        None => Err(format!("the primary {p} reports no status")),
    }
}

/// The `Backup` phase (upstream's names) for what the instance reports (`STARTED`, `DONE`,
/// `FAILED`, as barman's `backup.info`).
pub fn phase(reported: &str) -> &'static str {
    match reported {
        "DONE" => "completed",
        "FAILED" => "failed",
        _ => "running",
    }
}

/// What the cluster's status says of its backups (upstream's deprecated but still shown
/// fields): RFC 3339 times, from the Backups the operator ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The end of the oldest completed backup: nothing earlier can be restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    /// When the newest completed backup ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When the newest failed backup ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_backup: Option<String>,
}

impl Summary {
    /// From the ended backups, each as (its phase, when it stopped). RFC 3339 times in UTC
    /// compare as text.
    pub fn of<'a>(ended: impl IntoIterator<Item = (&'a str, &'a str)>) -> Summary {
        let mut s = Summary::default();
        for (phase, at) in ended {
            let at = Some(at.to_owned());
            match phase {
                "completed" => {
                    if s.first_recoverability_point.is_none() || at < s.first_recoverability_point {
                        s.first_recoverability_point = at.clone();
                    }
                    if at > s.last_successful_backup {
                        s.last_successful_backup = at;
                    }
                }
                "failed" if at > s.last_failed_backup => s.last_failed_backup = at,
                _ => {}
            }
        }
        s
    }

    /// Whether the last backup succeeded (upstream's `LastBackupSucceeded` condition), if
    /// any backup ended.
    pub fn last_succeeded(&self) -> Option<bool> {
        match (&self.last_successful_backup, &self.last_failed_backup) {
            (None, None) => None,
            (ok, failed) => Some(ok > failed),
        }
    }
}

/// Upstream's `ContinuousArchiving` condition, read from the primary's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivingCondition {
    /// Archiving works.
    pub ok: bool,
    /// `ContinuousArchivingSuccess` or `ContinuousArchivingFailing`.
    pub reason: &'static str,
    /// What was archived or failed last, when, and why it failed.
    pub message: String,
}

/// The `ContinuousArchiving` condition the primary's report supports: working when its last
/// attempt succeeded, failing when its last attempt failed (with the archiver's error and
/// the segments waiting), and nothing to say (`None`) before the first attempt or when the
/// report is not a primary's.
pub fn archiving(primary: &InstanceStatus) -> Option<ArchivingCondition> {
    let a = &primary.archiving;
    if !primary.is_reachable() || !primary.is_primary {
        return None;
    }
    let waiting = match a.ready_wal_files {
        0 => String::new(),
        1 => "; 1 segment waits to be archived".to_owned(),
        n => format!("; {n} segments wait to be archived"),
    };
    if a.is_archiving_wal {
        return Some(ArchivingCondition {
            ok: true,
            reason: "ContinuousArchivingSuccess",
            message: format!(
                "{} archived at {}{waiting}",
                a.last_archived_wal, a.last_archived_wal_time
            ),
        });
    }
    if a.last_failed_wal.is_empty() {
        return None;
    }
    let why = if a.archive_error.is_empty() {
        String::new()
    } else {
        format!(": {}", a.archive_error)
    };
    Some(ArchivingCondition {
        ok: false,
        reason: "ContinuousArchivingFailing",
        message: format!(
            "archiving {} failed at {}{why}{waiting}",
            a.last_failed_wal, a.last_failed_wal_time
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, primary: bool, streaming: bool) -> InstanceStatus {
        InstanceStatus {
            name: name.into(),
            is_primary: primary,
            is_pod_ready: true,
            is_wal_receiver_active: streaming,
            ..Default::default()
        }
    }

    #[test]
    fn a_streaming_standby_first_else_the_primary() {
        let all = [
            st("pg-1", true, false),
            st("pg-3", false, true),
            st("pg-2", false, false),
        ];
        let c = choose("pg", true, Some("pg-1"), &all).expect("one");
        assert_eq!(c.instance, "pg-3");
        assert!(c.reason.contains("standby"), "{}", c.reason);
        assert_eq!(
            choose("pg", false, Some("pg-1"), &all)
                .expect("one")
                .instance,
            "pg-1"
        );
        let alone = [st("pg-1", true, false), st("pg-2", false, false)];
        let c = choose("pg", true, Some("pg-1"), &alone).expect("one");
        assert_eq!(c.instance, "pg-1");
        assert!(c.reason.contains("no standby"), "{}", c.reason);
        let mut down = st("pg-1", true, false);
        down.error = Some("PostgreSQL is not running".into());
        let e = choose("pg", false, Some("pg-1"), &[down]).expect_err("none");
        assert!(e.contains("not running"), "{e}");
        assert_eq!(phase("DONE"), "completed");
        assert_eq!(phase("STARTED"), "running");
    }

    #[test]
    fn the_summary_spans_the_completed_backups_and_names_the_last_failure() {
        let s = Summary::of([
            ("completed", "2026-12-01T10:00:00Z"),
            ("failed", "2026-12-01T11:00:00Z"),
            ("completed", "2026-12-01T09:00:00Z"),
            ("running", "2026-12-01T12:00:00Z"),
        ]);
        assert_eq!(
            s.first_recoverability_point.as_deref(),
            Some("2026-12-01T09:00:00Z")
        );
        assert_eq!(
            s.last_successful_backup.as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
        assert_eq!(
            s.last_failed_backup.as_deref(),
            Some("2026-12-01T11:00:00Z")
        );
        assert_eq!(s.last_succeeded(), Some(false));
        assert_eq!(Summary::default().last_succeeded(), None);
    }

    #[test]
    fn archiving_is_working_failing_or_not_yet_known() {
        let mut p = st("pg-1", true, false);
        assert_eq!(archiving(&p), None, "nothing attempted yet");
        p.archiving.last_failed_wal = "000000010000000000000003".into();
        p.archiving.last_failed_wal_time = "2026-12-01T10:00:00Z".into();
        p.archiving.archive_error = "bucket no-such-bucket does not exist".into();
        p.archiving.ready_wal_files = 2;
        let c = archiving(&p).expect("failing");
        assert!(!c.ok);
        assert_eq!(c.reason, "ContinuousArchivingFailing");
        assert!(
            c.message.contains("000000010000000000000003")
                && c.message.contains("no-such-bucket")
                && c.message.contains("2 segments wait"),
            "{}",
            c.message
        );
        p.archiving.is_archiving_wal = true;
        p.archiving.last_archived_wal = "000000010000000000000004".into();
        let c = archiving(&p).expect("working");
        assert!(
            c.ok && c.message.contains("000000010000000000000004"),
            "{c:?}"
        );
        assert_eq!(
            archiving(&st("pg-2", false, true)),
            None,
            "a standby's says nothing"
        );
    }
}
