//! `kubectl-cnpg local up|apply|down|destroy` — running a cluster on this machine — and
//! the commands that only a local cluster has: `psql`, `pgbench` and `logs` reach its
//! processes directly.

use super::access::PluginError;
use super::args::LocalCommand;
use super::on_local::{LocalAccess, state_dir};
use crate::local::{Layout, LocalOperator, LocalOptions, load_manifest};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
        } => said(
            crate::local::apply::apply_file(&state_dir(sd), &file),
            &file,
            out,
            err,
        ),
        LocalCommand::Delete {
            file,
            state_dir: sd,
        } => said(
            crate::local::apply::delete_file(&state_dir(sd), &file),
            &file,
            out,
            err,
        ),
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
    let mut start = Instant::now();
    let mut shown = String::new();
    loop {
        // A recovery from backups shows its progress, and takes as long as it progresses.
        if let Some(p) = layout.recovery_progress() {
            let line = p.line();
            if line != shown {
                writeln!(out, "{line}")?;
                shown = line;
                start = Instant::now();
            }
            if p.phase == "failed" {
                writeln!(
                    err,
                    "error: the cluster could not be recovered; nothing was started from it. \
                     Fix spec.bootstrap.recovery and run `kubectl-cnpg local destroy {}` then \
                     `local up` again (the operator keeps running until then; its log: {})",
                    layout
                        .root
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default(),
                    layout.log().display()
                )?;
                return Ok(1);
            }
        }
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
    // Only a pid file its operator still holds locked names our operator: a stale one
    // may name any process by now.
    let Some(pid) = layout.running_operator() else {
        if layout.pid().exists() {
            let _ = std::fs::remove_file(layout.pid());
            writeln!(out, "not running (stale pid file removed)")?;
        } else {
            writeln!(out, "{} is not running", layout.root.display())?;
        }
        return Ok(0);
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
        writeln!(out, "not running")?;
        return Ok(0);
    }
    let start = Instant::now();
    while layout.running_operator().is_some() {
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

/// `psql`/`pgbench CLUSTER [-- ARGS]`: the program as the application user through `-rw`
/// (or `-ro` with `replica`); returns its exit code.
pub(crate) fn client(
    program: &str,
    access: &LocalAccess,
    replica: bool,
    args: &[String],
) -> Result<i32, PluginError> {
    client_in(program, access, replica, "app", args)
}

/// [`client`] in database `db`.
pub(crate) fn client_in(
    program: &str,
    access: &LocalAccess,
    replica: bool,
    db: &str,
    args: &[String],
) -> Result<i32, PluginError> {
    let s = access.read_status()?;
    let port = if replica { s.ports.ro } else { s.ports.rw };
    let secrets = access.layout().secrets();
    let pw = std::fs::read_to_string(secrets.join("app-password")).unwrap_or_default();
    let status = std::process::Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg(db)
        .env("PGPASSWORD", pw.trim())
        // As every client should: TLS, the server's certificate and name verified.
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", secrets.join("ca.crt"))
        .status()
        .map_err(|e| {
            PluginError::Usage(format!(
                "cannot run {program}: {e} (install the PostgreSQL client: apt-get install postgresql-client)"
            ))
        })?;
    Ok(status.code().unwrap_or(1))
}

/// `logs CLUSTER [--tail N]`: the last lines of every instance's manager and PostgreSQL log.
pub(crate) fn logs(
    access: &LocalAccess,
    tail: usize,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let s = access.read_status()?;
    for i in &s.instances {
        for file in ["manager.log", "postgres.log"] {
            let path = access.layout().instance(&i.name).join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            writeln!(out, "==> {} <==", path.display())?;
            for l in &lines[lines.len().saturating_sub(tail)..] {
                writeln!(out, "{l}")?;
            }
        }
    }
    Ok(())
}

/// Prints what `apply` or `delete` did, a line per document, or why it did nothing.
fn said(
    done: Result<Vec<String>, crate::local::LocalError>,
    file: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    match done {
        Ok(done) => {
            for line in done {
                writeln!(out, "{line}")?;
            }
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "error: {}: {e}", file.display())?;
            Ok(1)
        }
    }
}
