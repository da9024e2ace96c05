//! The `kubectl-cnpg` command line.
//!
//! Installed on the `PATH` as `kubectl-cnpg`, it also runs as `kubectl cnpg ...`, like
//! CloudNativePG's plugin. [`run`] takes its arguments and streams explicitly so that tests
//! drive the real command without spawning a process.
//!
//! One file per command group, each command written once:
//! * [`args`] — the subcommands and their flags;
//! * [`access`] — [`access::ClusterAccess`], the small interface between the commands and
//!   where the cluster runs ([`open`] finds the cluster: the local one of that name, else
//!   Kubernetes);
//! * [`on_local`] and [`on_kube`] — that interface for a local cluster and for a Cluster on
//!   Kubernetes (with the commands only Kubernetes has: `maintenance`, `certificate`);
//! * [`status`] — `status`, one rendering for both;
//! * [`control`] — `promote`, `fencing`, `hibernate`, `restart`, `reload`, `destroy`,
//!   `report`;
//! * [`local`] — `local up|apply|down|destroy`, and `psql`, `pgbench`, `logs`;
//! * [`fio`] — `fio`, deployed on Kubernetes, run in place locally;
//! * [`manifest`] — `validate`, `install crds`, `install generate`.

pub mod access;
pub mod args;
pub mod control;
pub mod fio;
pub mod local;
pub mod manifest;
pub mod on_kube;
pub mod on_local;
pub mod status;

use access::{ClusterAccess, PluginError};
use args::{Cli, Command, MaintenanceSwitch};
use clap::Parser;
use on_kube::{KubeAccess, Target};
use on_local::LocalAccess;
use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;

/// Runs the command line with explicit arguments and streams; returns the exit code.
pub fn run<I, T>(args: I, stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let text = e.render().to_string();
            let sink: &mut dyn Write = if e.use_stderr() { err } else { out };
            let _ = write!(sink, "{text}");
            return code;
        }
    };
    let target = Target {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
        namespace: cli.namespace.clone(),
    };
    let place = |state_dir: Option<PathBuf>| Where {
        kube: target.clone(),
        state_dir,
    };
    let result = match cli.command {
        Command::Install { what } => manifest::install(what, cli.namespace, out, err),
        Command::Validate { files } => manifest::validate(&files, stdin, out, err),
        Command::Version => writeln!(
            out,
            "Build: {{Version:{} API:{} Implementation:cnpg-rs}}",
            env!("CARGO_PKG_VERSION"),
            cnpg_core::api::API_VERSION
        )
        .map(|()| 0)
        .map_err(PluginError::from),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-cnpg", out);
            Ok(0)
        }
        Command::Local { what } => local::local(what, out, err).map_err(PluginError::from),
        Command::Psql {
            cluster,
            replica,
            state_dir,
            args,
        } => match local_unless_kube(&target, state_dir, &cluster) {
            Some(local) => local::client("psql", &local, replica, &args),
            None => {
                let mut argv = Vec::new();
                block_on(async {
                    let access = KubeAccess::connect(&target, &cluster).await?;
                    argv = on_kube::psql(&access, &target, replica, &args).await?;
                    Ok(())
                })
                .and_then(|_| on_kube::run_kubectl(&argv))
            }
        },
        Command::Pgbench {
            cluster,
            job_name,
            db_name,
            dry_run,
            state_dir,
            args,
        } => match local_unless_kube(&target, state_dir, &cluster) {
            Some(local) => local::client_in("pgbench", &local, false, &db_name, &args),
            None => block_on(async {
                let access = KubeAccess::connect(&target, &cluster).await?;
                on_kube::pgbench(
                    &access,
                    (job_name.as_deref(), &db_name),
                    &args,
                    dry_run,
                    out,
                )
                .await
            }),
        },
        Command::Logs {
            cluster,
            tail,
            follow,
            timestamps,
            output,
            state_dir,
        } => logs_of(
            &target,
            state_dir,
            &cluster,
            on_kube::LogOptions {
                tail: tail.filter(|n| *n >= 0),
                follow,
                timestamps,
            },
            output,
            out,
        ),
        Command::Maintenance {
            switch,
            cluster,
            reuse_pvc,
        } => block_on(async {
            let access = KubeAccess::connect(&target, &cluster).await?;
            on_kube::maintenance(&access, switch == MaintenanceSwitch::Set, reuse_pvc, out).await
        }),
        Command::Fio {
            name,
            instance,
            size,
            runtime,
            storage_class,
            pvc_size,
            dry_run,
            state_dir,
        } => block_on(async {
            if let Some(local) = local_unless_kube(&target, state_dir, &name) {
                return fio::local(&local, instance.as_deref(), &size, runtime, out);
            }
            let (client, ns) = on_kube::connect(&target).await?;
            fio::kubernetes(
                client,
                &ns,
                &name,
                (storage_class.as_deref(), &pvc_size),
                dry_run,
                out,
            )
            .await
        }),
        Command::Certificate {
            secret,
            cnpg_cluster,
            cnpg_user,
            state_dir,
        } => block_on(async {
            if let Some(local) = local_unless_kube(&target, state_dir, &cnpg_cluster) {
                return on_local::certificate(&local, &secret, &cnpg_user, out);
            }
            let access = KubeAccess::connect(&target, &cnpg_cluster).await?;
            on_kube::certificate(&access, &secret, &cnpg_user, out).await
        }),
        Command::Status { cluster, state_dir } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            status::status(access.as_ref(), out).await
        }),
        Command::Promote {
            cluster,
            instance,
            state_dir,
        } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            control::promote(access.as_ref(), &instance, out).await
        }),
        Command::Fencing {
            switch,
            cluster,
            instance,
            state_dir,
        } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            control::fencing(access.as_ref(), switch == "on", &instance, out).await
        }),
        Command::Hibernate {
            switch,
            cluster,
            state_dir,
        } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            control::hibernate(access.as_ref(), switch == "on", out).await
        }),
        Command::Restart {
            cluster,
            instance,
            state_dir,
        } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            control::restart(access.as_ref(), instance.as_deref(), out).await
        }),
        Command::Reload { cluster, state_dir } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            control::reload(access.as_ref(), out).await
        }),
        Command::Backup {
            cluster,
            backup_name,
            backup_target,
            method: _,
            immediate_checkpoint,
            wait,
            state_dir,
        } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            let target = backup_target.map(|t| {
                if t == "primary" {
                    cnpg_core::api::common::BackupTarget::Primary
                } else {
                    cnpg_core::api::common::BackupTarget::PreferStandby
                }
            });
            control::backup(
                access.as_ref(),
                backup_name,
                target,
                immediate_checkpoint,
                wait.map(std::time::Duration::from_secs),
                out,
            )
            .await
        }),
        Command::Destroy {
            cluster,
            instance,
            state_dir,
        } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            control::destroy(access.as_ref(), &instance, out).await
        }),
        Command::Report {
            cluster,
            output,
            state_dir,
        } => block_on(async {
            let access = open(&place(state_dir), &cluster).await?;
            control::report(access.as_ref(), output, out).await
        }),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`| head`): nothing more to say.
        Err(PluginError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 1,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            1
        }
    }
}

