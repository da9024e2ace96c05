//! The `kubectl-cnpg` commands that drive local clusters.

use crate::cli::LocalCommand;
use crate::local::{Layout, LocalOperator, LocalOptions, StatusFile, load_manifest};
use cnpg_core::status::InstanceStatus;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SYNC_STATE: &str = "Sync State";
const STATUS: &str = "Status";

fn state_dir(given: Option<PathBuf>) -> PathBuf {
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

/// Whether a local cluster of this name exists (else the plugin talks to Kubernetes).
pub(crate) fn exists(cluster: &str, given: Option<PathBuf>) -> bool {
    Layout::new(&state_dir(given), cluster).manifest().exists()
}

fn instance_bin(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("cnpg-instance")))
                .filter(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from("cnpg-instance"))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

pub(crate) fn local(
    what: LocalCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    match what {
        LocalCommand::Up {
            file,
            state_dir: sd,
            detach,
            instance_bin: ib,
            pg_bin,
            detached_child,
        } => {
            let opts = LocalOptions {
                state_dir: state_dir(sd),
                instance_bin: instance_bin(ib),
                pg_bin: pg_bin.clone(),
            };
            // Check what can be checked before anything starts.
            let cluster = match load_manifest(&file) {
                Ok(c) => c,
                Err(e) => {
                    writeln!(err, "error: {}: {e}", file.display())?;
                    return Ok(1);
                }
            };
            if let Err(e) = cnpg_instance::pg_bin::Search::standard(pg_bin).find() {
                writeln!(err, "error: {e}")?;
                return Ok(1);
            }
            if std::process::Command::new(&opts.instance_bin)
                .arg("--version")
                .output()
                .is_err()
            {
                writeln!(
                    err,
                    "error: cannot run {}; build it (cargo build --release -p cnpg-instance) or pass --instance-bin",
                    opts.instance_bin.display()
                )?;
                return Ok(1);
            }
            let layout = Layout::new(
                &opts.state_dir,
                cluster.metadata.name.as_deref().unwrap_or_default(),
            );
            if detach {
                return detach_up(&file, &opts, &layout, out, err);
            }
            let rt = runtime()?;
            rt.block_on(async move {
                let (op, listeners) = match LocalOperator::prepare(&file, opts).await {
                    Ok(x) => x,
                    Err(e) => {
                        writeln!(err, "error: {e}")?;
                        return Ok(1);
                    }
                };
                if !detached_child {
                    let _ = tracing_subscriber::fmt()
                        .with_env_filter(
                            tracing_subscriber::EnvFilter::try_from_default_env()
                                .unwrap_or_else(|_| "info".into()),
                        )
                        .with_writer(std::io::stderr)
                        .try_init();
                } else {
                    let _ = tracing_subscriber::fmt()
                        .with_ansi(false)
                        .with_writer(std::io::stderr)
                        .try_init();
                }
                writeln!(
                    out,
                    "starting cluster {} (state in {})",
                    op.cluster(),
                    layout.root.display()
                )?;
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let ready_file = layout.root.join("ready");
                let _ = std::fs::remove_file(&ready_file);
                let cluster_name = op.cluster().to_owned();
                tokio::spawn(async move {
                    if let Ok(strings) = ready_rx.await {
                        println!("cluster {cluster_name} is healthy; connect with:\n{strings}");
                        let _ = std::fs::write(&ready_file, strings);
                    }
                });
                tokio::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    if let (Ok(mut t), Ok(mut i)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) {
                        tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
                    }
                    let _ = stop_tx.send(true);
                });
                match op.run(listeners, stop_rx, ready_tx).await {
                    Ok(()) => {
                        writeln!(
                            out,
                            "stopped; the data is kept (kubectl-cnpg local up resumes it)"
                        )?;
                        Ok(0)
                    }
                    Err(e) => {
                        writeln!(err, "error: {e}")?;
                        Ok(1)
                    }
                }
            })
        }
        LocalCommand::Apply {
            file,
            state_dir: sd,
        } => {
            let cluster = match load_manifest(&file) {
                Ok(c) => c,
                Err(e) => {
                    writeln!(err, "error: {}: {e}", file.display())?;
                    return Ok(1);
                }
            };
            let name = cluster.metadata.name.clone().unwrap_or_default();
            let layout = Layout::new(&state_dir(sd), &name);
            if !layout.root.exists() {
                writeln!(
                    err,
                    "error: no local cluster {name} in {}; start it with local up",
                    layout.root.display()
                )?;
                return Ok(1);
            }
            let text = std::fs::read_to_string(&file)?;
            cnpg_instance::view::write_atomically(&layout.manifest(), &text)?;
            writeln!(out, "applied {} to {name}", file.display())?;
            Ok(0)
        }
        LocalCommand::Down {
            cluster,
            state_dir: sd,
        } => down(&Layout::new(&state_dir(sd), &cluster), out, err),
        LocalCommand::Destroy {
            cluster,
            state_dir: sd,
        } => {
            let layout = Layout::new(&state_dir(sd), &cluster);
            if !layout.root.exists() {
                writeln!(
                    err,
                    "error: no local cluster {cluster} in {}",
                    layout.root.display()
                )?;
                return Ok(1);
            }
            if down(&layout, out, err)? != 0 {
                return Ok(1);
            }
            std::fs::remove_dir_all(&layout.root)?;
            writeln!(out, "destroyed {cluster} and its data")?;
            Ok(0)
        }
    }
}

