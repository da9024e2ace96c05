//! Base backups against a real S3 API server (moto, on loopback) and real PostgreSQL,
//! judged by barman-cloud's own tools: they list ours and restore it into a PostgreSQL
//! that replays our archived WAL to the end; we list theirs.

use cnpg_instance::archive::{ArchiveConfig, Compression};
use cnpg_instance::backup::BackupInfo;
use cnpg_instance::config::Archive;
use cnpg_instance::testkit::{Harness, S3Server, free_port, instance_binary};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

fn cloud() -> PathBuf {
    instance_binary(false).with_file_name(cnpg_instance::archive::PROGRAM)
}

fn config(s3: &S3Server) -> ArchiveConfig {
    let mut c = s3.archive_config("s3://backups/cnpg", "pg", ("test-key", "test-secret"));
    c.max_parallel = 4;
    c.data.compression = Some(Compression::Gzip);
    // A spread checkpoint may take minutes (checkpoint_completion_target of 5 min).
    c.data.immediate_checkpoint = true;
    c
}

fn archive_with(h: &mut Harness, cfg: &ArchiveConfig) -> PathBuf {
    let path = h.secrets.dir.join("archive.json");
    cnpg_instance::tls::write_private(&path, &serde_json::to_string(cfg).expect("json"), h.run_as)
        .expect("archive.json");
    h.archive = Some(Archive {
        program: cloud(),
        config: path.clone(),
    });
    path
}

/// A command run as the user PostgreSQL runs as, with the store's credentials.
fn as_postgres(h: &Harness, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env("AWS_ACCESS_KEY_ID", "test-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1");
    if let Some(r) = h.run_as {
        r.apply(&mut cmd);
    }
    cmd
}

