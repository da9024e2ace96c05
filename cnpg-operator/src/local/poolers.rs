//! The Pooler controller of the local platform: each `Pooler` (`local apply -f`) runs
//! `spec.instances` pooler managers (`cnpg-instance pgbouncer`), each with its PgBouncer.
//! They all listen on the pooler's one port (`so_reuseport`: the kernel spreads the
//! connections, as a Service does) and reach PostgreSQL through the cluster's `-rw`,
//! `-ro` or `-r` listener.
//!
//! `poolers/<name>.json` is the Pooler (its status kept there), `poolers/<name>/` holds
//! `config.json` (what the managers read), `ports.json` and a directory per process.
//! Around a switchover the operator holds every `rw` pooler paused ([`Poolers::hold`]).

use super::layout::Layout;
pub use super::layout::PoolerLine;
use cnpg_core::api::manifest::check_document;
use cnpg_core::api::pooler::{Pooler, PoolerStatus, PoolerType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A pooler's ports, kept across operator restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolerPorts {
    /// Where its clients connect.
    pub port: u16,
    /// Each process's `/status` port, by process name.
    pub http: BTreeMap<String, u16>,
}

/// What the Pooler controller needs of its cluster.
pub struct Context<'a> {
    /// The `cnpg-instance` program.
    pub instance_bin: &'a Path,
    /// The cluster's `-rw`, `-ro`, `-r` ports.
    pub services: (u16, u16, u16),
    /// The cluster's secrets (certificates, the status token the managers' `/pause`
    /// and `/resume` take).
    pub secrets: &'a Path,
    /// The Secrets the manifest carries (for `authQuerySecret`).
    pub user_secrets: &'a BTreeMap<String, k8s_openapi::api::core::v1::Secret>,
}

/// The local poolers of one cluster.
pub struct Poolers {
    layout: Layout,
    /// Running processes by name (`<pooler>-<n>`): started here, or adopted by pid.
    children: BTreeMap<String, Proc>,
    /// The last problem said per pooler (said once, not every loop).
    problems: BTreeMap<String, String>,
    /// Held paused for a switchover (the `rw` poolers' processes).
    held: Vec<crate::pooler::Manager>,
    /// When each process was last started, and why it ended last (a manager that cannot
    /// run is started again once a second, not every loop).
    started: BTreeMap<String, std::time::Instant>,
    ended: BTreeMap<String, String>,
    lines: Vec<PoolerLine>,
}

enum Proc {
    Child(Child),
    Adopted(i32),
}

