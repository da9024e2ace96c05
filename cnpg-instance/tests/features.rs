//! The local-only build (`--no-default-features`) carries no Kubernetes client (kube-rs's
//! client and runtime, their HTTP stack): the API's types stay, as the local platform's
//! Database resources and statuses use them. `cargo tree` is the judge, and CI builds it.

use std::process::Command;

fn normal_dependencies(features: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "cnpg-instance",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(features)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kube_client_crates(tree: &str) -> Vec<&str> {
    let mut found: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("kube-client") || l.starts_with("kube-runtime"))
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn local_only_build_has_no_kubernetes_client() {
    let tree = normal_dependencies(&["--no-default-features"]);
    assert!(tree.contains("tokio-postgres"), "{tree}");
    assert_eq!(kube_client_crates(&tree), Vec::<&str>::new(), "{tree}");
}

#[test]
fn default_build_has_the_kubernetes_client() {
    let tree = normal_dependencies(&[]);
    assert!(
        kube_client_crates(&tree)
            .iter()
            .any(|l| l.starts_with("kube-client")),
        "{tree}"
    );
}
