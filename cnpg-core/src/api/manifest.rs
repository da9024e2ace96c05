//! Checking an untyped manifest document: is it one of our resources, does it fit the CRD
//! schema, and does it pass the admission rules?
//!
//! This is what `kubectl-cnpg validate` runs on each YAML document, and what a validating
//! webhook would run: all problems of a document come back together.

use super::schema::{child_path, did_you_mean, validate_value};
use super::validation::{ErrorKind, FieldError, Validate};
use super::{
    API_VERSION, Backup, Cluster, ClusterImageCatalog, Database, GROUP, ImageCatalog, Pooler,
    ScheduledBackup,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::OnceLock;

/// The kinds this crate knows.
pub const KINDS: [&str; 7] = [
    "Cluster",
    "Pooler",
    "Backup",
    "ScheduledBackup",
    "Database",
    "ImageCatalog",
    "ClusterImageCatalog",
];

/// What was found in one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentReport {
    /// `kind`, when the document has one.
    pub kind: Option<String>,
    /// `metadata.name`, when the document has one.
    pub name: Option<String>,
    /// Every problem found; empty means valid.
    pub errors: Vec<FieldError>,
    /// Set when the document is another API's resource (a Secret, a Deployment...): it is
    /// not checked, and this says why.
    pub skipped: Option<String>,
}

impl DocumentReport {
    /// Whether the document is valid.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Kind/name` for messages (`Cluster/pg`, `document`).
    pub fn label(&self) -> String {
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => format!("{k}/{n}"),
            (Some(k), None) => format!("{k} (no name)"),
            _ => "document".to_owned(),
        }
    }
}

fn schemas() -> &'static [(&'static str, JSONSchemaProps); KINDS.len()] {
    static SCHEMAS: OnceLock<[(&'static str, JSONSchemaProps); KINDS.len()]> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let root = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            crd.spec
                .versions
                .into_iter()
                .next()
                .and_then(|v| v.schema)
                .and_then(|s| s.open_api_v3_schema)
                .expect("kube-derive always emits a schema for the single version")
        };
        [
            ("Cluster", root(Cluster::crd())),
            ("Pooler", root(Pooler::crd())),
            ("Backup", root(Backup::crd())),
            ("ScheduledBackup", root(ScheduledBackup::crd())),
            ("Database", root(Database::crd())),
            ("ImageCatalog", root(ImageCatalog::crd())),
            ("ClusterImageCatalog", root(ClusterImageCatalog::crd())),
        ]
    })
}

/// Checks one parsed document (as JSON values) and returns everything wrong with it.
pub fn check_document(doc: &Value) -> DocumentReport {
    let mut report = DocumentReport::default();
    let Some(obj) = doc.as_object() else {
        report.errors.push(FieldError::new(
            ".",
            ErrorKind::WrongType,
            format!(
                "a manifest must be a mapping with apiVersion, kind, metadata and spec; got {}",
                kind_of(doc)
            ),
        ));
        return report;
    };
    report.kind = obj.get("kind").and_then(Value::as_str).map(str::to_owned);
    report.name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);

    match obj.get("apiVersion") {
        None => report.errors.push(FieldError::required(
            "apiVersion",
            format!("add apiVersion: {API_VERSION}"),
        )),
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) if v.starts_with(&format!("{GROUP}/")) => {
            report.errors.push(FieldError::invalid(
                "apiVersion",
                format!("{v:?} is not served; use {API_VERSION}"),
            ))
        }
        Some(Value::String(v)) if is_other_api(v) => {
            report.skipped = Some(format!("{v} is not a CloudNativePG API; not checked"));
            return report;
        }
        Some(v) => report.errors.push(FieldError::invalid(
            "apiVersion",
            format!(
                "{} is not a CloudNativePG API version; use {API_VERSION}",
                short(v)
            ),
        )),
    }
    let kind = match obj.get("kind") {
        None => {
            report.errors.push(FieldError::required(
                "kind",
                format!("add kind: one of {}", KINDS.join(", ")),
            ));
            return report;
        }
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => k.as_str(),
        Some(k) => {
            let hint = k
                .as_str()
                .and_then(|s| did_you_mean(s, KINDS))
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            report.errors.push(FieldError::invalid(
                "kind",
                format!("{} is not one of {}{hint}", short(k), KINDS.join(", ")),
            ));
            return report;
        }
    };

    check_metadata(obj.get("metadata"), &mut report.errors);
    let (_, schema) = schemas()
        .iter()
        .find(|(k, _)| *k == kind)
        .expect("kind was checked against KINDS");
    let mut body = serde_json::Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            _ => {
                body.insert(key.clone(), value.clone());
            }
        }
    }
    validate_value(schema, &Value::Object(body), "", &mut report.errors);

    // The typed rules run whenever the document deserializes, even beside schema errors,
    // so one run reports everything. Nulls are pruned first, as the API server does.
    let pruned = prune_nulls(doc.clone());
    let rule_errors = match kind {
        "Cluster" => typed::<Cluster>(pruned),
        "Pooler" => typed::<Pooler>(pruned),
        "Backup" => typed::<Backup>(pruned),
        "Database" => typed::<Database>(pruned),
        "ImageCatalog" => typed::<ImageCatalog>(pruned),
        "ClusterImageCatalog" => typed::<ClusterImageCatalog>(pruned),
        _ => typed::<ScheduledBackup>(pruned),
    };
    for e in rule_errors {
        // A type error the schema walk already reported is not repeated.
        if e.kind == ErrorKind::WrongType && report.errors.iter().any(|r| r.path == e.path) {
            continue;
        }
        if !report.errors.contains(&e) {
            report.errors.push(e);
        }
    }
    report
}

