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
use cnpg_operator::testkit::e2e::{
    Operator, app_client, event_reasons, install, installed, kubelet, plugin, pod_report,
    rw_target, settled, status_of, wait_for,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, PostParams};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Stops the writer and checks that every row it had acknowledged is there; returns them.
async fn no_acknowledged_row_lost(
    writer: cnpg_operator::testkit::writer::Writer,
    target: cnpg_operator::testkit::writer::Target,
) -> Vec<i64> {
    let acked = tokio::task::block_in_place(|| writer.finish());
    let rows = tokio::task::spawn_blocking(move || target.rows())
        .await
        .expect("read the rows");
    let lost: Vec<i64> = acked
        .iter()
        .filter(|n| !rows.contains(n))
        .copied()
        .collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    acked
}

/// After a fault or a request moved the primary away from `from`: waits until the
/// cluster settles on another primary and the writer commits through it again; returns
/// that primary.
async fn moved_on(
    admin: &kube::Client,
    ns: &str,
    op: &Operator,
    writer: &cnpg_operator::testkit::writer::Writer,
    what: &str,
    from: &str,
) -> String {
    let now = settled(admin, ns, "cluster-sync", op, what, Some(from)).await;
    assert_ne!(now, from, "{what}: another instance is primary");
    let before = writer.count();
    tokio::task::block_in_place(|| writer.wait_for_more(before + 20, Duration::from_secs(120)));
    now
}

/// An object's uid.
fn uid<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_default()
}

/// Waits until `name` exists again as another object than the one whose uid was `before`.
async fn replaced<K>(api: &Api<K>, name: &str, before: &str, op: &Operator)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("{name} made again");
    wait_for(&what, Duration::from_secs(300), op, || async {
        match api.get_opt(name).await {
            Ok(Some(o)) if uid(&o) != before => Ok(()),
            other => Err(format!("{:?}", other.map(|o| o.map(|o| uid(&o))))),
        }
    })
    .await;
}

/// The operator under test: this build's.
const OPERATOR: &str = env!("CARGO_BIN_EXE_cnpg-operator");

fn instance_binary() -> &'static Path {
    cnpg_instance::testkit::instance_binary(false)
}

/// The example Cluster running as a user would run it: the installation in a fresh
/// namespace named after `prefix`, a test kubelet, operator replicas with these
/// identities (their failure messages carry the pods' logs), and the Cluster applied.
/// The temporary directory must outlive the rest.
async fn deployed(
    cp: &ControlPlane,
    prefix: &str,
    identities: &[&str],
    archive_to: Option<&str>,
    spec: serde_json::Value,
) -> (
    tempfile::TempDir,
    String,
    std::sync::Arc<cnpg_operator::testkit::kubelet::Kubelet>,
    Vec<Operator>,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ns, kubeconfig) = installed(cp, prefix, tmp.path()).await;
    let kubelet =
        std::sync::Arc::new(kubelet(cp, &ns, &tmp.path().join("kubelet"), instance_binary()).await);
    let ops = identities
        .iter()
        .map(|id| {
            let mut op =
                Operator::start_named(Path::new(OPERATOR), &kubeconfig, &ns, tmp.path(), id);
            let k = kubelet.clone();
            op.kubelet_logs = Some(Box::new(move || k.logs(25)));
            op
        })
        .collect();
    apply_cluster(cp, &ns, archive_to, spec).await;
    (tmp, ns, kubelet, ops)
}

/// The bucket a test cluster archives its WAL to, and the credentials the S3 server takes.
const ARCHIVE_BUCKET: &str = "archive";

