//! Benchmark programs of cnpg-rs live beside this file (`cargo bench -p cnpg-benches`);
//! each prints its own figures. This library only holds what they share.
#![forbid(unsafe_code)]

/// The example manifest the manifest benchmarks check.
pub fn example(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Builds the release binaries (`cnpg-instance`, `kubectl-cnpg`, `cnpg-operator`) the
/// cluster benchmarks run, and returns their directory.
pub fn release_binaries() -> std::path::PathBuf {
    use std::path::Path;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ok = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "cnpg-instance",
            "-p",
            "cnpg-operator",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(ok.success(), "build failed");
    root.join("target/release")
}

/// What a local cluster's operator last wrote (`<state-dir>/<cluster>/status.json`).
pub fn local_status(root: &std::path::Path) -> serde_json::Value {
    std::fs::read_to_string(root.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The current primary a local status names (empty when none).
pub fn local_primary(status: &serde_json::Value) -> String {
    status["state"]["currentPrimary"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether a local status shows `n` instances healthy: one primary, every other instance
/// streaming from it.
pub fn local_converged(status: &serde_json::Value, n: usize) -> bool {
    let inst = status["instances"].as_array().cloned().unwrap_or_default();
    status["phase"] == "Cluster in healthy state"
        && inst.len() == n
        && inst
            .iter()
            .filter(|i| i["status"]["isPrimary"] == true)
            .count()
            == 1
        && inst
            .iter()
            .filter(|i| i["status"]["isPrimary"] != true)
            .all(|i| i["status"]["isWalReceiverActive"] == true)
}