/// A well-formed `group/version` (or core `v1`) of some other API. A group that is only a
/// typo away from ours is not "other": it is reported as an error.
fn is_other_api(api_version: &str) -> bool {
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let well_formed = !version.is_empty()
        && version.starts_with('v')
        && api_version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'/');
    well_formed && group != GROUP && strsim::levenshtein(group, GROUP) > 3
}

fn typed<T: DeserializeOwned + Validate>(doc: Value) -> Vec<FieldError> {
    match serde_path_to_error::deserialize::<_, T>(doc) {
        Ok(resource) => resource.validate(),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde reports missing fields at the parent; schema validation reports them
            // precisely, so only type mismatches are worth repeating here.
            if inner.starts_with("missing field") {
                Vec::new()
            } else {
                vec![FieldError::new(path, ErrorKind::WrongType, inner)]
            }
        }
    }
}

fn check_metadata(meta: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(meta) = meta else {
        errs.push(FieldError::required(
            "metadata",
            "add metadata with at least a name",
        ));
        return;
    };
    let Some(m) = meta.as_object() else {
        errs.push(FieldError::new(
            "metadata",
            ErrorKind::WrongType,
            format!("expected an object, got {}", kind_of(meta)),
        ));
        return;
    };
    match m.get("name") {
        None if m.get("generateName").is_none() => {
            errs.push(FieldError::required("metadata.name", "name the resource"))
        }
        Some(Value::String(_)) | None => {}
        Some(v) => errs.push(FieldError::new(
            "metadata.name",
            ErrorKind::WrongType,
            expected_string(v),
        )),
    }
    for key in ["namespace", "generateName"] {
        if let Some(v) = m.get(key)
            && !v.is_string()
        {
            errs.push(FieldError::new(
                format!("metadata.{key}"),
                ErrorKind::WrongType,
                expected_string(v),
            ));
        }
    }
    for key in ["labels", "annotations"] {
        match m.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    if !v.is_string() {
                        errs.push(FieldError::new(
                            child_path(&format!("metadata.{key}"), k),
                            ErrorKind::WrongType,
                            format!(
                                "expected a string, got {} (quote it: \"{}\")",
                                kind_of(v),
                                v
                            ),
                        ));
                    }
                }
            }
            Some(v) => errs.push(FieldError::new(
                format!("metadata.{key}"),
                ErrorKind::WrongType,
                format!("expected a map of strings, got {}", kind_of(v)),
            )),
        }
    }
}

fn prune_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, prune_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(prune_nulls).collect()),
        other => other,
    }
}

