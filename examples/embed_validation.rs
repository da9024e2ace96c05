//! Embedding `cnpg-core` in another controller: build a `Cluster` in code, check it with the
//! same rules as the admission webhook, and read an existing manifest.
//!
//! Run with `cargo run --example embed_validation`.

use cnpg_core::api::Validate;
use cnpg_core::api::cluster::{
    Cluster, ClusterSpec, DataDurability, PostgresConfiguration, StorageConfiguration,
    SynchronousMethod, SynchronousReplicaConfiguration,
};

fn main() {
    // A platform team's controller builds clusters from its own data...
    let mut cluster = Cluster::new(
        "orders",
        ClusterSpec {
            instances: 3,
            storage: Some(StorageConfiguration {
                size: Some("20Gi".into()),
                ..Default::default()
            }),
            postgresql: Some(PostgresConfiguration {
                synchronous: Some(SynchronousReplicaConfiguration {
                    method: SynchronousMethod::Any,
                    number: 1,
                    max_standby_names_from_cluster: None,
                    standby_names_pre: vec![],
                    standby_names_post: vec![],
                    data_durability: Some(DataDurability::Required),
                    failover_quorum: Some(true),
                    pod_failure_domain_keys: vec![],
                    node_failure_domain_keys: vec![],
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    println!("orders: {} problems", cluster.validate().len());

    // ...and gets every mistake at once, with paths, before anything reaches the API server.
    cluster.spec.max_sync_replicas = 5;
    cluster.spec.storage = None;
    for e in cluster.validate() {
        println!("  {e}");
    }

    // Existing manifests are checked the same way kubectl-cnpg validate does.
    for path in cnpg_examples::manifests() {
        let text = std::fs::read_to_string(&path).expect("example readable");
        let reports = cnpg_operator::manifests::check_text(&text).expect("example is YAML");
        for r in reports {
            let verdict = if r.is_valid() { "valid" } else { "INVALID" };
            println!("{}: {} {verdict}", path.display(), r.label());
        }
    }
}
