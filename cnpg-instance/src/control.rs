//! Running PostgreSQL's programs: `initdb`, `pg_basebackup`, `pg_ctl promote`, `pg_rewind`,
//! `pg_controldata`, and the command that starts the postmaster (the manager spawns it as
//! its own child, so it learns of its death at once). Every program runs as the
//! `postgres` user when we are root, and its error output is kept for the message.

use crate::pg_bin::PgBinaries;
use crate::runas::RunAs;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// A PostgreSQL program failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// It failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A query failed.
    #[error("query failed: {0}")]
    Query(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Drives PostgreSQL's programs for one data directory.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PgControl: Send + Sync {
    /// The command that runs the postmaster in the foreground.
    fn postmaster(&self) -> Command;
    /// `initdb` with a superuser password from `pwfile`.
    async fn initdb(&self, pwfile: &Path, extra: &[String]) -> Result<(), PgError>;
    /// `pg_basebackup` from `conninfo` into the (empty) data directory.
    async fn basebackup(&self, conninfo: &str) -> Result<(), PgError>;
    /// `pg_ctl promote`, waiting for it to finish.
    async fn promote(&self) -> Result<(), PgError>;
    /// `pg_rewind` against `conninfo` (a superuser connection to the new primary).
    async fn rewind(&self, conninfo: &str) -> Result<(), PgError>;
    /// Whether the data directory was shut down cleanly (`pg_controldata`).
    async fn shut_down_cleanly(&self) -> Result<bool, PgError>;
    /// Crash recovery in single-user mode, so that `pg_rewind` can run after a crash.
    async fn single_user_recovery(&self) -> Result<(), PgError>;
    /// Runs SQL in single-user mode (bootstrap: no server, no port to race for).
    async fn single_user_sql(&self, sql: &str) -> Result<(), PgError>;
}

/// The real thing.
#[derive(Debug, Clone)]
pub struct PgCtl {
    /// The programs.
    pub bin: PgBinaries,
    /// PGDATA.
    pub pgdata: PathBuf,
    /// Run programs as this user (when we are root).
    pub run_as: Option<RunAs>,
    /// The libpq password file the programs use.
    pub passfile: PathBuf,
}

impl PgCtl {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.program(program));
        if let Some(r) = self.run_as {
            r.apply(&mut cmd);
        }
        cmd.env("PGPASSFILE", &self.passfile)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        cmd
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<String, PgError> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .await
            .map_err(|source| PgError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(PgError::Failed {
                program: program.to_owned(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    fn pgdata(&self) -> &str {
        self.pgdata.to_str().unwrap_or_default()
    }
}

#[async_trait]
impl PgControl for PgCtl {
    fn postmaster(&self) -> Command {
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(&self.pgdata);
        cmd
    }

    async fn initdb(&self, pwfile: &Path, extra: &[String]) -> Result<(), PgError> {
        let pw = format!("--pwfile={}", pwfile.display());
        let mut args = vec![
            "-D",
            self.pgdata(),
            "-U",
            "postgres",
            pw.as_str(),
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--data-checksums",
        ];
        args.extend(extra.iter().map(String::as_str));
        self.run("initdb", &args).await.map(|_| ())
    }

    async fn basebackup(&self, conninfo: &str) -> Result<(), PgError> {
        let d = format!("--dbname={conninfo}");
        self.run(
            "pg_basebackup",
            &[
                "-D",
                self.pgdata(),
                d.as_str(),
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-password",
            ],
        )
        .await
        .map(|_| ())
    }

    async fn promote(&self) -> Result<(), PgError> {
        self.run(
            "pg_ctl",
            &["promote", "-w", "-t", "60", "-D", self.pgdata()],
        )
        .await
        .map(|_| ())
    }

    async fn rewind(&self, conninfo: &str) -> Result<(), PgError> {
        let src = format!("--source-server={conninfo}");
        self.run(
            "pg_rewind",
            &["-D", self.pgdata(), src.as_str(), "--no-sync"],
        )
        .await
        .map(|_| ())
    }

    async fn shut_down_cleanly(&self) -> Result<bool, PgError> {
        let out = self.run("pg_controldata", &["-D", self.pgdata()]).await?;
        let state = out
            .lines()
            .find_map(|l| l.strip_prefix("Database cluster state:"))
            .map(str::trim)
            .unwrap_or_default();
        Ok(state == "shut down" || state == "shut down in recovery")
    }

    async fn single_user_recovery(&self) -> Result<(), PgError> {
        // Replays WAL to a consistent state and shuts down cleanly: what pg_rewind needs.
        self.run(
            "postgres",
            &[
                "--single",
                "-D",
                self.pgdata(),
                "-c",
                "archive_mode=off",
                "postgres",
            ],
        )
        .await
        .map(|_| ())
    }

    async fn single_user_sql(&self, sql: &str) -> Result<(), PgError> {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .command("postgres")
            .args(["--single", "-j", "-D", self.pgdata(), "postgres"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| PgError::Spawn {
                program: "postgres --single".into(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // In -j mode a statement ends with a semicolon and an empty line.
        let script: String = sql.lines().map(|l| format!("{l}\n\n")).collect();
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|source| PgError::Spawn {
                program: "postgres --single".into(),
                source,
            })?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| PgError::Spawn {
                program: "postgres --single".into(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("ERROR:") {
            return Err(PgError::Failed {
                program: "postgres --single".into(),
                status: out.status.to_string(),
                stderr: stderr.trim().to_owned(),
            });
        }
        Ok(())
    }
}
