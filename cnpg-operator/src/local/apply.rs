//! `kubectl-cnpg local apply -f FILE`: the documents of a file handed to the local
//! clusters they name, as `kubectl apply` hands them to the API server. A Cluster replaces
//! the running cluster's manifest (its operator picks it up); a `Backup` is written for the
//! operator to run; a `ScheduledBackup` is created or has its spec replaced (its status,
//! which remembers the last occurrence, is kept); a `Pooler` is created or replaced (its
//! cluster cannot change); a `Database` likewise (its cluster and name cannot change; its
//! status is kept and its generation counts spec changes, as the API server's does). Every document is checked first, as the
//! admission webhook would: one invalid document and nothing is written.

use super::error::LocalError;
use super::layout::Layout;
use cnpg_core::api::Database;
use cnpg_core::api::backup::{Backup, ScheduledBackup};
use cnpg_core::api::pooler::Pooler;
use serde_json::Value;
use std::path::Path;

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn invalid(what: String) -> LocalError {
    LocalError::Invalid(what)
}

/// Runs `f` holding the lock of the objects' directory `dir` (made if missing), as the
/// operator does when it writes their status ([`super::objects`]).
fn under_lock<T>(dir: &Path, f: impl FnOnce() -> Result<T, LocalError>) -> Result<T, LocalError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| super::objects::locked(dir, f))
        .map_err(|e| invalid(format!("{}: {e}", dir.display())))?
}

/// Applies `file` to the local clusters under `state_dir`; a line per document done.
pub fn apply_file(state_dir: &Path, file: &Path) -> Result<Vec<String>, LocalError> {
    let done = apply_kinds(
        state_dir,
        file,
        &["Cluster", "Backup", "ScheduledBackup", "Pooler", "Database"],
    )?;
    if done.is_empty() {
        return Err(invalid(format!(
            "{} holds no Cluster, Pooler, Backup, ScheduledBackup or Database",
            file.display()
        )));
    }
    Ok(done)
}

/// The Poolers and Databases of the file that starts a cluster (`local up -f`), as `apply`
/// does.
pub fn apply_poolers(state_dir: &Path, file: &Path) -> Result<Vec<String>, LocalError> {
    apply_kinds(state_dir, file, &["Pooler", "Database"])
}

/// Applies the documents of these kinds; nothing when one is invalid.
fn apply_kinds(state_dir: &Path, file: &Path, kinds: &[&str]) -> Result<Vec<String>, LocalError> {
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
        if !kinds.contains(&k.as_str()) {
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
            "Pooler" => {
                let p: Pooler = serde_json::from_value(d).map_err(|e| invalid(e.to_string()))?;
                let name = p.metadata.name.clone().unwrap_or_default();
                let l = layout(&p.spec.cluster.name)?;
                let path = l.pooler(&name);
                let verb = under_lock(&l.poolers(), || {
                    let old = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| serde_json::from_str::<Pooler>(&t).ok());
                    let verb = match &old {
                        Some(o) if o.spec == p.spec => "unchanged",
                        Some(_) => "configured",
                        None => "created",
                    };
                    if let Some(o) = old
                        && o.spec.cluster != p.spec.cluster
                    {
                        return Err(invalid(format!(
                            "pooler {name}: spec.cluster is immutable ({} now); delete the Pooler first",
                            o.spec.cluster.name
                        )));
                    }
                    write(&path, &pretty(&p))?;
                    Ok(verb)
                })?;
                done.push(format!("pooler {name} {verb}"));
            }
            "Database" => {
                let mut db: Database =
                    serde_json::from_value(d).map_err(|e| invalid(e.to_string()))?;
                let name = db.metadata.name.clone().unwrap_or_default();
                let l = layout(&db.spec.cluster.name)?;
                let dir = l.databases();
                let path = dir.join(format!("{name}.json"));
                let verb = under_lock(&dir, || {
                    let old = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| serde_json::from_str::<Database>(&t).ok());
                    let verb = match old {
                        Some(old) if old.metadata.deletion_timestamp.is_some() => {
                            return Err(invalid(format!(
                                "database {name} is being deleted (its database {} is being dropped); apply it again once it is gone",
                                old.spec.name
                            )));
                        }
                        Some(old) if old.spec.name != db.spec.name => {
                            return Err(invalid(format!(
                                "database {name}: spec.name is immutable ({} now); make another Database",
                                old.spec.name
                            )));
                        }
                        Some(old) => {
                            let same = old.spec == db.spec;
                            let generation = old.metadata.generation.unwrap_or(1);
                            db.metadata.generation =
                                Some(if same { generation } else { generation + 1 });
                            db.metadata.creation_timestamp = old.metadata.creation_timestamp;
                            db.status = old.status;
                            if same { "unchanged" } else { "configured" }
                        }
                        None => {
                            db.metadata.generation = Some(1);
                            db.metadata.creation_timestamp =
                                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                    k8s_openapi::jiff::Timestamp::now(),
                                ));
                            db.status = None;
                            "created"
                        }
                    };
                    write(&path, &pretty(&db))?;
                    Ok(verb)
                })?;
                done.push(format!("database {name} {verb}"));
            }
            "Backup" => {
                let b: Backup = serde_json::from_value(d).map_err(|e| invalid(e.to_string()))?;
                let name = b.metadata.name.clone().unwrap_or_default();
                let l = layout(&b.spec.cluster.name)?;
                let path = l.backups().join(format!("{name}.json"));
                let verb = under_lock(&l.backups(), || {
                    if path.exists() {
                        return Ok("unchanged (it exists)");
                    }
                    write(&path, &pretty(&b))?;
                    Ok("created")
                })?;
                done.push(format!("backup {name} {verb}"));
            }
            _ => {
                let mut sb: ScheduledBackup =
                    serde_json::from_value(d).map_err(|e| invalid(e.to_string()))?;
                let name = sb.metadata.name.clone().unwrap_or_default();
                let l = layout(&sb.spec.cluster.name)?;
                let dir = l.scheduled_backups();
                let path = dir.join(format!("{name}.json"));
                let verb = under_lock(&dir, || {
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
                    write(&path, &pretty(&sb))?;
                    Ok(verb)
                })?;
                done.push(format!("scheduledbackup {name} {verb}"));
            }
        }
    }
    Ok(done)
}

