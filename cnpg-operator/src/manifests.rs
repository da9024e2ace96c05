//! Manifest files: multi-document YAML in, checked documents out; CRDs out as YAML.

use cnpg_core::api::manifest::{DocumentReport, check_document};
use serde_json::Value;

/// A file could not be read as YAML at all.
#[derive(Debug, thiserror::Error)]
#[error("not valid YAML: {0}")]
pub struct YamlError(String);

/// Parses every YAML document of `text` (separated by `---`). Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    serde_saphyr::from_multiple::<Value>(text).map_err(|e| YamlError(e.to_string()))
}

/// Parses and checks every document of `text`.
pub fn check_text(text: &str) -> Result<Vec<DocumentReport>, YamlError> {
    Ok(parse_documents(text)?.iter().map(check_document).collect())
}

/// The four CustomResourceDefinitions as one multi-document YAML stream, in the order of
/// `cnpg_core::api::crds()`. This is what `kubectl-cnpg install crds` prints and what is
/// checked in under `config/crd/`.
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Each CRD as `(file name, YAML)`, named like upstream's `config/crd/bases`
/// (`postgresql.cnpg.io_clusters.yaml`).
pub fn crd_files() -> Vec<(String, String)> {
    cnpg_core::api::crds()
        .iter()
        .map(|crd| {
            let yaml =
                serde_saphyr::to_string(crd).expect("a CRD is plain data and always serializes");
            (
                format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural),
                yaml,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    #[test]
    fn crd_yaml_round_trips_to_the_same_crds() {
        let yaml = crds_yaml();
        let back: Vec<CustomResourceDefinition> =
            serde_saphyr::from_multiple(&yaml).expect("our own YAML parses");
        assert_eq!(back, cnpg_core::api::crds());
    }

    #[test]
    fn multi_document_streams_are_split_and_empty_documents_skipped() {
        let reports = check_text(
            "---\napiVersion: postgresql.cnpg.io/v1\nkind: Backup\nmetadata: {name: b}\nspec: {cluster: {name: pg}}\n---\n---\nkind: Nope\n",
        )
        .expect("yaml");
        assert_eq!(reports.len(), 2);
        assert!(reports[0].is_valid(), "{:?}", reports[0]);
        assert!(!reports[1].is_valid());
    }

    #[test]
    fn yaml_1_1_booleans_read_as_kubectl_reads_them() {
        let v = &parse_documents("a: yes\nb: on\nc: No\nd: OFF\ne: 'yes'\nf: \"on\"\n")
            .expect("yaml")[0];
        assert_eq!(v["a"], true);
        assert_eq!(v["b"], true);
        assert_eq!(v["c"], false);
        assert_eq!(v["d"], false);
        assert_eq!(v["e"], "yes");
        assert_eq!(v["f"], "on");
        // A boolean field takes one; a string field says how to write it.
        let reports = check_text(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg}\nspec:\n  instances: 1\n  enableSuperuserAccess: yes\n  postgresql:\n    parameters: {autovacuum: on}\n  storage: {size: 1Gi}\n",
        )
        .expect("yaml");
        let text = format!("{:?}", reports[0].errors);
        assert_eq!(reports[0].errors.len(), 1, "{text}");
        assert!(
            text.contains("spec.postgresql.parameters.autovacuum") && text.contains("quote it"),
            "{text}"
        );
        // So does the name (`name: on`, `name: 2026`).
        for (name, hint) in [
            ("on", "quote it, e.g. 'on'"),
            ("2026", "got a number (quote it"),
        ] {
            let reports = check_text(&format!(
                "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  instances: 1\n  storage: {{size: 1Gi}}\n"
            ))
            .expect("yaml");
            let text = format!("{:?}", reports[0].errors);
            assert!(
                text.contains("metadata.name") && text.contains(hint),
                "{text}"
            );
        }
    }

    #[test]
    fn broken_yaml_is_an_error_not_a_panic() {
        assert!(check_text("a: [1, 2\nb: {").is_err());
    }

    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-zA-Z0-9_./:@ -]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("instances".to_owned()),
                        Just("storage".to_owned()),
                        Just("size".to_owned()),
                        Just("postgresql".to_owned()),
                        Just("synchronous".to_owned()),
                        Just("bootstrap".to_owned()),
                        Just("parameters".to_owned()),
                        Just("cluster".to_owned()),
                        Just("name".to_owned()),
                        "[a-zA-Z_]{1,10}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whatever the text, checking it returns a result: never a panic.
        #[test]
        fn any_text_never_panics(text in "\\PC{0,200}") {
            let _ = check_text(&text);
        }

        /// Any document shaped like one of our resources, with arbitrary content, is checked
        /// without panicking, and every problem names a path.
        #[test]
        fn any_document_never_panics(
            kind in prop_oneof![Just("Cluster"), Just("Pooler"), Just("Backup"), Just("ScheduledBackup"), Just("Other")],
            name in prop_oneof![Just(Value::from("pg")), json_value()],
            spec in json_value(),
        ) {
            let doc = serde_json::json!({
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": spec,
            });
            let report = cnpg_core::api::manifest::check_document(&doc);
            for e in &report.errors {
                prop_assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
            }
            // The YAML round trip must not panic either.
            let yaml = serde_saphyr::to_string(&doc).expect("values serialize");
            let _ = check_text(&yaml);
        }
    }
}
