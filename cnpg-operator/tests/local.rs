//! End-to-end tests of the local platform: real PostgreSQL, three instances, a client
//! committing numbered rows through `-rw` the whole time, with `dataDurability: required`.
//! After each fault: one primary, every replica streaming from it, no acknowledged row
//! missing.

use cnpg_instance::runas::{self, RunAs};
use cnpg_operator::testkit::fakeclock::FakeClock;
use cnpg_operator::testkit::probe::{Probe, local_targets};
use cnpg_operator::testkit::volume::Volume;
use cnpg_operator::testkit::writer::{Target, Writer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn kubectl_cnpg() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-cnpg")
}

fn instance_bin() -> &'static Path {
    cnpg_instance::testkit::instance_binary(false)
}

/// `kubectl-cnpg local up -f MANIFEST --state-dir STATE` with the instance binary under test.
fn local_up(manifest: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(kubectl_cnpg());
    cmd.args(["local", "up", "-f"])
        .arg(manifest)
        .arg("--state-dir")
        .arg(state)
        .arg("--instance-bin")
        .arg(instance_bin());
    cmd
}

const MANIFEST: &str = "apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: NAME
spec:
  instances: 3
  postgresql:
    parameters:
      fsync: 'off'
      shared_buffers: 16MB
      max_connections: '40'
      wal_retrieve_retry_interval: 200ms
    synchronous:
      method: any
      number: 1
      dataDurability: required
  storage:
    size: 1Gi
";

struct Cluster {
    name: String,
    /// Each instance's own tmpfs, by name ([`Rig::volumes`]); unmounted before the state
    /// directory goes (fields drop in order).
    volumes: Vec<(String, Volume)>,
    /// The clock every process of the cluster runs on ([`Rig::clock`]).
    clock: Option<FakeClock>,
    /// Shared by the clusters of a test that recovers one from another's backups.
    state: std::sync::Arc<tempfile::TempDir>,
}

/// What a test's cluster runs on besides [`MANIFEST`].
#[derive(Default)]
struct Rig {
    /// Each instance's directory on a tmpfs of its own, to fill one instance's disk.
    volumes: bool,
    /// Every process of the cluster on a wall clock that steps (libfaketime).
    clock: bool,
    /// Spec lines added to the manifest (two-space indented).
    spec: String,
    /// Documents added after the Cluster (Secrets it names).
    docs: String,
    /// PostgreSQL parameters added (six-space indented lines).
    parameters: String,
}

impl Rig {
    /// The cluster's file: [`MANIFEST`] with this rig's lines and documents.
    fn manifest(&self, name: &str) -> String {
        MANIFEST
            .replace("NAME", name)
            .replace(
                "      wal_retrieve_retry_interval: 200ms\n",
                &format!(
                    "      wal_retrieve_retry_interval: 200ms\n{}",
                    self.parameters
                ),
            )
            .replace("  storage:", &format!("{}  storage:", self.spec))
            + &self.docs
    }

    /// Archiving to `destination` on `s3` (gzip, two segments at a time) with credentials
    /// from a Secret in the same file; `more` continues the `barmanObjectStore` block.
    fn archiving(s3: &cnpg_instance::testkit::S3Server, destination: &str, more: &str) -> Rig {
        Rig {
            spec: format!(
                "  backup:\n    barmanObjectStore:\n      destinationPath: {destination}\n      endpointURL: {}\n      s3Credentials:\n        accessKeyId: {{name: creds, key: ID}}\n        secretAccessKey: {{name: creds, key: SECRET}}\n        region: {{name: creds, key: REGION}}\n      wal: {{compression: gzip, maxParallel: 2}}{more}\n",
                s3.endpoint
            ),
            docs: "---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {ID: local-key, SECRET: local-secret-key, REGION: us-east-1}\n".into(),
            ..Default::default()
        }
    }
}

/// The primary runs the synchronous configuration the operator published: until it does,
/// a quorum-gated failover is refused (no replica is known to hold every commit), so a
/// fault a test injects right after convergence would find no failover to make.
fn sync_confirmed(s: &serde_json::Value, primary: &serde_json::Value) -> bool {
    let in_effect = primary["status"]["synchronousStandbyNames"]
        .as_str()
        .unwrap_or_default();
    // Nothing published is nothing confirmed: every cluster here runs `dataDurability:
    // required`, and an empty value in effect must not pass for one (CI: a switchover's
    // new primary, killed 0.8 s after this said "converged", could not be failed over).
    match serde_json::from_value::<Option<cnpg_core::sync::SyncStandbys>>(
        s["state"]["publishedSync"].clone(),
    ) {
        Ok(Some(published)) => cnpg_core::sync::render(Some(&published)) == in_effect,
        _ => false,
    }
}

impl Cluster {
    fn up(name: &str) -> Cluster {
        Cluster::up_on(name, Rig::default())
    }

    fn up_on(name: &str, rig: Rig) -> Cluster {
        let state = tempfile::tempdir().expect("tempdir");
        let user = RunAs::detect().expect("user");
        runas::own(user, state.path()).expect("own");
        Cluster::up_in(std::sync::Arc::new(state), "cluster.yaml", name, rig)
            .unwrap_or_else(|failed| panic!("{}", failed.1))
    }

    /// Another cluster in this one's state directory (a Backup of this one is found there),
    /// from `<name>.yaml`; `Err` with the cluster and what `local up` said when it failed.
    fn beside(&self, name: &str, rig: Rig) -> Result<Cluster, Box<(Cluster, String)>> {
        Cluster::up_in(self.state.clone(), &format!("{name}.yaml"), name, rig)
    }

