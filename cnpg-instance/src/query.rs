//! What PostgreSQL reports, over a local connection as the `postgres` superuser through
//! the instance's private Unix socket.

use crate::control::PgError;
use async_trait::async_trait;
use cnpg_core::lsn::Lsn;
pub use cnpg_core::status::{Archiving, ReplicationInfo};
use std::path::PathBuf;

/// What one round of queries found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `NOT pg_is_in_recovery()`.
    pub is_primary: bool,
    /// Current timeline. On a standby: the newest it knows of, whether or not its WAL
    /// receiver runs (the one it streams, its last restartpoint's, or the newest timeline
    /// whose history file or WAL it holds: a standby that learned of a promotion follows
    /// it, while its last restartpoint may still name an older one). The WAL directory is
    /// read by name only (`pg_ls_dir`): `pg_ls_waldir` stats each file and fails the whole
    /// query when a restartpoint recycles one between the listing and the stat.
    pub timeline: u32,
    /// `pg_current_wal_lsn()` (primary).
    pub current_lsn: Lsn,
    /// `pg_last_wal_receive_lsn()` (standby).
    pub received_lsn: Lsn,
    /// `pg_last_wal_replay_lsn()` (standby).
    pub replay_lsn: Lsn,
    /// A WAL receiver is streaming.
    pub wal_receiver_active: bool,
    /// Some parameter waits for a restart.
    pub pending_restart: bool,
    /// The system identifier.
    pub system_id: String,
    /// `synchronous_standby_names` in effect.
    pub synchronous_standby_names: String,
    /// `pg_stat_replication` (primary).
    pub replication: Vec<ReplicationInfo>,
    /// How WAL archiving goes (`pg_stat_archiver`, `.ready` files, the current segment).
    pub archiving: Archiving,
}

/// Asks PostgreSQL.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PgQuery: Send + Sync {
    /// One snapshot of the instance.
    async fn snapshot(&self) -> Result<Snapshot, PgError>;
    /// Runs statements (CHECKPOINT, role management).
    async fn execute(&self, sql: &str) -> Result<(), PgError>;
    /// Runs statements in database `db`.
    async fn execute_in(&self, db: &str, sql: &str) -> Result<(), PgError>;
    /// Runs statements in one transaction and returns its id (`txid_current()`): the
    /// transaction that set a role's password, as upstream's status records it.
    async fn transaction(&self, sql: &str) -> Result<i64, PgError>;
    /// The databases that take connections (`template0` does not).
    async fn databases(&self) -> Result<Vec<String>, PgError>;
    /// Every role, as managed roles compare them.
    async fn roles(&self) -> Result<Vec<cnpg_core::roles::DbRole>, PgError>;
    /// The tablespaces users made (not `pg_default`, `pg_global`), with their owners.
    async fn tablespaces(&self) -> Result<Vec<cnpg_core::tablespaces::Existing>, PgError>;
    /// Database `name` as `pg_database` has it (`None`: there is none).
    async fn database(
        &self,
        name: &str,
    ) -> Result<Option<cnpg_core::databases::DbDatabase>, PgError>;
    /// The schemas, extensions, foreign data wrappers and servers of database `db`.
    async fn objects_in(&self, db: &str) -> Result<cnpg_core::databases::DbObjects, PgError>;
    /// Runs each statement on its own (not in one transaction block: `CREATE DATABASE`
    /// refuses one) in database `db`, on one connection whose commits are local and whose
    /// statements give up after 30 s; stops at the first error.
    async fn execute_each_in(&self, db: &str, statements: &[String]) -> Result<(), PgError>;
}

/// A tokio-postgres client of the local instance.
#[derive(Debug, Clone)]
pub struct PgClient {
    /// The Unix socket directory.
    pub socket_dir: PathBuf,
    /// The port (names the socket).
    pub port: u16,
}