impl Proc {
    /// `None` while it runs, else how it ended.
    fn ended(&mut self) -> Option<String> {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(status.to_string()),
                Err(e) => Some(e.to_string()),
            },
            Proc::Adopted(p) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), None)
                .is_err()
                .then(|| "ended".to_owned()),
        }
    }
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    cnpg_instance::view::write_atomically(path, &text)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Poolers {
    /// The poolers of the cluster at `layout`.
    pub fn new(layout: Layout) -> Self {
        Poolers {
            layout,
            children: BTreeMap::new(),
            problems: BTreeMap::new(),
            held: Vec::new(),
            started: BTreeMap::new(),
            ended: BTreeMap::new(),
            lines: Vec::new(),
        }
    }

    /// The Poolers applied to this cluster, by name (invalid documents left out: `local
    /// apply` refuses them).
    pub fn applied(&self) -> BTreeMap<String, Pooler> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(self.layout.poolers())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Some(v) = read::<serde_json::Value>(&path) else {
                continue;
            };
            if !check_document(&v).is_valid() {
                continue;
            }
            if let Ok(p) = serde_json::from_value::<Pooler>(v) {
                out.insert(p.metadata.name.clone().unwrap_or_default(), p);
            }
        }
        out
    }

    /// Whether any pooler serves the cluster (the primary then keeps `auth_query`'s role
    /// and function).
    pub fn any(&self) -> bool {
        !self.applied().is_empty()
    }

    /// What `status.json` shows.
    pub fn lines(&self) -> Vec<PoolerLine> {
        self.lines.clone()
    }

    /// One pass: every Pooler's configuration written, its processes started or stopped
    /// to `spec.instances`, those of deleted Poolers stopped and their files removed, the
    /// status written. What happened, for the events.
    pub async fn step(&mut self, ctx: &Context<'_>) -> Vec<String> {
        let mut events = Vec::new();
        let applied = self.applied();
        // Processes of Poolers that are gone, or beyond their instances.
        let wanted: BTreeMap<String, (String, usize)> = applied
            .iter()
            .flat_map(|(name, p)| {
                let n = p.spec.instances.unwrap_or(1).max(0) as usize;
                (1..=n).map(move |i| (format!("{name}-{i}"), (name.clone(), i)))
            })
            .collect();
        let extra: Vec<String> = self
            .children
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for name in extra {
            self.stop(&name).await;
            events.push(format!("pooler process {name} stopped"));
        }
        for dir in std::fs::read_dir(self.layout.poolers())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = dir.file_name().to_string_lossy().into_owned();
            if dir.path().is_dir() && !applied.contains_key(&name) {
                // Adopted processes of a deleted pooler, from before an operator restart.
                for p in self.processes_in(&dir.path()) {
                    signal_and_wait(p).await;
                }
                let _ = std::fs::remove_dir_all(dir.path());
                events.push(format!("pooler {name} deleted with what it made"));
            }
        }
        let mut lines = Vec::new();
        for (name, p) in &applied {
            let (line, said) = self.run_one(name, p, ctx).await;
            if let Some(s) = said {
                events.push(s);
            }
            lines.push(line);
        }
        self.lines = lines;
        events
    }

    async fn run_one(
        &mut self,
        name: &str,
        p: &Pooler,
        ctx: &Context<'_>,
    ) -> (PoolerLine, Option<String>) {
        let dir = self.layout.pooler_dir(name);
        let instances = p.spec.instances.unwrap_or(1).max(0);
        let mut line = PoolerLine {
            name: name.to_owned(),
            type_: crate::pooler::service_suffix(p.spec.type_).to_owned(),
            instances,
            ..Default::default()
        };
        let result = self.converge(name, p, &dir, ctx).await;
        let said = match &result {
            Ok((port, ready, paused)) => {
                line.port = *port;
                line.ready = *ready;
                line.phase = if *paused { "paused" } else { "active" }.into();
                self.problems
                    .remove(name)
                    .map(|_| format!("pooler {name}: running again"))
            }
            Err(why) => {
                line.phase = "failed".into();
                line.reason = Some(why.clone());
                (self.problems.insert(name.to_owned(), why.clone()).as_ref() != Some(why))
                    .then(|| format!("pooler {name}: {why}"))
            }
        };
        let mut doc = p.clone();
        doc.status = Some(PoolerStatus {
            instances: line.ready,
            phase: Some(line.phase.clone()),
            phase_reason: line.reason.clone(),
            ..Default::default()
        });
        // Not over a Pooler changed or deleted meanwhile (the next pass sees it).
        super::objects::write_status(&self.layout.pooler(name), &doc);
        (line, said)
    }

    /// Brings one pooler's processes to its spec: (port, processes running, paused).
    async fn converge(
        &mut self,
        name: &str,
        p: &Pooler,
        dir: &Path,
        ctx: &Context<'_>,
    ) -> Result<(u16, i32, bool), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ports_file = dir.join("ports.json");
        let mut ports: PoolerPorts = read(&ports_file).unwrap_or_default();
        if ports.port == 0 {
            ports.port = cnpg_instance::ports::free_port().map_err(|e| e.to_string())?;
        }
        let target = match p.spec.type_ {
            PoolerType::Rw => ctx.services.0,
            PoolerType::Ro => ctx.services.1,
            PoolerType::R => ctx.services.2,
        };
        let config = crate::pooler::config(p, ("127.0.0.1", target), ctx.user_secrets)
            .map_err(|e| e.to_string())?;
        write_json(&dir.join("config.json"), &config)?;
        let mut ready = 0;
        for i in 1..=p.spec.instances.unwrap_or(1).max(0) {
            let proc_name = format!("{name}-{i}");
            if !ports.http.contains_key(&proc_name) {
                ports.http.insert(
                    proc_name.clone(),
                    cnpg_instance::ports::free_port().map_err(|e| e.to_string())?,
                );
            }
            write_json(&ports_file, &ports)?;
            let proc_dir = dir.join(&proc_name);
            if let Some(how) = self.children.get_mut(&proc_name).and_then(Proc::ended) {
                self.children.remove(&proc_name);
                self.ended.insert(
                    proc_name.clone(),
                    format!("{proc_name} ended ({how}): {}", last_words(&proc_dir)),
                );
            }
            if !self.children.contains_key(&proc_name) {
                if let Some(pid) = adoptable(&proc_dir) {
                    self.children.insert(proc_name.clone(), Proc::Adopted(pid));
                } else if self
                    .started
                    .get(&proc_name)
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
                {
                    let child = spawn(ctx, dir, &proc_name, ports.port, ports.http[&proc_name])?;
                    self.children.insert(proc_name.clone(), Proc::Child(child));
                    self.started
                        .insert(proc_name.clone(), std::time::Instant::now());
                }
            }
            // A manager that keeps ending (PgBouncer missing, a port taken) is the reason.
            let recent = self
                .started
                .get(&proc_name)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
            match self.ended.get(&proc_name) {
                Some(why) if recent || !self.children.contains_key(&proc_name) => {
                    return Err(why.clone());
                }
                _ => {
                    self.ended.remove(&proc_name);
                    ready += 1;
                }
            }
        }
        Ok((ports.port, ready, config.paused))
    }

    /// The pids of live pooler managers whose directory is under `dir`.
    fn processes_in(&self, dir: &Path) -> Vec<i32> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| adoptable(&e.path()))
            .collect()
    }

    async fn stop(&mut self, name: &str) {
        if let Some(p) = self.children.remove(name) {
            match p {
                Proc::Child(mut c) => {
                    if let Some(pid) = c.id() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    if tokio::time::timeout(Duration::from_secs(10), c.wait())
                        .await
                        .is_err()
                    {
                        let _ = c.kill().await;
                    }
                }
                Proc::Adopted(pid) => signal_and_wait(pid).await,
            }
        }
    }

    /// Stops every pooler process (the cluster goes down).
    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for n in names {
            self.stop(&n).await;
        }
    }

    /// Pauses every `rw` pooler before a switchover: each `PAUSE` returns once its
    /// running transactions end (bounded by `within`). What each said.
    pub async fn hold(&mut self, token: &str) -> Vec<String> {
        let mut held = Vec::new();
        for (name, p) in self.applied() {
            if p.spec.type_ != PoolerType::Rw {
                continue;
            }
            let ports: PoolerPorts =
                read(&self.layout.pooler_dir(&name).join("ports.json")).unwrap_or_default();
            // The processes that run (ports of processes scaled away are kept).
            held.extend(
                ports
                    .http
                    .into_iter()
                    .filter(|(proc_name, _)| self.children.contains_key(proc_name))
                    .map(|(name, port)| crate::pooler::Manager {
                        name,
                        host: "127.0.0.1".into(),
                        port,
                    }),
            );
        }
        let said = crate::pooler::hold(&held, token).await;
        self.held = held;
        said
    }

    /// Whether poolers are held paused.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Resumes what [`Poolers::hold`] paused.
    pub async fn release(&mut self, token: &str) {
        let held = std::mem::take(&mut self.held);
        crate::pooler::release(&held, token).await;
    }
}

