//! PostgreSQL refuses to run as root. When the instance manager runs as root (a container
//! default, and CI), it runs PostgreSQL's programs as the unprivileged `postgres` user and
//! makes that user own the directories PostgreSQL writes.

use std::path::Path;

/// The user PostgreSQL's programs run as, when it differs from ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Running as root and no `postgres` user exists.
#[derive(Debug, thiserror::Error)]
#[error(
    "running as root, and PostgreSQL refuses to run as root, but there is no {user:?} user to \
     run it as; create it (useradd --system {user}) or run cnpg-instance as a normal user"
)]
pub struct NoUser {
    /// The user looked for.
    pub user: String,
}

impl RunAs {
    /// `None` when we are not root (programs run as us); the `postgres` user when we are.
    pub fn detect() -> Result<Option<RunAs>, NoUser> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        Self::user("postgres").map(Some)
    }

    /// A named user.
    pub fn user(name: &str) -> Result<RunAs, NoUser> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(RunAs {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            _ => Err(NoUser {
                user: name.to_owned(),
            }),
        }
    }

    /// Makes a program run as this user.
    pub fn apply(self, cmd: &mut tokio::process::Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Gives `path` (not recursively) to this user.
    pub fn own(self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
    }

    /// Checks that this user can reach `dir`: every directory on the way must let it
    /// through (search permission), or PostgreSQL's programs fail on their first file, and
    /// a start would be retried for ever. The error names the directory that bars it.
    pub fn can_enter(self, dir: &Path) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for d in dir.ancestors() {
            let Ok(m) = std::fs::metadata(d) else {
                continue;
            };
            let mode = m.mode();
            let ok = if m.uid() == self.uid {
                mode & 0o100 != 0
            } else if m.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                let owner = nix::unistd::User::from_uid(m.uid().into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| m.uid().to_string());
                return Err(format!(
                    "{} (mode {:04o}, owned by {owner}) cannot be entered by uid {}, which runs \
                     PostgreSQL; choose a directory it can reach, or let it through (chmod o+x {})",
                    d.display(),
                    mode & 0o7777,
                    self.uid,
                    d.display()
                ));
            }
        }
        Ok(())
    }
}

/// Gives `path` to `run_as` when set.
pub fn own(run_as: Option<RunAs>, path: &Path) -> std::io::Result<()> {
    match run_as {
        Some(r) => r.own(path),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_closed_directory_on_the_way_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let closed = tmp.path().join("closed");
        let inner = closed.join("cluster");
        std::fs::create_dir_all(&inner).expect("mkdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // Somebody else: neither owner nor group of anything here.
        let other = RunAs {
            uid: 54_321,
            gid: 54_321,
        };
        let err = other.can_enter(&inner).expect_err("barred");
        assert!(err.contains("closed (mode 0700"), "{err}");
        assert!(err.contains("chmod o+x"), "{err}");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let ok = other.can_enter(&inner);
        // The temp dir's own ancestors may be closed on some machines; ours are not.
        if std::fs::metadata(tmp.path().parent().expect("parent")).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.mode() & 0o001 != 0
        }) {
            assert!(ok.is_ok(), "{ok:?}");
        }
    }
}
