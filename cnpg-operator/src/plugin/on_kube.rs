//! The plugin on Kubernetes: [`KubeAccess`] reaches a Cluster through the kubeconfig
//! (`--kubeconfig`, `--context`, `-n` as kubectl reads them), and the commands that only
//! make sense there (`maintenance`, `certificate`).
//!
//! Requests go where upstream's plugin puts them: annotations on the Cluster, the status
//! (`targetPrimary` for a switchover, the in-place restart token), the spec (maintenance
//! window). Instances report themselves through the API server's pod proxy.

use super::access::{ClusterAccess, Facts, PluginError, PodLine, StatusReport};
use crate::kube::platform::pod_ready;
use crate::kube::{secrets, specs};
use async_trait::async_trait;
use cnpg_core::api::Cluster;
use cnpg_core::naming;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Where the cluster is: kubeconfig, context, namespace.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The context (default: the current one).
    pub context: Option<String>,
    /// The namespace (default: the context's).
    pub namespace: Option<String>,
}

/// A client and namespace for `target`.
pub async fn connect(target: &Target) -> Result<(Client, String), PluginError> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| PluginError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| PluginError::Config(e.to_string()))?;
    let ns = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
    Ok((client, ns))
}

/// The field manager of the plugin's changes.
pub const FIELD_MANAGER: &str = "kubectl-cnpg";

fn merge(v: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(v)
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// A Cluster on Kubernetes.
pub struct KubeAccess {
    client: Client,
    ns: String,
    name: String,
}

impl KubeAccess {
    /// The Cluster `name` where `target` points.
    pub async fn connect(target: &Target, name: &str) -> Result<Self, PluginError> {
        let (client, ns) = connect(target).await?;
        Ok(KubeAccess {
            client,
            ns,
            name: name.to_owned(),
        })
    }

    fn clusters(&self) -> Api<Cluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn cluster(&self) -> Result<Cluster, PluginError> {
        self.clusters().get_opt(&self.name).await?.ok_or_else(|| {
            PluginError::Usage(format!(
                "cluster {} not found in namespace {}",
                self.name, self.ns
            ))
        })
    }

    /// The cluster's instance Pods.
    async fn pods(&self) -> Result<Vec<Pod>, PluginError> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels(&format!(
                "{}={},{}=instance",
                naming::LABEL_CLUSTER,
                self.name,
                naming::LABEL_POD_ROLE
            )))
            .await?
            .items)
    }

    async fn pvcs(&self, selector: &str) -> Result<Vec<PersistentVolumeClaim>, PluginError> {
        Ok(
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns)
                .list(&ListParams::default().labels(selector))
                .await?
                .items,
        )
    }

    async fn patch_status(&self, status: serde_json::Value) -> Result<(), PluginError> {
        self.clusters()
            .patch_status(&self.name, &params(), &merge(json!({ "status": status })))
            .await?;
        Ok(())
    }
}

#[async_trait(?Send)]
impl ClusterAccess for KubeAccess {
    async fn facts(&self) -> Result<Facts, PluginError> {
        let c = self.cluster().await?;
        let st = c.status.unwrap_or_default();
        // An instance is a Pod, or storage whose Pod is gone (it can still be destroyed).
        let mut instances: Vec<String> = self.pods().await?.iter().map(|p| p.name_any()).collect();
        let storage = format!("{}={}", naming::LABEL_CLUSTER, self.name);
        for pvc in self.pvcs(&storage).await? {
            if let Some(i) = pvc.labels().get(naming::LABEL_INSTANCE_NAME)
                && !instances.contains(i)
            {
                instances.push(i.clone());
            }
        }
        instances.sort();
        Ok(Facts {
            name: self.name.clone(),
            instances,
            current_primary: st.current_primary,
            target_primary: st.target_primary,
            annotations: c.metadata.annotations.unwrap_or_default(),
        })
    }

