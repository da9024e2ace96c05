//! `Database` resources on the primary: one pass runs what [`cnpg_core::databases`] plans
//! for each, against PostgreSQL, and returns upstream's status for it.
//!
//! A database PostgreSQL refuses (an owner that does not exist, a template in use) fails
//! alone: the next one is still reconciled, and so is every other object in a database
//! when one of its extensions cannot be made.

use crate::query::PgQuery;
use cnpg_core::api::DatabaseStatus;
use cnpg_core::databases::{Failure, Managed, plan_database, plan_objects, status};
use cnpg_core::roles::EnsureOption;

/// One pass over one `Database`: the database itself, then (while it is to exist and takes
/// connections) the objects in it. Every change is logged with its reason.
pub async fn reconcile(query: &dyn PgQuery, item: &Managed, instance: &str) -> DatabaseStatus {
    let spec = &item.spec;
    let db = spec.name.as_str();
    let failed = |message: String| {
        tracing::warn!(%instance, database = db, object = %item.object, "database: {message}");
        status(
            spec,
            item.generation,
            &[Failure {
                kind: None,
                name: db.to_owned(),
                message,
            }],
        )
    };
    let found = match query.database(db).await {
        Ok(f) => f,
        Err(e) => return failed(e.to_string()),
    };
    if let Some(step) = plan_database(spec, found.as_ref(), item.deleting) {
        if let Err(e) = query.execute_each_in("postgres", &step.statements).await {
            return failed(e.to_string());
        }
        tracing::info!(%instance, database = db, object = %item.object, "database {}", step.reason);
    }
    let gone = item.deleting || spec.ensure == EnsureOption::Absent;
    let objects = spec.schemas.len() + spec.extensions.len() + spec.fdws.len() + spec.servers.len();
    if gone || objects == 0 {
        return status(spec, item.generation, &[]);
    }
    if spec.allow_connections == Some(false) {
        return failed(
            "allowConnections is false, so the objects in the database cannot be reconciled; \
             allow connections or remove them from the spec"
                .into(),
        );
    }
    let found = match query.objects_in(db).await {
        Ok(f) => f,
        Err(e) => return failed(e.to_string()),
    };
    let mut failures = Vec::new();
    for step in plan_objects(spec, &found) {
        match query.execute_each_in(db, &step.statements).await {
            Ok(()) => {
                tracing::info!(%instance, database = db, object = %item.object, "{} {}: {}", db, step.name, step.reason)
            }
            Err(e) => {
                tracing::warn!(%instance, database = db, object = %item.object, "{} {}: {e}", db, step.name);
                failures.push(Failure {
                    kind: step.kind,
                    name: step.name,
                    message: e.to_string(),
                });
            }
        }
    }
    status(spec, item.generation, &failures)
}
