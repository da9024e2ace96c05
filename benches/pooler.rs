//! The pooler's figures, on a local 3-instance cluster with a `rw` Pooler (real PgBouncer,
//! transaction mode) in front of it (`cargo bench -p cnpg-benches --bench pooler`):
//!
//! - (a) `pgbench -C` (a new connection per transaction, select-only), 50 clients, over
//!   TLS: through the pooler and straight to the primary — what a pooler is for.
//! - (b) a switchover (`kubectl-cnpg promote`) under `pgbench` (10 clients, TPC-B-like
//!   writes): clients that failed (pgbench aborts a client on its first error) and the
//!   longest time without a committed transaction, through the pooler and through `-rw`
//!   without it.
//! - (c) the pooler manager's and its PgBouncer's memory while idle.
//!
//! `SECONDS` (default 15) is each pgbench run's length.

use cnpg_instance::runas::{self, RunAs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Cluster {
    bin: PathBuf,
    name: String,
    state: tempfile::TempDir,
}

impl Cluster {
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
        let s = self.status();
        cnpg_benches::local_converged(&s, 3)
            && s["poolers"][0]["ready"] == 1
            && s["poolers"][0]["phase"] == "active"
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
    /// `host port` of the pooler, the `-rw` service, the primary itself.
    fn ports(&self) -> (u16, u16, u16) {
        let s = self.status();
        let port = |v: &serde_json::Value| v.as_u64().unwrap_or_default() as u16;
        (
            port(&s["poolers"][0]["port"]),
            port(&s["ports"]["rw"]),
            port(&s["ports"]["instances"][self.primary().as_str()][0]),
        )
    }
    fn password(&self) -> String {
        std::fs::read_to_string(self.root().join("secrets/app-password"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
    fn cnpg(&self, args: &[&str]) {
        let out = Command::new(self.bin.join("kubectl-cnpg"))
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

/// What one pgbench run said: transactions per second, mean latency (ms), clients that
/// aborted, and (with `log`) every transaction's end time in µs since the epoch.
struct Run {
    tps: f64,
    latency_ms: f64,
    aborted: usize,
    ends_us: Vec<u64>,
}

fn pgbench(pg: &Path, c: &Cluster, port: u16, args: &[&str], log: Option<&Path>) -> Run {
    pgbench_ssl(pg, c, port, args, log, "require")
}

fn pgbench_ssl(
    pg: &Path,
    c: &Cluster,
    port: u16,
    args: &[&str],
    log: Option<&Path>,
    sslmode: &str,
) -> Run {
    let mut cmd = Command::new(pg.join("pgbench"));
    cmd.args(args)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "app",
        ])
        .env("PGPASSWORD", c.password())
        .env("PGSSLMODE", sslmode);
    if let Some(dir) = log {
        std::fs::create_dir_all(dir).expect("log dir");
        cmd.args(["-l", "--log-prefix"]).arg(dir.join("tx"));
    }
    let out = cmd.output().expect("pgbench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let number = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let ends_us = log
        .map(|dir| {
            let mut v: Vec<u64> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|f| {
                    // client_id transaction_no time script_no time_epoch time_us ...
                    std::fs::read_to_string(f.path())
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| {
                            let w: Vec<&str> = l.split_whitespace().collect();
                            let s: u64 = w.get(4)?.parse().ok()?;
                            let us: u64 = w.get(5)?.parse().ok()?;
                            Some(s * 1_000_000 + us)
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            v.sort_unstable();
            v
        })
        .unwrap_or_default();
    let run = Run {
        tps: number("tps = ").unwrap_or(0.0),
        latency_ms: number("latency average = ").unwrap_or(0.0),
        aborted: text.matches("aborted in command").count(),
        ends_us,
    };
    if !out.status.success() && run.tps == 0.0 && run.aborted == 0 {
        panic!("pgbench said nothing useful:\n{text}");
    }
    run
}

/// The longest time without a finished transaction, between the first and the last.
fn longest_gap(ends_us: &[u64]) -> Duration {
    Duration::from_micros(ends_us.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0))
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A switchover under pgbench through `port`: (clients aborted, longest stall).
fn switchover_under_load(
    pg: &Path,
    c: &Cluster,
    port: u16,
    seconds: u64,
    tag: &str,
) -> (usize, Duration) {
    let log = c.state.path().join(format!("log-{tag}"));
    let secs = seconds.to_string();
    let run = std::thread::scope(|s| {
        let bench = s.spawn(|| {
            pgbench(
                pg,
                c,
                port,
                &["-c", "10", "-j", "2", "-T", &secs, "-N"],
                Some(&log),
            )
        });
        std::thread::sleep(Duration::from_secs(seconds / 3));
        let old = c.primary();
        let to = if old.ends_with("-2") {
            "pbp-3"
        } else {
            "pbp-2"
        };
        c.cnpg(&["promote", &c.name, to]);
        bench.join().expect("pgbench")
    });
    c.wait_converged();
    (run.aborted, longest_gap(&run.ends_us))
}

fn main() {
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let pg = cnpg_instance::pg_bin::Search::standard(None)
        .find()
        .expect("PostgreSQL's programs (pgbench)")
        .dir;
    cnpg_instance::pooler::find_pgbouncer(None).expect("PgBouncer");
    let bin = cnpg_benches::release_binaries();
    let state = tempfile::tempdir().expect("tempdir");
    let user = RunAs::detect().expect("user");
    runas::own(user, state.path()).expect("own");
    let manifest = state.path().join("c.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pbp}\nspec:\n  instances: 3\n  postgresql:\n    parameters: {max_connections: '200', shared_buffers: 64MB}\n  storage: {size: 1Gi}\n---\napiVersion: postgresql.cnpg.io/v1\nkind: Pooler\nmetadata: {name: pbp-pool}\nspec:\n  cluster: {name: pbp}\n  type: rw\n  pgbouncer:\n    poolMode: transaction\n    parameters: {default_pool_size: '20', max_client_conn: '500'}\n",
    )
    .expect("manifest");
    let out = Command::new(bin.join("kubectl-cnpg"))
        .args(["local", "up", "--detach", "-f"])
        .arg(&manifest)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("local up");
    let c = Cluster {
        bin: bin.clone(),
        name: "pbp".into(),
        state,
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_converged();
    let (pool, rw, primary) = c.ports();
    pgbench(&pg, &c, rw, &["-i", "-s", "4", "-q"], None);
    println!(
        "pooler benchmark: 3 instances, 1 PgBouncer (transaction mode), TLS everywhere, {seconds} s runs"
    );

    // (c) first, while nothing has used the pooler yet.
    let dir = c.root().join("poolers/pbp-pool/pbp-pool-1");
    let manager: i32 = std::fs::read_to_string(dir.join("manager.pid"))
        .expect("manager.pid")
        .trim()
        .parse()
        .expect("pid");
    // Its PgBouncer is its child.
    let bouncer = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|p| cnpg_instance::proc::stat(*p).is_some_and(|s| s.parent == manager))
        .expect("PgBouncer runs");
    println!(
        "(c) idle memory: pooler manager {:.1} MB RSS, its PgBouncer {:.1} MB RSS",
        rss_kb(manager) as f64 / 1024.0,
        rss_kb(bouncer) as f64 / 1024.0
    );

    // (a) a connection per transaction.
    let t = seconds.to_string();
    let args = ["-C", "-S", "-c", "50", "-j", "2", "-T", t.as_str()];
    for (sslmode, how) in [("require", "over TLS"), ("disable", "without TLS")] {
        let through = pgbench_ssl(&pg, &c, pool, &args, None, sslmode);
        let direct = pgbench_ssl(&pg, &c, primary, &args, None, sslmode);
        println!(
            "(a) pgbench -C -S, 50 clients, {how}: through the pooler {:.0} tps ({:.1} ms per transaction), straight to the primary {:.0} tps ({:.1} ms): {:.1}x",
            through.tps,
            through.latency_ms,
            direct.tps,
            direct.latency_ms,
            through.tps / direct.tps.max(0.001)
        );
    }

    // (b) a switchover under load, through the pooler and through -rw.
    let (aborted, gap) = switchover_under_load(&pg, &c, pool, seconds, "pooler");
    println!(
        "(b) switchover under pgbench -N, 10 clients, through the pooler: {aborted} of 10 clients failed, longest stall {} ms",
        gap.as_millis()
    );
    let (aborted, gap) = switchover_under_load(&pg, &c, rw, seconds, "rw");
    if aborted == 10 {
        println!(
            "    the same through -rw without a pooler: all 10 clients failed (their connections were cut; pgbench does not reconnect)"
        );
    } else {
        println!(
            "    the same through -rw without a pooler: {aborted} of 10 clients failed (pgbench does not reconnect), longest stall among the rest {} ms",
            gap.as_millis()
        );
    }
}
