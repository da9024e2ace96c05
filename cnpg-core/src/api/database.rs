//! The `Database` resource: one PostgreSQL database of a `Cluster`, made and kept in shape by
//! the primary's instance manager (`CREATE DATABASE`, `ALTER DATABASE`, `DROP DATABASE`),
//! with the extensions, schemas, foreign data wrappers and foreign servers in it.
//!
//! Field-compatible with upstream: the same names, defaults (`ensure: present`,
//! `databaseReclaimPolicy: retain`) and enum values, so upstream's manifests parse unchanged.

use super::common::LocalObjectReference;
use crate::roles::EnsureOption;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A PostgreSQL database of a cluster, built around `CREATE DATABASE`, `ALTER DATABASE` and
/// `DROP DATABASE`. The fields that only `CREATE DATABASE` takes (template, encoding,
/// locales) cannot change afterwards.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Database",
    plural = "databases",
    namespaced,
    status = "DatabaseStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "PG Name", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Applied", type_ = "boolean", json_path = ".status.applied"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        description = "Latest reconciliation message"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// The Cluster hosting the database (immutable).
    pub cluster: LocalObjectReference,
    /// `present` (default) or `absent`: the database is made, or dropped.
    #[serde(default)]
    pub ensure: EnsureOption,
    /// The database's name in PostgreSQL (immutable; not `postgres`, `template0` or
    /// `template1`).
    pub name: String,
    /// The role that owns the database (`OWNER`, `ALTER DATABASE ... OWNER TO`).
    pub owner: String,
    /// `TEMPLATE` of `CREATE DATABASE` (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `ENCODING` of `CREATE DATABASE` (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// `LOCALE` of `CREATE DATABASE` (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// `LOCALE_PROVIDER` of `CREATE DATABASE` (immutable; PostgreSQL 16+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale_provider: Option<String>,
    /// `LC_COLLATE` of `CREATE DATABASE` (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale_collate: Option<String>,
    /// `LC_CTYPE` of `CREATE DATABASE` (immutable).
    #[serde(
        default,
        rename = "localeCType",
        skip_serializing_if = "Option::is_none"
    )]
    pub locale_c_type: Option<String>,
    /// `ICU_LOCALE` of `CREATE DATABASE` (immutable; needs `localeProvider: icu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_locale: Option<String>,
    /// `ICU_RULES` of `CREATE DATABASE` (immutable; needs `localeProvider: icu`; 16+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_rules: Option<String>,
    /// `BUILTIN_LOCALE` of `CREATE DATABASE` (immutable; needs `localeProvider: builtin`;
    /// 17+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin_locale: Option<String>,
    /// `COLLATION_VERSION` of `CREATE DATABASE` (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation_version: Option<String>,
    /// `IS_TEMPLATE`: any role with `CREATEDB` may clone the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_template: Option<bool>,
    /// `ALLOW_CONNECTIONS`: false and no one can connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_connections: Option<bool>,
    /// `CONNECTION LIMIT`; -1 (the default) is no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i32>,
    /// `TABLESPACE` (`ALTER DATABASE ... SET TABLESPACE` when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<String>,
    /// What happens to the database when this object is deleted: `retain` (default) keeps
    /// it, `delete` drops it.
    #[serde(
        default,
        rename = "databaseReclaimPolicy",
        skip_serializing_if = "Option::is_none"
    )]
    pub reclaim_policy: Option<DatabaseReclaimPolicy>,
    /// Schemas kept in the database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<SchemaSpec>,
    /// Extensions kept in the database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionSpec>,
    /// Foreign data wrappers kept in the database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fdws: Vec<FdwSpec>,
    /// Foreign servers kept in the database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerSpec>,
}

/// What happens to a database when its `Database` object is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseReclaimPolicy {
    /// Dropped with the object.
    Delete,
    /// Left in place for the administrator.
    #[default]
    Retain,
}

/// A schema of a database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaSpec {
    /// The schema's name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: EnsureOption,
    /// Its owner (`AUTHORIZATION`, `ALTER SCHEMA ... OWNER TO`); the database owner's
    /// session user when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// An extension of a database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionSpec {
    /// The extension's name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: EnsureOption,
    /// The version to install or update to; the control file's default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The schema of a relocatable extension's objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// A foreign data wrapper of a database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FdwSpec {
    /// The wrapper's name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: EnsureOption,
    /// Its handler function (`-` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// Its validator function (`-` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<String>,
    /// Its owner (a superuser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<OptionSpec>,
    /// Roles granted or revoked `USAGE` on it.
    #[serde(default, rename = "usage", skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<UsageSpec>,
}

/// A foreign server of a database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// The server's name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: EnsureOption,
    /// The foreign data wrapper it uses.
    pub fdw: String,
    /// Its options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<OptionSpec>,
    /// Roles granted or revoked `USAGE` on it.
    #[serde(default, rename = "usage", skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<UsageSpec>,
}

/// An option of a foreign data wrapper or server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptionSpec {
    /// The option's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: EnsureOption,
}

/// `USAGE` granted to or revoked from a role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSpec {
    /// The role.
    pub name: String,
    /// `grant` (default) or `revoke`.
    #[serde(default, rename = "type")]
    pub type_: UsageType,
}

/// Whether a role gets `USAGE` or loses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsageType {
    /// `GRANT USAGE`.
    #[default]
    Grant,
    /// `REVOKE USAGE`.
    Revoke,
}

/// What the primary made of a `Database` last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The `metadata.generation` this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// True when the database and every object in it are as the spec says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
    /// Why not, when not (PostgreSQL's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The schemas, one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<DatabaseObjectStatus>,
    /// The extensions, one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<DatabaseObjectStatus>,
    /// The foreign data wrappers, one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fdws: Vec<DatabaseObjectStatus>,
    /// The foreign servers, one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<DatabaseObjectStatus>,
}

/// What became of one object in a database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseObjectStatus {
    /// The object's name.
    pub name: String,
    /// True when it is as the spec says.
    pub applied: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
