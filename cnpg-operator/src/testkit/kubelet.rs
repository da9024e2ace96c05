//! A test kubelet: makes Pods on a real API server run as local processes, so the operator,
//! `cnpg-instance` and PostgreSQL meet each other the way they do in a cluster.
//!
//! What it does, as a kubelet, a scheduler and kube-proxy would:
//! * registers Nodes (hostname and zone labels) and renews their Leases, so the
//!   controller-manager keeps them Ready;
//! * binds pending Pods to a Node, honouring `nodeSelector` and pod anti-affinity on the
//!   hostname (required terms exclude a node, preferred ones rank it lower);
//! * runs a bound Pod's init containers in order, then its containers, each as a process in
//!   private mount and PID namespaces (`unshare`): volumes are directories bind-mounted at
//!   the container paths (emptyDir, PVC — kept as long as its claim —, Secret, and the
//!   projected ServiceAccount token, CA and namespace that admission adds; Secret and
//!   ConfigMap contents are refreshed in place while the Pod runs, as a kubelet's sync
//!   does) and everything else is read-only for a container with `readOnlyRootFilesystem`,
//!   and a `/etc/hosts` naming the Services; the command, args and env of the spec (`$(VAR)` expansion, the downward API,
//!   Secret keys, the in-cluster API address);
//! * gives each Pod an address from `127.97.0.0/16` and reports it, the containers' states
//!   and readiness (startup, readiness and liveness HTTP/HTTPS probes) in the Pod status;
//! * restarts containers as `restartPolicy` says, and deletes a Pod with its grace period:
//!   SIGTERM to each container's first process, SIGKILL to the whole namespace after it;
//! * forwards each Service's ClusterIP (`127.96.0.0/16`) and port to the ready Pods it
//!   selects, like kube-proxy (the API server refuses loopback addresses in EndpointSlices,
//!   so the endpoints are computed here from the selector, as the controller would);
//! * serves the containers' logs over HTTPS where the API server proxies `pods/log`
//!   (`kubectl logs`), from the Node's `daemonEndpoints`.
//!
//! The image is ignored: a command path listed in [`KubeletConfig::programs`] runs the
//! program given there (the build's binaries), and PostgreSQL comes from the machine. Every
//! address it uses is a loopback address. It needs root (mount namespaces), as CI has.

use crate::kube::platform::pod_ready;
use futures::FutureExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, PersistentVolumeClaim, Pod, Probe, Secret, Service, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the test kubelet runs with.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Nodes to register: (name, zone).
    pub nodes: Vec<(String, String)>,
    /// The namespaces whose Pods it schedules and runs and whose Services it forwards
    /// (with `default/kubernetes`): tests sharing a control plane each have their own.
    pub namespaces: BTreeSet<String>,
    /// Where Pods' volumes, PVCs and logs live.
    pub root: PathBuf,
    /// The API server, as the `kubernetes` Service's endpoint (a control plane whose API
    /// server publishes no endpoints of its own).
    pub api_server: SocketAddr,
    /// Command paths of images → programs on this machine.
    pub programs: BTreeMap<String, PathBuf>,
    /// The local user (uid, gid) that plays the images' non-root user: containers whose
    /// security context asks for a non-root `runAsUser` run as it, and it owns the volume
    /// directories (as `fsGroup` would make them its own). Here: the machine's `postgres`.
    pub image_user: Option<(u32, u32)>,
}

/// How often a running Pod's Secret and ConfigMap volumes are brought up to date (a
/// kubelet's sync takes up to a minute or two; tests need not wait that long).
const VOLUME_REFRESH: Duration = Duration::from_secs(2);

/// A running test kubelet; dropping it kills every container it started.
pub struct Kubelet {
    root: PathBuf,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    pods: Arc<Mutex<BTreeMap<String, PodHandle>>>,
}

/// One running Pod.
struct PodHandle {
    namespace: String,
    name: String,
    /// Set when the Pod is being deleted: the grace period.
    terminate: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
    /// The `unshare` processes of its containers (host pids), for a last SIGKILL.
    pids: Arc<Mutex<BTreeSet<i32>>>,
}

const FIELD_MANAGER: &str = "test-kubelet";

impl Kubelet {
    /// Registers the nodes and starts scheduling, running and proxying.
    pub async fn start(client: Client, config: KubeletConfig) -> Kubelet {
        std::fs::create_dir_all(&config.root).expect("kubelet root");
        let root = config.root.clone();
        let (stop, stop_rx) = watch::channel(false);
        let pods: Arc<Mutex<BTreeMap<String, PodHandle>>> = Arc::new(Mutex::new(BTreeMap::new()));
        let running = pods.clone();
        let lookup: super::pod_logs::Lookup = Arc::new(move |ns: &str, name: &str| {
            running
                .lock()
                .expect("pods")
                .iter()
                .find(|(_, p)| p.namespace == ns && p.name == name)
                .map(|(uid, _)| uid.clone())
        });
        let port = super::pod_logs::serve(root.clone(), lookup, stop_rx.clone()).await;
        for (name, zone) in &config.nodes {
            register_node(&client, name, zone, port).await;
        }
        let ctx = Arc::new(Ctx { client, config });
        let task = tokio::spawn(run(ctx, pods.clone(), stop_rx));
        Kubelet {
            root,
            stop,
            task: Some(task),
            pods,
        }
    }

    /// Kills every container at once (a node that loses power), without touching the API.
    pub fn kill_all(&self) {
        for p in self.pods.lock().expect("pods").values() {
            kill_pids(&p.pids);
        }
    }

