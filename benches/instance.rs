//! The instance manager's footprint and reflexes, on a real PostgreSQL:
//! * idle RSS of `cnpg-instance run` (target: under 15 MB): the default build with a local
//!   status file and with `--kubernetes` (its Cluster watched on an in-memory API server),
//!   and the local-only build (`--no-default-features`: no kube-rs) with a local status file;
//! * `/metrics` scrape latency with upstream's default queries, each scrape running them
//!   (`metricsQueriesTTL: 0`) and from the cache (target: under 50 ms on an idle
//!   instance), and the RSS after those scrapes (still under 15 MB);
//! * time from a `kill -9` of the postmaster to `/pg/status` reporting it, and to the
//!   instance serving again.
//!
//! `cargo bench -p cnpg-benches --bench instance` (builds the release binary first).

use cnpg_instance::runas::{self, RunAs};
use cnpg_instance::testkit::{free_port, http_get};

use std::process::Command;
use std::time::{Duration, Instant};

fn rss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn stats(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} trials)",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    // The local-only build first: building the default one afterwards restores its features.
    let local_only = cnpg_instance::testkit::local_only_instance_binary();
    let exe = cnpg_instance::testkit::instance_binary(true);
    let size_mb = |p: &std::path::Path| {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1_048_576.0
    };
    println!(
        "cnpg-instance on disk: {:.1} MB default (with kubernetes), {:.1} MB local-only",
        size_mb(exe),
        size_mb(&local_only)
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    runas::own(RunAs::detect().expect("user"), tmp.path()).expect("own");
    let pgdata = tmp.path().join("pg-1/data");
    let secrets = tmp.path().join("secrets");
    let status_file = tmp.path().join("status.json");
    let st = Command::new(exe)
        .args([
            "initdb",
            "--pgdata",
            &pgdata.display().to_string(),
            "--cluster",
            "pg",
            "--name",
            "pg-1",
            "--secrets",
            &secrets.display().to_string(),
        ])
        .output()
        .expect("initdb runs");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::write(
        &status_file,
        r#"{"targetPrimary":"pg-1","currentPrimary":"pg-1","instances":["pg-1"]}"#,
    )
    .expect("status");
    // Every scrape runs the monitoring queries until the cache is turned on below.
    let monitoring = secrets.join("monitoring.json");
    std::fs::write(&monitoring, r#"{"ttlSeconds":0}"#).expect("monitoring.json");
    let (port, sport) = (free_port(), free_port());
    let run_local = |program: &std::path::Path| {
        Command::new(program)
            .args([
                "run",
                "--pgdata",
                &pgdata.display().to_string(),
                "--cluster",
                "pg",
                "--name",
                "pg-1",
                "--secrets",
                &secrets.display().to_string(),
                "--port",
                &port.to_string(),
                "--status-port",
                &sport.to_string(),
                "--cluster-status",
                &status_file.display().to_string(),
            ])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("run starts")
    };
    let stop = |child: &mut std::process::Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let _ = child.wait();
    };
    let primary = async || matches!(http_get(sport, "/pg/status").await, Ok((200, body)) if body.contains("\"isPrimary\":true"));

    // Idle memory of the local-only build, then of the default one (which stays running for
    // the crash trials below).
    let mut child = run_local(&local_only);
    for build in ["local-only", "default"] {
        let t = Instant::now();
        while !primary().await {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the instance never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "cnpg-instance ({build} build): PostgreSQL started and serving in {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rss, hwm) = rss_kb(child.id());
        println!(
            "cnpg-instance ({build} build) idle RSS: {:.1} MB (peak {:.1} MB); target under 15 MB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        if build == "local-only" {
            stop(&mut child);
            child = run_local(exe);
        }
    }

    // Scrapes: the default queries run by each, then answered from the cache.
    let scrape = async || {
        let t = Instant::now();
        let (code, body) = http_get(sport, "/metrics").await.expect("scrape");
        assert!(
            code == 200 && body.contains("cnpg_pg_database_size_bytes{"),
            "{body}"
        );
        t.elapsed()
    };
    let mut fresh = Vec::new();
    for _ in 0..50 {
        fresh.push(scrape().await);
    }
    stats(
        "/metrics scrape running the default queries (metricsQueriesTTL 0); target under 50 ms",
        fresh,
    );
    std::fs::write(&monitoring, r#"{"ttlSeconds":30}"#).expect("monitoring.json");
    scrape().await;
    let mut cached = Vec::new();
    for _ in 0..50 {
        cached.push(scrape().await);
    }
    stats(
        "/metrics scrape from the cache (metricsQueriesTTL 30s)",
        cached,
    );
    let (rss, hwm) = rss_kb(child.id());
    println!(
        "cnpg-instance RSS after 101 scrapes with the default queries: {:.1} MB (peak {:.1} MB); target under 15 MB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    let mut noticed = Vec::new();
    let mut serving = Vec::new();
    for _ in 0..10 {
        let pid: i32 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .expect("postmaster.pid");
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9");
        loop {
            if let Ok((500, _)) = http_get(sport, "/pg/status").await {
                noticed.push(killed.elapsed());
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "death never reported"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        while !primary().await {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "never restarted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        serving.push(killed.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stats("kill -9 of the postmaster → /pg/status reports it", noticed);
    stats(
        "kill -9 of the postmaster → serving again (crash recovery, same primary)",
        serving,
    );
    stop(&mut child);

    // The same instance as in a pod: its Cluster on Kubernetes (the in-memory API server,
    // through a kubeconfig), with the watch, the primary Lease and its renewals running.
    let fake = cnpg_operator::testkit::fakekube::FakeKube::new();
    let api_port = fake.serve().await.expect("serve the fake API");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        cnpg_operator::testkit::fakekube::FakeKube::kubeconfig(api_port, "db"),
    )
    .expect("kubeconfig");
    let cluster: cnpg_core::api::Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "pg", "namespace": "db"},
        "spec": {"instances": 1, "storage": {"size": "1Gi"}},
        "status": {"targetPrimary": "pg-1", "currentPrimary": "pg-1"},
    }))
    .expect("cluster");
    fake.put(&cluster);
    let mut child = Command::new(exe)
        .args([
            "run",
            "--pgdata",
            &pgdata.display().to_string(),
            "--cluster",
            "pg",
            "--name",
            "pg-1",
            "--secrets",
            &secrets.display().to_string(),
            "--port",
            &port.to_string(),
            "--status-port",
            &sport.to_string(),
            "--kubernetes",
            "--namespace",
            "db",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("run starts");
    let t = Instant::now();
    while !primary().await {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the instance never started on Kubernetes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = rss_kb(child.id());
    println!(
        "cnpg-instance --kubernetes idle RSS: {:.1} MB (peak {:.1} MB); target under 15 MB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    stop(&mut child);
}
