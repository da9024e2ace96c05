//! A new cluster's first instance made from another cluster's backups
//! (`bootstrap.recovery`): the base backup restored from the source's object store
//! ([`crate::restore`]), WAL replayed by PostgreSQL through `restore_command` =
//! `cnpg-cloud wal-restore` (prefetching, and stopping at a hole in the archive) up to the
//! target or the end of the archive, promoted onto a new timeline, then given the new
//! cluster's credentials. The other instances then clone it as they clone any primary.
//!
//! The replaying server runs on a private Unix socket only (no TCP), with archiving off
//! (the new cluster's archive starts with its own instance manager, into its own
//! destination, never the source's) and `hot_standby` off (the source may have run with
//! more connections or workers than the new cluster: a hot standby would refuse to replay
//! that). What PostgreSQL says when it cannot reach the target is turned into what to do
//! about it. A failure leaves nothing that looks like a usable instance: the data
//! directory is emptied again, and the progress file says why.

use crate::archive::{ArchiveConfig, CHECK_EMPTY_MARK};
use crate::backup::BackupInfo;
use crate::bootstrap::{NewInstance, REWIND_GRANTS, sql_ident as ident, sql_literal as literal};
use crate::control::PgError;
use crate::restore::{Pick, RestoreError};
use crate::runas::{self, RunAs};
use cnpg_core::recovery::Target;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a recovery waits for the last WAL file of its backup to reach the archive:
/// more than PostgreSQL's `archive_timeout` as operators set it (5 minutes).
const END_WAL_WAIT: Duration = Duration::from_secs(600);

/// What stops a recovery.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The target cannot be used (the field says which).
    #[error("recoveryTarget.{0}")]
    Target(#[from] cnpg_core::recovery::TargetError),
    /// Restoring the base backup failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A PostgreSQL program failed.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// PostgreSQL stopped replaying without reaching the target (what it said, and what
    /// to do).
    #[error("{0}")]
    Replay(String),
}

/// Where the recovery stands, written as JSON beside PGDATA ([`progress_file`]) for the
/// operator and `local up` to show while it runs; on Kubernetes also published in the
/// Cluster's `status.recoveryProgress`.
pub use cnpg_core::recovery::Progress;

/// Restores the base backup `pick` into `pgdata` through `cnpg-cloud restore`, reporting
/// the bytes restored as it goes. A program of its own: the object-store client never
/// enters the instance manager's binary (it would cost the manager megabytes of memory).
async fn restore_through(
    source: &Source,
    pick: &Pick,
    pgdata: &Path,
    p: &mut Progress,
    progress: &Path,
) -> Result<BackupInfo, RecoveryError> {
    let counted = crate::restore::spool(pgdata).with_file_name("restore-progress.json");
    let mut cmd = tokio::process::Command::new(&source.program);
    cmd.arg("restore")
        .arg("--config")
        .arg(&source.config_path)
        .arg("--pgdata")
        .arg(pgdata)
        .arg("--progress")
        .arg(&counted);
    match pick {
        Pick::Id(id) => cmd.args(["--backup-id", id]),
        Pick::Before(t) => cmd.args(["--before", &t.to_string()]),
        Pick::BeforeLsn(l) => cmd.args(["--before-lsn", &l.to_string()]),
        Pick::Latest => &mut cmd,
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        RestoreError::Refused(format!("cannot run {}: {e}", source.program.display()))
    })?;
    let done = child.wait_with_output();
    tokio::pin!(done);
    let read = |p: &mut Progress| {
        if let Some(n) = std::fs::read_to_string(&counted)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["restoredBytes"].as_u64())
        {
            p.restored_bytes = n;
        }
    };
    let out = loop {
        tokio::select! {
            r = &mut done => break r,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                read(p);
                report(progress, p);
            }
        }
    };
    read(p);
    let _ = std::fs::remove_file(&counted);
    let out = out.map_err(|e| RestoreError::Refused(format!("cnpg-cloud restore: {e}")))?;
    if !out.status.success() {
        return Err(
            RestoreError::Refused(said(&out.stderr, "cnpg-cloud restore", out.status)).into(),
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| {
        RestoreError::Refused(format!(
            "cnpg-cloud restore printed {last:?}, not a backup: {e}"
        ))
        .into()
    })
}