/// The last line of a pooler manager's log (why it ended).
fn last_words(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("manager.log")).unwrap_or_default();
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no log")
        .trim()
        .to_owned()
}

/// A live pooler manager whose pid file is in `dir` (left by an earlier operator).
fn adoptable(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("manager.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // The pid must still be that manager: its command line names this directory.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&cmdline);
    (text.contains("pgbouncer") && text.contains(&*dir.to_string_lossy())).then_some(pid)
}

async fn signal_and_wait(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = std::time::Instant::now();
    while nix::sys::signal::kill(pid, None).is_ok() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

fn spawn(
    ctx: &Context<'_>,
    dir: &Path,
    proc_name: &str,
    port: u16,
    http: u16,
) -> Result<Child, String> {
    let proc_dir: PathBuf = dir.join(proc_name);
    std::fs::create_dir_all(&proc_dir).map_err(|e| format!("{}: {e}", proc_dir.display()))?;
    let log_path = proc_dir.join("manager.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let secrets = ctx.secrets;
    let mut cmd = Command::new(ctx.instance_bin);
    cmd.arg("pgbouncer")
        .arg("--config")
        .arg(dir.join("config.json"))
        .arg("--dir")
        .arg(&proc_dir)
        .arg("--certificates")
        .arg(secrets)
        .arg("--port")
        .arg(port.to_string())
        .arg("--http-port")
        .arg(http.to_string())
        .arg("--token-file")
        .arg(secrets.join("status-token"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .env("RUST_LOG", "info")
        .process_group(0);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", ctx.instance_bin.display()))
}
