//! The shipped `cnpg-operator` against a real API server (`../shared/k8s`: etcd,
//! kube-apiserver 1.36, kube-controller-manager), installed from `kubectl-cnpg install
//! generate` and running with a token of its own ServiceAccount — never as admin — so
//! RBAC, admission, server-side apply and the status subresource are Kubernetes' own.
//!
//! Some tests follow a Cluster as far as the API server alone takes it (every shared
//! object, the first instance's PVC and Pod, the status, a refusal in the status); the
//! others add the test kubelet (`testkit::kubelet`), which runs the Pods as processes:
//! `cnpg-instance` from this build and PostgreSQL from the machine.

use cnpg_core::api::Cluster;
use cnpg_operator::kube::install::{OPERATOR_PERMISSIONS, Permission, rules};
use cnpg_operator::testkit::control_plane::{ControlPlane, apply_yaml, client_from};
use cnpg_operator::testkit::kubelet::{Kubelet, KubeletConfig};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The operator's namespace and ServiceAccount in the generated installation.
const OPERATOR_NS: &str = "cnpg-system";
const OPERATOR_SA: &str = "cnpg-manager";

/// A running `cnpg-operator`, killed when dropped; its log is kept for failure messages.
struct Operator {
    child: Child,
    log: PathBuf,
    /// The pods' logs too, where a test kubelet runs them.
    kubelet_logs: Option<Box<dyn Fn() -> String + Send + Sync>>,
}

