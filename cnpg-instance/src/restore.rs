//! Reading back what archiving and base backups wrote — ours or barman-cloud's, the layout
//! is the same — so a new instance can be recovered from the object store:
//!
//! - [`wal_restore`] is PostgreSQL's `restore_command` (`cnpg-cloud wal-restore --config
//!   FILE %f %p`): it fetches one WAL file and, with `wal.maxParallel` > 1, the next segments
//!   of its timeline alongside into a spool beside PGDATA, so PostgreSQL's next calls return
//!   at once. It knows the end of the archive from a missing segment in its middle: a file
//!   the archive lacks while it holds a later segment of the same timeline stops recovery
//!   (exit status 255, which PostgreSQL treats as fatal) instead of ending it early and
//!   starting a database that silently lacks what came after.
//! - [`restore_backup`] unpacks a base backup into an empty PGDATA (`cnpg-cloud restore`),
//!   streaming each tarball from the store through its decompression, nothing staged.
//!
//! What happens next — `recovery.signal`, the recovery target, the new cluster's
//! credentials — is the bootstrap's ([`crate::bootstrap`]).

use crate::archive::{ArchiveConfig, ArchiveError, Destination, hash_dir, io, store_err};
use crate::backup::{BackupError, BackupInfo};
use crate::compression::Compression;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What stops a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store, the configuration or a file.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The catalog of backups.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A WAL file missing in the middle of the archive.
    #[error(
        "{missing} is not in the archive, which holds {later} after it on the same timeline: \
         a segment is missing in its middle, so recovery stops here rather than end early \
         (put the segment back, or recover to a target before it)"
    )]
    Gap {
        /// What PostgreSQL asked for.
        missing: String,
        /// A later segment the archive holds.
        later: String,
    },
    /// What cannot be restored as asked (the message says what to do).
    #[error("{0}")]
    Refused(String),
}

/// What [`wal_restore`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The file is at `%p`.
    Restored,
    /// The archive does not hold it, nor anything after it on its timeline: its end.
    End,
}

/// Where segments fetched ahead of PostgreSQL's request wait.
pub fn spool(pgdata: &Path) -> PathBuf {
    pgdata.parent().unwrap_or(pgdata).join("wal-restore-spool")
}

/// The WAL file `name` of the archive, and (when `ahead` > 0) up to `ahead` segments that
/// follow it on its timeline there, as object keys; and a later segment of its timeline
/// when the archive lacks `name` itself.
struct Found {
    key: Option<String>,
    ahead: Vec<(String, String)>,
    later: Option<String>,
}

/// `name` with barman-cloud's suffixes taken off `key`'s last part, when it is one.
fn wal_name(key: &str) -> &str {
    let file = key.rsplit('/').next().unwrap_or(key);
    Compression::from_name(file).1
}

async fn find(dest: &Destination, name: &str, ahead: usize) -> Result<Found, ArchiveError> {
    let dir = hash_dir(name)?;
    let folder = if dir.is_empty() {
        dest.wals()
    } else {
        format!("{}/{dir}", dest.wals())
    };
    // One listing of the file's folder: the file itself, and what follows it there (for a
    // history file, only what lies directly under `wals/`, not every segment below it).
    let prefix = ObjectPath::from(folder.as_str());
    let mut keys: Vec<String> = Vec::new();
    if dir.is_empty() {
        let listing = dest
            .store()
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(store_err("listing", dest.display(&folder)))?;
        keys.extend(listing.objects.into_iter().map(|o| o.location.to_string()));
    } else {
        let mut listing = dest.store().list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(store_err("listing", dest.display(&folder)))?;
            keys.push(meta.location.to_string());
        }
    }
    keys.sort();
    let key = keys.iter().find(|k| wal_name(k) == name).cloned();
    let segment = |n: &str| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit());
    let same_timeline = |n: &str| segment(n) && n[..8] == name[..8.min(name.len())];
    let mut following = keys
        .iter()
        .map(|k| (wal_name(k).to_owned(), k.clone()))
        .filter(|(n, _)| same_timeline(n) && n.as_str() > name);
    let later = if key.is_none() && segment(name) {
        match following.next() {
            Some((n, _)) => Some(n),
            // The next folders of the timeline (one per 4 GB of WAL).
            None => later_folder(dest, name).await?,
        }
    } else {
        None
    };
    let ahead = if segment(name) && key.is_some() {
        following.take(ahead).collect()
    } else {
        vec![]
    };
    Ok(Found { key, ahead, later })
}

