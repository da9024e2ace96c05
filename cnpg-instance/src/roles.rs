//! Managed roles on the primary: the roles PostgreSQL has are read, `cnpg_core::roles`
//! says what to change, and each change runs here in a transaction of its own.
//!
//! Passwords never reach PostgreSQL's log or a statement-tracking extension in clear: a
//! cleartext password from a Secret is turned into a SCRAM-SHA-256 verifier here (what
//! `psql`'s `\password` does), one already given as an MD5 or SCRAM verifier is passed as
//! it is, and statement logging is off inside those transactions. Commits are local: the
//! manager's loop never waits on a synchronous standby for a role.

use crate::control::PgError;
use crate::query::PgQuery;
use cnpg_core::roles::{
    self, ManagedRoles, PasswordChange, PasswordState, RoleConfiguration, Secret,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The passwords the operator wrote for the managed roles (none when the file is absent).
pub fn passwords(file: &Path) -> Result<BTreeMap<String, Secret>, PgError> {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| PgError::Query(format!("{}: {e}", file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(PgError::Io {
            path: file.to_owned(),
            source,
        }),
    }
}

/// One pass: every change the spec needs, then where the roles stand. A role whose
/// change PostgreSQL refuses is reported with PostgreSQL's error and holds up no other.
pub async fn reconcile(
    query: &dyn PgQuery,
    desired: &[RoleConfiguration],
    secrets: &BTreeMap<String, Secret>,
    applied: &BTreeMap<String, PasswordState>,
) -> Result<ManagedRoles, PgError> {
    let in_db = query.roles().await?;
    let plan = roles::plan(desired, &in_db, secrets, applied);
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut transactions: BTreeMap<String, i64> = BTreeMap::new();
    for c in &plan.changes {
        if failed.contains_key(&c.role) {
            continue;
        }
        let mut sql = String::from(
            "SET LOCAL log_statement = 'none'; \
             SET LOCAL log_min_error_statement = 'panic'; SET LOCAL log_min_duration_statement = -1; \
             SET LOCAL synchronous_commit = local; SET LOCAL statement_timeout = '5s';\n",
        );
        for s in &c.statements {
            sql.push_str(s);
            sql.push_str(";\n");
        }
        match &c.password {
            Some(PasswordChange::Set { .. }) => {
                let secret = secrets.get(&c.role).map(|s| verifier(&s.password));
                sql.push_str(&roles::password_statement(&c.role, secret.as_deref()));
                sql.push_str(";\n");
            }
            Some(PasswordChange::Disable) => {
                sql.push_str(&roles::password_statement(&c.role, None));
                sql.push_str(";\n");
            }
            None => {}
        }
        match query.transaction(&sql).await {
            Ok(xid) => {
                tracing::info!(role = %c.role, operation = c.operation, "managed role: {}", c.reason);
                transactions.insert(c.role.clone(), xid);
            }
            Err(e) => {
                let why = format!("could not perform {} on role {}: {e}", c.operation, c.role);
                tracing::warn!(role = %c.role, "{why}");
                failed.insert(c.role.clone(), why);
            }
        }
    }
    Ok(roles::status(&plan, &failed, applied, &transactions))
}

/// What PostgreSQL stores for `password`: a SCRAM-SHA-256 verifier, unless it is one
/// already (or an MD5 one).
fn verifier(password: &str) -> String {
    let md5 = password.len() == 35
        && password.starts_with("md5")
        && password[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if md5 || password.starts_with("SCRAM-SHA-256$") {
        password.to_owned()
    } else {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_is_hashed_and_verifiers_pass_through() {
        let v = verifier("secret");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("secret"));
        let md5 = format!("md5{}", "0123456789abcdef0123456789abcdef");
        assert_eq!(verifier(&md5), md5);
        assert_eq!(verifier(&v), v);
    }
}