    /// The last `lines` lines of every container's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(pods) = std::fs::read_dir(self.root.join("pods")) else {
            return out;
        };
        for pod in pods.flatten() {
            let Ok(logs) = std::fs::read_dir(pod.path().join("logs")) else {
                continue;
            };
            for log in logs.flatten() {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                out.push_str(&format!("==> {} <==\n", log.path().display()));
                for l in &all[all.len().saturating_sub(lines)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Sends `signal` to every process of one Pod's containers: SIGSTOP makes it a hung
    /// node (nothing in it runs, nothing exits, its kubelet still answers), SIGCONT wakes
    /// it. Returns how many containers it reached (none before the pod's first starts).
    pub fn signal_pod(
        &self,
        namespace: &str,
        name: &str,
        signal: nix::sys::signal::Signal,
    ) -> usize {
        let mut reached = 0;
        for p in self.pods.lock().expect("pods").values() {
            if p.namespace == namespace && p.name == name {
                for pid in p.pids.lock().expect("pids").iter() {
                    crate::local::process::signal_instance(*pid, signal);
                    reached += 1;
                }
            }
        }
        reached
    }

    /// Kills the processes of one Pod's containers (kill -9 of everything in it); the
    /// kubelet restarts them as its `restartPolicy` says.
    pub fn kill_pod(&self, namespace: &str, name: &str) {
        for p in self.pods.lock().expect("pods").values() {
            if p.namespace == namespace && p.name == name {
                kill_pids(&p.pids);
            }
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        for p in self.pods.lock().expect("pods").values() {
            p.task.abort();
            kill_pids(&p.pids);
        }
    }
}

fn kill_pids(pids: &Mutex<BTreeSet<i32>>) {
    for pid in pids.lock().expect("pids").iter() {
        // `unshare --kill-child` takes its child, the namespace's first process, along.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

struct Ctx {
    client: Client,
    config: KubeletConfig,
}

/// Pod addresses: 127.97.x.y, one per Pod uid while it runs. One allocator for the whole
/// process, so that kubelets of tests running side by side never hand out the same
/// address; an address something already listens on (another process) is skipped.
#[derive(Default)]
struct Ips {
    by_uid: BTreeMap<String, Ipv4Addr>,
    next: u32,
}

fn ips() -> std::sync::MutexGuard<'static, Ips> {
    static IPS: std::sync::OnceLock<Mutex<Ips>> = std::sync::OnceLock::new();
    IPS.get_or_init(|| Mutex::new(Ips::default()))
        .lock()
        .expect("pod addresses")
}

impl Ips {
    fn take(&mut self, uid: &str) -> Ipv4Addr {
        if let Some(ip) = self.by_uid.get(uid) {
            return *ip;
        }
        loop {
            self.next = (self.next + 1) % 65000;
            let n = self.next + 2;
            let ip = Ipv4Addr::new(127, 97, (n >> 8) as u8, (n & 0xff) as u8);
            let free = [5432u16, 8000]
                .iter()
                .all(|p| std::net::TcpListener::bind((ip, *p)).is_ok());
            if free && !self.by_uid.values().any(|i| *i == ip) {
                self.by_uid.insert(uid.to_owned(), ip);
                return ip;
            }
        }
    }
    fn free(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }
}

/// A Node at 127.0.0.1 (its only address: the API server reaches the kubelet at it, for
/// `pods/log`) whose kubelet listens on `port`.
async fn register_node(client: &Client, name: &str, zone: &str, port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": zone,
        }},
    });
    nodes
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await
        .expect("register the node");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({
        "apiVersion": "v1", "kind": "Node",
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "test kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        },
    });
    nodes
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("report the node ready");
    renew_node_lease(client, name).await;
}

/// The heartbeat the node lifecycle controller watches.
async fn renew_node_lease(client: &Client, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    // A MicroTime: exactly six fractional digits.
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
    });
    if let Err(e) = leases
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
    {
        tracing::warn!("test kubelet: cannot renew the Lease of node {name}: {e}");
    }
}

