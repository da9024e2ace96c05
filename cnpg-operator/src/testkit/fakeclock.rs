//! A wall clock that steps, for the processes of one cluster: they run under libfaketime
//! (Debian's `faketime`), which offsets `CLOCK_REALTIME` by what a file says and reads
//! that file again every second. The monotonic clock is left alone, as an NTP step leaves
//! it. Behind the `testkit` feature.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The offset file and the library the processes are started with.
pub struct FakeClock {
    file: PathBuf,
    library: PathBuf,
}

impl FakeClock {
    /// How long after [`FakeClock::step`] every process has read the new offset.
    pub const SEEN_WITHIN: Duration = Duration::from_millis(1200);

    /// libfaketime's library for multithreaded programs, or why there is none.
    pub fn library() -> Result<PathBuf, String> {
        std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
            .find(|p| p.exists())
            .ok_or_else(|| "libfaketime is not installed: apt-get install faketime".to_owned())
    }

    /// A clock at the real time, its offset file in `dir` (which the processes' users can
    /// read).
    pub fn new(dir: &Path) -> Result<FakeClock, String> {
        let clock = FakeClock {
            file: dir.join("faketime"),
            library: FakeClock::library()?,
        };
        clock.step(0);
        Ok(clock)
    }

    /// Starts `cmd`, and every process it starts, on this clock.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", &self.library)
            .env("FAKETIME_TIMESTAMP_FILE", &self.file)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }

    /// Sets the clock `offset` seconds from the real time (written whole, so no process
    /// reads half an offset).
    pub fn step(&self, offset: i64) {
        let tmp = self.file.with_extension("new");
        std::fs::write(&tmp, format!("{offset:+}\n")).expect("the clock's offset file");
        std::fs::rename(&tmp, &self.file).expect("the clock's offset file");
    }
}