fn detach_up(
    file: &Path,
    opts: &LocalOptions,
    layout: &Layout,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    std::fs::create_dir_all(&layout.root)?;
    let _ = std::fs::remove_file(layout.root.join("ready"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log())?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["local", "up", "--detached-child", "-f"])
        .arg(file)
        .arg("--state-dir")
        .arg(&opts.state_dir)
        .arg("--instance-bin")
        .arg(&opts.instance_bin);
    if let Some(b) = &opts.pg_bin {
        cmd.arg("--pg-bin").arg(b);
    }
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let start = Instant::now();
    loop {
        if let Ok(strings) = std::fs::read_to_string(layout.root.join("ready")) {
            writeln!(
                out,
                "cluster is healthy (operator pid {}, log {}); connect with:\n{strings}",
                child.id(),
                layout.log().display()
            )?;
            return Ok(0);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(layout.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            writeln!(
                err,
                "error: the operator exited ({status}):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )?;
            return Ok(1);
        }
        if start.elapsed() > Duration::from_secs(300) {
            writeln!(
                err,
                "error: the cluster is not healthy after 5 minutes; it keeps trying in the background (see {})",
                layout.log().display()
            )?;
            return Ok(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn down(layout: &Layout, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<i32> {
    let Some(pid) = std::fs::read_to_string(layout.pid())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        writeln!(out, "{} is not running", layout.root.display())?;
        return Ok(0);
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
        let _ = std::fs::remove_file(layout.pid());
        writeln!(out, "not running (stale pid file removed)")?;
        return Ok(0);
    }
    let start = Instant::now();
    while nix::sys::signal::kill(pid, None).is_ok() && layout.pid().exists() {
        if start.elapsed() > Duration::from_secs(120) {
            writeln!(
                err,
                "error: the operator (pid {pid}) did not stop within 2 minutes"
            )?;
            return Ok(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    writeln!(out, "stopped; the data is kept")?;
    Ok(0)
}

fn read_status(
    cluster: &str,
    sd: Option<PathBuf>,
    err: &mut dyn Write,
) -> std::io::Result<Option<(Layout, StatusFile)>> {
    let layout = Layout::new(&state_dir(sd), cluster);
    match std::fs::read_to_string(layout.status())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        Some(s) => Ok(Some((layout, s))),
        None => {
            writeln!(
                err,
                "error: no local cluster {cluster} (no {}); start one with kubectl-cnpg local up -f FILE",
                layout.status().display()
            )?;
            Ok(None)
        }
    }
}

/// The `Streaming Replication status` and `Instances status` sections (upstream's
/// headings and role strings), from the primary's report and every instance's.
pub(crate) fn write_instances(
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

pub(crate) fn status(
    cluster: &str,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let Some((layout, s)) = read_status(cluster, sd, err)? else {
        return Ok(1);
    };
    let primary = s
        .state
        .current_primary
        .clone()
        .unwrap_or_else(|| "-".into());
    let p = s.instances.iter().find(|i| i.name == primary);
    let ready = s
        .instances
        .iter()
        .filter(|i| i.status.error.is_none())
        .count();
    writeln!(out, "Cluster Summary")?;
    writeln!(out, "Name:              {cluster}")?;
    writeln!(
        out,
        "System ID:         {}",
        p.map(|i| i.status.system_id.as_str()).unwrap_or("-")
    )?;
    writeln!(out, "Primary instance:  {primary}")?;
    if let Some(why) = &s.last_election {
        writeln!(out, "Why this primary:  {why}")?;
    }
    writeln!(
        out,
        "Status:            {}{}",
        s.phase,
        if s.phase_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.phase_reason)
        }
    )?;
    writeln!(out, "Instances:         {}", s.instances.len())?;
    writeln!(out, "Ready instances:   {ready}")?;
    if let Some(p) = p {
        writeln!(
            out,
            "Current Write LSN: {} (Timeline: {})",
            p.status.current_lsn, p.status.timeline
        )?;
        writeln!(
            out,
            "Sync standbys:     {}",
            p.status
                .synchronous_standby_names
                .clone()
                .unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "Services:          rw 127.0.0.1:{}  ro 127.0.0.1:{}  r 127.0.0.1:{}",
        s.ports.rw, s.ports.ro, s.ports.r
    )?;
    let statuses: Vec<InstanceStatus> = s.instances.iter().map(|i| i.status.clone()).collect();
    write_instances(out, p.map(|p| &p.status), &statuses)?;
    if !s.events.is_empty() {
        writeln!(out, "\nRecent events ({})", layout.status().display())?;
        for e in s.events.iter().rev().take(8).rev() {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(0)
}

pub(crate) fn promote(
    cluster: &str,
    instance: &str,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let Some((layout, s)) = read_status(cluster, sd, err)? else {
        return Ok(1);
    };
    if !s.instances.iter().any(|i| i.name == instance) {
        let names: Vec<&str> = s.instances.iter().map(|i| i.name.as_str()).collect();
        writeln!(
            err,
            "error: {cluster} has no instance {instance} (it has {})",
            names.join(", ")
        )?;
        return Ok(1);
    }
    std::fs::write(layout.promote_request(), instance)?;
    writeln!(out, "switchover to {instance} requested")?;
    Ok(0)
}

/// Sets (or removes, with `None`) an annotation of a local cluster's manifest.
fn annotate(layout: &Layout, key: &str, value: Option<String>) -> Result<(), String> {
    let text = std::fs::read_to_string(layout.manifest()).map_err(|e| {
        format!(
            "no local cluster there: {}: {e}",
            layout.manifest().display()
        )
    })?;
    let mut doc = crate::manifests::parse_documents(&text)
        .ok()
        .and_then(|d| d.into_iter().next())
        .ok_or_else(|| format!("{} is not a manifest", layout.manifest().display()))?;
    if !doc["metadata"]["annotations"].is_object() {
        doc["metadata"]["annotations"] = serde_json::json!({});
    }
    let ann = doc["metadata"]["annotations"]
        .as_object_mut()
        .expect("just made an object");
    match value {
        Some(v) => {
            ann.insert(key.to_owned(), serde_json::Value::String(v));
        }
        None => {
            ann.remove(key);
        }
    }
    let yaml = serde_saphyr::to_string(&doc).map_err(|e| e.to_string())?;
    cnpg_instance::view::write_atomically(&layout.manifest(), &yaml).map_err(|e| e.to_string())
}

pub(crate) fn hibernate(
    on: bool,
    cluster: &str,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let layout = Layout::new(&state_dir(sd), cluster);
    let value = if on { "on" } else { "off" };
    match annotate(&layout, "cnpg.io/hibernation", Some(value.to_owned())) {
        Ok(()) => {
            writeln!(out, "hibernation {value} for {cluster}")?;
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(1)
        }
    }
}

pub(crate) fn destroy_instance(
    cluster: &str,
    instance: &str,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let Some((layout, s)) = read_status(cluster, sd, err)? else {
        return Ok(1);
    };
    if !s.instances.iter().any(|i| i.name == instance) {
        writeln!(err, "error: {cluster} has no instance {instance}")?;
        return Ok(1);
    }
    if s.state.current_primary.as_deref() == Some(instance) {
        writeln!(
            err,
            "error: {instance} is the primary; switch over first (kubectl-cnpg promote {cluster} ANOTHER-INSTANCE)"
        )?;
        return Ok(1);
    }
    std::fs::write(layout.root.join("requests").join("destroy"), instance)?;
    writeln!(
        out,
        "destroying {instance}; the operator clones a new one from the primary"
    )?;
    Ok(0)
}

pub(crate) fn client(
    program: &str,
    cluster: &str,
    replica: bool,
    sd: Option<PathBuf>,
    args: &[String],
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let Some((layout, s)) = read_status(cluster, sd, err)? else {
        return Ok(1);
    };
    let port = if replica { s.ports.ro } else { s.ports.rw };
    let pw = std::fs::read_to_string(layout.secrets().join("app-password")).unwrap_or_default();
    let status = std::process::Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", pw.trim())
        .status();
    match status {
        Ok(st) => Ok(st.code().unwrap_or(1)),
        Err(e) => {
            writeln!(
                err,
                "error: cannot run {program}: {e} (install the PostgreSQL client: apt-get install postgresql-client)"
            )?;
            Ok(1)
        }
    }
}

pub(crate) fn logs(
    cluster: &str,
    tail: usize,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let Some((layout, s)) = read_status(cluster, sd, err)? else {
        return Ok(1);
    };
    for i in &s.instances {
        for file in ["manager.log", "postgres.log"] {
            let path = layout.instance(&i.name).join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            writeln!(out, "==> {} <==", path.display())?;
            for l in &lines[lines.len().saturating_sub(tail)..] {
                writeln!(out, "{l}")?;
            }
        }
    }
    Ok(0)
}

fn stamp() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    ms.to_string()
}

pub(crate) fn restart(
    cluster: &str,
    instance: Option<&str>,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let Some((layout, s)) = read_status(cluster, sd, err)? else {
        return Ok(1);
    };
    match instance {
        Some(i) if !s.instances.iter().any(|x| x.name == i) => {
            writeln!(err, "error: {cluster} has no instance {i}")?;
            Ok(1)
        }
        Some(i) => {
            std::fs::write(layout.root.join("requests").join("restart"), i)?;
            writeln!(out, "restarting {i}")?;
            Ok(0)
        }
        None => match annotate(&layout, "kubectl.kubernetes.io/restartedAt", Some(stamp())) {
            Ok(()) => {
                writeln!(
                    out,
                    "rolling restart of {cluster} requested: replicas first, the primary last"
                )?;
                Ok(0)
            }
            Err(e) => {
                writeln!(err, "error: {e}")?;
                Ok(1)
            }
        },
    }
}

pub(crate) fn reload(
    cluster: &str,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let layout = Layout::new(&state_dir(sd), cluster);
    match annotate(&layout, "cnpg.io/reloadedAt", Some(stamp())) {
        Ok(()) => {
            writeln!(out, "reload of {cluster} requested")?;
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(1)
        }
    }
}

pub(crate) fn report(
    cluster: &str,
    output: Option<PathBuf>,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let Some((layout, s)) = read_status(cluster, sd, err)? else {
        return Ok(1);
    };
    let dir = output.unwrap_or_else(|| PathBuf::from(format!("report-{cluster}-{}", stamp())));
    std::fs::create_dir_all(&dir)?;
    for f in [
        "cluster.yaml",
        "status.json",
        "view.json",
        "ports.json",
        "current-primary.json",
        "operator.log",
    ] {
        let _ = std::fs::copy(layout.root.join(f), dir.join(f));
    }
    for i in &s.instances {
        for f in ["manager.log", "postgres.log"] {
            let _ = std::fs::copy(
                layout.instance(&i.name).join(f),
                dir.join(format!("{}-{f}", i.name)),
            );
        }
    }
    writeln!(out, "report written to {} (no secrets)", dir.display())?;
    Ok(0)
}

pub(crate) fn fencing(
    on: bool,
    cluster: &str,
    instance: &str,
    sd: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let layout = Layout::new(&state_dir(sd), cluster);
    let text = match std::fs::read_to_string(layout.manifest()) {
        Ok(t) => t,
        Err(e) => {
            writeln!(
                err,
                "error: no local cluster {cluster}: {}: {e}",
                layout.manifest().display()
            )?;
            return Ok(1);
        }
    };
    let mut doc: serde_json::Value = match crate::manifests::parse_documents(&text)
        .ok()
        .and_then(|d| d.into_iter().next())
    {
        Some(d) => d,
        None => {
            writeln!(
                err,
                "error: {} is not a manifest",
                layout.manifest().display()
            )?;
            return Ok(1);
        }
    };
    let ann = doc["metadata"]["annotations"]["cnpg.io/fencedInstances"]
        .as_str()
        .map(str::to_owned);
    let mut f = match cnpg_core::fencing::Fencing::parse(ann.as_deref()) {
        Ok(f) => f,
        Err(_) => cnpg_core::fencing::Fencing::None,
    };
    if on {
        f.fence(instance);
    } else if let Err(e) = f.unfence(instance) {
        writeln!(err, "error: {e}")?;
        return Ok(1);
    }
    if !doc["metadata"]["annotations"].is_object() {
        doc["metadata"]["annotations"] = serde_json::json!({});
    }
    match f.to_annotation() {
        Some(a) => {
            doc["metadata"]["annotations"]["cnpg.io/fencedInstances"] = serde_json::Value::String(a)
        }
        None => {
            if let Some(m) = doc["metadata"]["annotations"].as_object_mut() {
                m.remove("cnpg.io/fencedInstances");
            }
        }
    }
    let yaml = serde_saphyr::to_string(&doc).map_err(std::io::Error::other)?;
    cnpg_instance::view::write_atomically(&layout.manifest(), &yaml)?;
    writeln!(
        out,
        "fencing {} for {instance} in {cluster}",
        if on { "on" } else { "off" }
    )?;
    Ok(0)
}
