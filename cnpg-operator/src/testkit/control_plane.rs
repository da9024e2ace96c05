//! A real Kubernetes control plane for tests: etcd, kube-apiserver and
//! kube-controller-manager on loopback, started by `../shared/k8s/control-plane` beside the
//! workspace (or the script `$CNPG_CONTROL_PLANE` names).
//!
//! One control plane serves every test of a test process: it starts on first use (10–20 s)
//! and stops by itself when the process ends, through a watchdog process that outlives it
//! and runs `control-plane down` (statics are never dropped, and a test may abort). Tests
//! isolate themselves with a namespace each.
//!
//! The script exists only where the project's shared folder is beside the workspace; `.ci/run`
//! always has it. Elsewhere [`ControlPlane::shared`] says in one line that the test needs it
//! and returns `None`, and the test passes without running.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    /// Outlives this process on purpose: it stops the control plane once we are gone.
    _watchdog: std::process::Child,
}

fn script() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CNPG_CONTROL_PLANE") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s/control-plane");
    p.exists().then_some(p)
}

impl ControlPlane {
    /// The control plane of this test process, started on first use; `None` (after saying
    /// so in one line) where the control-plane script is not there.
    ///
    /// Panics, with the components' logs, when the script is there but cannot start one.
    pub fn shared(test: &str) -> Option<&'static ControlPlane> {
        static CP: OnceLock<Option<ControlPlane>> = OnceLock::new();
        let cp = CP.get_or_init(|| script().map(|s| ControlPlane::start(&s)));
        if cp.is_none() {
            println!(
                "{test}: needs the real Kubernetes control plane (../shared/k8s); not here, so not run (.ci/run provides it)"
            );
        }
        cp.as_ref()
    }

    fn start(script: &Path) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("cnpg-control-plane-{}", std::process::id()));
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg("up")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash runs the control-plane script");
        assert!(
            out.status.success(),
            "control-plane up {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The watchdog: when this process is gone, stop what `up` started and clean up.
        use std::os::unix::process::CommandExt;
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; bash '{script}' down '{dir}' >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            script = script.display(),
            dir = dir.display()
        );
        let watchdog = std::process::Command::new("bash")
            .args(["-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the control plane's watchdog starts");
        ControlPlane {
            dir,
            _watchdog: watchdog,
        }
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The API server's address.
    pub fn api_server(&self) -> std::net::SocketAddr {
        let port: u16 = std::fs::read_to_string(self.dir.join("run/api.port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("the API server's port (run/api.port)");
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Where the control plane keeps its logs (`logs/kube-apiserver.log`, ...).
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// An admin client, on the caller's runtime.
    pub async fn admin(&self) -> kube::Client {
        client_from(&self.kubeconfig()).await
    }

    /// A new namespace named after `prefix`, unique in this control plane.
    pub async fn namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .expect("a namespace");
        Api::<Namespace>::all(self.admin().await)
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the namespace");
        name
    }

    /// A kubeconfig file that authenticates as ServiceAccount `sa` of `namespace` with a
    /// token the API server issues (TokenRequest): what a pod running as that account has.
    pub async fn kubeconfig_for(&self, namespace: &str, sa: &str, file: &Path) {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin().await, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            },
            ..Default::default()
        };
        // The ServiceAccount may be seconds old: the token controller is not needed, but the
        // object must exist.
        let mut token = None;
        for _ in 0..100 {
            match api
                .create_token_request(sa, &PostParams::default(), &request)
                .await
            {
                Ok(t) => {
                    token = t.status.map(|s| s.token);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let token = token.unwrap_or_else(|| panic!("no token for {namespace}/{sa}"));
        let admin = Kubeconfig::read_from(self.kubeconfig()).expect("admin kubeconfig");
        let cluster = &admin.clusters[0];
        let c = cluster.cluster.as_ref().expect("cluster entry");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {sa}, namespace: {namespace}}}\ncurrent-context: test\n",
            c.server.as_deref().expect("server"),
            c.certificate_authority_data.as_deref().expect("CA data"),
        );
        std::fs::write(file, text).expect("write the kubeconfig");
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("a readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    kube::Client::try_from(config).expect("a client")
}

/// Server-side applies every document of a multi-document YAML (as `kubectl apply
/// --server-side --force-conflicts`), resolving each kind through discovery.
pub async fn apply_yaml(client: &kube::Client, yaml: &str, field_manager: &str) {
    let docs = crate::manifests::parse_documents(yaml).expect("valid YAML");
    let params = PatchParams::apply(field_manager).force();
    for doc in docs {
        let obj: DynamicObject = serde_json::from_value(doc).expect("an object");
        let types = obj.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("a group/version/kind");
        // A CRD applied just before may take a moment to be served.
        let mut found = None;
        for _ in 0..100 {
            match kube::discovery::pinned_kind(client, &gvk).await {
                Ok(x) => {
                    found = Some(x);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let (resource, caps) = found.unwrap_or_else(|| panic!("the API does not serve {gvk:?}"));
        let name = obj.metadata.name.clone().expect("a name");
        let api: Api<DynamicObject> = match (&caps.scope, obj.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {gvk:?} {name}: {e}"));
    }
}