/// `local delete -f FILE`: removes the Poolers, Backups, ScheduledBackups and Databases
/// the file names (the operator then stops what a Pooler ran); a line per document. A
/// Database whose reclaim policy is `delete` is only marked: the operator removes it once
/// the primary dropped its database. A Cluster is not deleted this way: `local destroy`
/// deletes it with its data.
pub fn delete_file(state_dir: &Path, file: &Path) -> Result<Vec<String>, LocalError> {
    let text =
        std::fs::read_to_string(file).map_err(|e| invalid(format!("{}: {e}", file.display())))?;
    let docs = crate::manifests::parse_documents(&text)
        .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
    let mut done = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let cluster = d["spec"]["cluster"]["name"].as_str().unwrap_or_default();
        let l = Layout::new(state_dir, cluster);
        let path = match kind {
            "Pooler" => l.pooler(name),
            "Backup" => l.backups().join(format!("{name}.json")),
            "ScheduledBackup" => l.scheduled_backups().join(format!("{name}.json")),
            "Database" => {
                let path = l.databases().join(format!("{name}.json"));
                if mark_for_deletion(&path)? {
                    done.push(format!(
                        "database {name} marked for deletion (databaseReclaimPolicy: delete): the primary drops its database, then it goes"
                    ));
                    continue;
                }
                path
            }
            "Cluster" => {
                return Err(invalid(format!(
                    "cluster {name}: a Cluster is deleted with its data by kubectl-cnpg local destroy {name}"
                )));
            }
            _ => continue,
        };
        let removed = match path.parent().filter(|d| d.exists()) {
            Some(dir) => {
                super::objects::locked(dir, || std::fs::remove_file(&path)).and_then(|r| r)
            }
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        match removed {
            Ok(()) => done.push(format!("{} {name} deleted", kind.to_lowercase())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                done.push(format!("{} {name} not found", kind.to_lowercase()))
            }
            Err(e) => return Err(invalid(format!("{}: {e}", path.display()))),
        }
    }
    Ok(done)
}

/// Marks a `Database` whose reclaim policy is `delete` as being deleted (a deletion time
/// and a new generation, as the API server does for an object with a finalizer); false
/// when there is no such document or its policy is `retain` (it is simply removed).
fn mark_for_deletion(path: &Path) -> Result<bool, LocalError> {
    let Some(dir) = path.parent().filter(|d| d.exists()) else {
        return Ok(false);
    };
    under_lock(dir, || {
        let Some(mut db) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Database>(&t).ok())
        else {
            return Ok(false);
        };
        let delete =
            db.spec.reclaim_policy == Some(cnpg_core::api::database::DatabaseReclaimPolicy::Delete);
        if !delete {
            return Ok(false);
        }
        if db.metadata.deletion_timestamp.is_none() {
            db.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
            db.metadata.generation = Some(db.metadata.generation.unwrap_or(1) + 1);
            cnpg_instance::view::write_atomically(path, &pretty(&db))
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        }
        Ok(true)
    })
}
