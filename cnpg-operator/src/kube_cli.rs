//! `kubectl-cnpg` against a Kubernetes cluster: the same commands as upstream's plugin,
//! through the kubeconfig (`--kubeconfig`, `--context`, `-n` as kubectl reads them).
//!
//! Like upstream, the plugin changes what the operator reads and lets it act: annotations
//! on the Cluster (fencing, hibernation, restart, reload), the status (`targetPrimary` for
//! a switchover, the in-place restart token), the spec (maintenance window). Only `destroy`
//! and the restart of a replica delete objects themselves.

use crate::kube_platform::pod_ready;
use cnpg_core::api::Cluster;
use cnpg_core::fencing::Fencing;
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

/// A plugin command failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeCliError {
    /// The kubeconfig could not be used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// The API refused.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The request makes no sense.
    #[error("{0}")]
    Usage(String),
    /// Output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A client and namespace for `target`.
pub async fn connect(target: &Target) -> Result<(Client, String), KubeCliError> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| KubeCliError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| KubeCliError::Config(e.to_string()))?;
    let ns = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| KubeCliError::Config(e.to_string()))?;
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

async fn cluster(client: &Client, ns: &str, name: &str) -> Result<Cluster, KubeCliError> {
    Api::<Cluster>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| KubeCliError::Usage(format!("cluster {name} not found in namespace {ns}")))
}

async fn pods(client: &Client, ns: &str, cluster: &str) -> Result<Vec<Pod>, KubeCliError> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!(
            "{}={cluster},{}=instance",
            naming::LABEL_CLUSTER,
            naming::LABEL_POD_ROLE
        )))
        .await?
        .items)
}

async fn annotate(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    value: Option<String>,
) -> Result<(), KubeCliError> {
    Api::<Cluster>::namespaced(client.clone(), ns)
        .patch(
            name,
            &params(),
            &merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await?;
    Ok(())
}

/// `status CLUSTER`.
pub async fn status(
    client: &Client,
    ns: &str,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    let c = cluster(client, ns, name).await?;
    let st = c.status.clone().unwrap_or_default();
    writeln!(out, "Cluster Summary")?;
    writeln!(out, "Name:                 {ns}/{name}")?;
    writeln!(out, "PostgreSQL Image:     {}", crate::specs::image(&c))?;
    writeln!(
        out,
        "Primary instance:     {}",
        st.current_primary.clone().unwrap_or_default()
    )?;
    writeln!(
        out,
        "Status:               {}{}",
        st.phase.clone().unwrap_or_default(),
        st.phase_reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )?;
    writeln!(out, "Instances:            {}", c.spec.instances)?;
    writeln!(out, "Ready instances:      {}", st.ready_instances)?;
    if st.current_primary != st.target_primary {
        writeln!(
            out,
            "Switchover in progress: to {}",
            st.target_primary.clone().unwrap_or_default()
        )?;
    }
    if let Some(certs) = &st.certificates {
        writeln!(out, "\nCertificates Status")?;
        for (secret, exp) in &certs.expirations {
            writeln!(out, "{secret:<24} expires {exp}")?;
        }
    }
    // Each instance's own report, through the API server's pod proxy (as upstream).
    let pods = pods(client, ns, name).await?;
    let mut reports = Vec::new();
    for p in &pods {
        reports.push(instance_status(client, ns, &p.name_any()).await);
    }
    let primary = reports
        .iter()
        .find(|r| Some(&r.name) == st.current_primary.as_ref() && r.is_reachable());
    if let Some(p) = primary {
        writeln!(
            out,
            "Current Write LSN:    {} (Timeline: {})",
            p.current_lsn, p.timeline
        )?;
    }
    crate::local_cli::write_instances(out, primary, &reports)?;
    writeln!(out, "\nPods")?;
    writeln!(out, "{:<16} {:<10} {:<10} Node", "Name", "Role", "Ready")?;
    for p in pods {
        let role = p
            .labels()
            .get(naming::LABEL_INSTANCE_ROLE)
            .cloned()
            .unwrap_or_default();
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<16} {:<10} {:<10} {node}",
            p.name_any(),
            role,
            pod_ready(&p)
        )?;
    }
    Ok(())
}