    async fn annotate(&self, key: &str, value: Option<String>) -> Result<(), PluginError> {
        self.clusters()
            .patch(
                &self.name,
                &params(),
                &merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await?;
        Ok(())
    }

    async fn switchover(&self, instance: &str) -> Result<(), PluginError> {
        self.patch_status(json!({
            "targetPrimary": instance,
            "targetPrimaryTimestamp": now(),
            "phase": "Switchover in progress",
            "phaseReason": format!("Switching over to {instance}"),
        }))
        .await
    }

    async fn restart_instance(&self, instance: &str, primary: bool) -> Result<String, PluginError> {
        if primary {
            let token = format!(
                "{instance}@{}",
                k8s_openapi::jiff::Timestamp::now().as_millisecond()
            );
            self.patch_status(json!({
                "haState": {"restart": token},
                "phase": "Primary instance is being restarted in-place",
                "phaseReason": format!("kubectl cnpg restart {} {instance}", self.name),
            }))
            .await?;
            return Ok(format!("restarting the primary {instance} in place"));
        }
        Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .delete(instance, &DeleteParams::default())
            .await?;
        Ok(format!(
            "restarting {instance} (its pod is recreated on its storage)"
        ))
    }

    async fn destroy_instance(&self, instance: &str) -> Result<(), PluginError> {
        let selector = format!(
            "{}={},{}={instance}",
            naming::LABEL_CLUSTER,
            self.name,
            naming::LABEL_INSTANCE_NAME
        );
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.ns);
        for p in self.pvcs(&selector).await? {
            api.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
        match Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .delete(instance, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_backup(
        &self,
        backup: &cnpg_core::api::backup::Backup,
    ) -> Result<(), PluginError> {
        // The cluster must exist: a Backup of nothing would only fail later.
        self.cluster().await?;
        let name = backup.metadata.name.clone().unwrap_or_default();
        let api = Api::<cnpg_core::api::backup::Backup>::namespaced(self.client.clone(), &self.ns);
        match api.create(&PostParams::default(), backup).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(PluginError::Usage(format!(
                "backup {name} already exists in namespace {}: give another --backup-name",
                self.ns
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_backup(
        &self,
        name: &str,
    ) -> Result<Option<cnpg_core::api::backup::Backup>, PluginError> {
        Ok(
            Api::<cnpg_core::api::backup::Backup>::namespaced(self.client.clone(), &self.ns)
                .get_opt(name)
                .await?,
        )
    }

    async fn status(&self) -> Result<StatusReport, PluginError> {
        let c = self.cluster().await?;
        let st = c.status.clone().unwrap_or_default();
        let pods = self.pods().await?;
        // Each instance's own report, through the API server's pod proxy (as upstream),
        // all at once: one unreachable pod must not hold up the others.
        let access = self.status_access(&c).await;
        let reports = futures::future::join_all(
            pods.iter()
                .map(|p| instance_status(&self.client, p, &access)),
        )
        .await;
        Ok(StatusReport {
            name: format!("{}/{}", self.ns, self.name),
            image: Some(specs::image(&c)),
            current_primary: st.current_primary.clone(),
            target_primary: st.target_primary.clone(),
            why_primary: None,
            phase: st.phase.clone().unwrap_or_default(),
            phase_reason: st.phase_reason.clone().unwrap_or_default(),
            instances: c.spec.instances as usize,
            ready: st.ready_instances as usize,
            services: None,
            metrics: vec![],
            certificates: st
                .certificates
                .map(|c| c.expirations.into_iter().collect())
                .unwrap_or_default(),
            reports,
            pods: pods
                .iter()
                .map(|p| PodLine {
                    name: p.name_any(),
                    role: p
                        .labels()
                        .get(naming::LABEL_INSTANCE_ROLE)
                        .cloned()
                        .unwrap_or_default(),
                    ready: pod_ready(p),
                    node: p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                })
                .collect(),
            events: Vec::new(),
            events_source: None,
            recovery: st.recovery_progress.clone(),
            poolers: Vec::new(),
            backups: c
                .spec
                .backup
                .as_ref()
                .is_some_and(|b| b.barman_object_store.is_some())
                .then(|| cnpg_core::backup::Summary {
                    first_recoverability_point: st.first_recoverability_point.clone(),
                    last_successful_backup: st.last_successful_backup.clone(),
                    last_failed_backup: st.last_failed_backup.clone(),
                }),
        })
    }

    /// The Cluster, its pods, PVCs and Secrets' names as YAML on `out` (`output` is for
    /// local clusters' report folders).
    async fn report(
        &self,
        _output: Option<PathBuf>,
        out: &mut dyn Write,
    ) -> Result<(), PluginError> {
        let c = self.cluster().await?;
        let selector =
            ListParams::default().labels(&format!("{}={}", naming::LABEL_CLUSTER, self.name));
        writeln!(out, "# cluster\n{}", yaml(&c))?;
        for p in Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&selector)
            .await?
            .items
        {
            writeln!(out, "---\n# pod {}\n{}", p.name_any(), yaml(&p))?;
        }
        for p in Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns)
            .list(&selector)
            .await?
            .items
        {
            writeln!(out, "---\n# pvc {}\n{}", p.name_any(), yaml(&p))?;
        }
        let secrets: Vec<String> = Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .list(&selector)
            .await?
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        writeln!(
            out,
            "---\n# secrets (contents redacted)\n{}",
            secrets.join("\n")
        )?;
        Ok(())
    }
}

/// What `status` needs to read the instance managers' `/pg/status`: the cluster's status
/// token (from `<cluster>-instance-passwords`; reading it needs `get` on that Secret) and,
/// to reach a pod directly, its server CA. What is missing is said in the instances'
/// errors, not here: the rest of the status is still worth printing.
struct StatusAccess {
    token: Result<String, String>,
    tls: Result<cnpg_instance::https::ClientTls, String>,
}

impl KubeAccess {
    async fn status_access(&self, c: &Cluster) -> StatusAccess {
        let api = Api::<Secret>::namespaced(self.client.clone(), &self.ns);
        let read = async |name: String, key: &str| -> Result<String, String> {
            let s = api
                .get(&name)
                .await
                .map_err(|e| format!("cannot read secret {name}: {e}"))?;
            secrets::value(&s, key).map_err(|e| e.to_string())
        };
        let token = read(secrets::passwords_secret(&self.name), "status-token").await;
        let tls = read(secrets::CertificateSecrets::of(c).server_ca, "ca.crt")
            .await
            .and_then(|ca| {
                cnpg_instance::https::ClientTls::new(
                    &ca,
                    None,
                    &cnpg_core::naming::service_rw(&self.name),
                )
                .map_err(|e| e.to_string())
            });
        StatusAccess { token, tls }
    }
}

/// `GET /pg/status` of an instance through the pod proxy (over HTTPS, with the status
/// token); an unreachable status with the reason when it cannot be read (no `pods/proxy`
/// permission, no token, instance down, ...).
///
/// When the API server cannot proxy to the pod (it refuses some pod addresses, loopback
/// ones among them, and a private cluster may not route to pods at all), the pod's own
/// address is tried directly: that works wherever the plugin runs inside the pod network.
async fn instance_status(
    client: &Client,
    pod: &Pod,
    access: &StatusAccess,
) -> cnpg_core::status::InstanceStatus {
    use cnpg_core::status::InstanceStatus;
    let name = pod.name_any();
    let token = match &access.token {
        Ok(t) => t.as_str(),
        Err(e) => return InstanceStatus::unreachable(&name, e),
    };
    let ns = pod.namespace().unwrap_or_default();
    let path = format!(
        "/api/v1/namespaces/{ns}/pods/https:{name}:{}/proxy/pg/status",
        specs::STATUS_PORT
    );
    let request = match http::Request::get(path)
        .header(cnpg_instance::https::TOKEN_HEADER, token)
        .body(Vec::new())
    {
        Ok(r) => r,
        Err(e) => return InstanceStatus::unreachable(&name, &e.to_string()),
    };
    let proxied = match client.request_text(request).await {
        Ok(text) => {
            return serde_json::from_str(&text).unwrap_or_else(|e| {
                InstanceStatus::unreachable(&name, &format!("bad status: {e}"))
            });
        }
        Err(e) => e.to_string(),
    };
    let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
        return InstanceStatus::unreachable(&name, &proxied);
    };
    let tls = match &access.tls {
        Ok(t) => t,
        Err(e) => {
            return InstanceStatus::unreachable(&name, &format!("{proxied}; directly: {e}"));
        }
    };
    match cnpg_instance::https::get(
        &ip,
        specs::STATUS_PORT as u16,
        "/pg/status",
        std::time::Duration::from_secs(5),
        tls,
        Some(token),
    )
    .await
    {
        Ok((200, body)) => serde_json::from_str(&body)
            .unwrap_or_else(|e| InstanceStatus::unreachable(&name, &format!("bad status: {e}"))),
        Ok((code, body)) => InstanceStatus::unreachable(
            &name,
            &format!("{proxied}; at {ip} directly: HTTP {code} {}", body.trim()),
        ),
        Err(direct) => {
            InstanceStatus::unreachable(&name, &format!("{proxied}; at {ip} directly: {direct}"))
        }
    }
}

/// `v` as YAML (for `--dry-run` and reports), or a comment saying why it cannot be.
pub(crate) fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# cannot render: {e}"))
}

/// `maintenance set|unset CLUSTER [--reusePVC]` (Kubernetes only: there are no nodes to
/// drain locally).
pub async fn maintenance(
    access: &KubeAccess,
    set: bool,
    reuse_pvc: bool,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    access.cluster().await?;
    access
        .clusters()
        .patch(
            &access.name,
            &params(),
            &merge(json!({"spec": {"nodeMaintenanceWindow": {"inProgress": set, "reusePVC": reuse_pvc}}})),
        )
        .await?;
    writeln!(
        out,
        "{}: node maintenance window {}",
        access.name,
        if set { "set" } else { "unset" }
    )?;
    Ok(())
}

/// `certificate SECRET --cnpg-cluster C --cnpg-user U`: a client certificate signed by the
/// cluster's CA, in a new `kubernetes.io/tls` Secret.
pub async fn certificate(
    access: &KubeAccess,
    secret: &str,
    user: &str,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let c = access.cluster().await?;
    let name = &access.name;
    let secrets_api: Api<Secret> = Api::namespaced(access.client.clone(), &access.ns);
    // Signed by the CA PostgreSQL verifies clients with: the user's clientCASecret, or ours.
    let ca_name = secrets::CertificateSecrets::of(&c).client_ca;
    let ca = secrets_api.get_opt(&ca_name).await?.ok_or_else(|| {
        PluginError::Usage(format!("the client CA secret {ca_name} does not exist yet"))
    })?;
    let s = secrets::client_certificate(
        &c,
        &ca,
        secret,
        user,
        k8s_openapi::jiff::Timestamp::now().as_millisecond(),
    )
    .map_err(|e| PluginError::Usage(e.to_string()))?;
    secrets_api.create(&PostParams::default(), &s).await?;
    writeln!(
        out,
        "secret/{secret} created (client certificate for {user}, signed by {name}'s CA)"
    )?;
    Ok(())
}

/// `psql CLUSTER [--replica] -- ARGS` on Kubernetes, as upstream: the `kubectl exec` into
/// the primary's pod (a replica's with `replica`) that runs psql there over the local
/// socket, as `postgres` unless ARGS name a user ([`run_kubectl`] runs it).
pub async fn psql(
    access: &KubeAccess,
    target: &Target,
    replica: bool,
    args: &[String],
) -> Result<Vec<String>, PluginError> {
    let pods: Vec<Pod> = Api::<Pod>::namespaced(access.client.clone(), &access.ns)
        .list(&ListParams::default().labels(&format!("{}={}", naming::LABEL_CLUSTER, access.name)))
        .await?
        .items;
    psql_invocation(&pods, target, &access.ns, replica, args)
}

/// What `logs cluster` asks of each container's log.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// The last lines only (all when `None`).
    pub tail: Option<i64>,
    /// Keep streaming.
    pub follow: bool,
    /// Each line with the time the container wrote it.
    pub timestamps: bool,
}

/// `logs cluster NAME` on Kubernetes, as upstream: the logs of every container of the
/// cluster's pods, read through the API server (`pods/log`), each line prefixed
/// `[pod/POD/CONTAINER]` as `kubectl logs --prefix` does. Pod after pod; with `follow`,
/// all streams at once, lines written as they arrive, until every one ends.
pub async fn logs(
    access: &KubeAccess,
    opts: &LogOptions,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    access.cluster().await?;
    let api: Api<Pod> = Api::namespaced(access.client.clone(), &access.ns);
    let pods = api
        .list(&ListParams::default().labels(&format!("{}={}", naming::LABEL_CLUSTER, access.name)))
        .await?
        .items;
    let params = |container: &str| kube::api::LogParams {
        container: Some(container.to_owned()),
        follow: opts.follow,
        tail_lines: opts.tail,
        timestamps: opts.timestamps,
        ..Default::default()
    };
    let sources: Vec<(String, String)> = pods
        .iter()
        .flat_map(|p| {
            let pod = p.name_any();
            p.spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(move |c| (pod.clone(), c.name.clone()))
        })
        .collect();
    if !opts.follow {
        for (pod, container) in &sources {
            match api.logs(pod, &params(container)).await {
                Ok(text) => {
                    for line in text.lines() {
                        writeln!(out, "[pod/{pod}/{container}] {line}")?;
                    }
                }
                // A pod not started yet has no log: say so and go on with the others.
                Err(e) => writeln!(out, "[pod/{pod}/{container}] (no log: {e})")?,
            }
        }
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    for (pod, container) in sources {
        let (api, tx, lp) = (api.clone(), tx.clone(), params(&container));
        tokio::spawn(async move {
            use futures::{AsyncBufReadExt, TryStreamExt};
            let prefix = format!("[pod/{pod}/{container}]");
            let mut lines = match api.log_stream(&pod, &lp).await {
                Ok(s) => s.lines(),
                Err(e) => {
                    let _ = tx.send(format!("{prefix} (no log: {e})")).await;
                    return;
                }
            };
            while let Ok(Some(line)) = lines.try_next().await {
                if tx.send(format!("{prefix} {line}")).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    while let Some(line) = rx.recv().await {
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

/// Runs a kubectl command line with this terminal; its exit status.
pub fn run_kubectl(argv: &[String]) -> Result<i32, PluginError> {
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|e| {
            PluginError::Usage(format!(
                "psql on Kubernetes runs `kubectl exec`, which could not start: {e}; install kubectl"
            ))
        })?;
    Ok(status.code().unwrap_or(1))
}

/// The `kubectl exec` command line [`psql`] runs: into the pod of the wanted role, its
/// `postgres` container, with a terminal and stdin when this process has them.
fn psql_invocation(
    pods: &[Pod],
    target: &Target,
    ns: &str,
    replica: bool,
    args: &[String],
) -> Result<Vec<String>, PluginError> {
    use std::io::IsTerminal;
    let role = if replica { "replica" } else { "primary" };
    let pod = pods
        .iter()
        .find(|p| {
            p.labels()
                .get(naming::LABEL_INSTANCE_ROLE)
                .map(String::as_str)
                == Some(role)
        })
        .map(|p| p.name_any())
        .ok_or_else(|| {
            PluginError::Usage(format!(
                "no {role} pod of this cluster in namespace {ns} (pods: {})",
                pods.iter()
                    .map(|p| p.name_any())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let mut argv: Vec<String> = vec!["kubectl".into(), "exec".into()];
    if let Some(k) = &target.kubeconfig {
        argv.extend(["--kubeconfig".into(), k.display().to_string()]);
    }
    if let Some(c) = &target.context {
        argv.extend(["--context".into(), c.clone()]);
    }
    if std::io::stdin().is_terminal() {
        argv.push("-t".into());
    }
    argv.extend([
        "-i".into(),
        "-n".into(),
        ns.into(),
        "-c".into(),
        "postgres".into(),
        pod,
    ]);
    argv.extend(["--".into(), "psql".into()]);
    if !args
        .iter()
        .any(|a| a == "-U" || a.starts_with("--username"))
    {
        argv.extend(["-U".into(), "postgres".into()]);
    }
    argv.extend(args.iter().cloned());
    Ok(argv)
}

/// `pgbench CLUSTER [--job-name J] [--db-name D] [--dry-run] -- ARGS` on Kubernetes, as
/// upstream: a Job running pgbench with ARGS against the `-rw` Service, as the application
/// user (its Secret), with the cluster's image; `dry_run` prints it instead.
pub async fn pgbench(
    access: &KubeAccess,
    (job_name, db_name): (Option<&str>, &str),
    args: &[String],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let c = access.cluster().await?;
    let name = &access.name;
    let job_name = job_name.map_or_else(
        || {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("{name}-pgbench-{:06}", nanos % 1_000_000)
        },
        str::to_owned,
    );
    let job = pgbench_job(&c, &access.ns, &job_name, db_name, args)?;
    if dry_run {
        write!(out, "{}", yaml(&job))?;
        return Ok(());
    }
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(access.client.clone(), &access.ns)
        .create(&PostParams::default(), &job)
        .await?;
    writeln!(
        out,
        "job/{job_name} created; follow it with kubectl logs -n {} -f job/{job_name}",
        access.ns
    )?;
    Ok(())
}

/// The Job [`pgbench`] creates.
fn pgbench_job(
    c: &Cluster,
    ns: &str,
    job_name: &str,
    db_name: &str,
    args: &[String],
) -> Result<k8s_openapi::api::batch::v1::Job, PluginError> {
    let cluster = c.name_any();
    let app = naming::secret_app(&cluster);
    let from_app = |key: &str| json!({"secretKeyRef": {"name": app, "key": key}});
    let labels = json!({
        "app.kubernetes.io/name": "pgbench",
        "app.kubernetes.io/instance": job_name,
        naming::LABEL_CLUSTER: cluster,
    });
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name, "namespace": ns, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "pgbench",
                        "image": specs::image(c),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["pgbench"],
                        "args": args,
                        "env": [
                            {"name": "PGHOST", "value": naming::service_rw(&cluster)},
                            {"name": "PGPORT", "value": "5432"},
                            {"name": "PGDATABASE", "value": db_name},
                            {"name": "PGUSER", "valueFrom": from_app("username")},
                            {"name": "PGPASSWORD", "valueFrom": from_app("password")},
                            {"name": "PGSSLMODE", "value": "require"},
                        ],
                    }],
                }
            }
        }
    }))
    .map_err(|e| PluginError::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, role: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.labels =
            Some([(naming::LABEL_INSTANCE_ROLE.to_owned(), role.to_owned())].into());
        p
    }

    #[test]
    fn psql_execs_into_the_pod_of_the_role_asked_as_postgres() {
        let pods = [pod("pg-1", "replica"), pod("pg-2", "primary")];
        let target = Target {
            kubeconfig: Some("/k".into()),
            context: Some("c".into()),
            namespace: Some("db".into()),
        };
        let argv = psql_invocation(
            &pods,
            &target,
            "db",
            false,
            &["-c".into(), "SELECT 1".into()],
        )
        .expect("a primary");
        let line = argv.join(" ");
        assert!(
            line.starts_with("kubectl exec --kubeconfig /k --context c "),
            "{line}"
        );
        assert!(
            line.ends_with("-i -n db -c postgres pg-2 -- psql -U postgres -c SELECT 1"),
            "{line}"
        );
        let argv = psql_invocation(
            &pods,
            &Target::default(),
            "db",
            true,
            &["-U".into(), "app".into()],
        )
        .expect("a replica");
        assert!(argv.join(" ").ends_with("pg-1 -- psql -U app"), "{argv:?}");
        let e = psql_invocation(&[pod("pg-1", "primary")], &target, "db", true, &[])
            .expect_err("no replica");
        assert!(
            e.to_string()
                .contains("no replica pod of this cluster in namespace db (pods: pg-1)"),
            "{e}"
        );
    }
}
