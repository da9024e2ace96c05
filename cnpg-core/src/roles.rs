//! Managed roles (`spec.managed.roles`): what the primary's instance manager changes so the
//! roles in PostgreSQL match the spec.
//!
//! The host reads the roles as they are ([`DbRole`], one query on `pg_authid`), resolves
//! each `passwordSecret` ([`Secret`]), and asks [`plan`] what to do. Every [`Change`]
//! runs in a transaction of its own, so a role PostgreSQL refuses (a group that does not
//! exist, a role that owns a database) never holds up the others; a role's later changes
//! are skipped once one of its changes failed. [`status`] turns the plan and what failed
//! into `status.managedRolesStatus`.
//!
//! Roles the spec does not name are never touched, nor are the ones the operator reserves
//! ([`RESERVED`]) and PostgreSQL's own (`pg_*`). An attribute the spec omits means
//! PostgreSQL's default for it (`inherit` true, the others false, no connection limit, no
//! comment, no memberships), so a change made by hand in PostgreSQL is put back. A password
//! is set only from a Secret (when its version differs from the one last applied) or
//! removed with `disablePassword`; otherwise it is left as it is.

use crate::naming::LocalObjectReference;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Roles the operator creates and owns: never managed from the spec.
pub const RESERVED: &[&str] = &[
    "postgres",
    "streaming_replica",
    "cnpg_pooler_pgbouncer",
    "cnpg_metrics_exporter",
];

/// Whether `name` is reserved (by the operator, or by PostgreSQL: `pg_*`).
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name) || name.starts_with("pg_")
}

/// Whether a role should exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EnsureOption {
    /// The role must exist.
    #[default]
    Present,
    /// The role must not exist.
    Absent,
}

/// A database role managed by the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RoleConfiguration {
    /// Role name.
    pub name: String,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `present` (default) or `absent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure: Option<EnsureOption>,
    /// Secret with the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<LocalObjectReference>,
    /// Connection limit (-1, the default, is unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i64>,
    /// Password expiry (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Roles this role is a member of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_roles: Vec<String>,
    /// Inherit privileges (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit: Option<bool>,
    /// Set the password to NULL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_password: Option<bool>,
    /// SUPERUSER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser: Option<bool>,
    /// CREATEDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub createdb: Option<bool>,
    /// CREATEROLE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub createrole: Option<bool>,
    /// LOGIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<bool>,
    /// REPLICATION.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<bool>,
    /// BYPASSRLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypassrls: Option<bool>,
}

/// State of the managed roles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ManagedRoles {
    /// Role names by state (`reconciled`, `not-managed`, `pending-reconciliation`, `reserved`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_status: BTreeMap<String, Vec<String>>,
    /// Errors by role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cannot_reconcile: BTreeMap<String, Vec<String>>,
    /// Password state by role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub password_status: BTreeMap<String, PasswordState>,
}

/// Where a role's password was last applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PasswordState {
    /// Transaction that applied it.
    #[serde(
        default,
        rename = "transactionID",
        skip_serializing_if = "Option::is_none"
    )]
    pub transaction_id: Option<i64>,
    /// Resource version of the Secret applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// A role as PostgreSQL has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbRole {
    /// `rolname`.
    pub name: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolcreatedb`.
    pub createdb: bool,
    /// `rolcreaterole`.
    pub createrole: bool,
    /// `rolinherit`.
    pub inherit: bool,
    /// `rolcanlogin`.
    pub login: bool,
    /// `rolreplication`.
    pub replication: bool,
    /// `rolbypassrls`.
    pub bypassrls: bool,
    /// `rolconnlimit` (-1: none).
    pub connection_limit: i64,
    /// `rolvaliduntil`: `None` when NULL, else `infinity` or an RFC 3339 time in UTC.
    pub valid_until: Option<String>,
    /// The role's comment.
    pub comment: Option<String>,
    /// The roles it is a member of.
    pub in_roles: BTreeSet<String>,
    /// Whether it has a password.
    pub has_password: bool,
}

/// A role's password as its `passwordSecret` holds it (what the operator hands the
/// instance managers, by role name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The password (cleartext, or already an MD5/SCRAM verifier).
    pub password: String,
    /// The Secret's version (its `resourceVersion`): a new one is applied again.
    pub version: String,
}