async fn run(
    ctx: Arc<Ctx>,
    pods: Arc<Mutex<BTreeMap<String, PodHandle>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut proxy = Proxy::default();
    let mut last_heartbeat = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        if last_heartbeat.elapsed() > Duration::from_secs(5) {
            for (name, _) in &ctx.config.nodes {
                renew_node_lease(&ctx.client, name).await;
            }
            last_heartbeat = Instant::now();
        }
        if let Err(e) = sync_pods(&ctx, &pods).await {
            tracing::debug!("test kubelet: {e}");
        }
        if let Err(e) = proxy
            .sync(&ctx.client, &ctx.config.namespaces, ctx.config.api_server)
            .await
        {
            tracing::debug!("test kube-proxy: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn ours(ctx: &Ctx, pod: &Pod) -> bool {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    node.is_some_and(|n| ctx.config.nodes.iter().any(|(name, _)| name == n))
}

async fn sync_pods(
    ctx: &Arc<Ctx>,
    pods: &Arc<Mutex<BTreeMap<String, PodHandle>>>,
) -> Result<(), kube::Error> {
    let all: Api<Pod> = Api::all(ctx.client.clone());
    let list = all.list(&ListParams::default()).await?.items;
    let live: BTreeSet<String> = list.iter().filter_map(|p| p.uid()).collect();
    // Pods deleted outright (grace 0): their processes go at once.
    {
        let mut map = pods.lock().expect("pods");
        let gone: Vec<String> = map.keys().filter(|u| !live.contains(*u)).cloned().collect();
        for uid in gone {
            if let Some(p) = map.remove(&uid) {
                p.task.abort();
                kill_pids(&p.pids);
            }
            ips().free(&uid);
        }
    }
    for pod in &list {
        if !ctx
            .config
            .namespaces
            .contains(&pod.namespace().unwrap_or_default())
        {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let unbound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_none());
        if unbound && !deleting {
            if let Some(node) = schedule(ctx, pod, &list) {
                bind(&ctx.client, pod, &node).await;
            }
            continue;
        }
        if !ours(ctx, pod) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        if deleting {
            let grace = Duration::from_secs(
                pod.metadata
                    .deletion_grace_period_seconds
                    .unwrap_or(30)
                    .max(0) as u64,
            );
            let finished = {
                let map = pods.lock().expect("pods");
                match map.get(&uid) {
                    Some(h) => {
                        if h.terminate.borrow().is_none() {
                            let _ = h.terminate.send(Some(grace));
                        }
                        h.task.is_finished()
                    }
                    None => true,
                }
            };
            if finished {
                // The containers are gone: the kubelet removes the Pod for good.
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                if let Some(p) = pods.lock().expect("pods").remove(&uid) {
                    kill_pids(&p.pids);
                }
                ips().free(&uid);
            }
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let mut map = pods.lock().expect("pods");
        if map.contains_key(&uid) {
            continue;
        }
        let ip = ips().take(&uid);
        let (terminate, terminate_rx) = watch::channel(None);
        let pids = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn(
            PodRunner {
                ctx: ctx.clone(),
                pod: pod.clone(),
                ip,
                pids: pids.clone(),
                terminate: terminate_rx,
            }
            .run()
            .map(|_| ()),
        );
        map.insert(
            uid,
            PodHandle {
                namespace: ns,
                name,
                terminate,
                task,
                pids,
            },
        );
    }
    Ok(())
}

/// Whether `labels` match a label selector's `matchLabels` and `In`/`NotIn`/`Exists`
/// expressions.
fn selects(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The node for a pending Pod: one whose labels its `nodeSelector` matches, without a Pod
/// its required anti-affinity excludes, with the fewest preferred-anti-affinity
/// conflicts, then the fewest Pods.
fn schedule(ctx: &Ctx, pod: &Pod, all: &[Pod]) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let ns = pod.namespace().unwrap_or_default();
    let anti = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref());
    let on = |node: &str| -> Vec<&Pod> {
        all.iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                    && p.metadata.deletion_timestamp.is_none()
                    && p.namespace().as_deref() == Some(ns.as_str())
            })
            .collect()
    };
    let conflicts = |node: &str, term: &k8s_openapi::api::core::v1::PodAffinityTerm| {
        let selector = term.label_selector.clone().unwrap_or_default();
        on(node)
            .iter()
            .filter(|p| {
                selects(
                    &selector,
                    p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                )
            })
            .count()
    };
    let mut best: Option<(usize, usize, String)> = None;
    for (node, zone) in &ctx.config.nodes {
        let labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_owned(), node.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("topology.kubernetes.io/zone".to_owned(), zone.clone()),
        ]);
        if !spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            continue;
        }
        let required = anti
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|terms| terms.iter().map(|t| conflicts(node, t)).sum::<usize>())
            .unwrap_or(0);
        if required > 0 {
            continue;
        }
        let preferred = anti
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|terms| {
                terms
                    .iter()
                    .map(|t| conflicts(node, &t.pod_affinity_term))
                    .sum::<usize>()
            })
            .unwrap_or(0);
        let load = on(node).len();
        if best
            .as_ref()
            .is_none_or(|(p, l, _)| (preferred, load) < (*p, *l))
        {
            best = Some((preferred, load, node.clone()));
        }
    }
    best.map(|(_, _, n)| n)
}

async fn bind(client: &Client, pod: &Pod, node: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let _ = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await;
}

// ---------------------------------------------------------------------------------------
// Running a Pod
// ---------------------------------------------------------------------------------------

struct PodRunner {
    ctx: Arc<Ctx>,
    pod: Pod,
    ip: Ipv4Addr,
    pids: Arc<Mutex<BTreeSet<i32>>>,
    terminate: watch::Receiver<Option<Duration>>,
}

/// One container's process and what the probes last said.
struct Running {
    spec: Container,
    child: Option<tokio::process::Child>,
    restarts: i32,
    started_at: Option<String>,
    /// Startup probe passed (or none).
    started: bool,
    ready: bool,
    failures: (u32, u32, u32),
    next_probe: Instant,
    next_start: Instant,
    last_exit: Option<(i32, String)>,
    /// Its termination message: with `terminationMessagePolicy: FallbackToLogsOnError`,
    /// the end of its log when it failed (as a kubelet: at most 80 lines, 2048 bytes).
    last_message: Option<String>,
}

impl PodRunner {
    fn dir(&self) -> PathBuf {
        let uid = self.pod.uid().unwrap_or_default();
        self.ctx.config.root.join("pods").join(uid)
    }

