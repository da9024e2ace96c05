//! WAL archiving to object storage, laid out exactly as barman-cloud lays it out, so the
//! tools people already run against CloudNativePG's archives read ours (and the other way
//! round): `<path>/<serverName>/wals/<timeline+log>/<segment>[.gz]`, history files directly
//! under `wals/`.
//!
//! PostgreSQL's `archive_command` runs `cnpg-cloud wal-archive --config FILE %p` (a new process
//! per segment, as upstream's manager; a program of its own, installed beside
//! `cnpg-instance`, so the object-store client never weighs on the manager's memory): it
//! reads [`ArchiveConfig`] (written by the
//! operator, 0600, credentials included), uploads the segment, and with `maxParallel` > 1
//! also the next segments PostgreSQL has marked ready, leaving a mark in the spool so the
//! calls for those return at once. It succeeds only once the object is stored: a failure
//! leaves the WAL where it is, and PostgreSQL retries it.
//!
//! The first archive of a new cluster refuses a destination that already holds WAL
//! (`.check-empty-wal-archive` in PGDATA asks for the check, as upstream): two clusters
//! writing one archive would make both unrecoverable.
//!
//! A promoted standby continues the archive without a gap: PostgreSQL (with
//! `archive_mode = on`) marks the segments a standby receives as archived, so segments the
//! old primary had not archived when it failed would be missing for good. At promotion the
//! manager marks this instance's segments of earlier timelines ready again
//! ([`requeue_earlier_timelines`]); `wal-archive` uploads one of those only when the store
//! does not hold it already, so a failover costs a request per segment, not a re-upload.

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The archiver's program name (`src/bin/cnpg-cloud.rs`), beside `cnpg-instance`.
pub const PROGRAM: &str = "cnpg-cloud";

/// The file in PGDATA that asks the next archive to check the destination is empty.
pub const CHECK_EMPTY_MARK: &str = ".check-empty-wal-archive";

pub use crate::compression::Compression;

pub use crate::store::{ArchiveConfig, ArchiveError, AzureCredentials, DataConfig, S3Credentials};
pub(crate) use crate::store::{io, store_err};

/// Whether `name` is a file PostgreSQL archives, and the folder barman-cloud puts it in:
/// the first 16 hex digits (timeline and log) of a segment, a `.partial` segment or a
/// `.backup` label; none (directly under `wals/`) for a timeline `.history` file.
pub fn hash_dir(name: &str) -> Result<&str, ArchiveError> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let bad = || ArchiveError::BadName(name.to_owned());
    if let Some(tli) = name.strip_suffix(".history") {
        return if tli.len() == 8 && hex(tli) {
            Ok("")
        } else {
            Err(bad())
        };
    }
    let segment = name.get(..24).ok_or_else(bad)?;
    let rest = &name[24..];
    let label = rest
        .strip_prefix('.')
        .and_then(|r| r.strip_suffix(".backup"))
        .is_some_and(|offset| offset.len() == 8 && hex(offset));
    if hex(segment) && (rest.is_empty() || rest == ".partial" || label) {
        Ok(&name[..16])
    } else {
        Err(bad())
    }
}

/// The timeline a segment (or `.partial`, or backup label) name is on.
fn timeline_of(name: &str) -> Option<u32> {
    u32::from_str_radix(name.get(..8)?, 16).ok()
}

/// The newest timeline this data directory has reached: the highest `NNNNNNNN.history`
/// in `pg_wal` (PostgreSQL keeps every history file), 1 when there is none.
pub fn newest_timeline(pgdata: &Path) -> u32 {
    std::fs::read_dir(pgdata.join("pg_wal"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name();
                    let tli = name.to_str()?.strip_suffix(".history")?.to_owned();
                    (tli.len() == 8).then(|| timeline_of(&tli)).flatten()
                })
                .max()
                .unwrap_or(1)
        })
        .unwrap_or(1)
}