/// The first segment of `name`'s timeline in a folder after its own, if any.
async fn later_folder(dest: &Destination, name: &str) -> Result<Option<String>, ArchiveError> {
    let wals = ObjectPath::from(dest.wals());
    let listing = dest
        .store()
        .list_with_delimiter(Some(&wals))
        .await
        .map_err(store_err("listing", dest.display(wals.as_ref())))?;
    let mut folders: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .filter(|f| f.len() == 16 && f[..8] == name[..8] && f.as_str() > &name[..16])
        .collect();
    folders.sort();
    for folder in folders {
        let prefix = ObjectPath::from(format!("{}/{folder}", dest.wals()));
        let mut inside = dest.store().list(Some(&prefix));
        while let Some(meta) = inside.next().await {
            let meta = meta.map_err(store_err("listing", dest.display(prefix.as_ref())))?;
            let n = wal_name(meta.location.as_ref());
            if n.len() == 24 {
                return Ok(Some(n.to_owned()));
            }
        }
    }
    Ok(None)
}

/// Fetches `key`, decompressed by its suffix, into `to` (written whole, then renamed).
async fn fetch(dest: &Destination, key: &str, to: PathBuf) -> Result<(), ArchiveError> {
    let data = dest.read(key).await?;
    let file = key.rsplit('/').next().unwrap_or(key).to_owned();
    let shown = dest.display(key);
    tokio::task::spawn_blocking(move || {
        let plain = match Compression::from_name(&file).0 {
            None => data,
            Some(c) => {
                let mut out = Vec::with_capacity(16 << 20);
                std::io::Read::read_to_end(&mut c.decoder(&data[..]).map_err(io(&to))?, &mut out)
                    .map_err(|e| {
                    ArchiveError::Config(format!("{shown}: cannot be decompressed ({c}): {e}"))
                })?;
                out
            }
        };
        let tmp = to.with_extension("part");
        std::fs::write(&tmp, &plain).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &to).map_err(io(&to))
    })
    .await
    .map_err(|e| ArchiveError::Config(format!("restoring {key}: {e}")))?
}

/// What `restore_command` does for `name` (`%f`) into `to` (`%p`, relative to `pgdata`).
pub async fn wal_restore(
    config: &ArchiveConfig,
    pgdata: &Path,
    name: &str,
    to: &Path,
) -> Result<Fetched, RestoreError> {
    hash_dir(name)?;
    let to = if to.is_absolute() {
        to.to_owned()
    } else {
        pgdata.join(to)
    };
    let spool = spool(pgdata);
    // Fetched by an earlier call that went ahead.
    let spooled = spool.join(name);
    if std::fs::rename(&spooled, &to).is_ok() {
        return Ok(Fetched::Restored);
    }
    let dest = Destination::open(config)?;
    let found = find(&dest, name, config.max_parallel.saturating_sub(1)).await?;
    let Some(key) = found.key else {
        return match found.later {
            Some(later) => Err(RestoreError::Gap {
                missing: name.to_owned(),
                later,
            }),
            None => Ok(Fetched::End),
        };
    };
    if !found.ahead.is_empty() {
        std::fs::create_dir_all(&spool).map_err(io(&spool))?;
    }
    let ahead = found
        .ahead
        .iter()
        .map(|(n, k)| fetch(&dest, k, spool.join(n)));
    let (asked, _) = futures::join!(
        fetch(&dest, &key, to.clone()),
        // Best effort: what fails here is fetched again when PostgreSQL asks for it.
        futures::future::join_all(ahead)
    );
    asked?;
    Ok(Fetched::Restored)
}

/// Whether the archive holds the WAL file `name` (whatever its compression).
pub async fn holds(config: &ArchiveConfig, name: &str) -> Result<bool, RestoreError> {
    let dest = Destination::open(config)?;
    Ok(find(&dest, name, 0).await?.key.is_some())
}

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The one with this id (`backupID`).
    Id(String),
    /// The newest completed backup that ended before this time (RFC 3339): the one a
    /// recovery to that time starts from.
    Before(jiff::Timestamp),
    /// The newest completed backup that ended at or before this LSN: where a recovery to
    /// that LSN starts.
    BeforeLsn(cnpg_core::lsn::Lsn),
    /// The newest completed backup.
    Latest,
}

/// The end time of a backup as barman writes it (`2026-12-02 05:00:00.123456+00:00`).
fn end_time(b: &BackupInfo) -> Option<jiff::Timestamp> {
    let t = b.end_time.as_deref()?;
    t.replacen(' ', "T", 1).parse().ok()
}

