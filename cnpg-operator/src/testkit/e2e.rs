//! A Cluster on the real control plane, run as a user runs it: the installation that
//! `kubectl-cnpg install generate` prints, the shipped `cnpg-operator` authenticated as its
//! own ServiceAccount (never as admin), and a test kubelet running the pods with the
//! build's `cnpg-instance` and the machine's PostgreSQL. The end-to-end tests and the
//! Kubernetes failover benchmark share it.

use super::control_plane::{ControlPlane, apply_yaml};
use super::kubelet::{Kubelet, KubeletConfig};
use super::writer::Target;
use cnpg_core::api::{Cluster, ClusterStatus};
use cnpg_core::naming;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The operator's namespace in the generated installation.
pub const OPERATOR_NS: &str = "cnpg-system";
/// The operator's ServiceAccount in the generated installation.
pub const OPERATOR_SA: &str = "cnpg-manager";

/// A running `cnpg-operator`, killed when dropped; its log is kept for failure messages.
pub struct Operator {
    child: Child,
    log: PathBuf,
    /// The pods' logs too, where a test kubelet runs them.
    pub kubelet_logs: Option<Box<dyn Fn() -> String + Send + Sync>>,
}

impl Operator {
    /// Starts `binary` (a `cnpg-operator`) watching `namespace` with `kubeconfig`'s
    /// credentials, its log in `dir`.
    pub fn start(binary: &Path, kubeconfig: &Path, namespace: &str, dir: &Path) -> Operator {
        Operator::start_named(binary, kubeconfig, namespace, dir, "operator-under-test")
    }