/// Whether the source's archive holds the WAL file `name` (`cnpg-cloud wal-exists`).
async fn holds(source: &Source, name: &str) -> Result<bool, RecoveryError> {
    let out = tokio::process::Command::new(&source.program)
        .arg("wal-exists")
        .arg("--config")
        .arg(&source.config_path)
        .arg(name)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| {
            RestoreError::Refused(format!("cannot run {}: {e}", source.program.display()))
        })?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(
            RestoreError::Refused(said(&out.stderr, "cnpg-cloud wal-exists", out.status)).into(),
        ),
    }
}

/// What a failed program said (its last line of error output), without the program's own
/// `error: <what>:` prefix.
fn said(stderr: &[u8], what: &str, status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = line
        .strip_prefix(what)
        .map(|rest| rest.split_once(": ").map_or(rest, |(_, r)| r))
        .unwrap_or(line);
    if line.is_empty() {
        format!("{what} failed ({status})")
    } else {
        line.trim().to_owned()
    }
}

/// The progress file of the instance whose PGDATA is `pgdata`.
pub fn progress_file(pgdata: &Path) -> PathBuf {
    pgdata
        .parent()
        .unwrap_or(pgdata)
        .join("recovery-progress.json")
}

/// What to recover from, and to where.
#[derive(Debug, Clone)]
pub struct Source {
    /// The source's object store.
    pub config: ArchiveConfig,
    /// Its file, which `restore_command` reads (PostgreSQL's user must be able to).
    pub config_path: PathBuf,
    /// `cnpg-cloud`.
    pub program: PathBuf,
    /// The backup to start from (`backupID`); otherwise chosen from the target.
    pub backup_id: Option<String>,
    /// Where to stop.
    pub target: Target,
}

impl Source {
    /// Which backup to restore: the one named, else the newest that ended before a time
    /// or LSN target, else the newest.
    pub fn pick(&self) -> Result<Pick, RecoveryError> {
        if let Some(id) = &self.backup_id {
            return Ok(Pick::Id(id.clone()));
        }
        if let Some(t) = &self.target.time {
            return Ok(Pick::Before(cnpg_core::recovery::target_time(t)?));
        }
        if let Some(l) = &self.target.lsn {
            let lsn = l.parse().map_err(|e: cnpg_core::lsn::LsnParseError| {
                cnpg_core::recovery::TargetError {
                    field: "targetLSN",
                    why: e.to_string(),
                }
            })?;
            return Ok(Pick::BeforeLsn(lsn));
        }
        Ok(Pick::Latest)
    }

