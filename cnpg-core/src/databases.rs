//! `Database` resources: what the primary's instance manager runs so a database, and the
//! schemas, extensions, foreign data wrappers and foreign servers in it, match the spec.
//!
//! The host reads the database as it is ([`DbDatabase`], from `pg_database`) and, when it
//! takes connections, what is in it ([`DbObjects`]); [`plan_database`] and [`plan_objects`]
//! say what to run. Each [`Step`] is one object's statements with the reason a person reads
//! in the log; the host runs each statement on its own (`CREATE DATABASE` refuses to run in
//! a transaction block, which a multi-statement string is), stops an object's statements at
//! its first error and carries on with the next object, so one object PostgreSQL refuses
//! never holds up the others. [`status`] turns what failed into upstream's status.
//!
//! As upstream: the fields only `CREATE DATABASE` takes (template, encoding, locales) are
//! used when the database is made and never compared afterwards; a field the spec leaves
//! out is left as it is in PostgreSQL; a database or object `absent` is dropped if there;
//! `databaseReclaimPolicy: delete` drops the database when its object is deleted.

use crate::api::database::{
    DatabaseObjectStatus, DatabaseReclaimPolicy, DatabaseSpec, DatabaseStatus, OptionSpec,
    UsageSpec, UsageType,
};
use crate::roles::{EnsureOption, ident, literal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A `Database` of the cluster as the host hands it to the instance manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Managed {
    /// The object's `metadata.name` (its status is reported under it).
    pub object: String,
    /// The object's `metadata.generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The object is being deleted: its reclaim policy applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// Its spec.
    pub spec: DatabaseSpec,
}

/// A database as PostgreSQL has it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbDatabase {
    /// `datname`.
    pub name: String,
    /// The owner's role name.
    pub owner: String,
    /// `datallowconn`.
    pub allow_connections: bool,
    /// `datistemplate`.
    pub is_template: bool,
    /// `datconnlimit`.
    pub connection_limit: i32,
    /// The default tablespace's name.
    pub tablespace: String,
}

/// What is in a database, as far as a `Database` manages it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbObjects {
    /// Schema name → owner.
    pub schemas: BTreeMap<String, String>,
    /// Extension name → (version, schema).
    pub extensions: BTreeMap<String, (String, String)>,
    /// Foreign data wrapper name → what it has.
    pub fdws: BTreeMap<String, DbFdw>,
    /// Foreign server name → (its wrapper, its options).
    pub servers: BTreeMap<String, (String, BTreeMap<String, String>)>,
}

/// A foreign data wrapper as PostgreSQL has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbFdw {
    /// The owner's role name.
    pub owner: String,
    /// The handler function (`-` for none).
    pub handler: String,
    /// The validator function (`-` for none).
    pub validator: String,
    /// `fdwoptions`.
    pub options: BTreeMap<String, String>,
}

/// Which list of the spec an object is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `spec.schemas`.
    Schema,
    /// `spec.extensions`.
    Extension,
    /// `spec.fdws`.
    Fdw,
    /// `spec.servers`.
    Server,
}

/// One object's statements, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The object's kind (`None`: the database itself).
    pub kind: Option<ObjectKind>,
    /// The object's name (the database's for the database).
    pub name: String,
    /// What the statements do, for the log.
    pub reason: String,
    /// Run one by one, each on its own.
    pub statements: Vec<String>,
}