    /// [`Operator::start`] with its identity in the leader Lease (one per replica, as the
    /// pod names of a Deployment are).
    pub fn start_named(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        dir: &Path,
        identity: &str,
    ) -> Operator {
        let log = dir.join(format!("{identity}-{namespace}.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        let health = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(binary)
            .args([
                "--watch-namespace",
                namespace,
                "--lease-namespace",
                namespace,
            ])
            .args(["--identity", identity])
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

    /// Kills it at once (SIGKILL), as a node failure would: its Lease is not released.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, and the pods' logs where a kubelet was attached.
    pub fn log_tail(&self) -> String {
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
        // A failed test's whole operator log outlives its temporary directory.
        if std::thread::panicking()
            && let Some(name) = self.log.file_name()
        {
            let kept = std::env::temp_dir().join(format!("failed-{}", name.to_string_lossy()));
            if std::fs::copy(&self.log, &kept).is_ok() {
                eprintln!("the operator's log is kept in {}", kept.display());
            }
        }
    }
}

/// `kubectl-cnpg install generate`, applied server-side as an administrator would.
pub async fn install(cp: &ControlPlane) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = crate::plugin::run(
        ["kubectl-cnpg", "install", "generate"],
        &mut std::io::empty(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let yaml = String::from_utf8(out).expect("utf-8");
    apply_yaml(&cp.admin().await, &yaml, "test-administrator").await;
}

/// The installation, a fresh namespace named after `prefix`, and in `dir` a kubeconfig of
/// the operator's own ServiceAccount (its path is returned with the namespace).
pub async fn installed(cp: &ControlPlane, prefix: &str, dir: &Path) -> (String, PathBuf) {
    install(cp).await;
    let ns = cp.namespace(prefix).await;
    let kubeconfig = dir.join("operator.kubeconfig");
    cp.kubeconfig_for(OPERATOR_NS, OPERATOR_SA, &kubeconfig)
        .await;
    (ns, kubeconfig)
}

/// Polls `check` until it gives a value; panics after `limit` with what it last saw and
/// the operator's log.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, op: &Operator, mut check: F) -> T
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

/// `kubectl-cnpg ARGS` in `namespace`, as a user runs it (with the administrator's
/// kubeconfig): its exit code, standard output and standard error.
pub async fn plugin(cp: &ControlPlane, namespace: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = vec![
        "kubectl-cnpg".into(),
        "--kubeconfig".into(),
        cp.kubeconfig().display().to_string(),
        "-n".into(),
        namespace.into(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = crate::plugin::run(all, &mut std::io::empty(), &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    })
    .await
    .expect("the plugin ran")
}

/// A test kubelet for `namespace`: three nodes in three zones, `instance` (a built
/// `cnpg-instance`) for the operator image's, volumes owned by the machine's `postgres` (the image's user).
pub async fn kubelet(cp: &ControlPlane, namespace: &str, root: &Path, instance: &Path) -> Kubelet {
    let postgres = nix::unistd::User::from_name("postgres")
        .expect("user lookup")
        .expect("a postgres user (apt-get install postgresql)");
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
pub async fn app_client(
    admin: &kube::Client,
    ns: &str,
    cluster: &str,
) -> Result<tokio_postgres::Client, String> {
    rw_target(admin, ns, cluster)
        .await?
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// The application's `-rw` endpoint and credentials: the Service's ClusterIP and the
/// `<cluster>-app` Secret.
pub async fn rw_target(admin: &kube::Client, ns: &str, cluster: &str) -> Result<Target, String> {
    let svc = Api::<Service>::namespaced(admin.clone(), ns)
        .get(&format!("{cluster}-rw"))
        .await
        .map_err(|e| e.to_string())?;
    let host = svc.spec.and_then(|s| s.cluster_ip).ok_or("no ClusterIP")?;
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
            .ok_or_else(|| format!("no {k} in {cluster}-app"))
    };
    Ok(Target {
        host,
        port: 5432,
        user: value("username")?,
        password: value("password")?,
        more_ports: Vec::new(),
        // Through the ClusterIP, which the server certificate does not name.
        ca: None,
    })
}

/// An instance's own report, read at its pod's address as the operator reads it (over
/// HTTPS, with the operator's client certificate).
pub async fn pod_report(
    admin: &kube::Client,
    ns: &str,
    pod: &str,
) -> Result<cnpg_core::status::InstanceStatus, String> {
    let pod = Api::<Pod>::namespaced(admin.clone(), ns)
        .get(pod)
        .await
        .map_err(|e| e.to_string())?;
    let name = pod.name_any();
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| format!("{name} has no address"))?;
    let cluster = pod
        .labels()
        .get(naming::LABEL_CLUSTER)
        .cloned()
        .ok_or_else(|| format!("{name} has no cluster label"))?;
    let c = Api::<Cluster>::namespaced(admin.clone(), ns)
        .get(&cluster)
        .await
        .map_err(|e| e.to_string())?;
    let access =
        crate::kube::platform::instance_access(&Api::namespaced(admin.clone(), ns), &c).await?;
    let (_, body) =
        crate::kube::platform::read_status(&ip, &access, Duration::from_secs(2)).await?;
    serde_json::from_str(&body).map_err(|e| e.to_string())
}

/// The status of `cluster` now (empty before the operator's first write).
pub async fn status_of(clusters: &Api<Cluster>, cluster: &str) -> Result<ClusterStatus, String> {
    Ok(clusters
        .get(cluster)
        .await
        .map_err(|e| e.to_string())?
        .status
        .unwrap_or_default())
}

/// Waits until `cluster` is healthy with as many ready instances as its spec asks, its
/// target primary is its current one (and not `away_from`: the primary a fault or request
/// just moved away from), its status is filled as upstream's (`Ready` condition, one
/// reported state per instance with a single primary, `healthyPVC`, `topology`,
/// `timelineID`), and that primary reports every other one streaming from it; returns
/// its name.
pub async fn settled(
    admin: &kube::Client,
    ns: &str,
    cluster: &str,
    op: &Operator,
    what: &str,
    away_from: Option<&str>,
) -> String {
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), ns);
    wait_for(what, Duration::from_secs(300), op, || async {
        let c = clusters.get(cluster).await.map_err(|e| e.to_string())?;
        let want = c.spec.instances;
        let st = c.status.unwrap_or_default();
        let primary = st.current_primary.clone().unwrap_or_default();
        if away_from == Some(primary.as_str()) {
            return Err(format!("{primary} is still the primary"));
        }
        if st.phase.as_deref() != Some("Cluster in healthy state")
            || st.ready_instances != want
            || st.instances != want
            || st.target_primary.as_deref() != Some(primary.as_str())
        {
            return Err(format!(
                "{:?} ({:?}), ready {}, current {:?}, target {:?}",
                st.phase,
                st.phase_reason,
                st.ready_instances,
                st.current_primary,
                st.target_primary
            ));
        }
        // The status says so as upstream's does.
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let reported = st.instances_reported_state.len() as i32;
        let primaries = st
            .instances_reported_state
            .values()
            .filter(|r| r.is_primary)
            .count();
        if !ready
            || reported != want
            || primaries != 1
            || st.healthy_pvc.len() < want as usize
            || st.topology.as_ref().and_then(|t| t.nodes_used).is_none()
            || st.timeline_id.is_none()
        {
            return Err(format!(
                "status incomplete: conditions {:?}, reported {:?}, healthyPVC {:?}, topology {:?}, timeline {:?}",
                st.conditions,
                st.instances_reported_state,
                st.healthy_pvc,
                st.topology,
                st.timeline_id
            ));
        }
        let report = pod_report(admin, ns, &primary).await?;
        let streaming = report
            .replication_info
            .iter()
            .filter(|r| r.state == "streaming")
            .count();
        if report.is_primary && streaming as i32 == want - 1 {
            Ok(primary)
        } else {
            Err(format!(
                "{primary}: primary {}, {:?}",
                report.is_primary, report.replication_info
            ))
        }
    })
    .await
}

/// The reasons of the events recorded on the Cluster.
pub async fn event_reasons(admin: &kube::Client, ns: &str) -> BTreeSet<String> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Cluster"))
        .filter_map(|e| e.reason)
        .collect()
}
