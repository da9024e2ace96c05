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
