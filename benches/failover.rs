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
//!
//! `cargo bench -p cnpg-benches --bench failover -- --kubernetes` runs the same trials on
//! Kubernetes (as root, with `../shared/k8s` beside the workspace): the real control
//! plane, the shipped operator with its own ServiceAccount, the test kubelet running the
//! pods, the client committing through the `-rw` Service's ClusterIP. The faults there:
//! kill -9 of every process of the primary's pod, deletion of the primary's pod, and
//! `kubectl-cnpg promote`.
//! Targets on this 2-core machine: median failover under 1 s, switchover gap under 1 s,
//! 0 rows lost with `required`.

use cnpg_instance::runas::{self, RunAs};
use cnpg_operator::testkit::writer::{Target, Writer};
use std::path::{Path, PathBuf};
use std::process::Command;
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
    fn target(&self) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.port(),
            user: "app".into(),
            password: self.password(),
        }
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

fn lost(c: &Cluster, acked: &[i64]) -> usize {
    let present = c.target().rows();
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
    if std::env::args().any(|a| a == "--kubernetes") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(kubernetes::run(&bin, trials));
        return;
    }
    for required in [true, false] {
        let mode = if required { "required" } else { "async" };
        let c = Cluster::up(&bin, if required { "bfr" } else { "bfa" }, required);
        c.wait_converged();
        let w = Writer::start(c.target());
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
            let acked = w.acked();
            report(&format!("{mode:>8} {kind:<15}"), &gaps, lost(&c, &acked));
        }
        let acked = w.finish();
        c.wait_converged();
        println!(
            "{mode:>8} total: {} commits acknowledged, {} missing at the end",
            acked.len(),
            lost(&c, &acked)
        );
    }
    println!("(write gap: from the fault to the next commit acknowledged through -rw)");
}

/// The trials on Kubernetes.
mod kubernetes {
    use super::{manifest, report};
    use cnpg_operator::testkit::control_plane::{ControlPlane, apply_yaml};
    use cnpg_operator::testkit::e2e::{Operator, installed, kubelet, plugin, rw_target, settled};
    use cnpg_operator::testkit::writer::Writer;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams};
    use std::path::Path;
    use std::time::{Duration, Instant};

    pub async fn run(bin: &Path, trials: usize) {
        let Some(cp) = ControlPlane::shared("failover --kubernetes") else {
            return;
        };
        let admin = cp.admin().await;
        for required in [true, false] {
            let mode = if required { "required" } else { "async" };
            let name = if required { "bfr" } else { "bfa" };
            let tmp = tempfile::tempdir().expect("tempdir");
            let (ns, kubeconfig) = installed(cp, name, tmp.path()).await;
            let kubelet = std::sync::Arc::new(
                kubelet(
                    cp,
                    &ns,
                    &tmp.path().join("kubelet"),
                    &bin.join("cnpg-instance"),
                )
                .await,
            );
            let mut op = Operator::start(&bin.join("cnpg-operator"), &kubeconfig, &ns, tmp.path());
            let k = kubelet.clone();
            op.kubelet_logs = Some(Box::new(move || k.logs(25)));
            let mut doc: serde_json::Value = serde_json::to_value(
                cnpg_operator::manifests::parse_documents(&manifest(name, required)).expect("yaml")
                    [0]
                .clone(),
            )
            .expect("json");
            doc["metadata"]["namespace"] = serde_json::json!(ns);
            apply_yaml(&admin, &doc.to_string(), "bench").await;
            let mut primary = settled(&admin, &ns, name, &op, "bootstrap", None).await;
            let target = rw_target(&admin, &ns, name)
                .await
                .expect("the -rw endpoint");
            let w = Writer::start(target.clone());
            tokio::task::block_in_place(|| w.wait_for_more(20, Duration::from_secs(120)));
            for kind in ["pod kill -9", "pod delete", "switchover"] {
                let mut gaps = Vec::new();
                for _ in 0..trials {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let t = Instant::now();
                    match kind {
                        "pod kill -9" => kubelet.kill_pod(&ns, &primary),
                        "pod delete" => {
                            Api::<Pod>::namespaced(admin.clone(), &ns)
                                .delete(&primary, &DeleteParams::default())
                                .await
                                .expect("delete the primary's pod");
                        }
                        _ => {
                            let to = (1..=3)
                                .map(|i| format!("{name}-{i}"))
                                .find(|i| *i != primary)
                                .expect("another instance");
                            let (code, _, err) = plugin(cp, &ns, &["promote", name, &to]).await;
                            assert_eq!(code, 0, "promote: {err}");
                        }
                    }
                    primary = settled(&admin, &ns, name, &op, kind, Some(&primary)).await;
                    let before = w.count();
                    tokio::task::block_in_place(|| {
                        w.wait_for_more(before, Duration::from_secs(60))
                    });
                    gaps.push(w.longest_gap(t, Instant::now()));
                }
                let acked = w.acked();
                let t2 = target.clone();
                let present = tokio::task::spawn_blocking(move || t2.rows())
                    .await
                    .expect("rows");
                let lost = acked.iter().filter(|n| !present.contains(n)).count();
                report(&format!("{mode:>8} {kind:<15}"), &gaps, lost);
            }
            let acked = tokio::task::block_in_place(|| w.finish());
            let t2 = target.clone();
            let present = tokio::task::spawn_blocking(move || t2.rows())
                .await
                .expect("rows");
            println!(
                "{mode:>8} total: {} commits acknowledged, {} missing at the end",
                acked.len(),
                acked.iter().filter(|n| !present.contains(n)).count()
            );
            kubelet.kill_all();
        }
        println!(
            "(Kubernetes; write gap: the longest time without a commit acknowledged through the -rw Service, from the fault until the cluster settled)"
        );
    }
}
