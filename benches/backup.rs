//! Archiving and base backups side by side with barman-cloud's own tools (Debian's
//! `barman-cli-cloud`), on the same S3 server (moto, on loopback) and the same data:
//! * WAL archiving: real WAL segments archived one `archive_command` call at a time, as
//!   PostgreSQL calls it — `cnpg-cloud wal-archive` with `maxParallel` 1 and 4 against
//!   `barman-cloud-wal-archive`, all gzip: segments per second;
//! * a base backup of a database of `BACKUP_MB` MB (default 1024): `cnpg-cloud backup`
//!   against `barman-cloud-backup`, both gzip with an immediate checkpoint: seconds and
//!   MB/s, and the peak memory of `cnpg-cloud backup`.
//!
//! * sustained load: a real primary archiving through its `archive_command` (each tool in
//!   turn) while pgbench writes for `BURST_S` seconds (default 60): segments written and
//!   archived per second, and the archive's lag at the end of the burst.
//!
//! * recovery: a new instance from a base backup of that database and `RECOVERY_WAL_MB` MB
//!   (default 1024) of WAL archived after it, to the end of the archive and to an LSN
//!   halfway: `cnpg-instance recover` (restore, replay through `cnpg-cloud wal-restore`
//!   fetching ahead, promote) against `barman-cloud-restore` then PostgreSQL replaying
//!   through `barman-cloud-wal-restore`, from the same store: seconds end to end.
//!
//! `cargo bench -p cnpg-benches --bench backup` (builds the release binaries first);
//! `SEGMENTS=N` sets how many WAL segments are archived (default 48); `PARTS` which parts
//! run (default `base,wal,burst,recovery`).

use cnpg_instance::archive::{ArchiveConfig, Compression};
use cnpg_instance::testkit::{Harness, S3Server, instance_binary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BUCKET: &str = "bench";
const SEGMENT_BYTES: f64 = 16.0 * 1_048_576.0;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A command as PostgreSQL's user, with the store's credentials in the environment (how
/// barman-cloud takes them).
fn as_postgres(h: &Harness, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env("AWS_ACCESS_KEY_ID", "bench-key")
        .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(r) = h.run_as {
        r.apply(&mut cmd);
    }
    cmd
}

/// Runs `cmd` to its end, failing loudly; the peak RSS (kB) seen while it ran.
async fn run(mut cmd: tokio::process::Command, what: &str) -> u64 {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e} (apt-get install barman-cli-cloud)"));
    let pid = child.id().unwrap_or(0);
    let mut peak = 0;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kb) = s
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if !status.success() {
        let out = child.wait_with_output().await.expect("output");
        panic!("{what}: {status}: {}", String::from_utf8_lossy(&out.stderr));
    }
    peak
}

fn write_config(h: &Harness, cfg: &ArchiveConfig, name: &str) -> PathBuf {
    let p = h.root.path().join(name);
    cnpg_instance::tls::write_private(&p, &serde_json::to_string(cfg).expect("json"), h.run_as)
        .expect("config");
    p
}

/// A PGDATA-shaped directory holding `segments` copies of real WAL, named in sequence, each
/// marked ready as PostgreSQL marks it.
fn wal_dir(h: &Harness, from: &[PathBuf], into: &Path) -> Vec<String> {
    let wal = into.join("pg_wal");
    std::fs::create_dir_all(wal.join("archive_status")).expect("pg_wal");
    let mut names = Vec::new();
    for (i, src) in from.iter().enumerate() {
        let name = format!("0000000100000001{:08X}", i + 1);
        std::fs::copy(src, wal.join(&name)).expect("copy a segment");
        std::fs::write(wal.join("archive_status").join(format!("{name}.ready")), "")
            .expect("ready");
        names.push(name);
    }
    if let Some(r) = h.run_as {
        for p in cnpg_instance::testkit::files_under(into)
            .into_iter()
            .chain([into.to_owned(), wal.clone(), wal.join("archive_status")])
        {
            r.own(&p).expect("own");
        }
    }
    names
}