/// `GET /pg/status` of an instance through the pod proxy; an unreachable status with the
/// reason when it cannot be read (no `pods/proxy` permission, instance down, ...).
async fn instance_status(
    client: &Client,
    ns: &str,
    pod: &str,
) -> cnpg_core::status::InstanceStatus {
    use cnpg_core::status::InstanceStatus;
    let path = format!(
        "/api/v1/namespaces/{ns}/pods/{pod}:{}/proxy/pg/status",
        crate::specs::STATUS_PORT
    );
    let request = match http::Request::get(path).body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return InstanceStatus::unreachable(pod, &e.to_string()),
    };
    match client.request_text(request).await {
        Ok(text) => serde_json::from_str(&text)
            .unwrap_or_else(|e| InstanceStatus::unreachable(pod, &format!("bad status: {e}"))),
        Err(e) => InstanceStatus::unreachable(pod, &e.to_string()),
    }
}

/// `promote CLUSTER INSTANCE`: a switchover (bypasses the failover quorum, as upstream).
pub async fn promote(
    client: &Client,
    ns: &str,
    name: &str,
    instance: &str,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    let c = cluster(client, ns, name).await?;
    let names: Vec<String> = pods(client, ns, name)
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    if !names.iter().any(|n| n == instance) {
        return Err(KubeCliError::Usage(format!(
            "{instance} is not an instance of {name} (instances: {})",
            names.join(", ")
        )));
    }
    if c.status.as_ref().and_then(|s| s.current_primary.as_deref()) == Some(instance) {
        writeln!(out, "{instance} is already the primary of {name}")?;
        return Ok(());
    }
    Api::<Cluster>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &params(),
            &merge(json!({"status": {
                "targetPrimary": instance,
                "targetPrimaryTimestamp": now(),
                "phase": "Switchover in progress",
                "phaseReason": format!("Switching over to {instance}"),
            }})),
        )
        .await?;
    writeln!(out, "{name}: switchover to {instance} requested")?;
    Ok(())
}

/// `fencing on|off CLUSTER INSTANCE|*`.
pub async fn fencing(
    client: &Client,
    ns: &str,
    name: &str,
    on: bool,
    instance: &str,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    let c = cluster(client, ns, name).await?;
    let current = c
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(naming::ANNOTATION_FENCED_INSTANCES))
        .cloned();
    let mut f =
        Fencing::parse(current.as_deref()).map_err(|e| KubeCliError::Usage(e.to_string()))?;
    if on {
        f.fence(instance);
    } else {
        f.unfence(instance).map_err(KubeCliError::Usage)?;
    }
    annotate(
        client,
        ns,
        name,
        naming::ANNOTATION_FENCED_INSTANCES,
        f.to_annotation(),
    )
    .await?;
    writeln!(
        out,
        "{name}: fencing {} for {instance}",
        if on { "on" } else { "off" }
    )?;
    Ok(())
}

/// `hibernate on|off CLUSTER`.
pub async fn hibernate(
    client: &Client,
    ns: &str,
    name: &str,
    on: bool,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    cluster(client, ns, name).await?;
    annotate(
        client,
        ns,
        name,
        naming::ANNOTATION_HIBERNATION,
        Some(if on { "on" } else { "off" }.into()),
    )
    .await?;
    writeln!(out, "{name}: hibernation {}", if on { "on" } else { "off" })?;
    Ok(())
}

/// `restart CLUSTER [INSTANCE]`: rolling restart; the primary in place; a replica's pod.
pub async fn restart(
    client: &Client,
    ns: &str,
    name: &str,
    instance: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    let c = cluster(client, ns, name).await?;
    match instance {
        None => {
            annotate(
                client,
                ns,
                name,
                naming::ANNOTATION_RESTARTED_AT,
                Some(now()),
            )
            .await?;
            writeln!(out, "{name}: rolling restart requested")?;
        }
        Some(i) if c.status.as_ref().and_then(|s| s.current_primary.as_deref()) == Some(i) => {
            let token = format!(
                "{i}@{}",
                k8s_openapi::jiff::Timestamp::now().as_millisecond()
            );
            Api::<Cluster>::namespaced(client.clone(), ns)
                .patch_status(
                    name,
                    &params(),
                    &merge(json!({"status": {
                        "haState": {"restart": token},
                        "phase": "Primary instance is being restarted in-place",
                        "phaseReason": format!("kubectl cnpg restart {name} {i}"),
                    }})),
                )
                .await?;
            writeln!(out, "{name}: restarting the primary {i} in place")?;
        }
        Some(i) => {
            Api::<Pod>::namespaced(client.clone(), ns)
                .delete(i, &DeleteParams::default())
                .await?;
            writeln!(
                out,
                "{name}: restarting {i} (its pod is recreated on its storage)"
            )?;
        }
    }
    Ok(())
}

