//! The plugin on a local cluster: [`LocalAccess`] reads the files the local operator writes
//! ([`crate::local::Layout`]) and leaves it requests — annotations in the manifest it
//! watches, request files for a switchover, an instance restart or destroy.

use super::access::{ClusterAccess, Facts, PluginError, StatusReport};
use crate::local::{Layout, StatusFile};
use async_trait::async_trait;
use std::io::Write;
use std::path::PathBuf;

/// Where local clusters keep their state: `--state-dir`, else `/var/lib/cnpg-rs` as root,
/// else `~/.local/state/cnpg-rs`.
pub fn state_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        if nix::unistd::geteuid().is_root() {
            PathBuf::from("/var/lib/cnpg-rs")
        } else {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".local/state/cnpg-rs")
        }
    })
}

/// A local cluster.
pub struct LocalAccess {
    name: String,
    layout: Layout,
}

impl LocalAccess {
    /// The local cluster `name`, when one exists under the state directory.
    pub fn find(state_dir_given: Option<PathBuf>, name: &str) -> Option<Self> {
        let layout = Layout::new(&state_dir(state_dir_given), name);
        layout.manifest().exists().then(|| LocalAccess {
            name: name.to_owned(),
            layout,
        })
    }

    /// Where its files are.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What the operator last wrote; an error saying how to start the cluster when it has
    /// written nothing yet.
    pub fn read_status(&self) -> Result<StatusFile, PluginError> {
        std::fs::read_to_string(self.layout.status())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| {
                PluginError::Usage(format!(
                    "no local cluster {} (no {}); start one with kubectl-cnpg local up -f FILE",
                    self.name,
                    self.layout.status().display()
                ))
            })
    }

    fn manifest(&self) -> Result<serde_json::Value, PluginError> {
        let path = self.layout.manifest();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            PluginError::Usage(format!("no local cluster there: {}: {e}", path.display()))
        })?;
        crate::manifests::parse_documents(&text)
            .ok()
            .and_then(|d| d.into_iter().next())
            .ok_or_else(|| PluginError::Usage(format!("{} is not a manifest", path.display())))
    }

    /// Leaves a request for the operator, atomically: it polls the file, and must never
    /// read it half written (an empty name was a request silently dropped).
    fn request(&self, path: PathBuf, instance: &str) -> Result<(), PluginError> {
        cnpg_instance::view::write_atomically(&path, instance)
            .map_err(|e| PluginError::Usage(format!("{}: {e}", path.display())))
    }
}

#[async_trait(?Send)]
impl ClusterAccess for LocalAccess {
    async fn create_backup(
        &self,
        backup: &cnpg_core::api::backup::Backup,
    ) -> Result<(), PluginError> {
        let name = backup.metadata.name.clone().unwrap_or_default();
        let dir = self.layout.backups();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.json"));
        if path.exists() {
            return Err(PluginError::Usage(format!(
                "backup {name} already exists ({}): give another --backup-name",
                path.display()
            )));
        }
        let text =
            serde_json::to_string_pretty(backup).map_err(|e| PluginError::Usage(e.to_string()))?;
        cnpg_instance::view::write_atomically(&path, &text)?;
        Ok(())
    }

