//! Creating an instance's data: `initdb` for the first instance of a cluster (superuser,
//! `streaming_replica`, application database and owner), `join` for the others
//! (`pg_basebackup` from the primary). Passwords come from files, generated when absent,
//! and a libpq password file lets replication and `pg_rewind` use them.

use crate::control::{PgControl, PgError};
use crate::pgdata::DataDir;
use crate::runas::{self, RunAs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A new password: 24 random bytes, hex (safe in URIs, pgpass and conninfo as is).
pub fn random_password() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw)?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where an instance's secrets live.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The directory (mode 0700).
    pub dir: PathBuf,
}

impl Secrets {
    /// The superuser (`postgres`) password file.
    pub fn superuser(&self) -> PathBuf {
        self.dir.join("superuser-password")
    }
    /// The `streaming_replica` password file.
    pub fn replication(&self) -> PathBuf {
        self.dir.join("replication-password")
    }
    /// The application owner's password file.
    pub fn app(&self) -> PathBuf {
        self.dir.join("app-password")
    }
    /// The libpq password file built from the others.
    pub fn passfile(&self) -> PathBuf {
        self.dir.join("pgpass")
    }

    /// Reads every password, generating the missing ones, and writes the libpq password
    /// file; PostgreSQL's user owns them all (its walreceiver reads the password file).
    pub fn ensure(&self, run_as: Option<RunAs>) -> Result<(), PgError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PgError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&self.dir))?;
        runas::own(run_as, &self.dir).map_err(io(&self.dir))?;
        let read = |path: PathBuf| -> Result<String, PgError> {
            if !path.exists() {
                let pw =
                    random_password().map_err(|e| PgError::Query(format!("no randomness: {e}")))?;
                write_private(&path, &pw, run_as)?;
            }
            let pw = std::fs::read_to_string(&path).map_err(io(&path))?;
            Ok(pw.trim().to_owned())
        };
        let su = read(self.superuser())?;
        let repl = read(self.replication())?;
        let _ = read(self.app())?;
        write_private(
            &self.passfile(),
            &format!("*:*:*:postgres:{su}\n*:*:*:streaming_replica:{repl}\n"),
            run_as,
        )
    }

    fn read(&self, path: &Path) -> Result<String, PgError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| PgError::Io {
                path: path.to_owned(),
                source,
            })
    }
}

fn write_private(path: &Path, text: &str, run_as: Option<RunAs>) -> Result<(), PgError> {
    let err = |source| PgError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, text).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    runas::own(run_as, path).map_err(err)
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `initdb`, then the roles and the application database.
///
/// `start` must start a postmaster on the new data directory and return once it accepts
/// connections; `stop` stops it. (The manager's own start/stop are used, so the bootstrap
/// runs PostgreSQL exactly as the instance will later.)
#[allow(clippy::too_many_arguments)]
pub async fn initdb(
    run_as: Option<RunAs>,
    ctl: &dyn PgControl,
    data: &DataDir,
    secrets: &Secrets,
    cluster: &str,
    instance: &str,
    app: (&str, &str),
) -> Result<(), PgError> {
    let (app_db, app_owner) = app;
    ctl.initdb(&secrets.superuser(), &[]).await?;
    data.mark(cluster, instance, run_as)
        .map_err(|e| PgError::Query(e.to_string()))?;
    let repl = secrets.read(&secrets.replication())?;
    let app_pw = secrets.read(&secrets.app())?;
    // Run once in single-user mode: no port, no socket, nothing to race with.
    let sql = format!(
        "CREATE ROLE streaming_replica LOGIN REPLICATION PASSWORD {};\n\
         CREATE ROLE {} LOGIN PASSWORD {};\n\
         CREATE DATABASE {} OWNER {};\n",
        sql_literal(&repl),
        sql_ident(app_owner),
        sql_literal(&app_pw),
        sql_ident(app_db),
        sql_ident(app_owner)
    );
    ctl.single_user_sql(&sql).await
}

/// `pg_basebackup` from the primary at `host:port`, then mark the data as this instance's
/// and make it a standby.
#[allow(clippy::too_many_arguments)]
pub async fn join(
    run_as: Option<RunAs>,
    ctl: &dyn PgControl,
    data: &DataDir,
    secrets: &Secrets,
    cluster: &str,
    instance: &str,
    host: &str,
    port: u16,
) -> Result<(), PgError> {
    let conninfo = format!(
        "host={host} port={port} user=streaming_replica passfile={} application_name={instance} connect_timeout=10",
        secrets.passfile().display()
    );
    let mut last = None;
    for _ in 0..3 {
        match ctl.basebackup(&conninfo).await {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => {
                // A failed base backup leaves a partial directory: clear it for the retry.
                if let Ok(entries) = std::fs::read_dir(&data.path) {
                    for e in entries.flatten() {
                        let _ = if e.path().is_dir() {
                            std::fs::remove_dir_all(e.path())
                        } else {
                            std::fs::remove_file(e.path())
                        };
                    }
                }
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    data.mark(cluster, instance, run_as)
        .map_err(|e| PgError::Query(e.to_string()))?;
    data.set_standby(run_as).map_err(|source| PgError::Io {
        path: data.path.join("standby.signal"),
        source,
    })
}
