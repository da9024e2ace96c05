//! How fast manifests are checked: YAML parsing, schema walk and admission rules together
//! (`kubectl-cnpg validate`, a validating webhook), the typed rules alone, and CRD generation.
//!
//! `cargo bench -p cnpg-benches --bench manifest`

use cnpg_core::api::manifest::check_document;
use cnpg_core::api::{Cluster, Validate, crds};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn manifest(c: &mut Criterion) {
    let full = cnpg_benches::example("cluster-full.yaml");
    let minimal = cnpg_benches::example("cluster-minimal.yaml");
    let doc = cnpg_operator::manifests::parse_documents(&full)
        .expect("example parses")
        .remove(0);
    let cluster: Cluster = serde_json_value(&doc);
    // Warm the schema cache so the first sample does not pay for CRD generation.
    let _ = check_document(&doc);

    c.bench_function("check_text(cluster-full.yaml)", |b| {
        b.iter(|| cnpg_operator::manifests::check_text(black_box(&full)))
    });
    c.bench_function("check_text(cluster-minimal.yaml)", |b| {
        b.iter(|| cnpg_operator::manifests::check_text(black_box(&minimal)))
    });
    c.bench_function("check_document(cluster-full, parsed)", |b| {
        b.iter(|| check_document(black_box(&doc)))
    });
    c.bench_function("Cluster::validate (rules only)", |b| {
        b.iter(|| black_box(&cluster).validate())
    });
    c.bench_function("crds() (generate the CRDs)", |b| b.iter(crds));
}

fn serde_json_value(doc: &serde_json::Value) -> Cluster {
    serde_json::from_value(doc.clone()).expect("example is a Cluster")
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2));
    targets = manifest
}
criterion_main!(benches);