    async fn read_backup(
        &self,
        name: &str,
    ) -> Result<Option<cnpg_core::api::backup::Backup>, PluginError> {
        let path = self.layout.backups().join(format!("{name}.json"));
        Ok(std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn facts(&self) -> Result<Facts, PluginError> {
        let doc = self.manifest()?;
        let annotations = doc["metadata"]["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        // Before the operator's first status, the cluster has no instances yet.
        let status = self.read_status().unwrap_or_default();
        Ok(Facts {
            name: self.name.clone(),
            instances: status.instances.iter().map(|i| i.name.clone()).collect(),
            current_primary: status.state.current_primary,
            target_primary: status.state.target_primary,
            annotations,
        })
    }

    async fn annotate(&self, key: &str, value: Option<String>) -> Result<(), PluginError> {
        let mut doc = self.manifest()?;
        if !doc["metadata"]["annotations"].is_object() {
            doc["metadata"]["annotations"] = serde_json::json!({});
        }
        let ann = doc["metadata"]["annotations"]
            .as_object_mut()
            .expect("just made an object");
        match value {
            Some(v) => ann.insert(key.to_owned(), serde_json::Value::String(v)),
            None => ann.remove(key),
        };
        let yaml = serde_saphyr::to_string(&doc).map_err(|e| PluginError::Usage(e.to_string()))?;
        cnpg_instance::view::write_atomically(&self.layout.manifest(), &yaml)?;
        Ok(())
    }

    async fn switchover(&self, instance: &str) -> Result<(), PluginError> {
        self.request(self.layout.promote_request(), instance)
    }

    async fn restart_instance(&self, instance: &str, primary: bool) -> Result<String, PluginError> {
        self.request(self.layout.restart_request(), instance)?;
        Ok(if primary {
            format!("restarting the primary {instance} in place")
        } else {
            format!("restarting {instance}")
        })
    }

    async fn destroy_instance(&self, instance: &str) -> Result<(), PluginError> {
        self.request(self.layout.destroy_request(), instance)
    }

    async fn status(&self) -> Result<StatusReport, PluginError> {
        let s = self.read_status()?;
        let ports = &s.ports;
        Ok(StatusReport {
            name: self.name.clone(),
            image: None,
            current_primary: s.state.current_primary.clone(),
            target_primary: s.state.target_primary.clone(),
            why_primary: s.last_election.clone(),
            phase: s.phase.clone(),
            phase_reason: s.phase_reason.clone(),
            instances: s.instances.len(),
            ready: s
                .instances
                .iter()
                .filter(|i| i.status.error.is_none())
                .count(),
            services: Some(format!(
                "rw 127.0.0.1:{}  ro 127.0.0.1:{}  r 127.0.0.1:{}",
                ports.rw, ports.ro, ports.r
            )),
            metrics: ports
                .instances
                .iter()
                .map(|(name, (_, status))| format!("{name} http://127.0.0.1:{status}/metrics"))
                .collect(),
            certificates: Default::default(),
            reports: s.instances.iter().map(|i| i.status.clone()).collect(),
            pods: Vec::new(),
            events: s.events.iter().rev().take(8).rev().cloned().collect(),
            events_source: Some(self.layout.status().display().to_string()),
            backups: s.backups.clone(),
            recovery: s.recovery.clone(),
            poolers: s
                .poolers
                .iter()
                .map(|p| {
                    format!(
                        "{:<16} {:<4} 127.0.0.1:{:<6} {}/{} ready  {}{}",
                        p.name,
                        p.type_,
                        p.port,
                        p.ready,
                        p.instances,
                        p.phase,
                        p.reason
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
        })
    }

    /// A folder (`output`, default `./report-<cluster>-<ms>`) with the manifest, the
    /// status files and every log; the passwords under `secrets/` are left out.
    async fn report(
        &self,
        output: Option<PathBuf>,
        out: &mut dyn Write,
    ) -> Result<(), PluginError> {
        let s = self.read_status()?;
        let dir = output.unwrap_or_else(|| {
            let ms = jiff::Timestamp::now().as_millisecond();
            PathBuf::from(format!("report-{}-{ms}", self.name))
        });
        std::fs::create_dir_all(&dir)?;
        let root = &self.layout.root;
        for f in [
            "cluster.yaml",
            "status.json",
            "view.json",
            "ports.json",
            "current-primary.json",
            "operator.log",
        ] {
            let _ = std::fs::copy(root.join(f), dir.join(f));
        }
        for i in &s.instances {
            for f in ["manager.log", "postgres.log"] {
                let _ = std::fs::copy(
                    self.layout.instance(&i.name).join(f),
                    dir.join(format!("{}-{f}", i.name)),
                );
            }
        }
        writeln!(out, "report written to {} (no secrets)", dir.display())?;
        Ok(())
    }
}

/// `certificate NAME --cnpg-cluster C --cnpg-user U` on a local cluster: a client
/// certificate for `user` signed by the cluster's CA, written to `<cluster>/certificates/
/// NAME/` (`tls.crt`, `tls.key` private to whoever runs this, `ca.crt` to verify the
/// server with). It logs in where a `hostssl … cert` line of `spec.postgresql.pg_hba`
/// admits the user.
pub fn certificate(
    access: &LocalAccess,
    name: &str,
    user: &str,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    use cnpg_instance::tls;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(PluginError::Usage(format!(
            "{name:?} is not a usable certificate name: use letters, digits, '-' or '_'"
        )));
    }
    let files = tls::Files {
        dir: access.layout.secrets(),
    };
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).map_err(|e| {
            PluginError::Usage(format!(
                "{}: {e} (the cluster's CA is made when it first starts: kubectl-cnpg local up)",
                p.display()
            ))
        })
    };
    let ca = read(files.server_ca())?;
    let ca_key = read(files.ca_key())?;
    let dir = access.layout.root.join("certificates").join(name);
    if dir.exists() {
        return Err(PluginError::Usage(format!(
            "{} exists already; remove it or choose another name",
            dir.display()
        )));
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let issued = tls::issue_leaf(&ca, &ca_key, user, vec![], true, now)
        .map_err(|e| PluginError::Usage(e.to_string()))?;
    std::fs::create_dir_all(&dir)?;
    let write = |file: &str, text: &str| {
        tls::write_private(&dir.join(file), text, None)
            .map_err(|e| PluginError::Usage(e.to_string()))
    };
    write("tls.key", &issued.key)?;
    write("tls.crt", &issued.cert)?;
    write("ca.crt", &ca)?;
    writeln!(
        out,
        "certificate {name} created in {} (client certificate for {user}, signed by {}'s CA, valid until {})",
        dir.display(),
        access.name,
        issued.expires
    )?;
    writeln!(
        out,
        "connect with: sslmode=verify-full sslrootcert={d}/ca.crt sslcert={d}/tls.crt sslkey={d}/tls.key user={user}",
        d = dir.display()
    )?;
    Ok(())
}