/// What a change does to the password, which the host turns into a statement of its own
/// (the verifier is made by the host, and never logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordChange {
    /// Set it from the role's Secret, of this version.
    Set {
        /// The Secret's version applied.
        version: String,
    },
    /// Remove it (`PASSWORD NULL`).
    Disable,
}

/// One change to one role, run in a transaction of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The role.
    pub role: String,
    /// Upstream's name of the operation (`CREATE`, `ALTER`, `COMMENT`,
    /// `UPDATE_MEMBERSHIPS`, `DROP`, `PASSWORD`), used in error messages.
    pub operation: &'static str,
    /// The statements, in order (none for a password change alone).
    pub statements: Vec<String>,
    /// The password part of the change, if any.
    pub password: Option<PasswordChange>,
    /// Why, for a person.
    pub reason: String,
}

/// What [`plan`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The changes, role by role in spec order.
    pub changes: Vec<Change>,
    /// Roles already as the spec says.
    pub reconciled: Vec<String>,
    /// Roles the spec names that cannot be changed from here, with why (a missing Secret).
    pub refused: BTreeMap<String, String>,
    /// Roles PostgreSQL has that the spec does not name.
    pub not_managed: Vec<String>,
    /// Reserved roles PostgreSQL has.
    pub reserved: Vec<String>,
}

/// The changes that bring `in_db` to `desired`. `secrets` holds each resolved
/// `passwordSecret` by role name; `applied` the password versions already applied
/// (`status.managedRolesStatus.passwordStatus`).
pub fn plan(
    desired: &[RoleConfiguration],
    in_db: &[DbRole],
    secrets: &BTreeMap<String, Secret>,
    applied: &BTreeMap<String, PasswordState>,
) -> Plan {
    let mut out = Plan::default();
    let by_name: BTreeMap<&str, &DbRole> = in_db.iter().map(|r| (r.name.as_str(), r)).collect();
    let wanted: BTreeSet<&str> = desired.iter().map(|r| r.name.as_str()).collect();
    for r in in_db {
        if is_reserved(&r.name) {
            if RESERVED.contains(&r.name.as_str()) {
                out.reserved.push(r.name.clone());
            }
        } else if !wanted.contains(r.name.as_str()) {
            out.not_managed.push(r.name.clone());
        }
    }
    for spec in desired {
        let name = spec.name.as_str();
        if is_reserved(name) {
            out.refused
                .insert(name.to_owned(), format!("role {name:?} is reserved"));
            continue;
        }
        let secret = match &spec.password_secret {
            Some(s) => match secrets.get(name) {
                Some(secret) => Some(secret),
                None => {
                    out.refused.insert(
                        name.to_owned(),
                        format!(
                            "its passwordSecret {:?} is missing, has no password, or names another username",
                            s.name
                        ),
                    );
                    continue;
                }
            },
            None => None,
        };
        let changes = role_changes(spec, by_name.get(name).copied(), secret, applied.get(name));
        if changes.is_empty() {
            out.reconciled.push(name.to_owned());
        }
        out.changes.extend(changes);
    }
    out
}