/// Runs a cluster command on a runtime of its own; success is exit code 0.
/// `logs [cluster] NAME`: on Kubernetes or locally, to `output` or `out`.
fn logs_of(
    target: &Target,
    state_dir: Option<PathBuf>,
    names: &[String],
    opts: on_kube::LogOptions,
    output: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<i32, PluginError> {
    let cluster = match names {
        [name] => name,
        [cluster, name] if cluster == "cluster" => name,
        [other, _] => {
            return Err(PluginError::Usage(format!(
                "logs {other}: this plugin has `logs cluster NAME` (or `logs NAME`); upstream's `logs pretty` reads JSON lines, which our instances do not write"
            )));
        }
        _ => return Err(PluginError::Usage("logs: name a cluster".into())),
    };
    let mut file = match &output {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| PluginError::Usage(format!("--output {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let sink: &mut dyn Write = match file.as_mut() {
        Some(f) => f,
        None => out,
    };
    match local_unless_kube(target, state_dir, cluster) {
        Some(local) => {
            if opts.follow || opts.timestamps {
                return Err(PluginError::Usage(
                    "--follow and --timestamps are for clusters on Kubernetes; a local cluster's logs are files: `tail -f` the paths this command prints".into(),
                ));
            }
            local::logs(&local, opts.tail.map_or(50, |n| n as usize), sink)?;
        }
        None => {
            block_on(async {
                let access = KubeAccess::connect(target, cluster).await?;
                on_kube::logs(&access, &opts, sink).await
            })?;
        }
    }
    if let (Some(f), Some(path)) = (file, output) {
        f.sync_all()?;
        writeln!(out, "Successfully written logs to \"{}\"", path.display())?;
    }
    Ok(0)
}

fn block_on(f: impl Future<Output = Result<(), PluginError>>) -> Result<i32, PluginError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
        .map(|()| 0)
}

/// Where a cluster command looks for its cluster.
#[derive(Debug, Clone, Default)]
pub struct Where {
    /// Kubernetes coordinates; any of them given means Kubernetes.
    pub kube: Target,
    /// Where local clusters keep their state (`--state-dir`).
    pub state_dir: Option<PathBuf>,
}

/// The cluster `name`: the local one when it exists and no Kubernetes flag was given, else
/// the Cluster on Kubernetes (as kubectl would find it).
pub async fn open(place: &Where, name: &str) -> Result<Box<dyn ClusterAccess>, PluginError> {
    if let Some(local) = local_unless_kube(&place.kube, place.state_dir.clone(), name) {
        return Ok(Box::new(local));
    }
    Ok(Box::new(KubeAccess::connect(&place.kube, name).await?))
}

/// The local cluster `name`, unless a Kubernetes flag was given or there is none.
fn local_unless_kube(t: &Target, state_dir: Option<PathBuf>, name: &str) -> Option<LocalAccess> {
    let explicit = t.kubeconfig.is_some() || t.context.is_some() || t.namespace.is_some();
    if explicit {
        return None;
    }
    LocalAccess::find(state_dir, name)
}