/// The backup `pick` names among `backups` (completed ones only), or why there is none.
pub fn choose(backups: &[BackupInfo], pick: &Pick) -> Result<BackupInfo, RestoreError> {
    let done = || backups.iter().filter(|b| b.status == "DONE");
    let chosen = match pick {
        Pick::Id(id) => {
            let b = backups.iter().find(|b| &b.backup_id == id).ok_or_else(|| {
                RestoreError::Refused(format!(
                    "no backup {id} in the archive (it holds: {})",
                    backups
                        .iter()
                        .map(|b| b.backup_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if b.status != "DONE" {
                return Err(RestoreError::Refused(format!(
                    "backup {id} is {}, not DONE: it cannot be restored{}",
                    b.status,
                    b.error
                        .as_deref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                )));
            }
            Some(b)
        }
        Pick::Latest => done().max_by(|a, b| a.backup_id.cmp(&b.backup_id)),
        Pick::Before(t) => done()
            .filter(|b| end_time(b).is_some_and(|e| e <= *t))
            .max_by(|a, b| a.backup_id.cmp(&b.backup_id)),
        Pick::BeforeLsn(l) => done()
            .filter(|b| b.end_lsn.is_some_and(|e| e <= *l))
            .max_by(|a, b| a.backup_id.cmp(&b.backup_id)),
    };
    chosen.cloned().ok_or_else(|| {
        RestoreError::Refused(match pick {
            Pick::Before(t) => format!(
                "no completed backup ended before {t}: the archive cannot recover to a time \
                 before its first recoverability point"
            ),
            Pick::BeforeLsn(l) => format!(
                "no completed backup ended at or before LSN {l}: the archive cannot recover to \
                 a point before its first recoverability point"
            ),
            _ => "the archive holds no completed backup".to_owned(),
        })
    })
}

/// A reader of what a task sends (a download's chunks), for the blocking unpacker.
struct Received {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl std::io::Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.cur = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// A reader adding what it reads to a counter.
struct Counted<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Unpacks the backup `pick` names into `pgdata`, which must be empty (or not exist):
/// each tarball streamed from the store and decompressed on the way. Returns what its
/// `backup.info` says. A restore that fails leaves the directory as it found it.
pub async fn restore_backup(
    config: &ArchiveConfig,
    pick: &Pick,
    pgdata: &Path,
) -> Result<BackupInfo, RestoreError> {
    restore_backup_counted(config, pick, pgdata, Arc::default()).await
}

/// [`restore_backup`], adding the bytes unpacked so far to `restored` as it goes (what a
/// progress report shows).
pub async fn restore_backup_counted(
    config: &ArchiveConfig,
    pick: &Pick,
    pgdata: &Path,
    restored: Arc<AtomicU64>,
) -> Result<BackupInfo, RestoreError> {
    if std::fs::read_dir(pgdata).is_ok_and(|mut d| d.next().is_some()) {
        return Err(RestoreError::Refused(format!(
            "{} is not empty: a backup is restored into an empty directory (nothing was changed)",
            pgdata.display()
        )));
    }
    let dest = Destination::open(config)?;
    let mut backups = Vec::new();
    let mut unreadable = Vec::new();
    for b in crate::backup::list(config).await? {
        match b {
            Ok(b) => backups.push(b),
            // A backup.info that cannot be read is not one to choose.
            Err(e) => {
                tracing::warn!("{e}");
                unreadable.push(e.to_string());
            }
        }
    }
    let info = match choose(&backups, pick) {
        Ok(info) => info,
        // Perhaps the one wanted is among those that cannot be read: say so.
        Err(RestoreError::Refused(why)) if !unreadable.is_empty() => {
            return Err(RestoreError::Refused(format!(
                "{why}; backups that cannot be read: {}",
                unreadable.join("; ")
            )));
        }
        Err(e) => return Err(e),
    };
    if info.tablespaces.is_some() {
        return Err(RestoreError::Refused(format!(
            "backup {} has tablespaces, which restores do not bring back yet",
            info.backup_id
        )));
    }
    // The data tarball and, past barman's size limit, its continuations (data_0001.tar…).
    let folder = format!("{}/base/{}", dest.server(), info.backup_id);
    let prefix = ObjectPath::from(folder.as_str());
    let mut parts: Vec<String> = Vec::new();
    let mut listing = dest.store().list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(store_err("listing", dest.display(&folder)))?;
        let file = meta.location.filename().unwrap_or_default().to_owned();
        let base = Compression::from_name(&file).1;
        if base == "data.tar"
            || base
                .strip_prefix("data_")
                .and_then(|r| r.strip_suffix(".tar"))
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            parts.push(meta.location.to_string());
        }
    }
    // data.tar sorts before data_0001.tar ('.' < '_').
    parts.sort();
    if parts.is_empty() {
        return Err(RestoreError::Refused(format!(
            "backup {} has no data.tar in {}",
            info.backup_id,
            dest.display(&folder)
        )));
    }
    let existed = pgdata.exists();
    std::fs::create_dir_all(pgdata).map_err(io(pgdata))?;
    let _ = std::fs::remove_dir_all(spool(pgdata));
    let unpacked = unpack(&dest, &parts, pgdata, restored).await;
    if unpacked.is_err() {
        // It was empty: what is there now is half a backup, which a retry must not meet.
        let _ = std::fs::remove_dir_all(pgdata);
        if existed {
            let _ = std::fs::create_dir(pgdata);
        }
    }
    unpacked?;
    Ok(info)
}

/// Streams each tarball of `parts` from the store into `pgdata`.
async fn unpack(
    dest: &Destination,
    parts: &[String],
    pgdata: &Path,
    restored: Arc<AtomicU64>,
) -> Result<(), RestoreError> {
    for key in parts {
        let got = dest
            .store()
            .get(&ObjectPath::from(key.as_str()))
            .await
            .map_err(store_err("reading", dest.display(key)))?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let shown = dest.display(key);
        let downloading = tokio::spawn(async move {
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        let file = key.rsplit('/').next().unwrap_or(key).to_owned();
        let into = pgdata.to_owned();
        let counter = restored.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            let received = Received {
                rx,
                cur: bytes::Bytes::new(),
            };
            let reader: Box<dyn std::io::Read> = match Compression::from_name(&file).0 {
                None => Box::new(received),
                Some(c) => c.decoder(received)?,
            };
            let mut tar = tar::Archive::new(Counted {
                inner: reader,
                counter,
            });
            tar.set_preserve_permissions(true);
            tar.set_overwrite(true);
            tar.unpack(&into)
        })
        .await
        .map_err(|e| ArchiveError::Config(format!("unpacking {shown}: {e}")))?;
        let _ = downloading.await;
        unpacked.map_err(|e| ArchiveError::Config(format!("unpacking {shown}: {e}")))?;
    }
    // PostgreSQL wants these even empty; barman's tarballs carry pg_wal without them.
    let status = pgdata.join("pg_wal").join("archive_status");
    std::fs::create_dir_all(&status).map_err(io(&status))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700)).map_err(io(pgdata))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, status: &str, end: &str) -> BackupInfo {
        BackupInfo {
            backup_id: id.into(),
            status: status.into(),
            end_time: Some(end.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_backup_chosen_is_the_newest_that_ended_before_the_target() {
        let all = [
            backup(
                "20261201T000000",
                "DONE",
                "2026-12-01 00:10:00.000000+00:00",
            ),
            backup(
                "20261202T000000",
                "DONE",
                "2026-12-02 00:10:00.000000+00:00",
            ),
            backup(
                "20261203T000000",
                "FAILED",
                "2026-12-03 00:10:00.000000+00:00",
            ),
        ];
        let before = |t: &str| choose(&all, &Pick::Before(t.parse().expect("time")));
        assert_eq!(
            before("2026-12-02T12:00:00Z").expect("one").backup_id,
            "20261202T000000"
        );
        assert_eq!(
            before("2026-12-02T00:05:00Z").expect("one").backup_id,
            "20261201T000000"
        );
        let e = before("2026-11-30T00:00:00Z")
            .expect_err("none")
            .to_string();
        assert!(e.contains("first recoverability point"), "{e}");
        assert_eq!(
            choose(&all, &Pick::Latest).expect("one").backup_id,
            "20261202T000000"
        );
        let e = choose(&all, &Pick::Id("20261203T000000".into()))
            .expect_err("failed")
            .to_string();
        assert!(e.contains("FAILED, not DONE"), "{e}");
        let e = choose(&all, &Pick::Id("nope".into()))
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("no backup nope") && e.contains("20261201T000000"),
            "{e}"
        );
    }

    #[test]
    fn names_come_off_keys_without_their_compression() {
        assert_eq!(
            wal_name("p/pg/wals/0000000100000000/000000010000000000000003.gz"),
            "000000010000000000000003"
        );
        assert_eq!(wal_name("p/pg/wals/00000002.history"), "00000002.history");
        assert_eq!(
            wal_name("w/000000010000000000000003.00000028.backup.zst"),
            "000000010000000000000003.00000028.backup"
        );
    }
}