/// What the spec asks of the database itself, given what PostgreSQL has (`None`: no such
/// database). `deleting`: the object is being deleted, so a `delete` reclaim policy drops
/// the database. `None` when nothing is to change.
pub fn plan_database(
    spec: &DatabaseSpec,
    found: Option<&DbDatabase>,
    deleting: bool,
) -> Option<Step> {
    let name = ident(&spec.name);
    let step = |reason: String, statements: Vec<String>| Step {
        kind: None,
        name: spec.name.clone(),
        reason,
        statements,
    };
    if deleting || spec.ensure == EnsureOption::Absent {
        let drop = spec.ensure == EnsureOption::Absent
            || spec.reclaim_policy == Some(DatabaseReclaimPolicy::Delete);
        return match found {
            Some(_) if drop => Some(step(
                if deleting && spec.ensure != EnsureOption::Absent {
                    "its Database was deleted with databaseReclaimPolicy: delete: dropped".into()
                } else {
                    "ensure: absent: dropped".into()
                },
                vec![format!("DROP DATABASE IF EXISTS {name}")],
            )),
            _ => None,
        };
    }
    let Some(db) = found else {
        let mut sql = format!("CREATE DATABASE {name} OWNER {}", ident(&spec.owner));
        let mut with = |key: &str, value: &Option<String>| {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                sql.push_str(&format!(" {key} {}", literal(v)));
            }
        };
        with("TEMPLATE", &spec.template);
        with("ENCODING", &spec.encoding);
        with("LOCALE", &spec.locale);
        with("LOCALE_PROVIDER", &spec.locale_provider);
        with("LC_COLLATE", &spec.locale_collate);
        with("LC_CTYPE", &spec.locale_c_type);
        with("ICU_LOCALE", &spec.icu_locale);
        with("ICU_RULES", &spec.icu_rules);
        with("BUILTIN_LOCALE", &spec.builtin_locale);
        with("COLLATION_VERSION", &spec.collation_version);
        if let Some(t) = spec.tablespace.as_deref().filter(|t| !t.is_empty()) {
            sql.push_str(&format!(" TABLESPACE {}", ident(t)));
        }
        if let Some(b) = spec.allow_connections {
            sql.push_str(&format!(" ALLOW_CONNECTIONS {b}"));
        }
        if let Some(n) = spec.connection_limit {
            sql.push_str(&format!(" CONNECTION LIMIT {n}"));
        }
        if let Some(b) = spec.is_template {
            sql.push_str(&format!(" IS_TEMPLATE {b}"));
        }
        return Some(step(format!("created, owned by {}", spec.owner), vec![sql]));
    };
    let mut statements = Vec::new();
    let mut changed = Vec::new();
    if spec.owner != db.owner {
        statements.push(format!(
            "ALTER DATABASE {name} OWNER TO {}",
            ident(&spec.owner)
        ));
        changed.push(format!("owner {} (was {})", spec.owner, db.owner));
    }
    if let Some(b) = spec
        .allow_connections
        .filter(|b| *b != db.allow_connections)
    {
        statements.push(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {b}"));
        changed.push(format!("allowConnections {b}"));
    }
    if let Some(n) = spec.connection_limit.filter(|n| *n != db.connection_limit) {
        statements.push(format!("ALTER DATABASE {name} WITH CONNECTION LIMIT {n}"));
        changed.push(format!("connectionLimit {n} (was {})", db.connection_limit));
    }
    if let Some(b) = spec.is_template.filter(|b| *b != db.is_template) {
        statements.push(format!("ALTER DATABASE {name} WITH IS_TEMPLATE {b}"));
        changed.push(format!("isTemplate {b}"));
    }
    if let Some(t) = spec
        .tablespace
        .as_deref()
        .filter(|t| !t.is_empty() && *t != db.tablespace)
    {
        statements.push(format!("ALTER DATABASE {name} SET TABLESPACE {}", ident(t)));
        changed.push(format!("tablespace {t} (was {})", db.tablespace));
    }
    (!statements.is_empty()).then(|| step(format!("altered: {}", changed.join(", ")), statements))
}

/// What the spec asks of the objects in the database, given what is there. Schemas first,
/// then extensions (which may go in them), wrappers, and servers (which use the wrappers).
pub fn plan_objects(spec: &DatabaseSpec, found: &DbObjects) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut push = |kind, name: &str, reason: String, statements: Vec<String>| {
        if !statements.is_empty() {
            steps.push(Step {
                kind: Some(kind),
                name: name.to_owned(),
                reason,
                statements,
            });
        }
    };
    for s in &spec.schemas {
        let (reason, sql) = schema(s, found.schemas.get(&s.name));
        push(ObjectKind::Schema, &s.name, reason, sql);
    }
    for e in &spec.extensions {
        let (reason, sql) = extension(e, found.extensions.get(&e.name));
        push(ObjectKind::Extension, &e.name, reason, sql);
    }
    for f in &spec.fdws {
        let (reason, sql) = fdw(f, found.fdws.get(&f.name));
        push(ObjectKind::Fdw, &f.name, reason, sql);
    }
    for s in &spec.servers {
        let (reason, sql) = server(s, found.servers.get(&s.name));
        push(ObjectKind::Server, &s.name, reason, sql);
    }
    steps
}

