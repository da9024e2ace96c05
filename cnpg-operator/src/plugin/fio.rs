//! `fio NAME`: how fast the storage under PostgreSQL is, measured with fio.
//!
//! On Kubernetes, as upstream's plugin does it: a PVC, a ConfigMap holding the fio job and
//! a Deployment running fio on that PVC (an image that serves its graphs on port 8000),
//! all named NAME, in the namespace; `--dry-run` prints them instead. Locally there is
//! nothing to deploy: Debian's `fio` runs the same kinds of job in the instance's own
//! directory (the primary's by default) and the figures are printed.
//!
//! The jobs are the three a database leans on: sequential reads (scans, base backups),
//! random 8 kB reads (index lookups), random 8 kB writes each followed by fdatasync
//! (commits, as WAL flushes them).

use super::access::PluginError;
use super::on_kube::yaml;
use super::on_local::LocalAccess;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, PostParams};
use std::io::Write;

/// The image upstream's `fio` command deploys: fio with a small web server for its logs.
const FIO_IMAGE: &str = "wallnerryan/fiotools-aio:latest";

/// The job file: the three jobs one after the other (`stonewall`), in `directory`.
fn job(directory: &str, size: &str, runtime: u32, kubernetes: bool) -> String {
    // In a pod the volume is a real block device: direct I/O through libaio, as upstream.
    // Locally the directory may be on tmpfs, which has no O_DIRECT: buffered, synchronous.
    let engine = if kubernetes {
        "ioengine=libaio\ndirect=1\niodepth=32\n"
    } else {
        "ioengine=psync\n"
    };
    format!(
        "[global]\ndirectory={directory}\nsize={size}\nruntime={runtime}\ntime_based=1\n\
         {engine}end_fsync=1\n\n\
         [sequential-read]\nrw=read\nbs=1m\nstonewall\n\n\
         [random-read-8k]\nrw=randread\nbs=8k\nstonewall\n\n\
         [random-write-8k-fdatasync]\nrw=randwrite\nbs=8k\nfdatasync=1\nstonewall\n"
    )
}