/// Archives `names` one call at a time, marking each done as PostgreSQL does.
async fn archive_all(
    dir: &Path,
    names: &[String],
    call: impl Fn(&str) -> tokio::process::Command,
    what: &str,
) -> Duration {
    let start = Instant::now();
    for n in names {
        run(call(n), what).await;
        let status = dir.join("pg_wal/archive_status");
        let _ = std::fs::rename(
            status.join(format!("{n}.ready")),
            status.join(format!("{n}.done")),
        );
    }
    start.elapsed()
}

/// Sustained load on a real primary archiving through its `archive_command`: pgbench
/// writes for `seconds`; printed are the WAL written, the segments archived meanwhile, the
/// lag at the end (segments still waiting) and how long the archive took to catch up.
async fn burst(h: &Harness, name: &str, seconds: u64, label: &str) {
    let db = h.connect(name).await;
    let reading = async || -> (i64, i64) {
        let row = db
            .query_one(
                "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, archived_count \
                 FROM pg_stat_archiver",
                &[],
            )
            .await
            .expect("a reading");
        (row.get(0), row.get(1))
    };
    let pw = std::fs::read_to_string(h.secrets.superuser()).expect("superuser password");
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname=postgres",
        h.instances[name].port,
        pw.trim()
    );
    let ready = || {
        std::fs::read_dir(h.instances[name].pgdata.join("pg_wal/archive_status"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                    .count()
            })
            .unwrap_or(0)
    };
    let (lsn0, archived0) = reading().await;
    // Bulk inserts (about 200 kB of WAL a transaction): a write-heavy load.
    let script = h.root.path().join("burst.sql");
    std::fs::write(
        &script,
        "INSERT INTO burst SELECT g, md5(random()::text) || md5(random()::text) \
         FROM generate_series(1, 2000) g;\n",
    )
    .expect("pgbench script");
    let mut cmd = tokio::process::Command::new(h.bin.dir.join("pgbench"));
    cmd.args(["-n", "-c", "4", "-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .arg(&conninfo)
        .env("PGOPTIONS", "-c synchronous_commit=off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    run(cmd, "pgbench").await;
    let (lsn1, archived1) = reading().await;
    let waiting = ready();
    let start = Instant::now();
    while ready() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "{label}: the archive never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = (lsn1 - lsn0) as f64 / SEGMENT_BYTES;
    let archived = archived1 - archived0;
    println!(
        "{label}: pgbench for {seconds} s wrote {written:.0} segments ({:.1}/s); archived meanwhile {archived} ({:.1}/s); at the end {waiting} segments ({} MB) waited, archived in {:.1} s",
        written / seconds as f64,
        archived as f64 / seconds as f64,
        waiting * 16,
        start.elapsed().as_secs_f64()
    );
}

/// Starts the PostgreSQL restored in `dir/data` with `opts` (recovery settings), as
/// PostgreSQL's user with the store's credentials in its environment, on a socket in
/// `dir`; returns once it runs as a primary (recovery over), and stops it.
async fn replay(h: &Harness, dir: &Path, opts: &[String]) {
    let mut cmd = as_postgres(h, h.bin.dir.join("postgres"));
    cmd.arg("-D").arg(dir.join("data"));
    for o in [
        "listen_addresses=".to_owned(),
        format!("unix_socket_directories={}", dir.display()),
        "port=5432".to_owned(),
        "archive_mode=off".to_owned(),
    ]
    .iter()
    .chain(opts)
    {
        cmd.arg("-c").arg(o);
    }
    let log = std::fs::File::create(dir.join("replay.log")).expect("log");
    cmd.stderr(log);
    let mut child = cmd.spawn().expect("postgres");
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("replay.log")).unwrap_or_default();
            panic!("PostgreSQL stopped replaying ({s}): {log}");
        }
        let mut c = tokio_postgres::Config::new();
        c.host_path(dir)
            .port(5432)
            .user("postgres")
            .dbname("postgres");
        if let Ok((client, conn)) = c.connect(tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            if let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
                && !row.get::<_, bool>(0)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    let _ = child.wait().await;
}

/// Recovery of a new instance from a base backup and `RECOVERY_WAL_MB` of WAL after it,
/// ours against barman-cloud's: to the end of the archive, then to an LSN halfway.
async fn recovery(s3: &S3Server, cfg: &ArchiveConfig, rows: u64) {
    let wal_mb = env_num("RECOVERY_WAL_MB", 1024);
    let instance = instance_binary(true);
    let cloud = instance.with_file_name(cnpg_instance::archive::PROGRAM);
    let mut h = Harness::new("rec");
    let mut c = cfg.clone();
    c.destination_path = format!("s3://{BUCKET}/recovery");
    c.server_name = "rec".into();
    c.max_parallel = 8;
    let cfg_path = write_config(&h, &c, "recovery.json");
    h.archive = Some(cnpg_instance::config::Archive {
        program: cloud.clone(),
        config: cfg_path.clone(),
    });
    h.running_primary("rec-1").await;
    let db = h.connect("rec-1").await;
    db.batch_execute(&format!(
        "CREATE TABLE t AS SELECT g AS n, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS pad \
         FROM generate_series(1, {rows}) g; CHECKPOINT"
    ))
    .await
    .expect("data");
    let i = &h.instances["rec-1"];
    let mut cmd = as_postgres(&h, &cloud);
    cmd.arg("backup")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--pgdata")
        .arg(&i.pgdata)
        .arg("--socket-dir")
        .arg(h.root.path().join("rec-1").join("run"))
        .args(["--port", &i.port.to_string(), "--immediate-checkpoint"]);
    run(cmd, "cnpg-cloud backup").await;
    // WAL after the backup: updates of the table in batches, the LSN halfway noted.
    let lsn = async || -> i64 {
        db.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
            .await
            .expect("lsn")
            .get(0)
    };
    let start_lsn = lsn().await;
    let want = wal_mb as i64 * 1_048_576;
    let mut halfway = None;
    let mut k = 0;
    while lsn().await - start_lsn < want {
        db.batch_execute(&format!(
            "UPDATE t SET pad = md5(pad) WHERE n % 50 = {}",
            k % 50
        ))
        .await
        .expect("an update");
        k += 1;
        if halfway.is_none() && lsn().await - start_lsn >= want / 2 {
            let row = db
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .expect("lsn");
            halfway = Some(row.get::<_, String>(0));
        }
    }
    let halfway = halfway.expect("halfway");
    h.switch_and_archive("rec-1", Duration::from_secs(1800))
        .await;
    let written = (lsn().await - start_lsn) as f64 / 1_048_576.0;
    let backup_id = cnpg_instance::backup::list(&c)
        .await
        .expect("the backups")
        .into_iter()
        .flatten()
        .next()
        .expect("the backup")
        .backup_id;

    for (label, target) in [
        ("to the end of the archive", None),
        ("to an LSN halfway", Some(halfway.as_str())),
    ] {
        let dir = h.root.path().join(format!("ours-{}", target.is_some()));
        let start = Instant::now();
        let mut cmd = tokio::process::Command::new(instance);
        cmd.arg("recover")
            .arg("--pgdata")
            .arg(dir.join("data"))
            .args(["--cluster", "restored", "--name", "restored-1", "--secrets"])
            .arg(dir.join("secrets"))
            .arg("--source-config")
            .arg(&cfg_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(t) = target {
            cmd.args(["--target-lsn", t]);
        }
        run(cmd, "cnpg-instance recover").await;
        let ours = start.elapsed();
        let dir = h.root.path().join(format!("barman-{}", target.is_some()));
        std::fs::create_dir_all(&dir).expect("a directory");
        if let Some(r) = h.run_as {
            r.own(&dir).expect("own");
        }
        let start = Instant::now();
        let mut cmd = as_postgres(&h, "barman-cloud-restore");
        cmd.args(["--endpoint-url", &s3.endpoint])
            .arg(format!("s3://{BUCKET}/recovery"))
            .args(["rec", &backup_id])
            .arg(dir.join("data"));
        run(cmd, "barman-cloud-restore").await;
        std::fs::write(dir.join("data/recovery.signal"), "").expect("recovery.signal");
        if let Some(r) = h.run_as {
            r.own(&dir.join("data/recovery.signal")).expect("own");
        }
        let mut opts = vec![format!(
            "restore_command=barman-cloud-wal-restore --endpoint-url {} s3://{BUCKET}/recovery rec %f %p",
            s3.endpoint
        )];
        if let Some(t) = target {
            opts.push(format!("recovery_target_lsn={t}"));
            opts.push("recovery_target_action=promote".into());
        }
        replay(&h, &dir, &opts).await;
        let barman = start.elapsed();
        println!(
            "recovery of a {} MB database + {written:.0} MB of WAL {label}: cnpg-instance recover {:.1} s, barman-cloud-restore + barman-cloud-wal-restore {:.1} s: {:.1}x",
            rows * 136 / 1_048_576,
            ours.as_secs_f64(),
            barman.as_secs_f64(),
            barman.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let segments = env_num("SEGMENTS", 48) as usize;
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "base,wal,burst,recovery".into());
    let part = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let size_mb = env_num("BACKUP_MB", 1024);
    let cloud = instance_binary(true).with_file_name(cnpg_instance::archive::PROGRAM);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    // About 136 bytes a row on disk, of text that compresses as real data does.
    let rows = size_mb * 1_048_576 / 136;
    let mut cfg = s3.archive_config(
        &format!("s3://{BUCKET}/ours"),
        "pg",
        ("bench-key", "bench-secret"),
    );
    cfg.data.compression = Some(Compression::Gzip);
    cfg.data.immediate_checkpoint = true;
    if part("recovery") {
        recovery(&s3, &cfg, rows).await;
    }
    if !(part("base") || part("wal") || part("burst")) {
        return;
    }
    let mut h = Harness::new("pg");
    h.running_primary("pg-1").await;
    let db = h.connect("pg-1").await;
    let load = Instant::now();
    db.batch_execute(&format!(
        "CREATE TABLE t AS SELECT g AS n, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS pad \
         FROM generate_series(1, {rows}) g; CHECKPOINT"
    ))
    .await
    .expect("data");
    let size: i64 = db
        .query_one("SELECT pg_database_size('postgres')", &[])
        .await
        .expect("size")
        .get(0);
    let size_mb = size as f64 / 1_048_576.0;
    println!(
        "database: {size_mb:.0} MB ({rows} rows, loaded in {:.0} s)",
        load.elapsed().as_secs_f64()
    );

    // Base backups.
    if part("base") {
        let i = &h.instances["pg-1"];
        let socket = h.root.path().join("pg-1").join("run");
        let ours_cfg = write_config(&h, &cfg, "ours.json");
        let start = Instant::now();
        let mut cmd = as_postgres(&h, &cloud);
        cmd.arg("backup")
            .arg("--config")
            .arg(&ours_cfg)
            .arg("--pgdata")
            .arg(&i.pgdata)
            .arg("--socket-dir")
            .arg(&socket)
            .args(["--port", &i.port.to_string(), "--immediate-checkpoint"]);
        let peak = run(cmd, "cnpg-cloud backup").await;
        let ours = start.elapsed();
        let start = Instant::now();
        let mut cmd = as_postgres(&h, "barman-cloud-backup");
        cmd.args([
            "--endpoint-url",
            &s3.endpoint,
            "--gzip",
            "--immediate-checkpoint",
            "-h",
        ])
        .arg(&socket)
        .args(["-p", &i.port.to_string()])
        .args([&format!("s3://{BUCKET}/barman"), "pg"]);
        let barman_peak = run(cmd, "barman-cloud-backup").await;
        let barman = start.elapsed();
        let rate = |d: Duration| size_mb / d.as_secs_f64();
        println!(
            "base backup (gzip): cnpg-cloud {:.1} s ({:.0} MB/s, peak RSS {:.1} MB), barman-cloud-backup {:.1} s ({:.0} MB/s, peak RSS {:.1} MB): {:.1}x",
            ours.as_secs_f64(),
            rate(ours),
            peak as f64 / 1024.0,
            barman.as_secs_f64(),
            rate(barman),
            barman_peak as f64 / 1024.0,
            barman.as_secs_f64() / ours.as_secs_f64()
        );
    }

    // WAL archiving: real segments, copied from the server's pg_wal.
    if part("wal") {
        let mut real: Vec<PathBuf> = std::fs::read_dir(h.instances["pg-1"].pgdata.join("pg_wal"))
            .expect("pg_wal")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
            })
            .collect();
        real.sort();
        real.truncate(segments);
        assert!(!real.is_empty(), "no WAL segments in pg_wal");
        let n = real.len();
        for parallel in [1usize, 4] {
            let dir = h.root.path().join(format!("wal-ours-{parallel}"));
            let names = wal_dir(&h, &real, &dir);
            let mut c = cfg.clone();
            c.destination_path = format!("s3://{BUCKET}/wal-ours-{parallel}");
            c.max_parallel = parallel;
            let path = write_config(&h, &c, &format!("wal-{parallel}.json"));
            let took = archive_all(
                &dir,
                &names,
                |name| {
                    let mut cmd = as_postgres(&h, &cloud);
                    cmd.arg("wal-archive")
                        .arg("--config")
                        .arg(&path)
                        .arg("--pgdata")
                        .arg(&dir)
                        .arg(format!("pg_wal/{name}"));
                    cmd
                },
                "cnpg-cloud wal-archive",
            )
            .await;
            println!(
                "WAL archiving (gzip), cnpg-cloud maxParallel {parallel}: {n} segments in {:.1} s, {:.1} segments/s",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
        }
        let dir = h.root.path().join("wal-barman");
        let names = wal_dir(&h, &real, &dir);
        let took = archive_all(
            &dir,
            &names,
            |name| {
                let mut cmd = as_postgres(&h, "barman-cloud-wal-archive");
                cmd.args(["--endpoint-url", &s3.endpoint, "--gzip"])
                    .arg(format!("s3://{BUCKET}/wal-barman"))
                    .arg("pg")
                    .arg(dir.join("pg_wal").join(name));
                cmd
            },
            "barman-cloud-wal-archive",
        )
        .await;
        println!(
            "WAL archiving (gzip), barman-cloud-wal-archive: {n} segments in {:.1} s, {:.1} segments/s",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
    }

    // Sustained load: a primary whose archive_command is each tool in turn, under pgbench.
    if !part("burst") {
        return;
    }
    let seconds = env_num("BURST_S", 60);
    let mut b = Harness::new("burst");
    let mut c = cfg.clone();
    c.destination_path = format!("s3://{BUCKET}/burst-ours");
    let path = write_config(&b, &c, "burst.json");
    b.archive = Some(cnpg_instance::config::Archive {
        program: cloud.clone(),
        config: path,
    });
    b.running_primary("burst-1").await;
    let db = b.connect("burst-1").await;
    db.batch_execute("CREATE TABLE burst (n int, pad text)")
        .await
        .expect("a table");
    burst(
        &b,
        "burst-1",
        seconds,
        "cnpg-cloud wal-archive (gzip, maxParallel 1)",
    )
    .await;
    db.batch_execute(&format!(
        "ALTER SYSTEM SET archive_command = 'AWS_ACCESS_KEY_ID=bench-key \
         AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1 \
         barman-cloud-wal-archive --endpoint-url {} --gzip s3://{BUCKET}/burst-barman burst %p'",
        s3.endpoint
    ))
    .await
    .expect("barman-cloud-wal-archive as archive_command");
    db.batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    tokio::time::sleep(Duration::from_secs(1)).await;
    burst(&b, "burst-1", seconds, "barman-cloud-wal-archive (gzip)").await;
}