    fn up_in(
        state: std::sync::Arc<tempfile::TempDir>,
        file: &str,
        name: &str,
        rig: Rig,
    ) -> Result<Cluster, Box<(Cluster, String)>> {
        let user = RunAs::detect().expect("user");
        let manifest = state.path().join(file);
        std::fs::write(&manifest, rig.manifest(name)).expect("manifest");
        let mut volumes = Vec::new();
        if rig.volumes {
            let instances = state.path().join(name).join("instances");
            for i in 1..=3 {
                let instance = format!("{name}-{i}");
                let v = Volume::mount(&instances.join(&instance), "1g", user).expect("a volume");
                volumes.push((instance, v));
            }
            runas::own(user, &state.path().join(name)).expect("own");
            runas::own(user, &instances).expect("own");
        }
        let clock = rig
            .clock
            .then(|| FakeClock::new(state.path()).unwrap_or_else(|e| panic!("{e}")));
        let mut up = local_up(&manifest, state.path());
        if let Some(clock) = &clock {
            clock.apply(&mut up);
        }
        let out = up.arg("--detach").output().expect("kubectl-cnpg runs");
        // From here the cluster is stopped on drop, also when `up` failed (its operator
        // keeps trying in the background otherwise).
        let cluster = Cluster {
            name: name.into(),
            volumes,
            clock,
            state,
        };
        if !out.status.success() {
            let logs = cluster.logs();
            let said = format!(
                "local up failed: {}{}\n{logs}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Err(Box::new((cluster, said)));
        }
        Ok(cluster)
    }

    fn root(&self) -> PathBuf {
        self.state.path().join(&self.name)
    }

    /// The last lines of the operator's and every instance's log, for a failure message.
    fn logs(&self) -> String {
        let tail = |path: PathBuf| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "--- {}\n{}\n",
                path.display(),
                lines[lines.len().saturating_sub(15)..].join("\n")
            )
        };
        let mut out = tail(self.root().join("operator.log"));
        if let Ok(dirs) = std::fs::read_dir(self.root().join("instances")) {
            for d in dirs.flatten() {
                out.push_str(&tail(d.path().join("postgres.log")));
                out.push_str(&tail(d.path().join("manager.log")));
            }
        }
        out
    }

    /// The pid the running operator wrote in `operator.pid`.
    fn operator_pid(&self) -> i32 {
        std::fs::read_to_string(self.root().join("operator.pid"))
            .expect("operator.pid")
            .trim()
            .parse()
            .expect("a pid")
    }

    /// The operator killed with SIGKILL and started again on the same state.
    fn kill_and_restart_operator(&self) {
        kill(self.operator_pid());
        std::thread::sleep(Duration::from_millis(300));
        self.restart_operator();
    }

    /// Starts the operator again (after it was killed), on the same state.
    fn restart_operator(&self) {
        self.restart_operator_with(&[]);
    }

    /// The operator started again, with these variables in its environment.
    fn restart_operator_with(&self, env: &[(&str, &str)]) {
        let out = local_up(&self.state.path().join("cluster.yaml"), self.state.path())
            .arg("--detach")
            .envs(env.iter().copied())
            .output()
            .expect("kubectl-cnpg runs");
        assert!(
            out.status.success(),
            "restart failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn status(&self) -> serde_json::Value {
        std::fs::read_to_string(self.root().join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn primary(&self) -> Option<String> {
        self.status()["state"]["currentPrimary"]
            .as_str()
            .map(String::from)
    }

    fn rw_port(&self) -> u16 {
        self.status()["ports"]["rw"].as_u64().expect("rw port") as u16
    }

    fn target(&self) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.rw_port(),
            user: "app".into(),
            password: self.password(),
            more_ports: Vec::new(),
            // Over TLS, verifying the server as `local up`'s connection strings do.
            ca: Some(self.root().join("secrets/ca.crt")),
        }
    }

    /// The app user's connection string through `-rw`, verifying the server.
    fn app_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app user=app password={} sslmode=verify-full sslrootcert={}",
            self.rw_port(),
            self.password(),
            self.root().join("secrets/ca.crt").display()
        )
    }

    fn password(&self) -> String {
        std::fs::read_to_string(self.root().join("secrets/app-password"))
            .expect("password")
            .trim()
            .to_owned()
    }

    fn postmaster_pid(&self, instance: &str) -> i32 {
        std::fs::read_to_string(
            self.root()
                .join("instances")
                .join(instance)
                .join("data/postmaster.pid"),
        )
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .expect("postmaster.pid")
    }

    /// A probe asking every instance directly whether it accepts writes.
    fn probe(&self) -> Probe {
        let ports = serde_json::from_value(self.status()["ports"].clone()).expect("ports");
        Probe::start(
            local_targets(&ports, &self.target()),
            Duration::from_millis(20),
        )
    }

    fn cnpg(&self, args: &[&str]) -> String {
        let out = Command::new(kubectl_cnpg())
            .args(args)
            .arg("--state-dir")
            .arg(self.state.path())
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for: one primary (not `old`), every other instance streaming from it on its
    /// timeline, the cluster healthy.
    fn converged_now(&self) -> bool {
        let s = self.status();
        let inst = s["instances"].as_array().cloned().unwrap_or_default();
        s["phase"] == "Cluster in healthy state"
            && inst
                .iter()
                .filter(|i| i["status"]["isPrimary"] == true)
                .count()
                == 1
            && inst
                .iter()
                .filter(|i| i["status"]["isPrimary"] != true)
                .all(|i| i["status"]["isWalReceiverActive"] == true)
    }

    fn wait_converged(&self, old: Option<&str>, timeout: Duration) -> String {
        self.wait_converged_n(old, 3, timeout)
    }

    fn wait_converged_n(&self, old: Option<&str>, n: usize, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.status();
            let instances = s["instances"].as_array().cloned().unwrap_or_default();
            let primaries: Vec<&serde_json::Value> = instances
                .iter()
                .filter(|i| i["status"]["isPrimary"] == true)
                .collect();
            if let ([p], Some(cur)) = (primaries.as_slice(), s["state"]["currentPrimary"].as_str())
            {
                let tl = p["status"]["timeLineID"].as_u64();
                let streaming = instances
                    .iter()
                    .filter(|i| i["name"] != p["name"])
                    .all(|i| {
                        i["status"]["isWalReceiverActive"] == true
                            && i["status"]["timeLineID"].as_u64() == tl
                    });
                let healthy = s["phase"] == "Cluster in healthy state";
                if p["name"] == cur
                    && Some(cur) != old
                    && streaming
                    && healthy
                    && sync_confirmed(&s, p)
                    && instances.len() == n
                {
                    return cur.to_owned();
                }
            }
            assert!(
                start.elapsed() < timeout,
                "not converged after {timeout:?}: {}",
                serde_json::to_string_pretty(&s).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(kubectl_cnpg())
            .args(["local", "down", &self.name, "--state-dir"])
            .arg(self.state.path())
            .output();
    }
}

fn assert_no_acked_row_missing(c: &Cluster, acked: &[i64]) {
    let present = c.target().rows();
    let missing: Vec<&i64> = acked.iter().filter(|n| !present.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged rows missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Each phase of a test already waits for 20 more acknowledged rows; this only guards
    // against a writer that never wrote.
    assert!(
        acked.len() > 20,
        "the client kept writing: {} rows",
        acked.len()
    );
}

fn kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

const T: Duration = Duration::from_secs(120);

/// A killed postmaster whose instance manager lives is restarted in place (crash recovery,
/// about 0.1 s) unless the operator fails over first: either way one primary, nothing lost.
#[test]
fn kill9_of_the_primary_postmaster_loses_no_acknowledged_row() {
    let c = Cluster::up("pgk");
    let old = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let before = w.count();
    kill(c.postmaster_pid(&old));
    w.wait_for_more(before, T);
    let now = c.wait_converged(None, T);
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
    assert!(
        c.cnpg(&["status", "pgk"])
            .contains(&format!("Primary instance:     {now}"))
    );
    // Restarted in place (well within the 5 s bound): no failover, never two primaries.
    // Its manager counted the crash; the operator may not even have seen it (a restart
    // can be over within one of its loops), so `PrimaryCrashed` is not required.
    let status = c.status();
    let events = status["events"].to_string();
    assert_eq!(now, old, "{events}\n{}", c.logs());
    let primary = status["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == now.as_str()))
        .expect("the primary's line");
    assert_eq!(primary["status"]["recentCrashes"], 1, "{primary}");
    for never in ["FailingOver", "MultiplePrimaries"] {
        assert!(!events.contains(never), "{never}: {events}");
    }
}

/// `local down` signals only the operator that holds the cluster's pid file locked: a
/// stale file naming some other process is removed, and that process is left alone.
#[test]
fn local_down_never_signals_a_stranger() {
    let state = tempfile::tempdir().expect("tempdir");
    let root = state.path().join("strange");
    std::fs::create_dir_all(&root).expect("mkdir");
    let mut stranger = Command::new("sleep").arg("60").spawn().expect("sleep");
    std::fs::write(root.join("operator.pid"), stranger.id().to_string()).expect("pid");
    let out = Command::new(kubectl_cnpg())
        .args(["local", "down", "strange", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("stale pid file removed"), "{text}");
    assert!(
        stranger.try_wait().expect("wait").is_none(),
        "the stranger was signalled"
    );
    assert!(!root.join("operator.pid").exists());
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// As root, PostgreSQL runs as `postgres`: a state directory it cannot enter (`mktemp -d`
/// as root is mode 0700) stops `local up` at once with what to do, instead of retrying
/// initdb for ever.
#[test]
fn a_state_dir_postgres_cannot_enter_stops_local_up_at_once() {
    if !nix::unistd::geteuid().is_root() {
        println!("needs root (PostgreSQL then runs as another user); nothing to check");
        return;
    }
    let state = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        // What `mktemp -d` makes as root.
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
    }
    let m = state.path().join("c.yaml");
    std::fs::write(&m, MANIFEST.replace("NAME", "closed")).expect("write");
    let mut child = local_up(&m, state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = Command::new(kubectl_cnpg())
                .args(["local", "down", "closed", "--state-dir"])
                .arg(state.path())
                .output();
            let _ = child.kill();
            panic!("local up kept going with a state directory postgres cannot enter");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("out of reach of the postgres user") && text.contains("chmod o+x"),
        "{text}"
    );
    assert!(
        !state
            .path()
            .join("closed/instances")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "no instance was made"
    );
}

#[test]
fn kill9_of_the_primary_instance_manager_and_postmaster_together() {
    let c = Cluster::up("pgm");
    let old = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let before = w.count();
    // The instance manager's pid is the parent of the postmaster.
    let pm = c.postmaster_pid(&old);
    let ppid = parent(pm);
    kill(ppid);
    kill(pm);
    w.wait_for_more(before, T);
    let new = c.wait_converged(Some(&old), T);
    assert_ne!(new, old);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
}

/// The parent of a process (an instance manager is the postmaster's).
fn parent(pid: i32) -> i32 {
    cnpg_instance::proc::stat(pid)
        .expect("a live process")
        .parent
}

/// A hung node: every process of the primary stopped (SIGSTOP to its instance manager's
/// process group). The operator fails over and kills the hung instance first, so when it
/// would wake it cannot accept a single write beside the new primary: a probe asking
/// every instance directly never sees two primaries.
#[test]
fn a_hung_primary_is_killed_before_another_is_promoted() {
    use cnpg_operator::local::process::signal_instance;
    use nix::sys::signal::Signal;
    let c = Cluster::up("pgh");
    let old = c.wait_converged(None, T);
    let probe = c.probe();
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let manager = parent(c.postmaster_pid(&old));
    signal_instance(manager, Signal::SIGSTOP);
    let before = w.count();
    w.wait_for_more(before, T);
    signal_instance(manager, Signal::SIGCONT); // gone already when it was killed
    let new = c.wait_converged(Some(&old), T);
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    let seen = probe.finish();
    assert!(seen.rounds > 10, "{seen:?}");
    assert_eq!(
        seen.split_rounds,
        0,
        "two primaries: {seen:?}\n{}",
        c.logs()
    );
    assert_no_acked_row_missing(&c, &acked);
    let events = c.status()["events"].to_string();
    assert!(events.contains("KillInstance"), "{events}");
    assert_ne!(new, old);
}

/// The primary cut off (its PostgreSQL and status ports dropped on loopback): the
/// operator fails over and kills it, writes resume on the new primary, and once the cut
/// heals the old one rejoins as a replica. Never two primaries, nothing lost.
#[test]
fn a_primary_cut_off_is_failed_over_and_rejoins() {
    use cnpg_operator::testkit::netcut::Cut;
    if !nix::unistd::geteuid().is_root() {
        println!("needs root (nftables on loopback); nothing to check");
        return;
    }
    if let Err(why) = Cut::available() {
        panic!("cannot cut the network here: {why}");
    }
    let c = Cluster::up("pgp");
    let old = c.wait_converged(None, T);
    let probe = c.probe();
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let ports = &c.status()["ports"]["instances"][&old];
    let ports: Vec<u16> = (0..2)
        .map(|i| ports[i].as_u64().expect("port") as u16)
        .collect();
    let cut = Cut::ports(&ports).expect("cut");
    let before = w.count();
    w.wait_for_more(before, T);
    drop(cut);
    let new = c.wait_converged(Some(&old), T);
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    let seen = probe.finish();
    assert_eq!(
        seen.split_rounds,
        0,
        "two primaries: {seen:?}\n{}",
        c.logs()
    );
    assert_no_acked_row_missing(&c, &acked);
    assert_ne!(new, old);
}

/// A replica's disk full (its own tmpfs, filled by a file): its status says so, the
/// cluster says why it will not fail over meanwhile, the primary keeps committing (the
/// other replica is a synchronous standby too), and once space is back the full one
/// streams again. The same primary throughout, nothing lost.
#[test]
fn a_replica_with_a_full_disk_stops_no_write_and_recovers() {
    if let Err(why) = Volume::available() {
        println!("{why}; nothing to check");
        return;
    }
    let rig = Rig {
        volumes: true,
        ..Rig::default()
    };
    let c = Cluster::up_on("pgd", rig);
    let primary = c.wait_converged(None, T);
    let replica = format!("pgd-{}", if primary == "pgd-1" { 2 } else { 1 });
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let (_, volume) = c
        .volumes
        .iter()
        .find(|(n, _)| *n == replica)
        .expect("the replica's volume");
    let filled = volume.fill("filler");
    let start = Instant::now();
    loop {
        let s = c.status();
        let full = s["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == replica.as_str()))
            .is_some_and(|i| i["status"]["walDiskFull"] == true);
        if full && s["phase"] == "Not enough disk space" {
            assert!(
                s["phaseReason"].to_string().contains(&replica),
                "{}",
                s["phaseReason"]
            );
            break;
        }
        assert!(
            start.elapsed() < T,
            "no full disk reported: {s}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = w.count();
    w.wait_for_more(before, T);
    drop(filled);
    let now = c.wait_converged(None, T);
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
    assert_eq!(now, primary, "{}", c.status()["events"]);
}

/// The wall clock of every process of the cluster steps (an NTP correction) while a
/// failover from a hung primary waits out its `failoverDelay`: an hour back, which would hold the failover
/// for the hour if the wait were measured on the wall clock, then forward again. The
/// failover happens after the delay, once, and nothing is lost.
#[test]
fn a_clock_step_during_a_failover_neither_stalls_nor_hurries_it() {
    use cnpg_operator::local::process::signal_instance;
    use nix::sys::signal::Signal;
    let rig = Rig {
        clock: true,
        spec: "  failoverDelay: 5\n".into(),
        ..Rig::default()
    };
    let c = Cluster::up_on("pgt", rig);
    let clock = c.clock.as_ref().expect("the cluster's clock");
    let old = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    // Forward an hour while healthy: nothing happens.
    clock.step(3600);
    std::thread::sleep(FakeClock::SEEN_WITHIN * 2);
    assert_eq!(c.primary().as_deref(), Some(old.as_str()));
    clock.step(0);
    std::thread::sleep(FakeClock::SEEN_WITHIN);
    // The primary hangs (a crashed node's manager would be started again and could
    // come back within the delay); once the operator waits out the delay, the clock goes
    // back.
    let manager = parent(c.postmaster_pid(&old));
    let hung = Instant::now();
    signal_instance(manager, Signal::SIGSTOP);
    while !c.status()["phaseReason"]
        .as_str()
        .is_some_and(|r| r.contains("(failoverDelay)"))
    {
        assert!(hung.elapsed() < T, "no failoverDelay: {}", c.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    clock.step(-3600);
    let new = c.wait_converged(Some(&old), T);
    let took = hung.elapsed();
    signal_instance(manager, Signal::SIGCONT); // killed before the failover
    clock.step(0);
    assert!(
        took >= Duration::from_secs(5),
        "failed over {took:?} after the primary hung, before its failoverDelay"
    );
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
    assert_ne!(new, old);
}

#[test]
fn switchover_and_fencing_the_primary() {
    let c = Cluster::up("pgs");
    let old = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let target = if old.ends_with("-2") {
        "pgs-3"
    } else {
        "pgs-2"
    };
    c.cnpg(&["promote", "pgs", target]);
    let new = c.wait_converged(Some(&old), T);
    assert_eq!(new, target);
    w.wait_for_more(w.count(), T);

    // Fencing the primary stops writes but never fails over; unfencing resumes them.
    c.cnpg(&["fencing", "on", "pgs", &new]);
    let start = Instant::now();
    while c.status()["instances"].as_array().is_none_or(|a| {
        a.iter()
            .any(|i| i["name"] == new.as_str() && i["status"]["isFenced"] != true)
    }) {
        assert!(start.elapsed() < T, "never fenced");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.primary().as_deref(),
        Some(new.as_str()),
        "no failover from a fenced primary"
    );
    assert_eq!(
        c.status()["state"]["targetPrimary"].as_str(),
        Some(new.as_str())
    );
    c.cnpg(&["fencing", "off", "pgs", &new]);
    assert_eq!(c.wait_converged(Some(&old), T), new);
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
}

/// For a second after a new operator's first status: the synchronous configuration the
/// primary runs and the confirmed one stay as they were. (A new operator once published
/// an empty one for a loop: synchronous replication off, and no failover possible.)
fn restarted_without_touching_sync(c: &Cluster, pid: i32, at: &str) {
    let start = Instant::now();
    while c.status()["operatorPid"] != pid {
        assert!(
            start.elapsed() < T,
            "{at}: the new operator wrote no status"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let s = c.status();
        let primary = s["state"]["currentPrimary"].clone();
        let runs = s["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == primary))
            .map(|i| i["status"]["synchronousStandbyNames"].clone());
        assert!(
            !s["state"]["publishedSync"].is_null()
                && runs
                    .as_ref()
                    .is_some_and(|r| r.as_str().is_some_and(|v| !v.is_empty())),
            "{at}: the restarted operator changed the synchronous configuration: {s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The operator killed at each step of a failover — after it decides to take the target
/// from the failed primary, then after it elects the new one: once its actions are carried
/// out, once its decision is saved, once the instances are told — and started again. Each
/// time the restarted operator finishes the failover: one primary, every replica on its
/// timeline, no acknowledged row lost. (Killed between saving and telling, it once
/// restarted from an older decision and "switched back" to the dead primary.)
#[test]
fn operator_killed_at_each_step_of_a_failover_and_restarted() {
    let c = Cluster::up("pgo");
    let mut old = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let paused = c.root().join("paused");
    for at in [
        "pending:actions",
        "pending:state",
        "pending:view",
        "elected:actions",
        "elected:state",
        "elected:view",
    ] {
        // The operator again, told to stop at this point of the next failover.
        kill(c.operator_pid());
        std::thread::sleep(Duration::from_millis(200));
        c.restart_operator_with(&[("CNPG_LOCAL_PAUSE_AT", at)]);
        restarted_without_touching_sync(&c, c.operator_pid(), at);
        c.wait_converged(None, T);
        let before = w.count();
        // The primary's node crashes: its instance manager and postmaster.
        let pm = c.postmaster_pid(&old);
        let ppid = parent(pm);
        kill(ppid);
        kill(pm);
        let start = Instant::now();
        while !paused.exists() {
            assert!(
                start.elapsed() < T,
                "{at}: the operator never paused: {}",
                c.status()["events"]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(c.operator_pid());
        let _ = std::fs::remove_file(&paused);
        std::thread::sleep(Duration::from_millis(200));
        c.restart_operator();
        let new = c.wait_converged(Some(&old), T);
        assert_ne!(new, old, "{at}");
        w.wait_for_more(before, T);
        let events = c.status()["events"].to_string();
        assert!(
            events.contains("adopted the running instance manager"),
            "{at}: {events}"
        );
        old = new;
    }
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
}

#[test]
fn scale_up_and_down_reclone_and_hibernate() {
    let c = Cluster::up("pgx");
    let primary = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let manifest = c.state.path().join("cluster.yaml");
    for n in [5, 3] {
        std::fs::write(
            &manifest,
            MANIFEST
                .replace("NAME", "pgx")
                .replace("instances: 3", &format!("instances: {n}")),
        )
        .expect("manifest");
        c.cnpg(&["local", "apply", "-f", manifest.to_str().expect("utf-8")]);
        assert_eq!(
            c.wait_converged_n(None, n, T),
            primary,
            "scaling never moves the primary"
        );
        w.wait_for_more(w.count(), T);
    }
    // A destroyed replica is cloned again from the primary, under the lowest free name.
    let victim = if primary == "pgx-2" { "pgx-3" } else { "pgx-2" };
    c.cnpg(&["destroy", "pgx", victim]);
    let start = Instant::now();
    while !c.status()["events"]
        .to_string()
        .contains(&format!("{victim} deleted"))
    {
        assert!(start.elapsed() < T, "never destroyed");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_converged(None, T);
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);

    // Hibernation stops every instance and keeps the data; waking up brings them back.
    c.cnpg(&["hibernate", "on", "pgx"]);
    let start = Instant::now();
    while c.status()["instances"]
        .as_array()
        .is_none_or(|a| a.iter().any(|i| i["running"] == true))
    {
        assert!(start.elapsed() < T, "never hibernated: {}", c.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    c.cnpg(&["hibernate", "off", "pgx"]);
    let woken = c.wait_converged(None, T);
    assert_eq!(woken, primary, "{}\n{}", c.status()["events"], c.logs());
    assert_no_acked_row_missing(&c, &acked);
}

/// A replica being created does not hold up a failover: its `join` (the copy of a large
/// database, held here by SIGSTOP) runs beside the operator's loop, so when the primary's
/// node crashes meanwhile another replica is promoted at once. The stopped copy, whose
/// source is gone, fails once resumed, and the instance is cloned again from the new primary.
#[test]
fn a_failover_does_not_wait_for_a_replica_being_created() {
    use nix::sys::signal::Signal;
    let c = Cluster::up("pgj");
    let old = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    // Scales to `n` and holds the new instance's copy (SIGSTOP): (the operator, the join).
    let scale_and_hold = |n: u32| {
        let manifest = c.state.path().join("cluster.yaml");
        std::fs::write(
            &manifest,
            MANIFEST
                .replace("NAME", "pgj")
                .replace("instances: 3", &format!("instances: {n}")),
        )
        .expect("manifest");
        c.cnpg(&["local", "apply", "-f", manifest.to_str().expect("utf-8")]);
        let operator = c.operator_pid();
        let deadline = Instant::now() + T;
        let join = loop {
            if let Some(pid) = child_named(operator, "join") {
                break pid;
            }
            assert!(Instant::now() < deadline, "no join started\n{}", c.logs());
            std::thread::sleep(Duration::from_millis(5));
        };
        cnpg_operator::local::process::signal_instance(join, Signal::SIGSTOP);
        (operator, join)
    };
    let (_, join) = scale_and_hold(4);
    // The status says so (what a pod in its init step shows), and it is in no synchronous
    // configuration (it holds no commit): the primary runs the one published without it.
    let deadline = Instant::now() + T;
    loop {
        let s = c.status();
        let find = |name: &str| {
            s["instances"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["name"] == name).cloned())
                .unwrap_or_default()
        };
        let creating = find("pgj-4");
        if creating["status"]
            .to_string()
            .contains("being created (join in progress)")
            && !s["state"]["publishedSync"].is_null()
            && !s["state"]["publishedSync"].to_string().contains("pgj-4")
            && sync_confirmed(&s, &find(&old))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pgj-4 is not shown being created, or is listed: {creating}\n{}",
            s["state"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The primary's node crashes while the copy is held.
    let manager = parent(c.postmaster_pid(&old));
    let pm = c.postmaster_pid(&old);
    kill(manager);
    kill(pm);
    let start = Instant::now();
    let new = loop {
        let s = c.status();
        if let Some(p) = s["state"]["currentPrimary"].as_str()
            && p != old
            && s["instances"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|i| i["name"] == p && i["status"]["isPrimary"] == true)
            })
        {
            break p.to_owned();
        }
        assert!(
            start.elapsed() < T,
            "no failover while pgj-4 was being created: {}\n{}",
            s["events"],
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    cnpg_operator::local::process::signal_instance(join, Signal::SIGCONT);
    assert_eq!(c.wait_converged_n(None, 4, T), new, "{}", c.logs());
    w.wait_for_more(w.count(), T);

    // The operator killed while a join is held: the next one kills that orphaned copy,
    // discards its half-made directory, and makes the instance again.
    let (operator, join) = scale_and_hold(5);
    kill(operator);
    c.restart_operator();
    assert_eq!(c.wait_converged_n(None, 5, T), new, "{}", c.logs());
    assert!(
        c.status()["events"]
            .to_string()
            .contains("pgj-5 was being created when the operator stopped"),
        "{}",
        c.status()["events"]
    );
    assert!(
        cnpg_instance::proc::exited(join),
        "the orphaned join {join} still runs"
    );
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
}

#[test]
fn an_invalid_manifest_starts_nothing() {
    let state = tempfile::tempdir().expect("tempdir");
    let m = state.path().join("bad.yaml");
    std::fs::write(
        &m,
        MANIFEST.replace("NAME", "bad").replace(
            "instances: 3",
            "instances: 3\n  minSyncReplicas: 2\n  maxSyncReplicas: 1",
        ),
    )
    .expect("write");
    let out = local_up(&m, state.path()).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("spec.minSyncReplicas") && text.contains("nothing was started"),
        "{text}"
    );
    assert!(!state.path().join("bad").exists(), "no state was created");
}

#[test]
fn rolling_restart_replicas_first_primary_last_then_reload_and_report() {
    let c = Cluster::up("pgr");
    let primary = c.wait_converged(None, T);
    let w = Writer::start(c.target());
    w.wait_for_more(0, T);
    let sessions = |c: &Cluster| -> Vec<String> {
        c.status()["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["status"]["sessionID"].to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = sessions(&c);
    c.cnpg(&["restart", "pgr"]);
    let start = Instant::now();
    loop {
        let now = sessions(&c);
        let restarted = now.iter().zip(&before).filter(|(a, b)| a != b).count();
        if restarted == 3 && c.converged_now() {
            break;
        }
        assert!(
            start.elapsed() < T,
            "rolling restart incomplete: {}",
            c.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events: Vec<String> = c.status()["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_str().map(String::from))
        .collect();
    let rolling: Vec<&String> = events
        .iter()
        .filter(|e| e.contains("RollingUpdate"))
        .collect();
    assert_eq!(rolling.len(), 3, "{events:#?}");
    assert!(
        rolling[2].contains(&format!("the primary {primary}")),
        "primary last: {rolling:#?}"
    );
    assert_eq!(
        c.primary().as_deref(),
        Some(primary.as_str()),
        "restart method: no switchover"
    );

    // One instance: the primary restarts in place.
    let pid = c.postmaster_pid(&primary);
    c.cnpg(&["restart", "pgr", &primary]);
    let start = Instant::now();
    while std::fs::read_to_string(
        c.root()
            .join("instances")
            .join(&primary)
            .join("data/postmaster.pid"),
    )
    .ok()
    .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
    .is_none_or(|p| p == pid)
    {
        assert!(start.elapsed() < T, "primary not restarted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.wait_converged(None, T), primary);
    w.wait_for_more(w.count(), T);
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);

    // An operator started again tells the instances what they were told last: none of
    // them restarts again for the request it already carried out.
    let instances: Vec<String> = c.status()["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    let pids: Vec<i32> = instances.iter().map(|i| c.postmaster_pid(i)).collect();
    c.kill_and_restart_operator();
    assert_eq!(c.wait_converged(None, T), primary);
    // Several loops of the new operator (200 ms each) and of the managers.
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<i32> = instances.iter().map(|i| c.postmaster_pid(i)).collect();
    assert_eq!(
        pids,
        after,
        "PostgreSQL restarted after the operator did ({instances:?}); events: {}",
        c.status()["events"]
    );

    c.cnpg(&["reload", "pgr"]);
    let report = c.state.path().join("report");
    c.cnpg(&["report", "pgr", "--output", report.to_str().expect("utf-8")]);
    assert!(
        report.join("status.json").exists()
            && report.join(format!("{primary}-postgres.log")).exists()
    );
    assert!(!std::fs::read_dir(&report).expect("report").any(|e| {
        e.expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("password")
    }));
    // Debian's fio in the primary's directory: a line of figures per job, nothing left.
    let fio = c.cnpg(&["fio", "pgr", "--runtime", "1", "--size", "8M"]);
    for job in [
        "sequential-read",
        "random-read-8k",
        "random-write-8k-fdatasync",
    ] {
        assert!(
            fio.lines()
                .any(|l| l.starts_with(job) && l.contains(" IOPS ") && l.contains("MiB/s")),
            "{job}: {fio}"
        );
    }
    assert!(fio.contains(&format!("{primary}'s storage")), "{fio}");
    let scratch = c
        .state
        .path()
        .join("pgr/instances")
        .join(&primary)
        .join("fio-scratch");
    assert!(!scratch.exists(), "{} left behind", scratch.display());
}

/// Runs `sql` with the real `psql` on `conninfo` (as us: the files are ours).
fn psql(conninfo: &str, sql: &str) -> Result<String, String> {
    cnpg_instance::testkit::psql(conninfo, sql, None, &std::env::temp_dir())
}

#[test]
fn tls_through_every_service_a_client_certificate_and_no_secret_leaks() {
    let c = Cluster::up_on(
        "pgt",
        Rig {
            spec: "    pg_hba:\n    - hostssl app alice 127.0.0.1/32 cert\n  enableSuperuserAccess: true\n"
                .into(),
            ..Default::default()
        },
    );
    let primary = c.wait_converged(None, T);
    let secrets = c.root().join("secrets");

    // The strings `local up` prints: verify-full against the CA, no password in them.
    let ready = std::fs::read_to_string(c.root().join("ready")).expect("connection strings");
    assert!(!ready.contains(&c.password()), "{ready}");
    let uris: Vec<&str> = ready
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(uris.len(), 3, "{ready}");
    for uri in &uris {
        assert!(uri.contains("sslmode=verify-full"), "{uri}");
        let ssl = psql(
            uri,
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(ssl, "t|TLSv1.3", "{uri}");
    }

    // A client certificate from `kubectl-cnpg certificate` logs in where pg_hba says `cert`.
    let su = std::fs::read_to_string(secrets.join("superuser-password")).expect("superuser");
    let rw = c.rw_port();
    let ca = secrets.join("ca.crt");
    psql(
        &format!(
            "host=127.0.0.1 port={rw} dbname=app user=postgres password={} sslmode=verify-full sslrootcert={}",
            su.trim(),
            ca.display()
        ),
        "CREATE ROLE alice LOGIN",
    )
    .expect("create alice");
    let printed = c.cnpg(&[
        "certificate",
        "alice-cert",
        "--cnpg-cluster",
        "pgt",
        "--cnpg-user",
        "alice",
    ]);
    let conn = printed
        .lines()
        .find_map(|l| l.strip_prefix("connect with: "))
        .unwrap_or_else(|| panic!("{printed}"));
    let who = psql(
        &format!("host=127.0.0.1 port={rw} dbname=app {conn}"),
        "SELECT current_user",
    )
    .expect("alice logs in by certificate");
    assert_eq!(who, "alice");
    let without = psql(
        &format!(
            "host=127.0.0.1 port={rw} dbname=app user=alice sslmode=verify-full sslrootcert={}",
            ca.display()
        ),
        "SELECT 1",
    )
    .expect_err("no certificate, no entry");
    assert!(without.contains("certificate"), "{without}");
    // Replication without TLS matches no rule at all.
    let plain = psql(
        &format!("host=127.0.0.1 port={rw} dbname=postgres user=streaming_replica replication=true sslmode=disable"),
        "SELECT 1",
    )
    .expect_err("refused");
    assert!(plain.contains("no pg_hba.conf entry"), "{plain}");

    // A switchover and a report, then: no password and no private key anywhere in the logs,
    // the status, the events or the report.
    let other = if primary == "pgt-1" { "pgt-2" } else { "pgt-1" };
    c.cnpg(&["promote", "pgt", other]);
    c.wait_converged(Some(&primary), T);
    let report = c.state.path().join("report");
    c.cnpg(&["report", "pgt", "--output", report.to_str().expect("utf-8")]);
    let status = c.cnpg(&["status", "pgt"]);
    let mut secrets_known: Vec<(String, String)> = Vec::new();
    for f in cnpg_instance::testkit::files_under(&secrets)
        .into_iter()
        .chain(cnpg_instance::testkit::files_under(
            &c.root().join("certificates"),
        ))
    {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if name.ends_with("-password") || name.ends_with("status-token") {
            secrets_known.push((name, text.trim().to_owned()));
        } else if text.contains("PRIVATE KEY") {
            // The key's body, line by line: a leak of any part of it shows.
            for l in text.lines().filter(|l| !l.starts_with("-----")) {
                secrets_known.push((name.clone(), l.to_owned()));
            }
        }
    }
    assert!(secrets_known.len() > 10, "{secrets_known:?}");
    let mut looked_at = vec![("kubectl-cnpg status".to_owned(), status)];
    for f in cnpg_instance::testkit::files_under(&c.root())
        .into_iter()
        .chain(cnpg_instance::testkit::files_under(&report))
        .filter(|f| !f.starts_with(&secrets) && !f.starts_with(c.root().join("certificates")))
        .filter(|f| {
            !f.starts_with(c.root().join("instances")) || !f.to_string_lossy().contains("/data/")
        })
    {
        if let Ok(text) = std::fs::read_to_string(&f) {
            looked_at.push((f.display().to_string(), text));
        }
    }
    assert!(
        looked_at.iter().any(|(n, _)| n.ends_with("operator.log"))
            && looked_at.iter().any(|(n, _)| n.ends_with("manager.log"))
            && looked_at.iter().any(|(n, _)| n.ends_with("status.json")),
        "{:?}",
        looked_at.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (where_, text) in &looked_at {
        for (what, secret) in &secrets_known {
            assert!(
                !text.contains(secret.as_str()),
                "{where_} holds a secret from {what}"
            );
        }
    }
    // And every file holding one is private.
    for (what, _) in &secrets_known {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(what)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{what} is readable by others: {mode:o}");
    }
}

/// WAL archiving locally, as on Kubernetes: the object store of the manifest's
/// `spec.backup`, with credentials from a Secret in the same file; the archive is where
/// barman-cloud looks.
#[test]
fn wal_is_archived_to_s3_with_credentials_from_the_manifest() {
    let mut s3 = cnpg_instance::testkit::S3Server::start();
    s3.create_bucket("local-archive");
    let c = Cluster::up_on(
        "arch",
        Rig::archiving(
            &s3,
            "s3://local-archive/here",
            "\n      data: {compression: gzip, immediateCheckpoint: true}\n    retentionPolicy: 30d",
        ),
    );
    let archive = cnpg_instance::archive::Destination::open(&s3.archive_config(
        "s3://local-archive/here",
        "arch",
        ("local-key", "local-secret-key"),
    ))
    .expect("the archive");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // The standbys' base backups switch WAL: the first segments are archived.
    let first = "here/arch/wals/0000000100000000/000000010000000000000001.gz";
    loop {
        let keys = rt.block_on(archive.list_wal()).unwrap_or_default();
        if keys.iter().any(|k| k == first) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{first} not archived: {keys:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let config = std::fs::metadata(c.root().join("secrets").join("archive.json"))
        .expect("the archive configuration");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(config.permissions().mode() & 0o777, 0o600);

    // A base backup, run by the operator where upstream runs it: the first streaming
    // standby (prefer-standby); then one on the primary.
    let primary = c.wait_converged(None, T);
    let out = c.cnpg(&[
        "backup",
        "arch",
        "--backup-name",
        "nightly",
        "--wait",
        "300",
    ]);
    assert!(
        out.contains("nightly: completed on arch-2"),
        "{out}\n{}",
        c.logs()
    );
    // Backup ids are times to the second (barman's): the next one starts in another.
    std::thread::sleep(Duration::from_millis(1100));
    let out = c.cnpg(&[
        "backup",
        "arch",
        "--backup-name",
        "on-primary",
        "--backup-target",
        "primary",
        "--immediate-checkpoint",
        "--wait",
        "300",
    ]);
    assert!(
        out.contains(&format!("on-primary: completed on {primary}")),
        "{out}\n{}",
        c.logs()
    );
    let mut cfg = s3.archive_config(
        "s3://local-archive/here",
        "arch",
        ("local-key", "local-secret-key"),
    );
    cfg.compression = None;
    let listed = rt
        .block_on(cnpg_instance::backup::list(&cfg))
        .expect("the backups");
    let done: Vec<_> = listed
        .into_iter()
        .map(|b| b.expect("readable"))
        .map(|b| (b.backup_name.unwrap_or_default(), b.status))
        .collect();
    assert_eq!(
        done,
        [
            ("nightly".to_owned(), "DONE".to_owned()),
            ("on-primary".into(), "DONE".into())
        ]
    );
    // The retention policy ran after each backup, on the instance that took it (nothing
    // is older than 30 days: everything stays).
    let log =
        std::fs::read_to_string(c.root().join("instances/arch-2/manager.log")).unwrap_or_default();
    assert!(log.contains("retention 30d: kept 1 backup(s)"), "{log}");
    let saved =
        std::fs::read_to_string(c.root().join("backups").join("nightly.json")).expect("the Backup");
    for field in [
        "\"backupId\"",
        "\"beginWal\"",
        "\"endLSN\"",
        "\"phase\": \"completed\"",
    ] {
        assert!(saved.contains(field), "{field}: {saved}");
    }
    // The status: archiving works, the backups are recorded.
    let out = c.cnpg(&["status", "arch"]);
    for line in [
        "Continuous Backup status",
        "Working WAL archiving:          OK",
        "First Point of Recoverability:  20",
        "Last Successful Backup:         20",
        "Last Archived WAL:              0000000100000000000000",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    // Every instance exports upstream's backup gauges (Unix times) from the cluster's status.
    let sp = c.status()["ports"]["instances"][&primary][1]
        .as_u64()
        .expect("the primary's status port") as u16;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = rt
            .block_on(cnpg_instance::testkit::http_get(sp, "/metrics"))
            .map(|(_, body)| body)
            .unwrap_or_default();
        let gauge = |name: &str| -> i64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(-1)
        };
        let now = jiff::Timestamp::now().as_second();
        let last = gauge("cnpg_collector_last_available_backup_timestamp");
        if last > now - 3600 && last <= now {
            assert!(
                gauge("cnpg_collector_first_recoverability_point") > 0,
                "{metrics}"
            );
            assert_eq!(gauge("cnpg_collector_last_failed_backup_timestamp"), 0);
            break;
        }
        assert!(Instant::now() < deadline, "no backup gauges: {metrics}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Documents through `local apply`, as kubectl applies them: a ScheduledBackup whose
    // only occurrence this year is long gone but with `immediate` (one backup now, and not
    // a second after the operator restarts), and a Backup.
    let docs = c.state.path().join("backups.yaml");
    std::fs::write(
        &docs,
        "apiVersion: postgresql.cnpg.io/v1\nkind: ScheduledBackup\nmetadata: {name: yearly}\nspec:\n  schedule: \"0 0 0 1 1 *\"\n  immediate: true\n  target: primary\n  cluster: {name: arch}\n---\napiVersion: postgresql.cnpg.io/v1\nkind: Backup\nmetadata: {name: applied}\nspec:\n  cluster: {name: arch}\n",
    )
    .expect("documents");
    let out = c.cnpg(&["local", "apply", "-f", docs.to_str().expect("utf-8")]);
    assert!(
        out.contains("scheduledbackup yearly created") && out.contains("backup applied created"),
        "{out}"
    );
    let ended = |prefix: &str| -> Vec<String> {
        std::fs::read_dir(c.root().join("backups"))
            .expect("backups")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .filter(|n| {
                std::fs::read_to_string(c.root().join("backups").join(n))
                    .unwrap_or_default()
                    .contains("\"phase\": \"completed\"")
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while ended("yearly-").is_empty() || ended("applied").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduled and the applied backups did not complete\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let sb = std::fs::read_to_string(c.root().join("scheduled-backups/yearly.json"))
        .expect("the ScheduledBackup");
    assert!(
        sb.contains("\"lastScheduleTime\"") && sb.contains("\"nextScheduleTime\": \"20"),
        "{sb}"
    );
    c.kill_and_restart_operator();
    c.wait_converged(None, T);
    std::thread::sleep(Duration::from_secs(2));
    let scheduled: Vec<_> = std::fs::read_dir(c.root().join("backups"))
        .expect("backups")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("yearly-"))
        .collect();
    assert_eq!(scheduled.len(), 1, "one backup for one occurrence");
    // A schedule that is not a six-field cron expression is refused, naming it, and
    // nothing is written.
    std::fs::write(
        &docs,
        "apiVersion: postgresql.cnpg.io/v1\nkind: ScheduledBackup\nmetadata: {name: wrong}\nspec:\n  schedule: \"0 0 * * *\"\n  cluster: {name: arch}\n",
    )
    .expect("documents");
    let refused = Command::new(kubectl_cnpg())
        .args(["local", "apply", "-f"])
        .arg(&docs)
        .arg("--state-dir")
        .arg(c.state.path())
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("0 0 * * *"),
        "{err}"
    );
    assert!(!c.root().join("scheduled-backups/wrong.json").exists());

    // The store becomes unreachable: archiving fails, says so at once with the
    // archiver's own error, keeps the WAL, and a backup waits instead of starting.
    s3.stop();
    let app = c.app_conninfo();
    // More than a segment of WAL: PostgreSQL asks for it to be archived.
    psql(
        &app,
        "CREATE TABLE filler AS SELECT g, repeat('x', 400) AS pad FROM generate_series(1, 60000) g",
    )
    .expect("a segment of WAL");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let failing = loop {
        let out = c.cnpg(&["status", "arch"]);
        // The failure shows with the fresh query; the archiver's error with the manager's
        // next reading of PostgreSQL's log, a tick later.
        if out.contains("Working WAL archiving:          Failing (") {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "archiving never shown failing:\n{out}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let line = failing
        .lines()
        .find(|l| l.starts_with("Working WAL archiving:"))
        .unwrap_or_default();
    assert!(
        line.contains("Failing (pg_wal/0000000100000000000000")
            && line.contains(&s3.endpoint.replace("http://", "")),
        "the archiver's error is shown: {failing}"
    );
    assert!(!failing.contains("local-secret-key"), "{failing}");
    let ready = c.status()["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["name"] == primary.as_str())
        .and_then(|i| i["status"]["readyWalFiles"].as_u64())
        .unwrap_or(0);
    assert!(ready >= 1, "the WAL waits in pg_wal: {ready}");
    c.cnpg(&["backup", "arch", "--backup-name", "while-failing"]);
    let waiting = c.root().join("backups").join("while-failing.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let saved = std::fs::read_to_string(&waiting).unwrap_or_default();
        if saved.contains("\"phase\": \"walArchivingFailing\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backup does not wait for archiving: {saved}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The store comes back (empty): PostgreSQL retries, archiving works again, and the
    // waiting backup runs.
    s3.restart();
    s3.create_bucket("local-archive");
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let saved = std::fs::read_to_string(&waiting).unwrap_or_default();
        if saved.contains("\"phase\": \"completed\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backup did not run once archiving worked again: {saved}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = c.cnpg(&["status", "arch"]);
    assert!(out.contains("Working WAL archiving:          OK"), "{out}");
}

/// The children of `parent` whose command line holds `what` (a postmaster's archiver).
fn child_named(parent: i32, what: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| cnpg_instance::proc::stat(pid).is_some_and(|s| s.parent == parent))
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(what))
        })
}

/// Runs the real `pgbench` with `args` against `conninfo`; its error when it fails.
fn pgbench(conninfo: &str, args: &[&str]) -> Result<(), String> {
    let bin = cnpg_instance::pg_bin::Search::standard(None)
        .find()
        .map_err(|e| format!("PostgreSQL's programs are needed: {e}"))?;
    let out = Command::new(bin.dir.join("pgbench"))
        .args(args)
        .arg(conninfo)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A WAL position (`X/Y`) as a number.
fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.trim().split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).expect("hex") << 32) | u64::from_str_radix(lo, 16).expect("hex")
}

const SEGMENT: u64 = 16 << 20;

/// The archive goes on without a gap under pgbench load across a failover and a
/// switchover: every segment from the first to the last is stored on the timeline that
/// recovery reads it from, and both history files are there. The old primary's archiver
/// is stopped before it crashes (an archive behind at the moment of a failure), so the
/// segments only the standbys still hold must come from the new primary.
#[test]
fn the_archive_has_no_gap_across_a_failover_and_a_switchover() {
    let s3 = cnpg_instance::testkit::S3Server::start();
    s3.create_bucket("gapless");
    let mut rig = Rig::archiving(&s3, "s3://gapless/here", "");
    rig.spec += "  enableSuperuserAccess: true\n";
    let c = Cluster::up_on("gap", rig);
    let old = c.wait_converged(None, T);
    let su = std::fs::read_to_string(c.root().join("secrets/superuser-password"))
        .expect("the superuser's password");
    let db = format!(
        "host=127.0.0.1 port={} dbname=app user=postgres password={} sslmode=verify-full sslrootcert={}",
        c.rw_port(),
        su.trim(),
        c.root().join("secrets/ca.crt").display()
    );
    let load = |seconds: &str| pgbench(&db, &["-n", "-c", "2", "-T", seconds]);
    pgbench(&db, &["-i", "-q", "-s", "2"]).expect("pgbench -i");
    load("3").expect("pgbench");

    // The primary's archiver stops; more segments fill and wait on it (the standbys
    // have them), then the primary's node crashes under load.
    let pm = c.postmaster_pid(&old);
    let archiver = child_named(pm, "archiver").expect("the primary's archiver");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(archiver),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    for _ in 0..3 {
        load("1").expect("pgbench");
        psql(&db, "SELECT pg_switch_wal()").expect("a segment switch");
    }
    let during = {
        let db = db.clone();
        std::thread::spawn(move || pgbench(&db, &["-n", "-c", "2", "-T", "4"]))
    };
    std::thread::sleep(Duration::from_secs(1));
    let manager = parent(pm);
    kill(manager);
    kill(pm);
    kill(archiver);
    let _ = during.join(); // cut short by the crash
    let new = c.wait_converged(Some(&old), T);
    load("3").expect("pgbench on the new primary");

    // A switchover back to the old primary (rewound, streaming), also under load.
    c.wait_converged(None, T);
    let during = {
        let db = db.clone();
        std::thread::spawn(move || pgbench(&db, &["-n", "-c", "2", "-T", "4"]))
    };
    std::thread::sleep(Duration::from_secs(1));
    c.cnpg(&["promote", "gap", &old]);
    assert_eq!(c.wait_converged(Some(&new), T), old);
    let _ = during.join();
    load("2").expect("pgbench after the switchover");
    let last = lsn(&psql(&db, "SELECT pg_switch_wal()").expect("the last segment"));
    let last = (last - 1) / SEGMENT;

    // Which timeline each segment is read from: the newest history file's switch points.
    let history = std::fs::read_to_string(
        c.root()
            .join("instances")
            .join(&old)
            .join("data/pg_wal/00000003.history"),
    )
    .expect("timeline 3's history");
    let switches: Vec<(u32, u64)> = history
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, lsn(f.next()?) / SEGMENT))
        })
        .collect();
    assert_eq!(switches.len(), 2, "{history}");
    let timeline_of = |seg: u64| {
        switches
            .iter()
            .find(|(_, from)| seg < *from)
            .map_or(3, |(tli, _)| *tli)
    };
    let name = |seg: u64| {
        let tli = timeline_of(seg);
        format!(
            "here/gap/wals/{tli:08X}{:08X}/{tli:08X}{:08X}{:08X}.gz",
            seg >> 8,
            seg >> 8,
            seg & 0xff
        )
    };
    let archive = cnpg_instance::archive::Destination::open(&s3.archive_config(
        "s3://gapless/here",
        "gap",
        ("local-key", "local-secret-key"),
    ))
    .expect("the archive");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let keys = rt.block_on(archive.list_wal()).unwrap_or_default();
        let mut missing: Vec<String> = (1..=last).map(name).filter(|k| !keys.contains(k)).collect();
        for h in ["00000002.history.gz", "00000003.history.gz"] {
            let key = format!("here/gap/wals/{h}");
            if !keys.contains(&key) {
                missing.push(key);
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing from the archive: {missing:?}\nswitches {switches:?}, last {last}\nstored: {keys:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The segments only the standbys held came from the new primary, which said so.
    let log = std::fs::read_to_string(c.root().join("instances").join(&new).join("manager.log"))
        .unwrap_or_default();
    assert!(
        log.contains("segment(s) of earlier timelines offered to the archive again"),
        "{log}"
    );
}

/// A backup on the primary cut short by a failover: the primary's node crashes while
/// `cnpg-cloud backup` streams (held there, stopped, so it cannot finish first) and takes
/// the backup with it. The Backup fails saying why once the instance is back, the
/// cluster has failed over, and the next backup completes.
#[test]
fn a_backup_cut_short_by_a_failover_fails_and_the_next_completes() {
    use nix::sys::signal::{Signal, kill as signal};
    use nix::unistd::Pid;
    let s3 = cnpg_instance::testkit::S3Server::start();
    s3.create_bucket("cut");
    let c = Cluster::up_on("bkf", Rig::archiving(&s3, "s3://cut/here", ""));
    let old = c.wait_converged(None, T);
    c.cnpg(&[
        "backup",
        "bkf",
        "--backup-name",
        "cut",
        "--backup-target",
        "primary",
    ]);
    let manager = parent(c.postmaster_pid(&old));
    let deadline = Instant::now() + T;
    let cloud = loop {
        if let Some(pid) = child_named(manager, "cnpg-cloud") {
            break pid;
        }
        assert!(Instant::now() < deadline, "no backup started\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(5));
    };
    signal(Pid::from_raw(cloud), Signal::SIGSTOP).expect("SIGSTOP");
    let saved = c.root().join("backups/cut.json");
    let wait_phase = |phase: &str| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let text = std::fs::read_to_string(&saved).unwrap_or_default();
            if text.contains(&format!("\"phase\": \"{phase}\"")) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the Backup never {phase}: {text}\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_phase("running");
    // The node crashes: its manager, its postmaster and the backup's process.
    let pm = c.postmaster_pid(&old);
    kill(manager);
    kill(pm);
    kill(cloud);
    let new = c.wait_converged(Some(&old), T);
    let failed = wait_phase("failed");
    assert!(
        failed.contains("restarted while the backup ran"),
        "{failed}"
    );
    c.wait_converged(None, T);
    let out = c.cnpg(&["backup", "bkf", "--backup-name", "after", "--wait", "300"]);
    assert!(out.contains("after: completed on"), "{out}\n{}", c.logs());
    assert_ne!(new, old);
}

/// A base backup needs no room on the instance that takes it: the standby it runs on has
/// 8 MiB free for a database many times that (its disk filled but for those), and the
/// backup completes there, streamed to the store.
#[test]
fn a_backup_from_a_standby_with_a_full_disk_completes() {
    if let Err(why) = Volume::available() {
        println!("{why}; nothing to check");
        return;
    }
    let s3 = cnpg_instance::testkit::S3Server::start();
    s3.create_bucket("roomless");
    let mut rig = Rig::archiving(&s3, "s3://roomless/here", "");
    rig.volumes = true;
    let c = Cluster::up_on("full", rig);
    let primary = c.wait_converged(None, T);
    let app = c.app_conninfo();
    psql(
        &app,
        "CREATE TABLE big AS SELECT g, md5(random()::text) || md5(random()::text) AS pad \
         FROM generate_series(1, 1000000) g",
    )
    .expect("about 100 MB of data");
    // prefer-standby takes the first standby by serial: that one's disk fills.
    let standby = (1..=3)
        .map(|i| format!("full-{i}"))
        .find(|n| *n != primary)
        .expect("a standby");
    c.wait_converged(None, T);
    let (_, volume) = c
        .volumes
        .iter()
        .find(|(n, _)| *n == standby)
        .expect("the standby's volume");
    let _filled = volume.fill_leaving("filler", 8 << 20);
    let out = c.cnpg(&[
        "backup",
        "full",
        "--backup-name",
        "roomless",
        "--immediate-checkpoint",
        "--wait",
        "300",
    ]);
    assert!(
        out.contains(&format!("roomless: completed on {standby}")),
        "{out}\n{}",
        c.logs()
    );
    let full = c.status()["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == standby.as_str()))
        .map(|i| i["status"]["walDiskFull"] == true);
    assert_eq!(full, Some(true), "the standby's disk is full");
}

/// `bootstrap.recovery` on the local platform: a cluster recovered from another's `Backup`
/// to the end of its archive (across a switchover: WAL on two timelines), and one
/// recovered from its store (an `externalClusters` entry) to a restore point. Each runs three instances (the others cloned from the
/// recovered primary), lets the app user in with its own password, and archives into a
/// place of its own. A target past the end of the archive stops `local up` saying so, and
/// nothing starts.
#[test]
fn clusters_recover_from_another_clusters_backup_and_store() {
    let s3 = cnpg_instance::testkit::S3Server::start();
    s3.create_bucket("origin");
    let mut rig = Rig::archiving(&s3, "s3://origin/db", "");
    rig.spec += "  enableSuperuserAccess: true\n";
    let src = Cluster::up_on("rso", rig);
    src.wait_converged(None, T);
    let su = std::fs::read_to_string(src.root().join("secrets/superuser-password"))
        .expect("the superuser's password");
    let db = src
        .app_conninfo()
        .replace("user=app", "user=postgres")
        .replace(
            &format!("password={}", src.password()),
            &format!("password={}", su.trim()),
        );
    psql(
        &db,
        "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 100); \
         ALTER TABLE t OWNER TO app",
    )
    .expect("rows");
    let out = src.cnpg(&["backup", "rso", "--backup-name", "first", "--wait", "300"]);
    assert!(out.contains("first: completed on"), "{out}\n{}", src.logs());
    psql(&db, "INSERT INTO t SELECT generate_series(101, 200)").expect("rows");
    psql(&db, "SELECT pg_create_restore_point('two-hundred')").expect("a restore point");
    // The last rows on the next timeline: a recovery follows the archive across it.
    let old = src.wait_converged(None, T);
    let next = if old == "rso-2" { "rso-3" } else { "rso-2" };
    src.cnpg(&["promote", "rso", next]);
    src.wait_converged(Some(&old), T);
    psql(&db, "INSERT INTO t SELECT generate_series(201, 300)").expect("rows");
    let last = psql(&db, "SELECT pg_walfile_name(pg_switch_wal())").expect("a switch");
    let deadline = Instant::now() + T;
    while psql(
        &db,
        "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
    )
    .unwrap_or_default()
    .trim()
        < last.trim()
    {
        assert!(
            Instant::now() < deadline,
            "{last} never archived\n{}",
            src.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let count = |c: &Cluster| {
        psql(&c.app_conninfo(), "SELECT count(*) FROM t")
            .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()))
            .trim()
            .to_owned()
    };
    let wals = |path: &str, server: &str| {
        let cfg = s3.archive_config(path, server, ("local-key", "local-secret-key"));
        tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(async {
                cnpg_instance::archive::Destination::open(&cfg)
                    .expect("destination")
                    .list_wal()
                    .await
                    .expect("listing")
            })
    };
    let source_wals = wals("s3://origin/db", "rso");

    // From the Backup, to the end of the archive.
    let mut rig = Rig::archiving(&s3, "s3://origin/restored", "");
    rig.spec += "  bootstrap:\n    recovery:\n      backup:\n        name: first\n";
    let a = src
        .beside("rsa", rig)
        .unwrap_or_else(|failed| panic!("{}", failed.1));
    let primary = a.wait_converged(None, T);
    assert_eq!(count(&a), "300", "{}", a.logs());
    let timeline = |c: &Cluster, name: &str| {
        c.status()["instances"]
            .as_array()
            .and_then(|i| i.iter().find(|i| i["name"] == name).cloned())
            .and_then(|i| i["status"]["timeLineID"].as_u64())
    };
    assert_eq!(
        timeline(&a, &primary),
        Some(3),
        "recovered across the source's timeline 2, promoted onto 3"
    );
    let deadline = Instant::now() + T;
    while wals("s3://origin/restored", "rsa").is_empty() {
        assert!(
            Instant::now() < deadline,
            "rsa archives nothing\n{}",
            a.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        wals("s3://origin/db", "rso"),
        source_wals,
        "the source's archive is the source's only"
    );
    drop(a);

    // From the store, to the restore point.
    let store = format!(
        "  externalClusters:\n  - name: origin\n    barmanObjectStore:\n      destinationPath: s3://origin/db\n      serverName: rso\n      endpointURL: {}\n      s3Credentials:\n        accessKeyId: {{name: creds, key: ID}}\n        secretAccessKey: {{name: creds, key: SECRET}}\n        region: {{name: creds, key: REGION}}\n",
        s3.endpoint
    );
    let mut rig = Rig::archiving(&s3, "s3://origin/restored", "");
    rig.spec += &format!(
        "  bootstrap:\n    recovery:\n      source: origin\n      recoveryTarget:\n        targetName: two-hundred\n{store}"
    );
    let b = src
        .beside("rsb", rig)
        .unwrap_or_else(|failed| panic!("{}", failed.1));
    b.wait_converged(None, T);
    assert_eq!(count(&b), "200", "{}", b.logs());
    drop(b);

    // Past the end of the archive: local up says so, and nothing runs.
    let mut rig = Rig::archiving(&s3, "s3://origin/never", "");
    rig.spec += &format!(
        "  bootstrap:\n    recovery:\n      source: origin\n      recoveryTarget:\n        targetTime: '2999-01-01 00:00:00'\n{store}"
    );
    let (late, said) = match src.beside("rsl", rig) {
        Ok(_) => panic!("a recovery past the end of the archive succeeded"),
        Err(x) => *x,
    };
    assert!(
        said.contains("the archive ends before time 2999-01-01")
            && said.contains("could not be recovered"),
        "{said}"
    );
    assert!(
        !late.root().join("instances/rsl-1/data/PG_VERSION").exists(),
        "a failed recovery left data behind"
    );
}

/// `kubectl-cnpg local apply -f` of `yaml` (written beside the cluster): success and what
/// it printed on stdout and stderr.
fn apply(c: &Cluster, file: &str, yaml: &str) -> (bool, String) {
    let path = c.state.path().join(file);
    std::fs::write(&path, yaml).expect("manifest");
    let out = Command::new(kubectl_cnpg())
        .args(["local", "apply", "-f"])
        .arg(&path)
        .arg("--state-dir")
        .arg(c.state.path())
        .output()
        .expect("runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What each of a pooler's processes logged: its manager's log and PgBouncer's
/// `PAUSE`/`RESUME` lines.
fn pooler_logs(c: &Cluster, name: &str) -> String {
    let mut out = String::new();
    for d in std::fs::read_dir(c.root().join("poolers").join(name))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| d.path().is_dir())
    {
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
        out += &format!("== {}\n{}", d.path().display(), read("manager.log"));
        for l in read("pgbouncer.log")
            .lines()
            .filter(|l| l.contains("PAUSE") || l.contains("RESUME"))
        {
            out += &format!("  {l}\n");
        }
    }
    out
}

/// A pooler's line in `status.json`, once `ready` of its processes run (and `phase`).
fn wait_pooler(c: &Cluster, name: &str, ready: i64, phase: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = c.status();
        let line = s["poolers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name).cloned());
        if let Some(l) = &line
            && l["ready"] == ready
            && l["phase"] == phase
        {
            return l.clone();
        }
        assert!(
            start.elapsed() < T,
            "pooler {name} never had {ready} ready and {phase}: {line:?}\n{}",
            s["events"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pooler documents for cluster `cluster`: `pool-rw` (transaction mode, `instances`
/// processes, `extra` appended to its `pgbouncer` block) and `pool-ro` (session mode).
fn poolers_yaml(cluster: &str, instances: u32, extra: &str) -> String {
    format!(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Pooler\nmetadata: {{name: pool-rw}}\nspec:\n  cluster: {{name: {cluster}}}\n  instances: {instances}\n  type: rw\n  pgbouncer:\n    poolMode: transaction\n    parameters: {{default_pool_size: '7'}}\n    pg_hba: ['host all mallory 0.0.0.0/0 reject']\n{extra}---\napiVersion: postgresql.cnpg.io/v1\nkind: Pooler\nmetadata: {{name: pool-ro}}\nspec:\n  cluster: {{name: {cluster}}}\n  type: ro\n  pgbouncer: {{poolMode: session}}\n"
    )
}

/// Real PgBouncer in front of a real cluster: clients through a `rw` pooler in transaction
/// mode and a `ro` one in session mode, users found by `auth_query` (a role made after the
/// pooler started, by its PostgreSQL password), the pooler's `pg_hba` and parameters
/// applied and a forbidden parameter refused by its path, pause and resume, scaling, a
/// switchover the pooler's client does not notice (one connection, no error, nothing
/// lost), a failover its client rides out on the same connection, and deleting the
/// poolers removes their processes and files.
#[test]
fn poolers_serve_clients_and_hide_a_switchover() {
    let c = Cluster::up_on(
        "pgp",
        Rig {
            docs: format!("---\n{}", poolers_yaml("pgp", 2, "")),
            ..Default::default()
        },
    );
    let old = c.wait_converged(None, T);
    let rw = wait_pooler(&c, "pool-rw", 2, "active");
    let ro = wait_pooler(&c, "pool-ro", 1, "active");
    let ca = c.root().join("secrets/ca.crt");
    let through = |line: &serde_json::Value, user: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={} dbname=app user={user} password={password} sslmode=verify-full sslrootcert={}",
            line["port"],
            ca.display()
        )
    };
    let app = through(&rw, "app", &c.password());
    let primary_port = c.status()["ports"]["instances"][old.as_str()][0].clone();
    assert_eq!(
        psql(&app, "SELECT inet_server_port()").expect("through the rw pooler"),
        primary_port.to_string()
    );
    assert_eq!(
        psql(
            &through(&ro, "app", &c.password()),
            "SELECT pg_is_in_recovery()"
        )
        .expect("through the ro pooler"),
        "t",
        "a ro pooler reaches replicas only"
    );
    // Roles made after the pooler started log in with their PostgreSQL password (made by
    // the superuser, over the primary's socket).
    cnpg_instance::testkit::psql(
        &format!(
            "host={} port={primary_port} dbname=app user=postgres",
            c.root().join("instances").join(&old).join("run").display()
        ),
        "CREATE ROLE bob LOGIN PASSWORD 'bob-pw'; CREATE ROLE mallory LOGIN PASSWORD 'm-pw'",
        RunAs::detect().expect("user"),
        &std::env::temp_dir(),
    )
    .expect("roles");
    assert_eq!(
        psql(&through(&rw, "bob", "bob-pw"), "SELECT current_user").expect("bob"),
        "bob"
    );
    let wrong = psql(&through(&rw, "bob", "not-it"), "SELECT 1").expect_err("a wrong password");
    assert!(wrong.contains("authentication failed"), "{wrong}");
    let refused = psql(&through(&rw, "mallory", "m-pw"), "SELECT 1").expect_err("pg_hba");
    assert!(
        refused.to_lowercase().contains("reject") || refused.contains("not allowed"),
        "{refused}"
    );
    let status = c.cnpg(&["status", "pgp"]);
    assert!(
        status.contains("\nPoolers\n")
            && status.contains("pool-ro")
            && status.contains("2/2 ready  active"),
        "{status}"
    );
    let ini = std::fs::read_to_string(c.root().join("poolers/pool-rw/pool-rw-1/pgbouncer.ini"))
        .expect("pgbouncer.ini");
    assert!(ini.contains("default_pool_size = 7\n"), "{ini}");

    // A parameter the operator owns is refused with its path, and nothing is applied.
    let (ok, said) = apply(
        &c,
        "bad-pooler.yaml",
        &poolers_yaml("pgp", 2, "").replace("default_pool_size: '7'", "listen_port: '1'"),
    );
    assert!(
        !ok && said.contains("spec.pgbouncer.parameters.listen_port"),
        "{said}"
    );

    // Paused: a query waits; resumed: it completes.
    let (ok, said) = apply(
        &c,
        "paused.yaml",
        &poolers_yaml("pgp", 2, "    paused: true\n"),
    );
    assert!(ok, "{said}");
    wait_pooler(&c, "pool-rw", 2, "paused");
    let waiting = {
        // Its login waits too (auth_query needs a server): longer than psql's usual 5 s.
        let app = format!("{app} connect_timeout=120");
        std::thread::spawn(move || psql(&app, "SELECT 42"))
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !waiting.is_finished(),
        "a query went through a paused pooler"
    );
    let (ok, said) = apply(&c, "resumed.yaml", &poolers_yaml("pgp", 2, ""));
    assert!(ok, "{said}");
    wait_pooler(&c, "pool-rw", 2, "active");
    assert_eq!(waiting.join().expect("joins").expect("resumed"), "42");

    // A switchover's hold that nobody ends (the operator gone): the pooler resumes by
    // itself once its bound passes, and a query waiting on it completes.
    let ports: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.root().join("poolers/pool-rw/ports.json")).expect("ports"),
    )
    .expect("json");
    let token = std::fs::read_to_string(c.root().join("secrets/status-token")).expect("token");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for port in ports["http"].as_object().expect("http ports").values() {
        let (code, body) = rt
            .block_on(cnpg_instance::http::post_authorized(
                "127.0.0.1",
                port.as_u64().expect("port") as u16,
                "/pause?timeoutMs=3000&holdMs=2000",
                Duration::from_secs(10),
                Some(token.trim()),
                String::new(),
            ))
            .expect("pause");
        assert_eq!(code, 200, "{body}");
    }
    let start = Instant::now();
    let app_long = format!("{app} connect_timeout=120");
    match psql(&app_long, "SELECT 43") {
        Ok(v) => assert_eq!(v, "43"),
        Err(e) => panic!("not resumed by itself: {e}\n{}", pooler_logs(&c, "pool-rw")),
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "the hold did not hold: {:?}",
        start.elapsed()
    );

    // Scaling.
    let (ok, said) = apply(&c, "three.yaml", &poolers_yaml("pgp", 3, ""));
    assert!(ok, "{said}");
    wait_pooler(&c, "pool-rw", 3, "active");
    let (ok, said) = apply(&c, "one.yaml", &poolers_yaml("pgp", 1, ""));
    assert!(ok, "{said}");
    wait_pooler(&c, "pool-rw", 1, "active");
    assert!(
        !c.root()
            .join("poolers/pool-rw/pool-rw-3/manager.pid")
            .exists()
    );

    // A switchover under a client of the rw pooler: the pooler pauses, the primary
    // changes, the pooler resumes on the new one; the client never reconnects.
    let mut target = c.target();
    target.port = rw["port"].as_u64().expect("port") as u16;
    let w = Writer::start(target);
    w.wait_for_more(0, T);
    let to = if old.ends_with("-2") {
        "pgp-3"
    } else {
        "pgp-2"
    };
    c.cnpg(&["promote", "pgp", to]);
    let new = c.wait_converged(Some(&old), T);
    assert_eq!(new, to);
    w.wait_for_more(w.count() + 20, T);
    let connections = w.connections();
    let acked = w.finish();
    assert_no_acked_row_missing(&c, &acked);
    let events = c.status()["events"].to_string();
    assert!(events.contains("PoolersPaused"), "{events}");
    assert!(events.contains("PoolersResumed"), "{events}");
    assert_eq!(
        connections.len(),
        1,
        "the client reconnected through the switchover: {connections:?}\n{events}"
    );
    let new_port = c.status()["ports"]["instances"][new.as_str()][0].clone();
    assert_eq!(
        psql(&app, "SELECT inet_server_port()").expect("after the switchover"),
        new_port.to_string()
    );

    // A failover (the primary's node crashes) under a client of the rw pooler: its
    // connection to PgBouncer stays open, and once a new primary is elected its next
    // transactions run there — the client never reconnects (a transaction in flight at
    // the crash fails, as it must).
    let mut pooled = c.target();
    pooled.port = rw["port"].as_u64().expect("port") as u16;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = rt.block_on(pooled.connect()).expect("through the pooler");
    let port_of = |client: &tokio_postgres::Client| {
        rt.block_on(client.simple_query("SELECT inet_server_port()"))
            .ok()
            .and_then(|m| {
                m.into_iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
            })
    };
    assert_eq!(port_of(&client), Some(new_port.to_string()));
    let pm = c.postmaster_pid(&new);
    let manager = parent(pm);
    kill(manager);
    kill(pm);
    let after = c.wait_converged(Some(&new), T);
    let after_port = c.status()["ports"]["instances"][after.as_str()][0].to_string();
    let start = Instant::now();
    loop {
        assert!(
            !client.is_closed(),
            "the pooler closed its client's connection"
        );
        if port_of(&client).as_deref() == Some(after_port.as_str()) {
            break;
        }
        assert!(
            start.elapsed() < T,
            "the client never reached the new primary {after}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Deleting the poolers stops their processes and removes their files.
    let pids: Vec<i32> = ["pool-rw/pool-rw-1", "pool-ro/pool-ro-1"]
        .iter()
        .map(|p| {
            std::fs::read_to_string(c.root().join("poolers").join(p).join("manager.pid"))
                .expect("pid")
                .trim()
                .parse()
                .expect("a pid")
        })
        .collect();
    let path = c.state.path().join("poolers.yaml");
    std::fs::write(&path, poolers_yaml("pgp", 1, "")).expect("file");
    let out = c.cnpg(&["local", "delete", "-f", &path.display().to_string()]);
    assert!(out.contains("pooler pool-rw deleted"), "{out}");
    let start = Instant::now();
    while c.root().join("poolers/pool-rw").exists()
        || c.root().join("poolers/pool-ro").exists()
        || pids
            .iter()
            .any(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), None).is_ok())
    {
        assert!(start.elapsed() < T, "the poolers were not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        psql(&app, "SELECT 1").is_err(),
        "nothing listens on the pooler's port"
    );
}

/// `spec.managed.roles` with a password from a Secret in the same file.
fn roles_rig(password: &str, limit: u32) -> Rig {
    Rig {
        spec: format!(
            "  enableSuperuserAccess: true\n  managed:\n    roles:\n    - name: dante\n      login: true\n      comment: Dante Alighieri\n      connectionLimit: {limit}\n      inRoles: [pg_monitor]\n      passwordSecret: {{name: dante-pw}}\n    - name: petrarca\n      login: true\n      inRoles: [poets]\n    - name: gone\n      ensure: absent\n"
        ),
        docs: format!(
            "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/basic-auth\nmetadata: {{name: dante-pw}}\nstringData: {{username: dante, password: {password}}}\n"
        ),
        // Audit logging: the operator loads pgaudit and creates its extension.
        parameters: "      pgaudit.log: write\n".into(),
        ..Default::default()
    }
}

#[test]
fn managed_roles_and_pgaudit_follow_the_spec() {
    let pg = cnpg_instance::pg_bin::Search::standard(None)
        .find()
        .expect("PostgreSQL");
    let lib = pg.dir.join("../lib/pgaudit.so");
    assert!(
        lib.exists(),
        "pgaudit is not installed ({} is missing): apt-get install postgresql-{}-pgaudit (.ci/run installs it)",
        lib.display(),
        pg.major
    );
    let c = Cluster::up_on("roles", roles_rig("first-pw", 4));
    c.wait_converged(None, T);
    let su = std::fs::read_to_string(c.root().join("secrets/superuser-password"))
        .expect("the superuser's password");
    let conninfo = |user: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={} dbname=app user={user} password={} sslmode=verify-full sslrootcert={}",
            c.rw_port(),
            password.trim(),
            c.root().join("secrets/ca.crt").display()
        )
    };
    let sql = |q: &str| psql(&conninfo("postgres", &su), q);
    let roles_status = || c.status()["managedRolesStatus"].clone();
    let wait = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let start = Instant::now();
        loop {
            let s = roles_status();
            if ok(&s) {
                return s;
            }
            assert!(start.elapsed() < T, "{what}: {s}\n{}", c.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let listed = |s: &serde_json::Value, state: &str, role: &str| {
        s["byStatus"][state]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r == role))
    };
    // dante is made as the spec says; petrarca's group does not exist: it is reported
    // with PostgreSQL's error and holds up no other role.
    let s = wait("dante reconciled, petrarca not", &|s| {
        listed(s, "reconciled", "dante") && listed(s, "pending-reconciliation", "petrarca")
    });
    assert!(
        s["cannotReconcile"]["petrarca"][0]
            .as_str()
            .is_some_and(|e| e.contains("poets")),
        "{s}"
    );
    assert!(listed(&s, "reserved", "postgres"), "{s}");
    assert!(listed(&s, "not-managed", "app"), "{s}");
    let shown = c.cnpg(&["status", "roles"]);
    assert!(
        shown.contains("Managed roles status") && shown.contains("Irreconcilable roles"),
        "{shown}"
    );
    assert!(shown.contains("role \"poets\" does not exist"), "{shown}");
    assert_eq!(
        psql(&conninfo("dante", "first-pw"), "SELECT current_user").as_deref(),
        Ok("dante")
    );
    let attributes = "SELECT rolcanlogin, rolconnlimit, shobj_description(oid, 'pg_authid'), \
         pg_has_role('dante', 'pg_monitor', 'member'), rolpassword LIKE 'SCRAM-SHA-256$%' \
         FROM pg_authid WHERE rolname = 'dante'";
    assert_eq!(
        sql(attributes).as_deref(),
        Ok("t|4|Dante Alighieri|t|t"),
        "stored as a SCRAM verifier"
    );

    // Changed by hand: put back; the missing group made: petrarca follows; a role the
    // spec wants absent: dropped (the periodic pass, every 30 s).
    sql("ALTER ROLE dante CONNECTION LIMIT 9; CREATE ROLE poets; CREATE ROLE gone")
        .expect("changes by hand");
    wait("petrarca reconciled", &|s| {
        listed(s, "reconciled", "petrarca")
    });
    let start = Instant::now();
    while sql(attributes).as_deref() != Ok("t|4|Dante Alighieri|t|t")
        || sql("SELECT count(*) FROM pg_roles WHERE rolname = 'gone'").as_deref() != Ok("0")
    {
        assert!(start.elapsed() < T, "not put back: {:?}", sql(attributes));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        sql("SELECT pg_has_role('petrarca', 'poets', 'member')").as_deref(),
        Ok("t")
    );

    // A new password in the Secret (and a new limit), applied after a switchover: the
    // new primary carries on, and the old password no longer logs in.
    let old = c.primary().expect("a primary");
    let to = if old.ends_with("-2") {
        "roles-3"
    } else {
        "roles-2"
    };
    c.cnpg(&["promote", "roles", to]);
    assert_eq!(c.wait_converged(Some(&old), T), to);
    let version = |s: &serde_json::Value| s["passwordStatus"]["dante"]["resourceVersion"].clone();
    let before = version(&roles_status());
    let (ok, said) = apply(
        &c,
        "cluster.yaml",
        // With a parameter that needs a restart (max_connections).
        &roles_rig("second-pw", 5)
            .manifest("roles")
            .replace("max_connections: '40'", "max_connections: '45'"),
    );
    assert!(ok, "{said}");
    wait("the new password applied", &|s| {
        version(s) != before && listed(s, "reconciled", "dante")
    });
    // With the transaction that set it, as upstream records it.
    let xid = roles_status()["passwordStatus"]["dante"]["transactionID"]
        .as_i64()
        .unwrap_or_default();
    assert!(xid > 0, "{}", roles_status());
    // Every instance restarted for max_connections, in the rollout's order; none left
    // pending.
    let start = Instant::now();
    loop {
        let s = c.status();
        let pending = s["instances"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["status"]["pendingRestart"] == true));
        if !pending && c.converged_now() && sql("SHOW max_connections").as_deref() == Ok("45") {
            break;
        }
        assert!(
            start.elapsed() < T,
            "max_connections not applied everywhere: {}\n{}",
            s["instances"],
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        psql(&conninfo("dante", "second-pw"), "SELECT current_user").as_deref(),
        Ok("dante")
    );
    assert!(psql(&conninfo("dante", "first-pw"), "SELECT 1").is_err());
    assert_eq!(
        sql("SELECT rolconnlimit FROM pg_authid WHERE rolname = 'dante'").as_deref(),
        Ok("5")
    );
    let to = c.primary().expect("a primary");
    let to = to.as_str();
    // pgaudit: loaded because a pgaudit.* parameter is set, its extension made in every
    // database, and a write audited in the primary's log.
    assert_eq!(
        sql("SHOW shared_preload_libraries").as_deref(),
        Ok("pgaudit")
    );
    let start = Instant::now();
    while psql(
        &c.app_conninfo(),
        "SELECT count(*) FROM pg_extension WHERE extname = 'pgaudit'",
    )
    .as_deref()
        != Ok("1")
    {
        assert!(
            start.elapsed() < T,
            "no pgaudit extension in app\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    psql(
        &c.app_conninfo(),
        "CREATE TABLE audited (n int); INSERT INTO audited VALUES (42)",
    )
    .expect("a write");
    let log = c.root().join("instances").join(to).join("postgres.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("AUDIT: SESSION,")
    {
        assert!(start.elapsed() < T, "no audit line in {}", log.display());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Neither password ever reached a log.
    for d in std::fs::read_dir(c.root().join("instances"))
        .expect("instances")
        .flatten()
    {
        for f in ["postgres.log", "manager.log"] {
            let text = std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
            assert!(
                !text.contains("first-pw") && !text.contains("second-pw"),
                "a password in {}",
                d.path().join(f).display()
            );
        }
    }
}

/// A `Database` document of cluster `dbs`.
fn database_doc(object: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: postgresql.cnpg.io/v1\nkind: Database\nmetadata: {{name: {object}}}\nspec:\n  cluster: {{name: dbs}}\n{spec}"
    )
}

/// `shop` with everything a Database holds, at connection limit `limit`, with hstore
/// `hstore` (present or absent).
fn shop_doc(limit: u32, hstore: &str) -> String {
    database_doc(
        "shop",
        &format!(
            "  name: shop\n  owner: shop_owner\n  template: template0\n  encoding: UTF8\n  localeCollate: C\n  localeCType: C\n  connectionLimit: {limit}\n  schemas:\n  - {{name: sales, owner: clerk}}\n  extensions:\n  - {{name: hstore, ensure: {hstore}}}\n  - {{name: postgres_fdw}}\n  fdws:\n  - name: postgres_fdw\n    usage: [{{name: clerk}}]\n  servers:\n  - name: remote\n    fdw: postgres_fdw\n    options: [{{name: host, value: 127.0.0.1}}, {{name: dbname, value: app}}]\n"
        ),
    )
}

#[test]
fn databases_follow_their_resources() {
    let docs = [
        shop_doc(10, "present"),
        // Its owner does not exist: reported, and holds up no other Database.
        database_doc("bad", "  name: bad\n  owner: nobody\n"),
        database_doc(
            "scratch",
            "  name: scratch\n  owner: clerk\n  databaseReclaimPolicy: delete\n",
        ),
    ]
    .concat();
    // A custom monitoring query from a ConfigMap in the same file.
    let queries = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: shop-queries}\ndata:\n  queries: |\n    shop_present:\n      query: SELECT count(*) AS n FROM pg_catalog.pg_database WHERE datname = 'shop'\n      metrics:\n        - n: {usage: GAUGE, description: Databases named shop}\n";
    let c = Cluster::up_on(
        "dbs",
        Rig {
            spec: "  enableSuperuserAccess: true\n  managed:\n    roles:\n    - {name: shop_owner, login: true}\n    - {name: clerk, login: true}\n  monitoring:\n    metricsQueriesTTL: 0s\n    customQueriesConfigMap:\n    - {name: shop-queries, key: queries}\n  tablespaces:\n  - {name: tbs1, temporary: true, storage: {size: 1Gi}}\n  - {name: tbs2, owner: {name: clerk}, storage: {size: 1Gi}}\n  - {name: tbs3, owner: {name: badhombre}, storage: {size: 1Gi}}\n".into(),
            docs: format!("{docs}{queries}"),
            ..Default::default()
        },
    );
    c.wait_converged(None, T);
    let primary_now = c.primary();
    let status = |object: &str| -> serde_json::Value {
        std::fs::read_to_string(c.root().join(format!("databases/{object}.json")))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|d| d["status"].clone())
            .unwrap_or_default()
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < T,
                "{what}: shop {} bad {} scratch {}\n{}",
                status("shop"),
                status("bad"),
                status("scratch"),
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("shop and scratch applied, bad refused", &|| {
        status("shop")["applied"] == true
            && status("scratch")["applied"] == true
            && status("bad")["applied"] == false
    });
    assert!(
        status("bad")["message"]
            .as_str()
            .is_some_and(|m| m.contains("role \"nobody\" does not exist")),
        "{}",
        status("bad")
    );
    let shop = status("shop");
    assert_eq!(shop["observedGeneration"], 1, "{shop}");
    for (list, name) in [
        ("schemas", "sales"),
        ("extensions", "hstore"),
        ("fdws", "postgres_fdw"),
        ("servers", "remote"),
    ] {
        assert!(
            shop[list]
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o["name"] == name && o["applied"] == true)),
            "{list}: {shop}"
        );
    }
    let su = std::fs::read_to_string(c.root().join("secrets/superuser-password"))
        .expect("the superuser's password");
    let sql = |db: &str, q: &str| {
        psql(
            &format!(
                "host=127.0.0.1 port={} dbname={db} user=postgres password={} sslmode=require",
                c.rw_port(),
                su.trim()
            ),
            q,
        )
    };
    assert_eq!(
        sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, \
             datctype, datconnlimit FROM pg_database WHERE datname = 'shop'"
        )
        .as_deref(),
        Ok("shop_owner|UTF8|C|C|10")
    );
    assert_eq!(
        sql(
            "shop",
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'sales' \
             UNION ALL SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension \
             UNION ALL SELECT has_foreign_data_wrapper_privilege('clerk', 'postgres_fdw', 'USAGE')::text \
             UNION ALL SELECT array_to_string(srvoptions, ',') FROM pg_foreign_server WHERE srvname = 'remote'"
        )
        .as_deref(),
        Ok("clerk\nhstore,plpgsql,postgres_fdw\ntrue\nhost=127.0.0.1,dbname=app")
    );

    // Declarative tablespaces, in place inside each PGDATA locally: made on the primary
    // with their owners, replayed by the replicas; one whose owner does not exist is
    // pending with PostgreSQL's error and holds up no other; `temporary` fills
    // temp_tablespaces.
    let tablespaces = || c.status()["tablespacesStatus"].clone();
    wait("tablespaces reconciled, tbs3 pending", &|| {
        let t = tablespaces();
        t[0]["state"] == "reconciled" && t[1]["state"] == "reconciled" && t[2]["state"] == "pending"
    });
    assert!(
        tablespaces()[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("role \"badhombre\" does not exist")),
        "{}",
        tablespaces()
    );
    assert_eq!(
        sql(
            "postgres",
            "SELECT string_agg(spcname || ':' || pg_get_userbyid(spcowner), ',' ORDER BY spcname) \
             FROM pg_tablespace WHERE spcname LIKE 'tbs%'"
        )
        .as_deref(),
        Ok("tbs1:postgres,tbs2:clerk")
    );
    assert_eq!(sql("app", "SHOW temp_tablespaces").as_deref(), Ok("tbs1"));
    sql(
        "app",
        "CREATE TABLE in_tbs2 (n int) TABLESPACE tbs2; INSERT INTO in_tbs2 VALUES (7)",
    )
    .expect("a table in tbs2");
    let ports: cnpg_operator::local::layout::Ports =
        serde_json::from_value(c.status()["ports"].clone()).expect("ports");
    let replica = ports
        .instances
        .iter()
        .find(|(name, _)| Some(name.as_str()) != primary_now.as_deref())
        .map(|(_, (port, _))| *port)
        .expect("a replica");
    let on_replica = format!(
        "host=127.0.0.1 port={replica} dbname=app user=postgres password={} sslmode=require",
        su.trim()
    );
    let start = Instant::now();
    loop {
        match psql(
            &on_replica,
            "SELECT n || ' in ' || (SELECT spcname FROM pg_tablespace t JOIN pg_class r \
             ON r.reltablespace = t.oid WHERE r.relname = 'in_tbs2') FROM in_tbs2",
        ) {
            Ok(row) if row == "7 in tbs2" => break,
            other => assert!(start.elapsed() < T, "on a replica: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // `status` says where each instance's metrics are; the primary's have the custom
    // query's, and upstream's default families.
    let said = c.cnpg(&["status", "dbs"]);
    let primary = c.primary().expect("a primary");
    let url = said
        .lines()
        .find_map(|l| {
            l.split_once(&format!("{primary} http://"))?
                .1
                .split_whitespace()
                .next()
        })
        .unwrap_or_else(|| panic!("no metrics URL of {primary} in\n{said}"));
    let port: u16 = url
        .split_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{url}"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let start = Instant::now();
    loop {
        let metrics = rt
            .block_on(cnpg_instance::testkit::http_get(port, "/metrics"))
            .map(|(_, body)| body)
            .unwrap_or_default();
        if metrics.contains("cnpg_shop_present_n 1")
            && metrics.contains("cnpg_pg_database_size_bytes{datname=\"shop\"}")
        {
            break;
        }
        assert!(start.elapsed() < T, "no custom metric:\n{metrics}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // A new spec: a new limit, hstore absent. Applied as generation 2.
    let (ok, said) = apply(&c, "shop.yaml", &shop_doc(20, "absent"));
    assert!(ok && said.contains("database shop configured"), "{said}");
    wait("generation 2 applied", &|| {
        status("shop")["observedGeneration"] == 2 && status("shop")["applied"] == true
    });
    assert_eq!(
        sql(
            "postgres",
            "SELECT datconnlimit FROM pg_database WHERE datname = 'shop'"
        )
        .as_deref(),
        Ok("20")
    );
    assert_eq!(
        sql(
            "shop",
            "SELECT count(*) FROM pg_extension WHERE extname = 'hstore'"
        )
        .as_deref(),
        Ok("0")
    );

    // Deleted: scratch (reclaim policy delete) is dropped and then goes; shop (retain)
    // goes at once and its database stays.
    let file = c.state.path().join("delete.yaml");
    std::fs::write(&file, &docs).expect("delete file");
    let said = c.cnpg(&["local", "delete", "-f", file.to_str().expect("utf-8")]);
    assert!(
        said.contains("database scratch marked for deletion")
            && said.contains("database shop deleted"),
        "{said}"
    );
    wait("scratch dropped and gone", &|| {
        !c.root().join("databases/scratch.json").exists()
    });
    assert_eq!(
        sql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database \
             WHERE datname IN ('shop', 'scratch', 'bad')"
        )
        .as_deref(),
        Ok("shop")
    );
    assert!(
        c.status()["events"]
            .to_string()
            .contains("Database scratch deleted")
    );
}
