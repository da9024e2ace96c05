//! Finding the PostgreSQL programs (`postgres`, `initdb`, `pg_ctl`, `pg_basebackup`,
//! `pg_rewind`, `pg_controldata`).
//!
//! The search follows what a user expects, first match wins: an explicit `--pg-bin DIR`,
//! the `PG_BIN` environment variable, `pg_config --bindir`, then the Debian/Ubuntu layout
//! `/usr/lib/postgresql/<major>/bin` (highest major first). An explicit choice that is wrong
//! is an error, never silently replaced by another installation.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs the instance manager runs; a directory missing any of them is not usable.
pub const REQUIRED: [&str; 6] = [
    "postgres",
    "initdb",
    "pg_ctl",
    "pg_basebackup",
    "pg_rewind",
    "pg_controldata",
];

/// Where the binaries were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `--pg-bin` flag.
    Flag,
    /// The `PG_BIN` environment variable.
    Env,
    /// `pg_config --bindir`.
    PgConfig,
    /// A `<root>/<major>/bin` directory, such as `/usr/lib/postgresql/15/bin`.
    Versioned,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "--pg-bin",
            Source::Env => "PG_BIN",
            Source::PgConfig => "pg_config --bindir",
            Source::Versioned => "a versioned install directory",
        })
    }
}

/// A directory holding every program in [`REQUIRED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The directory.
    pub dir: PathBuf,
    /// How it was found.
    pub source: Source,
    /// The PostgreSQL major version (`postgres --version`).
    pub major: u32,
    /// The full version string, e.g. `15.18`.
    pub version: String,
}

impl PgBinaries {
    /// The path of one program in this directory.
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// PostgreSQL could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum PgBinError {
    /// A directory was chosen explicitly but lacks programs.
    #[error(
        "{chosen_by} points at {dir}, which lacks {missing}; point it at the bin directory of a \
         PostgreSQL installation (e.g. /usr/lib/postgresql/15/bin)",
        missing = missing.join(", ")
    )]
    Incomplete {
        /// How the directory was chosen.
        chosen_by: Source,
        /// The directory.
        dir: PathBuf,
        /// Programs not found there.
        missing: Vec<String>,
    },
    /// Nothing was found anywhere.
    #[error(
        "PostgreSQL was not found (looked at --pg-bin, PG_BIN, pg_config --bindir and {roots}); \
         install it (Debian/Ubuntu: apt-get install postgresql) or pass --pg-bin DIR"
    )]
    NotFound {
        /// The versioned roots searched, for the message.
        roots: String,
    },
    /// `postgres --version` failed or printed something unexpected.
    #[error("cannot tell the PostgreSQL version of {program}: {why}")]
    Version {
        /// The program run.
        program: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// Where to look, as data, so that tests can point the search at their own directories.
#[derive(Debug, Clone)]
pub struct Search {
    /// The `--pg-bin` flag.
    pub flag: Option<PathBuf>,
    /// The value of `PG_BIN`.
    pub env: Option<OsString>,
    /// The `pg_config` program to ask (`None` skips that step).
    pub pg_config: Option<PathBuf>,
    /// Roots holding `<major>/bin` directories.
    pub versioned_roots: Vec<PathBuf>,
}

impl Search {
    /// The search a user gets: the flag, the real `PG_BIN`, `pg_config` from `PATH`, and
    /// `/usr/lib/postgresql`.
    pub fn standard(flag: Option<PathBuf>) -> Self {
        Search {
            flag,
            env: std::env::var_os("PG_BIN").filter(|v| !v.is_empty()),
            pg_config: Some(PathBuf::from("pg_config")),
            versioned_roots: vec![PathBuf::from("/usr/lib/postgresql")],
        }
    }

    /// Runs the search.
    pub fn find(&self) -> Result<PgBinaries, PgBinError> {
        if let Some(dir) = &self.flag {
            return checked(dir.clone(), Source::Flag);
        }
        if let Some(dir) = &self.env {
            return checked(PathBuf::from(dir), Source::Env);
        }
        if let Some(dir) = self.pg_config.as_deref().and_then(pg_config_bindir)
            && missing(&dir).is_empty()
        {
            return checked(dir, Source::PgConfig);
        }
        for dir in versioned_dirs(&self.versioned_roots) {
            if missing(&dir).is_empty() {
                return checked(dir, Source::Versioned);
            }
        }
        Err(PgBinError::NotFound {
            roots: self
                .versioned_roots
                .iter()
                .map(|r| format!("{}/*/bin", r.display()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn missing(dir: &Path) -> Vec<String> {
    REQUIRED
        .iter()
        .filter(|p| !is_executable(&dir.join(p)))
        .map(|p| (*p).to_owned())
        .collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn checked(dir: PathBuf, source: Source) -> Result<PgBinaries, PgBinError> {
    let missing = missing(&dir);
    if !missing.is_empty() {
        return Err(PgBinError::Incomplete {
            chosen_by: source,
            dir,
            missing,
        });
    }
    let program = dir.join("postgres");
    let out = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|e| PgBinError::Version {
            program: program.clone(),
            why: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (major, version) = parse_version(&text).ok_or_else(|| PgBinError::Version {
        program: program.clone(),
        why: format!("unexpected output {:?}", text.trim()),
    })?;
    Ok(PgBinaries {
        dir,
        source,
        major,
        version,
    })
}

fn pg_config_bindir(pg_config: &Path) -> Option<PathBuf> {
    let out = Command::new(pg_config).arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `<root>/<major>/bin` directories, highest major first.
fn versioned_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(major) = name.to_str().and_then(|n| n.parse::<u32>().ok()) {
                found.push((major, entry.path().join("bin")));
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Reads `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` as `(15, "15.18")`.
pub fn parse_version(text: &str) -> Option<(u32, String)> {
    let after = text
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    Some((digits.parse().ok()?, after.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_strings() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some((15, "15.18".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18beta1"),
            Some((18, "18beta1".into()))
        );
        assert_eq!(parse_version("something else"), None);
    }
}
