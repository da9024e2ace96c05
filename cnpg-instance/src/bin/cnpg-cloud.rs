//! `cnpg-cloud`: what reaches the cluster's object store, in barman-cloud's layout.
//! - `wal-archive`: PostgreSQL's `archive_command` (`cnpg-cloud wal-archive --config FILE
//!   %p`) stores one WAL file (and, with `maxParallel`, the next ready ones): see
//!   `cnpg_instance::archive`. PostgreSQL logs what it prints and retries while it fails.
//! - `backup`: a base backup of the local instance (`cnpg_instance::backup`), started by
//!   the instance manager when the operator asks for one.
//! - `backup-list`: the backups in the store, as `barman-cloud-backup-list` lists them.
//! - `retention`: enforces the recovery window (`retentionPolicy`), as
//!   `barman-cloud-backup-delete --retention-policy` does; `backup` runs it after each
//!   completed backup when the configuration has a policy.
//! - `wal-restore`: PostgreSQL's `restore_command`, and `restore`: a base backup into an
//!   empty PGDATA (`cnpg_instance::restore`); `wal-exists`: whether the archive holds a
//!   WAL file. `cnpg-instance recover` runs these two.
//!
//! A program of its own, installed beside `cnpg-instance`, so that the object-store client
//! is never loaded into the instance manager.

