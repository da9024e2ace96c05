//! Where a recovery from backups stops (`bootstrap.recovery.recoveryTarget`), turned into
//! the settings PostgreSQL reads (`recovery_target_*`), checked before anything is
//! restored: a target PostgreSQL would misread must be refused here, with the field that
//! says it, not found out after the restore of a whole backup.
//!
//! Pure: the operator's validation and the instance manager's `recover` share it.

use crate::lsn::Lsn;

/// Where a recovery from backups stands: written by the instance manager's `recover` as
/// it goes, shown by `local up`, `kubectl-cnpg status` and, on Kubernetes, the Cluster's
/// `status.recoveryProgress` (our addition to upstream's status: upstream shows none).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "api", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `restoring`, `waiting for <WAL file> to be archived` (a backup taken on a standby,
    /// before the primary archived its last WAL), `replaying`, `promoting`, `done` or
    /// `failed`.
    pub phase: String,
    /// The backup being restored.
    #[serde(default, rename = "backupID", skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Bytes of the backup's tarballs restored so far.
    #[serde(default)]
    #[cfg_attr(feature = "api", schemars(with = "i64"))]
    pub restored_bytes: u64,
    /// The backup's size (`backup.info`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "api", schemars(with = "Option<i64>"))]
    pub backup_bytes: Option<u64>,
    /// The last WAL file PostgreSQL restored from the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<String>,
    /// WAL files replayed from the archive so far.
    #[serde(default)]
    #[cfg_attr(feature = "api", schemars(with = "i64"))]
    pub wal_files: u64,
    /// Where it stops: `end of archive`, or the target.
    #[serde(default)]
    pub target: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Progress {
    /// One line for a person.
    pub fn line(&self) -> String {
        let mut s = format!("recovery {}", self.phase);
        if let Some(id) = &self.backup_id {
            s.push_str(&format!(", backup {id}"));
        }
        if self.restored_bytes > 0 {
            match self.backup_bytes {
                Some(total) if total > 0 => s.push_str(&format!(
                    ", {} of {} MB restored",
                    self.restored_bytes >> 20,
                    total >> 20
                )),
                _ => s.push_str(&format!(", {} MB restored", self.restored_bytes >> 20)),
            }
        }
        if let Some(w) = &self.wal {
            s.push_str(&format!(", {} WAL files replayed (at {w})", self.wal_files));
        }
        s.push_str(&format!(", to {}", self.target));
        if let Some(e) = &self.error {
            s.push_str(&format!(": {e}"));
        }
        s
    }
}

/// A recovery target as the manifest gives it (every field optional; none: the end of the
/// archive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// `targetTime`: RFC 3339, or PostgreSQL's `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]`;
    /// without a zone, UTC.
    pub time: Option<String>,
    /// `targetLSN`.
    pub lsn: Option<String>,
    /// `targetXID`.
    pub xid: Option<String>,
    /// `targetName`: a restore point (`pg_create_restore_point`).
    pub name: Option<String>,
    /// `targetImmediate`: stop as soon as the backup is consistent.
    pub immediate: bool,
    /// `targetTLI`: `latest` (the default), `current` or a number.
    pub timeline: Option<String>,
    /// `exclusive`: stop just before the target instead of just after it.
    pub exclusive: bool,
}

/// A target that cannot be used: the field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct TargetError {
    /// The field of `recoveryTarget` (`targetTime`, ...).
    pub field: &'static str,
    /// Why, and what to write instead.
    pub why: String,
}

fn invalid(field: &'static str, why: String) -> TargetError {
    TargetError { field, why }
}

/// `targetTime` as an instant. RFC 3339 (`2026-12-02T05:00:00Z`, `...+01:00`), or
/// PostgreSQL's own form (`2026-12-02 05:00:00.123456+00`); a time without a zone is UTC,
/// as upstream reads it.
pub fn target_time(text: &str) -> Result<jiff::Timestamp, TargetError> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    // PostgreSQL writes an offset of whole hours as `+00`: give it its minutes.
    let with_minutes = {
        let b = t.as_bytes();
        let n = b.len();
        if n > 3
            && (b[n - 3] == b'+' || b[n - 3] == b'-')
            && b[n - 2..].iter().all(u8::is_ascii_digit)
        {
            Some(format!("{t}:00"))
        } else {
            None
        }
    };
    if let Some(ts) = with_minutes.and_then(|w| w.parse::<jiff::Timestamp>().ok()) {
        return Ok(ts);
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>()
        && let Ok(z) = dt.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp());
    }
    Err(invalid(
        "targetTime",
        format!(
            "{text:?} is not a time; write RFC 3339 (2026-12-02T05:00:00Z) or \
             2026-12-02 05:00:00 (UTC when no zone is given)"
        ),
    ))
}

impl Target {
    /// Whether it stops before the end of the archive.
    pub fn is_point_in_time(&self) -> bool {
        self.time.is_some()
            || self.lsn.is_some()
            || self.xid.is_some()
            || self.name.is_some()
            || self.immediate
    }