/// After a promotion: the whole segments of earlier timelines in `pg_wal` that
/// PostgreSQL had marked archived because this instance received them as a standby are
/// marked ready again, so the archiver offers each to `wal-archive`, which stores those
/// the old primary never did. Returns their names.
pub fn requeue_earlier_timelines(pgdata: &Path) -> std::io::Result<Vec<String>> {
    let current = newest_timeline(pgdata);
    let status = pgdata.join("pg_wal").join("archive_status");
    let mut requeued = Vec::new();
    for entry in std::fs::read_dir(&status)? {
        let entry = entry?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".done")) else {
            continue;
        };
        let earlier = name.len() == 24
            && hash_dir(name).is_ok()
            && timeline_of(name).is_some_and(|t| t < current);
        if earlier && pgdata.join("pg_wal").join(name).is_file() {
            std::fs::rename(entry.path(), status.join(format!("{name}.ready")))?;
            requeued.push(name.to_owned());
        }
    }
    requeued.sort();
    Ok(requeued)
}

/// A configured store and the path inside it the destination starts at.
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    base: String,
    /// Where keys start, for messages: `s3://BUCKET`, `file:///DIR`, ….
    root: String,
    config: ArchiveConfig,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// Opens the destination `config` names (no request is made yet).
    pub fn open(config: &ArchiveConfig) -> Result<Self, ArchiveError> {
        if config.server_name.is_empty() || config.server_name.contains('/') {
            return Err(ArchiveError::Config(format!(
                "serverName {:?}: give a name without '/'",
                config.server_name
            )));
        }
        if config.max_parallel == 0 {
            return Err(ArchiveError::Config(
                "wal.maxParallel: give at least 1".into(),
            ));
        }
        let crate::store::Opened { store, base, root } = crate::store::open(config)?;
        Ok(Destination {
            store,
            base,
            root,
            config: config.clone(),
        })
    }

    /// Whether `config` can be used, without touching the store (what the operator checks
    /// before it hands a configuration to the instances).
    pub fn check(config: &ArchiveConfig) -> Result<(), ArchiveError> {
        match config.destination_path.strip_prefix("file://") {
            Some(dir) if dir.starts_with('/') => Ok(()),
            Some(_) => Err(ArchiveError::Config(format!(
                "destinationPath {:?}: write file:///ABSOLUTE/PATH",
                config.destination_path
            ))),
            // Opening any other destination makes no request.
            None => Self::open(config).map(|_| ()),
        }
    }

    /// `key` as a person finds it: `s3://BUCKET/KEY`, and the endpoint when one is given
    /// (`s3://BUCKET/KEY at http://HOST:PORT`).
    pub fn display(&self, key: &str) -> String {
        match &self.config.endpoint_url {
            Some(e) if self.root.starts_with("s3://") => format!("{}/{key} at {e}", self.root),
            _ => format!("{}/{key}", self.root),
        }
    }

    /// The server's folder: `<path>/<serverName>`.
    pub fn server(&self) -> String {
        let mut p = self.base.trim_matches('/').to_owned();
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(&self.config.server_name);
        p
    }

    /// The WAL folder of the server: `<path>/<serverName>/wals`.
    pub fn wals(&self) -> String {
        format!("{}/wals", self.server())
    }

    /// The object store itself, for what is not WAL (base backups).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The same destination with the store opened for base backups: `data.encryption`
    /// instead of `wal.encryption`.
    pub fn for_data(config: &ArchiveConfig) -> Result<Self, ArchiveError> {
        Self::open(&ArchiveConfig {
            encryption: config.data.encryption.clone(),
            ..config.clone()
        })
    }

    /// The object a WAL file is stored as.
    pub fn key(&self, name: &str) -> Result<String, ArchiveError> {
        let dir = hash_dir(name)?;
        let suffix = self.config.compression.map_or("", Compression::suffix);
        Ok(if dir.is_empty() {
            format!("{}/{name}{suffix}", self.wals())
        } else {
            format!("{}/{dir}/{name}{suffix}", self.wals())
        })
    }

    /// Whether the server's WAL folder holds anything.
    pub async fn has_wal(&self) -> Result<bool, ArchiveError> {
        use futures::StreamExt;
        let prefix = ObjectPath::from(self.wals());
        let mut listing = self.store.list(Some(&prefix));
        match listing.next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(store_err("listing", self.display(prefix.as_ref()))(e)),
        }
    }

    /// Every object key under the server's WAL folder (for checks and tests).
    pub async fn list_wal(&self) -> Result<Vec<String>, ArchiveError> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(self.wals());
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err("listing", self.display(prefix.as_ref())))?;
        let mut keys: Vec<String> = objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The whole object `key` (a WAL file; what recovery reads).
    pub async fn read(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        let got = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(store_err("reading", self.display(key)))?;
        let bytes = got
            .bytes()
            .await
            .map_err(store_err("reading", self.display(key)))?;
        Ok(bytes.to_vec())
    }

    /// Uploads one WAL file (read from `path`) under its barman-cloud key; with
    /// `unless_stored`, only when no object has that key yet (a segment of an earlier
    /// timeline, which the old primary may have stored already).
    pub async fn upload(&self, path: &Path, unless_stored: bool) -> Result<String, ArchiveError> {
        let name = file_name(path)?;
        let key = self.key(&name)?;
        if unless_stored {
            match self.store.head(&ObjectPath::from(key.as_str())).await {
                Ok(_) => return Ok(key),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err("checking", self.display(&key))(e)),
            }
        }
        let data = std::fs::read(path).map_err(io(path))?;
        let body = match self.config.compression {
            None => data,
            Some(c) => c.compress(&data).map_err(io(path))?,
        };
        let location = ObjectPath::from(key.as_str());
        self.store
            .put(&location, body.into())
            .await
            .map_err(store_err("uploading", self.display(&key)))?;
        Ok(key)
    }
}

