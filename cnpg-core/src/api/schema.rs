//! Two checks over OpenAPI v3 schemas as Kubernetes uses them in CRDs.
//!
//! * [`structural_problems`]: is a CRD's schema *structural*, so that an API server accepts
//!   it (every node typed, no `$ref`, nothing new inside `allOf`/`anyOf`/`oneOf`/`not`,
//!   list-map keys required or defaulted, known formats only, ...)?
//! * [`validate_value`]: does an untyped document fit a schema? It reports unknown fields
//!   (with a "did you mean" suggestion), wrong types, enum and range violations, and missing
//!   required fields — what the API server's pruning and validation would reject — with the
//!   path of each. Running the generated CRD's own schema keeps `kubectl-cnpg validate` and
//!   the cluster in agreement by construction.

use super::validation::{ErrorKind, FieldError};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// Formats the API server knows; others are dropped with a warning at best.
const KNOWN_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// Why a string field got a boolean: kubectl reads YAML 1.1, where an unquoted
/// yes/no/on/off is one, and so do we.
pub(crate) const YAML_BOOLEAN_HINT: &str =
    " (YAML reads an unquoted on/off/yes/no as a boolean, as kubectl does: quote it, e.g. 'on')";

/// Every reason the CRD's schemas are not structural, each as `version: path: problem`.
/// Empty means an API server would accept them.
pub fn structural_problems(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut out = Vec::new();
    for v in &crd.spec.versions {
        let Some(schema) = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            out.push(format!("{}: no openAPIV3Schema", v.name));
            continue;
        };
        if schema.type_.as_deref() != Some("object") {
            out.push(format!(
                "{}: the root schema must be of type object",
                v.name
            ));
        }
        let mut problems = Vec::new();
        walk_structural(schema, "", false, &mut problems);
        out.extend(problems.into_iter().map(|p| format!("{}: {p}", v.name)));
    }
    out
}

/// Paths (`.spec.foo`) of every node marked `x-kubernetes-preserve-unknown-fields`.
pub fn preserve_unknown_fields_paths(crd: &CustomResourceDefinition) -> Vec<String> {
    fn walk(s: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
        if s.x_kubernetes_preserve_unknown_fields == Some(true) {
            out.push(if path.is_empty() {
                ".".into()
            } else {
                path.into()
            });
        }
        for (k, child) in s.properties.iter().flatten() {
            walk(child, &format!("{path}.{k}"), out);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(child)) = &s.additional_properties {
            walk(child, &format!("{path}.*"), out);
        }
        if let Some(JSONSchemaPropsOrArray::Schema(child)) = &s.items {
            walk(child, &format!("{path}[]"), out);
        }
    }
    let mut out = Vec::new();
    for v in &crd.spec.versions {
        if let Some(s) = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            walk(s, "", &mut out);
        }
    }
    out
}

fn is_int_or_string_junctor(list: &[JSONSchemaProps]) -> bool {
    list.len() == 2
        && list.iter().any(|s| s.type_.as_deref() == Some("integer"))
        && list.iter().any(|s| s.type_.as_deref() == Some("string"))
        && list.iter().all(|s| {
            s.properties.is_none()
                && s.items.is_none()
                && s.default.is_none()
                && s.description.is_none()
        })
}