use clap::{Parser, Subcommand};
use cnpg_instance::archive::{ArchiveConfig, ArchiveError, read_config};
use cnpg_instance::backup::{self, BackupInfo};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The cluster's object store: WAL archiving and base backups.
#[derive(Parser)]
#[command(name = "cnpg-cloud", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store a WAL file in the object store (PostgreSQL's archive_command).
    WalArchive {
        /// The archive configuration (JSON, written by the operator; holds credentials).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// PGDATA (default: the current directory, where PostgreSQL runs the command).
        #[arg(long, value_name = "DIR")]
        pgdata: Option<PathBuf>,
        /// The file to archive (`%p`).
        wal: PathBuf,
    },
    /// Fetch a WAL file from the object store (PostgreSQL's restore_command). Exits 0 when
    /// it is at the path given, 1 at the end of the archive, 255 (which stops recovery)
    /// when the store fails or a segment is missing in the archive's middle.
    WalRestore {
        /// The archive configuration to read from (JSON).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// PGDATA (default: the current directory, where PostgreSQL runs the command).
        #[arg(long, value_name = "DIR")]
        pgdata: Option<PathBuf>,
        /// The file PostgreSQL asks for (`%f`).
        name: String,
        /// Where it goes (`%p`).
        to: PathBuf,
    },
    /// Unpack a base backup from the object store into an empty PGDATA.
    Restore {
        /// The archive configuration to read from (JSON).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The directory to restore into (empty or missing).
        #[arg(long, value_name = "DIR")]
        pgdata: PathBuf,
        /// The backup (its id); default: the newest completed one.
        #[arg(long, conflicts_with = "before")]
        backup_id: Option<String>,
        /// The newest completed backup that ended before this time (RFC 3339): where a
        /// recovery to that time starts.
        #[arg(long, value_name = "TIME", conflicts_with = "before_lsn")]
        before: Option<String>,
        /// The newest completed backup that ended before this LSN.
        #[arg(long, value_name = "LSN", conflicts_with = "backup_id")]
        before_lsn: Option<String>,
        /// Where to keep the bytes restored so far (JSON `{"restoredBytes": n}`, replaced
        /// every half second).
        #[arg(long, value_name = "FILE")]
        progress: Option<PathBuf>,
    },
    /// Whether the archive holds a WAL file: exit 0 when it does, 1 when it does not, 2
    /// when the store cannot say.
    WalExists {
        /// The archive configuration (JSON).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The WAL file's name.
        name: String,
    },
    /// Take a base backup of the local instance into the object store.
    Backup {
        /// The archive configuration (JSON; `data` says how backups are written).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// PGDATA.
        #[arg(long, value_name = "DIR")]
        pgdata: PathBuf,
        /// The directory of PostgreSQL's socket.
        #[arg(long, value_name = "DIR")]
        socket_dir: PathBuf,
        /// PostgreSQL's port.
        #[arg(long, default_value_t = 5432)]
        port: u16,
        /// The backup's friendly name (`backup_name`).
        #[arg(long)]
        name: Option<String>,
        /// Start with an immediate checkpoint (default: `data.immediateCheckpoint`).
        #[arg(long)]
        immediate_checkpoint: bool,
        /// Where to keep the backup's progress (JSON, replaced as it goes).
        #[arg(long, value_name = "FILE")]
        status: Option<PathBuf>,
    },
    /// Delete the backups and WAL a recovery window no longer needs.
    Retention {
        /// The archive configuration (JSON).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The window (`30d`, `4w`, `6m`; default: the configuration's retentionPolicy).
        #[arg(long)]
        policy: Option<String>,
        /// Judge as at this time (RFC 3339; default: now), to see what a policy will do.
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
    },
    /// List the base backups in the object store.
    BackupList {
        /// The archive configuration (JSON).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, ArchiveError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ArchiveError::Config(e.to_string()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (what, result) = match args.command {
        Command::WalArchive {
            config,
            pgdata,
            wal,
        } => (
            format!("wal-archive {}", wal.display()),
            wal_archive(&config, pgdata, &wal),
        ),
        Command::Backup {
            config,
            pgdata,
            socket_dir,
            port,
            name,
            immediate_checkpoint,
            status,
        } => {
            let req = backup::Request {
                pgdata,
                socket_dir,
                port,
                name,
                immediate_checkpoint: immediate_checkpoint.then_some(true),
            };
            (
                "backup".to_owned(),
                take_backup(&config, &req, status.as_deref()),
            )
        }
        Command::BackupList { config, json } => ("backup-list".to_owned(), list(&config, json)),
        Command::WalRestore {
            config,
            pgdata,
            name,
            to,
        } => {
            return wal_restore(&config, pgdata, &name, &to);
        }
        Command::Restore {
            config,
            pgdata,
            backup_id,
            before,
            before_lsn,
            progress,
        } => (
            "restore".to_owned(),
            restore(
                &config,
                &pgdata,
                (backup_id, before.as_deref(), before_lsn.as_deref()),
                progress.as_deref(),
            ),
        ),
        Command::WalExists { config, name } => return wal_exists(&config, &name),
        Command::Retention {
            config,
            policy,
            now,
        } => (
            "retention".to_owned(),
            retention(&config, policy, now.as_deref()),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cnpg-cloud {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn wal_archive(config: &Path, pgdata: Option<PathBuf>, wal: &Path) -> Result<(), String> {
    let pgdata = match pgdata {
        Some(p) => p,
        None => std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?,
    };
    let cfg = read_config(config).map_err(|e| e.to_string())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(cnpg_instance::archive::archive(&cfg, &pgdata, wal))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `restore_command`: 0 restored, 1 the end of the archive (PostgreSQL ends recovery or
/// moves on), 255 anything else — an exit status above 128 makes PostgreSQL stop recovery
/// instead of taking the failure for the archive's end.
fn wal_restore(config: &Path, pgdata: Option<PathBuf>, name: &str, to: &Path) -> ExitCode {
    use cnpg_instance::restore::Fetched;
    let result = (|| {
        let pgdata = match pgdata {
            Some(p) => p,
            None => std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?,
        };
        let cfg = read_config(config).map_err(|e| e.to_string())?;
        runtime()
            .map_err(|e| e.to_string())?
            .block_on(cnpg_instance::restore::wal_restore(&cfg, &pgdata, name, to))
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok(Fetched::Restored) => ExitCode::SUCCESS,
        Ok(Fetched::End) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: cnpg-cloud wal-restore {name}: {e}");
            ExitCode::from(255)
        }
    }
}

fn restore(
    config: &Path,
    pgdata: &Path,
    (backup_id, before, before_lsn): (Option<String>, Option<&str>, Option<&str>),
    progress: Option<&Path>,
) -> Result<(), String> {
    use cnpg_instance::restore::Pick;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let cfg = read_config(config).map_err(|e| e.to_string())?;
    let pick = match (backup_id, before, before_lsn) {
        (Some(id), _, _) => Pick::Id(id),
        (None, Some(t), _) => Pick::Before(t.parse().map_err(|e| {
            format!("--before {t:?}: {e} (write RFC 3339, e.g. 2026-12-02T05:00:00Z)")
        })?),
        (None, None, Some(l)) => Pick::BeforeLsn(
            l.parse()
                .map_err(|e| format!("--before-lsn {l:?}: {e} (write it as 0/3000060)"))?,
        ),
        (None, None, None) => Pick::Latest,
    };
    let restored = Arc::new(AtomicU64::new(0));
    let report = |n: u64| {
        if let Some(p) = progress {
            write_whole(p, &serde_json::json!({ "restoredBytes": n }).to_string());
        }
    };
    let info = runtime().map_err(|e| e.to_string())?.block_on(async {
        let restoring =
            cnpg_instance::restore::restore_backup_counted(&cfg, &pick, pgdata, restored.clone());
        tokio::pin!(restoring);
        loop {
            tokio::select! {
                r = &mut restoring => break r,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                    report(restored.load(Ordering::Relaxed));
                }
            }
        }
    });
    report(restored.load(Ordering::Relaxed));
    let info = info.map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&info).unwrap_or_default());
    Ok(())
}

/// `wal-exists`: 0 the archive holds `name`, 1 it does not, 2 the store cannot say.
fn wal_exists(config: &Path, name: &str) -> ExitCode {
    let result = (|| {
        let cfg = read_config(config).map_err(|e| e.to_string())?;
        runtime()
            .map_err(|e| e.to_string())?
            .block_on(cnpg_instance::restore::holds(&cfg, name))
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: cnpg-cloud wal-exists {name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes `info` to `path` whole (a reader never sees half of it).
fn write_status(path: &Path, info: &BackupInfo) {
    write_whole(path, &serde_json::to_string(info).unwrap_or_default());
}

/// Writes `text` to `path` through a temporary file (a reader never sees half of it).
fn write_whole(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn take_backup(config: &Path, req: &backup::Request, status: Option<&Path>) -> Result<(), String> {
    let cfg: ArchiveConfig = read_config(config).map_err(|e| e.to_string())?;
    let progress = |i: &BackupInfo| {
        if let Some(p) = status {
            write_status(p, i);
        }
    };
    let result = runtime()
        .map_err(|e| e.to_string())?
        .block_on(backup::take(&cfg, req, &progress));
    match result {
        Ok(info) => {
            println!("{}", serde_json::to_string(&info).unwrap_or_default());
            // The window moves with each backup; a failure to prune does not fail the
            // backup, which is in the store and usable.
            if let Some(policy) = &cfg.retention_policy
                && let Err(e) = prune(&cfg, policy, cnpg_core::time::Timestamp(now_ms()))
            {
                eprintln!("warning: retention {policy}: {e}");
            }
            Ok(())
        }
        Err(e) => {
            if let Some(p) = status {
                // The status file may hold an earlier step: say how it ended.
                let mut last = std::fs::read(p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<BackupInfo>(&b).ok())
                    .unwrap_or_default();
                last.status = "FAILED".into();
                last.error = Some(e.to_string());
                write_status(p, &last);
            }
            Err(e.to_string())
        }
    }
}

fn now_ms() -> u64 {
    jiff::Timestamp::now().as_millisecond().max(0) as u64
}

/// Applies `policy` at `now` and says what went.
fn prune(cfg: &ArchiveConfig, policy: &str, now: cnpg_core::time::Timestamp) -> Result<(), String> {
    let done = runtime()
        .map_err(|e| e.to_string())?
        .block_on(backup::apply_retention(cfg, policy, now))
        .map_err(|e| e.to_string())?;
    for (id, why) in &done.backups {
        eprintln!("retention {policy}: deleted backup {id}: {why}");
    }
    eprintln!(
        "retention {policy}: kept {} backup(s) ({}), deleted {} and {} WAL file(s)",
        done.kept.len(),
        done.kept.join(", "),
        done.backups.len(),
        done.wal
    );
    Ok(())
}

fn retention(config: &Path, policy: Option<String>, now: Option<&str>) -> Result<(), String> {
    let cfg = read_config(config).map_err(|e| e.to_string())?;
    let policy = policy
        .or_else(|| cfg.retention_policy.clone())
        .ok_or("no --policy, and the configuration has no retentionPolicy")?;
    let now = match now {
        Some(t) => t
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("--now {t:?}: {e}"))?
            .as_millisecond()
            .max(0) as u64,
        None => now_ms(),
    };
    prune(&cfg, &policy, cnpg_core::time::Timestamp(now))
}

fn list(config: &Path, json: bool) -> Result<(), String> {
    let cfg = read_config(config).map_err(|e| e.to_string())?;
    let backups = runtime()
        .map_err(|e| e.to_string())?
        .block_on(backup::list(&cfg))
        .map_err(|e| e.to_string())?;
    let mut good = Vec::new();
    for b in backups {
        match b {
            Ok(b) => good.push(b),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&good).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<16} {:<20} {:<25} {:<10} {:<8}",
        "Backup ID", "End Time", "Begin Wal", "Status", "Name"
    );
    for b in good {
        println!(
            "{:<16} {:<20} {:<25} {:<10} {:<8}",
            b.backup_id,
            b.end_time
                .as_deref()
                .map_or("", |t| t.get(..19).unwrap_or(t)),
            b.begin_wal.as_deref().unwrap_or(""),
            b.status,
            b.backup_name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
