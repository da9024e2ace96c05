//! A network partition on loopback: every packet to and from some ports dropped, with an
//! nftables table of its own that goes when the [`Cut`] is dropped. Needs root and the
//! `nft` program (Debian's `nftables`). Behind the `testkit` feature.

use std::process::Command;

/// Ports cut off while it lives.
pub struct Cut(String);

impl Cut {
    /// Whether cuts can be made here, and why not.
    pub fn available() -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (nftables)".into());
        }
        match Command::new("nft").args(["list", "tables"]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "nft refused: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run nft ({e}): apt-get install nftables")),
        }
    }

    /// Drops every TCP packet to or from `ports` until dropped.
    pub fn ports(ports: &[u16]) -> Result<Cut, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let table = format!(
            "cnpg_cut_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let set = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let script = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n  tcp dport {{ {set} }} drop\n  tcp sport {{ {set} }} drop\n }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
        let out = Command::new("nft").arg("-f").arg(&path).output();
        let _ = std::fs::remove_file(&path);
        match out {
            Ok(o) if o.status.success() => Ok(Cut(table)),
            Ok(o) => Err(format!(
                "nft -f: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run nft ({e}): apt-get install nftables")),
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}
