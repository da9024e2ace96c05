//! Base backups: which instance takes one, and what the instance's report of it means for
//! the `Backup`'s phase. Pure, like the rest of the core: the host reads the instances'
//! statuses and the reports, and does the asking.
//!
//! Where, as upstream: `prefer-standby` (the default) takes the first ready standby that
//! streams from the primary, in serial order — a backup reads the whole database and is
//! better kept off the primary — and falls back to the primary; `primary` always takes
//! the primary.

use crate::status::InstanceStatus;
use crate::time::Timestamp;

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

/// `spec.backup.retentionPolicy` (`30d`, `4w`, `6m`) as a length of time; a month is 30
/// days here.
pub fn retention_window(policy: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!(
            "retentionPolicy {policy:?}: write a number of days, weeks or months such as 30d, 4w or 6m"
        )
    };
    let (n, unit) = policy.split_at(policy.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let days = match unit {
        "d" => n,
        "w" => n * 7,
        "m" => n * 30,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(days * 86_400))
}

/// One backup in the store, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogued {
    /// Its backup ID.
    pub id: String,
    /// `DONE` (usable), anything else (failed, or still running).
    pub done: bool,
    /// When it ended (or, for one that did not, began).
    pub end: Timestamp,
    /// The first WAL segment it needs.
    pub begin_wal: String,
}

/// What a recovery window keeps and deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Backups to delete, with why.
    pub delete: Vec<(String, String)>,
    /// Backups kept.
    pub keep: Vec<String>,
    /// WAL segments named before this one (the oldest kept backup's first) are needed by
    /// no kept backup and go; `None`: no WAL goes.
    pub wal_before: Option<String>,
}

/// barman's recovery window: every point of the last `window` must stay recoverable, so
/// every completed backup that ended inside it is kept, and so is the newest one that
/// ended before it (recovering to the window's first moment starts there). Older completed
/// backups go, as do failed ones that ended before the window; WAL older than the first
/// segment of the oldest kept backup goes with them — never what a kept backup needs. With
/// no completed backup nothing goes at all.
pub fn retention(backups: &[Catalogued], window: std::time::Duration, now: Timestamp) -> Retention {
    let start = Timestamp(now.0.saturating_sub(window.as_millis() as u64));
    let mut done: Vec<&Catalogued> = backups.iter().filter(|b| b.done).collect();
    done.sort_by_key(|b| b.end);
    let mut out = Retention {
        delete: Vec::new(),
        keep: Vec::new(),
        wal_before: None,
    };
    if done.is_empty() {
        out.keep = backups.iter().map(|b| b.id.clone()).collect();
        return out;
    }
    // The newest completed backup that ended before the window starts, if any.
    let anchor = done
        .iter()
        .rev()
        .find(|b| b.end < start)
        .map(|b| b.id.clone());
    for b in &done {
        if b.end >= start || Some(&b.id) == anchor.as_ref() {
            out.keep.push(b.id.clone());
        } else {
            out.delete.push((
                b.id.clone(),
                format!(
                    "older than the recovery window, and {} is enough to recover to its start",
                    anchor.clone().unwrap_or_default()
                ),
            ));
        }
    }
    for b in backups.iter().filter(|b| !b.done) {
        if b.end < start {
            out.delete.push((
                b.id.clone(),
                "not completed, and older than the recovery window".into(),
            ));
        } else {
            out.keep.push(b.id.clone());
        }
    }
    out.wal_before = done
        .iter()
        .find(|b| out.keep.contains(&b.id))
        .map(|b| b.begin_wal.clone())
        .filter(|w| !w.is_empty());
    out
}

/// Whether archived WAL object `name` (a segment, possibly `.partial`/`.backup`, not a
/// history file) is older than `before` and so needed by no kept backup.
pub fn wal_obsolete(name: &str, before: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name);
    base.len() == 24 && !name.contains(".history") && base < before
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
    fn a_recovery_window_keeps_what_recovers_every_point_in_it() {
        let day = 86_400_000u64;
        let b = |id: &str, done: bool, days_ago: u64, wal: &str| Catalogued {
            id: id.into(),
            done,
            end: Timestamp(100 * day - days_ago * day),
            begin_wal: wal.into(),
        };
        let all = [
            b("a", true, 40, "000000010000000000000002"),
            b("b", true, 35, "000000010000000000000005"),
            b("c", false, 33, "000000010000000000000006"),
            b("d", true, 20, "000000020000000000000009"),
            b("e", true, 1, "00000002000000000000000C"),
        ];
        let window = retention_window("30d").expect("30 days");
        let r = retention(&all, window, Timestamp(100 * day));
        let gone: Vec<&str> = r.delete.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(gone, ["a", "c"]);
        assert_eq!(r.keep, ["b", "d", "e"]);
        assert_eq!(r.wal_before.as_deref(), Some("000000010000000000000005"));
        assert!(wal_obsolete(
            "000000010000000000000004",
            "000000010000000000000005"
        ));
        assert!(wal_obsolete(
            "000000010000000000000004.partial",
            "000000010000000000000005"
        ));
        assert!(!wal_obsolete(
            "000000010000000000000005",
            "000000010000000000000005"
        ));
        assert!(!wal_obsolete(
            "00000001.history",
            "000000010000000000000005"
        ));
        // Nothing completed: nothing goes.
        let r = retention(&all[2..3], window, Timestamp(100 * day));
        assert!(r.delete.is_empty() && r.wal_before.is_none());
        assert_eq!(
            retention_window("4w"),
            Ok(std::time::Duration::from_secs(28 * 86_400))
        );
        assert!(retention_window("0d").is_err() && retention_window("30x").is_err());
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
