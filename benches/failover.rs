//! The fault suite: failover and switchover on a local 3-instance cluster, measured from a
//! client's seat, with a probe watching for two primaries.
//!
//! A client commits numbered rows through `-rw` as fast as it can, and a probe asks every
//! instance directly, every 20 ms, whether it accepts writes. Faults, each on the primary:
//! kill -9 of its postmaster (restarted in place); kill -9 of its instance manager and
//! postmaster (a node crash); `kubectl-cnpg promote` (switchover); SIGSTOP of all its
//! processes for 10 s (a hung node); its ports dropped on loopback for 10 s (nftables, as
//! root); a node crash with the operator killed 0-500 ms into the failover; a replica's
//! disk filled for 10 s (each instance on a tmpfs of its own, as root); the wall clock of
//! every process of the cluster stepped an hour, back or forward, while the failover from
//! a hung primary waits out its `failoverDelay` (libfaketime). Printed per
//! fault: trials, how long writes stopped (median, max), acknowledged
//! rows lost, and probe rounds that saw two writable primaries; before the faults, the
//! single-row commit latency through `-rw` and straight to the primary. Both with
//! `dataDurability: required` and with asynchronous replication. Everything is over TLS
//! as a user runs it: the clients verify the server (`verify-full`), standbys stream with
//! client certificates.
//!
//! `cargo bench -p cnpg-benches --bench failover` (builds the release binaries first).
//! TRIALS sets the trials per fault (default 5); FAULTS=node,hung (label prefixes) picks
//! faults; MODES=required or MODES=async runs one replication mode; a long run prints
//! interim figures every PROGRESS trials (default 25).
//!
//! `cargo bench -p cnpg-benches --bench failover -- --kubernetes` runs trials on
//! Kubernetes (as root, with `../shared/k8s` beside the workspace): the real control
//! plane, the shipped operator with its own ServiceAccount, the test kubelet running the
//! pods, the client committing through the `-rw` Service's ClusterIP. The faults there:
//! kill -9 of every process of the primary's pod, deletion of the primary's pod, and
//! `kubectl-cnpg promote`.
//! Targets on this 2-core machine: postmaster kill under 0.3 s (async) / 0.5 s
//! (`required`), node crash under 1 s, switchover under 0.5 s, no split brain, 0 rows lost
//! with `required` and in every switchover.

use cnpg_instance::runas::{self, RunAs};
use cnpg_operator::testkit::fakeclock::FakeClock;
use cnpg_operator::testkit::netcut::Cut;
use cnpg_operator::testkit::probe::{Probe, local_targets};
use cnpg_operator::testkit::volume::Volume;
use cnpg_operator::testkit::writer::{Target, Writer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn manifest(name: &str, required: bool) -> String {
    manifest_with(name, required, "")
}

/// The suite's manifest, with `extra` spec lines (two-space indented).
fn manifest_with(name: &str, required: bool, extra: &str) -> String {
    let sync = if required {
        "    synchronous:\n      method: any\n      number: 1\n      dataDurability: required\n"
    } else {
        ""
    };
    format!(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  instances: 3\n  postgresql:\n    parameters:\n      shared_buffers: 32MB\n      wal_retrieve_retry_interval: 200ms\n{sync}{extra}  storage:\n    size: 1Gi\n"
    )
}

struct Cluster {
    bin: PathBuf,
    name: String,
    /// Each instance's own tmpfs, by name (the `Volumes` rig); unmounted before the state
    /// directory is removed (fields drop in order).
    volumes: Vec<(String, Volume)>,
    /// The clock every process of the cluster runs on (the `Clock` rig).
    clock: Option<FakeClock>,
    state: tempfile::TempDir,
}

/// What a cluster of the suite runs on besides its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rig {
    /// As users run it.
    Plain,
    /// Each instance's directory on a tmpfs of its own (mounted as root), so that one
    /// replica's disk can be filled. tmpfs makes fsync free: this cluster's figures are not
    /// comparable with the others'.
    Volumes,
    /// Every process of the cluster (operator, instance managers, PostgreSQL) under
    /// libfaketime, its wall clock stepped through a file; `failoverDelay: 3` so that a
    /// decision waits across a step. The monotonic clock is left alone, as an NTP step
    /// leaves it.
    Clock,
}

