//! The `kubectl-cnpg` command line.
//!
//! Installed on the `PATH` as `kubectl-cnpg`, it also runs as `kubectl cnpg ...`, like
//! CloudNativePG's plugin. [`run`] takes its arguments and streams explicitly so that tests
//! drive the real command without spawning a process.

use crate::manifests::{check_text, crd_files, crds_yaml};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Manage CloudNativePG-compatible PostgreSQL clusters.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-cnpg",
    version,
    about = "Manage CloudNativePG-compatible PostgreSQL clusters (cnpg-rs)"
)]
pub struct Cli {
    /// The kubeconfig file (Kubernetes clusters; default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Those naming a CLUSTER act on the local cluster of that name when one
/// exists, else on Kubernetes (as kubectl would: `--kubeconfig`, `--context`, `-n`; any of
/// these forces Kubernetes).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate installation manifests.
    Install {
        /// What to generate.
        #[command(subcommand)]
        what: InstallCommand,
    },
    /// Run a cluster on this machine, without Kubernetes.
    Local {
        /// What to do.
        #[command(subcommand)]
        what: LocalCommand,
    },
    /// Show the status of a cluster: summary, why the primary is the primary,
    /// replication, instances.
    Status {
        /// Cluster name.
        cluster: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Switch over: make INSTANCE the primary.
    Promote {
        /// Cluster name.
        cluster: String,
        /// The instance to promote.
        instance: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Fence (stop and keep stopped) an instance, or "*" for all; or lift the fence.
    Fencing {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        switch: String,
        /// Cluster name.
        cluster: String,
        /// Instance name, or "*".
        instance: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Hibernate a cluster (stop every instance, keep the data), or wake it up.
    Hibernate {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        switch: String,
        /// Cluster name.
        cluster: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Restart a cluster (rolling: replicas first, the primary last) or one instance
    /// (the primary restarts in place).
    Restart {
        /// Cluster name.
        cluster: String,
        /// Only this instance.
        instance: Option<String>,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Reload the configuration of every instance of a cluster.
    Reload {
        /// Cluster name.
        cluster: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Collect the manifest, status and logs of a cluster (no secrets): a folder for a
    /// local cluster, YAML on standard output for one on Kubernetes.
    Report {
        /// Cluster name.
        cluster: String,
        /// Folder to create (default: ./report-<cluster>-<time>).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Delete one instance and its data; the operator clones a new one from the primary.
    Destroy {
        /// Cluster name.
        cluster: String,
        /// The instance.
        instance: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Open psql on the primary (or a replica with --replica); arguments after `--` go to psql.
    Psql {
        /// Cluster name.
        cluster: String,
        /// Connect to a replica (`-ro`).
        #[arg(long)]
        replica: bool,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Arguments for psql.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run pgbench against the primary; arguments after `--` go to pgbench.
    Pgbench {
        /// Cluster name.
        cluster: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Arguments for pgbench.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print the logs of every instance (manager and PostgreSQL) of a local cluster.
    Logs {
        /// Cluster name.
        cluster: String,
        /// Lines per file.
        #[arg(long, default_value_t = 50)]
        tail: usize,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Set or unset the node maintenance window of a Cluster on Kubernetes.
    Maintenance {
        /// `set` or `unset`.
        switch: MaintenanceSwitch,
        /// Cluster name.
        cluster: String,
        /// Reuse the PVCs of instances on the node under maintenance.
        #[arg(long = "reusePVC")]
        reuse_pvc: bool,
    },
    /// Create a client certificate Secret signed by a Cluster's CA (Kubernetes).
    Certificate {
        /// The Secret to create.
        secret: String,
        /// The cluster whose CA signs it.
        #[arg(long = "cnpg-cluster")]
        cnpg_cluster: String,
        /// The PostgreSQL user (the certificate's common name).
        #[arg(long = "cnpg-user")]
        cnpg_user: String,
    },
    /// Check manifests against the API schema and the admission rules, reporting every
    /// problem with its field path. Exits 0 when every document is valid, 1 otherwise.
    Validate {
        /// Files to check (multi-document YAML); `-` reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// `maintenance` subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaintenanceSwitch {
    /// Start a node maintenance window.
    Set,
    /// End it.
    Unset,
}

/// `local` subcommands.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start (or resume) a cluster from a manifest and keep it healthy until Ctrl-C.
    Up {
        /// The Cluster manifest.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Where local clusters keep their state (default: /var/lib/cnpg-rs as root,
        /// else ~/.local/state/cnpg-rs).
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Run in the background once the cluster is healthy.
        #[arg(long)]
        detach: bool,
        /// The cnpg-instance program (default: beside kubectl-cnpg, then PATH).
        #[arg(long, env = "CNPG_INSTANCE_BIN", value_name = "FILE")]
        instance_bin: Option<PathBuf>,
        /// Directory of the PostgreSQL programs.
        #[arg(long, value_name = "DIR")]
        pg_bin: Option<PathBuf>,
        /// Internal: this process is the background operator of `--detach`.
        #[arg(long, hide = true)]
        detached_child: bool,
    },
    /// Change a running cluster: validate the manifest, then hand it to the operator
    /// (scale, parameters, synchronous replication, ...).
    Apply {
        /// The Cluster manifest.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Stop a cluster, keeping its data (`local up` resumes it).
    Down {
        /// Cluster name.
        cluster: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Stop a cluster and delete its data.
    Destroy {
        /// Cluster name.
        cluster: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// `install` subcommands.
#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// Print the CustomResourceDefinitions (Cluster, Pooler, Backup, ScheduledBackup) as YAML.
    /// Apply them with `kubectl apply --server-side -f -`.
    Crds {
        /// Write one file per CRD into this directory (`postgresql.cnpg.io_<plural>.yaml`)
        /// instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Print the whole operator installation: namespace, CRDs, RBAC, Deployment.
    Generate {
        /// The operator's namespace (the global `-n` works too).
        #[arg(long = "operator-namespace", default_value = "cnpg-system")]
        operator_namespace: String,
        /// The operator image.
        #[arg(long, default_value = "ghcr.io/cnpg-rs/cnpg-operator:0.1.0")]
        image: String,
        /// Operator replicas (leader election picks the active one).
        #[arg(long, default_value_t = 1)]
        replicas: i32,
        /// Watch only this namespace.
        #[arg(long)]
        watch_namespace: Option<String>,
    },
}

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
    let target = crate::kube_cli::Target {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
        namespace: cli.namespace.clone(),
    };
    let explicit =
        target.kubeconfig.is_some() || target.context.is_some() || target.namespace.is_some();
    let kube = |cluster: &str, state_dir: &Option<PathBuf>| {
        explicit || !crate::local_cli::exists(cluster, state_dir.clone())
    };
    let result = match cli.command {
        Command::Install {
            what:
                InstallCommand::Generate {
                    operator_namespace,
                    image,
                    replicas,
                    watch_namespace,
                },
        } => {
            let o = crate::install::InstallOptions {
                namespace: cli.namespace.clone().unwrap_or(operator_namespace),
                image,
                replicas,
                watch_namespace,
            };
            write!(out, "{}", crate::install::generate(&o)).map(|_| 0)
        }
        Command::Maintenance {
            switch,
            cluster,
            reuse_pvc,
        } => on_kube(&target, err, |c, ns| {
            Box::pin(async move {
                crate::kube_cli::maintenance(
                    &c,
                    &ns,
                    &cluster,
                    switch == MaintenanceSwitch::Set,
                    reuse_pvc,
                    out,
                )
                .await
            })
        }),
        Command::Certificate {
            secret,
            cnpg_cluster,
            cnpg_user,
        } => on_kube(&target, err, |c, ns| {
            Box::pin(async move {
                crate::kube_cli::certificate(&c, &ns, &secret, &cnpg_cluster, &cnpg_user, out).await
            })
        }),
        Command::Status { cluster, state_dir } if kube(&cluster, &state_dir) => {
            on_kube(&target, err, |c, ns| {
                Box::pin(async move { crate::kube_cli::status(&c, &ns, &cluster, out).await })
            })
        }
        Command::Promote {
            cluster,
            instance,
            state_dir,
        } if kube(&cluster, &state_dir) => on_kube(&target, err, |c, ns| {
            Box::pin(
                async move { crate::kube_cli::promote(&c, &ns, &cluster, &instance, out).await },
            )
        }),
        Command::Fencing {
            switch,
            cluster,
            instance,
            state_dir,
        } if kube(&cluster, &state_dir) => on_kube(&target, err, |c, ns| {
            Box::pin(async move {
                crate::kube_cli::fencing(&c, &ns, &cluster, switch == "on", &instance, out).await
            })
        }),
        Command::Hibernate {
            switch,
            cluster,
            state_dir,
        } if kube(&cluster, &state_dir) => on_kube(&target, err, |c, ns| {
            Box::pin(async move {
                crate::kube_cli::hibernate(&c, &ns, &cluster, switch == "on", out).await
            })
        }),
        Command::Restart {
            cluster,
            instance,
            state_dir,
        } if kube(&cluster, &state_dir) => on_kube(&target, err, |c, ns| {
            Box::pin(async move {
                crate::kube_cli::restart(&c, &ns, &cluster, instance.as_deref(), out).await
            })
        }),
        Command::Reload { cluster, state_dir } if kube(&cluster, &state_dir) => {
            on_kube(&target, err, |c, ns| {
                Box::pin(async move { crate::kube_cli::reload(&c, &ns, &cluster, out).await })
            })
        }
        Command::Destroy {
            cluster,
            instance,
            state_dir,
        } if kube(&cluster, &state_dir) => on_kube(&target, err, |c, ns| {
            Box::pin(async move {
                crate::kube_cli::destroy(&c, &ns, &cluster, &instance, false, out).await
            })
        }),
        Command::Report {
            cluster, state_dir, ..
        } if kube(&cluster, &state_dir) => on_kube(&target, err, |c, ns| {
            Box::pin(async move { crate::kube_cli::report(&c, &ns, &cluster, out).await })
        }),
        Command::Install {
            what: InstallCommand::Crds { output_dir: None },
        } => write!(out, "{}", crds_yaml()).map(|_| 0),
        Command::Install {
            what: InstallCommand::Crds {
                output_dir: Some(dir),
            },
        } => write_crd_files(&dir, out, err),
        Command::Validate { files } => validate(&files, stdin, out, err),
        Command::Local { what } => crate::local_cli::local(what, out, err),
        Command::Status { cluster, state_dir } => {
            crate::local_cli::status(&cluster, state_dir, out, err)
        }
        Command::Promote {
            cluster,
            instance,
            state_dir,
        } => crate::local_cli::promote(&cluster, &instance, state_dir, out, err),
        Command::Fencing {
            switch,
            cluster,
            instance,
            state_dir,
        } => crate::local_cli::fencing(switch == "on", &cluster, &instance, state_dir, out, err),
        Command::Hibernate {
            switch,
            cluster,
            state_dir,
        } => crate::local_cli::hibernate(switch == "on", &cluster, state_dir, out, err),
        Command::Destroy {
            cluster,
            instance,
            state_dir,
        } => crate::local_cli::destroy_instance(&cluster, &instance, state_dir, out, err),
        Command::Psql {
            cluster,
            replica,
            state_dir,
            args,
        } => crate::local_cli::client("psql", &cluster, replica, state_dir, &args, err),
        Command::Pgbench {
            cluster,
            state_dir,
            args,
        } => crate::local_cli::client("pgbench", &cluster, false, state_dir, &args, err),
        Command::Logs {
            cluster,
            tail,
            state_dir,
        } => crate::local_cli::logs(&cluster, tail, state_dir, out, err),
        Command::Restart {
            cluster,
            instance,
            state_dir,
        } => crate::local_cli::restart(&cluster, instance.as_deref(), state_dir, out, err),
        Command::Reload { cluster, state_dir } => {
            crate::local_cli::reload(&cluster, state_dir, out, err)
        }
        Command::Report {
            cluster,
            output,
            state_dir,
        } => crate::local_cli::report(&cluster, output, state_dir, out, err),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`| head`): nothing more to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 1,
        Err(e) => {
            let _ = writeln!(err, "error: cannot write output: {e}");
            1
        }
    }
}

type KubeFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), crate::kube_cli::KubeCliError>> + 'a>,
>;

/// Runs a plugin command against Kubernetes on a runtime of its own.
fn on_kube<'a>(
    target: &crate::kube_cli::Target,
    err: &mut dyn Write,
    f: impl FnOnce(kube::Client, String) -> KubeFuture<'a>,
) -> std::io::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let (client, ns) = crate::kube_cli::connect(target).await?;
        f(client, ns).await
    });
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(1)
        }
    }
}

fn write_crd_files(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<i32> {
    for (name, yaml) in crd_files() {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, yaml) {
            writeln!(err, "error: cannot write {}: {e}", path.display())?;
            return Ok(1);
        }
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(0)
}

fn validate(
    files: &[PathBuf],
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let mut all_valid = true;
    let mut documents = 0usize;
    let mut invalid = 0usize;
    for file in files {
        let label = file.display().to_string();
        let text = if label == "-" {
            let mut s = String::new();
            stdin.read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                writeln!(err, "{label}: cannot read: {e}")?;
                all_valid = false;
                continue;
            }
        };
        let reports = match check_text(&text) {
            Ok(r) => r,
            Err(e) => {
                writeln!(out, "{label}: {e}")?;
                all_valid = false;
                continue;
            }
        };
        if reports.is_empty() {
            writeln!(out, "{label}: no manifest found (the file is empty)")?;
            all_valid = false;
        }
        let many = reports.len() > 1;
        for (i, report) in reports.iter().enumerate() {
            if report.skipped.is_none() {
                documents += 1;
            }
            let place = if many {
                format!("{label}: document {} ({})", i + 1, report.label())
            } else {
                format!("{label}: {}", report.label())
            };
            if let Some(why) = &report.skipped {
                writeln!(out, "{place}: skipped ({why})")?;
            } else if report.is_valid() {
                writeln!(out, "{place}: valid")?;
            } else {
                all_valid = false;
                invalid += 1;
                let n = report.errors.len();
                writeln!(out, "{place}: {n} problem{}", if n == 1 { "" } else { "s" })?;
                for e in &report.errors {
                    writeln!(out, "  {e}")?;
                }
            }
        }
    }
    writeln!(
        out,
        "{documents} document{} checked, {invalid} invalid",
        if documents == 1 { "" } else { "s" }
    )?;
    Ok(if all_valid { 0 } else { 1 })
}
