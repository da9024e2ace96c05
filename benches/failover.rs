//! Failover and switchover on a local 3-instance cluster, measured from a client's seat.
//!
//! A client commits numbered rows through `-rw` as fast as it can. For each trial we kill
//! the primary (its postmaster, or its instance manager and postmaster together) or switch
//! over with `kubectl-cnpg promote`, and measure the write gap: from the fault to the next
//! acknowledged commit. After each trial, acknowledged rows missing from the new primary are
//! counted (with `dataDurability: required`, and with asynchronous replication).
//!
//! `cargo bench -p cnpg-benches --bench failover` (builds the release binaries first).
//! Set TRIALS to change the number of trials per kind (default 5).
//! Targets on this 2-core machine: median failover under 1 s, switchover gap under 1 s,
//! 0 rows lost with `required`.

use cnpg_instance::runas::{self, RunAs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn build() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ok = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "cnpg-instance",
            "-p",
            "cnpg-operator",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(ok.success(), "build failed");
    root.join("target/release")
}

fn manifest(name: &str, required: bool) -> String {
    let sync = if required {
        "    synchronous:\n      method: any\n      number: 1\n      dataDurability: required\n"
    } else {
        ""
    };
    format!(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  instances: 3\n  postgresql:\n    parameters:\n      shared_buffers: 32MB\n      wal_retrieve_retry_interval: 200ms\n{sync}  storage:\n    size: 1Gi\n"
    )
}

struct Cluster {
    bin: PathBuf,
    name: String,
    state: tempfile::TempDir,
}

impl Cluster {
    fn up(bin: &Path, name: &str, required: bool) -> Cluster {
        let state = tempfile::tempdir().expect("tempdir");
        runas::own(RunAs::detect().expect("user"), state.path()).expect("own");
        let m = state.path().join("c.yaml");
        std::fs::write(&m, manifest(name, required)).expect("manifest");
        let out = Command::new(bin.join("kubectl-cnpg"))
            .args(["local", "up", "--detach", "-f"])
            .arg(&m)
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            bin: bin.to_owned(),
            name: name.into(),
            state,
        }
    }
    fn root(&self) -> PathBuf {
        self.state.path().join(&self.name)
    }
    fn status(&self) -> serde_json::Value {
        std::fs::read_to_string(self.root().join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }
    fn primary(&self) -> String {
        self.status()["state"]["currentPrimary"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    fn converged(&self) -> bool {
        let s = self.status();
        let inst = s["instances"].as_array().cloned().unwrap_or_default();
        let p: Vec<_> = inst
            .iter()
            .filter(|i| i["status"]["isPrimary"] == true)
            .collect();
        p.len() == 1
            && s["phase"] == "Cluster in healthy state"
            && inst.len() == 3
            && inst
                .iter()
                .filter(|i| i["status"]["isPrimary"] != true)
                .all(|i| i["status"]["isWalReceiverActive"] == true)
    }
    fn wait_converged(&self) {
        let t = Instant::now();
        while !self.converged() {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "not converged: {}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn postmaster(&self, inst: &str) -> i32 {
        std::fs::read_to_string(
            self.root()
                .join("instances")
                .join(inst)
                .join("data/postmaster.pid"),
        )
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .expect("postmaster.pid")
    }
    fn port(&self) -> u16 {
        self.status()["ports"]["rw"].as_u64().unwrap_or_default() as u16
    }
    fn password(&self) -> String {
        std::fs::read_to_string(self.root().join("secrets/app-password"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(self.bin.join("kubectl-cnpg"))
            .args(["local", "destroy", &self.name, "--state-dir"])
            .arg(self.state.path())
            .output();
    }
}

/// Commits 1, 2, 3, ... through -rw; records when each was acknowledged.
struct Writer {
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16, pw: String) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (acked.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let mut n = 1i64;
                let mut client: Option<tokio_postgres::Client> = None;
                while !s.load(Ordering::Relaxed) {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        let mut cfg = tokio_postgres::Config::new();
                        cfg.host("127.0.0.1")
                            .port(port)
                            .user("app")
                            .password(&pw)
                            .dbname("app")
                            .connect_timeout(Duration::from_secs(1));
                        match cfg.connect(tokio_postgres::NoTls).await {
                            Ok((c, conn)) => {
                                tokio::spawn(async move {
                                    let _ = conn.await;
                                });
                                let _ = c
                                    .batch_execute(
                                        "CREATE TABLE IF NOT EXISTS rows (n bigint PRIMARY KEY)",
                                    )
                                    .await;
                                client = Some(c);
                            }
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        }
                    }
                    let c = client.as_ref().expect("connected");
                    let v = n;
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&v];
                    match tokio::time::timeout(
                        Duration::from_secs(3),
                        c.execute(
                            "INSERT INTO rows VALUES ($1) ON CONFLICT DO NOTHING",
                            &params,
                        ),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            a.lock().expect("lock").push((n, Instant::now()));
                            n += 1;
                        }
                        _ => client = None,
                    }
                }
            });
        });
        Writer {
            acked,
            stop,
            handle: Some(handle),
        }
    }
    fn first_ack_after(&self, t: Instant, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if let Some((_, at)) = self
                .acked
                .lock()
                .expect("lock")
                .iter()
                .rev()
                .take_while(|(_, at)| *at > t)
                .last()
            {
                return Some(at.duration_since(t));
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.acked
            .lock()
            .expect("lock")
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }
}