    /// Every problem with it, each naming its field (validation reports them all).
    pub fn errors(&self) -> Vec<TargetError> {
        let alone = |t: Target| t.settings().err();
        let timeline = self.timeline.clone();
        [
            self.time.clone().map(|time| Target {
                time: Some(time),
                ..Default::default()
            }),
            self.lsn.clone().map(|lsn| Target {
                lsn: Some(lsn),
                ..Default::default()
            }),
            self.xid.clone().map(|xid| Target {
                xid: Some(xid),
                ..Default::default()
            }),
            self.name.clone().map(|name| Target {
                name: Some(name),
                ..Default::default()
            }),
            Some(Target {
                timeline,
                ..Default::default()
            }),
            Some(Target {
                time: self
                    .time
                    .as_ref()
                    .map(|_| "2000-01-01T00:00:00Z".to_owned()),
                lsn: self.lsn.as_ref().map(|_| "0/0".to_owned()),
                xid: self.xid.as_ref().map(|_| "1".to_owned()),
                name: self.name.as_ref().map(|_| "n".to_owned()),
                immediate: self.immediate,
                ..Default::default()
            }),
        ]
        .into_iter()
        .flatten()
        .filter_map(alone)
        .collect()
    }

    /// PostgreSQL's settings for it, in a stable order; `recovery_target_action` is
    /// `promote` (the recovered instance becomes the new cluster's primary).
    pub fn settings(&self) -> Result<Vec<(&'static str, String)>, TargetError> {
        let given: Vec<&str> = [
            self.time.as_ref().map(|_| "targetTime"),
            self.lsn.as_ref().map(|_| "targetLSN"),
            self.xid.as_ref().map(|_| "targetXID"),
            self.name.as_ref().map(|_| "targetName"),
            self.immediate.then_some("targetImmediate"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(invalid(
                "recoveryTarget",
                format!("{} are alternatives; keep only one", given.join(", ")),
            ));
        }
        let mut out = Vec::new();
        if let Some(t) = &self.time {
            let ts = target_time(t)?;
            out.push((
                "recovery_target_time",
                ts.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
            ));
        }
        if let Some(l) = &self.lsn {
            let lsn: Lsn = l
                .parse()
                .map_err(|e: crate::lsn::LsnParseError| invalid("targetLSN", e.to_string()))?;
            out.push(("recovery_target_lsn", lsn.to_string()));
        }
        if let Some(x) = &self.xid {
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) || x.parse::<u64>().is_err() {
                return Err(invalid(
                    "targetXID",
                    format!("{x:?} is not a transaction id; write its number (txid_current())"),
                ));
            }
            out.push(("recovery_target_xid", x.clone()));
        }
        if let Some(n) = &self.name {
            if n.is_empty() || n.len() >= 64 {
                return Err(invalid(
                    "targetName",
                    format!("{n:?}: a restore point's name has 1 to 63 bytes"),
                ));
            }
            out.push(("recovery_target_name", n.clone()));
        }
        if self.immediate {
            out.push(("recovery_target", "immediate".to_owned()));
        }
        if self.exclusive && (self.time.is_some() || self.lsn.is_some() || self.xid.is_some()) {
            out.push(("recovery_target_inclusive", "off".to_owned()));
        }
        let tli = self.timeline.clone().unwrap_or_else(|| "latest".to_owned());
        if tli != "latest" && tli != "current" && tli.parse::<u32>().map_or(true, |n| n == 0) {
            return Err(invalid(
                "targetTLI",
                format!("{tli:?} is not a timeline; use 'latest', 'current' or a positive number"),
            ));
        }
        out.push(("recovery_target_timeline", tli));
        out.push(("recovery_target_action", "promote".to_owned()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_every_form_upstream_accepts() {
        let utc = |s: &str| target_time(s).expect(s).to_string();
        assert_eq!(utc("2026-12-02T05:00:00Z"), "2026-12-02T05:00:00Z");
        assert_eq!(utc("2026-12-02T06:00:00+01:00"), "2026-12-02T05:00:00Z");
        assert_eq!(utc("2026-12-02 05:00:00"), "2026-12-02T05:00:00Z");
        assert_eq!(utc("2026-12-02 07:00:00+02"), "2026-12-02T05:00:00Z");
        assert_eq!(
            utc("2026-12-02 05:00:00.123456+00"),
            "2026-12-02T05:00:00.123456Z"
        );
        let e = target_time("yesterday").expect_err("not a time");
        assert_eq!(e.field, "targetTime");
        assert!(e.why.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn settings_name_one_target_and_promote() {
        let t = Target {
            time: Some("2026-12-02 07:00:00+02".into()),
            exclusive: true,
            ..Default::default()
        };
        assert_eq!(
            t.settings().expect("valid"),
            vec![
                ("recovery_target_time", "2026-12-02 05:00:00+00".to_owned()),
                ("recovery_target_inclusive", "off".to_owned()),
                ("recovery_target_timeline", "latest".to_owned()),
                ("recovery_target_action", "promote".to_owned()),
            ]
        );
        let full = Target::default();
        assert!(!full.is_point_in_time());
        assert_eq!(full.settings().expect("valid").len(), 2);
        let two = Target {
            lsn: Some("0/3000000".into()),
            name: Some("before".into()),
            ..Default::default()
        };
        assert!(
            two.settings()
                .expect_err("two")
                .why
                .contains("targetLSN, targetName are alternatives")
        );
        let xid = Target {
            xid: Some("12a".into()),
            ..Default::default()
        };
        assert_eq!(xid.settings().expect_err("xid").field, "targetXID");
        let tli = Target {
            timeline: Some("0".into()),
            ..Default::default()
        };
        assert_eq!(tli.settings().expect_err("tli").field, "targetTLI");
    }
}
