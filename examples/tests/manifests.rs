//! Every example manifest is valid, deserializes into its typed resource, and survives a
//! typed round trip (serialize, check again) unchanged in meaning.

use cnpg_core::api::manifest::check_document;
use cnpg_core::api::{Backup, Cluster, Pooler, ScheduledBackup, Validate};
use serde_json::Value;

fn round_trip<T>(doc: &Value) -> Value
where
    T: serde::de::DeserializeOwned + serde::Serialize + Validate,
{
    let typed: T = serde_json::from_value(doc.clone()).expect("example deserializes");
    assert!(typed.validate().is_empty());
    serde_json::to_value(&typed).expect("serializes")
}

#[test]
fn examples_are_valid_and_round_trip() {
    let files = cnpg_examples::manifests();
    let mut kinds = std::collections::BTreeSet::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        for doc in cnpg_operator::manifests::parse_documents(&text).expect("YAML") {
            let report = check_document(&doc);
            assert!(
                report.is_valid(),
                "{}: {:#?}",
                path.display(),
                report.errors
            );
            let kind = doc["kind"].as_str().expect("kind").to_owned();
            let again = match kind.as_str() {
                "Cluster" => round_trip::<Cluster>(&doc),
                "Pooler" => round_trip::<Pooler>(&doc),
                "Backup" => round_trip::<Backup>(&doc),
                "ScheduledBackup" => round_trip::<ScheduledBackup>(&doc),
                other => panic!("unexpected kind {other}"),
            };
            let report = check_document(&again);
            assert!(
                report.is_valid(),
                "{} after a round trip: {:#?}",
                path.display(),
                report.errors
            );
            kinds.insert(kind);
        }
    }
    assert_eq!(kinds.len(), 4, "examples cover every kind: {kinds:?}");
}

#[test]
fn defaults_match_upstream() {
    let text = std::fs::read_to_string(cnpg_examples::dir().join("cluster-minimal.yaml"))
        .expect("readable");
    let doc = cnpg_operator::manifests::parse_documents(&text)
        .expect("YAML")
        .remove(0);
    let c: Cluster = serde_json::from_value(doc).expect("typed");
    let s = &c.spec;
    assert_eq!(
        (
            s.instances,
            s.start_delay,
            s.stop_delay,
            s.switchover_delay,
            s.failover_delay
        ),
        (1, 3600, 1800, 3600, 0)
    );
    assert_eq!(
        (s.smart_shutdown_timeout, s.postgres_uid, s.postgres_gid),
        (180, 26, 26)
    );
    assert_eq!(
        serde_json::to_value(s.primary_update_strategy).expect("json"),
        "unsupervised"
    );
    assert_eq!(
        serde_json::to_value(s.primary_update_method).expect("json"),
        "restart"
    );
    assert_eq!(serde_json::to_value(s.log_level).expect("json"), "info");
}