async fn run(cmd: &mut tokio::process::Command, what: &str) -> String {
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e} (barman-cli-cloud: .ci/run installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {text}");
    assert!(
        !text.contains("test-secret"),
        "{what} printed the secret: {text}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cfg` with base backups compressed by `compression`, written beside the harness: its path.
fn data_compressed(h: &Harness, cfg: &ArchiveConfig, compression: Option<Compression>) -> PathBuf {
    let mut c = cfg.clone();
    c.data.compression = compression;
    let name = compression.map_or("plain", Compression::name);
    let p = h.root.path().join(format!("{name}.json"));
    cnpg_instance::tls::write_private(&p, &serde_json::to_string(&c).expect("json"), h.run_as)
        .expect("config");
    p
}

/// `cnpg-cloud backup` of `name` with `cfg`, labelled `label`, to be run.
fn backup_command(h: &Harness, cfg: &Path, name: &str, label: &str) -> tokio::process::Command {
    let i = &h.instances[name];
    let mut cmd = as_postgres(h, cloud());
    cmd.arg("backup")
        .arg("--config")
        .arg(cfg)
        .arg("--pgdata")
        .arg(&i.pgdata)
        .arg("--socket-dir")
        .arg(h.root.path().join(name).join("run"))
        .args(["--port", &i.port.to_string(), "--name", label]);
    cmd
}

/// `cnpg-cloud backup` of `name`; what it reports.
async fn backup(h: &Harness, cfg: &Path, name: &str, label: &str) -> BackupInfo {
    let out = run(
        &mut backup_command(h, cfg, name, label),
        "cnpg-cloud backup",
    )
    .await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `cnpg-cloud backup-list --json` with `cfg`.
async fn backup_list(h: &Harness, cfg: &Path) -> Vec<BackupInfo> {
    let out = run(
        as_postgres(h, cloud())
            .args(["backup-list", "--json", "--config"])
            .arg(cfg),
        "cnpg-cloud backup-list",
    )
    .await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Starts the PostgreSQL restored in `dir/data` with `restore_command` = `restore`, waits
/// for its recovery to end, and stops it: `false <rows in t>` once it ran as a primary
/// (none if it never did), and its log.
async fn replay(h: &Harness, dir: &Path, restore: &str) -> (Option<String>, String) {
    let data = dir.join("data");
    std::fs::write(data.join("recovery.signal"), "").expect("recovery.signal");
    cnpg_instance::runas::own(h.run_as, &data.join("recovery.signal")).expect("own");
    started(h, dir, &format!("-c restore_command='{restore}'")).await
}

/// Starts the PostgreSQL in `dir/data` (on a socket in `dir`, with `opts`), waits until it
/// runs as a primary, and stops it: `false <rows in t>` once it did (none if it never
/// did), and its log.
async fn started(h: &Harness, dir: &Path, opts: &str) -> (Option<String>, String) {
    let data = dir.join("data");
    let port = free_port();
    let opts = format!(
        "-p {port} -c listen_addresses='' -c unix_socket_directories='{}' -c archive_mode=off \
         -c ssl=off {opts}",
        dir.display()
    );
    let started = as_postgres(h, h.bin.program("pg_ctl"))
        .args(["start", "-w", "-t", "120", "-D"])
        .arg(&data)
        .args(["-l"])
        .arg(dir.join("log"))
        .args(["-o", &opts])
        .status()
        .await
        .expect("pg_ctl");
    let log = || std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    if !started.success() {
        return (None, log());
    }
    let conninfo = format!(
        "host={} port={port} user=postgres dbname=postgres",
        dir.display()
    );
    let mut restored = None;
    for _ in 0..600 {
        let out = h
            .psql(
                &conninfo,
                "SELECT pg_is_in_recovery()::text || ' ' || count(*) FROM t",
            )
            .await;
        if let Ok(o) = &out
            && o.trim().starts_with("false")
        {
            restored = Some(o.trim().to_owned());
            break;
        }
        if !data.join("postmaster.pid").exists() {
            // It stopped (a FATAL in recovery): nothing more to wait for.
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = as_postgres(h, h.bin.program("pg_ctl"))
        .args(["stop", "-m", "immediate", "-D"])
        .arg(&data)
        .output()
        .await;
    (restored, log())
}

/// `barman-cloud-backup --gzip` of `pg-1` named `by-barman` into `s3://backups/cnpg`, a
/// second after whatever came before (barman's ids are to the second).
async fn barman_backup(h: &Harness, s3: &S3Server) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(
        as_postgres(h, "barman-cloud-backup")
            .args([
                "--endpoint-url",
                &s3.endpoint,
                "--gzip",
                "--immediate-checkpoint",
                "-h",
            ])
            .arg(h.root.path().join("pg-1").join("run"))
            .args(["-p", &h.instances["pg-1"].port.to_string()])
            .args(["--name", "by-barman", "s3://backups/cnpg", "pg"]),
        "barman-cloud-backup",
    )
    .await;
}

/// A primary `pg-1` archiving to `s3` (bucket `backups`, made here): the harness, the
/// archive configuration's path and a connection.
async fn archiving_primary(s3: &S3Server) -> (Harness, PathBuf, tokio_postgres::Client) {
    s3.create_bucket("backups");
    let mut h = Harness::new("pg");
    let cfg_path = archive_with(&mut h, &config(s3));
    h.running_primary("pg-1").await;
    let db = h.connect("pg-1").await;
    (h, cfg_path, db)
}

async fn count(h: &Harness, name: &str) -> i64 {
    h.connect(name)
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_of_primary_and_standby_are_restored_by_barman_cloud_and_theirs_are_listed() {
    let s3 = S3Server::start();
    let cfg = config(&s3);
    let (mut h, cfg_path, db) = archiving_primary(&s3).await;
    db.batch_execute(
        "CREATE TABLE t (n int, pad text); \
         INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g",
    )
    .await
    .expect("data");
    h.join("pg-2", "pg-1").await;
    h.start("pg-2").await;

    // From the primary, bzip2-compressed.
    let first = backup(
        &h,
        &data_compressed(&h, &cfg, Some(Compression::Bzip2)),
        "pg-1",
        "from-primary",
    )
    .await;
    assert_eq!(first.compression.as_deref(), Some("bzip2"));
    assert_eq!(first.status, "DONE", "{first:?}");
    assert_eq!(first.backup_name.as_deref(), Some("from-primary"));
    assert!(
        first.begin_wal.is_some() && first.end_wal.is_some(),
        "{first:?}"
    );
    assert!(first.size.unwrap_or(0) > 10 << 20, "{first:?}");

    // Written after the backup: only the archived WAL brings these back.
    db.batch_execute(
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1, 1000) g; SELECT pg_switch_wal()",
    )
    .await
    .expect("more");
    let want = count(&h, "pg-1").await;
    assert_eq!(want, 101_000);

    // From the standby, in snappy's framing format; a second later, so its id differs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let snappy = data_compressed(&h, &cfg, Some(Compression::Snappy));
    h.wait_until("the standby has everything", T, async |h| {
        match count(h, "pg-2").await {
            n if n == want => Ok(()),
            n => Err(format!("{n} rows")),
        }
    })
    .await;
    let second = backup(&h, &snappy, "pg-2", "from-standby").await;
    assert_eq!(second.status, "DONE", "{second:?}");
    assert_ne!(second.backup_id, first.backup_id);

    // barman-cloud-backup itself, into the same place: we read what it wrote.
    barman_backup(&h, &s3).await;
    let ours = backup_list(&h, &cfg_path).await;
    let names: Vec<_> = ours
        .iter()
        .map(|b| (b.backup_name.clone().unwrap_or_default(), b.status.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("from-primary".to_owned(), "DONE".to_owned()),
            ("from-standby".into(), "DONE".into()),
            ("by-barman".into(), "DONE".into())
        ]
    );
    assert!(
        ours[2].begin_lsn.is_some() && ours[2].backup_label.is_some(),
        "{:?}",
        ours[2]
    );

    // barman-cloud lists ours, with their ids.
    let listed = run(
        as_postgres(&h, "barman-cloud-backup-list").args([
            "--endpoint-url",
            &s3.endpoint,
            "s3://backups/cnpg",
            "pg",
        ]),
        "barman-cloud-backup-list",
    )
    .await;
    for b in [&first, &second] {
        assert!(listed.contains(&b.backup_id), "{listed}");
    }

    // And restores each of ours into a PostgreSQL that replays our archive to its end (the
    // snappy one by hand, see below).
    for b in [&first, &second] {
        let dir = h.root.path().join(format!("restored-{}", b.backup_id));
        std::fs::create_dir_all(&dir).expect("mkdir");
        cnpg_instance::runas::own(h.run_as, &dir).expect("own");
        let data = dir.join("data");
        if b.compression.as_deref() == Some("snappy") {
            // barman-cloud-restore reads snappy with python-snappy, which Debian 12's Python
            // cannot load: its steps by hand, with python-snappy from PyPI and GNU tar.
            let key = format!("cnpg/pg/base/{}/data.tar.snappy", b.backup_id);
            let stored = cnpg_instance::archive::Destination::open(&cfg)
                .expect("destination")
                .read(&key)
                .await
                .expect("the snappy tarball");
            let tarball = dir.join("data.tar");
            let tar = cnpg_instance::testkit::reference_decompress(Compression::Snappy, stored);
            std::fs::write(&tarball, tar).expect("tarball");
            std::fs::create_dir(&data).expect("mkdir");
            for p in [&tarball, &data] {
                cnpg_instance::runas::own(h.run_as, p).expect("own");
            }
            run(
                as_postgres(&h, "tar")
                    .args(["-x", "-p", "-f"])
                    .arg(&tarball)
                    .arg("-C")
                    .arg(&data),
                "tar -x",
            )
            .await;
        } else {
            run(
                as_postgres(&h, "barman-cloud-restore")
                    .args(["--endpoint-url", &s3.endpoint, "s3://backups/cnpg", "pg"])
                    .arg(&b.backup_id)
                    .arg(&data),
                "barman-cloud-restore",
            )
            .await;
        }
        assert!(
            data.join("backup_label").exists(),
            "the label is in the tarball"
        );
        let restore = format!(
            "barman-cloud-wal-restore --endpoint-url {} s3://backups/cnpg pg %f %p",
            s3.endpoint
        );
        let (restored, log) = replay(&h, &dir, &restore).await;
        assert_eq!(
            restored.as_deref(),
            Some(format!("false {want}").as_str()),
            "{}: {log}",
            b.backup_id
        );
    }

    // Retention (a recovery window of a day): today everything is inside it and stays;
    // two days on, only the newest backup (barman's) is needed to recover to the window's
    // start, and the WAL before its first segment goes — never its own.
    let retention = |now: jiff::Timestamp| {
        let mut cmd = as_postgres(&h, cloud());
        cmd.args([
            "retention",
            "--policy",
            "1d",
            "--now",
            &now.to_string(),
            "--config",
        ])
        .arg(&cfg_path);
        cmd
    };
    let said = run(
        &mut retention(jiff::Timestamp::now()),
        "cnpg-cloud retention",
    )
    .await;
    assert_eq!(
        cnpg_instance::backup::list(&cfg).await.expect("list").len(),
        3,
        "{said}"
    );
    let wal_before = cnpg_instance::archive::Destination::open(&cfg)
        .expect("archive")
        .list_wal()
        .await
        .expect("wal");
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let out = retention(later).output().await.expect("runs");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    let left: Vec<BackupInfo> = cnpg_instance::backup::list(&cfg)
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.expect("readable"))
        .collect();
    assert_eq!(
        left.iter()
            .map(|b| b.backup_name.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["by-barman"],
        "{said}"
    );
    let keep_from = left[0].begin_wal.clone().expect("begin_wal");
    let wal_after = cnpg_instance::archive::Destination::open(&cfg)
        .expect("archive")
        .list_wal()
        .await
        .expect("wal");
    let segment = |k: &String| {
        k.rsplit('/')
            .next()
            .unwrap_or(k)
            .split('.')
            .next()
            .unwrap_or(k)
            .to_owned()
    };
    assert!(
        wal_after
            .iter()
            .all(|k| k.contains(".history") || segment(k) >= keep_from),
        "{wal_after:?}"
    );
    assert!(
        wal_after.iter().any(|k| segment(k) == keep_from),
        "{wal_after:?}"
    );
    assert!(wal_after.len() < wal_before.len(), "{said}");
    // barman-cloud agrees: one backup.
    let listed = run(
        as_postgres(&h, "barman-cloud-backup-list").args([
            "--endpoint-url",
            &s3.endpoint,
            "s3://backups/cnpg",
            "pg",
        ]),
        "barman-cloud-backup-list",
    )
    .await;
    assert!(
        !listed.contains(&first.backup_id) && !listed.contains(&second.backup_id),
        "{listed}"
    );

    // Through the instance manager, as the operator asks: started once whatever the
    // number of asks, followed to its end, and a bad name refused.
    let sp = h.instances["pg-2"].status_port;
    let ask = |body: &'static str| {
        cnpg_instance::http::post_authorized(
            "127.0.0.1",
            sp,
            "/pg/backup",
            Duration::from_secs(5),
            None,
            body.to_owned(),
        )
    };
    let (code, body) = ask(r#"{"name":"via-manager"}"#).await.expect("post");
    assert_eq!(code, 202, "{body}");
    let (code, again) = ask(r#"{"name":"via-manager"}"#).await.expect("post");
    assert_eq!(code, 202, "{again}");
    let (code, bad) = ask(r#"{"name":"Via/Manager"}"#).await.expect("post");
    assert_eq!(code, 400, "{bad}");
    assert!(bad.contains("Via/Manager"), "{bad}");
    let mut done = None;
    for _ in 0..600 {
        let (_, body) = cnpg_instance::http::get(
            "127.0.0.1",
            sp,
            "/pg/backup/via-manager",
            Duration::from_secs(5),
        )
        .await
        .expect("get");
        let info: BackupInfo = serde_json::from_str(&body).expect("json");
        if info.status != "STARTED" {
            done = Some(info);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = done.expect("the backup ends");
    assert_eq!(done.status, "DONE", "{done:?}");
    assert!(done.end_lsn.is_some(), "{done:?}");

    // A store that is not there: the backup fails saying which, and says so in its status.
    let missing = {
        let mut c = cfg.clone();
        c.destination_path = "s3://no-such-bucket/cnpg".into();
        let p = h.root.path().join("missing.json");
        cnpg_instance::tls::write_private(&p, &serde_json::to_string(&c).expect("json"), h.run_as)
            .expect("missing.json");
        p
    };
    let i = &h.instances["pg-1"];
    let out = as_postgres(&h, cloud())
        .arg("backup")
        .arg("--config")
        .arg(&missing)
        .arg("--pgdata")
        .arg(&i.pgdata)
        .arg("--socket-dir")
        .arg(h.root.path().join("pg-1").join("run"))
        .args(["--port", &i.port.to_string()])
        .output()
        .await
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no-such-bucket"), "{err}");
    assert!(!err.contains("test-secret"), "{err}");
}

/// The store goes away in the middle of a backup: the backup gives up within its retries,
/// saying which store, its status says FAILED, PostgreSQL is not left in backup mode, and
/// the next backup, once the store is back (empty: moto keeps nothing), completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lost_mid_backup_fails_it_and_the_next_one_completes() {
    let mut s3 = S3Server::start();
    s3.create_bucket("backups");
    let mut cfg = config(&s3);
    // No WAL archive here: the backup alone is under test.
    cfg.data.compression = None;
    let mut h = Harness::new("pg");
    let cfg_path = h.root.path().join("archive.json");
    cnpg_instance::tls::write_private(
        &cfg_path,
        &serde_json::to_string(&cfg).expect("json"),
        h.run_as,
    )
    .expect("archive.json");
    h.running_primary("pg-1").await;
    let db = h.connect("pg-1").await;
    // Enough data that the upload takes a while: random text does not shrink.
    db.batch_execute(
        "CREATE TABLE t AS SELECT g AS n, md5(random()::text) || md5(random()::text) AS pad \
         FROM generate_series(1, 2000000) g",
    )
    .await
    .expect("data");
    let status = h.root.path().join("backup-status.json");
    let child = backup_command(&h, &cfg_path, "pg-1", "cut-short")
        .arg("--status")
        .arg(&status)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cnpg-cloud runs");
    let deadline = std::time::Instant::now() + T;
    while !status.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s3.stop();
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("the backup gives up within its retries")
        .expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it cannot have completed: {err}");
    assert!(err.contains("127.0.0.1"), "says which store: {err}");
    let info: BackupInfo =
        serde_json::from_str(&std::fs::read_to_string(&status).expect("status")).expect("json");
    assert_eq!(info.status, "FAILED", "{info:?}");
    assert!(info.error.is_some(), "{info:?}");
    // PostgreSQL is not left in backup mode: a new backup starts and completes.
    s3.restart();
    s3.create_bucket("backups");
    let done = backup(&h, &cfg_path, "pg-1", "after").await;
    assert_eq!(done.status, "DONE", "{done:?}");
}

/// An access key the store does not know: archiving fails and the instance's status says
/// why in the store's own words (never the secret), the WAL waits in `pg_wal`, and a base
/// backup fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_archiving_and_backups_saying_why_and_keep_the_wal() {
    let s3 = S3Server::start_checking_credentials();
    let (h, cfg_path, db) = archiving_primary(&s3).await;
    db.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 1000) n")
        .await
        .expect("data");
    let segment: String = db
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .expect("a segment switch")
        .get(0);
    let mut error = String::new();
    h.wait_until("archiving shown failing", T, async |h| {
        error = h.status("pg-1").await.archiving.archive_error;
        if error.contains("InvalidAccessKeyId") {
            Ok(())
        } else {
            Err(format!("archive error {error:?}"))
        }
    })
    .await;
    assert!(!error.contains("test-secret"), "{error}");
    let pg_wal = h.instances["pg-1"].pgdata.join("pg_wal");
    assert!(pg_wal.join(&segment).exists(), "{segment} kept");
    assert!(
        pg_wal
            .join("archive_status")
            .join(format!("{segment}.ready"))
            .exists(),
        "{segment} still to archive"
    );
    let out = backup_command(&h, &cfg_path, "pg-1", "refused")
        .output()
        .await
        .expect("cnpg-cloud runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // Refused at its first request (a HEAD: S3 answers it without a body), before
    // PostgreSQL is put in backup mode.
    assert!(
        err.contains("403 Forbidden") && err.contains("s3Credentials"),
        "{err}"
    );
    assert!(!err.contains("test-secret"), "{err}");
}

/// Azure Blob Storage, against Azurite (Microsoft's emulator, which checks Shared Key
/// signatures as Azure does), with a connection string as `azureCredentials` gives it: WAL
/// archived by PostgreSQL's `archive_command` where barman-cloud puts it, a base backup
/// (Azure's block uploads), listed; a wrong key fails archiving, saying what to check, and
/// the WAL stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_and_backups_reach_azure_blob_storage() {
    use cnpg_instance::archive::Destination;
    use cnpg_instance::testkit::AzureServer;
    let azure = AzureServer::start();
    azure.create_container("backups");
    let mut cfg = azure.archive_config("backups/cnpg", "pg");
    cfg.max_parallel = 2;
    cfg.data.compression = Some(Compression::Gzip);
    cfg.data.immediate_checkpoint = true;
    let mut h = Harness::new("pg");
    let cfg_path = archive_with(&mut h, &cfg);
    h.running_primary("pg-1").await;
    let db = h.connect("pg-1").await;
    for _ in 0..3 {
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS t (n int); INSERT INTO t SELECT generate_series(1, 1000); \
             SELECT pg_switch_wal()",
        )
        .await
        .expect("writes and a WAL switch");
    }
    h.wait_until("three segments archived", T, async |h| {
        let (n, failed): (i64, i64) = {
            let row = h
                .connect("pg-1")
                .await
                .query_one(
                    "SELECT archived_count, failed_count FROM pg_stat_archiver",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            (row.get(0), row.get(1))
        };
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} archived, {failed} failed"))
        }
    })
    .await;
    // Before a checkpoint recycles it.
    let first_segment = std::fs::read(
        h.instances["pg-1"]
            .pgdata
            .join("pg_wal")
            .join("000000010000000000000001"),
    )
    .expect("the first segment");
    let dest = Destination::open(&cfg).expect("destination");
    let keys = dest.list_wal().await.expect("listing");
    assert!(
        keys.iter()
            .any(|k| k == "cnpg/pg/wals/0000000100000000/000000010000000000000001.gz"),
        "{keys:?}"
    );

    let info = backup(&h, &cfg_path, "pg-1", "to-azure").await;
    assert_eq!(info.status, "DONE", "{info:?}");
    let listed = backup_list(&h, &cfg_path).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].backup_id, info.backup_id);

    // barman-cloud (Debian's, with azure-storage-blob beside it) lists the backup and
    // restores a segment byte for byte: the layout is theirs on Azure too.
    let barman = |tool: &str| {
        let mut cmd = as_postgres(&h, tool);
        cmd.env(
            "PYTHONPATH",
            cnpg_instance::testkit::barman_azure_pythonpath(),
        )
        .env("AZURE_STORAGE_CONNECTION_STRING", azure.connection_string())
        .args(["--cloud-provider", "azure-blob-storage"]);
        cmd
    };
    let url = format!("{}/backups/cnpg", azure.endpoint);
    let theirs = run(
        barman("barman-cloud-backup-list").args([&url, "pg"]),
        "barman-cloud-backup-list",
    )
    .await;
    assert!(theirs.contains(&info.backup_id), "{theirs}");
    let restored = h.root.path().join("restored-segment");
    cnpg_instance::runas::own(h.run_as, h.root.path()).expect("own");
    run(
        barman("barman-cloud-wal-restore")
            .args([&url, "pg", "000000010000000000000001"])
            .arg(&restored),
        "barman-cloud-wal-restore",
    )
    .await;
    assert!(std::fs::read(&restored).expect("restored") == first_segment);

    // A key Azure does not take: refused, the segment kept, and the error says why.
    let mut wrong = cfg.clone();
    wrong.azure = Some(cnpg_instance::archive::AzureCredentials {
        connection_string: Some(
            azure
                .connection_string()
                .replace("AccountKey=E", "AccountKey=F"),
        ),
        ..Default::default()
    });
    let wrong_path = h.root.path().join("wrong.json");
    cnpg_instance::tls::write_private(
        &wrong_path,
        &serde_json::to_string(&wrong).expect("json"),
        h.run_as,
    )
    .expect("wrong.json");
    let pgdata = h.root.path().join("other");
    let seg = pgdata.join("pg_wal").join("000000010000000000000009");
    std::fs::create_dir_all(seg.parent().expect("pg_wal")).expect("pg_wal");
    std::fs::write(&seg, vec![7u8; 1 << 20]).expect("a segment");
    let out = std::process::Command::new(cloud())
        .args(["wal-archive", "--config"])
        .arg(&wrong_path)
        .arg("--pgdata")
        .arg(&pgdata)
        .arg("pg_wal/000000010000000000000009")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.trim().lines().count() == 1, "one line: {err}");
    assert!(
        err.contains("check the credentials in barmanObjectStore.azureCredentials"),
        "{err}"
    );
    assert!(!err.contains(cnpg_instance::testkit::AZURITE_KEY), "{err}");
    assert!(seg.exists());
}

/// Recovery with our own tools: `cnpg-cloud restore` unpacks a base backup (ours, then
/// barman-cloud's) and PostgreSQL replays the archive to its end through `cnpg-cloud
/// wal-restore` (fetching ahead, `maxParallel` 4), every row back. What cannot be restored
/// says why and changes nothing: a directory that is not empty, a time before the first
/// backup; and a segment missing in the archive's middle stops recovery instead of ending
/// it early with rows silently gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_restored_and_replayed_by_cnpg_cloud_and_a_gap_stops_recovery() {
    let s3 = S3Server::start();
    let (h, cfg_path, db) = archiving_primary(&s3).await;
    db.batch_execute(
        "CREATE TABLE t (n int, pad text); \
         INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g",
    )
    .await
    .expect("data");
    let ours = backup(&h, &cfg_path, "pg-1", "ours").await;
    assert_eq!(ours.status, "DONE", "{ours:?}");
    barman_backup(&h, &s3).await;
    // Rows only the archived WAL brings back, over several segments.
    for _ in 0..3 {
        db.batch_execute(
            "INSERT INTO t SELECT g, repeat('y', 100) FROM generate_series(1, 20000) g",
        )
        .await
        .expect("more");
        h.switch_and_archive("pg-1", T).await;
    }
    let want = count(&h, "pg-1").await;
    let restore_command = format!(
        "{} wal-restore --config {} %f %p",
        cloud().display(),
        cfg_path.display()
    );
    let restore_into = async |label: &str, pick: &[&str]| {
        let dir = h.root.path().join(format!("restored-{label}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        cnpg_instance::runas::own(h.run_as, &dir).expect("own");
        let out = run(
            as_postgres(&h, cloud())
                .args(["restore", "--config"])
                .arg(&cfg_path)
                .arg("--pgdata")
                .arg(dir.join("data"))
                .args(pick),
            "cnpg-cloud restore",
        )
        .await;
        let info: BackupInfo = serde_json::from_str(out.trim()).expect("what was restored");
        (dir, info)
    };
    for (label, pick) in [
        ("ours", vec!["--backup-id", ours.backup_id.as_str()]),
        ("theirs", vec![]),
    ] {
        let (dir, info) = restore_into(label, &pick).await;
        if label == "theirs" {
            assert_eq!(info.backup_name.as_deref(), Some("by-barman"), "the newest");
        }
        let (restored, log) = replay(&h, &dir, &restore_command).await;
        assert_eq!(
            restored.as_deref(),
            Some(format!("false {want}").as_str()),
            "{label}: {log}"
        );
    }

    // Refusals that change nothing.
    let full = h.root.path().join("full");
    std::fs::create_dir_all(full.join("data")).expect("mkdir");
    std::fs::write(full.join("data").join("keep"), "mine").expect("a file");
    cnpg_instance::runas::own(h.run_as, &full).expect("own");
    cnpg_instance::runas::own(h.run_as, &full.join("data")).expect("own");
    let refused = as_postgres(&h, cloud())
        .args(["restore", "--config"])
        .arg(&cfg_path)
        .arg("--pgdata")
        .arg(full.join("data"))
        .output()
        .await
        .expect("runs");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("is not empty"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(full.join("data").join("keep")).expect("kept"),
        "mine"
    );
    let early = as_postgres(&h, cloud())
        .args(["restore", "--config"])
        .arg(&cfg_path)
        .arg("--pgdata")
        .arg(h.root.path().join("early"))
        .args(["--before", "2000-01-01T00:00:00Z"])
        .output()
        .await
        .expect("runs");
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(
        !early.status.success() && err.contains("first recoverability point"),
        "{err}"
    );

    // A segment gone from the middle of the archive: recovery stops there, saying why.
    let dest = cnpg_instance::archive::Destination::open(&config(&s3)).expect("destination");
    let keys = dest.list_wal().await.expect("listing");
    let segments: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(".gz") && k.rsplit('/').next().is_some_and(|f| f.len() == 27))
        .collect();
    let middle = segments[segments.len() - 2];
    dest.store()
        .delete(&middle.as_str().into())
        .await
        .expect("delete a segment");
    let (dir, _) = restore_into("gap", &["--backup-id", ours.backup_id.as_str()]).await;
    let (restored, log) = replay(&h, &dir, &restore_command).await;
    assert_eq!(restored, None, "recovery must not end at a gap: {log}");
    assert!(log.contains("missing in its middle"), "{log}");
}

/// `cnpg-instance recover` of the first instance of a new cluster, `restored`, into
/// `<root>/<label>/data`, from the store `cfg_path` describes, with `args` (the backup and
/// the target): its directory, whether it succeeded, and what it printed.
async fn recover(
    h: &Harness,
    label: &str,
    cfg_path: &Path,
    args: &[&str],
) -> (PathBuf, bool, String) {
    let dir = h.root.path().join(label);
    let out = tokio::process::Command::new(instance_binary(false))
        .arg("recover")
        .arg("--pgdata")
        .arg(dir.join("data"))
        .args(["--cluster", "restored", "--name", "restored-1", "--secrets"])
        .arg(dir.join("secrets"))
        .arg("--source-config")
        .arg(cfg_path)
        .args(args)
        .output()
        .await
        .expect("cnpg-instance runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("test-secret"), "printed the secret: {text}");
    (dir, out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_recovers_to_the_end_to_a_time_an_lsn_a_restore_point_and_an_xid() {
    let s3 = S3Server::start();
    let (h, cfg_path, db) = archiving_primary(&s3).await;
    db.batch_execute(
        "CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .expect("data");
    let ours = backup(&h, &cfg_path, "pg-1", "ours").await;
    barman_backup(&h, &s3).await;
    // After both backups: 101-200, then (a time and an LSN) 201-300 in one transaction
    // (its XID), 301-400, a restore point, 401-500.
    db.batch_execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .expect("rows");
    let at = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.expect(sql).get::<_, String>(0) }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let time = at("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')").await;
    let lsn = at("SELECT pg_current_wal_insert_lsn()::text").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tx = db.simple_query("BEGIN; INSERT INTO t SELECT generate_series(201, 300); SELECT txid_current()::text; COMMIT")
        .await
        .expect("a transaction");
    let xid = tx
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("its xid");
    // Each its own transaction (one simple query of several statements is one).
    for sql in [
        "INSERT INTO t SELECT generate_series(301, 400)",
        "SELECT pg_create_restore_point('before-the-last')",
        "INSERT INTO t SELECT generate_series(401, 500)",
    ] {
        db.batch_execute(sql).await.expect(sql);
    }
    h.switch_and_archive("pg-1", T).await;

    let rows = async |label: &str, args: &[&str]| {
        let (dir, ok, out) = recover(&h, label, &cfg_path, args).await;
        assert!(ok, "{label}: {out}");
        let progress: cnpg_instance::recovery::Progress = serde_json::from_str(
            &std::fs::read_to_string(dir.join("recovery-progress.json")).expect("progress"),
        )
        .expect("progress json");
        assert_eq!(progress.phase, "done", "{progress:?}");
        assert!(
            progress.wal_files > 0 && progress.restored_bytes > 0,
            "{progress:?}"
        );
        let (state, log) = started(&h, &dir, "").await;
        let state = state.unwrap_or_else(|| panic!("{label}: did not start: {log}"));
        state
            .strip_prefix("false ")
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{label}: {state}"))
    };
    let id = ours.backup_id.as_str();
    assert_eq!(
        rows("full", &[]).await,
        500,
        "(a) to the end of the archive"
    );
    assert_eq!(
        rows("time", &["--target-time", &time]).await,
        200,
        "(b) to {time}"
    );
    assert_eq!(
        rows("lsn", &["--target-lsn", &lsn]).await,
        200,
        "(c) to {lsn}"
    );
    assert_eq!(
        rows(
            "name",
            &["--backup-id", id, "--target-name", "before-the-last"]
        )
        .await,
        400,
        "(d) to the restore point"
    );
    assert_eq!(
        rows("xid", &["--backup-id", id, "--target-xid", &xid]).await,
        300,
        "(e) to transaction {xid}, inclusive"
    );
    assert_eq!(
        rows(
            "xid-exclusive",
            &["--backup-id", id, "--target-xid", &xid, "--exclusive"]
        )
        .await,
        200,
        "(e) to just before transaction {xid}"
    );
    // barman-cloud-backup's own backup, to a point in time.
    assert_eq!(
        rows(
            "barman",
            &[
                "--backup-id",
                &barman_id(&h, &cfg_path).await,
                "--target-name",
                "before-the-last"
            ]
        )
        .await,
        400,
        "from barman-cloud's backup"
    );

    // Targets the archive cannot reach: an error that says which, and nothing left.
    let refused = async |label: &str, args: &[&str], says: &str| {
        let (dir, ok, out) = recover(&h, label, &cfg_path, args).await;
        assert!(!ok && out.contains(says), "{label}: {out}");
        assert!(
            std::fs::read_dir(dir.join("data")).map_or(true, |mut d| d.next().is_none()),
            "{label}: a failed recovery left data behind"
        );
    };
    refused(
        "after",
        &["--target-time", "2999-01-01 00:00:00"],
        "the archive ends before time 2999",
    )
    .await;
    refused(
        "before",
        &["--target-time", "2000-01-01T00:00:00Z"],
        "first recoverability point",
    )
    .await;
    refused(
        "before-backup",
        &["--backup-id", id, "--target-lsn", "0/1000000"],
        "lies before the end of backup",
    )
    .await;
    refused(
        "no-such-name",
        &["--target-name", "never-made"],
        "the archive ends before restore point",
    )
    .await;
    refused(
        "no-backup",
        &["--backup-id", "20000101T000000"],
        "no backup 20000101T000000",
    )
    .await;
    refused(
        "bad-time",
        &["--target-time", "yesterday"],
        "recoveryTarget.targetTime",
    )
    .await;

    // A backup.info that cannot be read. (Credentials that do not work are not checked
    // here: moto accepts any; Azurite does, see the archive tests.)
    let dest = cnpg_instance::archive::Destination::open(&config(&s3)).expect("destination");
    dest.store()
        .put(
            &format!("cnpg/pg/base/{id}/backup.info").as_str().into(),
            "this is not a backup.info".into(),
        )
        .await
        .expect("overwritten");
    refused(
        "corrupt",
        &["--backup-id", id],
        "backups that cannot be read: backup",
    )
    .await;
}

/// The id of the backup barman-cloud-backup wrote (named `by-barman`).
async fn barman_id(h: &Harness, cfg: &Path) -> String {
    backup_list(h, cfg)
        .await
        .into_iter()
        .find(|b| b.backup_name.as_deref() == Some("by-barman"))
        .expect("barman's backup")
        .backup_id
}
