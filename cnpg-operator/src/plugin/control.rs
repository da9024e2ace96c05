//! The commands that ask a cluster's operator for something: `promote`, `fencing`,
//! `hibernate`, `restart`, `reload`, `destroy`, and `report`. Each is written once against
//! [`ClusterAccess`]: the checks (is it an instance? is it the primary?) and the decision
//! (which annotation, which value) are here; the platform only reads and writes.

use super::access::{ClusterAccess, PluginError};
use cnpg_core::fencing::Fencing;
use cnpg_core::naming;
use std::io::Write;
use std::path::PathBuf;

/// The annotation asking every instance to reload its configuration.
pub const ANNOTATION_RELOADED_AT: &str = "cnpg.io/reloadedAt";

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// `promote CLUSTER INSTANCE`: a switchover (it bypasses the failover quorum, as upstream).
pub async fn promote(
    access: &dyn ClusterAccess,
    instance: &str,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let facts = access.facts().await?;
    facts.require_instance(instance)?;
    if facts.current_primary.as_deref() == Some(instance) {
        writeln!(out, "{instance} is already the primary of {}", facts.name)?;
        return Ok(());
    }
    access.switchover(instance).await?;
    writeln!(out, "{}: switchover to {instance} requested", facts.name)?;
    Ok(())
}

/// `fencing on|off CLUSTER INSTANCE|*`: edits the `cnpg.io/fencedInstances` annotation.
pub async fn fencing(
    access: &dyn ClusterAccess,
    on: bool,
    instance: &str,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let facts = access.facts().await?;
    let current = facts.annotations.get(naming::ANNOTATION_FENCED_INSTANCES);
    let mut f = Fencing::parse(current.map(String::as_str)).map_err(|e| {
        PluginError::Usage(format!(
            "{}: annotation {}: {e}",
            facts.name,
            naming::ANNOTATION_FENCED_INSTANCES
        ))
    })?;
    if on {
        f.fence(instance);
    } else {
        f.unfence(instance).map_err(PluginError::Usage)?;
    }
    access
        .annotate(naming::ANNOTATION_FENCED_INSTANCES, f.to_annotation())
        .await?;
    writeln!(out, "{}: fencing {} for {instance}", facts.name, on_off(on))?;
    Ok(())
}

/// `hibernate on|off CLUSTER`.
pub async fn hibernate(
    access: &dyn ClusterAccess,
    on: bool,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let facts = access.facts().await?;
    access
        .annotate(naming::ANNOTATION_HIBERNATION, Some(on_off(on).into()))
        .await?;
    writeln!(out, "{}: hibernation {}", facts.name, on_off(on))?;
    Ok(())
}

/// `restart CLUSTER [INSTANCE]`: a rolling restart (replicas first, the primary last), or
/// one instance (the primary in place, without a failover).
pub async fn restart(
    access: &dyn ClusterAccess,
    instance: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let facts = access.facts().await?;
    match instance {
        None => {
            access
                .annotate(naming::ANNOTATION_RESTARTED_AT, Some(now()))
                .await?;
            writeln!(
                out,
                "{}: rolling restart requested: replicas first, the primary last",
                facts.name
            )?;
        }
        Some(i) => {
            facts.require_instance(i)?;
            let primary = facts.current_primary.as_deref() == Some(i);
            let what = access.restart_instance(i, primary).await?;
            writeln!(out, "{}: {what}", facts.name)?;
        }
    }
    Ok(())
}

/// `reload CLUSTER`.
pub async fn reload(access: &dyn ClusterAccess, out: &mut dyn Write) -> Result<(), PluginError> {
    let facts = access.facts().await?;
    access.annotate(ANNOTATION_RELOADED_AT, Some(now())).await?;
    writeln!(out, "{}: reload requested", facts.name)?;
    Ok(())
}

/// `destroy CLUSTER INSTANCE`: never the primary (switch over first).
pub async fn destroy(
    access: &dyn ClusterAccess,
    instance: &str,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let facts = access.facts().await?;
    facts.require_instance(instance)?;
    if facts.is_primary(instance) {
        return Err(PluginError::Usage(format!(
            "{instance} is the primary of {name}; switch over first (kubectl-cnpg promote {name} ANOTHER-INSTANCE)",
            name = facts.name
        )));
    }
    access.destroy_instance(instance).await?;
    writeln!(
        out,
        "{}: destroyed {instance}; the operator makes a new one from the primary",
        facts.name
    )?;
    Ok(())
}

/// `report CLUSTER [--output DIR]`.
pub async fn report(
    access: &dyn ClusterAccess,
    output: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    access.report(output, out).await
}

/// `backup CLUSTER`: a `Backup` named `<cluster>-<YYYYMMDDhhmmss>` (or `--backup-name`),
/// for the operator to run; with `wait`, follows it to its end (an error when it fails).
pub async fn backup(
    access: &dyn ClusterAccess,
    name: Option<String>,
    target: Option<cnpg_core::api::common::BackupTarget>,
    immediate_checkpoint: bool,
    wait: Option<std::time::Duration>,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    use cnpg_core::api::backup::{Backup, BackupSpec, phase};
    let facts = access.facts().await?;
    let cluster = facts
        .name
        .rsplit('/')
        .next()
        .unwrap_or(&facts.name)
        .to_owned();
    let name = name.unwrap_or_else(|| {
        format!(
            "{cluster}-{}",
            jiff::Timestamp::now().strftime("%Y%m%d%H%M%S")
        )
    });
    let mut b = Backup::new(
        &name,
        BackupSpec {
            cluster: cnpg_core::api::common::LocalObjectReference {
                name: cluster.clone(),
            },
            target,
            method: Default::default(),
            plugin_configuration: None,
            online: None,
            online_configuration: immediate_checkpoint.then(|| {
                cnpg_core::api::common::OnlineConfiguration {
                    immediate_checkpoint: Some(true),
                    ..Default::default()
                }
            }),
        },
    );
    b.metadata.labels = Some([("cnpg.io/cluster".to_owned(), cluster.clone())].into());
    access.create_backup(&b).await?;
    writeln!(out, "backup {name} of {cluster} requested")?;
    let Some(limit) = wait else {
        return Ok(());
    };
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        if let Some(st) = access.read_backup(&name).await?.and_then(|b| b.status) {
            let phase_now = st.phase.clone().unwrap_or_default();
            if phase_now != last {
                let on = st
                    .instance_id
                    .as_ref()
                    .and_then(|i| i.pod_name.clone())
                    .map(|p| format!(" on {p}"))
                    .unwrap_or_default();
                writeln!(out, "{name}: {phase_now}{on}")?;
                last = phase_now.clone();
            }
            match phase_now.as_str() {
                phase::COMPLETED => {
                    writeln!(
                        out,
                        "{name}: backup {} (WAL {} to {})",
                        st.backup_id.unwrap_or_default(),
                        st.begin_wal.unwrap_or_default(),
                        st.end_wal.unwrap_or_default()
                    )?;
                    return Ok(());
                }
                phase::FAILED => {
                    return Err(PluginError::Usage(format!(
                        "backup {name} failed: {}",
                        st.error.unwrap_or_default()
                    )));
                }
                _ => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Err(PluginError::Usage(format!(
        "backup {name} has not ended after {} s; it goes on: kubectl-cnpg status shows it",
        limit.as_secs()
    )))
}