    fn target_text(&self) -> String {
        let t = &self.target;
        let what = [
            t.time.as_ref().map(|v| format!("time {v}")),
            t.lsn.as_ref().map(|v| format!("LSN {v}")),
            t.xid.as_ref().map(|v| format!("transaction {v}")),
            t.name.as_ref().map(|v| format!("restore point {v:?}")),
            t.immediate.then(|| "the end of the backup".to_owned()),
        ]
        .into_iter()
        .flatten()
        .next();
        match what {
            Some(w) if t.exclusive => format!("just before {w}"),
            Some(w) => w,
            None => "the end of the archive".to_owned(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PgError + '_ {
    move |source| PgError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the progress file (PostgreSQL's user need not read it; the operator does).
fn report(path: &Path, p: &Progress) {
    if let Ok(text) = serde_json::to_string(p) {
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Gives everything under `dir` to `run_as` (the restore ran as us).
fn own_all(run_as: Option<RunAs>, dir: &Path) -> std::io::Result<()> {
    if run_as.is_none() {
        return Ok(());
    }
    runas::own(run_as, dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            own_all(run_as, &entry.path())?;
        } else {
            // A symlink is given itself, not what it points to.
            let _ = nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &entry.path(),
                run_as.map(|r| nix::unistd::Uid::from_raw(r.uid)),
                run_as.map(|r| nix::unistd::Gid::from_raw(r.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
    Ok(())
}

/// Makes the first instance of a cluster, `new`, from `source`'s backups. `app` is the
/// application database and its owner (created when the backup lacks them); the
/// superuser, the owner and `streaming_replica` get the new cluster's credentials.
pub async fn recover(
    new: &NewInstance<'_>,
    app: (&str, &str),
    source: &Source,
) -> Result<BackupInfo, RecoveryError> {
    let data = new.data;
    let progress = progress_file(&data.path);
    let mut p = Progress {
        phase: "restoring".into(),
        target: source.target_text(),
        ..Default::default()
    };
    report(&progress, &p);
    let result = run(new, app, source, &mut p, &progress).await;
    match &result {
        Ok(_) => {
            p.phase = "done".into();
            report(&progress, &p);
        }
        Err(e) => {
            // Nothing half-made may be taken for an instance: empty the directory again,
            // before saying so (`local up` and the tests act on "failed" at once).
            data.empty();
            let _ = std::fs::remove_dir_all(crate::restore::spool(&data.path));
            p.phase = "failed".into();
            p.error = Some(e.to_string());
            report(&progress, &p);
        }
    }
    result
}

async fn run(
    new: &NewInstance<'_>,
    (app_db, app_owner): (&str, &str),
    source: &Source,
    p: &mut Progress,
    progress: &Path,
) -> Result<BackupInfo, RecoveryError> {
    let NewInstance {
        run_as,
        ctl,
        data,
        secrets,
        cluster,
        instance,
    } = *new;
    // Refused before a byte is restored.
    let settings = source.target.settings()?;
    let pick = source.pick()?;
    let info = restore_through(source, &pick, &data.path, p, progress).await?;
    p.backup_id = Some(info.backup_id.clone());
    p.backup_bytes = info.size;
    // A backup taken on a standby is complete before the primary has archived the WAL
    // that makes it consistent (PostgreSQL cannot wait for that on a standby): the source
    // archives it at its next segment switch, at the latest after `archive_timeout`.
    // Replaying before would end at the archive's end, short of consistency.
    if let Some(end) = info.end_wal.clone() {
        let deadline = std::time::Instant::now() + END_WAL_WAIT;
        while !holds(source, &end).await? {
            if std::time::Instant::now() > deadline {
                return Err(RecoveryError::Replay(format!(
                    "the archive still lacks {end}, the last WAL file backup {} needs, after {} \
                     s: the source archives it at its next WAL switch (archive_timeout); \
                     recover again once it has, or from another backup",
                    info.backup_id,
                    END_WAL_WAIT.as_secs()
                )));
            }
            p.phase = format!("waiting for {end} to be archived");
            report(progress, p);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    p.phase = "replaying".into();
    report(progress, p);
    let pgdata = &data.path;
    // What the source's servers left that this one must not use: how a standby followed
    // its primary, the source's configuration (this cluster's instance manager writes its
    // own), its replication slots (they would hold WAL for standbys that do not exist).
    for f in [
        "standby.signal",
        "postmaster.pid",
        "postmaster.opts",
        "custom.conf",
        "override.conf",
        "recovery.conf",
    ] {
        let _ = std::fs::remove_file(pgdata.join(f));
    }
    if let Ok(slots) = std::fs::read_dir(pgdata.join("pg_replslot")) {
        for s in slots.flatten() {
            let _ = std::fs::remove_dir_all(s.path());
        }
    }
    let write = |name: &str, text: &str| -> Result<(), PgError> {
        let path = pgdata.join(name);
        std::fs::write(&path, text).map_err(io(&path))
    };
    write(
        "postgresql.conf",
        &format!(
            "# Recovered by cnpg-instance from backup {} of {}.{}",
            info.backup_id,
            source.config.server_name,
            crate::config::INCLUDES
        ),
    )?;
    write("custom.conf", "")?;
    write("override.conf", "")?;
    write("recovery.signal", "")?;
    // The new cluster's first archive checks that its destination holds no WAL yet.
    write(CHECK_EMPTY_MARK, "")?;
    data.mark(cluster, instance, run_as)
        .map_err(|e| PgError::Query(e.to_string()))?;
    own_all(run_as, pgdata).map_err(io(pgdata))?;

    // The replaying server: a private socket, a log of its own.
    let base = pgdata.parent().unwrap_or(pgdata).to_owned();
    let socket = base.join("recovery-socket");
    let _ = std::fs::remove_dir_all(&socket);
    std::fs::create_dir_all(&socket).map_err(io(&socket))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&socket))?;
    }
    runas::own(run_as, &socket).map_err(io(&socket))?;
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "postgres".to_owned());
    let (hba, ident_file) = (socket.join("pg_hba.conf"), socket.join("pg_ident.conf"));
    std::fs::write(&hba, "local all all peer map=recovery\n").map_err(io(&hba))?;
    std::fs::write(
        &ident_file,
        format!("recovery {me} postgres\nrecovery postgres postgres\n"),
    )
    .map_err(io(&ident_file))?;
    for f in [&hba, &ident_file] {
        runas::own(run_as, f).map_err(io(f))?;
    }
    let log = base.join("recovery.log");
    let log_file = std::fs::File::create(&log).map_err(io(&log))?;
    runas::own(run_as, &log).map_err(io(&log))?;
    let restore_command = format!(
        "{} wal-restore --config {} %f %p",
        shell_quote(&source.program),
        shell_quote(&source.config_path)
    );
    let mut cmd = ctl.postmaster();
    let mut set = |k: &str, v: &str| {
        cmd.arg("-c").arg(format!("{k}={v}"));
    };
    set("listen_addresses", "");
    set("port", "5432");
    set("unix_socket_directories", &socket.display().to_string());
    set("hba_file", &hba.display().to_string());
    set("ident_file", &ident_file.display().to_string());
    set("hot_standby", "off");
    set("archive_mode", "off");
    set("ssl", "off");
    set("logging_collector", "off");
    set("shared_preload_libraries", "");
    set("restore_command", &restore_command);
    for (k, v) in &settings {
        set(k, v);
    }
    // Killed if anything after this fails (the caller then empties the data directory):
    // a postmaster left running on a directory being removed would be a stray server.
    let mut child = cmd
        .stdout(log_file.try_clone().map_err(io(&log))?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PgError::Spawn {
            program: "postgres".into(),
            source,
        })?;
    let mut seen = Replayed::default();
    let replayed = async {
        loop {
            if let Some(status) = child.try_wait().map_err(io(&log))? {
                return Err(replay_error(&log, &info, source, &status.to_string()));
            }
            seen.read(&log);
            if seen.files != p.wal_files {
                p.wal = seen.last.clone();
                p.wal_files = seen.files;
                report(progress, p);
            }
            if let Ok(c) = connect(&socket).await
                && let Ok(row) = c.query_one("SELECT pg_is_in_recovery()", &[]).await
                && !row.get::<_, bool>(0)
            {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let client = match replayed.await {
        Ok(c) => c,
        Err(e) => {
            let _ = child.kill().await;
            return Err(e);
        }
    };
    p.phase = "promoting".into();
    report(progress, p);
    let su = std::fs::read_to_string(secrets.superuser()).map_err(io(&secrets.superuser()))?;
    let app_pw = std::fs::read_to_string(secrets.app()).map_err(io(&secrets.app()))?;
    let owner_exists = !client
        .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&app_owner])
        .await
        .map_err(q)?
        .is_empty();
    let db_exists = !client
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&app_db])
        .await
        .map_err(q)?
        .is_empty();
    let repl_exists = !client
        .query(
            "SELECT 1 FROM pg_roles WHERE rolname = 'streaming_replica'",
            &[],
        )
        .await
        .map_err(q)?
        .is_empty();
    let mut sql = format!("ALTER ROLE postgres PASSWORD {};\n", literal(su.trim()));
    sql.push_str(if repl_exists {
        "ALTER ROLE streaming_replica LOGIN REPLICATION PASSWORD NULL;\n"
    } else {
        "CREATE ROLE streaming_replica LOGIN REPLICATION;\n"
    });
    sql.push_str(REWIND_GRANTS);
    sql.push_str(&format!(
        "{} ROLE {} LOGIN PASSWORD {};\n",
        if owner_exists { "ALTER" } else { "CREATE" },
        ident(app_owner),
        literal(app_pw.trim())
    ));
    client.batch_execute(&sql).await.map_err(q)?;
    if !db_exists {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} OWNER {}",
                ident(app_db),
                ident(app_owner)
            ))
            .await
            .map_err(q)?;
    }
    client.batch_execute("CHECKPOINT").await.map_err(q)?;
    drop(client);
    // A fast shutdown; the manager starts it for good as this cluster's primary.
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    match tokio::time::timeout(Duration::from_secs(300), child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => {
            return Err(RecoveryError::Replay(format!(
                "the recovered server did not shut down cleanly ({s}); see {}",
                log.display()
            )));
        }
        Ok(Err(e)) => {
            return Err(PgError::Io {
                path: log,
                source: e,
            }
            .into());
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(RecoveryError::Replay(format!(
                "the recovered server did not shut down within 300 s; see {}",
                log.display()
            )));
        }
    }
    let _ = std::fs::remove_dir_all(&socket);
    let _ = std::fs::remove_dir_all(crate::restore::spool(pgdata));
    seen.read(&log);
    p.wal = seen.last;
    p.wal_files = seen.files;
    Ok(info)
}

fn q(e: tokio_postgres::Error) -> PgError {
    PgError::Query(e.to_string())
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

async fn connect(socket: &Path) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(socket)
        .port(5432)
        .user("postgres")
        .dbname("postgres")
        .application_name("cnpg-instance recover")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The WAL files the log says were restored from the archive, read as the log grows: each
/// look reads only what was appended since the last (a long replay logs a line per file).
#[derive(Default)]
struct Replayed {
    /// How far the log has been read, up to the end of its last whole line.
    offset: u64,
    /// The last file restored.
    last: Option<String>,
    /// How many were.
    files: u64,
}

impl Replayed {
    fn read(&mut self, log: &Path) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(log) else {
            return;
        };
        let mut new = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut new).is_err() {
            return;
        }
        // A line still being written is read again next time, whole.
        let whole = new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.offset += whole as u64;
        for line in String::from_utf8_lossy(&new[..whole]).lines() {
            if let Some(rest) = line.split("restored log file \"").nth(1)
                && let Some(name) = rest.split('"').next()
            {
                self.files += 1;
                self.last = Some(name.to_owned());
            }
        }
    }
}

/// Why replay stopped, from PostgreSQL's own last words, with what to do about it.
fn replay_error(log: &Path, info: &BackupInfo, source: &Source, status: &str) -> RecoveryError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let said: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("FATAL:")
                || l.contains("PANIC:")
                || l.contains("error: cnpg-cloud")
                || l.contains("DETAIL:")
                || l.contains("HINT:")
        })
        .collect();
    let all = said.join(" / ");
    let backup = format!(
        "backup {} (ended {}{})",
        info.backup_id,
        info.end_time.as_deref().unwrap_or("at an unknown time"),
        info.end_lsn
            .map(|l| format!(", at LSN {l}"))
            .unwrap_or_default()
    );
    let what = if all.contains("recovery ended before configured recovery target was reached") {
        format!(
            "the archive ends before {}: no WAL reaches it (choose an earlier target, or none \
             to recover everything the archive holds)",
            source.target_text()
        )
    } else if all.contains("before consistent recovery point") {
        format!(
            "{} lies before the end of {backup}: choose a later target, or an earlier backup \
             with backupID",
            source.target_text()
        )
    } else if all.contains("is not in the archive, which holds") {
        "a WAL segment is missing in the middle of the archive, so replay stopped there \
         rather than end early"
            .to_owned()
    } else if all.contains("database system identifier") {
        format!(
            "the archive's WAL belongs to another database system than {backup} (check \
             serverName and destinationPath)"
        )
    } else if all.contains("WAL ends before end of online backup")
        || all.contains("could not locate required checkpoint record")
    {
        format!("the archive lacks WAL that {backup} needs to become consistent")
    } else {
        format!("PostgreSQL stopped replaying ({status})")
    };
    RecoveryError::Replay(format!(
        "recovery to {} failed: {what}. PostgreSQL said: {}. Full log: {}",
        source.target_text(),
        if all.is_empty() { "nothing" } else { &all },
        log.display()
    ))
}