fn schema(s: &crate::api::database::SchemaSpec, found: Option<&String>) -> (String, Vec<String>) {
    let name = ident(&s.name);
    let owner = s.owner.as_deref().filter(|o| !o.is_empty());
    match (s.ensure, found) {
        (EnsureOption::Absent, Some(_)) => (
            "schema dropped (ensure: absent)".into(),
            vec![format!("DROP SCHEMA IF EXISTS {name}")],
        ),
        (EnsureOption::Absent, None) => Default::default(),
        (EnsureOption::Present, None) => (
            "schema created".into(),
            vec![match owner {
                Some(o) => format!("CREATE SCHEMA {name} AUTHORIZATION {}", ident(o)),
                None => format!("CREATE SCHEMA {name}"),
            }],
        ),
        (EnsureOption::Present, Some(have)) => match owner.filter(|o| o != have) {
            Some(o) => (
                format!("schema owner {o} (was {have})"),
                vec![format!("ALTER SCHEMA {name} OWNER TO {}", ident(o))],
            ),
            None => Default::default(),
        },
    }
}

fn extension(
    e: &crate::api::database::ExtensionSpec,
    found: Option<&(String, String)>,
) -> (String, Vec<String>) {
    let name = ident(&e.name);
    let version = e.version.as_deref().filter(|v| !v.is_empty());
    let schema = e.schema.as_deref().filter(|s| !s.is_empty());
    match (e.ensure, found) {
        (EnsureOption::Absent, Some(_)) => (
            "extension dropped (ensure: absent)".into(),
            vec![format!("DROP EXTENSION IF EXISTS {name}")],
        ),
        (EnsureOption::Absent, None) => Default::default(),
        (EnsureOption::Present, None) => {
            let mut sql = format!("CREATE EXTENSION {name}");
            if let Some(s) = schema {
                sql.push_str(&format!(" SCHEMA {}", ident(s)));
            }
            if let Some(v) = version {
                sql.push_str(&format!(" VERSION {}", literal(v)));
            }
            ("extension created".into(), vec![sql])
        }
        (EnsureOption::Present, Some((have_version, have_schema))) => {
            let mut sql = Vec::new();
            let mut why = Vec::new();
            if let Some(s) = schema.filter(|s| s != have_schema) {
                sql.push(format!("ALTER EXTENSION {name} SET SCHEMA {}", ident(s)));
                why.push(format!("schema {s} (was {have_schema})"));
            }
            if let Some(v) = version.filter(|v| v != have_version) {
                sql.push(format!("ALTER EXTENSION {name} UPDATE TO {}", literal(v)));
                why.push(format!("version {v} (was {have_version})"));
            }
            (format!("extension {}", why.join(", ")), sql)
        }
    }
}

/// `OPTIONS (...)` clauses taking `have` to what `want` says: `ADD`, `SET`, `DROP`.
fn option_clauses(want: &[OptionSpec], have: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for o in want {
        let key = ident(&o.name);
        match (o.ensure, have.get(&o.name)) {
            (EnsureOption::Present, None) => out.push(format!("ADD {key} {}", literal(&o.value))),
            (EnsureOption::Present, Some(v)) if *v != o.value => {
                out.push(format!("SET {key} {}", literal(&o.value)))
            }
            (EnsureOption::Absent, Some(_)) => out.push(format!("DROP {key}")),
            _ => {}
        }
    }
    out
}

/// `GRANT`/`REVOKE USAGE` for each listed role: both are no-ops when already so, and
/// PostgreSQL keeps no cheap list to compare against, so they run on every pass that
/// touches the object.
fn usage_statements(on: &str, usages: &[UsageSpec]) -> Vec<String> {
    usages
        .iter()
        .map(|u| match u.type_ {
            UsageType::Grant => format!("GRANT USAGE ON {on} TO {}", ident(&u.name)),
            UsageType::Revoke => format!("REVOKE USAGE ON {on} FROM {}", ident(&u.name)),
        })
        .collect()
}

