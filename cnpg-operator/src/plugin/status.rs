//! `kubectl-cnpg status`: one rendering of a cluster's state, whichever platform filled it.
//!
//! The sections follow upstream's plugin (Cluster Summary, Certificates Status, Streaming
//! Replication status, Instances status), plus why the primary is the primary — the
//! election's own explanation — where the platform keeps it.

use super::access::{ClusterAccess, PluginError, StatusReport};
use cnpg_core::status::InstanceStatus;
use std::io::Write;

const SYNC_STATE: &str = "Sync State";
const STATUS: &str = "Status";

/// `status CLUSTER`.
pub async fn status(access: &dyn ClusterAccess, out: &mut dyn Write) -> Result<(), PluginError> {
    let report = access.status().await?;
    render(&report, out)?;
    Ok(())
}

/// Writes `r` as upstream's plugin lays it out.
pub fn render(r: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    let primary_name = r.current_primary.clone().unwrap_or_else(|| "-".into());
    let primary = r
        .reports
        .iter()
        .find(|i| i.name == primary_name && i.is_reachable());
    writeln!(out, "Cluster Summary")?;
    writeln!(out, "Name:                 {}", r.name)?;
    if let Some(image) = &r.image {
        writeln!(out, "PostgreSQL Image:     {image}")?;
    }
    if let Some(p) = primary {
        writeln!(out, "System ID:            {}", p.system_id)?;
    }
    writeln!(out, "Primary instance:     {primary_name}")?;
    if let Some(why) = &r.why_primary {
        writeln!(out, "Why this primary:     {why}")?;
    }
    let reason = if r.phase_reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.phase_reason)
    };
    writeln!(out, "Status:               {}{reason}", r.phase)?;
    writeln!(out, "Instances:            {}", r.instances)?;
    writeln!(out, "Ready instances:      {}", r.ready)?;
    if let Some(target) = r
        .target_primary
        .as_ref()
        .filter(|t| Some(*t) != r.current_primary.as_ref())
    {
        writeln!(out, "Switchover in progress: to {target}")?;
    }
    if let Some(p) = primary {
        writeln!(
            out,
            "Current Write LSN:    {} (Timeline: {})",
            p.current_lsn, p.timeline
        )?;
        writeln!(
            out,
            "Sync standbys:        {}",
            p.synchronous_standby_names.clone().unwrap_or_default()
        )?;
    }
    if let Some(p) = &r.recovery {
        writeln!(out, "Recovery:             {}", p.line())?;
    }
    if let Some(services) = &r.services {
        writeln!(out, "Services:             {services}")?;
    }
    for (i, m) in r.metrics.iter().enumerate() {
        let title = if i == 0 { "Metrics:" } else { "" };
        writeln!(out, "{title:<22}{m}")?;
    }
    if !r.certificates.is_empty() {
        writeln!(out, "\nCertificates Status")?;
        for (secret, exp) in &r.certificates {
            writeln!(out, "{secret:<24} expires {exp}")?;
        }
    }
    if let Some(b) = &r.backups {
        write_continuous_backup(out, b, primary)?;
    }
    if let Some(m) = primary.and_then(|p| p.managed_roles.as_ref()) {
        write_managed_roles(out, m)?;
    }
    write_instances(out, primary, &r.reports)?;
    if !r.poolers.is_empty() {
        writeln!(out, "\nPoolers")?;
        for p in &r.poolers {
            writeln!(out, "{p}")?;
        }
    }
    if !r.pods.is_empty() {
        writeln!(out, "\nPods")?;
        writeln!(out, "{:<16} {:<10} {:<10} Node", "Name", "Role", "Ready")?;
        for p in &r.pods {
            writeln!(
                out,
                "{:<16} {:<10} {:<10} {}",
                p.name, p.role, p.ready, p.node
            )?;
        }
    }
    if !r.events.is_empty() {
        let from = r
            .events_source
            .as_ref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        writeln!(out, "\nRecent events{from}")?;
        for e in &r.events {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(())
}

/// Upstream's `Continuous Backup status` section: the backups from the cluster's status,
/// archiving from the primary's own report.
fn write_continuous_backup(
    out: &mut dyn Write,
    b: &cnpg_core::backup::Summary,
    p: Option<&InstanceStatus>,
) -> std::io::Result<()> {
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "Not Available".into());
    writeln!(out, "\nContinuous Backup status")?;
    writeln!(
        out,
        "First Point of Recoverability:  {}",
        or_dash(&b.first_recoverability_point)
    )?;
    writeln!(
        out,
        "Last Successful Backup:         {}",
        or_dash(&b.last_successful_backup)
    )?;
    if let Some(f) = &b.last_failed_backup {
        writeln!(out, "Last Failed Backup:             {f}")?;
    }
    let Some(p) = p else {
        return writeln!(
            out,
            "Working WAL archiving:          unknown (no primary report)"
        );
    };
    let a = &p.archiving;
    let working = if a.is_archiving_wal {
        "OK".to_owned()
    } else if a.last_failed_wal.is_empty() {
        "Starting Up".to_owned()
    } else if a.archive_error.is_empty() {
        "Failing".to_owned()
    } else {
        format!("Failing ({})", a.archive_error)
    };
    writeln!(out, "Working WAL archiving:          {working}")?;
    writeln!(out, "WALs waiting to be archived:    {}", a.ready_wal_files)?;
    let at = |wal: &str, time: &str| {
        if wal.is_empty() {
            "-".to_owned()
        } else {
            format!("{wal}   @   {time}")
        }
    };
    writeln!(
        out,
        "Last Archived WAL:              {}",
        at(&a.last_archived_wal, &a.last_archived_wal_time)
    )?;
    writeln!(
        out,
        "Last Failed WAL:                {}",
        at(&a.last_failed_wal, &a.last_failed_wal_time)
    )
}