fn role_changes(
    spec: &RoleConfiguration,
    db: Option<&DbRole>,
    secret: Option<&Secret>,
    applied: Option<&PasswordState>,
) -> Vec<Change> {
    let name = spec.name.clone();
    let change = |operation, statements, password, reason: String| Change {
        role: name.clone(),
        operation,
        statements,
        password,
        reason,
    };
    let absent = spec.ensure == Some(EnsureOption::Absent);
    let Some(db) = db else {
        if absent {
            return vec![];
        }
        let want = Attributes::of(spec);
        let mut stmts = vec![format!("CREATE ROLE {}{}", ident(&name), want.clauses())];
        if let Some(until) = &spec.valid_until {
            stmts[0].push_str(&format!(" VALID UNTIL {}", literal(until)));
        }
        if let Some(c) = spec.comment.as_deref().filter(|c| !c.is_empty()) {
            stmts.push(format!(
                "COMMENT ON ROLE {} IS {}",
                ident(&name),
                literal(c)
            ));
        }
        let password = secret.map(|s| PasswordChange::Set {
            version: s.version.clone(),
        });
        let mut out = vec![change(
            "CREATE",
            stmts,
            password,
            format!("role {name} does not exist"),
        )];
        if !spec.in_roles.is_empty() {
            out.push(change(
                "UPDATE_MEMBERSHIPS",
                spec.in_roles
                    .iter()
                    .map(|r| format!("GRANT {} TO {}", ident(r), ident(&name)))
                    .collect(),
                None,
                format!(
                    "role {name} is to be a member of {}",
                    spec.in_roles.join(", ")
                ),
            ));
        }
        return out;
    };
    if absent {
        return vec![change(
            "DROP",
            vec![format!("DROP ROLE {}", ident(&name))],
            None,
            format!("role {name} is to be absent"),
        )];
    }
    let mut out = Vec::new();
    // Attributes, VALID UNTIL and the password: one ALTER ROLE.
    let (want, have) = (Attributes::of(spec), Attributes::of_db(db));
    let mut clauses = want.differing(&have);
    let mut why: Vec<String> = want.describe_differences(&have);
    match (&spec.valid_until, &db.valid_until) {
        (None, Some(v)) if v != "infinity" => {
            // PostgreSQL has no `VALID UNTIL NULL`: infinity is the same for a login.
            clauses.push_str(" VALID UNTIL 'infinity'");
            why.push(format!("valid until {v}, not forever"));
        }
        (Some(w), have) if !same_time(w, have.as_deref()) => {
            clauses.push_str(&format!(" VALID UNTIL {}", literal(w)));
            why.push(format!(
                "valid until {}, not {w}",
                have.as_deref().unwrap_or("forever")
            ));
        }
        _ => {}
    }
    let password = match (secret, spec.disable_password) {
        (Some(s), _) if applied.and_then(|a| a.resource_version.as_deref()) != Some(&s.version) => {
            why.push(format!("its password Secret is at version {}", s.version));
            Some(PasswordChange::Set {
                version: s.version.clone(),
            })
        }
        (None, Some(true)) if db.has_password => {
            why.push("its password is to be disabled".into());
            Some(PasswordChange::Disable)
        }
        _ => None,
    };
    if !clauses.is_empty() || password.is_some() {
        out.push(change(
            "ALTER",
            if clauses.is_empty() {
                vec![]
            } else {
                vec![format!("ALTER ROLE {} WITH{clauses}", ident(&name))]
            },
            password,
            format!("role {name}: {}", why.join(", ")),
        ));
    }
    let want_comment = spec.comment.as_deref().filter(|c| !c.is_empty());
    if want_comment != db.comment.as_deref().filter(|c| !c.is_empty()) {
        out.push(change(
            "COMMENT",
            vec![format!(
                "COMMENT ON ROLE {} IS {}",
                ident(&name),
                want_comment.map_or("NULL".into(), literal)
            )],
            None,
            format!("role {name}: its comment differs"),
        ));
    }
    let want_in: BTreeSet<&str> = spec.in_roles.iter().map(String::as_str).collect();
    let have_in: BTreeSet<&str> = db.in_roles.iter().map(String::as_str).collect();
    let grant: Vec<&str> = want_in.difference(&have_in).copied().collect();
    let revoke: Vec<&str> = have_in.difference(&want_in).copied().collect();
    if !grant.is_empty() || !revoke.is_empty() {
        let mut stmts: Vec<String> = grant
            .iter()
            .map(|r| format!("GRANT {} TO {}", ident(r), ident(&name)))
            .collect();
        stmts.extend(
            revoke
                .iter()
                .map(|r| format!("REVOKE {} FROM {}", ident(r), ident(&name))),
        );
        let mut why = Vec::new();
        if !grant.is_empty() {
            why.push(format!("not a member of {}", grant.join(", ")));
        }
        if !revoke.is_empty() {
            why.push(format!(
                "a member of {} the spec does not list",
                revoke.join(", ")
            ));
        }
        out.push(change(
            "UPDATE_MEMBERSHIPS",
            stmts,
            None,
            format!("role {name}: {}", why.join("; ")),
        ));
    }
    out
}

/// The role attributes compared one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attributes {
    flags: [(bool, &'static str, &'static str); 7],
    connection_limit: i64,
}

impl Attributes {
    fn of(spec: &RoleConfiguration) -> Attributes {
        let f = |v: Option<bool>| v.unwrap_or(false);
        Attributes::new(
            [
                f(spec.superuser),
                f(spec.createdb),
                f(spec.createrole),
                spec.inherit.unwrap_or(true),
                f(spec.login),
                f(spec.replication),
                f(spec.bypassrls),
            ],
            spec.connection_limit.unwrap_or(-1),
        )
    }

