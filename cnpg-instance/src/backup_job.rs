//! A base backup the instance manager runs for the operator: `POST /pg/backup` starts
//! `cnpg-cloud backup` (a child process, as PostgreSQL's user: the object-store client
//! never enters the manager), `GET /pg/backup/{name}` reports it from the status file the
//! child keeps. One backup at a time per instance; asking again for the same name returns
//! the one already started or finished, so an operator restarted mid-backup never starts a
//! second.

use crate::backup::BackupInfo;
use crate::runas::RunAs;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How this instance takes backups (there is an object store: the archive configuration).
#[derive(Debug)]
pub struct BackupJobs {
    /// `cnpg-cloud`.
    pub program: PathBuf,
    /// `archive.json`.
    pub config: PathBuf,
    /// PGDATA.
    pub pgdata: PathBuf,
    /// PostgreSQL's socket directory and port.
    pub socket_dir: PathBuf,
    #[allow(missing_docs)]
    pub port: u16,
    /// PostgreSQL's user, when it is not ours.
    pub run_as: Option<RunAs>,
    /// Where the status files go.
    pub dir: PathBuf,
    running: Mutex<Option<String>>,
}

/// What `POST /pg/backup` takes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartBackup {
    /// The Backup's name (a Kubernetes object name).
    pub name: String,
    /// Overrides `data.immediateCheckpoint`.
    #[serde(default)]
    pub immediate_checkpoint: Option<bool>,
}

/// Why a backup could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A bad request.
    #[error("{0}")]
    Invalid(String),
    /// Another backup runs.
    #[error("backup {0} is running on this instance; one at a time")]
    Busy(String),
    /// The program could not be started.
    #[error("{0}")]
    Failed(String),
}

impl BackupJobs {
    /// Backups of the instance at `pgdata`, kept in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        program: PathBuf,
        config: PathBuf,
        pgdata: PathBuf,
        socket_dir: PathBuf,
        port: u16,
        run_as: Option<RunAs>,
        dir: PathBuf,
    ) -> Arc<Self> {
        fail_abandoned(&dir, run_as);
        Arc::new(BackupJobs {
            program,
            config,
            pgdata,
            socket_dir,
            port,
            run_as,
            dir,
            running: Mutex::new(None),
        })
    }

    fn file(&self, name: &str) -> Result<PathBuf, JobError> {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !name.starts_with('.');
        if !ok {
            return Err(JobError::Invalid(format!(
                "backup name {name:?}: give a Kubernetes object name (lowercase letters, digits, '-', '.')"
            )));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// What is known of the backup `name`, if it was ever started here.
    pub fn get(&self, name: &str) -> Result<Option<BackupInfo>, JobError> {
        let path = self.file(name)?;
        Ok(std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Starts the backup `req.name`, or returns it when it was already started.
    pub fn start(self: &Arc<Self>, req: &StartBackup) -> Result<BackupInfo, JobError> {
        let path = self.file(&req.name)?;
        if let Some(known) = self.get(&req.name)? {
            return Ok(known);
        }
        let mut running = self.running.lock().expect("backup lock");
        if let Some(other) = running.as_ref() {
            return Err(JobError::Busy(other.clone()));
        }
        std::fs::create_dir_all(&self.dir)
            .and_then(|_| crate::runas::own(self.run_as, &self.dir))
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.dir.display())))?;
        let first = BackupInfo {
            backup_name: Some(req.name.clone()),
            status: "STARTED".into(),
            ..Default::default()
        };
        write(&path, &first, self.run_as)?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("backup")
            .arg("--config")
            .arg(&self.config)
            .arg("--pgdata")
            .arg(&self.pgdata)
            .arg("--socket-dir")
            .arg(&self.socket_dir)
            .args(["--port", &self.port.to_string(), "--name", &req.name])
            .arg("--status")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false);
        if req.immediate_checkpoint == Some(true) {
            cmd.arg("--immediate-checkpoint");
        }
        if let Some(r) = self.run_as {
            r.apply(&mut cmd);
        }
        let child = cmd.spawn().map_err(|e| {
            let _ = std::fs::remove_file(&path);
            JobError::Failed(format!("cannot start {}: {e}", self.program.display()))
        })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(self.dir.join(format!("{}.pid", req.name)), pid.to_string());
        }
        *running = Some(req.name.clone());
        drop(running);
        tracing::info!(backup = %req.name, "base backup started");
        let me = self.clone();
        let name = req.name.clone();
        tokio::spawn(async move {
            let out = child.wait_with_output().await;
            let last = me.get(&name).ok().flatten().unwrap_or_default();
            let ended = matches!(last.status.as_str(), "DONE" | "FAILED");
            match out {
                Ok(o) if o.status.success() && ended => {
                    tracing::info!(backup = %name, id = %last.backup_id, "base backup completed");
                    // What the retention policy did after it, or why it could not.
                    for line in String::from_utf8_lossy(&o.stderr).lines() {
                        tracing::info!(backup = %name, "{}", line.trim());
                    }
                }
                other => {
                    let why = match other {
                        Ok(o) => {
                            let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                            if ended && last.status == "FAILED" {
                                last.error.clone().unwrap_or(err)
                            } else {
                                format!("cnpg-cloud backup exited ({}): {err}", o.status)
                            }
                        }
                        Err(e) => format!("cnpg-cloud backup: {e}"),
                    };
                    tracing::warn!(backup = %name, "base backup failed: {why}");
                    if !ended || last.status != "FAILED" {
                        let failed = BackupInfo {
                            status: "FAILED".into(),
                            error: Some(why),
                            backup_name: Some(name.clone()),
                            ..last
                        };
                        if let Ok(p) = me.file(&name) {
                            let _ = write(&p, &failed, me.run_as);
                        }
                    }
                }
            }
            let _ = std::fs::remove_file(me.dir.join(format!("{name}.pid")));
            *me.running.lock().expect("backup lock") = None;
        });
        Ok(first)
    }
}

