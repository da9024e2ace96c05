//! An instance's processes as the machine sees them: its instance manager, the postmaster,
//! and every PostgreSQL backend. PostgreSQL puts each child in a session of its own, so
//! the manager's process group does not hold the backends: stopping or killing an
//! instance as a whole (a hung node, the platform's fencing) needs the process tree.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;

/// `pid` and all its descendants, parents before children (from `/proc`).
pub fn tree(pid: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(st) = cnpg_instance::proc::stat(p) {
            children.entry(st.parent).or_default().push(p);
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        out.extend(children.get(&out[i]).into_iter().flatten().copied());
        i += 1;
    }
    out
}

/// Sends `signal` to every process of the instance whose manager is `manager` (a process
/// group leader). The group (manager and postmaster) is stopped first, so no backend can
/// be forked between listing the tree and signalling it; the tree holds the group's
/// members too, so SIGCONT resumes them and SIGKILL ends them.
pub fn signal_instance(manager: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(manager), Signal::SIGSTOP);
    for p in tree(manager) {
        let _ = kill(Pid::from_raw(p), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_holds_grandchildren_in_other_sessions() {
        // sh → setsid sleep: the grandchild is in a session of its own, as a backend is.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let me = sh.id() as i32;
        let start = std::time::Instant::now();
        while tree(me).len() < 2 && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let t = tree(me);
        assert_eq!(t[0], me);
        assert!(t.len() >= 2, "{t:?}");
        for p in &t[1..] {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let _ = sh.kill();
        let _ = sh.wait();
    }
}
