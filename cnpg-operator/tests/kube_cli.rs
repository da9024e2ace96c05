//! `kubectl-cnpg` against Kubernetes: the plugin's commands through a kubeconfig, against
//! the in-memory API server served on loopback.

use cnpg_core::api::Cluster;
use cnpg_operator::kube::specs::{self, DataSource, OperatorSettings};
use cnpg_operator::testkit::fakekube::FakeKube;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use std::path::PathBuf;

struct Setup {
    fake: FakeKube,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fake = FakeKube::new();
    let port = rt.block_on(fake.serve()).expect("serve the fake API");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeKube::kubeconfig(port, "db")).expect("kubeconfig");
    let mut c: Cluster = serde_saphyr::from_str(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec: {instances: 3}\nstatus: {currentPrimary: pg-1, targetPrimary: pg-1, phase: Cluster in healthy state}\n",
    )
    .expect("manifest");
    fake.put(&c);
    c = fake.get("db", "pg").expect("stored");
    for (i, role) in [
        (1, cnpg_core::naming::Role::Primary),
        (2, cnpg_core::naming::Role::Replica),
        (3, cnpg_core::naming::Role::Replica),
    ] {
        let name = format!("pg-{i}");
        fake.put(&specs::instance_pod(
            &c,
            &OperatorSettings::default(),
            &name,
            role,
            &DataSource::Existing,
        ));
        for pvc in specs::instance_pvcs(&c, &name) {
            fake.put(&pvc);
        }
    }
    // The instances' /pg/status, through the pod proxy.
    fake.set_proxy(std::sync::Arc::new(|pod: &str, port: u16, path: &str| {
        use cnpg_core::lsn::Lsn;
        use cnpg_core::status::InstanceStatus;
        (port == 8000 && path == "/pg/status").then(|| {
            let st = if pod == "pg-1" {
                InstanceStatus::primary(pod, 1, Lsn(0x3000060))
            } else {
                InstanceStatus::replica(pod, 1, Lsn(0x3000060))
            };
            serde_json::to_string(&st).expect("status serializes")
        })
    }));
    let secrets = cnpg_operator::kube::secrets::due(&c, &Default::default(), 1_780_000_000_000)
        .expect("secrets");
    for s in &secrets {
        fake.put(s);
    }
    Setup {
        fake,
        kubeconfig,
        _dir: dir,
        _rt: rt,
    }
}

fn run(s: &Setup, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "kubectl-cnpg",
        "--kubeconfig",
        s.kubeconfig.to_str().expect("utf-8"),
    ];
    all.extend(args);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cnpg_operator::plugin::run(all, &mut std::io::empty(), &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn cluster(s: &Setup) -> Cluster {
    s.fake.get("db", "pg").expect("cluster")
}

fn annotation(s: &Setup, key: &str) -> Option<String> {
    cluster(s)
        .metadata
        .annotations
        .and_then(|a| a.get(key).cloned())
}

#[test]
fn plugin_commands_change_what_the_operator_reads() {
    let s = setup();
    let (code, out, err) = run(&s, &["status", "pg"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Primary instance:     pg-1"), "{out}");
    assert!(out.contains("pg-3"), "{out}");
    assert!(
        out.contains("Current Write LSN:    0/3000060 (Timeline: 1)"),
        "{out}"
    );
    assert!(out.contains("Instances status"), "{out}");
    assert!(out.contains("Primary"), "{out}");

    let (code, _, err) = run(&s, &["promote", "pg", "pg-2"]);
    assert_eq!(code, 0, "{err}");
    let st = cluster(&s).status.expect("status");
    assert_eq!(st.target_primary.as_deref(), Some("pg-2"));
    assert_eq!(st.phase.as_deref(), Some("Switchover in progress"));
    let (code, _, err) = run(&s, &["promote", "pg", "pg-9"]);
    assert_eq!(code, 1);
    assert!(err.contains("pg-9 is not an instance of pg"), "{err}");
    // Back, as if the switchover were undone, for the rest.
    s.fake
        .update::<Cluster>("db", "pg", |v| v["status"]["targetPrimary"] = "pg-1".into());

    assert_eq!(run(&s, &["fencing", "on", "pg", "pg-3"]).0, 0);
    assert_eq!(
        annotation(&s, "cnpg.io/fencedInstances").as_deref(),
        Some("[\"pg-3\"]")
    );
    assert_eq!(run(&s, &["fencing", "off", "pg", "pg-3"]).0, 0);
    assert_eq!(annotation(&s, "cnpg.io/fencedInstances"), None);

    assert_eq!(run(&s, &["hibernate", "on", "pg"]).0, 0);
    assert_eq!(annotation(&s, "cnpg.io/hibernation").as_deref(), Some("on"));

    assert_eq!(run(&s, &["reload", "pg"]).0, 0);
    assert!(annotation(&s, "cnpg.io/reloadedAt").is_some());
    assert_eq!(run(&s, &["restart", "pg"]).0, 0);
    assert!(annotation(&s, "kubectl.kubernetes.io/restartedAt").is_some());
    assert_eq!(run(&s, &["restart", "pg", "pg-1"]).0, 0);
    let ha = cluster(&s)
        .status
        .and_then(|st| st.ha_state)
        .expect("haState");
    assert!(ha.restart.is_some_and(|t| t.starts_with("pg-1@")));
    assert_eq!(run(&s, &["restart", "pg", "pg-2"]).0, 0);
    assert!(
        s.fake.get::<Pod>("db", "pg-2").is_none(),
        "a replica restarts by losing its pod"
    );

    assert_eq!(run(&s, &["maintenance", "set", "pg", "--reusePVC"]).0, 0);
    let w = cluster(&s).spec.node_maintenance_window.expect("window");
    assert!(w.in_progress && w.reuse_pvc == Some(true));

    let (code, _, err) = run(&s, &["destroy", "pg", "pg-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("is the primary"), "{err}");
    assert_eq!(run(&s, &["destroy", "pg", "pg-3"]).0, 0);
    assert!(s.fake.get::<Pod>("db", "pg-3").is_none());
    assert!(s.fake.get::<PersistentVolumeClaim>("db", "pg-3").is_none());

    let (code, _, err) = run(
        &s,
        &[
            "certificate",
            "pg-alice",
            "--cnpg-cluster",
            "pg",
            "--cnpg-user",
            "alice",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let cert: Secret = s.fake.get("db", "pg-alice").expect("certificate secret");
    assert_eq!(cert.type_.as_deref(), Some("kubernetes.io/tls"));

    let (code, out, _) = run(&s, &["report", "pg"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("# pod pg-1") && out.contains("pg-app"),
        "{out}"
    );
    assert!(!out.contains("password:"), "secrets are not dumped");

    let (code, _, err) = run(&s, &["status", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cluster nope not found in namespace db"),
        "{err}"
    );
}

#[test]
fn a_bad_kubeconfig_is_named() {
    let mut err = Vec::new();
    let code = cnpg_operator::plugin::run(
        [
            "kubectl-cnpg",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "status",
            "pg",
        ],
        &mut std::io::empty(),
        &mut Vec::new(),
        &mut err,
    );
    assert_eq!(code, 1);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}