/// Backups this instance's manager started before it restarted (with its node, say) and
/// whose `cnpg-cloud` is gone without a final report: they failed, and say so; otherwise
/// they would show as running for ever. One whose process still runs reports itself.
fn fail_abandoned(dir: &std::path::Path, run_as: Option<RunAs>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| Some(e.ok()?.path())) {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(info) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<BackupInfo>(&b).ok())
        else {
            continue;
        };
        if matches!(info.status.as_str(), "DONE" | "FAILED") {
            continue;
        }
        let pid_file = path.with_extension("pid");
        let alive = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(crate::archive::PROGRAM))
                    && !crate::proc::exited(pid)
            });
        if alive {
            continue;
        }
        let name = info.backup_name.clone().unwrap_or_default();
        tracing::warn!(backup = %name, "base backup abandoned: the instance restarted while it ran");
        let failed = BackupInfo {
            status: "FAILED".into(),
            error: Some(
                "the instance restarted while the backup ran (its cnpg-cloud process is gone): \
                 the backup did not complete; take another"
                    .into(),
            ),
            ..info
        };
        let _ = write(&path, &failed, run_as);
        let _ = std::fs::remove_file(pid_file);
    }
}

fn write(path: &std::path::Path, info: &BackupInfo, run_as: Option<RunAs>) -> Result<(), JobError> {
    let json = serde_json::to_string(info).unwrap_or_default();
    crate::view::write_atomically(path, &json)
        .and_then(|_| crate::runas::own(run_as, path))
        .map_err(|e| JobError::Failed(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_left_running_by_a_restart_fail_saying_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |name: &str, status: &str| {
            let info = BackupInfo {
                backup_name: Some(name.into()),
                backup_id: "20261202T010000".into(),
                status: status.into(),
                ..Default::default()
            };
            write(&dir.path().join(format!("{name}.json")), &info, None).expect("write");
        };
        put("cut", "STARTED");
        put("done", "DONE");
        // Its pid file names a live process that is not cnpg-cloud (this test).
        put("reused", "STARTED");
        std::fs::write(
            dir.path().join("reused.pid"),
            std::process::id().to_string(),
        )
        .expect("pid");
        let jobs = BackupJobs::new(
            PathBuf::from("cnpg-cloud"),
            PathBuf::from("archive.json"),
            PathBuf::from("data"),
            PathBuf::from("run"),
            5432,
            None,
            dir.path().to_owned(),
        );
        for name in ["cut", "reused"] {
            let info = jobs.get(name).expect("name").expect("known");
            assert_eq!(info.status, "FAILED", "{info:?}");
            assert!(
                info.error
                    .as_deref()
                    .is_some_and(|e| e.contains("restarted while the backup ran")),
                "{info:?}"
            );
            assert_eq!(info.backup_id, "20261202T010000");
        }
        assert_eq!(
            jobs.get("done").expect("name").expect("known").status,
            "DONE"
        );
        assert!(!dir.path().join("reused.pid").exists());
    }
}
