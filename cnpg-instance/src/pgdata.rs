//! What is in a data directory, and whether we may manage it.
//!
//! A PGDATA is ours when it holds the marker `cnpg-instance.json` naming its cluster and
//! instance (written by `initdb`/`join`). Anything else — an empty path, someone else's
//! cluster, another instance's data — is refused with a clear error, before anything
//! starts, so a wrong flag can never run (or rewind!) the wrong database.

use crate::runas::{self, RunAs};
use cnpg_core::instance::PgData;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The marker file in PGDATA.
pub const MARKER: &str = "cnpg-instance.json";

/// What the marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Cluster name.
    pub cluster: String,
    /// Instance name.
    pub instance: String,
}

/// PGDATA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PgDataError {
    /// No PostgreSQL data directory there.
    #[error(
        "{0} is not a PostgreSQL data directory (no PG_VERSION); create it with `cnpg-instance initdb` or `cnpg-instance join`"
    )]
    Missing(PathBuf),
    /// A data directory, but not one we created.
    #[error(
        "{0} holds a PostgreSQL data directory that cnpg-instance did not create (no {MARKER}); refusing to manage it — use an empty directory, or initdb/join into a new one"
    )]
    NotOurs(PathBuf),
    /// Ours, but for another cluster or instance.
    #[error(
        "{path} belongs to instance {found_instance} of cluster {found_cluster}, not {instance} of {cluster}; check --pgdata, --cluster and --name"
    )]
    OtherInstance {
        /// The directory.
        path: PathBuf,
        /// Its cluster.
        found_cluster: String,
        /// Its instance.
        found_instance: String,
        /// The cluster we were told.
        cluster: String,
        /// The instance we were told.
        instance: String,
    },
    /// Not enough room for WAL.
    #[error(
        "the WAL volume of {path} has {free_mb} MB free, less than two WAL segments; free space or grow the volume before starting (PostgreSQL could not write)"
    )]
    WalDiskFull {
        /// The directory.
        path: PathBuf,
        /// Free megabytes.
        free_mb: u64,
    },
    /// The marker could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Writes a [`Marker`] to `path`, owned by PostgreSQL's user.
fn write_marker(
    path: PathBuf,
    cluster: &str,
    instance: &str,
    run_as: Option<RunAs>,
) -> Result<(), PgDataError> {
    let text = serde_json::to_string(&Marker {
        cluster: cluster.to_owned(),
        instance: instance.to_owned(),
    })
    .expect("the marker serializes");
    std::fs::write(&path, text)
        .and_then(|_| runas::own(run_as, &path))
        .map_err(|source| PgDataError::Io { path, source })
}

/// A PGDATA directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
}