fn file_name(path: &Path) -> Result<String, ArchiveError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| ArchiveError::BadName(path.display().to_string()))
}

/// Where segments uploaded ahead of PostgreSQL's request are marked.
fn spool(pgdata: &Path) -> PathBuf {
    pgdata.parent().unwrap_or(pgdata).join("wal-archive-spool")
}

/// What `archive_command` does for `wal` (as PostgreSQL gives `%p`: relative to `pgdata`).
/// Returns the keys uploaded by this call (empty when a parallel upload had done it).
pub async fn archive(
    config: &ArchiveConfig,
    pgdata: &Path,
    wal: &Path,
) -> Result<Vec<String>, ArchiveError> {
    let path = if wal.is_absolute() {
        wal.to_owned()
    } else {
        pgdata.join(wal)
    };
    let name = file_name(&path)?;
    hash_dir(&name)?;
    let spool = spool(pgdata);
    // Uploaded already, by an earlier call that went ahead.
    if std::fs::remove_file(spool.join(&name)).is_ok() {
        return Ok(vec![]);
    }
    let dest = Destination::open(config)?;
    let check = pgdata.join(CHECK_EMPTY_MARK);
    if check.exists() && dest.has_wal().await? {
        return Err(ArchiveError::NotEmpty {
            location: dest.display(&dest.wals()),
        });
    }
    // The segments PostgreSQL will ask for next, uploaded alongside this one.
    let mut batch = vec![path.clone()];
    if config.max_parallel > 1 && name.len() == 24 {
        let status = pgdata.join("pg_wal").join("archive_status");
        let mut ready: Vec<String> = std::fs::read_dir(&status)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter_map(|n| n.strip_suffix(".ready").map(str::to_owned))
                    .filter(|n| n.len() == 24 && *n != name && hash_dir(n).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        ready.sort();
        batch.extend(
            ready
                .into_iter()
                .filter(|n| n.as_str() > name.as_str())
                .take(config.max_parallel - 1)
                .map(|n| pgdata.join("pg_wal").join(n)),
        );
    }
    // Segments of a timeline before the newest: requeued at a promotion, perhaps stored.
    let current = newest_timeline(pgdata);
    let earlier = |p: &PathBuf| {
        file_name(p)
            .ok()
            .and_then(|n| timeline_of(&n))
            .is_some_and(|t| t < current)
    };
    let results = futures::future::join_all(batch.iter().map(|p| dest.upload(p, earlier(p)))).await;
    let mut keys = Vec::new();
    for (p, result) in batch.iter().zip(results) {
        match result {
            Ok(key) => {
                if *p != path {
                    // Marked only once stored: PostgreSQL's call for it returns at once.
                    std::fs::create_dir_all(&spool).map_err(io(&spool))?;
                    let mark = spool.join(file_name(p)?);
                    std::fs::write(&mark, b"").map_err(io(&mark))?;
                }
                keys.push(key);
            }
            // The one asked for must be stored; the others are retried when asked for.
            Err(e) if *p == path => return Err(e),
            Err(e) => tracing::warn!("archiving {} ahead: {e}", p.display()),
        }
    }
    if check.exists() {
        std::fs::remove_file(&check).map_err(io(&check))?;
    }
    Ok(keys)
}

/// Reads a configuration file (JSON).
pub fn read_config(path: &Path) -> Result<ArchiveConfig, ArchiveError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| ArchiveError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_offers_the_earlier_timelines_received_segments_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("pg_wal");
        let status = wal.join("archive_status");
        std::fs::create_dir_all(&status).expect("dirs");
        assert_eq!(newest_timeline(dir.path()), 1);
        let touch = |p: PathBuf| std::fs::write(p, b"").expect("write");
        for seg in ["000000010000000000000003", "000000010000000000000004"] {
            touch(wal.join(seg));
            touch(status.join(format!("{seg}.done")));
        }
        // A recycled file has no status; a segment of the new timeline is left alone.
        touch(wal.join("000000010000000000000009"));
        touch(wal.join("000000020000000000000005"));
        touch(status.join("000000020000000000000005.done"));
        touch(wal.join("000000010000000000000005.partial"));
        touch(status.join("000000010000000000000005.partial.ready"));
        touch(wal.join("00000002.history"));
        assert_eq!(newest_timeline(dir.path()), 2);
        let requeued = requeue_earlier_timelines(dir.path()).expect("requeued");
        assert_eq!(
            requeued,
            ["000000010000000000000003", "000000010000000000000004"]
        );
        assert!(status.join("000000010000000000000004.ready").exists());
        assert!(!status.join("000000010000000000000004.done").exists());
        assert!(status.join("000000020000000000000005.done").exists());
        assert!(!status.join("000000010000000000000009.ready").exists());
    }

    #[test]
    fn names_go_where_barman_cloud_puts_them() {
        assert_eq!(
            hash_dir("000000010000000000000003").expect("segment"),
            "0000000100000000"
        );
        assert_eq!(hash_dir("00000002.history").expect("history"), "");
        assert_eq!(
            hash_dir("000000010000000000000003.partial").expect("partial"),
            "0000000100000000"
        );
        assert_eq!(
            hash_dir("000000010000000000000003.00000028.backup").expect("label"),
            "0000000100000000"
        );
        for bad in [
            "pg_control",
            "00000001.history.x",
            "00000001000000000000000G",
            "",
        ] {
            assert!(hash_dir(bad).is_err(), "{bad}");
        }
        let config = ArchiveConfig {
            destination_path: "s3://bucket/some/path/".into(),
            server_name: "pg".into(),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            endpoint_ca: None,
            compression: Some(Compression::Gzip),
            encryption: None,
            max_parallel: 1,
            s3: Some(S3Credentials {
                access_key_id: "id".into(),
                secret_access_key: "very-secret".into(),
                session_token: None,
                region: Some("us-east-1".into()),
            }),
            azure: None,
            data: DataConfig::default(),
            retention_policy: None,
        };
        let dest = Destination::open(&config).expect("opens");
        assert_eq!(
            dest.key("000000020000000100000003").expect("key"),
            "some/path/pg/wals/0000000200000001/000000020000000100000003.gz"
        );
        assert_eq!(
            dest.key("00000002.history").expect("key"),
            "some/path/pg/wals/00000002.history.gz"
        );
        assert!(!format!("{config:?}").contains("very-secret"));
        let e = Destination::open(&ArchiveConfig {
            destination_path: "gs://bucket".into(),
            ..config.clone()
        })
        .expect_err("unsupported")
        .to_string();
        assert!(e.contains("destinationPath") && e.contains("s3://"), "{e}");
    }
}