fn walk_structural(s: &JSONSchemaProps, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let here = if path.is_empty() { "." } else { path };
    if s.ref_path.is_some() {
        out.push(format!("{here}: uses $ref; inline the schema"));
    }
    if s.definitions.is_some() {
        out.push(format!("{here}: has definitions; inline them"));
    }
    let int_or_string = s.x_kubernetes_int_or_string == Some(true);
    let preserve = s.x_kubernetes_preserve_unknown_fields == Some(true);
    if in_junctor {
        for (set, what) in [
            (s.type_.is_some(), "type"),
            (s.description.is_some(), "description"),
            (s.default.is_some(), "default"),
            (s.additional_properties.is_some(), "additionalProperties"),
            (s.nullable.is_some(), "nullable"),
        ] {
            if set {
                out.push(format!("{here}: sets {what} inside allOf/anyOf/oneOf/not"));
            }
        }
    } else if s.type_.as_deref().unwrap_or("").is_empty() && !int_or_string && !preserve {
        out.push(format!("{here}: has no type"));
    }
    if int_or_string && s.type_.is_some() {
        out.push(format!(
            "{here}: x-kubernetes-int-or-string must not also set a type"
        ));
    }
    if s.unique_items == Some(true) {
        out.push(format!("{here}: uniqueItems: true is not allowed in CRDs"));
    }
    if let Some(f) = &s.format
        && !KNOWN_FORMATS.contains(&f.as_str())
    {
        out.push(format!("{here}: unknown format {f:?}"));
    }
    if s.properties.is_some() && s.additional_properties.is_some() {
        out.push(format!(
            "{here}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if matches!(
        s.additional_properties,
        Some(JSONSchemaPropsOrBool::Bool(false))
    ) {
        out.push(format!(
            "{here}: additionalProperties: false is not allowed"
        ));
    }
    match s.type_.as_deref() {
        Some("array") => match &s.items {
            Some(JSONSchemaPropsOrArray::Schema(_)) => {}
            Some(JSONSchemaPropsOrArray::Schemas(_)) => {
                out.push(format!("{here}: items must be a single schema"))
            }
            None if !in_junctor => out.push(format!("{here}: array without items")),
            None => {}
        },
        Some("object") | None => {}
        Some(t @ ("string" | "integer" | "number" | "boolean")) => {
            if s.properties.is_some() || s.items.is_some() {
                out.push(format!("{here}: a {t} node has properties or items"));
            }
        }
        Some(other) => out.push(format!("{here}: unknown type {other:?}")),
    }
    // Defaults must fit the schema they sit in.
    if let Some(default) = &s.default {
        let mut errs = Vec::new();
        validate_value(s, &default.0, here, &mut errs);
        for e in errs {
            out.push(format!("{here}: default does not fit the schema ({e})"));
        }
    }
    // List-map keys must be present in every item: required or defaulted.
    if s.x_kubernetes_list_type.as_deref() == Some("map") {
        let keys = s.x_kubernetes_list_map_keys.clone().unwrap_or_default();
        if keys.is_empty() {
            out.push(format!(
                "{here}: x-kubernetes-list-type map without list-map-keys"
            ));
        }
        if let Some(JSONSchemaPropsOrArray::Schema(item)) = &s.items {
            let required = item.required.clone().unwrap_or_default();
            for k in keys {
                let defaulted = item
                    .properties
                    .as_ref()
                    .and_then(|p| p.get(&k))
                    .is_some_and(|p| p.default.is_some());
                if !required.contains(&k) && !defaulted {
                    out.push(format!(
                        "{here}: list-map key {k:?} must be required or have a default"
                    ));
                }
            }
        }
    }
    for (k, child) in s.properties.iter().flatten() {
        walk_structural(child, &format!("{path}.{k}"), in_junctor, out);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = &s.additional_properties {
        walk_structural(child, &format!("{path}.*"), in_junctor, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(child)) = &s.items {
        walk_structural(child, &format!("{path}[]"), in_junctor, out);
    }
    for (name, list) in [
        ("allOf", &s.all_of),
        ("anyOf", &s.any_of),
        ("oneOf", &s.one_of),
    ] {
        let Some(list) = list else { continue };
        if int_or_string && name != "oneOf" && is_int_or_string_junctor(list) {
            continue;
        }
        for (i, child) in list.iter().enumerate() {
            // Everything a junctor constrains must also be specified outside it.
            for key in child.properties.iter().flatten().map(|(k, _)| k) {
                if !s.properties.as_ref().is_some_and(|p| p.contains_key(key)) {
                    out.push(format!("{here}: {name}[{i}] introduces property {key:?}"));
                }
            }
            walk_structural(child, &format!("{path}.{name}[{i}]"), true, out);
        }
    }
    if let Some(not) = &s.not {
        walk_structural(not, &format!("{path}.not"), true, out);
    }
}

/// Appends a path segment for an object key: `a.b`, or `a["b.c"]` when the key has
/// characters that would make the dotted form ambiguous.
pub fn child_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
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

/// The candidate closest to `given`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Compare without case and separators, so `in_role` finds `inRoles` and
    // `maxsyncreplicas` finds `maxSyncReplicas`.
    fn norm(s: &str) -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    }
    let given_norm = norm(given);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = strsim::levenshtein(&given_norm, &norm(c));
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let limit = (given_norm.chars().count() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
}

/// Checks `value` against `schema`, appending every problem under `path`.
///
/// `null` is accepted anywhere, as the API server prunes nulls of non-nullable fields.
pub fn validate_value(
    schema: &JSONSchemaProps,
    value: &Value,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if value.is_null() {
        return;
    }
    let here = if path.is_empty() { "." } else { path };
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errs.push(FieldError::new(
                here,
                ErrorKind::WrongType,
                format!(
                    "expected an integer or a string (such as \"1Gi\"), got {} {}",
                    type_name(value),
                    short(value)
                ),
            ));
        }
        return;
    }
    if let Some(allowed) = &schema.enum_ {
        let ok = allowed.iter().any(|a| a.0 == *value);
        if !ok && !value.is_object() && !value.is_array() {
            let names: Vec<String> = allowed
                .iter()
                .filter(|a| !a.0.is_null())
                .map(|a| {
                    a.0.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| a.0.to_string())
                })
                .collect();
            let hint = value
                .as_str()
                .and_then(|s| did_you_mean(s, names.iter().map(String::as_str)))
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            errs.push(FieldError::invalid(
                here,
                format!(
                    "{} is not one of the allowed values: {}{hint}",
                    short(value),
                    names.join(", ")
                ),
            ));
            return;
        }
    }
    let expected = schema.type_.as_deref();
    let fits = match (expected, value) {
        (None, _) => true,
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("number"), Value::Number(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !fits {
        let want = match expected {
            Some("object") => "an object",
            Some("array") => "a list",
            Some("string") => "a string",
            Some("boolean") => "a boolean (true or false)",
            Some("integer") => "an integer",
            Some("number") => "a number",
            _ => "something else",
        };
        let hint = if value.is_boolean() && expected == Some("string") {
            YAML_BOOLEAN_HINT
        } else {
            ""
        };
        errs.push(FieldError::new(
            here,
            ErrorKind::WrongType,
            format!(
                "expected {want}, got {} {}{hint}",
                type_name(value),
                short(value)
            ),
        ));
        return;
    }
    match value {
        Value::Object(map) => {
            for key in schema.required.iter().flatten() {
                if !map.contains_key(key) {
                    errs.push(FieldError::required(
                        child_path(path, key),
                        format!("{key} is required here"),
                    ));
                }
            }
            for (key, child) in map {
                let cpath = child_path(path, key);
                if let Some(prop) = schema.properties.as_ref().and_then(|p| p.get(key)) {
                    validate_value(prop, child, &cpath, errs);
                } else if let Some(JSONSchemaPropsOrBool::Schema(ap)) =
                    &schema.additional_properties
                {
                    validate_value(ap, child, &cpath, errs);
                } else if schema.x_kubernetes_preserve_unknown_fields == Some(true)
                    || matches!(
                        schema.additional_properties,
                        Some(JSONSchemaPropsOrBool::Bool(true))
                    )
                {
                } else {
                    let known: Vec<&str> = schema
                        .properties
                        .iter()
                        .flatten()
                        .map(|(k, _)| k.as_str())
                        .collect();
                    let msg = match did_you_mean(key, known.iter().copied()) {
                        Some(s) => format!("{key:?} is not a field here (did you mean {s:?}?)"),
                        None if known.is_empty() => {
                            format!("{key:?} is not a field here; this object takes no fields")
                        }
                        None => format!("{key:?} is not a field here"),
                    };
                    errs.push(FieldError::new(cpath, ErrorKind::UnknownField, msg));
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, child) in items.iter().enumerate() {
                    validate_value(item, child, &format!("{path}[{i}]"), errs);
                }
            }
            if let Some(min) = schema.min_items
                && (items.len() as i64) < min
            {
                errs.push(FieldError::invalid(
                    here,
                    format!("needs at least {min} items"),
                ));
            }
            if let Some(max) = schema.max_items
                && (items.len() as i64) > max
            {
                errs.push(FieldError::invalid(
                    here,
                    format!("takes at most {max} items"),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.minimum
                && x < min
            {
                errs.push(FieldError::invalid(
                    here,
                    format!("{n} is less than the minimum {min}"),
                ));
            }
            if let Some(max) = schema.maximum
                && x > max
            {
                errs.push(FieldError::invalid(
                    here,
                    format!("{n} is greater than the maximum {max}"),
                ));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as i64;
            if let Some(min) = schema.min_length
                && len < min
            {
                errs.push(FieldError::invalid(
                    here,
                    format!("must be at least {min} characters long"),
                ));
            }
            if let Some(max) = schema.max_length
                && len > max
            {
                errs.push(FieldError::invalid(
                    here,
                    format!("must be at most {max} characters long"),
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> JSONSchemaProps {
        serde_json::from_value(v).expect("test schema")
    }

    #[test]
    fn suggestions_catch_typos_and_case() {
        let c = ["instances", "maxSyncReplicas", "minSyncReplicas", "storage"];
        assert_eq!(did_you_mean("instance", c), Some("instances"));
        assert_eq!(did_you_mean("maxsyncreplicas", c), Some("maxSyncReplicas"));
        assert_eq!(did_you_mean("storag", c), Some("storage"));
        assert_eq!(did_you_mean("completelyDifferent", c), None);
        assert_eq!(
            did_you_mean("in_role", ["inRoles", "inherit"]),
            Some("inRoles")
        );
    }

    #[test]
    fn reports_unknown_wrong_type_enum_range_required() {
        let s = schema(json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["any", "first"]},
                "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "boolean"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "size": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}
            }
        }));
        let doc = json!({
            "count": 0, "mode": "anyy", "nme": "x",
            "items": [{"a": true}, {"a": "yes"}],
            "labels": {"cnpg.io/x": 3},
            "size": [1]
        });
        let mut errs = Vec::new();
        validate_value(&s, &doc, "spec", &mut errs);
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let text = got.join("\n");
        assert!(text.contains("spec.name: required"), "{text}");
        assert!(
            text.contains("spec.count: invalid: 0 is less than the minimum 1"),
            "{text}"
        );
        assert!(
            text.contains("spec.mode: invalid") && text.contains("did you mean \"any\""),
            "{text}"
        );
        assert!(
            text.contains("spec.nme: unknown field") && text.contains("did you mean \"name\""),
            "{text}"
        );
        assert!(
            text.contains("spec.items[1].a: wrong type: expected a boolean"),
            "{text}"
        );
        assert!(
            text.contains("spec.labels[\"cnpg.io/x\"]: wrong type: expected a string"),
            "{text}"
        );
        assert!(text.contains("spec.size: wrong type"), "{text}");
        assert_eq!(errs.len(), 7, "{text}");
    }

    #[test]
    fn structural_check_finds_non_structural_nodes() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Thing", "plural": "things"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "a": {"$ref": "#/definitions/A"},
                        "b": {"description": "no type"},
                        "c": {"type": "array"},
                        "d": {"type": "object", "anyOf": [{"type": "object", "properties": {"x": {"type": "string"}}}]},
                        "e": {"type": "integer", "format": "uint32"},
                        "f": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
                        "g": {"type": "integer", "default": "x"},
                        "h": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
                              "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                        "ok": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}
                    }
                }}}]}
        }))
        .expect("test CRD");
        let problems = structural_problems(&crd).join("\n");
        for needle in [
            ".a: uses $ref",
            ".b: has no type",
            ".c: array without items",
            ".d: anyOf[0] introduces property \"x\"",
            ".d.anyOf[0]: sets type inside",
            ".e: unknown format \"uint32\"",
            ".f: uniqueItems",
            ".g: default does not fit",
            ".h: list-map key \"k\" must be required or have a default",
        ] {
            assert!(
                problems.contains(needle),
                "missing {needle:?} in:\n{problems}"
            );
        }
        assert!(!problems.contains(".ok"), "{problems}");
    }
}