/// A metadata string that is not one, with how to write it (a boolean or a number:
/// quoted).
fn expected_string(v: &Value) -> String {
    match v {
        Value::Bool(_) => format!(
            "expected a string, got a boolean {v}{}",
            super::schema::YAML_BOOLEAN_HINT
        ),
        Value::Number(_) => format!("expected a string, got a number (quote it: \"{v}\")"),
        _ => format!("expected a string, got {}", kind_of(v)),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(doc: Value) -> Vec<String> {
        check_document(&doc)
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn cluster(spec: Value) -> Value {
        json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "pg"}, "spec": spec})
    }

    #[test]
    fn a_poolers_image_is_accepted_as_upstreams_samples_give_it() {
        let pooler = |bouncer: Value| {
            json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Pooler", "metadata": {"name": "p"},
                   "spec": {"cluster": {"name": "pg"}, "pgbouncer": bouncer}})
        };
        assert_eq!(
            errors(pooler(
                json!({"image": "ghcr.io/cloudnative-pg/pgbouncer:1.25.1"})
            )),
            Vec::<String>::new()
        );
        let catalog = json!({"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": "c", "key": "pgbouncer"});
        assert_eq!(
            errors(pooler(json!({"imageCatalogRef": catalog.clone()}))),
            Vec::<String>::new()
        );
        let both = errors(pooler(json!({"image": "x", "imageCatalogRef": catalog})));
        assert!(
            both.iter()
                .any(|e| e.contains("spec.pgbouncer.image") && e.contains("exclusive")),
            "{both:?}"
        );
    }

    #[test]
    fn minimal_cluster_is_valid() {
        assert_eq!(
            errors(cluster(json!({"instances": 3, "storage": {"size": "1Gi"}}))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn reports_all_problems_of_a_document_at_once() {
        let errs = errors(cluster(json!({
            "instances": "three",
            "storage": {"size": "1Gi"},
            "minSyncReplicas": 2, "maxSyncReplicas": 1,
            "postgresql": {"parameters": {"port": "5433"}},
            "enablePdb": true
        })));
        let text = errors_text(&errs);
        assert!(
            text.contains(
                "spec.instances: wrong type: expected an integer, got a string \"three\""
            ),
            "{text}"
        );
        assert!(
            text.contains("spec.enablePdb: unknown field")
                && text.contains("did you mean \"enablePDB\""),
            "{text}"
        );
        // The type error stops typed deserialization, so rule errors need a typed document;
        // the schema errors are all there.
        let fixed = errors(cluster(json!({
            "instances": 3,
            "storage": {"size": "1Gi"},
            "minSyncReplicas": 2, "maxSyncReplicas": 1,
            "postgresql": {"parameters": {"port": "5433"}},
            "enablePdb": true
        })));
        let text = errors_text(&fixed);
        assert!(text.contains("spec.enablePdb: unknown field"), "{text}");
        assert!(
            text.contains("spec.minSyncReplicas: invalid: 2 is greater than maxSyncReplicas (1)"),
            "{text}"
        );
        assert!(
            text.contains(
                "spec.postgresql.parameters.port: invalid: port is managed by the operator"
            ),
            "{text}"
        );
        assert_eq!(fixed.len(), 3, "{text}");
    }

    fn errors_text(e: &[String]) -> String {
        e.join("\n")
    }

    #[test]
    fn wrong_api_version_and_kind() {
        let text = errors(json!({"apiVersion": "postgresql.cnpg.io/v2", "kind": "Clster", "metadata": {"name": "x"}})).join("\n");
        assert!(
            text.contains("apiVersion: invalid: \"postgresql.cnpg.io/v2\" is not served"),
            "{text}"
        );
        assert!(
            text.contains("kind: invalid") && text.contains("did you mean \"Cluster\""),
            "{text}"
        );
    }

    #[test]
    fn non_objects_and_metadata_problems() {
        assert!(errors(json!([1, 2]))[0].contains("must be a mapping"));
        let text = errors(
            json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
            "metadata": {"labels": {"a": 1}}, "spec": {"cluster": {"name": "pg"}}}),
        )
        .join("\n");
        assert!(text.contains("metadata.name: required"), "{text}");
        assert!(text.contains("metadata.labels.a: wrong type"), "{text}");
    }

    #[test]
    fn other_apis_are_skipped_but_near_misses_are_errors() {
        let secret = check_document(
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
        );
        assert!(secret.is_valid() && secret.skipped.is_some(), "{secret:?}");
        let typo = check_document(
            &json!({"apiVersion": "postgresqlx.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "s"}}),
        );
        assert!(!typo.is_valid() && typo.skipped.is_none(), "{typo:?}");
    }

    #[test]
    fn nulls_are_pruned_like_the_api_server_does() {
        assert_eq!(
            errors(cluster(
                json!({"instances": null, "storage": {"size": "1Gi"}, "description": null})
            )),
            Vec::<String>::new()
        );
    }
}
