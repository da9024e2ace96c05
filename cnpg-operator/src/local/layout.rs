//! Where a local cluster keeps everything, and the files the operator and the plugin share.
//!
//! `<state-dir>/<cluster>/` holds `cluster.yaml` (the manifest: `local apply` replaces it,
//! the plugin's annotations edit it), `status.json` ([`StatusFile`]: what the operator
//! decided, read by `kubectl-cnpg status`), `view.json` (what the instance managers read),
//! `current-primary.json` (published by the promoted instance manager), `ports.json`,
//! `secrets/`, `instances/<name>/{data,run,postgres.log,manager.log}`, `operator.pid`, and
//! `requests/` (switchover, restart and destroy requests from the plugin).

use cnpg_core::reconcile::ClusterState;
use cnpg_core::status::InstanceStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a local cluster keeps everything.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<state-dir>/<cluster>`.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of `cluster` under `state_dir`.
    pub fn new(state_dir: &Path, cluster: &str) -> Self {
        Layout {
            root: state_dir.join(cluster),
        }
    }
    /// The manifest.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("cluster.yaml")
    }
    /// The status the operator writes.
    pub fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }
    /// What the instance managers read.
    pub fn view(&self) -> PathBuf {
        self.root.join("view.json")
    }
    /// `currentPrimary`, published by the promoted instance manager.
    pub fn published(&self) -> PathBuf {
        self.root.join("current-primary.json")
    }
    /// Passwords.
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
    /// Port assignments.
    pub fn ports(&self) -> PathBuf {
        self.root.join("ports.json")
    }
    /// One instance's directory.
    pub fn instance(&self, name: &str) -> PathBuf {
        self.root.join("instances").join(name)
    }
    /// The operator's pid file.
    pub fn pid(&self) -> PathBuf {
        self.root.join("operator.pid")
    }
    /// The operator's log (when detached).
    pub fn log(&self) -> PathBuf {
        self.root.join("operator.log")
    }
    /// A switchover request (`kubectl-cnpg promote`): the instance to promote.
    pub fn promote_request(&self) -> PathBuf {
        self.root.join("requests").join("promote")
    }
    /// A request to restart one instance (`kubectl-cnpg restart CLUSTER INSTANCE`).
    pub fn restart_request(&self) -> PathBuf {
        self.root.join("requests").join("restart")
    }
    /// The `Backup`s of the cluster (`kubectl-cnpg backup`, `local apply -f backup.yaml`):
    /// one JSON document each, `<name>.json`, whose status the operator keeps.
    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }
    /// Where the recovery from backups that makes the first instance stands (the file
    /// `cnpg-instance recover` keeps beside that instance's PGDATA), if one ran.
    pub fn recovery_progress(&self) -> Option<cnpg_instance::recovery::Progress> {
        let dir = std::fs::read_dir(self.root.join("instances")).ok()?;
        dir.flatten().find_map(|i| {
            let file = cnpg_instance::recovery::progress_file(&i.path().join("data"));
            serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()
        })
    }
    /// `Database` documents (`local apply -f`), with their status ([`super::databases`]).
    pub fn databases(&self) -> PathBuf {
        self.root.join("databases")
    }
    /// `ScheduledBackup` documents (`local apply -f`), with their status.
    pub fn scheduled_backups(&self) -> PathBuf {
        self.root.join("scheduled-backups")
    }
    /// The cluster's `Pooler`s: `<name>.json` each, and a directory each for what its
    /// processes use ([`super::poolers`]).
    pub fn poolers(&self) -> PathBuf {
        self.root.join("poolers")
    }
    /// One Pooler's document.
    pub fn pooler(&self, name: &str) -> PathBuf {
        self.poolers().join(format!("{name}.json"))
    }
    /// One Pooler's directory.
    pub fn pooler_dir(&self, name: &str) -> PathBuf {
        self.poolers().join(name)
    }
    /// A request to destroy one replica (`kubectl-cnpg destroy`).
    pub fn destroy_request(&self) -> PathBuf {
        self.root.join("requests").join("destroy")
    }
}

/// A live operator's claim on its cluster: `operator.pid` holds its pid and stays locked
/// (`flock`) for as long as the operator runs. A pid alone can name another process once
/// the operator is gone; the lock goes with the process, so `local down` never signals a
/// stranger, and a second operator for the same cluster refuses to start.
#[derive(Debug)]
pub struct OperatorLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl Layout {
    /// Takes the operator's lock and writes our pid; fails, naming the holder, when another
    /// operator runs this cluster.
    pub fn lock_operator(&self) -> Result<OperatorLock, String> {
        use nix::fcntl::{Flock, FlockArg};
        use std::io::Write;
        let path = self.pid();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            format!(
                "another operator (pid {}) runs this cluster already; stop it with kubectl-cnpg local down",
                holder.trim()
            )
        })?;
        lock.set_len(0)
            .and_then(|_| write!(lock, "{}", std::process::id()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(OperatorLock(lock))
    }

    /// The pid of the operator running this cluster, if one runs: the pid file must be
    /// locked by its owner (a stale file, whatever pid it names, is `None`).
    pub fn running_operator(&self) -> Option<i32> {
        use nix::fcntl::{Flock, FlockArg};
        let file = std::fs::File::open(self.pid()).ok()?;
        if Flock::lock(file, FlockArg::LockSharedNonblock).is_ok() {
            return None; // nobody holds it
        }
        std::fs::read_to_string(self.pid())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Ports of a local cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// The read-write service.
    pub rw: u16,
    /// The read-only service.
    pub ro: u16,
    /// The read service.
    pub r: u16,
    /// Where standbys stream from: the current primary, kept through a switchover (so the
    /// target receives everything up to the old primary's shutdown checkpoint) and cut
    /// when a failover begins (so WAL receivers stop at once, even from a hung primary).
    #[serde(default)]
    pub replication: u16,
    /// Per instance: (PostgreSQL port, status port).
    pub instances: BTreeMap<String, (u16, u16)>,
}

/// One instance in `status.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLine {
    /// Name.
    pub name: String,
    /// Role label.
    pub role: String,
    /// Its process runs.
    pub running: bool,
    /// Its last status report.
    pub status: InstanceStatus,
}

