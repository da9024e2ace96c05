//! The example manifests of cnpg-rs, for tests and for Rust examples that embed
//! `cnpg-core`. The manifests themselves are the `*.yaml` files beside this one.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// The folder holding the example manifests.
pub fn dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every example manifest, sorted by file name.
pub fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