impl Operator {
    fn start(kubeconfig: &Path, namespace: &str, dir: &Path) -> Operator {
        let log = dir.join(format!("operator-{namespace}.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        let health = cnpg_instance::testkit::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_cnpg-operator"))
            .args([
                "--watch-namespace",
                namespace,
                "--lease-namespace",
                namespace,
            ])
            .args(["--identity", "operator-under-test"])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("cnpg-operator starts");
        Operator {
            child,
            log,
            kubelet_logs: None,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut tail = lines[lines.len().saturating_sub(30)..].join("\n");
        if let Some(k) = self.kubelet_logs.as_ref() {
            tail.push_str("\npods' logs:\n");
            tail.push_str(&k());
        }
        tail
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl-cnpg install generate`, applied server-side as an administrator would.
async fn install(cp: &ControlPlane) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cnpg_operator::plugin::run(
        ["kubectl-cnpg", "install", "generate"],
        &mut std::io::empty(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let yaml = String::from_utf8(out).expect("utf-8");
    apply_yaml(&cp.admin().await, &yaml, "test-administrator").await;
}

/// The installation, a fresh namespace named after `prefix`, a temporary directory, and in
/// it a kubeconfig of the operator's own ServiceAccount.
async fn installed(cp: &ControlPlane, prefix: &str) -> (String, tempfile::TempDir, PathBuf) {
    install(cp).await;
    let ns = cp.namespace(prefix).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("operator.kubeconfig");
    cp.kubeconfig_for(OPERATOR_NS, OPERATOR_SA, &kubeconfig)
        .await;
    (ns, tmp, kubeconfig)
}

/// The example Cluster, in `namespace`.
async fn apply_cluster(cp: &ControlPlane, namespace: &str) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster-sync-required.yaml"),
    )
    .expect("example");
    let mut doc = cnpg_operator::manifests::parse_documents(&text).expect("yaml")[0].clone();
    doc["metadata"]["namespace"] = serde_json::json!(namespace);
    let yaml = serde_json::to_string(&doc).expect("json is yaml");
    apply_yaml(&cp.admin().await, &yaml, "test-user").await;
}

/// Polls `check` until it gives a value; panics after `limit` with what it last saw and
/// the operator's log.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, op: &Operator, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => panic!(
                "{what}: not after {limit:?}; last seen: {last}\noperator log:\n{}",
                op.log_tail()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sets_up_a_cluster_with_its_own_rbac() {
    let Some(cp) = ControlPlane::shared("the_operator_sets_up_a_cluster_with_its_own_rbac") else {
        return;
    };
    let (ns, tmp, kubeconfig) = installed(cp, "bootstrap").await;
    let op = Operator::start(&kubeconfig, &ns, tmp.path());
    apply_cluster(cp, &ns).await;

    let admin = cp.admin().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), &ns);
    let limit = Duration::from_secs(120);
    // The first instance: its PVC and its Pod, waiting for a kubelet.
    wait_for("the first instance's Pod", limit, &op, || async {
        let pod = Api::<Pod>::namespaced(admin.clone(), &ns)
            .get_opt("cluster-sync-1")
            .await
            .map_err(|e| e.to_string())?;
        pod.ok_or_else(|| "no pod cluster-sync-1".to_owned())
    })
    .await;
    let status = wait_for("status Setting up primary", limit, &op, || async {
        let c = clusters
            .get("cluster-sync")
            .await
            .map_err(|e| e.to_string())?;
        let st = c.status.unwrap_or_default();
        if st.phase.as_deref() == Some("Setting up primary") {
            Ok(st)
        } else {
            Err(format!("{:?}: {:?}", st.phase, st.phase_reason))
        }
    })
    .await;
    assert_eq!(status.target_primary.as_deref(), Some("cluster-sync-1"));
    assert!(
        status
            .certificates
            .is_some_and(|c| c.expirations.len() >= 3),
        "certificate expirations in the status"
    );

    let pvc = Api::<PersistentVolumeClaim>::namespaced(admin.clone(), &ns)
        .get_opt("cluster-sync-1")
        .await
        .expect("read PVC");
    assert!(pvc.is_some(), "the first instance's PVC");
    let services: Vec<String> = Api::<Service>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("services")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    for svc in ["cluster-sync-rw", "cluster-sync-ro", "cluster-sync-r"] {
        assert!(services.iter().any(|s| s == svc), "{svc} in {services:?}");
    }
    let secrets: Vec<String> = Api::<Secret>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    for secret in ["cluster-sync-app", "cluster-sync-ca", "cluster-sync-server"] {
        assert!(
            secrets.iter().any(|s| s == secret),
            "{secret} in {secrets:?}"
        );
    }
    let pdbs = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("PDBs");
    assert!(!pdbs.items.is_empty(), "the primary's PodDisruptionBudget");
    // The instance managers' own account, granted by the operator (which needs to hold
    // what it grants: the API server's escalation check passed).
    assert!(
        Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
            .get_opt("cluster-sync")
            .await
            .expect("read SA")
            .is_some()
    );
    assert!(
        Api::<Role>::namespaced(admin.clone(), &ns)
            .get_opt("cluster-sync")
            .await
            .expect("read Role")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_permission_is_in_the_status_from_the_first_loop() {
    let Some(cp) =
        ControlPlane::shared("a_refused_permission_is_in_the_status_from_the_first_loop")
    else {
        return;
    };
    install(cp).await;
    let ns = cp.namespace("refused").await;
    let admin = cp.admin().await;
    // An operator account with every permission of the installation but one: creating
    // Services. Namespaced, like an operator that watches one namespace.
    let without: Vec<Permission> = OPERATOR_PERMISSIONS
        .iter()
        .map(|(g, r, verbs)| {
            let kept: Vec<&'static str> = verbs
                .iter()
                .copied()
                .filter(|v| !(*r == "services" && *v == "create"))
                .collect();
            (*g, *r, &*Box::leak(kept.into_boxed_slice()))
        })
        .collect();
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "limited", "namespace": ns}
    }))
    .expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create SA");
    let role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some("limited".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        rules: Some(rules(&without)),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create Role");
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("limited".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "limited".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "limited".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("limited.kubeconfig");
    cp.kubeconfig_for(&ns, "limited", &kubeconfig).await;
    let op = Operator::start(&kubeconfig, &ns, tmp.path());
    apply_cluster(cp, &ns).await;

    let clusters: Api<Cluster> = Api::namespaced(client_from(&cp.kubeconfig()).await, &ns);
    let reason = wait_for(
        "the refusal in the status",
        Duration::from_secs(120),
        &op,
        || async {
            let c = clusters
                .get("cluster-sync")
                .await
                .map_err(|e| e.to_string())?;
            let st = c.status.unwrap_or_default();
            match (st.phase.as_deref(), st.phase_reason) {
                (Some("Unable to create required cluster objects"), Some(r)) => Ok(r),
                (p, r) => Err(format!("{p:?}: {r:?}")),
            }
        },
    )
    .await;
    assert!(
        reason.contains("forbidden") && reason.contains("services"),
        "the reason names the refusal: {reason}"
    );
    // Nothing was started past the refusal.
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("pods");
    assert!(pods.items.is_empty(), "no instance without its Services");
}

/// A test kubelet for `namespace`: three nodes in three zones, the build's `cnpg-instance`
/// for the operator image's, volumes owned by the machine's `postgres` (the image's user).
async fn kubelet(cp: &ControlPlane, namespace: &str, root: &Path) -> Kubelet {
    let postgres = nix::unistd::User::from_name("postgres")
        .expect("user lookup")
        .expect("a postgres user (apt-get install postgresql)");
    let instance = cnpg_instance::testkit::instance_binary(false);
    Kubelet::start(
        cp.admin().await,
        KubeletConfig {
            nodes: (1..=3)
                .map(|i| (format!("{namespace}-node-{i}"), format!("zone-{i}")))
                .collect(),
            namespaces: BTreeSet::from([namespace.to_owned()]),
            root: root.to_owned(),
            api_server: cp.api_server(),
            programs: BTreeMap::from([(
                "/usr/local/bin/cnpg-instance".to_owned(),
                instance.to_owned(),
            )]),
            image_user: Some((postgres.uid.as_raw(), postgres.gid.as_raw())),
        },
    )
    .await
}

/// The application's connection through the `-rw` Service: its ClusterIP, the app Secret.
async fn app_client(
    admin: &kube::Client,
    ns: &str,
    cluster: &str,
) -> Result<tokio_postgres::Client, String> {
    let svc = Api::<Service>::namespaced(admin.clone(), ns)
        .get(&format!("{cluster}-rw"))
        .await
        .map_err(|e| e.to_string())?;
    let ip = svc.spec.and_then(|s| s.cluster_ip).ok_or("no ClusterIP")?;
    let secret = Api::<Secret>::namespaced(admin.clone(), ns)
        .get(&format!("{cluster}-app"))
        .await
        .map_err(|e| e.to_string())?;
    let value = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&ip)
        .port(5432)
        .user(value("username"))
        .password(value("password"))
        .dbname(value("dbname"))
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_run_with_synchronous_replication() {
    let Some(cp) = ControlPlane::shared("three_instances_run_with_synchronous_replication") else {
        return;
    };
    let (ns, tmp, kubeconfig) = installed(cp, "e2e").await;
    let kubelet = std::sync::Arc::new(kubelet(cp, &ns, &tmp.path().join("kubelet")).await);
    let mut op = Operator::start(&kubeconfig, &ns, tmp.path());
    let k = kubelet.clone();
    op.kubelet_logs = Some(Box::new(move || k.logs(25)));
    apply_cluster(cp, &ns).await;
    let admin = cp.admin().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), &ns);

    let status = wait_for(
        "three ready instances, healthy",
        Duration::from_secs(300),
        &op,
        || async {
            let c = clusters
                .get("cluster-sync")
                .await
                .map_err(|e| e.to_string())?;
            let st = c.status.unwrap_or_default();
            if st.phase.as_deref() == Some("Cluster in healthy state") && st.ready_instances == 3 {
                Ok(st)
            } else {
                Err(format!(
                    "{:?} ({:?}), ready {}",
                    st.phase, st.phase_reason, st.ready_instances
                ))
            }
        },
    )
    .await;
    assert_eq!(status.current_primary.as_deref(), Some("cluster-sync-1"));
    // Every replica streams from the primary, one of them synchronously.
    let client = wait_for(
        "a connection through -rw",
        Duration::from_secs(60),
        &op,
        || app_client(&admin, &ns, "cluster-sync"),
    )
    .await;
    client
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        .await
        .expect("a write through -rw commits (a synchronous standby acknowledged it)");
    // Every replica streams from the primary, one of them synchronously: the primary's
    // own report, read at its pod address as the operator reads it.
    let pod = Api::<Pod>::namespaced(admin.clone(), &ns)
        .get("cluster-sync-1")
        .await
        .expect("primary pod");
    let ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .expect("the primary's pod address");
    let report = wait_for(
        "two streaming standbys",
        Duration::from_secs(60),
        &op,
        || async {
            let (_, body) =
                cnpg_instance::http::get(&ip, 8000, "/pg/status", Duration::from_secs(2)).await?;
            let st: cnpg_core::status::InstanceStatus =
                serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let streaming = st
                .replication_info
                .iter()
                .filter(|r| r.state == "streaming")
                .count();
            if streaming == 2 {
                Ok(st)
            } else {
                Err(format!("{:?}", st.replication_info))
            }
        },
    )
    .await;
    assert!(
        report
            .replication_info
            .iter()
            .any(|r| r.sync_state == "quorum" || r.sync_state == "sync"),
        "{:?}",
        report.replication_info
    );
    // `kubectl-cnpg status`, as a user runs it.
    let args: Vec<String> = vec![
        "kubectl-cnpg".into(),
        "--kubeconfig".into(),
        cp.kubeconfig().display().to_string(),
        "-n".into(),
        ns.clone(),
        "status".into(),
        "cluster-sync".into(),
    ];
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cnpg_operator::plugin::run(args, &mut std::io::empty(), &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    })
    .await
    .expect("the plugin ran");
    assert_eq!(code, 0, "{err}");
    for line in [
        "Primary instance:     cluster-sync-1",
        "Status:               Cluster in healthy state",
        "Ready instances:      3",
        "cluster-sync-server      expires",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    for i in 1..=3 {
        assert!(
            out.contains(&format!("cluster-sync-{i}   ")),
            "pod {i} listed:\n{out}"
        );
    }
    // Each instance's own report comes through the API server's pod proxy, which refuses
    // loopback pod addresses ("address not allowed"): on this test kubelet those rows show
    // the refusal, so they are not checked here.
    // The pods spread over the nodes (upstream's preferred anti-affinity).
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("pods");
    let nodes: BTreeSet<String> = pods
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    assert_eq!(nodes.len(), 3, "one instance per node");
}
