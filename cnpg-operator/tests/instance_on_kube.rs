//! `cnpg-instance run --kubernetes` with a real PostgreSQL, against the in-memory API server
//! served on loopback (through a kubeconfig, as in a pod without in-cluster credentials):
//! the instance reads its Cluster, takes the primary Lease, publishes `currentPrimary`,
//! serves `/pg/status`; told that another instance is the target, it stops PostgreSQL and
//! lets the Lease go.

use cnpg_core::api::Cluster;
use cnpg_instance::ports::free_port;
use cnpg_instance::runas::{self, RunAs};
use cnpg_operator::testkit::fakekube::FakeKube;
use k8s_openapi::api::coordination::v1::Lease;
use std::process::Command;
use std::time::{Duration, Instant};

/// Stops the instance manager even when the test fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not within 60 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_instance_manager_follows_its_cluster_on_kubernetes() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fake = FakeKube::new();
    let api_port = rt.block_on(fake.serve()).expect("serve the fake API");
    let t = tempfile::tempdir().expect("tempdir");
    runas::own(RunAs::detect().expect("user"), t.path()).expect("own");
    let kubeconfig = t.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeKube::kubeconfig(api_port, "db")).expect("kubeconfig");
    let cluster: Cluster = serde_saphyr::from_str(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec:\n  instances: 1\n  storage: {size: 1Gi}\n  primaryLease: {leaseDurationSeconds: 2}\n  postgresql: {parameters: {fsync: 'off'}}\nstatus: {targetPrimary: pg-1}\n",
    )
    .expect("manifest");
    fake.put(&cluster);

    let bin = cnpg_instance::testkit::instance_binary(false);
    let pgdata = t.path().join("pg-1").join("data");
    let secrets = t.path().join("secrets");
    let common = [
        "--pgdata".to_owned(),
        pgdata.display().to_string(),
        "--cluster".into(),
        "pg".into(),
        "--name".into(),
        "pg-1".into(),
        "--secrets".into(),
        secrets.display().to_string(),
    ];
    let o = Command::new(bin)
        .arg("initdb")
        .args(&common)
        .arg("--skip-if-initialized")
        .output()
        .expect("initdb runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A second bootstrap of the same instance (a restarted init container) is a no-op.
    let again = Command::new(bin)
        .arg("initdb")
        .args(&common)
        .arg("--skip-if-initialized")
        .output()
        .expect("initdb runs");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("already initialized"));

    let (port, sport) = (free_port().expect("a port"), free_port().expect("a port"));
    let _im = Running(
        Command::new(bin)
            .arg("run")
            .args(&common)
            .args(["--kubernetes", "--namespace", "db"])
            .args([
                "--port",
                &port.to_string(),
                "--status-port",
                &sport.to_string(),
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("run starts"),
    );
    let status = || {
        rt.block_on(cnpg_instance::http::get(
            "127.0.0.1",
            sport,
            "/pg/status",
            Duration::from_secs(2),
        ))
        .map(|(_, body)| body)
        .unwrap_or_default()
    };
    wait("pg-1 primary and serving", || {
        status().contains("\"isPrimary\":true")
    });
    wait("currentPrimary published", || {
        fake.get::<Cluster>("db", "pg")
            .and_then(|c| c.status)
            .and_then(|s| s.current_primary)
            .as_deref()
            == Some("pg-1")
    });
    let holder = || {
        fake.get::<Lease>("db", "pg")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    assert_eq!(
        holder().as_deref(),
        Some("pg-1"),
        "the primary holds the Lease"
    );
    let published = fake.requests().iter().any(|r| {
        r.resource == "clusters/status"
            && r.query.get("fieldManager").map(String::as_str) == Some("cnpg-instance")
    });
    assert!(published);

    // The operator starts a failover away from pg-1: it must stop serving writes and let
    // the Lease go, so the new target can take it.
    fake.update::<Cluster>("db", "pg", |c| {
        c["status"]["targetPrimary"] = "pending".into()
    });
    wait("PostgreSQL stopped", || {
        !status().contains("\"isPrimary\":true")
    });
    wait("the Lease released", || holder().is_none());
}
