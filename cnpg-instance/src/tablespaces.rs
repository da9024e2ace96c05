//! Declarative tablespaces on the primary: the tablespaces PostgreSQL has are read,
//! `cnpg_core::tablespaces` says what to run, and each one's outcome is its state in
//! `status.tablespacesStatus` — a refusal (an owner that does not exist, a volume not
//! mounted yet) leaves that one `pending` with the reason and holds up no other.

use crate::bootstrap::{sql_ident, sql_literal};
use crate::control::PgError;
use crate::query::PgQuery;
use crate::runas::{self, RunAs};
use cnpg_core::api::cluster::TablespaceState;
use cnpg_core::tablespaces::{Step, Tablespace, plan};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One pass over `wanted`; the state of each.
pub async fn reconcile(
    query: &dyn PgQuery,
    wanted: &[Tablespace],
    run_as: Option<RunAs>,
) -> Result<Vec<TablespaceState>, PgError> {
    let existing = query.tablespaces().await?;
    let mut states = Vec::new();
    for (t, step) in wanted.iter().zip(plan(wanted, &existing)) {
        let outcome = match step {
            Step::Done(_) => Ok(()),
            Step::Create(t) => create(query, &t, run_as)
                .await
                .map_err(|e| format!("while creating tablespace {}: {e}", t.name)),
            Step::ChangeOwner { name, owner } => query
                .execute_each_in(
                    "postgres",
                    &[format!(
                        "ALTER TABLESPACE {} OWNER TO {}",
                        sql_ident(&name),
                        sql_ident(&owner)
                    )],
                )
                .await
                .map_err(|e| format!("while changing the owner of tablespace {name}: {e}")),
        };
        states.push(TablespaceState {
            name: t.name.clone(),
            owner: t.owner.clone(),
            state: if outcome.is_ok() {
                "reconciled"
            } else {
                "pending"
            }
            .into(),
            error: outcome.err(),
        });
    }
    Ok(states)
}

async fn create(query: &dyn PgQuery, t: &Tablespace, run_as: Option<RunAs>) -> Result<(), String> {
    let mut statements = Vec::new();
    if t.location.is_empty() {
        // In place, inside PGDATA: a developer option of PostgreSQL's, a session's to set.
        statements.push("SET allow_in_place_tablespaces = on".to_owned());
    } else {
        prepare(Path::new(&t.location), run_as)?;
    }
    statements.push(format!(
        "CREATE TABLESPACE {}{} LOCATION {}",
        sql_ident(&t.name),
        t.owner
            .as_deref()
            .map(|o| format!(" OWNER {}", sql_ident(o)))
            .unwrap_or_default(),
        sql_literal(&t.location)
    ));
    query
        .execute_each_in("postgres", &statements)
        .await
        .map_err(|e| e.to_string())
}

/// The empty directory `CREATE TABLESPACE` wants, PostgreSQL's own, inside the volume
/// mounted for it: no volume (the pod has not been rolled with it yet) is said, not
/// papered over with a directory on the container's file system.
fn prepare(location: &Path, run_as: Option<RunAs>) -> Result<(), String> {
    let volume = location.parent().unwrap_or(location);
    if !volume.is_dir() {
        return Err(format!(
            "its volume is not mounted at {} yet",
            volume.display()
        ));
    }
    match std::fs::create_dir(location) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", location.display())),
    }
    std::fs::set_permissions(location, std::fs::Permissions::from_mode(0o700))
        .and_then(|()| runas::own(run_as, location))
        .map_err(|e| format!("{}: {e}", location.display()))
}