impl DataDir {
    /// A data directory at `path` (nothing is checked yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataDir { path: path.into() }
    }

    /// Primary, standby, or missing.
    pub fn role(&self) -> PgData {
        if !self.path.join("PG_VERSION").exists() {
            PgData::Missing
        } else if self.path.join("standby.signal").exists() {
            PgData::Standby
        } else {
            PgData::Primary
        }
    }

    /// PostgreSQL's major version of the data (`PG_VERSION`).
    pub fn major(&self) -> Option<u32> {
        std::fs::read_to_string(self.path.join("PG_VERSION"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the postmaster says it does not accept connections yet: the status line of
    /// `postmaster.pid` (`starting` until it is `ready`, or `standby` for a hot standby),
    /// what `pg_ctl start -w` waits on. Reading it costs no connection attempt, where each
    /// refused one during a long crash recovery is a FATAL line in PostgreSQL's log.
    pub fn postmaster_starting(&self) -> bool {
        std::fs::read_to_string(self.path.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().nth(7).map(|l| l.trim() == "starting"))
            .unwrap_or(false)
    }

    /// Checks PGDATA is ours, for this cluster and instance.
    pub fn verify(&self, cluster: &str, instance: &str) -> Result<(), PgDataError> {
        if !self.path.join("PG_VERSION").exists() {
            return Err(PgDataError::Missing(self.path.clone()));
        }
        let marker = self.path.join(MARKER);
        let text = match std::fs::read_to_string(&marker) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PgDataError::NotOurs(self.path.clone()));
            }
            Err(source) => {
                return Err(PgDataError::Io {
                    path: marker,
                    source,
                });
            }
        };
        let m: Marker =
            serde_json::from_str(&text).map_err(|_| PgDataError::NotOurs(self.path.clone()))?;
        if m.cluster != cluster || m.instance != instance {
            return Err(PgDataError::OtherInstance {
                path: self.path.clone(),
                found_cluster: m.cluster,
                found_instance: m.instance,
                cluster: cluster.to_owned(),
                instance: instance.to_owned(),
            });
        }
        Ok(())
    }

    /// Writes the marker (after initdb or join), owned by PostgreSQL's user: `pg_rewind`
    /// rewrites every file of PGDATA and must be able to.
    pub fn mark(
        &self,
        cluster: &str,
        instance: &str,
        run_as: Option<RunAs>,
    ) -> Result<(), PgDataError> {
        write_marker(self.path.join(MARKER), cluster, instance, run_as)
    }

    /// Where an unfinished re-clone is recorded: next to PGDATA, not in it, because a
    /// clone needs PGDATA empty, and on the same volume, so it survives what the data does.
    fn reclone_record(&self) -> PathBuf {
        self.beside(".reclone")
    }

    fn beside(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    /// Records that this instance's data is about to be replaced by a clone of the
    /// primary, with the marker it will get: until [`DataDir::end_reclone`], whatever is in
    /// PGDATA is a half-made copy that only a new clone may replace (never start it, never
    /// initdb over it).
    pub fn begin_reclone(
        &self,
        cluster: &str,
        instance: &str,
        run_as: Option<RunAs>,
    ) -> Result<(), PgDataError> {
        write_marker(self.reclone_record(), cluster, instance, run_as)
    }

    /// The marker of an unfinished re-clone of this directory, if one was begun.
    pub fn reclone_pending(&self) -> Option<Marker> {
        let text = std::fs::read_to_string(self.reclone_record()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The re-clone is complete (PGDATA holds a marked standby).
    pub fn end_reclone(&self) -> Result<(), PgDataError> {
        let path = self.reclone_record();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(PgDataError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Keeps a copy of `global/pg_control` before pg_rewind, or puts the copy back when a
    /// pg_rewind cut off mid-way left the file empty: without a readable control file the
    /// next attempt cannot even tell what state the data is in. The copy is kept beside
    /// PGDATA: pg_rewind deletes files in PGDATA that the source does not have.
    pub fn keep_control_file(&self, run_as: Option<RunAs>) -> Result<(), PgDataError> {
        let control = self.path.join("global/pg_control");
        let copy = self.beside(".pg_control");
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| PgDataError::Io { path, source }
        };
        let size = std::fs::metadata(&control).map(|m| m.len()).unwrap_or(0);
        if size > 0 {
            std::fs::copy(&control, &copy).map_err(io(&copy))?;
            runas::own(run_as, &copy).map_err(io(&copy))
        } else if copy.exists() {
            std::fs::copy(&copy, &control).map_err(io(&control))?;
            runas::own(run_as, &control).map_err(io(&control))
        } else {
            Err(PgDataError::Io {
                path: control,
                source: std::io::Error::other("empty or missing, and no saved copy"),
            })
        }
    }

    /// Drops the copy [`DataDir::keep_control_file`] made, once pg_rewind succeeded.
    pub fn forget_control_file(&self) {
        let _ = std::fs::remove_file(self.beside(".pg_control"));
    }

    /// Removes everything in the directory, keeping the directory itself (its mount
    /// point, its owner): what a failed bootstrap left must not be taken for data. Best
    /// effort.
    pub fn empty(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let _ = if e.path().is_dir() {
                    std::fs::remove_dir_all(e.path())
                } else {
                    std::fs::remove_file(e.path())
                };
            }
        }
    }

    /// Refuses to start when the WAL volume cannot hold two more segments.
    pub fn check_wal_space(&self, segment_mb: u64) -> Result<(), PgDataError> {
        let wal = self.path.join("pg_wal");
        let probe = if wal.exists() { wal } else { self.path.clone() };
        let Ok(st) = nix::sys::statvfs::statvfs(&probe) else {
            return Ok(()); // cannot tell: PostgreSQL itself will report a full disk
        };
        // The field types differ between platforms (u32 on some 32-bit ones).
        #[allow(clippy::unnecessary_cast)]
        let free_mb = st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024);
        if free_mb < 2 * segment_mb {
            return Err(PgDataError::WalDiskFull {
                path: self.path.clone(),
                free_mb,
            });
        }
        Ok(())
    }

    /// Makes this PGDATA a standby (`standby.signal`, owned by PostgreSQL's user).
    pub fn set_standby(&self, run_as: Option<RunAs>) -> std::io::Result<()> {
        let path = self.path.join("standby.signal");
        std::fs::write(&path, "")?;
        runas::own(run_as, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_says_when_postgres_is_still_starting() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = DataDir::new(tmp.path());
        assert!(!d.postmaster_starting(), "no lock file: try to connect");
        let lock = |status: &str| {
            format!(
                "123\n{}\n1700000000\n5432\n/run\n*\n  1 2\n{status}\n",
                tmp.path().display()
            )
        };
        std::fs::write(tmp.path().join("postmaster.pid"), lock("starting")).expect("write");
        assert!(d.postmaster_starting());
        for status in ["ready   ", "standby "] {
            std::fs::write(tmp.path().join("postmaster.pid"), lock(status)).expect("write");
            assert!(!d.postmaster_starting(), "{status}");
        }
    }

    #[test]
    fn refuses_what_is_not_ours() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = DataDir::new(tmp.path());
        assert_eq!(d.role(), PgData::Missing);
        assert!(matches!(
            d.verify("pg", "pg-1"),
            Err(PgDataError::Missing(_))
        ));
        std::fs::write(tmp.path().join("PG_VERSION"), "15\n").expect("write");
        let e = d.verify("pg", "pg-1").expect_err("no marker");
        assert!(e.to_string().contains("did not create"), "{e}");
        d.mark("pg", "pg-2", None).expect("mark");
        let e = d.verify("pg", "pg-1").expect_err("other instance");
        assert!(
            e.to_string()
                .contains("belongs to instance pg-2 of cluster pg"),
            "{e}"
        );
        assert!(d.verify("pg", "pg-2").is_ok());
        assert_eq!(d.role(), PgData::Primary);
        d.set_standby(None).expect("signal");
        assert_eq!(d.role(), PgData::Standby);
        assert!(d.check_wal_space(16).is_ok());
        let e = d
            .check_wal_space(u64::MAX / 4)
            .expect_err("no disk is that big");
        assert!(e.to_string().contains("less than two WAL segments"), "{e}");
    }

    #[test]
    fn a_reclone_is_recorded_beside_pgdata_until_it_ends() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = DataDir::new(tmp.path().join("pgdata"));
        std::fs::create_dir(&d.path).expect("mkdir");
        assert_eq!(d.reclone_pending(), None);
        d.begin_reclone("pg", "pg-2", None).expect("begin");
        d.empty();
        let m = d
            .reclone_pending()
            .expect("recorded outside PGDATA: emptying keeps it");
        assert_eq!((m.cluster.as_str(), m.instance.as_str()), ("pg", "pg-2"));
        d.end_reclone().expect("end");
        assert_eq!(d.reclone_pending(), None);
        d.end_reclone().expect("ending twice is fine");
    }

    #[test]
    fn an_emptied_control_file_is_put_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = DataDir::new(tmp.path().join("pgdata"));
        std::fs::create_dir_all(d.path.join("global")).expect("mkdir");
        let control = d.path.join("global/pg_control");
        assert!(d.keep_control_file(None).is_err(), "nothing to keep");
        std::fs::write(&control, b"control").expect("write");
        d.keep_control_file(None).expect("kept");
        std::fs::write(&control, b"").expect("a cut-off pg_rewind");
        d.keep_control_file(None).expect("put back");
        assert_eq!(std::fs::read(&control).expect("read"), b"control");
        d.forget_control_file();
        std::fs::write(&control, b"").expect("empty again");
        assert!(d.keep_control_file(None).is_err(), "no copy any more");
    }
}