    fn of_db(db: &DbRole) -> Attributes {
        Attributes::new(
            [
                db.superuser,
                db.createdb,
                db.createrole,
                db.inherit,
                db.login,
                db.replication,
                db.bypassrls,
            ],
            db.connection_limit,
        )
    }

    fn new(v: [bool; 7], connection_limit: i64) -> Attributes {
        const NAMES: [(&str, &str); 7] = [
            ("SUPERUSER", "superuser"),
            ("CREATEDB", "createdb"),
            ("CREATEROLE", "createrole"),
            ("INHERIT", "inherit"),
            ("LOGIN", "login"),
            ("REPLICATION", "replication"),
            ("BYPASSRLS", "bypassrls"),
        ];
        let mut flags = [(false, "", ""); 7];
        for (i, (sql, field)) in NAMES.iter().enumerate() {
            flags[i] = (v[i], sql, field);
        }
        Attributes {
            flags,
            connection_limit,
        }
    }

    fn clause(flag: (bool, &str, &str)) -> String {
        format!(" {}{}", if flag.0 { "" } else { "NO" }, flag.1)
    }

    /// Every attribute, for CREATE ROLE.
    fn clauses(&self) -> String {
        let mut s: String = self.flags.iter().map(|f| Self::clause(*f)).collect();
        s.push_str(&format!(" CONNECTION LIMIT {}", self.connection_limit));
        s
    }

    /// Those that differ from `have`, for ALTER ROLE.
    fn differing(&self, have: &Attributes) -> String {
        let mut s: String = self
            .flags
            .iter()
            .zip(have.flags.iter())
            .filter(|(w, h)| w.0 != h.0)
            .map(|(w, _)| Self::clause(*w))
            .collect();
        if self.connection_limit != have.connection_limit {
            s.push_str(&format!(" CONNECTION LIMIT {}", self.connection_limit));
        }
        s
    }

    fn describe_differences(&self, have: &Attributes) -> Vec<String> {
        let mut out: Vec<String> = self
            .flags
            .iter()
            .zip(have.flags.iter())
            .filter(|(w, h)| w.0 != h.0)
            .map(|(w, h)| format!("{} {}, not {}", w.2, h.0, w.0))
            .collect();
        if self.connection_limit != have.connection_limit {
            out.push(format!(
                "connectionLimit {}, not {}",
                have.connection_limit, self.connection_limit
            ));
        }
        out
    }
}

/// Whether the spec's time `want` (RFC 3339) is the one PostgreSQL has.
fn same_time(want: &str, have: Option<&str>) -> bool {
    let parse = |t: &str| t.parse::<jiff::Timestamp>().ok();
    match (parse(want), have.and_then(parse)) {
        (Some(w), Some(h)) => w == h,
        _ => Some(want) == have,
    }
}

/// `name` as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal (`standard_conforming_strings`, on since 9.1).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The statement that sets `role`'s password to `verifier` (None: no password).
pub fn password_statement(role: &str, verifier: Option<&str>) -> String {
    format!(
        "ALTER ROLE {} WITH PASSWORD {}",
        ident(role),
        verifier.map_or("NULL".into(), literal)
    )
}

