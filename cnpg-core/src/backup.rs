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
}