/// `status.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    /// The persisted decision state.
    pub state: ClusterState,
    /// The phase (upstream's strings).
    pub phase: String,
    /// Why.
    pub phase_reason: String,
    /// The instances.
    pub instances: Vec<InstanceLine>,
    /// The last election and why it chose its winner.
    pub last_election: Option<String>,
    /// The backups (first point of recoverability, last successful and failed backup),
    /// when the cluster archives to an object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<cnpg_core::backup::Summary>,
    /// The recovery from backups that made the first instance (`bootstrap.recovery`):
    /// where it stands, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<cnpg_instance::recovery::Progress>,
    /// The poolers (`Pooler`s applied to the cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poolers: Vec<PoolerLine>,
    /// `spec.managed.roles` as the primary last reported them (upstream's
    /// `managedRolesStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_roles_status: Option<cnpg_core::roles::ManagedRoles>,
    /// `spec.tablespaces` as the primary last reported them (upstream's
    /// `tablespacesStatus`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces_status: Vec<cnpg_core::api::cluster::TablespaceState>,
    /// Recent events, newest last.
    pub events: Vec<String>,
    /// Ports.
    pub ports: Ports,
    /// Pid of the operator.
    pub operator_pid: u32,
}

/// One pooler in `status.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolerLine {
    /// Its name.
    pub name: String,
    /// `rw`, `ro` or `r`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Its port.
    pub port: u16,
    /// Processes asked for.
    pub instances: i32,
    /// Processes whose PgBouncer runs.
    pub ready: i32,
    /// `active`, `paused` or `failed`.
    pub phase: String,
    /// Why, when it is not active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