fn fdw(f: &crate::api::database::FdwSpec, found: Option<&DbFdw>) -> (String, Vec<String>) {
    let name = ident(&f.name);
    let func = |keyword: &str, value: Option<&str>| match value {
        Some("-") => format!(" NO {keyword}"),
        Some(v) => format!(" {keyword} {}", ident(v)),
        None => String::new(),
    };
    let handler = f.handler.as_deref().filter(|h| !h.is_empty());
    let validator = f.validator.as_deref().filter(|v| !v.is_empty());
    let owner = f.owner.as_deref().filter(|o| !o.is_empty());
    let on = format!("FOREIGN DATA WRAPPER {name}");
    match (f.ensure, found) {
        (EnsureOption::Absent, Some(_)) => (
            "foreign data wrapper dropped (ensure: absent)".into(),
            vec![format!("DROP FOREIGN DATA WRAPPER IF EXISTS {name}")],
        ),
        (EnsureOption::Absent, None) => Default::default(),
        (EnsureOption::Present, None) => {
            let mut sql = vec![format!(
                "CREATE FOREIGN DATA WRAPPER {name}{}{}{}",
                func("HANDLER", handler),
                func("VALIDATOR", validator),
                options_list(&f.options)
            )];
            if let Some(o) = owner {
                sql.push(format!("ALTER {on} OWNER TO {}", ident(o)));
            }
            sql.extend(usage_statements(&on, &f.usages));
            ("foreign data wrapper created".into(), sql)
        }
        (EnsureOption::Present, Some(have)) => {
            let mut sql = Vec::new();
            let mut why = Vec::new();
            if let Some(h) = handler.filter(|h| *h != have.handler) {
                sql.push(format!("ALTER {on}{}", func("HANDLER", Some(h))));
                why.push(format!("handler {h}"));
            }
            if let Some(v) = validator.filter(|v| *v != have.validator) {
                sql.push(format!("ALTER {on}{}", func("VALIDATOR", Some(v))));
                why.push(format!("validator {v}"));
            }
            let clauses = option_clauses(&f.options, &have.options);
            if !clauses.is_empty() {
                sql.push(format!("ALTER {on} OPTIONS ({})", clauses.join(", ")));
                why.push("options".into());
            }
            if let Some(o) = owner.filter(|o| *o != have.owner) {
                sql.push(format!("ALTER {on} OWNER TO {}", ident(o)));
                why.push(format!("owner {o} (was {})", have.owner));
            }
            if !sql.is_empty() || !f.usages.is_empty() {
                sql.extend(usage_statements(&on, &f.usages));
            }
            (format!("foreign data wrapper {}", why.join(", ")), sql)
        }
    }
}

fn server(
    s: &crate::api::database::ServerSpec,
    found: Option<&(String, BTreeMap<String, String>)>,
) -> (String, Vec<String>) {
    let name = ident(&s.name);
    let on = format!("FOREIGN SERVER {name}");
    match (s.ensure, found) {
        (EnsureOption::Absent, Some(_)) => (
            "foreign server dropped (ensure: absent)".into(),
            vec![format!("DROP SERVER IF EXISTS {name}")],
        ),
        (EnsureOption::Absent, None) => Default::default(),
        (EnsureOption::Present, None) => {
            let mut sql = vec![format!(
                "CREATE SERVER {name} FOREIGN DATA WRAPPER {}{}",
                ident(&s.fdw),
                options_list(&s.options)
            )];
            sql.extend(usage_statements(&on, &s.usages));
            ("foreign server created".into(), sql)
        }
        (EnsureOption::Present, Some((_, options))) => {
            let mut sql = Vec::new();
            let clauses = option_clauses(&s.options, options);
            if !clauses.is_empty() {
                sql.push(format!(
                    "ALTER SERVER {name} OPTIONS ({})",
                    clauses.join(", ")
                ));
            }
            if !sql.is_empty() || !s.usages.is_empty() {
                sql.extend(usage_statements(&on, &s.usages));
            }
            ("foreign server options".into(), sql)
        }
    }
}

/// ` OPTIONS (k 'v', ...)` of a `CREATE` for the options that are to be present.
fn options_list(options: &[OptionSpec]) -> String {
    let present: Vec<String> = options
        .iter()
        .filter(|o| o.ensure == EnsureOption::Present)
        .map(|o| format!("{} {}", ident(&o.name), literal(&o.value)))
        .collect();
    if present.is_empty() {
        String::new()
    } else {
        format!(" OPTIONS ({})", present.join(", "))
    }
}

