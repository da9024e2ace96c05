//! ScheduledBackup: when the next `Backup` is due. Pure: the host passes the schedule, what
//! the status remembers and `now`, and creates the Backup this returns.
//!
//! As upstream: a six-field cron expression with seconds first, in UTC; `immediate` takes
//! the first backup when the schedule is first seen; `suspend` creates nothing. A backup is
//! due once the first occurrence after the last scheduled one (or, the first time, after
//! the schedule was made) has passed. Occurrences missed while the operator was down are
//! one backup, not one each, and the Backup's name comes from the occurrence it stands
//! for (`<schedule>-<YYYYMMDDhhmmss>`), so a host that created it and stopped before
//! recording so makes the same name again and finds it there: never two.

use crate::time::Timestamp;

/// What a schedule wants now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create a Backup for the occurrence `at`, named `name`, and remember `at` as the
    /// last scheduled time.
    Create {
        /// The occurrence (or, for `immediate`, now).
        at: Timestamp,
        /// The Backup's name.
        name: String,
        /// Why now, for an event.
        reason: String,
        /// The occurrence after this one.
        next: Timestamp,
    },
    /// Nothing until `next`.
    Wait {
        /// The next occurrence.
        next: Timestamp,
    },
    /// `suspend: true`.
    Suspended,
}

/// What a ScheduledBackup is and remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule<'a> {
    /// The ScheduledBackup's name (the Backups are named after it).
    pub name: &'a str,
    /// The cron expression (six fields, seconds first).
    pub cron: &'a str,
    /// `spec.immediate`.
    pub immediate: bool,
    /// `spec.suspend`.
    pub suspend: bool,
    /// When the ScheduledBackup was made (its creation timestamp).
    pub created: Timestamp,
    /// `status.lastScheduleTime`, if a Backup was ever created.
    pub last: Option<Timestamp>,
}

fn parse(cron: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(cron.trim())
        .map_err(|e| format!("schedule {cron:?} is not a valid cron expression: {e}"))
}

fn civil(t: Timestamp) -> Result<jiff::civil::DateTime, String> {
    jiff::Timestamp::from_millisecond(t.0 as i64)
        .map(|ts| ts.to_zoned(jiff::tz::TimeZone::UTC).datetime())
        .map_err(|e| e.to_string())
}

fn stamp(d: jiff::civil::DateTime) -> Result<Timestamp, String> {
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| Timestamp(z.timestamp().as_millisecond().max(0) as u64))
        .map_err(|e| e.to_string())
}

/// The first occurrence of `cron` strictly after `t`.
fn after(cron: &croner::Cron, t: Timestamp) -> Result<Timestamp, String> {
    let next = cron
        .find_next_occurrence(&civil(t)?, false)
        .map_err(|e| e.to_string())?;
    stamp(next)
}

fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.0 as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The Backup name for occurrence `at` of schedule `name`, as upstream names them.
pub fn backup_name(name: &str, at: Timestamp) -> String {
    let when = jiff::Timestamp::from_millisecond(at.0 as i64)
        .map(|t| t.strftime("%Y%m%d%H%M%S").to_string())
        .unwrap_or_default();
    format!("{name}-{when}")
}

/// What schedule `s` wants at `now`, or why its expression cannot be used.
pub fn decide(s: &Schedule<'_>, now: Timestamp) -> Result<Decision, String> {
    let cron = parse(s.cron)?;
    if s.suspend {
        return Ok(Decision::Suspended);
    }
    if s.last.is_none() && s.immediate {
        return Ok(Decision::Create {
            at: now,
            name: backup_name(s.name, now),
            reason: "immediate: the first backup is taken when the schedule is made".into(),
            next: after(&cron, now)?,
        });
    }
    let from = s.last.unwrap_or(s.created);
    let due = after(&cron, from)?;
    if due > now {
        return Ok(Decision::Wait { next: due });
    }
    // Every occurrence up to now that was missed is this one backup: the latest.
    let latest = stamp(
        cron.find_previous_occurrence(&civil(now)?, true)
            .map_err(|e| e.to_string())?,
    )?
    .max(due);
    let reason = if latest == due {
        format!("schedule {:?} is due", s.cron)
    } else {
        format!(
            "schedule {:?} is due; occurrences missed since {} are this one backup",
            s.cron,
            rfc3339(due)
        )
    };
    Ok(Decision::Create {
        at: latest,
        name: backup_name(s.name, latest),
        reason,
        next: after(&cron, latest)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp(
            text.parse::<jiff::Timestamp>()
                .expect("a time")
                .as_millisecond() as u64,
        )
    }

    fn every_hour(last: Option<&str>) -> Schedule<'static> {
        Schedule {
            name: "hourly",
            cron: "0 0 * * * *",
            immediate: false,
            suspend: false,
            created: at("2026-12-01T10:20:00Z"),
            last: last.map(at),
        }
    }

    #[test]
    fn due_after_the_next_occurrence_waits_before() {
        let s = every_hour(None);
        assert_eq!(
            decide(&s, at("2026-12-01T10:59:59Z")),
            Ok(Decision::Wait {
                next: at("2026-12-01T11:00:00Z")
            })
        );
        match decide(&s, at("2026-12-01T11:00:01Z")).expect("decides") {
            Decision::Create {
                at: when,
                name,
                next,
                ..
            } => {
                assert_eq!(when, at("2026-12-01T11:00:00Z"));
                assert_eq!(name, "hourly-20261201110000");
                assert_eq!(next, at("2026-12-01T12:00:00Z"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missed_occurrences_make_one_backup_and_the_same_name_twice() {
        let s = every_hour(Some("2026-12-01T11:00:00Z"));
        let now = at("2026-12-01T15:30:00Z");
        let first = decide(&s, now).expect("decides");
        let Decision::Create {
            at: when,
            reason,
            name,
            ..
        } = first.clone()
        else {
            panic!("{first:?}")
        };
        assert_eq!(when, at("2026-12-01T15:00:00Z"));
        assert!(
            reason.contains("missed since 2026-12-01T12:00:00Z"),
            "{reason}"
        );
        // Asked again before the status recorded it: the same Backup.
        assert_eq!(decide(&s, now), Ok(first));
        // Recorded: nothing until the next hour.
        let done = Schedule {
            last: Some(when),
            ..s
        };
        assert_eq!(
            decide(&done, now),
            Ok(Decision::Wait {
                next: at("2026-12-01T16:00:00Z")
            })
        );
        assert_eq!(name, "hourly-20261201150000");
    }

    #[test]
    fn immediate_suspend_and_bad_expressions() {
        let now = at("2026-12-01T10:30:00Z");
        let s = Schedule {
            immediate: true,
            ..every_hour(None)
        };
        assert!(matches!(decide(&s, now), Ok(Decision::Create { at, .. }) if at == now));
        let s = Schedule { suspend: true, ..s };
        assert_eq!(decide(&s, now), Ok(Decision::Suspended));
        let bad = Schedule {
            cron: "0 0 * * *",
            ..every_hour(None)
        };
        assert!(
            decide(&bad, now)
                .expect_err("five fields")
                .contains("0 0 * * *")
        );
    }
}
