//! The `Database` controller of the local platform: the cluster's `Database` documents
//! (`databases/<name>.json`, written by `local apply -f`) go to the instance managers in
//! the view; the primary's report of each comes back into that document's status.
//!
//! Deletion works as on Kubernetes with upstream's finalizer: `local delete` of a
//! `Database` whose reclaim policy is `delete` marks it (`deletionTimestamp`, a new
//! generation) instead of removing it; the primary drops the database, and once its report
//! for that generation is applied the document goes. With `retain` it is removed at once.

use super::layout::Layout;
use cnpg_core::api::{Database, DatabaseStatus};
use cnpg_core::databases::Managed;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The cluster's `Database` documents, by file, sorted.
fn documents(layout: &Layout) -> Vec<(PathBuf, Database)> {
    let Ok(entries) = std::fs::read_dir(layout.databases()) else {
        return Vec::new();
    };
    let mut docs: Vec<(PathBuf, Database)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let d = serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
            Some((p, d))
        })
        .collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    docs
}

/// One pass: the primary's `report` (when one is up) written into each document's status,
/// finished deletions removed; returns what the instance managers get in the view, and a
/// line per event.
pub fn sync(
    layout: &Layout,
    report: Option<&BTreeMap<String, DatabaseStatus>>,
) -> (Vec<Managed>, Vec<String>) {
    let mut managed = Vec::new();
    let mut events = Vec::new();
    for (path, mut db) in documents(layout) {
        let object = db.metadata.name.clone().unwrap_or_default();
        let deleting = db.metadata.deletion_timestamp.is_some();
        if let Some(st) = report.and_then(|r| r.get(&object))
            && db.status.as_ref() != Some(st)
        {
            let done = deleting
                && st.applied == Some(true)
                && st.observed_generation == db.metadata.generation;
            if done {
                let removed = path.parent().is_some_and(|dir| {
                    super::objects::locked(dir, || std::fs::remove_file(&path).is_ok())
                        .unwrap_or(false)
                });
                if removed {
                    events.push(format!(
                        "Database {object} deleted: database {} dropped",
                        db.spec.name
                    ));
                    continue;
                }
            }
            let was = db.status.as_ref().and_then(|s| s.applied);
            db.status = Some(st.clone());
            if super::objects::write_status(&path, &db) && was != st.applied {
                events.push(match &st.message {
                    None => format!("Database {object}: database {} reconciled", db.spec.name),
                    Some(m) => format!("Database {object}: {m}"),
                });
            }
        }
        managed.push(Managed {
            object,
            generation: db.metadata.generation,
            deleting,
            spec: db.spec,
        });
    }
    (managed, events)
}