fn lost(c: &Cluster, acked: &[i64]) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let present: std::collections::BTreeSet<i64> = rt.block_on(async {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(c.port())
            .user("app")
            .password(c.password())
            .dbname("app");
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .query("SELECT n FROM rows", &[])
            .await
            .expect("select")
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    acked.iter().filter(|n| !present.contains(n)).count()
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn parent(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn report(label: &str, gaps: &[Duration], lost: usize) {
    let mut v = gaps.to_vec();
    v.sort();
    if v.is_empty() {
        println!("{label}: no successful trial");
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: write gap median {:.0} ms, min {:.0} ms, max {:.0} ms over {} trials; acknowledged rows lost: {lost}",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    );
}

fn main() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(5);
    let bin = build();
    for required in [true, false] {
        let mode = if required { "required" } else { "async" };
        let c = Cluster::up(&bin, if required { "bfr" } else { "bfa" }, required);
        c.wait_converged();
        let w = Writer::start(c.port(), c.password());
        std::thread::sleep(Duration::from_millis(500));
        for kind in ["postmaster kill", "instance kill", "switchover"] {
            let mut gaps = Vec::new();
            for _ in 0..trials {
                c.wait_converged();
                std::thread::sleep(Duration::from_millis(300));
                let p = c.primary();
                let t = Instant::now();
                match kind {
                    "postmaster kill" => kill(c.postmaster(&p)),
                    "instance kill" => {
                        let pm = c.postmaster(&p);
                        kill(parent(pm));
                        kill(pm);
                    }
                    _ => {
                        let target = c.status()["instances"]
                            .as_array()
                            .and_then(|a| {
                                a.iter()
                                    .find(|i| i["name"] != p.as_str())
                                    .and_then(|i| i["name"].as_str().map(String::from))
                            })
                            .unwrap_or_default();
                        let ok = Command::new(bin.join("kubectl-cnpg"))
                            .args(["promote", &c.name, &target, "--state-dir"])
                            .arg(c.state.path())
                            .output()
                            .map(|o| o.status.success())
                            .unwrap_or(false);
                        assert!(ok, "promote failed");
                    }
                }
                if let Some(gap) = w.first_ack_after(t, Duration::from_secs(60)) {
                    gaps.push(gap);
                }
            }
            c.wait_converged();
            let acked: Vec<i64> = w
                .acked
                .lock()
                .expect("lock")
                .iter()
                .map(|(n, _)| *n)
                .collect();
            report(&format!("{mode:>8} {kind:<15}"), &gaps, lost(&c, &acked));
        }
        let acked = w.finish();
        println!(
            "{mode:>8} total: {} commits acknowledged, {} missing at the end",
            acked.len(),
            lost(&c, &acked)
        );
    }
    println!("(write gap: from the fault to the next commit acknowledged through -rw)");
}
