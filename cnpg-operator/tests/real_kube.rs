//! The shipped `cnpg-operator` against a real API server (`../shared/k8s`: etcd,
//! kube-apiserver 1.36, kube-controller-manager), installed from `kubectl-cnpg install
//! generate` and running with a token of its own ServiceAccount — never as admin — so
//! RBAC, admission, server-side apply and the status subresource are Kubernetes' own.
//!
//! There is no kubelet yet: these tests follow a Cluster as far as the API server alone
//! takes it (every shared object, the first instance's PVC and Pod, the status), and check
//! that a refusal reaches the status.

use cnpg_core::api::Cluster;
use cnpg_operator::kube::install::{OPERATOR_PERMISSIONS, Permission, rules};
use cnpg_operator::testkit::control_plane::{ControlPlane, apply_yaml, client_from};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, PostParams};
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
        Operator { child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
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
    install(cp).await;
    let ns = cp.namespace("bootstrap").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("operator.kubeconfig");
    cp.kubeconfig_for(OPERATOR_NS, OPERATOR_SA, &kubeconfig)
        .await;
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
