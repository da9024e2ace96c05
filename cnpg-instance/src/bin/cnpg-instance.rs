//! `cnpg-instance`: the cnpg-rs instance manager.

use clap::{Parser, Subcommand};
use cnpg_instance::pg_bin::Search;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs beside one PostgreSQL server and makes it do what the operator decides.
#[derive(Debug, Parser)]
#[command(name = "cnpg-instance", version)]
struct Cli {
    /// Directory holding the PostgreSQL programs (default: $PG_BIN, `pg_config --bindir`,
    /// then the highest /usr/lib/postgresql/*/bin).
    #[arg(long, global = true, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show which PostgreSQL installation would be used, and why.
    FindPostgres,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::FindPostgres => match Search::standard(cli.pg_bin).find() {
            Ok(bin) => {
                println!(
                    "PostgreSQL {} in {} (found through {})",
                    bin.version,
                    bin.dir.display(),
                    bin.source
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