/// Upstream's `Managed roles status` and `Irreconcilable roles` sections, from the
/// primary's last pass.
fn write_managed_roles(
    out: &mut dyn Write,
    m: &cnpg_core::roles::ManagedRoles,
) -> std::io::Result<()> {
    writeln!(out, "\nManaged roles status")?;
    writeln!(out, "{:<24} Roles", STATUS)?;
    for (state, roles) in &m.by_status {
        writeln!(out, "{state:<24} {}", roles.join(","))?;
    }
    if !m.cannot_reconcile.is_empty() {
        writeln!(out, "\nIrreconcilable roles")?;
        writeln!(out, "{:<16} Errors", "Role")?;
        for (role, errors) in &m.cannot_reconcile {
            writeln!(out, "{role:<16} {}", errors.join("; "))?;
        }
    }
    Ok(())
}

/// The `Streaming Replication status` and `Instances status` sections (upstream's
/// headings and role strings), from the primary's report and every instance's.
fn write_instances(
    out: &mut dyn Write,
    p: Option<&InstanceStatus>,
    all: &[InstanceStatus],
) -> std::io::Result<()> {
    if let Some(p) = p {
        writeln!(out, "\nStreaming Replication status")?;
        writeln!(
            out,
            "{:<14} {:<12} {:<12} {:<12} {:<12} {:<10} {}",
            "Name", "Sent LSN", "Write LSN", "Flush LSN", "Replay LSN", "State", SYNC_STATE
        )?;
        for r in &p.replication_info {
            writeln!(
                out,
                "{:<14} {:<12} {:<12} {:<12} {:<12} {:<10} {}",
                r.application_name,
                r.sent_lsn.to_string(),
                r.write_lsn.to_string(),
                r.flush_lsn.to_string(),
                r.replay_lsn.to_string(),
                r.state,
                r.sync_state
            )?;
        }
    }
    writeln!(out, "\nInstances status")?;
    writeln!(
        out,
        "{:<14} {:<12} {:<20} {}",
        "Name", "Current LSN", "Replication role", STATUS
    )?;
    for i in all {
        let role = if i.is_fenced {
            "Fenced".to_owned()
        } else if i.is_primary {
            "Primary".to_owned()
        } else if i.error.is_some() {
            "-".to_owned()
        } else {
            let sync = p
                .and_then(|p| {
                    p.replication_info
                        .iter()
                        .find(|r| r.application_name == i.name)
                })
                .map(|r| r.sync_state.as_str());
            match sync {
                Some("sync") | Some("quorum") => "Standby (sync)".to_owned(),
                Some("potential") => "Standby (potential sync)".to_owned(),
                _ => "Standby (async)".to_owned(),
            }
        };
        let lsn = if i.is_primary {
            i.current_lsn
        } else {
            i.replay_lsn
        };
        let st = i.error.clone().unwrap_or_else(|| {
            if i.pending_restart {
                "OK (pending restart)".into()
            } else {
                "OK".into()
            }
        });
        writeln!(
            out,
            "{:<14} {:<12} {:<20} {}",
            i.name,
            lsn.to_string(),
            role,
            st
        )?;
    }
    Ok(())
}
