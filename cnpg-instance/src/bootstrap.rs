//! Creating an instance's data: `initdb` for the first instance of a cluster (superuser,
//! `streaming_replica`, application database and owner), `join` for the others
//! (`pg_basebackup` from the primary). Passwords come from files, generated when absent,
//! as do the certificates ([`crate::tls`]) when the CA's key is at hand. Standbys clone,
//! stream and rewind as `streaming_replica` with its client certificate; that role has no
//! password.

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
    /// The cluster's certificates, in the same directory.
    pub fn tls(&self) -> crate::tls::Files {
        crate::tls::Files {
            dir: self.dir.clone(),
        }
    }
    /// The application owner's password file.
    pub fn app(&self) -> PathBuf {
        self.dir.join("app-password")
    }
    /// The managed roles' passwords from their Secrets: JSON, role name to
    /// [`cnpg_core::roles::Secret`] (written by the operator).
    pub fn managed_roles(&self) -> PathBuf {
        self.dir.join("managed-roles.json")
    }
    /// The monitoring queries' configuration
    /// ([`crate::monitoring::Config`], written by the operator).
    pub fn monitoring(&self) -> PathBuf {
        self.dir.join("monitoring.json")
    }
    /// The bearer token the instance managers' `/pg/status` requires, where it exists
    /// (the local platform makes it; pods have none yet).
    pub fn status_token(&self) -> PathBuf {
        self.dir.join("status-token")
    }

    /// The status token, made (0600) when missing.
    pub fn ensure_status_token(&self, run_as: Option<RunAs>) -> Result<String, PgError> {
        let path = self.status_token();
        if !path.exists() {
            std::fs::create_dir_all(&self.dir).map_err(|source| PgError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let token =
                random_password().map_err(|e| PgError::Query(format!("no randomness: {e}")))?;
            write_private(&path, &token, run_as)?;
        }
        self.read(&path)
    }

    /// The libpq password file built from the others.
    pub fn passfile(&self) -> PathBuf {
        self.dir.join("pgpass")
    }

    /// Reads every password, generating the missing ones, writes the libpq password file,
    /// and issues the missing certificates (a server certificate for `names`) when the CA's
    /// key is here; PostgreSQL's user owns them all (it reads the keys and its walreceiver
    /// the client certificate).
    pub fn ensure(
        &self,
        cluster: &str,
        names: &[String],
        run_as: Option<RunAs>,
    ) -> Result<(), PgError> {
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
        let _ = read(self.app())?;
        write_private(&self.passfile(), &format!("*:*:*:postgres:{su}\n"), run_as)?;
        self.tls()
            .ensure(cluster, names, run_as)
            .map_err(|e| PgError::Query(format!("certificates: {e}")))
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
    crate::tls::write_private(path, text, run_as).map_err(|e| match e {
        crate::tls::TlsError::Io { path, source } => PgError::Io { path, source },
        other => PgError::Query(other.to_string()),
    })
}

/// What `streaming_replica` may execute so pg_rewind can use it as its source (the
/// functions PostgreSQL's documentation lists for a non-superuser pg_rewind).
pub const REWIND_GRANTS: &str = "\
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO streaming_replica;\n\
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO streaming_replica;\n\
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO streaming_replica;\n\
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO streaming_replica;\n";

/// `s` as an SQL string literal.
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `s` as an SQL identifier.
pub(crate) fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The instance a bootstrap makes (`initdb`, `join`, a recovery from backups): who runs
/// PostgreSQL, its programs, its empty data directory, the cluster's secrets, its names.
pub struct NewInstance<'a> {
    /// PostgreSQL's user, when we are root.
    pub run_as: Option<RunAs>,
    /// PostgreSQL's programs for the data directory.
    pub ctl: &'a dyn PgControl,
    /// The data directory.
    pub data: &'a DataDir,
    /// The cluster's passwords and certificates.
    pub secrets: &'a Secrets,
    /// The cluster's name.
    pub cluster: &'a str,
    /// The instance's name.
    pub instance: &'a str,
}

/// `initdb`, then the roles and the application database (`app`: its name and owner).
pub async fn initdb(new: &NewInstance<'_>, app: (&str, &str)) -> Result<(), PgError> {
    let NewInstance {
        run_as,
        ctl,
        data,
        secrets,
        cluster,
        instance,
    } = *new;
    let (app_db, app_owner) = app;
    ctl.initdb(&secrets.superuser(), &[]).await?;
    data.mark(cluster, instance, run_as)
        .map_err(|e| PgError::Query(e.to_string()))?;
    // A new cluster's first archive checks that its destination holds no WAL yet.
    write_private(
        &data.path.join(crate::archive::CHECK_EMPTY_MARK),
        "",
        run_as,
    )?;
    let app_pw = secrets.read(&secrets.app())?;
    // Run once in single-user mode: no port, no socket, nothing to race with.
    // `streaming_replica` logs in by certificate only (no password), and may read what
    // pg_rewind reads from a source server, so a demoted primary rewinds as it.
    let sql = format!(
        "CREATE ROLE streaming_replica LOGIN REPLICATION;\n\
         {}\
         CREATE ROLE {} LOGIN PASSWORD {};\n\
         CREATE DATABASE {} OWNER {};\n",
        REWIND_GRANTS,
        sql_ident(app_owner),
        sql_literal(&app_pw),
        sql_ident(app_db),
        sql_ident(app_owner)
    );
    ctl.single_user_sql(&sql).await
}

/// `pg_basebackup` from the primary at `host:port`, then mark the data as this instance's
/// and make it a standby.
pub async fn join(new: &NewInstance<'_>, host: &str, port: u16) -> Result<(), PgError> {
    clone_primary(
        new.ctl,
        new.data,
        &new.secrets.tls(),
        (new.cluster, new.instance),
        new.run_as,
        (host, port),
    )
    .await
}

/// What [`join`] does, for an instance manager cloning its own instance again: the
/// primary's data copied into the empty PGDATA (three attempts, emptied after each failure),
/// marked `(cluster, instance)`, a standby.
pub async fn clone_primary(
    ctl: &dyn PgControl,
    data: &DataDir,
    tls: &crate::tls::Files,
    (cluster, instance): (&str, &str),
    run_as: Option<RunAs>,
    (host, port): (&str, u16),
) -> Result<(), PgError> {
    let conninfo = format!(
        "host={host} port={port} {} application_name={instance} connect_timeout=10",
        tls.replication_conninfo()
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
                data.empty();
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    // Copied from a primary that has not archived yet: this instance continues that
    // cluster's archive, it does not start one.
    let _ = std::fs::remove_file(data.path.join(crate::archive::CHECK_EMPTY_MARK));
    data.mark(cluster, instance, run_as)
        .map_err(|e| PgError::Query(e.to_string()))?;
    data.set_standby(run_as).map_err(|source| PgError::Io {
        path: data.path.join("standby.signal"),
        source,
    })
}