    /// The end of a container's log, as a kubelet takes it for a termination message.
    fn log_tail(&self, container: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir().join("logs").join(format!("{container}.log")))
                .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        let mut start = tail.len().saturating_sub(2048);
        while !tail.is_char_boundary(start) {
            start += 1;
        }
        tail[start..].to_owned()
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        )
    }

    async fn run(mut self) -> Result<(), String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let start_time = k8s_openapi::jiff::Timestamp::now().to_string();
        // Volumes: wait for what the Pod mounts (Secrets, PVCs) like a kubelet does; why it
        // waits goes to the pod's status and, for a test's failure message, to its log
        // directory (`kubelet.log`), once per reason.
        let mut said = String::new();
        let volumes = loop {
            match self.volumes().await {
                Ok(v) => break v,
                Err(e) => {
                    if e != said {
                        let logs = self.dir().join("logs");
                        let _ = std::fs::create_dir_all(&logs);
                        let _ = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(logs.join("kubelet.log"))
                            .and_then(|mut f| {
                                use std::io::Write;
                                writeln!(f, "volumes not ready: {e}")
                            });
                        said = e.clone();
                    }
                    self.status(&start_time, "Pending", &[], &[], false, Some(&e))
                        .await;
                    if self.wait_or_terminate(Duration::from_secs(1)).await {
                        return Ok(());
                    }
                }
            }
        };
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        // Init containers, one after the other, each to success.
        let mut inits: Vec<Running> = spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(Running::new)
            .collect();
        for i in 0..inits.len() {
            loop {
                self.status(&start_time, "Pending", &inits, &[], false, None)
                    .await;
                let child = self.spawn(&inits[i].spec, &volumes).await?;
                inits[i].started_at = Some(k8s_openapi::jiff::Timestamp::now().to_string());
                inits[i].child = Some(child);
                self.status(&start_time, "Pending", &inits, &[], false, None)
                    .await;
                let code = loop {
                    if self.terminate.borrow().is_some() {
                        self.stop_all(&mut inits, Duration::from_secs(0)).await;
                        return Ok(());
                    }
                    if let Some(c) = inits[i].child.as_mut()
                        && let Ok(Some(st)) = c.try_wait()
                    {
                        break st.code().unwrap_or(137);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                self.forget(&mut inits[i]);
                inits[i].last_exit =
                    Some((code, if code == 0 { "Completed" } else { "Error" }.into()));
                inits[i].last_message = (code != 0
                    && inits[i].spec.termination_message_policy.as_deref()
                        == Some("FallbackToLogsOnError"))
                .then(|| self.log_tail(&inits[i].spec.name));
                if code == 0 {
                    break;
                }
                inits[i].restarts += 1;
                if restart_policy == "Never" {
                    self.status(&start_time, "Failed", &inits, &[], false, None)
                        .await;
                    return Ok(());
                }
                let backoff = Duration::from_secs((inits[i].restarts as u64).min(10));
                self.status(&start_time, "Pending", &inits, &[], false, None)
                    .await;
                if self.wait_or_terminate(backoff).await {
                    return Ok(());
                }
            }
        }
        let mut containers: Vec<Running> = spec
            .containers
            .clone()
            .into_iter()
            .map(Running::new)
            .collect();
        let mut last_report = String::new();
        let mut next_refresh = Instant::now() + VOLUME_REFRESH;
        loop {
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + VOLUME_REFRESH;
                if let Err(e) = self.refresh_volumes().await {
                    tracing::debug!(pod = %self.pod.name_any(), "volume refresh: {e}");
                }
            }
            let terminating = *self.terminate.borrow();
            if let Some(grace) = terminating {
                self.stop_all(&mut containers, grace).await;
                self.status(&start_time, "Running", &inits, &containers, true, None)
                    .await;
                return Ok(());
            }
            for c in containers.iter_mut() {
                // Exited: restart as the policy says, after a back-off.
                let exited = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten());
                if let Some(st) = exited {
                    let code = st.code().unwrap_or(137);
                    c.child = None;
                    c.ready = false;
                    c.started = false;
                    c.last_exit =
                        Some((code, if code == 0 { "Completed" } else { "Error" }.into()));
                    c.restarts += 1;
                    c.next_start =
                        Instant::now() + Duration::from_secs((c.restarts as u64).min(10));
                }
                let may_restart = match restart_policy.as_str() {
                    "Never" => c.restarts == 0 && c.last_exit.is_none(),
                    "OnFailure" => c.last_exit.as_ref().is_none_or(|(code, _)| *code != 0),
                    _ => true,
                };
                if c.child.is_none() && may_restart && Instant::now() >= c.next_start {
                    match self.spawn(&c.spec, &volumes).await {
                        Ok(child) => {
                            c.child = Some(child);
                            c.started_at = Some(k8s_openapi::jiff::Timestamp::now().to_string());
                            c.started = c.spec.startup_probe.is_none();
                            c.failures = (0, 0, 0);
                            c.next_probe =
                                Instant::now() + Duration::from_secs(first_delay(&c.spec) as u64);
                        }
                        Err(e) => {
                            c.last_exit = Some((128, e));
                            c.restarts += 1;
                            c.next_start = Instant::now() + Duration::from_secs(5);
                        }
                    }
                }
                if c.child.is_some() && Instant::now() >= c.next_probe {
                    self.probe(c).await;
                }
            }
            let report = format!(
                "{:?}",
                containers
                    .iter()
                    .map(|c| (c.child.is_some(), c.ready, c.started, c.restarts))
                    .collect::<Vec<_>>()
            );
            if report != last_report {
                self.status(&start_time, "Running", &inits, &containers, false, None)
                    .await;
                last_report = report;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sleeps, or returns true at once when the Pod is being deleted.
    async fn wait_or_terminate(&mut self, d: Duration) -> bool {
        if self.terminate.borrow().is_some() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => self.terminate.borrow().is_some(),
            _ = self.terminate.changed() => true,
        }
    }

    fn forget(&self, c: &mut Running) {
        if let Some(ch) = c.child.take()
            && let Some(pid) = ch.id()
        {
            self.pids.lock().expect("pids").remove(&(pid as i32));
        }
    }

    /// SIGTERM to every container's first process; SIGKILL to what is left after `grace`.
    async fn stop_all(&self, containers: &mut [Running], grace: Duration) {
        for c in containers.iter() {
            if let Some(pid) = c.child.as_ref().and_then(|ch| ch.id()) {
                for inner in children_of(pid as i32) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(inner),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            let alive = containers.iter_mut().any(|c| {
                c.child
                    .as_mut()
                    .is_some_and(|ch| matches!(ch.try_wait(), Ok(None)))
            });
            if !alive || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for c in containers.iter_mut() {
            if let Some(ch) = c.child.as_mut() {
                let _ = ch.start_kill();
                let _ = ch.wait().await;
            }
            self.forget(c);
            c.ready = false;
            c.last_exit.get_or_insert((0, "Completed".into()));
        }
    }

    /// Every volume of the Pod as a directory here, by volume name.
    async fn volumes(&self) -> Result<BTreeMap<String, PathBuf>, String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let ns = self.pod.namespace().unwrap_or_default();
        let dir = self.dir();
        let mut out = BTreeMap::new();
        for v in spec.volumes.iter().flatten() {
            let path = if let Some(claim) = &v.persistent_volume_claim {
                let pvcs: Api<PersistentVolumeClaim> =
                    Api::namespaced(self.ctx.client.clone(), &ns);
                let pvc = pvcs
                    .get_opt(&claim.claim_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!("persistentvolumeclaim {} not found", claim.claim_name)
                    })?;
                if pvc.metadata.deletion_timestamp.is_some() {
                    return Err(format!(
                        "persistentvolumeclaim {} is being deleted",
                        claim.claim_name
                    ));
                }
                // Storage lives as long as its claim (by uid): a new claim of the same
                // name starts empty.
                let path = self
                    .ctx
                    .config
                    .root
                    .join("pvcs")
                    .join(pvc.uid().unwrap_or_default());
                self.make_dir(&path)?;
                path
            } else if let Some(secret) = &v.secret {
                let name = secret.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
                let s = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("secret {name} not found"))?;
                let path = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
                for (k, val) in s.data.iter().flatten() {
                    std::fs::write(path.join(k), &val.0).map_err(|e| e.to_string())?;
                }
                path
            } else if let Some(projected) = &v.projected {
                // What the ServiceAccount admission adds (`kube-api-access-*`): a token, the
                // cluster CA, the namespace.
                let path = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
                for source in projected.sources.iter().flatten() {
                    for (file, content) in self.projection(source).await? {
                        std::fs::write(path.join(file), content).map_err(|e| e.to_string())?;
                    }
                }
                path
            } else {
                // emptyDir, and anything else, as an empty directory of the Pod.
                let path = dir.join("volumes").join(&v.name);
                self.make_dir(&path)?;
                path
            };
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }

    /// Writes again the Secret and ConfigMap volumes (plain and projected) whose source
    /// changed, file by file and atomically, as a kubelet does on its sync: a renewed
    /// certificate or a rotated Secret reaches running containers without a restart.
    /// ServiceAccount tokens are left as they were written.
    async fn refresh_volumes(&self) -> Result<(), String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let ns = self.pod.namespace().unwrap_or_default();
        let dir = self.dir().join("volumes");
        for v in spec.volumes.iter().flatten() {
            let path = dir.join(&v.name);
            let mut files = Vec::new();
            if let Some(secret) = &v.secret {
                let name = secret.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
                let s = api
                    .get(&name)
                    .await
                    .map_err(|e| format!("secret {name}: {e}"))?;
                files.extend(s.data.into_iter().flatten().map(|(k, v)| (k, v.0)));
            } else if let Some(projected) = &v.projected {
                for source in projected.sources.iter().flatten() {
                    if source.secret.is_none() && source.config_map.is_none() {
                        continue;
                    }
                    files.extend(self.projection(source).await?);
                }
            }
            for (file, content) in files {
                let to = path.join(&file);
                if std::fs::read(&to).ok().as_deref() == Some(content.as_slice()) {
                    continue;
                }
                let tmp = path.join(format!(".{file}.refresh"));
                std::fs::write(&tmp, &content)
                    .and_then(|_| std::fs::rename(&tmp, &to))
                    .map_err(|e| format!("{}: {e}", to.display()))?;
            }
        }
        Ok(())
    }

    /// The files one source of a projected volume gives: (path, content).
    async fn projection(
        &self,
        source: &k8s_openapi::api::core::v1::VolumeProjection,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let ns = self.pod.namespace().unwrap_or_default();
        let mut files = Vec::new();
        if let Some(t) = &source.service_account_token {
            let sa = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &ns);
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: t.audience.clone().into_iter().collect(),
                    expiration_seconds: Some(t.expiration_seconds.unwrap_or(3607).max(24 * 3600)),
                    ..Default::default()
                },
                ..Default::default()
            };
            let token = api
                .create_token_request(&sa, &PostParams::default(), &request)
                .await
                .map_err(|e| format!("serviceaccount {sa}: {e}"))?
                .status
                .map(|s| s.token)
                .unwrap_or_default();
            files.push((t.path.clone(), token.into_bytes()));
        }
        if let Some(cm) = &source.config_map {
            let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &ns);
            let m = api
                .get(&cm.name)
                .await
                .map_err(|e| format!("configmap {}: {e}", cm.name))?;
            let data = m.data.unwrap_or_default();
            for item in cm.items.iter().flatten() {
                let v = data
                    .get(&item.key)
                    .ok_or_else(|| format!("configmap {} has no {}", cm.name, item.key))?;
                files.push((item.path.clone(), v.clone().into_bytes()));
            }
        }
        if let Some(d) = &source.downward_api {
            for item in d.items.iter().flatten() {
                let value = match item.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                    Some("metadata.namespace") => ns.clone(),
                    Some("metadata.name") => self.pod.name_any(),
                    other => return Err(format!("downwardAPI {other:?} is not supported")),
                };
                files.push((item.path.clone(), value.into_bytes()));
            }
        }
        if let Some(sec) = &source.secret {
            // As the kubelet: an optional Secret, or key, that is not there gives nothing.
            let optional = sec.optional == Some(true);
            let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
            let s = match api.get_opt(&sec.name).await {
                Ok(Some(s)) => s,
                Ok(None) if optional => Secret::default(),
                Ok(None) => return Err(format!("secret {} not found", sec.name)),
                Err(e) => return Err(format!("secret {}: {e}", sec.name)),
            };
            let data = s.data.unwrap_or_default();
            match &sec.items {
                // Only the keys listed, each at its path.
                Some(items) => {
                    for item in items {
                        match data.get(&item.key) {
                            Some(v) => files.push((item.path.clone(), v.0.clone())),
                            None if optional => {}
                            None => {
                                return Err(format!("secret {} has no {}", sec.name, item.key));
                            }
                        }
                    }
                }
                None => files.extend(data.into_iter().map(|(k, v)| (k, v.0))),
            }
        }
        Ok(files)
    }

    fn make_dir(&self, path: &Path) -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some((uid, gid)) = self.ctx.config.image_user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// `/etc/hosts` of the Pod: itself, and every Service of its namespace by the names
    /// cluster DNS would give it.
    async fn hosts(&self) -> Result<PathBuf, String> {
        let ns = self.pod.namespace().unwrap_or_default();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let hostname = spec.hostname.clone().unwrap_or_else(|| self.pod.name_any());
        let mut text = format!("127.0.0.1 localhost\n{} {hostname}\n", self.ip);
        let services: Api<Service> = Api::all(self.ctx.client.clone());
        for s in services
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
        {
            let sns = s.namespace().unwrap_or_default();
            let name = s.name_any();
            let Some(ip) = s
                .spec
                .as_ref()
                .and_then(|x| x.cluster_ip.clone())
                .filter(|ip| ip != "None")
            else {
                continue;
            };
            let short = if sns == ns {
                format!("{name} ")
            } else {
                String::new()
            };
            text.push_str(&format!(
                "{ip} {short}{name}.{sns} {name}.{sns}.svc {name}.{sns}.svc.cluster.local\n"
            ));
        }
        let path = self.dir().join("hosts");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// The container's environment: the spec's variables with the downward API and Secret
    /// keys resolved and `$(VAR)` expanded, and what every container gets.
    async fn env(&self, c: &Container) -> Result<Vec<(String, String)>, String> {
        let ns = self.pod.namespace().unwrap_or_default();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            (
                "HOSTNAME".into(),
                spec.hostname.clone().unwrap_or_else(|| self.pod.name_any()),
            ),
        ];
        let services: Api<Service> = Api::namespaced(self.ctx.client.clone(), "default");
        if let Ok(k) = services.get("kubernetes").await
            && let Some(s) = k.spec
        {
            let port = s.ports.iter().flatten().next().map_or(443, |p| p.port);
            env.push((
                "KUBERNETES_SERVICE_HOST".into(),
                s.cluster_ip.unwrap_or_default(),
            ));
            env.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                expand(v, &env)
            } else if let Some(from) = &e.value_from {
                if let Some(f) = &from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" => self.pod.name_any(),
                        "metadata.namespace" => ns.clone(),
                        "metadata.uid" => self.pod.uid().unwrap_or_default(),
                        "status.podIP" => self.ip.to_string(),
                        "status.hostIP" => "127.0.0.1".into(),
                        "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
                        "spec.serviceAccountName" => {
                            spec.service_account_name.clone().unwrap_or_default()
                        }
                        other => return Err(format!("fieldRef {other} is not supported")),
                    }
                } else if let Some(k) = &from.secret_key_ref {
                    let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
                    let s = api
                        .get(&k.name)
                        .await
                        .map_err(|e| format!("secret {}: {e}", k.name))?;
                    s.data
                        .and_then(|d| {
                            d.get(&k.key)
                                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        })
                        .ok_or_else(|| format!("secret {} has no key {}", k.name, k.key))?
                } else {
                    return Err(format!("env {}: unsupported valueFrom", e.name));
                }
            } else {
                String::new()
            };
            env.retain(|(k, _)| k != &e.name);
            env.push((e.name.clone(), value));
        }
        Ok(env)
    }

    /// Starts a container: `unshare` (mount, PID namespaces) runs a shell that bind-mounts
    /// the volumes at their paths, makes the rest read-only when the container asks for a
    /// read-only root filesystem, and then execs the command.
    async fn spawn(
        &self,
        c: &Container,
        volumes: &BTreeMap<String, PathBuf>,
    ) -> Result<tokio::process::Child, String> {
        let env = self.env(c).await?;
        let hosts = self.hosts().await?;
        let mut binds: Vec<(PathBuf, String)> = vec![(hosts, "/etc/hosts".into())];
        for m in c.volume_mounts.iter().flatten() {
            let mut src = volumes
                .get(&m.name)
                .cloned()
                .ok_or_else(|| format!("volume {} is not in the pod", m.name))?;
            if let Some(sub) = m.sub_path.as_ref().filter(|s| !s.is_empty()) {
                src = src.join(sub);
                self.make_dir(&src)?;
            }
            binds.push((src, m.mount_path.clone()));
        }
        let mut script = String::from("set -e\n");
        for (src, dst) in &binds {
            // Mount points must exist; an absent one is made (empty) on this machine.
            let dst_path = Path::new(dst);
            if !dst_path.exists() {
                if src.is_dir() {
                    std::fs::create_dir_all(dst_path).map_err(|e| format!("{dst}: {e}"))?;
                } else {
                    if let Some(parent) = dst_path.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| format!("{dst}: {e}"))?;
                    }
                    std::fs::write(dst_path, b"").map_err(|e| format!("{dst}: {e}"))?;
                }
            }
            script.push_str(&format!("mount --bind '{}' '{dst}'\n", src.display()));
        }
        // `readOnlyRootFilesystem`: everything but the volumes is read-only for this
        // container (the volumes, bound before, keep their own mounts' flags).
        let read_only = c
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false);
        if read_only {
            script.push_str("mount -o remount,bind,ro /\n");
        }
        // Then the container's user: a non-root runAsUser is the image's user. Changing
        // user clears the parent-death signal `unshare --kill-child` set: set it again.
        let pod_user = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.run_as_user);
        let user = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_user);
        match (user, self.ctx.config.image_user) {
            (Some(u), Some((uid, gid))) if u != 0 => script.push_str(&format!(
                "exec setpriv --reuid={uid} --regid={gid} --clear-groups --pdeathsig KILL -- \"$0\" \"$@\"\n"
            )),
            _ => script.push_str("exec \"$0\" \"$@\"\n"),
        }
        let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
        argv.extend(c.args.clone().unwrap_or_default());
        let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
        let Some(first) = argv.first() else {
            return Err(format!(
                "container {} has no command (images are not run)",
                c.name
            ));
        };
        let program = self
            .ctx
            .config
            .programs
            .get(first)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| first.clone());
        let logs = self.dir().join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", c.name)))
            .map_err(|e| e.to_string())?;
        // setpriv: the container dies with this process (a test that panics or is killed
        // leaves no PostgreSQL behind); unshare: its own mount and PID namespaces.
        let mut cmd = tokio::process::Command::new("setpriv");
        cmd.args([
            "--pdeathsig",
            "KILL",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .arg(program)
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(self.dir())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("unshare: {e}"))?;
        if let Some(pid) = child.id() {
            self.pids.lock().expect("pids").insert(pid as i32);
        }
        Ok(child)
    }

    /// The probe due for `c`: startup until it passes, then liveness and readiness.
    async fn probe(&self, c: &mut Running) {
        let (probe, kind) = if !c.started {
            (c.spec.startup_probe.clone(), 0)
        } else {
            (c.spec.readiness_probe.clone(), 1)
        };
        let Some(p) = probe else {
            c.started = true;
            c.ready = c.spec.readiness_probe.is_none();
            c.next_probe = Instant::now() + Duration::from_secs(1);
            return;
        };
        let ok = self.check(&p).await;
        let threshold = p.failure_threshold.unwrap_or(3).max(1) as u32;
        let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        if kind == 0 {
            if ok {
                c.started = true;
                c.failures.0 = 0;
                // Readiness right after startup, as the kubelet does.
                c.next_probe = Instant::now();
                return;
            }
            c.failures.0 += 1;
            if c.failures.0 >= threshold {
                self.restart(c);
            }
            c.next_probe = Instant::now() + period;
            return;
        }
        c.ready = ok;
        if let Some(l) = c.spec.liveness_probe.clone() {
            if self.check(&l).await {
                c.failures.2 = 0;
            } else {
                c.failures.2 += 1;
                if c.failures.2 >= l.failure_threshold.unwrap_or(3).max(1) as u32 {
                    self.restart(c);
                }
            }
        }
        c.next_probe = Instant::now() + period;
    }

    /// Kills a container that failed its probes; the loop restarts it.
    fn restart(&self, c: &mut Running) {
        if let Some(ch) = c.child.as_mut() {
            let _ = ch.start_kill();
        }
    }

    async fn check(&self, p: &Probe) -> bool {
        let Some(get) = &p.http_get else {
            return true;
        };
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n as u16,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => return false,
        };
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        let host = self.ip.to_string();
        let answer = if get.scheme.as_deref() == Some("HTTPS") {
            match cnpg_instance::https::ClientTls::from_config(probe_tls(), &host) {
                Ok(tls) => cnpg_instance::https::get(&host, port, &path, timeout, &tls, None).await,
                Err(e) => Err(e.to_string()),
            }
        } else {
            cnpg_instance::http::get(&host, port, &path, timeout).await
        };
        matches!(answer, Ok((code, _)) if (200..400).contains(&code))
    }

    /// Writes the Pod status: phase, addresses, conditions, containers.
    async fn status(
        &self,
        start_time: &str,
        phase: &str,
        inits: &[Running],
        containers: &[Running],
        terminated: bool,
        waiting: Option<&str>,
    ) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let initialized = inits.iter().all(|c| matches!(&c.last_exit, Some((0, _))));
        let ready = !containers.is_empty()
            && !terminated
            && containers.iter().all(|c| c.ready && c.child.is_some());
        let state = |c: &Running| {
            if terminated || c.child.is_none() {
                match &c.last_exit {
                    Some((code, reason)) => json!({"terminated": {
                        "exitCode": code, "reason": reason, "finishedAt": now,
                        "startedAt": c.started_at.clone().unwrap_or_else(|| now.clone())}}),
                    None => {
                        json!({"waiting": {"reason": waiting.map_or("PodInitializing", |_| "ContainerCreating"),
                                   "message": waiting.unwrap_or("")}})
                    }
                }
            } else {
                json!({"running": {"startedAt": c.started_at.clone().unwrap_or_else(|| now.clone())}})
            }
        };
        let statuses = |list: &[Running]| -> Vec<serde_json::Value> {
            list.iter()
                .map(|c| {
                    let mut status = json!({
                        "name": c.spec.name,
                        "image": c.spec.image.clone().unwrap_or_default(),
                        "imageID": "",
                        "containerID": format!("test://{}-{}", c.spec.name, c.restarts),
                        "ready": c.ready && c.child.is_some() && !terminated,
                        "started": c.started && c.child.is_some() && !terminated,
                        "restartCount": c.restarts,
                        "state": state(c),
                    });
                    // A failed run, with its message, while it is tried again.
                    if let Some((code, reason)) = &c.last_exit
                        && *code != 0
                    {
                        status["lastState"] = json!({"terminated": {
                            "exitCode": code, "reason": reason, "finishedAt": now,
                            "message": c.last_message.clone().unwrap_or_default(),
                            "startedAt": c.started_at.clone().unwrap_or_else(|| now.clone())}});
                    }
                    status
                })
                .collect()
        };
        // Containers not started yet still have a status.
        let pending: Vec<Running> = if containers.is_empty() {
            self.pod
                .spec
                .as_ref()
                .map(|s| s.containers.clone().into_iter().map(Running::new).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let shown = if containers.is_empty() {
            &pending[..]
        } else {
            containers
        };
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok {"True"} else {"False"}, "lastTransitionTime": now});
        let status = json!({"status": {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip.to_string(),
            "podIPs": [{"ip": self.ip.to_string()}],
            "startTime": start_time,
            "conditions": [
                cond("PodScheduled", true),
                cond("Initialized", initialized),
                cond("ContainersReady", ready),
                cond("Ready", ready),
            ],
            "initContainerStatuses": statuses(inits),
            "containerStatuses": statuses(shown),
        }});
        let _ = self
            .api()
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await;
    }
}

