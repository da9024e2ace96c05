//! `kubectl-cnpg install generate`: the manifest parses back into Kubernetes types, and its
//! CRDs are the ones checked in under `config/crd/`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn generate(args: &[&str]) -> String {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut all = vec!["kubectl-cnpg", "install", "generate"];
    all.extend(args);
    let code = cnpg_operator::plugin::run(all, &mut std::io::empty(), &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn the_manifest_parses_into_kubernetes_types() {
    let text = generate(&[
        "--operator-namespace",
        "ops",
        "--image",
        "example.org/cnpg-rs:1",
        "--replicas",
        "2",
    ]);
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).expect("each document is YAML"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    // Every CRD of the API, then the operator's account, role, binding and Deployment.
    let n = cnpg_core::api::crds().len();
    let mut want = vec!["Namespace"];
    want.extend(std::iter::repeat_n("CustomResourceDefinition", n));
    want.extend([
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ]);
    assert_eq!(kinds, want);
    let ns: Namespace = serde_json::from_value(docs[0].clone()).expect("Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some("ops"));
    let mut crds: Vec<CustomResourceDefinition> = docs[1..=n]
        .iter()
        .map(|d| serde_json::from_value(d.clone()).expect("CRD"))
        .collect();
    let _: ServiceAccount = serde_json::from_value(docs[n + 1].clone()).expect("ServiceAccount");
    let role: ClusterRole = serde_json::from_value(docs[n + 2].clone()).expect("ClusterRole");
    assert_eq!(
        role.rules.expect("rules").len(),
        cnpg_operator::kube::install::OPERATOR_PERMISSIONS.len()
            + cnpg_operator::kube::install::ADMISSION_PERMISSIONS.len()
    );
    let binding: ClusterRoleBinding = serde_json::from_value(docs[n + 3].clone()).expect("binding");
    assert_eq!(
        binding.subjects.expect("subjects")[0].namespace.as_deref(),
        Some("ops")
    );
    let d: Deployment = serde_json::from_value(docs[n + 4].clone()).expect("Deployment");
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let c = &spec.template.spec.expect("pod spec").containers[0];
    assert_eq!(c.image.as_deref(), Some("example.org/cnpg-rs:1"));

    // The CRDs are the checked-in ones.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crd");
    let mut files: Vec<CustomResourceDefinition> = std::fs::read_dir(&dir)
        .expect("config/crd")
        .map(|e| {
            let text = std::fs::read_to_string(e.expect("entry").path()).expect("readable");
            serde_saphyr::from_str(&text).expect("a CRD")
        })
        .collect();
    let key = |c: &CustomResourceDefinition| c.metadata.name.clone();
    crds.sort_by_key(key);
    files.sort_by_key(key);
    assert_eq!(
        crds, files,
        "install generate and config/crd/ differ: regenerate config/crd"
    );
}

#[test]
fn the_namespace_flag_sets_the_operator_namespace() {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cnpg_operator::plugin::run(
        ["kubectl-cnpg", "-n", "db-operators", "install", "generate"],
        &mut std::io::empty(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&out).contains("namespace: db-operators"));
}
