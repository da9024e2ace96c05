//! WAL archiving from real PostgreSQL to a real S3 API server (moto's), read back by
//! barman-cloud's own tools (Debian's `barman-cli-cloud`): the layout is theirs.

use cnpg_instance::archive::{ArchiveConfig, Destination};
use cnpg_instance::config::Archive;
use cnpg_instance::testkit::{Harness, S3Server, instance_binary};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn config(s3: &S3Server, bucket: &str) -> ArchiveConfig {
    ArchiveConfig {
        max_parallel: 4,
        ..s3.archive_config(
            &format!("s3://{bucket}/cnpg"),
            "pg",
            ("test-key", "test-secret"),
        )
    }
}

/// Archives with `cfg` from the managers `h` starts from now on.
fn archive_with(h: &mut Harness, cfg: &ArchiveConfig) {
    let path = h.secrets.dir.join("archive.json");
    cnpg_instance::tls::write_private(&path, &serde_json::to_string(cfg).expect("json"), h.run_as)
        .expect("archive.json");
    h.archive = Some(Archive {
        program: archiver(),
        config: path,
    });
}

/// `cnpg-cloud`, built beside `cnpg-instance`.
fn archiver() -> std::path::PathBuf {
    instance_binary(false).with_file_name(cnpg_instance::archive::PROGRAM)
}

