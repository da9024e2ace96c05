//! `kubectl-cnpg local apply -f FILE`: the documents of a file handed to the local
//! clusters they name, as `kubectl apply` hands them to the API server. A Cluster replaces
//! the running cluster's manifest (its operator picks it up); a `Backup` is written for the
//! operator to run; a `ScheduledBackup` is created or has its spec replaced (its status,
//! which remembers the last occurrence, is kept). Every document is checked first, as the
//! admission webhook would: one invalid document and nothing is written.

use super::layout::Layout;
use super::operator::LocalError;
use cnpg_core::api::backup::{Backup, ScheduledBackup};
use serde_json::Value;
use std::path::Path;

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn invalid(what: String) -> LocalError {
    LocalError::Invalid(what)
}

/// Applies `file` to the local clusters under `state_dir`; a line per document done.
pub fn apply_file(state_dir: &Path, file: &Path) -> Result<Vec<String>, LocalError> {
    let text =
        std::fs::read_to_string(file).map_err(|e| invalid(format!("{}: {e}", file.display())))?;
    let docs = crate::manifests::parse_documents(&text)
        .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
    let kind = |d: &Value| {
        d.get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut plan: Vec<(String, Value)> = Vec::new();
    for d in docs {
        let k = kind(&d);
        if !matches!(k.as_str(), "Cluster" | "Backup" | "ScheduledBackup") {
            continue;
        }
        let report = cnpg_core::api::manifest::check_document(&d);
        if !report.is_valid() {
            let lines: Vec<String> = report.errors.iter().map(|e| format!("  {e}")).collect();
            return Err(invalid(format!(
                "{} {}: nothing applied:\n{}",
                k,
                report.name.unwrap_or_default(),
                lines.join("\n")
            )));
        }
        plan.push((k, d));
    }
    if plan.is_empty() {
        return Err(invalid(format!(
            "{} holds no Cluster, Backup or ScheduledBackup",
            file.display()
        )));
    }
    let layout = |cluster: &str| -> Result<Layout, LocalError> {
        let l = Layout::new(state_dir, cluster);
        if l.root.exists() {
            Ok(l)
        } else {
            Err(invalid(format!(
                "no local cluster {cluster} in {}; start it with local up",
                l.root.display()
            )))
        }
    };
    // Every target must exist before anything is written.
    for (k, d) in &plan {
        let cluster = match k.as_str() {
            "Cluster" => d["metadata"]["name"].as_str(),
            _ => d["spec"]["cluster"]["name"].as_str(),
        };
        layout(cluster.unwrap_or_default())?;
    }
    let write = |path: &Path, text: &str| {
        cnpg_instance::view::write_atomically(path, text)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))
    };
    let mut done = Vec::new();
    for (k, d) in plan {
        match k.as_str() {
            "Cluster" => {
                let name = d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                write(&layout(&name)?.manifest(), &text)?;
                done.push(format!("cluster {name} configured"));
            }
            "Backup" => {
                let b: Backup = serde_json::from_value(d).map_err(|e| invalid(e.to_string()))?;
                let name = b.metadata.name.clone().unwrap_or_default();
                let l = layout(&b.spec.cluster.name)?;
                let path = l.backups().join(format!("{name}.json"));
                if path.exists() {
                    done.push(format!("backup {name} unchanged (it exists)"));
                    continue;
                }
                std::fs::create_dir_all(l.backups())
                    .map_err(|e| invalid(format!("{}: {e}", l.backups().display())))?;
                write(&path, &pretty(&b))?;
                done.push(format!("backup {name} created"));
            }
            _ => {
                let mut sb: ScheduledBackup =
                    serde_json::from_value(d).map_err(|e| invalid(e.to_string()))?;
                let name = sb.metadata.name.clone().unwrap_or_default();
                let l = layout(&sb.spec.cluster.name)?;
                let dir = l.scheduled_backups();
                let path = dir.join(format!("{name}.json"));
                let old = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<ScheduledBackup>(&t).ok());
                let verb = match old {
                    Some(old) => {
                        sb.status = old.status;
                        sb.metadata.creation_timestamp = old.metadata.creation_timestamp;
                        "configured"
                    }
                    None => {
                        sb.status = None;
                        sb.metadata.creation_timestamp =
                            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                k8s_openapi::jiff::Timestamp::now(),
                            ));
                        "created"
                    }
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
                write(&path, &pretty(&sb))?;
                done.push(format!("scheduledbackup {name} {verb}"));
            }
        }
    }
    Ok(done)
}