impl Running {
    fn new(spec: Container) -> Running {
        Running {
            spec,
            child: None,
            restarts: 0,
            started_at: None,
            started: false,
            ready: false,
            failures: (0, 0, 0),
            next_probe: Instant::now(),
            next_start: Instant::now(),
            last_exit: None,
            last_message: None,
        }
    }
}

fn first_delay(c: &Container) -> i32 {
    c.startup_probe
        .as_ref()
        .or(c.readiness_probe.as_ref())
        .and_then(|p| p.initial_delay_seconds)
        .unwrap_or(0)
}

/// `$(VAR)` → the value of VAR among `env` (kept as written when unknown); `$$(VAR)` → `$(VAR)`.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("$(") {
        if i > 0 && rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("$(");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find(')') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let name = &rest[i + 2..i + end];
        match env.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[i..i + end + 1]),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The children of a process (the first process of a container's namespaces).
fn children_of(pid: i32) -> Vec<i32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// kube-proxy
// ---------------------------------------------------------------------------------------

/// The addresses a listener forwards to, updated by every sync.
type Backends = Arc<Mutex<Vec<SocketAddr>>>;

/// Listeners on every Service's ClusterIP and port, forwarding to its ready endpoints.
#[derive(Default)]
struct Proxy {
    listeners: BTreeMap<SocketAddr, (JoinHandle<()>, Backends)>,
}

impl Proxy {
    async fn sync(
        &mut self,
        client: &Client,
        namespaces: &BTreeSet<String>,
        api_server: SocketAddr,
    ) -> Result<(), kube::Error> {
        let services = Api::<Service>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        // EndpointSlices cannot hold loopback addresses (the API server refuses them), so
        // the endpoints are what the controller would have put there: the ready Pods the
        // Service selects.
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let mut wanted: BTreeMap<SocketAddr, Vec<SocketAddr>> = BTreeMap::new();
        for s in &services {
            let Some(spec) = &s.spec else { continue };
            let Some(ip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|i| i.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let ns = s.namespace().unwrap_or_default();
            let name = s.name_any();
            let api_service = ns == "default" && name == "kubernetes";
            if !namespaces.contains(&ns) && !api_service {
                continue;
            }
            let selected: Vec<&Pod> = match &spec.selector {
                Some(sel) if !sel.is_empty() => pods
                    .iter()
                    .filter(|p| {
                        p.namespace().as_deref() == Some(ns.as_str())
                            && p.metadata.deletion_timestamp.is_none()
                            && sel.iter().all(|(k, v)| p.labels().get(k) == Some(v))
                            && pod_ready(p)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for port in spec.ports.iter().flatten() {
                let mut backends = Vec::new();
                for p in &selected {
                    let Some(pod_ip) = p
                        .status
                        .as_ref()
                        .and_then(|st| st.pod_ip.as_deref())
                        .and_then(|i| i.parse::<Ipv4Addr>().ok())
                    else {
                        continue;
                    };
                    if let Some(target) = target_port(p, port) {
                        backends.push(SocketAddr::from((pod_ip, target)));
                    }
                }
                if ns == "default" && name == "kubernetes" && backends.is_empty() {
                    backends.push(api_server);
                }
                wanted.insert(SocketAddr::from((ip, port.port as u16)), backends);
            }
        }
        self.listeners.retain(|addr, (task, _)| {
            let keep = wanted.contains_key(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (addr, backends) in wanted {
            if let Some((_, b)) = self.listeners.get(&addr) {
                *b.lock().expect("backends") = backends;
                continue;
            }
            let Ok(listener) = TcpListener::bind(addr).await else {
                continue;
            };
            let shared = Arc::new(Mutex::new(backends));
            let task = tokio::spawn(forward(listener, shared.clone()));
            self.listeners.insert(addr, (task, shared));
        }
        Ok(())
    }
}

/// The Pod's port a Service port forwards to: `targetPort` as a number, or the container
/// port of that name, or the Service's own port.
fn target_port(pod: &Pod, port: &k8s_openapi::api::core::v1::ServicePort) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &port.target_port {
        None => Some(port.port as u16),
        Some(IntOrString::Int(n)) => Some(*n as u16),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port as u16),
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for (task, _) in self.listeners.values() {
            task.abort();
        }
    }
}

async fn forward(listener: TcpListener, backends: Backends) {
    let mut next = 0usize;
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let target = {
            let b = backends.lock().expect("backends");
            next = next.wrapping_add(1);
            (!b.is_empty()).then(|| b[next % b.len()])
        };
        let Some(addr) = target else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(addr).await {
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expansion_as_kubernetes_does_it() {
        let env = vec![("POD_IP".to_owned(), "127.97.0.2".to_owned())];
        assert_eq!(expand("$(POD_IP),localhost", &env), "127.97.0.2,localhost");
        assert_eq!(expand("$(NOPE)", &env), "$(NOPE)");
        assert_eq!(expand("$$(POD_IP)", &env), "$(POD_IP)");
        assert_eq!(expand("plain", &env), "plain");
    }
}

/// A kubelet's HTTPS probe: TLS without verifying the server's certificate (as a kubelet
/// does) and without a client certificate.
fn probe_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the provider's protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts any server certificate; still checks the handshake's signatures.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
