//! Objects kept as files beside a local cluster: Poolers, Backups and ScheduledBackups.
//!
//! Two writers share each file: `kubectl-cnpg local apply` and `local delete` write or
//! remove the object, the operator writes its status. On Kubernetes the API server keeps
//! them apart (the status subresource, `resourceVersion` conflicts); here every change
//! holds the lock of the object's directory, and the operator writes a status only onto
//! the very object it acted on. A spec changed or an object deleted while the operator
//! worked on it wins, and the operator's next pass sees it. Without this, a Pooler
//! deleted during the operator's pass was written back with its new status and its
//! processes ran on (found in CI).

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Runs `f` holding the lock of `dir`, which must exist (a lock file in it). Other
/// holders wait: they are each a few file operations long.
pub fn locked<T>(dir: &Path, f: impl FnOnce() -> T) -> std::io::Result<T> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    lock.lock()?;
    Ok(f())
}

/// Writes `updated` to `path` if the file still holds the same object apart from its
/// status (the one the operator acted on); false when it changed, went away or could
/// not be written.
pub fn write_status<T: Serialize + DeserializeOwned>(path: &Path, updated: &T) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    locked(dir, || {
        let current = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<T>(&t).ok());
        current.is_some_and(|c| without_status(&c) == without_status(updated))
            && write(path, updated)
    })
    .unwrap_or(false)
}

/// Writes `doc` to `path` unless a file is there; whether it wrote.
pub fn create<T: Serialize>(path: &Path, doc: &T) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    std::fs::create_dir_all(dir).is_ok()
        && locked(dir, || !path.exists() && write(path, doc)).unwrap_or(false)
}

fn write<T: Serialize>(path: &Path, doc: &T) -> bool {
    serde_json::to_string_pretty(doc)
        .is_ok_and(|text| cnpg_instance::view::write_atomically(path, &text).is_ok())
}

fn without_status<T: Serialize>(doc: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnpg_core::api::backup::{Backup, BackupStatus};

    fn backup(cluster: &str) -> Backup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Backup",
            "metadata": {"name": "b"},
            "spec": {"cluster": {"name": cluster}},
        }))
        .expect("a backup")
    }

    fn with_phase(mut b: Backup, phase: &str) -> Backup {
        b.status = Some(BackupStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        b
    }

    #[test]
    fn a_status_lands_only_on_the_object_it_was_made_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.json");
        assert!(create(&path, &backup("one")));
        assert!(!create(&path, &backup("two")), "created twice");
        assert!(write_status(&path, &with_phase(backup("one"), "running")));
        // Its status changed meanwhile: still the same object.
        assert!(write_status(&path, &with_phase(backup("one"), "completed")));
        // Replaced by the user meanwhile: the status is not written over it.
        write(&path, &backup("two"));
        assert!(!write_status(&path, &with_phase(backup("one"), "failed")));
        let kept: Backup =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("file")).expect("json");
        assert_eq!(kept.spec.cluster.name, "two");
        assert!(kept.status.is_none());
        // Deleted meanwhile: it stays deleted.
        std::fs::remove_file(&path).expect("remove");
        assert!(!write_status(&path, &with_phase(backup("two"), "failed")));
        assert!(!path.exists());
    }
}
