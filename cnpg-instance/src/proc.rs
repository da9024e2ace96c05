//! What `/proc/<pid>/stat` says of a process: its state and its parent. The instance
//! manager needs it to tell a dead postmaster (a zombie not yet reaped) from a live one;
//! the local platform to find every process of an instance.

/// A process as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    /// The parent's pid.
    pub parent: i32,
}

/// `None` when no such process exists (or `/proc` cannot be read).
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields follow its last ')'.
    let mut fields = text.rsplit(')').next()?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some(Stat { state, parent })
}

/// The process has exited: no such process, a zombie not yet reaped, or dead.
pub fn exited(pid: i32) -> bool {
    stat(pid).is_none_or(|st| matches!(st.state, 'Z' | 'X' | 'x'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn our_own_process() {
        let me = super::stat(std::process::id() as i32).expect("our stat");
        assert_eq!(me.parent, nix::unistd::getppid().as_raw());
        assert!(super::stat(i32::MAX).is_none());
        assert!(super::exited(i32::MAX));
        assert!(!super::exited(std::process::id() as i32));
    }
}