impl PgClient {
    async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        self.connect_to("postgres").await
    }

    async fn connect_to(&self, db: &str) -> Result<tokio_postgres::Client, PgError> {
        self.connect_as(db, "cnpg-instance").await
    }

    /// A connection to database `db` as `postgres`, named `application_name`.
    pub async fn connect_as(
        &self,
        db: &str,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .application_name(application_name)
            .connect_timeout(std::time::Duration::from_secs(2));
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| PgError::Query(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

/// PostgreSQL's own message when it refused (tokio-postgres says only `db error`).
fn q(e: tokio_postgres::Error) -> PgError {
    PgError::Query(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    })
}

fn text(row: &tokio_postgres::Row, i: usize) -> String {
    row.get::<_, Option<String>>(i).unwrap_or_default()
}

fn lsn(s: Option<String>) -> Lsn {
    s.and_then(|s| s.parse().ok()).unwrap_or_default()
}

/// The longest a snapshot may take. The manager's loop waits for it (to restart a crashed
/// PostgreSQL, to decide), and a server that accepts a connection and never answers (hung,
/// or stopped with SIGSTOP) must not hold that loop.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[async_trait]
impl PgQuery for PgClient {
    async fn snapshot(&self) -> Result<Snapshot, PgError> {
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.snapshot_now()).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    port = self.port,
                    "PostgreSQL did not answer a status query within {} s",
                    SNAPSHOT_TIMEOUT.as_secs()
                );
                Err(PgError::Query(format!(
                    "no answer within {} s",
                    SNAPSHOT_TIMEOUT.as_secs()
                )))
            }
        }
    }

    async fn execute(&self, sql: &str) -> Result<(), PgError> {
        self.connect().await?.batch_execute(sql).await.map_err(q)
    }

    async fn transaction(&self, sql: &str) -> Result<i64, PgError> {
        // A failure leaves the transaction open on a connection that is then dropped:
        // PostgreSQL rolls it back.
        let c = self.connect().await?;
        c.batch_execute(&format!("BEGIN;\n{sql}"))
            .await
            .map_err(q)?;
        let xid: i64 = c
            .query_one("SELECT txid_current()", &[])
            .await
            .map_err(q)?
            .get(0);
        c.batch_execute("COMMIT").await.map_err(q)?;
        Ok(xid)
    }

    async fn execute_in(&self, db: &str, sql: &str) -> Result<(), PgError> {
        self.connect_to(db)
            .await?
            .batch_execute(sql)
            .await
            .map_err(q)
    }

    async fn databases(&self) -> Result<Vec<String>, PgError> {
        let rows = self
            .connect()
            .await?
            .query(
                "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .await
            .map_err(q)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn database(
        &self,
        name: &str,
    ) -> Result<Option<cnpg_core::databases::DbDatabase>, PgError> {
        let row = self
            .connect()
            .await?
            .query_opt(
                "SELECT d.datname::text, pg_get_userbyid(d.datdba)::text, d.datallowconn, \
                 d.datistemplate, d.datconnlimit, t.spcname::text \
                 FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace \
                 WHERE d.datname = $1",
                &[&name],
            )
            .await
            .map_err(q)?;
        Ok(row.map(|r| cnpg_core::databases::DbDatabase {
            name: r.get(0),
            owner: r.get(1),
            allow_connections: r.get(2),
            is_template: r.get(3),
            connection_limit: r.get(4),
            tablespace: r.get(5),
        }))
    }

    async fn objects_in(&self, db: &str) -> Result<cnpg_core::databases::DbObjects, PgError> {
        let c = self.connect_to(db).await?;
        let rows = |sql: &'static str| {
            let c = &c;
            async move { c.query(sql, &[]).await.map_err(q) }
        };
        // `k=v` option strings split at the first `=`, as PostgreSQL writes them.
        let options = |o: Option<Vec<String>>| {
            o.unwrap_or_default()
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect()
        };
        let mut out = cnpg_core::databases::DbObjects::default();
        for r in
            rows("SELECT nspname::text, pg_get_userbyid(nspowner)::text FROM pg_namespace").await?
        {
            out.schemas.insert(r.get(0), r.get(1));
        }
        for r in rows(
            "SELECT e.extname::text, e.extversion, n.nspname::text FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace",
        )
        .await?
        {
            out.extensions.insert(r.get(0), (r.get(1), r.get(2)));
        }
        for r in rows(
            "SELECT fdwname::text, pg_get_userbyid(fdwowner)::text, fdwhandler::regproc::text, \
             fdwvalidator::regproc::text, fdwoptions FROM pg_foreign_data_wrapper",
        )
        .await?
        {
            out.fdws.insert(
                r.get(0),
                cnpg_core::databases::DbFdw {
                    owner: r.get(1),
                    handler: r.get(2),
                    validator: r.get(3),
                    options: options(r.get(4)),
                },
            );
        }
        for r in rows(
            "SELECT s.srvname::text, w.fdwname::text, s.srvoptions FROM pg_foreign_server s \
             JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw",
        )
        .await?
        {
            out.servers.insert(r.get(0), (r.get(1), options(r.get(2))));
        }
        Ok(out)
    }

    async fn execute_each_in(&self, db: &str, statements: &[String]) -> Result<(), PgError> {
        let c = self.connect_to(db).await?;
        c.batch_execute("SET synchronous_commit = local; SET statement_timeout = '30s'")
            .await
            .map_err(q)?;
        for sql in statements {
            c.batch_execute(sql).await.map_err(q)?;
        }
        Ok(())
    }

    async fn tablespaces(&self) -> Result<Vec<cnpg_core::tablespaces::Existing>, PgError> {
        let rows = self
            .connect()
            .await?
            .query(
                "SELECT spcname::text, pg_get_userbyid(spcowner)::text FROM pg_tablespace
                 WHERE spcname NOT LIKE 'pg\\_%' ORDER BY 1",
                &[],
            )
            .await
            .map_err(q)?;
        Ok(rows
            .iter()
            .map(|r| cnpg_core::tablespaces::Existing {
                name: r.get(0),
                owner: r.get(1),
            })
            .collect())
    }

    async fn roles(&self) -> Result<Vec<cnpg_core::roles::DbRole>, PgError> {
        let rows = self
            .connect()
            .await?
            .query(
                "SELECT a.rolname::text, a.rolsuper, a.rolcreatedb, a.rolcreaterole, a.rolinherit,
                        a.rolcanlogin, a.rolreplication, a.rolbypassrls, a.rolconnlimit::int8,
                        CASE WHEN a.rolvaliduntil IS NULL THEN NULL
                             WHEN a.rolvaliduntil = 'infinity' THEN 'infinity'
                             ELSE to_char(a.rolvaliduntil AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END,
                        shobj_description(a.oid, 'pg_authid'),
                        ARRAY(SELECT g.rolname::text FROM pg_auth_members m
                              JOIN pg_authid g ON g.oid = m.roleid WHERE m.member = a.oid),
                        a.rolpassword IS NOT NULL
                   FROM pg_authid a ORDER BY 1",
                &[],
            )
            .await
            .map_err(q)?;
        Ok(rows
            .iter()
            .map(|r| cnpg_core::roles::DbRole {
                name: r.get(0),
                superuser: r.get(1),
                createdb: r.get(2),
                createrole: r.get(3),
                inherit: r.get(4),
                login: r.get(5),
                replication: r.get(6),
                bypassrls: r.get(7),
                connection_limit: r.get(8),
                valid_until: r.get(9),
                comment: r.get(10),
                in_roles: r.get::<_, Vec<String>>(11).into_iter().collect(),
                has_password: r.get(12),
            })
            .collect())
    }
}

impl PgClient {
    async fn snapshot_now(&self) -> Result<Snapshot, PgError> {
        let c = self.connect().await?;
        let row = c
            .query_one(
                "SELECT NOT pg_is_in_recovery(),
                        CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
                        pg_last_wal_receive_lsn()::text,
                        pg_last_wal_replay_lsn()::text,
                        (SELECT system_identifier::text FROM pg_control_system()),
                        current_setting('synchronous_standby_names'),
                        EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart),
                        (SELECT status = 'streaming' FROM pg_stat_wal_receiver),
                        CASE WHEN pg_is_in_recovery()
                             THEN GREATEST((SELECT received_tli FROM pg_stat_wal_receiver),
                                           (SELECT timeline_id FROM pg_control_checkpoint()),
                                           (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int)
                                              FROM pg_ls_dir('pg_wal') AS name
                                             WHERE name ~ '^[0-9A-F]{8}([0-9A-F]{16}|[.]history)$'))
                             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
                        END,
                        a.archived_count,
                        a.failed_count,
                        a.last_archived_wal,
                        to_char(a.last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        a.last_failed_wal,
                        to_char(a.last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        COALESCE(a.last_archived_time, '-infinity') > COALESCE(a.last_failed_time, '-infinity'),
                        CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
                        (SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') AS f WHERE f LIKE '%.ready')::int
                   FROM pg_stat_archiver AS a",
                &[],
            )
            .await
            .map_err(q)?;
        let is_primary: bool = row.get(0);
        let replication = if is_primary {
            c.query(
                "SELECT application_name, state, sent_lsn::text, write_lsn::text, flush_lsn::text,
                        replay_lsn::text, sync_state, sync_priority
                 FROM pg_stat_replication ORDER BY application_name",
                &[],
            )
            .await
            .map_err(q)?
            .into_iter()
            .map(|r| ReplicationInfo {
                application_name: r.get::<_, Option<String>>(0).unwrap_or_default(),
                state: r.get::<_, Option<String>>(1).unwrap_or_default(),
                sent_lsn: lsn(r.get(2)),
                write_lsn: lsn(r.get(3)),
                flush_lsn: lsn(r.get(4)),
                replay_lsn: lsn(r.get(5)),
                sync_state: r.get::<_, Option<String>>(6).unwrap_or_default(),
                sync_priority: r.get::<_, Option<i32>>(7).unwrap_or_default(),
            })
            .collect()
        } else {
            Vec::new()
        };
        Ok(Snapshot {
            is_primary,
            current_lsn: lsn(row.get(1)),
            received_lsn: lsn(row.get(2)),
            replay_lsn: lsn(row.get(3)),
            system_id: row.get::<_, Option<String>>(4).unwrap_or_default(),
            synchronous_standby_names: row.get(5),
            pending_restart: row.get(6),
            wal_receiver_active: row.get::<_, Option<bool>>(7).unwrap_or(false),
            timeline: row.get::<_, Option<i32>>(8).unwrap_or(0).max(0) as u32,
            archiving: Archiving {
                archived_count: row.get::<_, Option<i64>>(9).unwrap_or(0),
                failed_count: row.get::<_, Option<i64>>(10).unwrap_or(0),
                last_archived_wal: text(&row, 11),
                last_archived_wal_time: text(&row, 12),
                last_failed_wal: text(&row, 13),
                last_failed_wal_time: text(&row, 14),
                is_archiving_wal: row.get::<_, Option<bool>>(15).unwrap_or(false),
                current_wal: text(&row, 16),
                ready_wal_files: row.get::<_, Option<i32>>(17).unwrap_or(0).max(0) as u32,
                archive_error: String::new(),
            },
            replication,
        })
    }
}