/// Upstream's status from a pass, given what PostgreSQL refused in it (for the database
/// itself, or for each object that failed). `generation` is the object's
/// `metadata.generation` the pass worked from.
pub fn status(
    spec: &DatabaseSpec,
    generation: Option<i64>,
    failures: &[Failure],
) -> DatabaseStatus {
    let db_error = failures
        .iter()
        .find(|f| f.kind.is_none())
        .map(|f| f.message.clone());
    let object = |kind: ObjectKind, name: &str| {
        let message = failures
            .iter()
            .find(|f| f.kind == Some(kind) && f.name == name)
            .map(|f| f.message.clone())
            .or_else(|| {
                db_error
                    .as_ref()
                    .map(|_| "the database is not reconciled".to_owned())
            });
        DatabaseObjectStatus {
            name: name.to_owned(),
            applied: message.is_none(),
            message,
        }
    };
    let present = spec.ensure == EnsureOption::Present;
    let list = |kind, names: Vec<&String>| -> Vec<DatabaseObjectStatus> {
        if present {
            names.into_iter().map(|n| object(kind, n)).collect()
        } else {
            Vec::new()
        }
    };
    let schemas = list(
        ObjectKind::Schema,
        spec.schemas.iter().map(|s| &s.name).collect(),
    );
    let extensions = list(
        ObjectKind::Extension,
        spec.extensions.iter().map(|e| &e.name).collect(),
    );
    let fdws = list(ObjectKind::Fdw, spec.fdws.iter().map(|f| &f.name).collect());
    let servers = list(
        ObjectKind::Server,
        spec.servers.iter().map(|s| &s.name).collect(),
    );
    let first_object_error = schemas
        .iter()
        .chain(&extensions)
        .chain(&fdws)
        .chain(&servers)
        .find(|o| !o.applied)
        .map(|o| format!("{}: {}", o.name, o.message.clone().unwrap_or_default()));
    let message = db_error.or(first_object_error);
    DatabaseStatus {
        observed_generation: generation,
        applied: Some(message.is_none()),
        message,
        schemas,
        extensions,
        fdws,
        servers,
    }
}

