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
}

/// Gives `path` to `run_as` when set.
pub fn own(run_as: Option<RunAs>, path: &Path) -> std::io::Result<()> {
    match run_as {
        Some(r) => r.own(path),
        None => Ok(()),
    }
}
