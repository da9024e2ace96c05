//! `cnpg-wal-archive`: PostgreSQL's `archive_command` (`cnpg-wal-archive --config FILE
//! %p`). It stores one WAL file in the object store as barman-cloud lays it out (and, with
//! `maxParallel`, the next ready ones): see `cnpg_instance::archive`. A program of its own,
//! installed beside `cnpg-instance`, so that the object-store client is never loaded into
//! the instance manager. PostgreSQL logs what it prints and retries while it fails.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Store a WAL file in the cluster's object store (PostgreSQL's archive_command).
#[derive(Parser)]
#[command(name = "cnpg-wal-archive", version)]
struct Args {
    /// The archive configuration (JSON, written by the operator; holds credentials).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// PGDATA (default: the current directory, where PostgreSQL runs the command).
    #[arg(long, value_name = "DIR")]
    pgdata: Option<PathBuf>,
    /// The file to archive (`%p`).
    wal: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let pgdata = match args.pgdata {
        Some(p) => p,
        None => match std::env::current_dir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: cnpg-wal-archive: no current directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = cnpg_instance::archive::read_config(&args.config).and_then(|cfg| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| cnpg_instance::archive::ArchiveError::Config(e.to_string()))?
            .block_on(cnpg_instance::archive::archive(&cfg, &pgdata, &args.wal))
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cnpg-wal-archive {}: {e}", args.wal.display());
            ExitCode::FAILURE
        }
    }
}