/// Locally: fio in `instance`'s directory (the primary's when none), its figures printed.
pub(crate) fn local(
    access: &LocalAccess,
    instance: Option<&str>,
    size: &str,
    runtime: u32,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let status = access.read_status()?;
    let name = match instance {
        Some(i) => {
            if !status.instances.iter().any(|x| x.name == i) {
                return Err(PluginError::Usage(format!(
                    "no instance {i} in this cluster (it has {})",
                    status
                        .instances
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            i.to_owned()
        }
        None => status.state.current_primary.clone().ok_or_else(|| {
            PluginError::Usage("the cluster has no primary yet; name one with --instance".into())
        })?,
    };
    let scratch = access.layout().instance(&name).join("fio-scratch");
    std::fs::create_dir_all(&scratch)?;
    let job_file = scratch.join("job.fio");
    std::fs::write(
        &job_file,
        job(&scratch.to_string_lossy(), size, runtime, false),
    )?;
    writeln!(
        out,
        "fio in {} ({name}'s storage): 3 jobs of {runtime} s, {size} each",
        scratch.display()
    )?;
    let result = std::process::Command::new("fio")
        .arg("--output-format=json")
        .arg(&job_file)
        .output();
    // Whatever happened, the files go: they may be as large as --size.
    let _ = std::fs::remove_dir_all(&scratch);
    let output = result.map_err(|e| {
        PluginError::Usage(format!(
            "cannot run fio: {e} (install it: apt-get install fio)"
        ))
    })?;
    if !output.status.success() {
        return Err(PluginError::Usage(format!(
            "fio failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| PluginError::Usage(format!("fio's output is not JSON: {e}")))?;
    for line in summary(&report) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// One line per job: IOPS, bandwidth, mean and 99th-percentile completion latency.
fn summary(report: &serde_json::Value) -> Vec<String> {
    let empty = Vec::new();
    let jobs = report["jobs"].as_array().unwrap_or(&empty);
    jobs.iter()
        .map(|j| {
            let name = j["jobname"].as_str().unwrap_or("?");
            let side = if j["write"]["io_bytes"].as_u64().unwrap_or(0) > 0 {
                &j["write"]
            } else {
                &j["read"]
            };
            let iops = side["iops"].as_f64().unwrap_or(0.0);
            let mib = side["bw_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0;
            let mean_us = side["clat_ns"]["mean"].as_f64().unwrap_or(0.0) / 1000.0;
            let p99_us = side["clat_ns"]["percentile"]["99.000000"]
                .as_f64()
                .unwrap_or(0.0)
                / 1000.0;
            let sync = j["sync"]["lat_ns"]["mean"]
                .as_f64()
                .filter(|m| *m > 0.0)
                .map_or(String::new(), |m| {
                    format!(", fdatasync {:.0} µs mean", m / 1000.0)
                });
            format!(
                "{name:<28} {iops:>10.0} IOPS {mib:>9.1} MiB/s   latency {mean_us:.0} µs mean, {p99_us:.0} µs p99{sync}"
            )
        })
        .collect()
}

/// On Kubernetes: the PVC, ConfigMap and Deployment named `name`, created, or printed
/// with `dry_run`.
pub(crate) async fn kubernetes(
    client: Client,
    ns: &str,
    name: &str,
    (storage_class, pvc_size): (Option<&str>, &str),
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), PluginError> {
    let (pvc, cm, deployment) = objects(ns, name, storage_class, pvc_size)?;
    if dry_run {
        write!(
            out,
            "---\n{}---\n{}---\n{}",
            yaml(&pvc),
            yaml(&cm),
            yaml(&deployment)
        )?;
        return Ok(());
    }
    let pp = PostParams::default();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&pp, &pvc)
        .await?;
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&pp, &cm)
        .await?;
    Api::<Deployment>::namespaced(client, ns)
        .create(&pp, &deployment)
        .await?;
    writeln!(
        out,
        "persistentvolumeclaim/{name}, configmap/{name} and deployment/{name} created; \
         its figures: kubectl port-forward -n {ns} deployment/{name} 8000 and open \
         http://localhost:8000; remove it all with kubectl delete -n {ns} \
         deployment/{name} configmap/{name} pvc/{name}"
    )?;
    Ok(())
}

/// What `kubernetes` creates.
fn objects(
    ns: &str,
    name: &str,
    storage_class: Option<&str>,
    pvc_size: &str,
) -> Result<(PersistentVolumeClaim, ConfigMap, Deployment), PluginError> {
    if cnpg_core::quantity::Quantity::parse(pvc_size).is_err() {
        return Err(PluginError::Usage(format!(
            "--pvcSize {pvc_size:?} is not a size; write it as Kubernetes does, e.g. 2Gi"
        )));
    }
    let pvc = serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": pvc_size}},
            "storageClassName": storage_class,
        }
    });
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"job": job("/data", "1G", 60, true)},
    });
    let labels = serde_json::json!({
        "app.kubernetes.io/name": "fio",
        "app.kubernetes.io/instance": name,
    });
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "fio",
                        "image": FIO_IMAGE,
                        "env": [
                            {"name": "JOBFILES", "value": "/job/job"},
                            {"name": "PLOTNAME", "value": "job"},
                        ],
                        "ports": [{"name": "http", "containerPort": 8000}],
                        "readinessProbe": {
                            "tcpSocket": {"port": 8000},
                            "initialDelaySeconds": 30,
                            "periodSeconds": 10,
                        },
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/data"},
                            {"name": "job", "mountPath": "/job"},
                            {"name": "tmp", "mountPath": "/tmp/fio-data"},
                        ],
                    }],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": name}},
                        {"name": "job", "configMap": {"name": name}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                }
            }
        }
    });
    Ok((typed(pvc)?, typed(cm)?, typed(deployment)?))
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, PluginError> {
    serde_json::from_value(v).map_err(|e| PluginError::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_runs_the_three_kinds_of_io_one_after_the_other() {
        let j = job("/data", "1G", 60, true);
        for line in [
            "directory=/data",
            "size=1G",
            "runtime=60",
            "ioengine=libaio",
            "direct=1",
            "rw=read",
            "rw=randread",
            "rw=randwrite",
            "fdatasync=1",
        ] {
            assert!(j.lines().any(|l| l == line), "{line}: {j}");
        }
        assert_eq!(j.matches("stonewall").count(), 3);
        let local = job("/x", "8M", 1, false);
        assert!(local.contains("ioengine=psync") && !local.contains("direct=1"));
    }

    #[test]
    fn the_objects_are_named_after_the_command_and_refuse_a_bad_size() {
        let (pvc, cm, d) = objects("ns", "bench", Some("fast"), "5Gi").expect("objects");
        let spec = pvc.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.and_then(|r| r.requests).expect("requests")["storage"].0,
            "5Gi"
        );
        assert!(cm.data.expect("data")["job"].contains("directory=/data"));
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.containers[0].image.as_deref(), Some(FIO_IMAGE));
        let e = objects("ns", "bench", None, "lots").expect_err("a bad size");
        assert!(e.to_string().contains("--pvcSize"), "{e}");
    }
}