/// `status.managedRolesStatus` after running `plan`'s changes: `failed` holds the first
/// error of each role whose change failed; `applied` the password versions applied
/// before, updated with those applied now.
pub fn status(
    plan: &Plan,
    failed: &BTreeMap<String, String>,
    applied: &BTreeMap<String, PasswordState>,
    transactions: &BTreeMap<String, i64>,
) -> ManagedRoles {
    let mut by_status: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cannot = BTreeMap::new();
    let mut passwords = applied.clone();
    let mut changed: BTreeSet<&str> = BTreeSet::new();
    for c in &plan.changes {
        changed.insert(&c.role);
        if failed.contains_key(&c.role) {
            continue;
        }
        match &c.password {
            Some(PasswordChange::Set { version }) => {
                passwords.insert(
                    c.role.clone(),
                    PasswordState {
                        resource_version: Some(version.clone()),
                        transaction_id: transactions.get(&c.role).copied(),
                    },
                );
            }
            Some(PasswordChange::Disable) => {
                passwords.remove(&c.role);
            }
            None => {}
        }
        if c.operation == "DROP" {
            passwords.remove(&c.role);
        }
    }
    let mut push = |k: &str, v: &str| {
        by_status
            .entry(k.to_owned())
            .or_default()
            .push(v.to_owned())
    };
    for r in &plan.reconciled {
        push("reconciled", r);
    }
    for r in changed {
        match failed.get(r) {
            Some(e) => {
                push("pending-reconciliation", r);
                cannot.insert(r.to_owned(), vec![e.clone()]);
            }
            None => push("reconciled", r),
        }
    }
    for (r, why) in &plan.refused {
        push("pending-reconciliation", r);
        cannot.insert(r.clone(), vec![why.clone()]);
    }
    for r in &plan.not_managed {
        push("not-managed", r);
    }
    for r in &plan.reserved {
        push("reserved", r);
    }
    for v in by_status.values_mut() {
        v.sort();
        v.dedup();
    }
    // Only roles the spec still names keep a password state.
    passwords
        .retain(|r, _| plan.reconciled.contains(r) || plan.changes.iter().any(|c| &c.role == r));
    ManagedRoles {
        by_status,
        cannot_reconcile: cannot,
        password_status: passwords,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: serde_json::Value) -> RoleConfiguration {
        serde_json::from_value(yaml).expect("a role")
    }

    fn db(name: &str) -> DbRole {
        DbRole {
            name: name.into(),
            inherit: true,
            connection_limit: -1,
            ..Default::default()
        }
    }

    fn no_secrets() -> BTreeMap<String, Secret> {
        BTreeMap::new()
    }

    #[test]
    fn a_new_role_is_created_with_every_attribute_its_comment_and_memberships() {
        let s = spec(serde_json::json!({
            "name": "dante", "login": true, "comment": "Dante's", "inRoles": ["pg_monitor"],
            "connectionLimit": 4, "validUntil": "2030-01-01T00:00:00Z",
            "passwordSecret": {"name": "dante-secret"}
        }));
        let secrets = BTreeMap::from([(
            "dante".to_owned(),
            Secret {
                password: "x".into(),
                version: "7".into(),
            },
        )]);
        let p = plan(
            &[s],
            &[db("postgres"), db("app")],
            &secrets,
            &BTreeMap::new(),
        );
        assert_eq!(p.changes.len(), 2, "{p:?}");
        assert_eq!(
            p.changes[0].statements,
            vec![
                "CREATE ROLE \"dante\" NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 4 VALID UNTIL '2030-01-01T00:00:00Z'".to_owned(),
                "COMMENT ON ROLE \"dante\" IS 'Dante''s'".to_owned(),
            ]
        );
        assert_eq!(
            p.changes[0].password,
            Some(PasswordChange::Set {
                version: "7".into()
            })
        );
        assert_eq!(
            p.changes[1].statements,
            vec!["GRANT \"pg_monitor\" TO \"dante\""]
        );
        assert_eq!(p.not_managed, vec!["app"]);
        assert_eq!(p.reserved, vec!["postgres"]);
    }

    #[test]
    fn only_what_differs_is_altered_and_each_difference_is_said() {
        let s = spec(serde_json::json!({"name": "dante", "login": true, "inRoles": ["a"]}));
        let mut have = db("dante");
        have.superuser = true;
        have.login = true;
        have.connection_limit = 3;
        have.valid_until = Some("2030-01-01T00:00:00Z".into());
        have.comment = Some("old".into());
        have.in_roles = ["b".to_owned()].into();
        let p = plan(&[s], &[have], &no_secrets(), &BTreeMap::new());
        let stmts: Vec<&str> = p
            .changes
            .iter()
            .flat_map(|c| c.statements.iter().map(String::as_str))
            .collect();
        assert_eq!(
            stmts,
            vec![
                "ALTER ROLE \"dante\" WITH NOSUPERUSER CONNECTION LIMIT -1 VALID UNTIL 'infinity'",
                "COMMENT ON ROLE \"dante\" IS NULL",
                "GRANT \"a\" TO \"dante\"",
                "REVOKE \"b\" FROM \"dante\"",
            ]
        );
        assert!(
            p.changes[0].reason.contains("superuser true, not false"),
            "{:?}",
            p.changes[0]
        );
        assert!(p.reconciled.is_empty());
    }

    #[test]
    fn a_role_as_the_spec_says_is_reconciled_and_left_alone() {
        let s = spec(serde_json::json!({"name": "dante", "login": true,
            "validUntil": "2030-01-01T00:00:00+00:00"}));
        let mut have = db("dante");
        have.login = true;
        have.valid_until = Some("2030-01-01T00:00:00.000000Z".into());
        let p = plan(&[s], &[have], &no_secrets(), &BTreeMap::new());
        assert!(p.changes.is_empty(), "{p:?}");
        assert_eq!(p.reconciled, vec!["dante"]);
    }

    #[test]
    fn passwords_follow_the_secret_version_and_disable_password() {
        let s = spec(serde_json::json!({"name": "a", "passwordSecret": {"name": "s"}}));
        let secrets = BTreeMap::from([(
            "a".to_owned(),
            Secret {
                password: "x".into(),
                version: "2".into(),
            },
        )]);
        let at = |v: &str| {
            BTreeMap::from([(
                "a".to_owned(),
                PasswordState {
                    resource_version: Some(v.into()),
                    ..Default::default()
                },
            )])
        };
        let p = plan(std::slice::from_ref(&s), &[db("a")], &secrets, &at("2"));
        assert!(p.changes.is_empty(), "same version: {p:?}");
        let p = plan(std::slice::from_ref(&s), &[db("a")], &secrets, &at("1"));
        assert_eq!(
            p.changes[0].password,
            Some(PasswordChange::Set {
                version: "2".into()
            })
        );
        assert!(p.changes[0].statements.is_empty());
        let st = status(&p, &BTreeMap::new(), &at("1"), &BTreeMap::new());
        assert_eq!(
            st.password_status["a"].resource_version.as_deref(),
            Some("2")
        );
        // The Secret missing: refused, said, nothing done.
        let p = plan(&[s], &[db("a")], &no_secrets(), &at("1"));
        assert!(p.changes.is_empty());
        assert!(p.refused["a"].contains("passwordSecret \"s\""), "{p:?}");
        // disablePassword removes one that is there, once.
        let d = spec(serde_json::json!({"name": "a", "disablePassword": true}));
        let mut have = db("a");
        have.has_password = true;
        let p = plan(
            std::slice::from_ref(&d),
            &[have],
            &no_secrets(),
            &BTreeMap::new(),
        );
        assert_eq!(p.changes[0].password, Some(PasswordChange::Disable));
        assert!(
            plan(&[d], &[db("a")], &no_secrets(), &BTreeMap::new())
                .changes
                .is_empty()
        );
    }

    #[test]
    fn absent_roles_are_dropped_and_reserved_ones_never_touched() {
        let specs = [
            spec(serde_json::json!({"name": "gone", "ensure": "absent"})),
            spec(serde_json::json!({"name": "never", "ensure": "absent"})),
            spec(serde_json::json!({"name": "postgres", "superuser": false})),
        ];
        let p = plan(
            &specs,
            &[db("gone"), db("postgres")],
            &no_secrets(),
            &BTreeMap::new(),
        );
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].statements, vec!["DROP ROLE \"gone\""]);
        assert_eq!(p.reconciled, vec!["never"]);
        assert!(p.refused.contains_key("postgres"));
    }

    #[test]
    fn a_failed_role_is_pending_with_its_error_and_the_others_reconciled() {
        let specs = [
            spec(serde_json::json!({"name": "ok"})),
            spec(serde_json::json!({"name": "bad", "inRoles": ["poets"]})),
        ];
        let p = plan(&specs, &[db("app")], &no_secrets(), &BTreeMap::new());
        let failed = BTreeMap::from([(
            "bad".to_owned(),
            "could not perform UPDATE_MEMBERSHIPS on role bad: role \"poets\" does not exist"
                .to_owned(),
        )]);
        let st = status(&p, &failed, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(st.by_status["reconciled"], vec!["ok"]);
        assert_eq!(st.by_status["pending-reconciliation"], vec!["bad"]);
        assert_eq!(st.by_status["not-managed"], vec!["app"]);
        assert!(st.cannot_reconcile["bad"][0].contains("poets"));
    }

    #[test]
    fn names_and_texts_are_quoted() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            password_statement("a", None),
            "ALTER ROLE \"a\" WITH PASSWORD NULL"
        );
    }
}
