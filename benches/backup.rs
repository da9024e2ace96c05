//! Archiving and base backups side by side with barman-cloud's own tools (Debian's
//! `barman-cli-cloud`), on the same S3 server (moto, on loopback) and the same data:
//! * WAL archiving: real WAL segments archived one `archive_command` call at a time, as
//!   PostgreSQL calls it — `cnpg-cloud wal-archive` with `maxParallel` 1 and 4 against
//!   `barman-cloud-wal-archive`, all gzip: segments per second;
//! * a base backup of a database of `BACKUP_MB` MB (default 1024): `cnpg-cloud backup`
//!   against `barman-cloud-backup`, both gzip with an immediate checkpoint: seconds and
//!   MB/s, and the peak memory of `cnpg-cloud backup`.
//!
//! `cargo bench -p cnpg-benches --bench backup` (builds the release binaries first);
//! `SEGMENTS=N` sets how many WAL segments are archived (default 48).

use cnpg_instance::archive::{ArchiveConfig, Compression};
use cnpg_instance::testkit::{Harness, S3Server, instance_binary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BUCKET: &str = "bench";

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let segments = env_num("SEGMENTS", 48) as usize;
    let size_mb = env_num("BACKUP_MB", 1024);
    let cloud = instance_binary(true).with_file_name(cnpg_instance::archive::PROGRAM);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut h = Harness::new("pg");
    h.running_primary("pg-1").await;
    let db = h.connect("pg-1").await;
    // About 200 bytes a row on disk, of text that compresses as real data does.
    let rows = size_mb * 1_048_576 / 200;
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

    let mut cfg = s3.archive_config(
        &format!("s3://{BUCKET}/ours"),
        "pg",
        ("bench-key", "bench-secret"),
    );
    cfg.data.compression = Some(Compression::Gzip);
    cfg.data.immediate_checkpoint = true;

    // Base backups.
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

    // WAL archiving: real segments, copied from the server's pg_wal.
    let mut real: Vec<PathBuf> = std::fs::read_dir(i.pgdata.join("pg_wal"))
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