/// What PostgreSQL refused in a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Which object (`None`: the database itself).
    pub kind: Option<ObjectKind>,
    /// Its name.
    pub name: String,
    /// PostgreSQL's error.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::database::*;
    use crate::naming::LocalObjectReference;

    fn spec() -> DatabaseSpec {
        DatabaseSpec {
            cluster: LocalObjectReference { name: "pg".into() },
            name: "shop".into(),
            owner: "app".into(),
            ..Default::default()
        }
    }

    fn have() -> DbDatabase {
        DbDatabase {
            name: "shop".into(),
            owner: "app".into(),
            allow_connections: true,
            is_template: false,
            connection_limit: -1,
            tablespace: "pg_default".into(),
        }
    }

    #[test]
    fn a_missing_database_is_created_with_every_create_only_field() {
        let s = DatabaseSpec {
            template: Some("template0".into()),
            encoding: Some("UTF8".into()),
            locale_collate: Some("C".into()),
            locale_c_type: Some("C".into()),
            connection_limit: Some(7),
            is_template: Some(false),
            ..spec()
        };
        let step = plan_database(&s, None, false).expect("a step");
        assert_eq!(
            step.statements,
            [
                "CREATE DATABASE \"shop\" OWNER \"app\" TEMPLATE 'template0' ENCODING 'UTF8' \
                 LC_COLLATE 'C' LC_CTYPE 'C' CONNECTION LIMIT 7 IS_TEMPLATE false"
            ]
        );
        assert_eq!(step.reason, "created, owned by app");
    }

    #[test]
    fn an_existing_database_gets_only_what_differs() {
        assert_eq!(plan_database(&spec(), Some(&have()), false), None);
        // Create-only fields are not compared.
        let s = DatabaseSpec {
            encoding: Some("LATIN1".into()),
            owner: "bob".into(),
            connection_limit: Some(3),
            allow_connections: Some(true),
            ..spec()
        };
        let step = plan_database(&s, Some(&have()), false).expect("a step");
        assert_eq!(
            step.statements,
            [
                "ALTER DATABASE \"shop\" OWNER TO \"bob\"",
                "ALTER DATABASE \"shop\" WITH CONNECTION LIMIT 3"
            ]
        );
        assert_eq!(
            step.reason,
            "altered: owner bob (was app), connectionLimit 3 (was -1)"
        );
    }

    #[test]
    fn absent_and_reclaim_policies() {
        let absent = DatabaseSpec {
            ensure: EnsureOption::Absent,
            ..spec()
        };
        let drop = ["DROP DATABASE IF EXISTS \"shop\""];
        assert_eq!(
            plan_database(&absent, Some(&have()), false).map(|s| s.statements),
            Some(drop.map(String::from).to_vec())
        );
        assert_eq!(plan_database(&absent, None, false), None);
        // Deleted: retained by default, dropped with `delete`.
        assert_eq!(plan_database(&spec(), Some(&have()), true), None);
        let delete = DatabaseSpec {
            reclaim_policy: Some(DatabaseReclaimPolicy::Delete),
            ..spec()
        };
        let step = plan_database(&delete, Some(&have()), true).expect("dropped");
        assert!(step.reason.contains("databaseReclaimPolicy: delete"));
    }

    #[test]
    fn objects_are_created_altered_and_dropped() {
        let s = DatabaseSpec {
            schemas: vec![
                SchemaSpec {
                    name: "sales".into(),
                    owner: Some("app".into()),
                    ..Default::default()
                },
                SchemaSpec {
                    name: "old".into(),
                    ensure: EnsureOption::Absent,
                    ..Default::default()
                },
            ],
            extensions: vec![ExtensionSpec {
                name: "hstore".into(),
                version: Some("1.8".into()),
                ..Default::default()
            }],
            fdws: vec![FdwSpec {
                name: "postgres_fdw".into(),
                options: vec![OptionSpec {
                    name: "debug".into(),
                    value: "true".into(),
                    ..Default::default()
                }],
                usages: vec![UsageSpec {
                    name: "app".into(),
                    type_: UsageType::Grant,
                }],
                ..Default::default()
            }],
            servers: vec![ServerSpec {
                name: "remote".into(),
                fdw: "postgres_fdw".into(),
                options: vec![OptionSpec {
                    name: "host".into(),
                    value: "db.example".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..spec()
        };
        let mut found = DbObjects::default();
        found.schemas.insert("old".into(), "app".into());
        found
            .extensions
            .insert("hstore".into(), ("1.7".into(), "public".into()));
        let steps = plan_objects(&s, &found);
        let sql: Vec<&str> = steps
            .iter()
            .flat_map(|s| s.statements.iter().map(String::as_str))
            .collect();
        assert_eq!(
            sql,
            [
                "CREATE SCHEMA \"sales\" AUTHORIZATION \"app\"",
                "DROP SCHEMA IF EXISTS \"old\"",
                "ALTER EXTENSION \"hstore\" UPDATE TO '1.8'",
                "CREATE FOREIGN DATA WRAPPER \"postgres_fdw\" OPTIONS (\"debug\" 'true')",
                "GRANT USAGE ON FOREIGN DATA WRAPPER \"postgres_fdw\" TO \"app\"",
                "CREATE SERVER \"remote\" FOREIGN DATA WRAPPER \"postgres_fdw\" OPTIONS (\"host\" 'db.example')",
            ]
        );
        // All in place: nothing to do.
        let mut all = found.clone();
        all.schemas.insert("sales".into(), "app".into());
        all.schemas.remove("old");
        all.extensions
            .insert("hstore".into(), ("1.8".into(), "public".into()));
        all.servers.insert(
            "remote".into(),
            (
                "postgres_fdw".into(),
                BTreeMap::from([("host".into(), "db.example".into())]),
            ),
        );
        let mut no_usage = s.clone();
        no_usage.fdws[0].usages.clear();
        all.fdws.insert(
            "postgres_fdw".into(),
            DbFdw {
                owner: "postgres".into(),
                handler: "-".into(),
                validator: "-".into(),
                options: BTreeMap::from([("debug".into(), "true".into())]),
            },
        );
        assert_eq!(plan_objects(&no_usage, &all), vec![]);
    }

    #[test]
    fn status_names_each_failure_and_the_first_one() {
        let s = DatabaseSpec {
            extensions: vec![
                ExtensionSpec {
                    name: "hstore".into(),
                    ..Default::default()
                },
                ExtensionSpec {
                    name: "nope".into(),
                    ..Default::default()
                },
            ],
            ..spec()
        };
        let st = status(
            &s,
            Some(4),
            &[Failure {
                kind: Some(ObjectKind::Extension),
                name: "nope".into(),
                message: "extension \"nope\" is not available".into(),
            }],
        );
        assert_eq!(st.observed_generation, Some(4));
        assert_eq!(st.applied, Some(false));
        assert_eq!(
            st.message.as_deref(),
            Some("nope: extension \"nope\" is not available")
        );
        assert!(st.extensions[0].applied && !st.extensions[1].applied);
        let st = status(&s, Some(4), &[]);
        assert_eq!((st.applied, st.message), (Some(true), None));
    }
}
