//! A disk of one's own for an instance: a tmpfs mounted on its directory, which a test
//! fills to make that one instance's disk full while the others keep theirs. Needs root
//! (`mount`). Behind the `testkit` feature.
//!
//! tmpfs makes fsync free, so a cluster on volumes commits faster than one on a disk:
//! its timings are not comparable with other clusters'.

use cnpg_instance::runas::RunAs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted when dropped.
pub struct Volume {
    dir: PathBuf,
}

/// The volume filled: a file of zeros that took every free byte, removed when dropped.
pub struct Filled {
    file: PathBuf,
}

impl Volume {
    /// Whether volumes can be mounted here, and why not.
    pub fn available() -> Result<(), String> {
        if nix::unistd::geteuid().is_root() {
            Ok(())
        } else {
            Err("mounting a tmpfs per instance needs root".into())
        }
    }

    /// Mounts a tmpfs of `size` (`mount`'s syntax: `2g`) on `dir`, created if missing,
    /// its root owned by `owner` with mode 0700.
    pub fn mount(dir: &Path, size: &str, owner: Option<RunAs>) -> Result<Volume, String> {
        Volume::available()?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (uid, gid) = owner.map_or((0, 0), |u| (u.uid, u.gid));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700,uid={uid},gid={gid}"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting a tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Volume {
            dir: dir.to_owned(),
        })
    }

    /// Takes every free byte with a file of zeros (`name` in the volume's root).
    pub fn fill(&self, name: &str) -> Filled {
        self.fill_leaving(name, 0)
    }

    /// Takes the free bytes but about `left` (to the MiB) with a file of zeros.
    pub fn fill_leaving(&self, name: &str, left: u64) -> Filled {
        let file = self.dir.join(name);
        let mut f = std::fs::File::create(&file).expect("the filler file");
        let block = vec![0u8; 1 << 20];
        // The field types differ between platforms (u32 on some 32-bit ones).
        #[allow(clippy::unnecessary_cast)]
        let free = || {
            nix::sys::statvfs::statvfs(&self.dir).map_or(0, |s| {
                s.blocks_available() as u64 * s.fragment_size() as u64
            })
        };
        while free() >= left + block.len() as u64 && f.write_all(&block).is_ok() {}
        Filled { file }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

impl Drop for Filled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}