/// Runs one of barman-cloud's tools against `s3`; its exit status and output.
fn barman(s3: &S3Server, tool: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(tool)
        .args(["--endpoint-url", &s3.endpoint])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool}: {e} (apt-get install barman-cli-cloud; .ci/run installs it)")
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn archived(h: &Harness, name: &str) -> (i64, i64, Option<String>) {
    let row = h
        .connect(name)
        .await
        .query_one(
            "SELECT archived_count, failed_count, last_failed_wal FROM pg_stat_archiver",
            &[],
        )
        .await
        .expect("pg_stat_archiver");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_is_archived_where_barman_cloud_finds_it_and_a_used_destination_is_refused() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let cfg = config(&s3, "backups");
    let mut h = Harness::new("pg");
    archive_with(&mut h, &cfg);
    h.running_primary("pg-1").await;
    let db = h.connect("pg-1").await;
    for _ in 0..6 {
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS t (n int); INSERT INTO t SELECT generate_series(1, 1000); \
             SELECT pg_switch_wal()",
        )
        .await
        .expect("writes and a WAL switch");
    }
    h.wait_until("six segments archived", T, async |h| {
        match archived(h, "pg-1").await {
            (n, _, _) if n >= 6 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let dest = Destination::open(&cfg).expect("destination");
    let keys = dest.list_wal().await.expect("listing");
    let first = "cnpg/pg/wals/0000000100000000/000000010000000000000001.gz";
    assert!(keys.iter().any(|k| k == first), "{keys:?}");
    assert!(keys.len() >= 6, "{keys:?}");
    assert!(
        !h.instances["pg-1"]
            .pgdata
            .join(cnpg_instance::archive::CHECK_EMPTY_MARK)
            .exists(),
        "the emptiness check is done once"
    );

    // barman-cloud's restore finds each segment where we put it and gets it back byte for
    // byte (it decompresses by the suffix).
    let restored = tempfile::tempdir().expect("tmp");
    for seg in ["000000010000000000000001", "000000010000000000000003"] {
        let to = restored.path().join(seg);
        let (ok, out) = barman(
            &s3,
            "barman-cloud-wal-restore",
            &["s3://backups/cnpg", "pg", seg, &to.display().to_string()],
        );
        assert!(ok, "barman-cloud-wal-restore {seg}: {out}");
        let ours = std::fs::read(h.instances["pg-1"].pgdata.join("pg_wal").join(seg));
        if let Ok(ours) = ours {
            assert_eq!(std::fs::read(&to).expect("restored"), ours, "{seg}");
        }
    }
    // And its check sees an archive in use.
    let (empty, out) = barman(
        &s3,
        "barman-cloud-check-wal-archive",
        &["s3://backups/cnpg", "pg"],
    );
    assert!(!empty, "barman-cloud sees our WAL: {out}");

    // A new cluster given the same destination refuses to archive there: PostgreSQL keeps
    // its WAL and says why.
    let mut other = Harness::new("pg");
    archive_with(&mut other, &cfg);
    other.running_primary("pg-1").await;
    other
        .connect("pg-1")
        .await
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .expect("switch");
    other
        .wait_until("the refusal", T, async |h| {
            match archived(h, "pg-1").await {
                (0, failed, Some(wal)) if failed > 0 => {
                    let log =
                        std::fs::read_to_string(&h.instances["pg-1"].log_file).unwrap_or_default();
                    if log.contains("already holds WAL") {
                        assert!(
                            h.instances["pg-1"]
                                .pgdata
                                .join("pg_wal")
                                .join(&wal)
                                .exists(),
                            "kept"
                        );
                        Ok(())
                    } else {
                        Err("not in the log yet".into())
                    }
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    let keys_after = dest.list_wal().await.expect("listing");
    assert_eq!(
        keys_after
            .iter()
            .filter(|k| k.contains("/00000001"))
            .count(),
        keys_after.len(),
        "nothing of the other cluster's"
    );
}

#[test]
fn a_missing_bucket_fails_naming_it_and_the_wal_stays() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let pgdata = dir.path().join("data");
    std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
    let seg = pgdata.join("pg_wal").join("000000010000000000000001");
    std::fs::write(&seg, vec![7u8; 1024]).expect("segment");
    let cfg_path = dir.path().join("archive.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_string(&config(&s3, "no-such-bucket")).expect("json"),
    )
    .expect("config");
    let out = std::process::Command::new(archiver())
        .args(["wal-archive", "--config"])
        .arg(&cfg_path)
        .arg("--pgdata")
        .arg(&pgdata)
        .arg(Path::new("pg_wal/000000010000000000000001"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no-such-bucket") && err.contains("000000010000000000000001"),
        "{err}"
    );
    assert!(!err.contains("test-secret"), "{err}");
    assert!(seg.exists());
}

/// Every `wal.compression` stores a real segment under the name barman-cloud gives it, and
/// what reads that compression gets the segment back byte for byte: barman-cloud's own
/// restore for gzip and bzip2; python-snappy's stream reader for snappy (what barman-cloud
/// reads it with: Debian 12's build of it fails under its Python 3.11, so Debian's
/// barman-cli-cloud cannot read snappy at all); and the reference command-line tools for
/// lz4, xz and zstd (whose formats later barman-cloud versions write and read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wal_compression_is_read_back_by_barman_cloud_or_its_reference_tool() {
    use cnpg_instance::archive::Compression;
    let s3 = S3Server::start();
    s3.create_bucket("codecs");
    let mut h = Harness::new("pg");
    h.running_primary("pg-1").await;
    h.connect("pg-1")
        .await
        .batch_execute(
            "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g; \
             SELECT pg_switch_wal()",
        )
        .await
        .expect("a segment's worth of writes");
    // A copy of the first (finished) segment, in a PGDATA of its own.
    let seg = "000000010000000000000001";
    let dir = tempfile::tempdir().expect("tmp");
    let pgdata = dir.path().join("data");
    std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
    let original =
        std::fs::read(h.instances["pg-1"].pgdata.join("pg_wal").join(seg)).expect("segment");
    std::fs::write(pgdata.join("pg_wal").join(seg), &original).expect("copy");

    for c in Compression::ALL {
        let server = format!("pg-{c}");
        let cfg = ArchiveConfig {
            compression: Some(c),
            ..s3.archive_config("s3://codecs/cnpg", &server, ("test-key", "test-secret"))
        };
        let cfg_path = dir.path().join(format!("{c}.json"));
        std::fs::write(&cfg_path, serde_json::to_string(&cfg).expect("json")).expect("config");
        let out = std::process::Command::new(archiver())
            .args(["wal-archive", "--config"])
            .arg(&cfg_path)
            .arg("--pgdata")
            .arg(&pgdata)
            .arg(Path::new("pg_wal").join(seg))
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = format!("cnpg/{server}/wals/0000000100000000/{seg}{}", c.suffix());
        let dest = Destination::open(&cfg).expect("destination");
        assert_eq!(
            dest.list_wal().await.expect("listing"),
            std::slice::from_ref(&key)
        );

        let back = if matches!(c, Compression::Gzip | Compression::Bzip2) {
            let to = dir.path().join(format!("restored-{c}"));
            let (ok, out) = barman(
                &s3,
                "barman-cloud-wal-restore",
                &["s3://codecs/cnpg", &server, seg, &to.display().to_string()],
            );
            assert!(ok, "barman-cloud-wal-restore of {c}: {out}");
            std::fs::read(&to).expect("restored")
        } else {
            let stored = dest.read(&key).await.expect("the stored segment");
            cnpg_instance::testkit::reference_decompress(c, stored)
        };
        assert!(back == original, "{c}: the segment comes back as it was");
    }
}
