//! The command line's shape: every subcommand, flag and argument of `kubectl-cnpg`, as
//! clap reads them (and as `--help` prints them).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
        /// Folder to create (default: ./report-CLUSTER-MILLISECONDS).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Request a base backup of a cluster to its object store (a `Backup` the operator runs).
    Backup {
        /// Cluster name.
        cluster: String,
        /// The Backup's name (default: CLUSTER-YYYYMMDDhhmmss).
        #[arg(long)]
        backup_name: Option<String>,
        /// Where it runs: primary or prefer-standby (default: the cluster's backup.target).
        #[arg(long, value_parser = ["primary", "prefer-standby"])]
        backup_target: Option<String>,
        /// The method: only barmanObjectStore so far.
        #[arg(short, long, default_value = "barmanObjectStore", value_parser = ["barmanObjectStore"])]
        method: String,
        /// Start with an immediate checkpoint instead of a spread one (default: the
        /// cluster's barmanObjectStore.data.immediateCheckpoint).
        #[arg(long)]
        immediate_checkpoint: bool,
        /// Wait until it ends, at most this many seconds (an error when it fails).
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "600")]
        wait: Option<u64>,
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
    /// Open psql on the primary (or a replica with --replica); arguments after `--` go to
    /// psql. On Kubernetes, through `kubectl exec` into the pod, as `postgres` by default.
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
    /// Run pgbench against the primary; arguments after `--` go to pgbench. Locally it
    /// runs here; on Kubernetes, as upstream, in a Job.
    Pgbench {
        /// Cluster name.
        cluster: String,
        /// Kubernetes: the Job's name (default: `<cluster>-pgbench-<digits>`).
        #[arg(long)]
        job_name: Option<String>,
        /// The database pgbench works in.
        #[arg(long, default_value = "app")]
        db_name: String,
        /// Kubernetes: print the Job instead of creating it.
        #[arg(long)]
        dry_run: bool,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Arguments for pgbench.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure the storage with fio. On Kubernetes, as upstream: a PVC, a ConfigMap with
    /// the fio job and a Deployment running fio, all named NAME (`--dry-run` prints them).
    /// For a local cluster NAME: Debian's fio in an instance's directory, figures printed.
    Fio {
        /// The name of the fio objects on Kubernetes, or a local cluster.
        name: String,
        /// Local: the instance whose storage is measured (default: the primary).
        #[arg(long)]
        instance: Option<String>,
        /// Local: the file each job reads and writes (fio's size, e.g. 256M).
        #[arg(long, default_value = "256M")]
        size: String,
        /// Local: seconds each of the three jobs runs.
        #[arg(long, default_value_t = 10)]
        runtime: u32,
        /// Kubernetes: the PVC's storage class (default: the namespace's default).
        #[arg(long = "storageClass")]
        storage_class: Option<String>,
        /// Kubernetes: the PVC's size.
        #[arg(long = "pvcSize", default_value = "2Gi")]
        pvc_size: String,
        /// Kubernetes: print the objects instead of creating them.
        #[arg(long)]
        dry_run: bool,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Print the logs of a cluster: `logs cluster NAME` as upstream (or `logs NAME`). On
    /// Kubernetes, every container of its pods through the API server, each line prefixed
    /// `[pod/POD/CONTAINER]`; locally, each instance's manager and PostgreSQL log.
    Logs {
        /// `cluster NAME` (upstream's form) or `NAME`.
        #[arg(num_args = 1..=2, required = true, value_name = "[cluster] NAME")]
        cluster: Vec<String>,
        /// Lines per log: all on Kubernetes and 50 locally unless given (-1: all).
        #[arg(long, allow_negative_numbers = true)]
        tail: Option<i64>,
        /// Kubernetes: keep streaming what the containers write.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Kubernetes: prefix each line with the time the container wrote it.
        #[arg(short = 't', long)]
        timestamps: bool,
        /// Write the logs to this file instead of the standard output.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
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
    /// Create a client certificate signed by the cluster's client CA: a `kubernetes.io/tls`
    /// Secret on Kubernetes; locally, a directory of that name (`tls.crt`, `tls.key`,
    /// `ca.crt`) under the cluster's state.
    Certificate {
        /// The Secret (or local directory) to create.
        secret: String,
        /// The cluster whose CA signs it.
        #[arg(long = "cnpg-cluster")]
        cnpg_cluster: String,
        /// The PostgreSQL user (the certificate's common name).
        #[arg(long = "cnpg-user")]
        cnpg_user: String,
        /// Where local clusters keep their state.
        #[arg(long, env = "CNPG_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Check manifests against the API schema and the admission rules, reporting every
    /// problem with its field path. Exits 0 when every document is valid, 1 otherwise.
    Validate {
        /// Files to check (multi-document YAML); `-` reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the plugin's version and the API it speaks.
    Version,
    /// Print a completion script for a shell, e.g. `source <(kubectl-cnpg completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
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
    /// Delete the Poolers, Backups and ScheduledBackups a file names (what a Pooler ran
    /// stops).
    Delete {
        /// The manifest.
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