/// The example Cluster, in `namespace`; archiving its WAL to the S3 server at
/// `archive_to` (`s3://archive/<namespace>`, gzip, two at a time) when given, with
/// credentials from a Secret of its own as a user gives them.
async fn apply_cluster(
    cp: &ControlPlane,
    namespace: &str,
    archive_to: Option<&str>,
    spec: serde_json::Value,
) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster-sync-required.yaml"),
    )
    .expect("example");
    let mut doc = cnpg_operator::manifests::parse_documents(&text).expect("yaml")[0].clone();
    doc["metadata"]["namespace"] = serde_json::json!(namespace);
    // The application owner logs in to `postgres` with a client certificate (`kubectl cnpg
    // certificate`); to `app` with its password, as before.
    doc["spec"]["postgresql"]["pg_hba"] = serde_json::json!(["hostssl postgres app all cert"]);
    for (k, v) in spec.as_object().into_iter().flatten() {
        doc["spec"][k] = v.clone();
    }
    if let Some(endpoint) = archive_to {
        let creds = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "archive-creds", "namespace": namespace},
            "stringData": {"ID": "test-key", "SECRET": "test-secret-key", "REGION": "us-east-1"}
        });
        apply_yaml(&cp.admin().await, &creds.to_string(), "test-user").await;
        let sel = |key: &str| serde_json::json!({"name": "archive-creds", "key": key});
        doc["spec"]["backup"] = serde_json::json!({"barmanObjectStore": {
            "destinationPath": format!("s3://{ARCHIVE_BUCKET}/{namespace}"),
            "endpointURL": endpoint,
            "s3Credentials": {
                "accessKeyId": sel("ID"), "secretAccessKey": sel("SECRET"), "region": sel("REGION")
            },
            "wal": {"compression": "gzip", "maxParallel": 2}
        }});
    }
    let yaml = serde_json::to_string(&doc).expect("json is yaml");
    apply_yaml(&cp.admin().await, &yaml, "test-user").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sets_up_a_cluster_with_its_own_rbac() {
    let Some(cp) = ControlPlane::shared("the_operator_sets_up_a_cluster_with_its_own_rbac") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ns, kubeconfig) = installed(cp, "bootstrap", tmp.path()).await;
    let op = Operator::start(Path::new(OPERATOR), &kubeconfig, &ns, tmp.path());
    apply_cluster(cp, &ns, None, serde_json::json!({})).await;

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
        let st = status_of(&clusters, "cluster-sync").await?;
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
    // Custom monitoring queries from a ConfigMap: the operator, with its own account,
    // reads it and hands the queries to the pods in its `-monitoring` Secret.
    let config_map = format!(
        "apiVersion: v1
kind: ConfigMap
metadata: {{name: queries, namespace: {ns}}}
data:
  queries.yaml: |
    answer:
      query: SELECT 42 AS v
      metrics:
        - v: {{usage: GAUGE, description: The answer}}
"
    );
    apply_yaml(&admin, &config_map, "test-user").await;
    patch_spec(
        &admin,
        &ns,
        serde_json::json!({"monitoring": {
            "customQueriesConfigMap": [{"name": "queries", "key": "queries.yaml"}]
        }}),
    )
    .await;
    let secrets_api = Api::<Secret>::namespaced(admin.clone(), &ns);
    let config = wait_for("the monitoring Secret", limit, &op, || async {
        secrets_api
            .get_opt("cluster-sync-monitoring")
            .await
            .map_err(|e| e.to_string())?
            .and_then(|s| s.data?.get("monitoring.json").cloned())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert!(
        config.contains("ConfigMap queries/queries.yaml") && config.contains("SELECT 42"),
        "{config}"
    );
    // An edit of the ConfigMap wakes the Cluster (its loop would otherwise come back in
    // five minutes): the new query reaches the Secret.
    apply_yaml(
        &admin,
        &config_map.replace("SELECT 42", "SELECT 43"),
        "test-user",
    )
    .await;
    wait_for(
        "the edited query in the monitoring Secret",
        Duration::from_secs(60),
        &op,
        || async {
            let s = secrets_api
                .get_opt("cluster-sync-monitoring")
                .await
                .map_err(|e| e.to_string())?
                .and_then(|s| s.data?.get("monitoring.json").cloned())
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default();
            if s.contains("SELECT 43") {
                Ok(())
            } else {
                Err(s)
            }
        },
    )
    .await;
    // A PodMonitor once the Prometheus Operator's CRD exists (a minimal one here).
    let crd = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: PodMonitor, listKind: PodMonitorList, plural: podmonitors, singular: podmonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";
    apply_yaml(&admin, crd, "test-user").await;
    patch_spec(
        &admin,
        &ns,
        serde_json::json!({"monitoring": {"enablePodMonitor": true}}),
    )
    .await;
    let gvk = kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "podmonitors");
    let monitors: Api<kube::api::DynamicObject> =
        Api::namespaced_with(admin.clone(), &ns, &resource);
    let monitor = wait_for("the PodMonitor", limit, &op, || async {
        monitors
            .get_opt("cluster-sync")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert_eq!(
        monitor.data["spec"]["podMetricsEndpoints"][0]["port"], "metrics",
        "{:?}",
        monitor.data
    );
    assert_eq!(
        monitor.data["spec"]["selector"]["matchLabels"]["cnpg.io/cluster"],
        "cluster-sync"
    );
    // An image catalog (upstream's shape, through the real admission): the Cluster runs
    // the image it lists for its major; a catalog that does not exist stops the loop with
    // upstream's phase, found by the operator's own account.
    let catalog = format!(
        "apiVersion: postgresql.cnpg.io/v1
kind: ClusterImageCatalog
metadata: {{name: postgresql-{ns}}}
spec:
  images:
  - {{major: 15, image: 'example.org/postgresql:15.99'}}
  - {{major: 17, image: 'example.org/postgresql:17.9'}}
"
    );
    apply_yaml(&admin, &catalog, "test-user").await;
    let catalog_ref = |kind: &str, name: &str| {
        serde_json::json!({"imageCatalogRef": {
            "apiGroup": "postgresql.cnpg.io", "kind": kind, "name": name, "major": 15
        }})
    };
    patch_spec(
        &admin,
        &ns,
        catalog_ref("ClusterImageCatalog", &format!("postgresql-{ns}")),
    )
    .await;
    wait_for("the catalog's image in the status", limit, &op, || async {
        let st = status_of(&clusters, "cluster-sync").await?;
        match st.image.as_deref() {
            Some("example.org/postgresql:15.99") => Ok(()),
            other => Err(format!("image {other:?}, phase {:?}", st.phase_reason)),
        }
    })
    .await;
    patch_spec(&admin, &ns, catalog_ref("ImageCatalog", "missing")).await;
    let reason = wait_for("the catalog error", limit, &op, || async {
        let st = status_of(&clusters, "cluster-sync").await?;
        match (st.phase.as_deref(), st.phase_reason) {
            (Some("Cluster has incomplete or invalid image catalog"), Some(r)) => Ok(r),
            (p, r) => Err(format!("{p:?}: {r:?}")),
        }
    })
    .await;
    assert!(
        reason.contains("ImageCatalog missing (spec.imageCatalogRef) does not exist"),
        "{reason}"
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
    let op = Operator::start(Path::new(OPERATOR), &kubeconfig, &ns, tmp.path());
    apply_cluster(cp, &ns, None, serde_json::json!({})).await;

    let clusters: Api<Cluster> = Api::namespaced(client_from(&cp.kubeconfig()).await, &ns);
    let reason = wait_for(
        "the refusal in the status",
        Duration::from_secs(120),
        &op,
        || async {
            let st = status_of(&clusters, "cluster-sync").await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_run_with_synchronous_replication() {
    let Some(cp) = ControlPlane::shared("three_instances_run_with_synchronous_replication") else {
        return;
    };
    let (_tmp, ns, _kubelet, ops) = deployed(
        cp,
        "e2e",
        &["operator-under-test"],
        None,
        // Declarative tablespaces: a volume each, mounted where upstream mounts it.
        serde_json::json!({"tablespaces": [
            {"name": "tbs1", "temporary": true, "storage": {"size": "1Gi"}},
            {"name": "tbs2", "owner": {"name": "app"}, "storage": {"size": "1Gi"}}
        ]}),
    )
    .await;
    let op = &ops[0];
    let admin = cp.admin().await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), &ns);

    let status = wait_for(
        "three ready instances, healthy",
        Duration::from_secs(300),
        op,
        || async {
            let st = status_of(&clusters, "cluster-sync").await?;
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
        op,
        || app_client(&admin, &ns, "cluster-sync"),
    )
    .await;
    // Declarative tablespaces: made by the primary in its volumes, owned as the spec
    // says, in `tablespacesStatus`; the replicas replay them into their own volumes.
    wait_for(
        "both tablespaces reconciled",
        Duration::from_secs(60),
        op,
        || async {
            let st = status_of(&clusters, "cluster-sync").await?;
            let states: Vec<(&str, &str)> = st
                .tablespaces_status
                .iter()
                .map(|t| (t.name.as_str(), t.state.as_str()))
                .collect();
            if states == [("tbs1", "reconciled"), ("tbs2", "reconciled")] {
                Ok(())
            } else {
                Err(format!("{:?}", st.tablespaces_status))
            }
        },
    )
    .await;
    client
        .batch_execute(
            "CREATE TABLE in_tbs2 (n int) TABLESPACE tbs2; INSERT INTO in_tbs2 VALUES (1)",
        )
        .await
        .expect("the owner of tbs2 makes a table in it");
    let row = client
        .query_one(
            "SELECT pg_tablespace_location(oid), current_setting('temp_tablespaces') \
             FROM pg_tablespace WHERE spcname = 'tbs2'",
            &[],
        )
        .await
        .expect("where tbs2 is");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (
            "/var/lib/postgresql/tablespaces/tbs2/data".to_owned(),
            "tbs1".to_owned()
        )
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    for instance in ["cluster-sync-1", "cluster-sync-2", "cluster-sync-3"] {
        let pvc = pvcs
            .get(&format!("{instance}-tbs-tbs2"))
            .await
            .expect("the tablespace's PVC");
        let dir = _tmp
            .path()
            .join("kubelet/pvcs")
            .join(pvc.metadata.uid.unwrap_or_default())
            .join("data");
        wait_for(
            &format!("tbs2 in {instance}'s volume"),
            Duration::from_secs(60),
            op,
            || async {
                std::fs::read_dir(&dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .filter_map(Result::ok)
                    .find(|e| e.file_name().to_string_lossy().starts_with("PG_"))
                    .map(|_| ())
                    .ok_or_else(|| "empty".to_owned())
            },
        )
        .await;
    }
    client
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        .await
        .expect("a write through -rw commits (a synchronous standby acknowledged it)");
    // Every replica streams from the primary, one of them synchronously: the primary's
    // own report, read at its pod address as the operator reads it.
    let report = wait_for(
        "two streaming standbys",
        Duration::from_secs(60),
        op,
        || async {
            let st = pod_report(&admin, &ns, "cluster-sync-1").await?;
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
    // The instance managers speak HTTPS with the cluster's server certificate, and answer
    // `/pg/status` only to the operator (above: its client certificate) or the status
    // token (the plugin, below); the probes answer anyone, as the kubelet needs.
    let ip = Api::<Pod>::namespaced(admin.clone(), &ns)
        .get("cluster-sync-1")
        .await
        .expect("primary pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("an address");
    let plain = cnpg_instance::http::get(&ip, 8000, "/healthz", Duration::from_secs(5)).await;
    assert!(plain.is_err(), "plain HTTP: {plain:?}");
    let ca = secret_value(&admin, &ns, "cluster-sync-ca", "ca.crt").await;
    let anonymous =
        cnpg_instance::https::ClientTls::new(&ca, None, "cluster-sync-rw").expect("a client");
    let get = async |path: &str| {
        cnpg_instance::https::get(&ip, 8000, path, Duration::from_secs(5), &anonymous, None)
            .await
            .expect("answers over HTTPS, verified against the cluster's CA")
    };
    let (code, body) = get("/pg/status").await;
    assert_eq!(code, 401, "an unauthenticated request is refused: {body}");
    assert_eq!(get("/readyz").await.0, 200);

    // `kubectl-cnpg status`, as a user runs it.
    let (code, out, err) = plugin(cp, &ns, &["status", "cluster-sync"]).await;
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
    // Each instance's own report: the API server refuses to proxy to loopback pod
    // addresses ("address not allowed"), so the plugin reads them at the pods' addresses.
    let instances = out.split("Instances status").nth(1).unwrap_or_default();
    let row = |name: &str| {
        instances
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(out.contains("Streaming Replication status"), "{out}");
    let primary_row = row("cluster-sync-1");
    assert!(
        primary_row.contains("Primary") && primary_row.ends_with("OK"),
        "{primary_row:?} in:\n{out}"
    );
    for standby in ["cluster-sync-2", "cluster-sync-3"] {
        let r = row(standby);
        assert!(
            r.contains("Standby (") && r.ends_with("OK"),
            "{r:?} in:\n{out}"
        );
    }
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

    // The status as upstream fills it.
    let st = clusters
        .get("cluster-sync")
        .await
        .expect("the cluster")
        .status
        .unwrap_or_default();
    let ready = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "ClusterIsReady")
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Initialized" && c.status == "True"),
        "{:?}",
        st.conditions
    );
    assert_eq!(st.instances_reported_state.len(), 3, "{st:?}");
    assert!(
        st.instances_reported_state
            .values()
            .all(|r| r.ip.starts_with("127.97.")),
        "{:?}",
        st.instances_reported_state
    );
    assert_eq!(st.topology.and_then(|t| t.nodes_used), Some(3));
    assert_eq!(st.healthy_pvc.len(), 3, "{:?}", st.healthy_pvc);
    assert_eq!(st.timeline_id, Some(1));

    // Managed roles on a running cluster: a role whose password is in a basic-auth
    // Secret. The primary makes it, the status says so with the Secret's version, the
    // role logs in through -rw with that password, and no pod rolls.
    let pods_before: BTreeSet<String> = pods.items.iter().map(uid).collect();
    apply_yaml(&admin, &dante_secret(&ns, "dante-first-pw"), "test-user").await;
    patch_spec(
        &admin,
        &ns,
        serde_json::json!({"managed": {"roles": [
            {"name": "dante", "login": true, "passwordSecret": {"name": "dante-pw"}}
        ]}}),
    )
    .await;
    let version = Api::<Secret>::namespaced(admin.clone(), &ns)
        .get("dante-pw")
        .await
        .expect("the role's Secret")
        .metadata
        .resource_version;
    wait_for(
        "dante reconciled with its Secret's password",
        Duration::from_secs(180),
        op,
        || async {
            let m = status_of(&clusters, "cluster-sync")
                .await?
                .managed_roles_status
                .unwrap_or_default();
            let reconciled = m
                .by_status
                .get("reconciled")
                .is_some_and(|r| r.iter().any(|n| n == "dante"));
            let applied = m
                .password_status
                .get("dante")
                .and_then(|p| p.resource_version.clone());
            if reconciled && applied == version {
                Ok(())
            } else {
                let made = Api::<Secret>::namespaced(admin.clone(), &ns)
                    .get_opt("cluster-sync-managed-roles")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some();
                let report = pod_report(&admin, &ns, "cluster-sync-1")
                    .await
                    .map(|r| format!("{:?}", r.managed_roles));
                let mut mounted = Vec::new();
                for f in cnpg_instance::testkit::files_under(_tmp.path()) {
                    if f.ends_with("managed-roles.json") {
                        mounted.push(f.display().to_string());
                    }
                }
                Err(format!(
                    "{m:?}; cluster-sync-managed-roles made: {made}; the primary reports {report:?}; files: {mounted:?}"
                ))
            }
        },
    )
    .await;
    let rw = rw_target(&admin, &ns, "cluster-sync")
        .await
        .expect("-rw")
        .host;
    let who = psql(
        &format!(
            "host={rw} port=5432 user=dante password=dante-first-pw dbname=app sslmode=require"
        ),
        "SELECT current_user",
    )
    .expect("dante logs in with the Secret's password");
    assert_eq!(who, "dante");
    // The password rotated in its Secret: the operator watches the Secrets a Cluster
    // reads, so the new one is in force long before the 5-minute periodic pass.
    apply_yaml(&admin, &dante_secret(&ns, "dante-second-pw"), "test-user").await;
    wait_for(
        "dante's rotated password in force",
        Duration::from_secs(150),
        op,
        || async {
            let rw = rw.clone();
            tokio::task::spawn_blocking(move || {
                psql(
                    &format!(
                        "host={rw} port=5432 user=dante password=dante-second-pw dbname=app sslmode=require"
                    ),
                    "SELECT current_user",
                )
            })
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
        },
    )
    .await;
    let pods_after: BTreeSet<String> = Api::<Pod>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .iter()
        .map(uid)
        .collect();
    assert_eq!(pods_before, pods_after, "a pod was replaced for a role");

    // A Database owned by dante, dropped when its object is deleted: the primary makes
    // it with its schema and extension, writes its status, and holds the finalizer until
    // it has dropped it.
    let dbs = Api::<cnpg_core::api::Database>::namespaced(admin.clone(), &ns);
    apply_yaml(
        &admin,
        &serde_json::json!({
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "Database",
            "metadata": {"name": "shop", "namespace": ns},
            "spec": {"cluster": {"name": "cluster-sync"}, "name": "shop", "owner": "dante",
                     "databaseReclaimPolicy": "delete",
                     "schemas": [{"name": "sales", "owner": "dante"}],
                     "extensions": [{"name": "hstore"}]}
        })
        .to_string(),
        "test-user",
    )
    .await;
    let as_dante = move |db: &str, sql: &str| {
        psql(
            &format!(
                "host={rw} port=5432 user=dante password=dante-second-pw dbname={db} sslmode=require"
            ),
            sql,
        )
    };
    wait_for(
        "Database shop applied, with its finalizer",
        Duration::from_secs(120),
        op,
        || async {
            let d = dbs.get("shop").await.map_err(|e| e.to_string())?;
            let applied = d.status.as_ref().and_then(|s| s.applied) == Some(true);
            let held = d
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == "cnpg.io/deleteDatabase"));
            if applied && held {
                Ok(())
            } else {
                Err(format!("{:?} {:?}", d.metadata.finalizers, d.status))
            }
        },
    )
    .await;
    let found = tokio::task::spawn_blocking({
        let q = as_dante.clone();
        move || {
            q(
                "shop",
                "SELECT pg_get_userbyid(d.datdba) || ' ' || n.nspname || ' ' || e.extname \
                 FROM pg_database d, pg_namespace n, pg_extension e \
                 WHERE d.datname = 'shop' AND n.nspname = 'sales' AND e.extname = 'hstore'",
            )
        }
    })
    .await
    .expect("psql");
    assert_eq!(found.as_deref(), Ok("dante sales hstore"));
    dbs.delete("shop", &Default::default())
        .await
        .expect("delete the Database");
    wait_for(
        "Database shop gone, its database dropped",
        Duration::from_secs(120),
        op,
        || async {
            match dbs.get_opt("shop").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(d) => Err(format!("still there: {:?}", d.status)),
            }
        },
    )
    .await;
    let left = tokio::task::spawn_blocking(move || {
        as_dante(
            "app",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop'",
        )
    })
    .await
    .expect("psql");
    assert_eq!(left.as_deref(), Ok("0"));

    // An open session would hold the primary's smart shutdown when it hibernates.
    drop(client);

    plugin_commands(cp, &ns, op).await;

    // After all that: no Secret's content in any log (the operator's, every container's,
    // PostgreSQL's), event, or the Cluster and its status.
    let secrets = secret_contents(&admin, &ns).await;
    let mut texts: Vec<(String, String)> = cnpg_instance::testkit::files_under(_tmp.path())
        .into_iter()
        .filter(|f| {
            let s = f.to_string_lossy();
            // Volumes hold the Secrets themselves, PVCs the databases.
            !s.contains("/volumes/") && !s.contains("/pgdata/")
        })
        .filter_map(|f| Some((f.display().to_string(), std::fs::read_to_string(&f).ok()?)))
        .collect();
    assert!(
        texts.iter().any(|(n, _)| n.contains("operator-under-test"))
            && texts.iter().any(|(n, _)| n.ends_with("/logs/postgres.log")),
        "{:?}",
        texts.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    texts.push((
        "events".into(),
        serde_json::to_string(&events.items).expect("json"),
    ));
    let cluster = clusters.get("cluster-sync").await.expect("cluster");
    texts.push((
        "the Cluster".into(),
        serde_json::to_string(&cluster).expect("json"),
    ));
    assert_none_holds(&secrets, &texts);
}

/// One key of a Secret, as text.
async fn secret_value(admin: &kube::Client, ns: &str, secret: &str, key: &str) -> String {
    let s = Api::<Secret>::namespaced(admin.clone(), ns)
        .get(secret)
        .await
        .unwrap_or_else(|e| panic!("secret {secret}: {e}"));
    cnpg_operator::kube::secrets::value(&s, key).unwrap_or_else(|e| panic!("{e}"))
}

/// What must never be shown, from every Secret of the namespace: each password, and each
/// line of each private key (a leak of any part of one shows), by `secret/key`.
async fn secret_contents(admin: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let all = Api::<Secret>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items;
    let mut out = Vec::new();
    for sec in &all {
        let name = sec.metadata.name.clone().unwrap_or_default();
        for (key, value) in sec.data.iter().flatten() {
            let text = String::from_utf8_lossy(&value.0);
            if text.contains("PRIVATE KEY") {
                out.extend(
                    text.lines()
                        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                        .map(|l| (format!("{name}/{key}"), l.to_owned())),
                );
            } else if (key.contains("password") || key == "status-token") && text.trim().len() >= 16
            {
                out.push((format!("{name}/{key}"), text.trim().to_owned()));
            }
        }
    }
    assert!(out.len() > 5, "the cluster's Secrets: {out:?}");
    out
}

/// The basic-auth Secret holding the managed role `dante`'s password.
fn dante_secret(ns: &str, password: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
        "metadata": {"name": "dante-pw", "namespace": ns},
        "stringData": {"username": "dante", "password": password}
    })
    .to_string()
}

/// Fails naming where a secret shows, and which.
fn assert_none_holds(secrets: &[(String, String)], texts: &[(String, String)]) {
    for (where_, text) in texts {
        for (what, secret) in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{where_} holds the content of {what}"
            );
        }
    }
}

/// The rest of `kubectl-cnpg` on the running cluster: fencing, restart, reload, report,
/// certificate, maintenance, hibernation, destroy.
async fn plugin_commands(cp: &ControlPlane, ns: &str, op: &Operator) {
    let admin = cp.admin().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "{err}");
        out
    };
    let limit = Duration::from_secs(300);

    // logs cluster as upstream: every container of the cluster's pods, read through the
    // API server (`pods/log`, which it proxies to the test kubelet), to stdout or a file.
    let running: Vec<String> = pods
        .list(&ListParams::default().labels("cnpg.io/cluster=cluster-sync"))
        .await
        .expect("pods")
        .items
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    assert!(!running.is_empty());
    let logs = ok(plugin(cp, ns, &["logs", "cluster", "cluster-sync", "--tail", "2"]).await);
    for pod in &running {
        let prefix = format!("[pod/{pod}/postgres] ");
        let lines = logs.lines().filter(|l| l.starts_with(&prefix)).count();
        assert_eq!(lines, 2, "{pod}: two lines each\n{logs}");
    }
    let file = std::env::temp_dir().join(format!("{ns}-logs.txt"));
    let said = ok(plugin(
        cp,
        ns,
        &["logs", "cluster-sync", "-o", &file.display().to_string()],
    )
    .await);
    assert!(said.contains("Successfully written logs to"), "{said}");
    let written = std::fs::read_to_string(&file).expect("the logs file");
    let _ = std::fs::remove_file(&file);
    assert!(
        written.lines().count() > 2 * running.len(),
        "whole logs: {written}"
    );
    let (code, _, err) = plugin(cp, ns, &["logs", "pretty", "cluster-sync"]).await;
    assert!(code != 0 && err.contains("logs cluster NAME"), "{err}");

    // fio as upstream deploys it: --dry-run prints the PVC, ConfigMap and Deployment and
    // makes nothing; without it they are made (nothing here runs a Deployment's pods).
    let dry = ok(plugin(cp, ns, &["fio", "fio-bench", "--dry-run"]).await);
    for kind in [
        "kind: PersistentVolumeClaim",
        "kind: ConfigMap",
        "kind: Deployment",
    ] {
        assert!(dry.contains(kind), "{kind}: {dry}");
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(admin.clone(), ns);
    assert!(
        deployments
            .get_opt("fio-bench")
            .await
            .expect("get")
            .is_none()
    );
    ok(plugin(cp, ns, &["fio", "fio-bench", "--pvcSize", "1Gi"]).await);
    let d = deployments
        .get("fio-bench")
        .await
        .expect("the fio Deployment");
    let pod = d.spec.and_then(|s| s.template.spec).expect("its pod");
    assert!(
        pod.containers[0]
            .image
            .as_deref()
            .is_some_and(|i| i.contains("fio"))
    );
    let job = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), ns)
        .get("fio-bench")
        .await
        .expect("the fio ConfigMap")
        .data
        .unwrap_or_default();
    assert!(job["job"].contains("directory=/data"), "{job:?}");
    let pvc = Api::<PersistentVolumeClaim>::namespaced(admin.clone(), ns)
        .get("fio-bench")
        .await
        .expect("the fio PVC");
    assert_eq!(
        pvc.spec
            .and_then(|s| s.resources)
            .and_then(|r| r.requests)
            .map(|r| r["storage"].0.clone()),
        Some("1Gi".to_owned())
    );
    let (code, _, err) = plugin(cp, ns, &["fio", "fio-bench", "--pvcSize", "lots"]).await;
    assert!(code != 0 && err.contains("--pvcSize"), "{err}");
    let dp = kube::api::DeleteParams::default();
    deployments.delete("fio-bench", &dp).await.expect("delete");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), ns)
        .delete("fio-bench", &dp)
        .await
        .expect("delete");
    Api::<PersistentVolumeClaim>::namespaced(admin.clone(), ns)
        .delete("fio-bench", &dp)
        .await
        .expect("delete");

    // pgbench as upstream runs it on Kubernetes: a Job against -rw as the app user.
    let pgbench_args = |dry: bool| {
        let mut args = vec!["pgbench", "cluster-sync", "--job-name", "pgbench-init"];
        if dry {
            args.push("--dry-run");
        }
        args.extend(["--", "--initialize"]);
        args
    };
    let dry = ok(plugin(cp, ns, &pgbench_args(true)).await);
    assert!(
        dry.contains("kind: Job") && dry.contains("--initialize"),
        "{dry}"
    );
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(admin.clone(), ns);
    assert!(jobs.get_opt("pgbench-init").await.expect("get").is_none());
    ok(plugin(cp, ns, &pgbench_args(false)).await);
    let job = jobs.get("pgbench-init").await.expect("the pgbench Job");
    let container = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].clone())
        .expect("its container");
    assert_eq!(container.args, Some(vec!["--initialize".to_owned()]));
    let env: Vec<String> = container
        .env
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let from = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|r| format!("{}/{}", r.name, r.key));
            format!(
                "{}={}",
                e.name,
                e.value.clone().or(from).unwrap_or_default()
            )
        })
        .collect();
    for want in [
        "PGHOST=cluster-sync-rw",
        "PGDATABASE=app",
        "PGPASSWORD=cluster-sync-app/password",
    ] {
        assert!(env.iter().any(|e| e == want), "{want}: {env:?}");
    }
    jobs.delete("pgbench-init", &kube::api::DeleteParams::background())
        .await
        .expect("delete the Job");

    // Fencing a replica stops PostgreSQL and keeps it stopped; lifting it brings it back.
    ok(plugin(cp, ns, &["fencing", "on", "cluster-sync", "cluster-sync-3"]).await);
    wait_for("cluster-sync-3 fenced", limit, op, || async {
        let r = pod_report(&admin, ns, "cluster-sync-3").await?;
        if r.is_fenced && r.error.is_some() {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    ok(plugin(
        cp,
        ns,
        &["fencing", "off", "cluster-sync", "cluster-sync-3"],
    )
    .await);
    settled(&admin, ns, "cluster-sync", op, "unfenced", None).await;

    // Restarting one replica recreates its pod on the same storage.
    let before = uid(&pods.get("cluster-sync-2").await.expect("pod"));
    ok(plugin(cp, ns, &["restart", "cluster-sync", "cluster-sync-2"]).await);
    replaced(&pods, "cluster-sync-2", &before, op).await;
    settled(&admin, ns, "cluster-sync", op, "restarted replica", None).await;

    ok(plugin(cp, ns, &["reload", "cluster-sync"]).await);

    // The report: the objects, never a Secret's contents.
    let report = ok(plugin(cp, ns, &["report", "cluster-sync"]).await);
    for part in ["# cluster", "# pod cluster-sync-1", "# pvc cluster-sync-1"] {
        assert!(report.contains(part), "{part} in the report");
    }
    // No Secret's content in it: no password, no line of a private key.
    let secrets = secret_contents(&admin, ns).await;
    assert_none_holds(&secrets, &[("the report".to_owned(), report.clone())]);

    // A client certificate signed by the cluster's CA.
    ok(plugin(
        cp,
        ns,
        &[
            "certificate",
            "app-client-cert",
            "--cnpg-cluster",
            "cluster-sync",
            "--cnpg-user",
            "app",
        ],
    )
    .await);
    let secret = Api::<Secret>::namespaced(admin.clone(), ns)
        .get("app-client-cert")
        .await
        .expect("the certificate's Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.unwrap_or_default();
    assert!(data.contains_key("tls.crt") && data.contains_key("tls.key"));
    // TLS through every Service, verifying the server's name, and the client certificate
    // logging in.
    let files = tempfile::tempdir().expect("tmp");
    let keep = |name: &str, bytes: &[u8]| {
        let p = files.path().join(name);
        cnpg_instance::tls::write_private(&p, &String::from_utf8_lossy(bytes), None).expect("file");
        p.display().to_string()
    };
    let ca_secret = Api::<Secret>::namespaced(admin.clone(), ns)
        .get("cluster-sync-ca")
        .await
        .expect("the CA");
    let ca = keep("ca.crt", &ca_secret.data.unwrap_or_default()["ca.crt"].0);
    let crt = keep("tls.crt", &data["tls.crt"].0);
    let key = keep("tls.key", &data["tls.key"].0);
    let app_secret = Api::<Secret>::namespaced(admin.clone(), ns)
        .get("cluster-sync-app")
        .await
        .expect("the app secret");
    let password =
        String::from_utf8_lossy(&app_secret.data.unwrap_or_default()["password"].0).into_owned();
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    for svc in ["cluster-sync-rw", "cluster-sync-ro", "cluster-sync-r"] {
        let ip = services
            .get(svc)
            .await
            .expect("service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("a ClusterIP");
        let host = format!("host={svc}.{ns}.svc hostaddr={ip} port=5432 user=app");
        let ssl = psql(
            &format!("{host} dbname=app password={password} sslmode=verify-full sslrootcert={ca}"),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .unwrap_or_else(|e| panic!("{svc}: {e}"));
        assert_eq!(ssl, "t", "{svc}");
        if svc == "cluster-sync-rw" {
            let who = psql(
                &format!(
                    "{host} dbname=postgres sslmode=verify-full sslrootcert={ca} sslcert={crt} sslkey={key}"
                ),
                "SELECT current_user",
            )
            .expect("the client certificate logs in");
            assert_eq!(who, "app");
        }
    }

    // A rotated server certificate (as cert-manager rotates one) reaches PostgreSQL and
    // the status servers of every instance without a restart: the kubelet refreshes the
    // projected volume, the managers copy it and reload. The new one also names
    // `rotated.example`, which is how a client tells it from the old.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let (ca_crt, ca_key) = (
        secret_value(&admin, ns, "cluster-sync-ca", "ca.crt").await,
        secret_value(&admin, ns, "cluster-sync-ca", "ca.key").await,
    );
    let cluster = Api::<Cluster>::namespaced(admin.clone(), ns)
        .get("cluster-sync")
        .await
        .expect("cluster");
    let mut names = cnpg_operator::kube::secrets::server_names(&cluster);
    names.push("rotated.example".into());
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let leaf =
        cnpg_instance::tls::issue_leaf(&ca_crt, &ca_key, "cluster-sync-rw", names, false, now)
            .expect("a new server certificate");
    let rw = services
        .get("cluster-sync-rw")
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let started = || {
        psql(
            &format!(
                "host=cluster-sync-rw hostaddr={rw} port=5432 user=app dbname=app password={password} sslmode=verify-full sslrootcert={ca}"
            ),
            "SELECT pg_postmaster_start_time()",
        )
        .expect("the primary answers")
    };
    let before = started();
    let mut server = secrets.get("cluster-sync-server").await.expect("server");
    let data = server.data.get_or_insert_default();
    data.insert(
        "tls.crt".into(),
        k8s_openapi::ByteString(leaf.cert.into_bytes()),
    );
    data.insert(
        "tls.key".into(),
        k8s_openapi::ByteString(leaf.key.into_bytes()),
    );
    secrets
        .replace("cluster-sync-server", &PostParams::default(), &server)
        .await
        .expect("rotated");
    let rotated =
        cnpg_instance::https::ClientTls::new(&ca_crt, None, "rotated.example").expect("a client");
    for i in 1..=3 {
        let pod = format!("cluster-sync-{i}");
        let ip = pods
            .get(&pod)
            .await
            .expect("pod")
            .status
            .and_then(|s| s.pod_ip)
            .expect("an address");
        wait_for(
            &format!("{pod} to serve the rotated certificate"),
            Duration::from_secs(60),
            op,
            || async {
                let probe = cnpg_instance::https::get(
                    &ip,
                    8000,
                    "/healthz",
                    Duration::from_secs(5),
                    &rotated,
                    None,
                )
                .await
                .map_err(|e| format!("status server: {e}"))?;
                assert_eq!(probe.0, 200);
                psql(
                    &format!(
                        "host=rotated.example hostaddr={ip} port=5432 user=app dbname=app password={password} sslmode=verify-full sslrootcert={ca}"
                    ),
                    "SELECT 1",
                )
                .map_err(|e| format!("PostgreSQL: {e}"))
            },
        )
        .await;
    }
    assert_eq!(started(), before, "reloaded, not restarted");

    // The maintenance window, set and unset on the Cluster.
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), ns);
    let window = || async {
        clusters
            .get("cluster-sync")
            .await
            .expect("cluster")
            .spec
            .node_maintenance_window
    };
    ok(plugin(
        cp,
        ns,
        &["maintenance", "set", "cluster-sync", "--reusePVC"],
    )
    .await);
    let w = window().await.expect("a maintenance window");
    assert!(w.in_progress && w.reuse_pvc == Some(true), "{w:?}");
    ok(plugin(cp, ns, &["maintenance", "unset", "cluster-sync"]).await);
    assert!(!window().await.expect("a maintenance window").in_progress);

    // Hibernation: every pod goes, the storage stays; then everything comes back.
    ok(plugin(cp, ns, &["hibernate", "on", "cluster-sync"]).await);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), ns);
    wait_for("hibernated", limit, op, || async {
        let running = pods
            .list(&ListParams::default().labels("cnpg.io/podRole=instance"))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        let st = status_of(&clusters, "cluster-sync").await?;
        let reason = st.phase_reason.unwrap_or_default();
        if running == 0 && reason.contains("Hibernated") {
            Ok(())
        } else {
            Err(format!("{running} pods; {reason}"))
        }
    })
    .await;
    let kept = pvcs.list(&ListParams::default()).await.expect("PVCs").items;
    assert_eq!(
        kept.len(),
        9,
        "the storage stays: data and two tablespaces of each instance"
    );
    ok(plugin(cp, ns, &["hibernate", "off", "cluster-sync"]).await);
    settled(&admin, ns, "cluster-sync", op, "rehydrated", None).await;
    let reasons = event_reasons(&admin, ns).await;
    for r in ["Hibernating", "Rehydrating"] {
        assert!(reasons.contains(r), "no {r} event in {reasons:?}");
    }
    let client = wait_for("a connection after hibernation", limit, op, || {
        app_client(&admin, ns, "cluster-sync")
    })
    .await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("the table survived hibernation")
        .get(0);
    assert_eq!(rows, 1);
    drop(client);

    // Destroying an instance (a lost PVC): a new one is cloned from the primary.
    let before = uid(&pvcs.get("cluster-sync-3").await.expect("PVC"));
    ok(plugin(cp, ns, &["destroy", "cluster-sync", "cluster-sync-3"]).await);
    replaced(&pvcs, "cluster-sync-3", &before, op).await;
    settled(
        &admin,
        ns,
        "cluster-sync",
        op,
        "a destroyed instance re-cloned",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_and_switchover_lose_no_acknowledged_write() {
    let Some(cp) = ControlPlane::shared("failover_and_switchover_lose_no_acknowledged_write")
    else {
        return;
    };
    // Two operator replicas, as `install generate --replicas 2` deploys: one acts, the
    // other waits for the leader Lease.
    // The cluster archives its WAL to a real S3 server (moto's) all along.
    let s3 = cnpg_instance::testkit::S3Server::start();
    s3.create_bucket(ARCHIVE_BUCKET);
    let (_tmp, ns, kubelet, mut ops) = deployed(
        cp,
        "failover",
        &["operator-a", "operator-b"],
        Some(&s3.endpoint),
        serde_json::json!({}),
    )
    .await;
    let op = &ops[0];
    let admin = cp.admin().await;
    let first = settled(&admin, &ns, "cluster-sync", op, "bootstrap", None).await;

    // A client committing through the -rw Service for the whole test.
    let target = rw_target(&admin, &ns, "cluster-sync")
        .await
        .expect("the -rw endpoint");
    let writer = cnpg_operator::testkit::writer::Writer::start(target.clone());
    tokio::task::block_in_place(|| writer.wait_for_more(20, Duration::from_secs(120)));

    // 1. kill -9 of everything in the primary's pod: another instance takes over, the old
    //    one comes back as its replica.
    kubelet.kill_pod(&ns, &first);
    let second = moved_on(
        &admin,
        &ns,
        op,
        &writer,
        "failover after kill -9 of the primary",
        &first,
    )
    .await;

    // 2. The primary's pod deleted: the same, and the pod is made again on its storage;
    //    and the operator replica that acts is killed once the failover has begun: the
    //    other takes the Lease when it expires and finishes the failover.
    Api::<Pod>::namespaced(admin.clone(), &ns)
        .delete(&second, &kube::api::DeleteParams::default())
        .await
        .expect("delete the primary pod");
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), &ns);
    wait_for(
        "the failover to begin",
        Duration::from_secs(120),
        op,
        || async {
            let st = status_of(&clusters, "cluster-sync").await?;
            if st.target_primary.as_deref() != Some(second.as_str()) {
                Ok(())
            } else {
                Err(format!("{:?}: {:?}", st.phase, st.phase_reason))
            }
        },
    )
    .await;
    let leader = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), &ns)
        .get(cnpg_operator::kube::controller::LEADER_LEASE)
        .await
        .expect("the leader Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    let (killed, survivor) = if leader == "operator-a" {
        (0, 1)
    } else {
        (1, 0)
    };
    ops[killed].kill();
    let op = &ops[survivor];
    let third = moved_on(
        &admin,
        &ns,
        op,
        &writer,
        "failover after the primary pod's deletion, its operator killed",
        &second,
    )
    .await;

    // 3. A switchover with the plugin, as a user would run it.
    let to = ["cluster-sync-1", "cluster-sync-2", "cluster-sync-3"]
        .into_iter()
        .find(|i| *i != third)
        .expect("another instance");
    let (code, _, err) = plugin(cp, &ns, &["promote", "cluster-sync", to]).await;
    assert_eq!(code, 0, "{err}");
    let fourth = moved_on(
        &admin,
        &ns,
        op,
        &writer,
        "switchover with kubectl-cnpg promote",
        &third,
    )
    .await;
    assert_eq!(fourth, to);

    // 4. The primary hangs: every process of its pod stopped (SIGSTOP), its kubelet still
    //    answering. Its manager does not answer, so the operator fails over, and first
    //    kills the hung pod (deleted with a one-second grace period) so that it cannot
    //    wake up beside the new primary; the pod is made again on its storage and
    //    rejoins as a replica.
    // Only once the new primary has confirmed its synchronous configuration: before that a
    //    quorum-gated failover is refused by design (upstream #8790), and the hung primary
    //    would stay the primary.
    wait_for(
        "the synchronous configuration confirmed",
        Duration::from_secs(120),
        op,
        || async {
            let st = status_of(&clusters, "cluster-sync").await?;
            match st.ha_state.and_then(|h| h.published_sync) {
                Some(_) => Ok(()),
                None => Err("not yet confirmed by the primary".to_owned()),
            }
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let hung = uid(&pods.get(&fourth).await.expect("the primary's pod"));
    kubelet.signal_pod(&ns, &fourth, nix::sys::signal::Signal::SIGSTOP);
    let fifth = moved_on(
        &admin,
        &ns,
        op,
        &writer,
        "failover from a hung primary",
        &fourth,
    )
    .await;
    assert_ne!(
        uid(&pods.get(&fourth).await.expect("the old primary's pod")),
        hung,
        "the hung pod was not killed and made again"
    );
    assert_ne!(fifth, fourth);

    // No acknowledged row is missing (dataDurability: required).
    let acked = no_acknowledged_row_lost(writer, target).await;
    // The archive went on across every promotion: each new primary archived its
    // timeline's history file where barman-cloud looks for it, and WAL of the first
    // timeline is there, in barman-cloud's layout (`barman-cloud-wal-restore` reads it).
    let archive = cnpg_instance::archive::Destination::open(&s3.archive_config(
        &format!("s3://{ARCHIVE_BUCKET}/{ns}"),
        "cluster-sync",
        ("test-key", "test-secret-key"),
    ))
    .expect("the archive");
    let prefix = format!("{ns}/cluster-sync/wals");
    let keys = wait_for(
        "four timelines' history archived",
        Duration::from_secs(120),
        op,
        || async {
            let keys = archive.list_wal().await.map_err(|e| e.to_string())?;
            let missing: Vec<String> = (2..=5)
                .map(|t| format!("{prefix}/{t:08X}.history.gz"))
                .filter(|h| !keys.contains(h))
                .collect();
            if missing.is_empty() {
                Ok(keys)
            } else {
                Err(format!("missing {missing:?} in {keys:?}"))
            }
        },
    )
    .await;
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{prefix}/0000000100000000/00000001"))),
        "{keys:?}"
    );
    let restored = tempfile::tempdir().expect("tmp");
    let history = restored.path().join("00000005.history");
    let out = std::process::Command::new("barman-cloud-wal-restore")
        .args(["--endpoint-url", &s3.endpoint])
        .arg(format!("s3://{ARCHIVE_BUCKET}/{ns}"))
        .args(["cluster-sync", "00000005.history"])
        .arg(&history)
        .env("AWS_ACCESS_KEY_ID", "test-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("barman-cloud-wal-restore (apt-get install barman-cli-cloud)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&history).expect("history");
    assert_eq!(
        text.lines().filter(|l| !l.trim().is_empty()).count(),
        4,
        "four switch points: {text}"
    );
    // The Cluster says archiving works, from the primary's own report (upstream's
    // ContinuousArchiving condition).
    let clusters = Api::<Cluster>::namespaced(admin.clone(), &ns);
    let archiving = |c: &Cluster| {
        c.status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "ContinuousArchiving")
            })
            .map(|c| format!("{} {} {}", c.status, c.reason, c.message))
    };
    wait_for(
        "the ContinuousArchiving condition",
        Duration::from_secs(60),
        op,
        || async {
            let c = clusters
                .get("cluster-sync")
                .await
                .map_err(|e| e.to_string())?;
            match archiving(&c) {
                Some(a) if a.starts_with("True ContinuousArchivingSuccess 0000000") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // A base backup through the Backup controller (kubectl-cnpg backup, as upstream's):
    // on a streaming standby, in the store, and recorded on the Cluster.
    let (code, out, err) = plugin(
        cp,
        &ns,
        &[
            "backup",
            "cluster-sync",
            "--backup-name",
            "on-demand",
            "--wait",
            "300",
        ],
    )
    .await;
    assert_eq!(
        code,
        0,
        "{out}\n{err}\n{}",
        ops.iter()
            .map(|o| o.log_tail())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.contains("on-demand: completed on cluster-sync-"),
        "{out}"
    );
    let mut data = s3.archive_config(
        &format!("s3://{ARCHIVE_BUCKET}/{ns}"),
        "cluster-sync",
        ("test-key", "test-secret-key"),
    );
    data.compression = None;
    let listed = cnpg_instance::backup::list(&data)
        .await
        .expect("the backups");
    assert!(
        listed
            .iter()
            .flatten()
            .any(|b| b.backup_name.as_deref() == Some("on-demand") && b.status == "DONE"),
        "{listed:?}"
    );
    wait_for(
        "the backup recorded on the Cluster",
        Duration::from_secs(60),
        op,
        || async {
            let c = clusters
                .get("cluster-sync")
                .await
                .map_err(|e| e.to_string())?;
            let st = c.status.clone().unwrap_or_default();
            let ok = st
                .conditions
                .iter()
                .any(|c| c.type_ == "LastBackupSucceeded" && c.status == "True");
            if ok && st.last_successful_backup.is_some() && st.first_recoverability_point.is_some()
            {
                Ok(())
            } else {
                Err(format!(
                    "{:?} {:?}",
                    st.last_successful_backup, st.conditions
                ))
            }
        },
    )
    .await;
    // Every instance's metrics port (upstream's 9187, plain HTTP, what a PodMonitor
    // scrapes) carries upstream's backup gauges from the Cluster's status.
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default().labels("cnpg.io/cluster=cluster-sync"))
        .await
        .expect("the pods");
    for pod in pods
        .items
        .iter()
        .filter(|p| cnpg_operator::kube::platform::pod_ready(p))
    {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("a ready pod has an address");
        let name = kube::ResourceExt::name_any(pod);
        wait_for(
            &format!("the backup gauges on {name}:9187"),
            Duration::from_secs(60),
            op,
            || async {
                let (code, body) =
                    cnpg_instance::http::get(&ip, 9187, "/metrics", Duration::from_secs(5)).await?;
                let gauge = |g: &str| -> i64 {
                    body.lines()
                        .find_map(|l| l.strip_prefix(&format!("{g} ")))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(-1)
                };
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                let last = gauge("cnpg_collector_last_available_backup_timestamp");
                if code == 200
                    && last > now - 3600
                    && last <= now
                    && gauge("cnpg_collector_first_recoverability_point") > 0
                    && gauge("cnpg_collector_last_failed_backup_timestamp") == 0
                {
                    Ok(())
                } else {
                    Err(format!("{code}: {body}"))
                }
            },
        )
        .await;
    }
    // A ScheduledBackup with `immediate`: its first Backup is made and run at once.
    let daily: cnpg_core::api::backup::ScheduledBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "ScheduledBackup",
        "metadata": {"name": "daily"},
        "spec": {"schedule": "0 0 0 * * *", "immediate": true, "cluster": {"name": "cluster-sync"}}
    }))
    .expect("a ScheduledBackup");
    Api::<cnpg_core::api::backup::ScheduledBackup>::namespaced(admin.clone(), &ns)
        .create(&Default::default(), &daily)
        .await
        .expect("create the ScheduledBackup");
    let backups = Api::<cnpg_core::api::backup::Backup>::namespaced(admin.clone(), &ns);
    wait_for(
        "the scheduled backup completed",
        Duration::from_secs(300),
        op,
        || async {
            let all = backups
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let phases: Vec<(String, Option<String>)> = all
                .items
                .iter()
                .filter(|b| {
                    b.metadata
                        .name
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("daily-")
                })
                .map(|b| {
                    (
                        b.metadata.name.clone().unwrap_or_default(),
                        b.status.clone().and_then(|s| s.phase),
                    )
                })
                .collect();
            match phases.as_slice() {
                [(_, Some(p))] if p == "completed" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // A new cluster recovered from that Backup (bootstrap.recovery.backup): its first
    // instance restores it in its pod's bootstrap step and replays the archive to its end,
    // the second clones it, and every row ever acknowledged is there, read through its
    // own -rw with its own application password. The standby's backup is consistent only
    // with WAL the primary archives at its next switch (archive_timeout: 5 minutes; the
    // recovery waits for it): a backup on the primary, which waits for its own WAL to be
    // archived, makes that switch now.
    let (code, out, err) = plugin(
        cp,
        &ns,
        &[
            "backup",
            "cluster-sync",
            "--backup-name",
            "on-the-primary",
            "--backup-target",
            "primary",
            "--wait",
            "300",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let restored = serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "cluster-restored", "namespace": ns},
        "spec": {"instances": 2, "storage": {"size": "1Gi"},
                 "postgresql": {"parameters": {"max_connections": "200"}},
                 "bootstrap": {"recovery": {"backup": {"name": "on-demand"}}}}
    });
    apply_yaml(&admin, &restored.to_string(), "test-user").await;
    settled(
        &admin,
        &ns,
        "cluster-restored",
        op,
        "recovered from on-demand",
        None,
    )
    .await;
    // Its first instance published how the recovery went in the Cluster's status, and the
    // plugin shows it.
    let st = status_of(&clusters, "cluster-restored")
        .await
        .expect("the restored cluster's status");
    let progress = st.recovery_progress.expect("status.recoveryProgress");
    assert_eq!(progress.phase, "done", "{progress:?}");
    assert!(
        progress.restored_bytes > 0 && progress.backup_id.is_some(),
        "{progress:?}"
    );
    let (code, out, err) = plugin(cp, &ns, &["status", "cluster-restored"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Recovery:") && out.contains("recovery done"),
        "{out}"
    );
    let restored_rw = rw_target(&admin, &ns, "cluster-restored")
        .await
        .expect("the restored cluster's -rw");
    let rows = tokio::task::spawn_blocking(move || restored_rw.rows())
        .await
        .expect("read the rows");
    let missing = acked.iter().filter(|n| !rows.contains(n)).count();
    assert_eq!(
        missing,
        0,
        "of {} acknowledged rows, {missing} not recovered",
        acked.len()
    );
    // A target that backup cannot reach: the recovery refuses it, and the Cluster's
    // status says why (the bootstrap step's last words, through the pod's termination
    // message) while nothing else of the cluster is made.
    let too_early = serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "cluster-too-early", "namespace": ns},
        "spec": {"instances": 2, "storage": {"size": "1Gi"},
                 "bootstrap": {"recovery": {"backup": {"name": "on-demand"},
                     "recoveryTarget": {"targetTime": "2001-01-01T00:00:00Z"}}}}
    });
    apply_yaml(&admin, &too_early.to_string(), "test-user").await;
    wait_for(
        "the refused recovery target in the status",
        Duration::from_secs(180),
        op,
        || async {
            let st = status_of(&clusters, "cluster-too-early").await?;
            let reason = st.phase_reason.clone().unwrap_or_default();
            let failed = st
                .recovery_progress
                .as_ref()
                .is_some_and(|p| p.phase == "failed" && p.error.is_some());
            if reason.contains("bootstrap step failed")
                && reason.contains("lies before the end of")
                && failed
            {
                Ok(())
            } else {
                Err(format!("{:?}: {reason}", st.phase))
            }
        },
    )
    .await;
    let made: Vec<String> = Api::<Pod>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default().labels("cnpg.io/cluster=cluster-too-early"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        made,
        ["cluster-too-early-1"],
        "only the first instance is tried"
    );
    clusters
        .delete("cluster-too-early", &Default::default())
        .await
        .expect("delete the cluster");
    // Without an object store the archive's configuration goes, with the credentials it
    // held (the operator's own RBAC lets it delete a Secret), and so does the condition.
    patch_spec(&admin, &ns, serde_json::json!({ "backup": null })).await;
    wait_for(
        "the ContinuousArchiving condition removed",
        Duration::from_secs(60),
        op,
        || async {
            let c = clusters
                .get("cluster-sync")
                .await
                .map_err(|e| e.to_string())?;
            archiving(&c).map_or(Ok(()), Err)
        },
    )
    .await;
    wait_for(
        "the archive configuration removed",
        Duration::from_secs(60),
        op,
        || async {
            match Api::<Secret>::namespaced(admin.clone(), &ns)
                .get_opt("cluster-sync-archive")
                .await
            {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    // And the events tell the story.
    let reasons = event_reasons(&admin, &ns).await;
    for r in ["FailingOver", "Switchover"] {
        assert!(reasons.contains(r), "no {r} event in {reasons:?}");
    }
}

/// Merge-patches the Cluster's spec, as `kubectl patch --type merge` would.
async fn patch_spec(admin: &kube::Client, ns: &str, spec: serde_json::Value) {
    Api::<Cluster>::namespaced(admin.clone(), ns)
        .patch(
            "cluster-sync",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("patch the Cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_updates_and_scaling_lose_no_acknowledged_write() {
    let Some(cp) = ControlPlane::shared("rolling_updates_and_scaling_lose_no_acknowledged_write")
    else {
        return;
    };
    let (_tmp, ns, kubelet, ops) = deployed(
        cp,
        "rolling",
        &["operator-under-test"],
        None,
        serde_json::json!({}),
    )
    .await;
    let op = &ops[0];
    let admin = cp.admin().await;
    settled(&admin, &ns, "cluster-sync", op, "bootstrap", None).await;
    let target = rw_target(&admin, &ns, "cluster-sync")
        .await
        .expect("the -rw endpoint");
    let writer = cnpg_operator::testkit::writer::Writer::start(target.clone());
    let more = |n: usize| {
        let before = writer.count();
        tokio::task::block_in_place(|| writer.wait_for_more(before + n, Duration::from_secs(120)))
    };
    more(20);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let limit = Duration::from_secs(300);

    // 1. A parameter that needs a restart: every instance restarts, replicas first.
    patch_spec(
        &admin,
        &ns,
        serde_json::json!({"postgresql": {"parameters": {"max_connections": "250"}}}),
    )
    .await;
    wait_for("max_connections 250 everywhere", limit, op, || async {
        let client = app_client(&admin, &ns, "cluster-sync").await?;
        let row = client
            .query_one("SHOW max_connections", &[])
            .await
            .map_err(|e| e.to_string())?;
        let value: String = row.get(0);
        let mut pending = Vec::new();
        for i in 1..=3 {
            let name = format!("cluster-sync-{i}");
            if pod_report(&admin, &ns, &name).await?.pending_restart {
                pending.push(name);
            }
        }
        if value == "250" && pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "primary says {value}; pending restart: {pending:?}"
            ))
        }
    })
    .await;
    settled(&admin, &ns, "cluster-sync", op, "after the restart", None).await;
    more(20);

    // 2. A new image: every pod is made again with it.
    let image = "ghcr.io/cloudnative-pg/postgresql:15.99-rolling-test";
    patch_spec(&admin, &ns, serde_json::json!({ "imageName": image })).await;
    wait_for("every pod on the new image", limit, op, || async {
        let list = pods
            .list(&ListParams::default().labels("cnpg.io/podRole=instance"))
            .await
            .map_err(|e| e.to_string())?;
        let old: Vec<String> = list
            .items
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.as_deref())
                    != Some(image)
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if old.is_empty() && list.items.len() == 3 {
            Ok(())
        } else {
            Err(format!("still on the old image: {old:?}"))
        }
    })
    .await;
    settled(
        &admin,
        &ns,
        "cluster-sync",
        op,
        "after the image update",
        None,
    )
    .await;
    more(20);

    // 3. A fourth instance, and the primary lost while it is being made: it holds no
    //    commit yet, so the failover does not wait for it (listed among the synchronous
    //    standbys of this `required` cluster, it would: no quorum without it). Its PVC
    //    says `initializing` until it first runs, then `ready`.
    let primary = settled(&admin, &ns, "cluster-sync", op, "before scaling", None).await;
    patch_spec(&admin, &ns, serde_json::json!({ "instances": 4 })).await;
    let fourth = "cluster-sync-4";
    let start = std::time::Instant::now();
    while kubelet.signal_pod(&ns, fourth, nix::sys::signal::Signal::SIGSTOP) == 0 {
        assert!(
            start.elapsed() < limit,
            "{fourth} never started: {}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    let pvc_status = |name: &'static str| {
        let pvcs = pvcs.clone();
        async move {
            pvcs.get(name)
                .await
                .ok()
                .and_then(|p| p.metadata.annotations?.get("cnpg.io/pvcStatus").cloned())
                .unwrap_or_default()
        }
    };
    assert_eq!(pvc_status(fourth).await, "initializing");
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), &ns);
    wait_for(
        "the held instance shown as being made",
        limit,
        op,
        || async {
            let st = status_of(&clusters, "cluster-sync").await?;
            if st.initializing_pvc == [fourth] {
                Ok(())
            } else {
                Err(format!("initializingPVC {:?}", st.initializing_pvc))
            }
        },
    )
    .await;
    kubelet.kill_pod(&ns, &primary);
    wait_for(
        "a failover while the fourth is being made",
        limit,
        op,
        || async {
            let st = status_of(&clusters, "cluster-sync").await?;
            match (st.current_primary.as_deref(), st.target_primary.as_deref()) {
                (Some(c), Some(t)) if c == t && c != primary => Ok(()),
                _ => Err(format!(
                    "{:?} ({:?}), current {:?}, target {:?}",
                    st.phase, st.phase_reason, st.current_primary, st.target_primary
                )),
            }
        },
    )
    .await;
    more(20);
    assert_eq!(pvc_status(fourth).await, "initializing", "it was held");
    kubelet.signal_pod(&ns, fourth, nix::sys::signal::Signal::SIGCONT);
    settled(&admin, &ns, "cluster-sync", op, "the fourth made", None).await;
    assert_eq!(pvc_status(fourth).await, "ready");
    more(20);

    // 4. Scale to five, then back to three.
    patch_spec(&admin, &ns, serde_json::json!({ "instances": 5 })).await;
    settled(&admin, &ns, "cluster-sync", op, "scaled to five", None).await;
    more(20);
    patch_spec(&admin, &ns, serde_json::json!({ "instances": 3 })).await;
    settled(
        &admin,
        &ns,
        "cluster-sync",
        op,
        "scaled back to three",
        None,
    )
    .await;
    more(20);
    let left: BTreeSet<String> = pods
        .list(&ListParams::default().labels("cnpg.io/podRole=instance"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    // The events tell the story.
    let reasons = event_reasons(&admin, &ns).await;
    for r in ["RollingUpdate", "CreatingInstance", "ScaleDown"] {
        assert!(reasons.contains(r), "no {r} event in {reasons:?}");
    }

    // No acknowledged row is missing.
    no_acknowledged_row_lost(writer, target).await;
}

/// Runs `sql` with the real `psql` on `conninfo` (as us: the files are ours).
fn psql(conninfo: &str, sql: &str) -> Result<String, String> {
    cnpg_instance::testkit::psql(conninfo, sql, None, &std::env::temp_dir())
}

/// Poolers on the real control plane: the Deployment controller makes the PgBouncer pods
/// the operator asks for, the test kubelet runs `cnpg-instance pgbouncer` with the
/// machine's PgBouncer, and the application reaches the primary through the `rw` Pooler's
/// Service and a replica through the `ro` one (its password checked by `auth_query`
/// through `cnpg_pooler_pgbouncer`'s certificate); scaling changes the pods; deleting the
/// Poolers removes what they made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poolers_reach_the_primary_and_the_replicas_through_their_services() {
    use k8s_openapi::api::apps::v1::Deployment;
    let Some(cp) = ControlPlane::shared("poolers_reach_the_primary_and_the_replicas") else {
        return;
    };
    let (_tmp, ns, _kubelet, ops) = deployed(
        cp,
        "pooler",
        &["operator-under-test"],
        None,
        serde_json::json!({}),
    )
    .await;
    let op = &ops[0];
    let admin = cp.admin().await;
    settled(&admin, &ns, "cluster-sync", op, "bootstrap", None).await;
    let pooler = |name: &str, type_: &str, instances: u32| {
        format!(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Pooler\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  cluster: {{name: cluster-sync}}\n  type: {type_}\n  instances: {instances}\n  pgbouncer:\n    poolMode: transaction\n"
        )
    };
    apply_yaml(&admin, &pooler("pool-rw", "rw", 1), "test-user").await;
    // The ro pooler in session mode.
    apply_yaml(
        &admin,
        &pooler("pool-ro", "ro", 1).replace("transaction", "session"),
        "test-user",
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let limit = Duration::from_secs(300);
    let through = |name: &'static str| {
        let (admin, ns, services) = (admin.clone(), ns.clone(), services.clone());
        async move {
            let mut t = rw_target(&admin, &ns, "cluster-sync").await?;
            let svc = services.get(name).await.map_err(|e| e.to_string())?;
            t.host = svc
                .spec
                .and_then(|s| s.cluster_ip)
                .ok_or("no ClusterIP yet")?;
            let client = t.connect().await.map_err(|e| e.to_string())?;
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok::<bool, String>(row.get(0))
        }
    };
    for (name, replica) in [("pool-rw", false), ("pool-ro", true)] {
        wait_for(&format!("a client through {name}"), limit, op, || async {
            match through(name).await? {
                r if r == replica => Ok(()),
                r => Err(format!("{name} reached an instance in recovery: {r}")),
            }
        })
        .await;
    }
    let poolers: Api<cnpg_core::api::Pooler> = Api::namespaced(admin.clone(), &ns);
    // A parameter users may not set: refused by its path in the status, nothing changed.
    apply_yaml(
        &admin,
        &format!(
            "{}    parameters: {{listen_port: '1'}}\n",
            pooler("pool-rw", "rw", 1)
        ),
        "test-user",
    )
    .await;
    wait_for("the forbidden parameter refused", limit, op, || async {
        let st = poolers
            .get("pool-rw")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match st.phase_reason {
            Some(r) if r.contains("spec.pgbouncer.parameters.listen_port") => Ok(()),
            other => Err(format!("{:?}: {other:?}", st.phase)),
        }
    })
    .await;
    through("pool-rw").await.expect("still served as before");
    // Paused, a new client waits; resumed, it is served (the configuration reaches the
    // pods through their Secret volume).
    apply_yaml(
        &admin,
        &format!("{}    paused: true\n", pooler("pool-rw", "rw", 1)),
        "test-user",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let waiting = tokio::spawn(through("pool-rw"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !waiting.is_finished(),
        "a client went through a paused pooler"
    );
    apply_yaml(&admin, &pooler("pool-rw", "rw", 1), "test-user").await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("resumed within a minute")
            .expect("joins"),
        Ok(false)
    );
    // Scaling: the Deployment follows spec.instances, and the status says so.
    apply_yaml(&admin, &pooler("pool-rw", "rw", 2), "test-user").await;
    wait_for("pool-rw at two pods", limit, op, || async {
        let d = deployments
            .get("pool-rw")
            .await
            .map_err(|e| e.to_string())?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        let p = poolers.get("pool-rw").await.map_err(|e| e.to_string())?;
        let st = p.status.unwrap_or_default();
        if ready == 2 && st.instances == 2 && st.phase.as_deref() == Some("active") {
            Ok(())
        } else {
            Err(format!("{ready} ready; status {st:?}"))
        }
    })
    .await;
    through("pool-rw").await.expect("still served at two pods");
    // A switchover under a client of the rw pooler: the operator pauses the pooler's pods
    // before publishing the new target, so the client's next queries wait, then run on
    // the new primary — on the same connection, without an error.
    let old = status_of(
        &Api::<Cluster>::namespaced(admin.clone(), &ns),
        "cluster-sync",
    )
    .await
    .expect("status")
    .current_primary
    .expect("a primary");
    let to = ["cluster-sync-1", "cluster-sync-2", "cluster-sync-3"]
        .into_iter()
        .find(|i| *i != old)
        .expect("another instance");
    let mut pooled = rw_target(&admin, &ns, "cluster-sync")
        .await
        .expect("target");
    pooled.host = services
        .get("pool-rw")
        .await
        .expect("pool-rw")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let client = pooled.connect().await.expect("through pool-rw");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let ip_of = |pod: &str| {
        let pods = pods.clone();
        let pod = pod.to_owned();
        async move {
            pods.get(&pod)
                .await
                .ok()
                .and_then(|p| p.status)
                .and_then(|s| s.pod_ip)
                .unwrap_or_default()
        }
    };
    let old_ip = ip_of(&old).await;
    assert_eq!(
        server_of(&client)
            .await
            .expect("a query")
            .0
            .split('/')
            .next(),
        Some(old_ip.as_str())
    );
    let (code, _, err) = plugin(cp, &ns, &["promote", "cluster-sync", to]).await;
    assert_eq!(code, 0, "{err}");
    let new_ip = ip_of(to).await;
    let mut errors = Vec::new();
    let start = std::time::Instant::now();
    loop {
        assert!(
            !client.is_closed(),
            "the pooler closed its client's connection"
        );
        match server_of(&client).await {
            Ok((addr, false)) if addr.split('/').next() == Some(new_ip.as_str()) => break,
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        assert!(
            start.elapsed() < limit,
            "the client never reached {to}: {errors:?}\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(errors.is_empty(), "the client saw errors: {errors:?}");
    let reasons = event_reasons(&admin, &ns).await;
    assert!(
        reasons.contains("PoolersPaused") && reasons.contains("PoolersResumed"),
        "{reasons:?}"
    );
    // PgBouncer's image from a catalog's componentImages, followed when the catalog
    // changes; a key it lacks is in the Pooler's status.
    let catalog = |image: &str| {
        format!(
            "apiVersion: postgresql.cnpg.io/v1
kind: ImageCatalog
metadata: {{name: bouncers, namespace: {ns}}}
spec:
  images: [{{major: 17, image: 'example.org/postgresql:17.9'}}]
  componentImages: [{{key: pgbouncer, image: '{image}'}}]
"
        )
    };
    apply_yaml(
        &admin,
        &catalog("example.org/pgbouncer:1.24.1"),
        "test-user",
    )
    .await;
    let use_key = |key: &str| {
        kube::api::Patch::Merge(
            serde_json::json!({"spec": {"pgbouncer": {"imageCatalogRef": {
                "apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": "bouncers", "key": key
            }}}}),
        )
    };
    let patch = kube::api::PatchParams::default();
    poolers
        .patch("pool-ro", &patch, &use_key("pgbouncer"))
        .await
        .expect("patch pool-ro");
    for want in [
        "example.org/pgbouncer:1.24.1",
        "example.org/pgbouncer:1.25.0",
    ] {
        wait_for("the catalog's PgBouncer image", limit, op, || async {
            let d = deployments
                .get("pool-ro")
                .await
                .map_err(|e| e.to_string())?;
            let image = d
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|s| s.containers.into_iter().find(|c| c.name == "pgbouncer"))
                .and_then(|c| c.image);
            if image.as_deref() == Some(want) {
                Ok(())
            } else {
                Err(format!("image {image:?}"))
            }
        })
        .await;
        apply_yaml(
            &admin,
            &catalog("example.org/pgbouncer:1.25.0"),
            "test-user",
        )
        .await;
    }
    poolers
        .patch("pool-ro", &patch, &use_key("bouncer"))
        .await
        .expect("patch pool-ro");
    wait_for("the missing key in the status", limit, op, || async {
        let st = poolers
            .get("pool-ro")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match st.phase_reason {
            Some(r) if r.contains("ImageCatalog bouncers has no component image \"bouncer\"") => {
                Ok(())
            }
            r => Err(format!("{:?}: {r:?}", st.phase)),
        }
    })
    .await;
    // Deleting the Poolers: the garbage collector takes what they owned.
    for name in ["pool-rw", "pool-ro"] {
        poolers
            .delete(name, &Default::default())
            .await
            .expect("deleted");
    }
    wait_for("the poolers' objects gone", limit, op, || async {
        let left: Vec<String> = deployments
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        }
    })
    .await;
}

/// Where a client's queries run: the server's address and whether it is in recovery.
async fn server_of(client: &tokio_postgres::Client) -> Result<(String, bool), String> {
    client
        .query_one("SELECT inet_server_addr()::text, pg_is_in_recovery()", &[])
        .await
        .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
        .map_err(|e| e.to_string())
}