/// `reload CLUSTER`.
pub async fn reload(
    client: &Client,
    ns: &str,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    cluster(client, ns, name).await?;
    annotate(client, ns, name, "cnpg.io/reloadedAt", Some(now())).await?;
    writeln!(out, "{name}: reload requested")?;
    Ok(())
}

/// `maintenance set|unset CLUSTER [--reusePVC]`.
pub async fn maintenance(
    client: &Client,
    ns: &str,
    name: &str,
    set: bool,
    reuse_pvc: bool,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    cluster(client, ns, name).await?;
    Api::<Cluster>::namespaced(client.clone(), ns)
        .patch(
            name,
            &params(),
            &merge(json!({"spec": {"nodeMaintenanceWindow": {"inProgress": set, "reusePVC": reuse_pvc}}})),
        )
        .await?;
    writeln!(
        out,
        "{name}: node maintenance window {}",
        if set { "set" } else { "unset" }
    )?;
    Ok(())
}

/// `destroy CLUSTER INSTANCE [--keep-pvc]`.
pub async fn destroy(
    client: &Client,
    ns: &str,
    name: &str,
    instance: &str,
    keep_pvc: bool,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    let c = cluster(client, ns, name).await?;
    let st = c.status.unwrap_or_default();
    if st.current_primary.as_deref() == Some(instance)
        || st.target_primary.as_deref() == Some(instance)
    {
        return Err(KubeCliError::Usage(format!(
            "{instance} is the primary of {name}; promote another instance first"
        )));
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let list = pvcs
        .list(&ListParams::default().labels(&format!(
            "{}={name},{}={instance}",
            naming::LABEL_CLUSTER,
            naming::LABEL_INSTANCE_NAME
        )))
        .await?;
    for p in list.items {
        if keep_pvc {
            // Detached: no longer an instance's storage (the operator makes a new one).
            pvcs.patch(
                &p.name_any(),
                &params(),
                &merge(json!({"metadata": {
                    "labels": {naming::LABEL_CLUSTER: null, naming::LABEL_INSTANCE_NAME: null},
                    "annotations": {crate::specs::ANNOTATION_PVC_STATUS: "detached"},
                    "ownerReferences": null,
                }})),
            )
            .await?;
        } else {
            pvcs.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
    }
    match Api::<Pod>::namespaced(client.clone(), ns)
        .delete(instance, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    writeln!(
        out,
        "{name}: destroyed {instance}{}",
        if keep_pvc {
            " (PVCs kept, detached)"
        } else {
            ""
        }
    )?;
    Ok(())
}

/// `report cluster CLUSTER`: the Cluster, its pods, PVCs and events as YAML (Secrets are
/// listed by name only).
pub async fn report(
    client: &Client,
    ns: &str,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    let c = cluster(client, ns, name).await?;
    let selector = ListParams::default().labels(&format!("{}={name}", naming::LABEL_CLUSTER));
    writeln!(out, "# cluster\n{}", yaml(&c))?;
    for p in Api::<Pod>::namespaced(client.clone(), ns)
        .list(&selector)
        .await?
        .items
    {
        writeln!(out, "---\n# pod {}\n{}", p.name_any(), yaml(&p))?;
    }
    for p in Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&selector)
        .await?
        .items
    {
        writeln!(out, "---\n# pvc {}\n{}", p.name_any(), yaml(&p))?;
    }
    let secrets: Vec<String> = Api::<Secret>::namespaced(client.clone(), ns)
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

fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# cannot render: {e}"))
}

/// `certificate SECRET --cnpg-cluster C --cnpg-user U`: a client certificate signed by the
/// cluster's CA, in a new `kubernetes.io/tls` Secret.
pub async fn certificate(
    client: &Client,
    ns: &str,
    secret: &str,
    name: &str,
    user: &str,
    out: &mut dyn Write,
) -> Result<(), KubeCliError> {
    let c = cluster(client, ns, name).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let ca = secrets
        .get_opt(&naming::secret_ca(name))
        .await?
        .ok_or_else(|| {
            KubeCliError::Usage(format!(
                "the CA secret {} does not exist yet",
                naming::secret_ca(name)
            ))
        })?;
    let s = crate::secrets::client_certificate(
        &c,
        &ca,
        secret,
        user,
        k8s_openapi::jiff::Timestamp::now().as_millisecond(),
    )
    .map_err(|e| KubeCliError::Usage(e.to_string()))?;
    secrets.create(&PostParams::default(), &s).await?;
    writeln!(
        out,
        "secret/{secret} created (client certificate for {user}, signed by {name}'s CA)"
    )?;
    Ok(())
}