impl Rig {
    /// Why it cannot be set up here, if it cannot.
    fn unavailable(self) -> Option<String> {
        match self {
            Rig::Plain => None,
            Rig::Volumes => Volume::available().err(),
            Rig::Clock => FakeClock::library().err(),
        }
    }
}

impl Cluster {
    fn up(bin: &Path, name: &str, required: bool, rig: Rig) -> Cluster {
        let state = tempfile::tempdir().expect("tempdir");
        let user = RunAs::detect().expect("user");
        runas::own(user, state.path()).expect("own");
        let m = state.path().join("c.yaml");
        let extra = if rig == Rig::Clock {
            "  failoverDelay: 3\n"
        } else {
            ""
        };
        std::fs::write(&m, manifest_with(name, required, extra)).expect("manifest");
        let mut volumes = Vec::new();
        if rig == Rig::Volumes {
            for i in 1..=3 {
                let instance = format!("{name}-{i}");
                let dir = state.path().join(name).join("instances").join(&instance);
                let v = Volume::mount(&dir, "2g", user).expect("a volume");
                volumes.push((instance, v));
            }
            runas::own(user, &state.path().join(name)).expect("own");
            runas::own(user, &state.path().join(name).join("instances")).expect("own");
        }
        let clock = (rig == Rig::Clock).then(|| FakeClock::new(state.path()).expect("a clock"));
        let mut cmd = Command::new(bin.join("kubectl-cnpg"));
        cmd.args(["local", "up", "--detach", "-f"])
            .arg(&m)
            .arg("--state-dir")
            .arg(state.path());
        if let Some(clock) = &clock {
            clock.apply(&mut cmd);
        }
        let out = cmd.output().expect("runs");
        let c = Cluster {
            bin: bin.to_owned(),
            name: name.into(),
            state,
            volumes,
            clock,
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// One instance's status as the operator last saw it.
    fn instance_status(&self, name: &str) -> serde_json::Value {
        self.status()["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name))
            .map(|i| i["status"].clone())
            .unwrap_or_default()
    }
    fn root(&self) -> PathBuf {
        self.state.path().join(&self.name)
    }
    fn status(&self) -> serde_json::Value {
        cnpg_benches::local_status(&self.root())
    }
    fn primary(&self) -> String {
        cnpg_benches::local_primary(&self.status())
    }
    fn converged(&self) -> bool {
        cnpg_benches::local_converged(&self.status(), 3)
    }
    fn wait_converged(&self) {
        let t = Instant::now();
        while !self.converged() {
            if t.elapsed() > Duration::from_secs(180) {
                // Kept for whoever looks into it: the cluster's directory (every log)
                // goes with the temporary directory when the suite ends.
                let kept = std::env::temp_dir().join(format!(
                    "cnpg-failover-stuck-{}-{}",
                    self.name,
                    std::process::id()
                ));
                let _ = Command::new("cp")
                    .arg("-a")
                    .arg(self.root())
                    .arg(&kept)
                    .status();
                // HOLD_S=N keeps the stuck cluster running N seconds, to look at it live.
                if let Some(s) = std::env::var("HOLD_S").ok().and_then(|s| s.parse().ok()) {
                    eprintln!(
                        "stuck: holding the cluster {s} s ({})",
                        self.root().display()
                    );
                    std::thread::sleep(Duration::from_secs(s));
                }
                panic!(
                    "not converged (the cluster's directory is kept in {}): {}",
                    kept.display(),
                    self.status()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn postmaster(&self, inst: &str) -> i32 {
        self.postmaster_now(inst).expect("postmaster.pid")
    }
    fn postmaster_now(&self, inst: &str) -> Option<i32> {
        std::fs::read_to_string(
            self.root()
                .join("instances")
                .join(inst)
                .join("data/postmaster.pid"),
        )
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse().ok())
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
            more_ports: Vec::new(),
            // Over TLS, verifying the server as `local up`'s connection strings do.
            ca: Some(self.root().join("secrets/ca.crt")),
        }
    }
    /// A multi-host connection straight to the instances (`target_session_attrs=read-write`).
    fn multi_host(&self) -> Target {
        let ports: Vec<u16> = self.instance_ports().iter().map(|(_, p, _)| *p).collect();
        Target {
            port: ports[0],
            more_ports: ports[1..].to_vec(),
            ..self.target()
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

/// Why rows went missing: each run of consecutive lost numbers with the server that
/// acknowledged them, when (from the last fault before), and what the probe saw around
/// it. Printed only when something was lost, at most `MAX_RUNS` runs.
fn explain_lost(
    c: &Cluster,
    table: &str,
    w: &Writer,
    faults: &[(Instant, usize, String)],
    seen: &cnpg_operator::testkit::probe::Seen,
) {
    const MAX_RUNS: usize = 12;
    let present = c.target().rows_in(table);
    let acked = w.acked_at();
    let conns = w.connections();
    let names: Vec<(String, u16)> = c
        .instance_ports()
        .into_iter()
        .map(|(n, p, _)| (n, p))
        .collect();
    let server = |n: i64| {
        conns
            .iter()
            .rev()
            .find(|k| k.from <= n)
            .and_then(|k| k.port)
            .map_or("?".to_owned(), |p| {
                names
                    .iter()
                    .find(|(_, q)| *q == p)
                    .map_or(format!("port {p}"), |(n, _)| n.clone())
            })
    };
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, (n, _)) in acked.iter().enumerate() {
        if present.contains(n) {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
    }
    for &(a, b) in runs.iter().take(MAX_RUNS) {
        let (first, t0) = acked[a];
        let (last, t1) = acked[b];
        let Some((ft, trial, primary)) = faults.iter().rev().find(|(t, _, _)| *t <= t0) else {
            continue;
        };
        let ms = |t: Instant| t.saturating_duration_since(*ft).as_millis();
        let around: Vec<String> = seen
            .changes
            .iter()
            .filter(|(t, _, _)| {
                *t + Duration::from_secs(2) >= t0 && *t <= t1 + Duration::from_secs(2)
            })
            .map(|(t, n, a)| {
                let a = match a {
                    Some(true) => "writable",
                    Some(false) => "standby",
                    None => "silent",
                };
                let sign = if *t < *ft { "-" } else { "+" };
                let d = if *t < *ft {
                    ft.duration_since(*t)
                } else {
                    t.duration_since(*ft)
                };
                format!("{sign}{}ms {n} {a}", d.as_millis())
            })
            .collect();
        println!(
            "         {table}: lost {} (n={first}..{last}) acknowledged by {} +{}..+{} ms after trial {trial}'s fault on {primary}; probe: {}",
            b - a + 1,
            server(first),
            ms(t0),
            ms(t1),
            around.join(", ")
        );
    }
    if runs.len() > MAX_RUNS {
        println!(
            "         {table}: {} more runs of lost rows",
            runs.len() - MAX_RUNS
        );
    }
}

fn lost(c: &Cluster, acked: &[i64]) -> usize {
    lost_in(c, "rows", acked)
}

fn lost_in(c: &Cluster, table: &str, acked: &[i64]) -> usize {
    let present = c.target().rows_in(table);
    acked.iter().filter(|n| !present.contains(n)).count()
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn parent(pid: i32) -> i32 {
    cnpg_instance::proc::stat(pid).map_or(0, |s| s.parent)
}

fn report(label: &str, gaps: &[Duration], lost: usize) {
    report_split(label, gaps, lost, None);
}

/// One fault's line: trials, split-brain rounds, acknowledged rows lost, the write outage
/// (median and max).
fn report_split(label: &str, gaps: &[Duration], lost: usize, split: Option<u64>) {
    let split = split.map_or(String::new(), |s| format!("; split brain: {s}"));
    report_gaps(
        label,
        gaps,
        &format!("; acknowledged rows lost: {lost}{split}"),
    );
}

/// Trials and the write outage (median, min, max), then `rest`.
fn report_gaps(label: &str, gaps: &[Duration], rest: &str) {
    let mut v = gaps.to_vec();
    v.sort();
    if v.is_empty() {
        println!("{label}: no successful trial");
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: {} trials; writes stopped: median {:.0} ms, min {:.0} ms, max {:.0} ms{rest}",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
    );
}

/// Faults the suite injects on a local cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// kill -9 of the primary's postmaster (its instance manager restarts it in place).
    PostmasterKill,
    /// kill -9 of the primary's instance manager and postmaster together.
    NodeCrash,
    /// `kubectl-cnpg promote` to a replica.
    Switchover,
    /// Every process of the primary stopped (SIGSTOP) for 10 s, then continued.
    HungNode,
    /// The primary's ports dropped on loopback (nftables) for 10 s.
    Partition,
    /// A node crash, and the operator killed 0–500 ms into the failover, then started again.
    OperatorKilled,
    /// A replica's disk filled for 10 s (its own tmpfs, filled by a file), then freed.
    DiskFull,
    /// The primary hangs (SIGSTOP) and the wall clock of the whole cluster steps an hour
    /// while the failover waits out its 3 s `failoverDelay`: forward on even trials (it
    /// was set back an hour just before the fault), back on odd ones.
    ClockStep,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::PostmasterKill,
        Fault::NodeCrash,
        Fault::Switchover,
        Fault::HungNode,
        Fault::Partition,
        Fault::OperatorKilled,
        Fault::DiskFull,
        Fault::ClockStep,
    ];

    fn rig(self) -> Rig {
        match self {
            Fault::DiskFull => Rig::Volumes,
            Fault::ClockStep => Rig::Clock,
            _ => Rig::Plain,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Fault::PostmasterKill => "postmaster kill",
            Fault::NodeCrash => "node crash",
            Fault::Switchover => "switchover",
            Fault::HungNode => "hung node 10 s",
            Fault::Partition => "partition 10 s",
            Fault::OperatorKilled => "operator killed at each step",
            Fault::DiskFull => "replica disk full",
            Fault::ClockStep => "clock step ±1 h",
        }
    }
}

/// Where the operator is killed in a failover, trial after trial: once the target leaves
/// the crashed primary, then once the new one is elected; each time after its actions,
/// after saving its decision, after telling the instances (`CNPG_LOCAL_PAUSE_AT`).
const PAUSE_POINTS: [&str; 6] = [
    "pending:actions",
    "pending:state",
    "pending:view",
    "elected:actions",
    "elected:state",
    "elected:view",
];

/// Single-row commits, one after the other: the median, in ms.
fn commit_latency(t: &Target, n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let c = t.connect().await.expect("connect");
        c.batch_execute("CREATE TABLE IF NOT EXISTS latency (n int)")
            .await
            .expect("table");
        let mut v = Vec::with_capacity(n);
        for i in 0..n as i32 {
            let s = Instant::now();
            c.execute("INSERT INTO latency VALUES ($1)", &[&i])
                .await
                .expect("insert");
            v.push(s.elapsed());
        }
        v.sort();
        v[n / 2].as_secs_f64() * 1000.0
    })
}

impl Cluster {
    fn instance_ports(&self) -> Vec<(String, u16, u16)> {
        self.status()["ports"]["instances"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(n, p)| {
                        (
                            n.clone(),
                            p[0].as_u64().unwrap_or_default() as u16,
                            p[1].as_u64().unwrap_or_default() as u16,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn direct(&self, instance: &str) -> Target {
        let mut t = self.target();
        t.port = self
            .instance_ports()
            .into_iter()
            .find(|(n, _, _)| n == instance)
            .map(|(_, p, _)| p)
            .expect("the instance's port");
        t
    }

    fn probe(&self) -> Probe {
        let ports = serde_json::from_value(self.status()["ports"].clone()).expect("ports");
        Probe::start(
            local_targets(&ports, &self.target()),
            Duration::from_millis(20),
        )
    }

    /// A new operator that stops at `at` of the next failover, once it has written its
    /// first status.
    fn arm_pause(&self, at: &str) {
        kill(self.operator_pid());
        std::thread::sleep(Duration::from_millis(200));
        self.restart_operator_with(Some(at));
        let pid = self.operator_pid();
        let start = Instant::now();
        while self.status()["operatorPid"] != pid && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn operator_pid(&self) -> i32 {
        std::fs::read_to_string(self.root().join("operator.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("operator.pid")
    }

    /// The operator started again; with `pause_at`, told to stop at that point of the
    /// next failover (`CNPG_LOCAL_PAUSE_AT`).
    fn restart_operator_with(&self, pause_at: Option<&str>) {
        let mut cmd = Command::new(self.bin.join("kubectl-cnpg"));
        cmd.args(["local", "up", "--detach", "-f"])
            .arg(self.root().join("cluster.yaml"))
            .arg("--state-dir")
            .arg(self.state.path());
        if let Some(at) = pause_at {
            cmd.env("CNPG_LOCAL_PAUSE_AT", at);
        }
        let out = cmd.output().expect("runs");
        assert!(
            out.status.success(),
            "restarting the operator: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn a_replica(&self, primary: &str) -> String {
        self.status()["instances"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|i| i["name"] != primary)
                    .and_then(|i| i["name"].as_str().map(String::from))
            })
            .unwrap_or_default()
    }
}

/// Injects one fault into the primary `p` (a replica for a full disk); returns once the
/// fault is over (a hung node continued, a partition healed, the disk freed), and whether
/// the cluster's status showed it (a full disk: the replica reported `walDiskFull`).
fn inject(c: &Cluster, fault: Fault, p: &str, trial: usize) -> bool {
    use cnpg_operator::local::process::signal_instance;
    use nix::sys::signal::Signal;
    let t = Instant::now();
    match fault {
        Fault::PostmasterKill => kill(c.postmaster(p)),
        Fault::ClockStep => {
            // A hung primary rather than a crashed one: a crashed node's manager is started
            // again and may be back within the delay.
            let clock = c.clock.as_ref().expect("a cluster on a fake clock");
            let (before, during) = if trial.is_multiple_of(2) {
                (-3600, 0)
            } else {
                (0, -3600)
            };
            clock.step(before);
            std::thread::sleep(FakeClock::SEEN_WITHIN);
            let manager = parent(c.postmaster(p));
            signal_instance(manager, Signal::SIGSTOP);
            let start = Instant::now();
            while !c.status()["phaseReason"]
                .as_str()
                .is_some_and(|r| r.contains("(failoverDelay)"))
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            clock.step(during);
            let start = Instant::now();
            while c.primary() == p && start.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal_instance(manager, Signal::SIGCONT);
            clock.step(0);
        }
        Fault::DiskFull => {
            let r = c.a_replica(p);
            let (_, volume) = c
                .volumes
                .iter()
                .find(|(n, _)| *n == r)
                .expect("the replica's volume");
            let filled = volume.fill("filler");
            let mut shown = false;
            while t.elapsed() < Duration::from_secs(10) {
                shown |= c.instance_status(&r)["walDiskFull"] == true;
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(filled);
            return shown;
        }
        Fault::NodeCrash | Fault::OperatorKilled => {
            let pm = c.postmaster(p);
            kill(parent(pm));
            kill(pm);
            if fault == Fault::OperatorKilled {
                // Armed before the trial (`arm_pause`): the operator stops at its point of
                // the failover, and is killed there.
                let paused = c.root().join("paused");
                let start = Instant::now();
                while !paused.exists() && start.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if !paused.exists() {
                    println!(
                        "         trial {trial}: the operator never reached {}",
                        PAUSE_POINTS[trial % PAUSE_POINTS.len()]
                    );
                }
                kill(c.operator_pid());
                let _ = std::fs::remove_file(&paused);
                std::thread::sleep(Duration::from_millis(200));
                c.restart_operator_with(None);
            }
        }
        Fault::Switchover => {
            let target = c.a_replica(p);
            let ok = Command::new(c.bin.join("kubectl-cnpg"))
                .args(["promote", &c.name, &target, "--state-dir"])
                .arg(c.state.path())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(ok, "promote failed");
        }
        Fault::HungNode => {
            let manager = parent(c.postmaster(p));
            signal_instance(manager, Signal::SIGSTOP);
            std::thread::sleep(Duration::from_secs(10).saturating_sub(t.elapsed()));
            signal_instance(manager, Signal::SIGCONT);
        }
        Fault::Partition => {
            let ports: Vec<u16> = c
                .instance_ports()
                .into_iter()
                .filter(|(n, _, _)| n == p)
                .flat_map(|(_, pg, status)| [pg, status])
                .collect();
            let cut = Cut::ports(&ports).expect("cut the primary off");
            std::thread::sleep(Duration::from_secs(10).saturating_sub(t.elapsed()));
            drop(cut);
        }
    }
    true
}

fn main() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(5);
    let bin = cnpg_benches::release_binaries();
    if std::env::args().any(|a| a == "--kubernetes") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(kubernetes::run(&bin, trials));
        return;
    }
    let only: Option<String> = std::env::var("FAULTS").ok();
    let selected = |f: &Fault| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| f.label().starts_with(x.trim())))
    };
    // `MODES=required` or `MODES=async` runs one of the two.
    let modes = std::env::var("MODES").unwrap_or_default();
    for required in [true, false] {
        let mode = if required { "required" } else { "async" };
        if !modes.is_empty() && !modes.split(',').any(|m| m.trim() == mode) {
            continue;
        }
        for rig in [Rig::Plain, Rig::Volumes, Rig::Clock] {
            let faults: Vec<Fault> = Fault::ALL
                .into_iter()
                .filter(|f| f.rig() == rig && selected(f))
                .collect();
            if faults.is_empty() {
                continue;
            }
            if let Some(why) = rig.unavailable() {
                for f in faults {
                    println!("{mode:>8} {:<16}: not injected: {why}", f.label());
                }
                continue;
            }
            let suffix = match rig {
                Rig::Plain => "",
                Rig::Volumes => "v",
                Rig::Clock => "c",
            };
            let name = format!("{}{suffix}", if required { "bfr" } else { "bfa" });
            let c = Cluster::up(&bin, &name, required, rig);
            c.wait_converged();
            if rig == Rig::Plain {
                let p = c.primary();
                println!(
                    "{mode:>8} single-row commit: median {:.2} ms through -rw, {:.2} ms straight to the primary (this client over TLS, verify-full; standbys stream over TLS 1.3 with client certificates)",
                    commit_latency(&c.target(), 300),
                    commit_latency(&c.direct(&p), 300)
                );
            }
            run_faults(&c, mode, &faults, trials);
        }
    }
    println!(
        "(writes stopped: the longest time without a commit acknowledged through -rw (multi-host client: straight to the instances, target_session_attrs=read-write), from the fault until writes flow again; split brain: probe rounds in which two instances accepted writes; a full disk and clock steps run on clusters of their own: tmpfs volumes, libfaketime)"
    );
}

/// How many trials pass between two interim lines of one fault (`PROGRESS`, default 25).
fn progress_every() -> usize {
    std::env::var("PROGRESS")
        .ok()
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .unwrap_or(25)
}

/// Trials of each fault on one cluster, a writer through `-rw` and the probe running
/// throughout; one line per fault, and the totals.
fn run_faults(c: &Cluster, mode: &str, faults: &[Fault], trials: usize) {
    let probe = c.probe();
    let w = Writer::start(c.target());
    // Side by side: a client failing over by itself, with a multi-host connection string.
    let direct = Writer::start_into(c.multi_host(), "rows_direct");
    std::thread::sleep(Duration::from_millis(500));
    for &fault in faults {
        if fault == Fault::Partition
            && let Err(why) = Cut::available()
        {
            println!("{mode:>8} {:<16}: not injected: {why}", fault.label());
            continue;
        }
        let lost_before = lost(c, &w.acked());
        let direct_lost_before = lost_in(c, "rows_direct", &direct.acked());
        let split_before = probe.seen().split_rounds;
        let mut gaps = Vec::new();
        let mut direct_gaps = Vec::new();
        let (mut moved, mut shown) = (0, 0);
        // The outages of trials that kept the primary and of those that moved it.
        let (mut kept_gaps, mut moved_gaps) = (Vec::new(), Vec::new());
        let mut injected = Vec::new();
        let started = Instant::now();
        for trial in 0..trials {
            if fault == Fault::OperatorKilled {
                c.arm_pause(PAUSE_POINTS[trial % PAUSE_POINTS.len()]);
            }
            c.wait_converged();
            std::thread::sleep(Duration::from_millis(300));
            let p = c.primary();
            let pm = c.postmaster(&p);
            let t = Instant::now();
            injected.push((t, trial, p.clone()));
            shown += usize::from(inject(c, fault, &p, trial));
            // A fault on the primary must have taken effect before "converged" means
            // anything: the primary moved, or (restarted in place) runs a new postmaster.
            let start = Instant::now();
            while fault != Fault::DiskFull
                && c.primary() == p
                && c.postmaster_now(&p).is_none_or(|now| now == pm)
            {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "{} had no effect: {}",
                    fault.label(),
                    c.status()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // The outage: the longest time without an acknowledged commit from the fault
            // until writes flow again (a commit already on its way may still be
            // acknowledged right after the fault: the first ack would hide it).
            c.wait_converged();
            w.wait_for_more(w.count(), Duration::from_secs(60));
            direct.wait_for_more(direct.count(), Duration::from_secs(60));
            let now = Instant::now();
            gaps.push(w.longest_gap(t, now));
            direct_gaps.push(direct.longest_gap(t, now));
            if c.primary() != p && fault == Fault::DiskFull {
                // Not expected of a full replica disk (seen once in ten trials): why.
                let events = c.status()["events"].clone();
                println!("         trial {trial}: the primary moved from {p}; events: {events}");
            }
            let gap = *gaps.last().expect("just pushed");
            if c.primary() != p {
                moved += 1;
                moved_gaps.push(gap);
            } else {
                kept_gaps.push(gap);
            }
            // A long run says where it stands every `PROGRESS` trials, so that one stopped
            // early still has figures.
            let done = trial + 1;
            if done < trials && done.is_multiple_of(progress_every()) {
                report_split(
                    &format!(
                        "{mode:>8} {:<16} … after {:.0} s (primary moved {moved}/{done})",
                        fault.label(),
                        started.elapsed().as_secs_f64()
                    ),
                    &gaps,
                    lost(c, &w.acked()).saturating_sub(lost_before),
                    Some(probe.seen().split_rounds - split_before),
                );
            }
        }
        c.wait_converged();
        let seen = probe.seen();
        let lost_now = lost(c, &w.acked()).saturating_sub(lost_before);
        let shown = if fault == Fault::DiskFull {
            format!(", reported full {shown}/{trials}")
        } else {
            String::new()
        };
        report_split(
            &format!(
                "{mode:>8} {:<16} (primary moved {moved}/{trials}{shown})",
                fault.label()
            ),
            &gaps,
            lost_now,
            Some(seen.split_rounds - split_before),
        );
        // Mixed (a postmaster kill restarted in place, or failed over on a crash loop):
        // each kind apart, or the median mixes two different things.
        if !kept_gaps.is_empty() && !moved_gaps.is_empty() {
            report_gaps(
                &format!("{mode:>8} {:<16}   primary kept", fault.label()),
                &kept_gaps,
                "",
            );
            report_gaps(
                &format!("{mode:>8} {:<16}   primary moved", fault.label()),
                &moved_gaps,
                "",
            );
        }
        report(
            &format!("{mode:>8} {:<16}   multi-host client", fault.label()),
            &direct_gaps,
            lost_in(c, "rows_direct", &direct.acked()).saturating_sub(direct_lost_before),
        );
        if seen.split_rounds > split_before {
            println!("         first split brain seen: {:?}", seen.first);
        }
        if lost_now > 0 {
            explain_lost(c, "rows", &w, &injected, &seen);
        }
        if lost_in(c, "rows_direct", &direct.acked()) > direct_lost_before {
            explain_lost(c, "rows_direct", &direct, &injected, &seen);
        }
    }
    let direct_acked = direct.finish();
    let acked = w.finish();
    c.wait_converged();
    println!(
        "{mode:>8} total on {}: {} commits acknowledged through -rw, {} missing at the end; multi-host: {}, {} missing; the probe asked every instance {} times",
        c.name,
        acked.len(),
        lost(c, &acked),
        direct_acked.len(),
        lost_in(c, "rows_direct", &direct_acked),
        probe.finish().rounds
    );
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
