//! What a `Pooler` asks of its PgBouncer processes, written once for both platforms: the
//! [`cnpg_instance::pooler::Config`] each pooler manager reads, made from the Pooler, the
//! address of its cluster's service, and the user's `authQuerySecret`.

use cnpg_core::api::pooler::{PgBouncerPoolMode, Pooler, PoolerType};
use cnpg_instance::pooler::Config;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

/// The pooler manager's port in a pod: `/metrics`, `/readyz`, `/status`, `/pause`, `/resume`
/// (upstream's PgBouncer metrics port).
pub const METRICS_PORT: i32 = 9127;
/// Label on a pooler's objects and pods: the Pooler's name (upstream's).
pub const LABEL_POOLER: &str = "cnpg.io/poolerName";

/// The longest a switchover waits for the rw poolers' `PAUSE` (their running transactions
/// to end) before it goes on without them.
pub const PAUSE_WITHIN: Duration = Duration::from_secs(3);

/// The longest rw poolers stay paused for a switchover that does not end: the operator
/// resumes them then, and each pooler manager resumes by itself a little later
/// (`holdMs`) should the operator be gone.
pub const HOLD_MAX: Duration = Duration::from_secs(30);

/// Whether a switchover is under way: a target primary other than the current one (a
/// failover's target is `pending` until one is chosen, and has nothing to wait for).
pub fn switching(target: Option<&str>, current: Option<&str>) -> bool {
    target.is_some() && target != current && target != Some(cnpg_core::naming::PENDING)
}

/// One pooler manager's HTTP endpoint, and the name to report it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    /// The process or pod.
    pub name: String,
    /// Its address.
    pub host: String,
    /// Its HTTP port.
    pub port: u16,
}

/// Pauses these pooler managers for a switchover (`POST /pause`, each waiting up to
/// [`PAUSE_WITHIN`] for its running transactions, held at most [`HOLD_MAX`] plus a
/// margin); what each said.
pub async fn hold(managers: &[Manager], token: &str) -> Vec<String> {
    let hold_ms = (HOLD_MAX + Duration::from_secs(15)).as_millis();
    let calls = managers.iter().map(|m| async move {
        let r = cnpg_instance::http::post_authorized(
            &m.host,
            m.port,
            &format!(
                "/pause?timeoutMs={}&holdMs={hold_ms}",
                PAUSE_WITHIN.as_millis()
            ),
            PAUSE_WITHIN + Duration::from_secs(2),
            Some(token),
            String::new(),
        )
        .await;
        match r {
            Ok((200, body)) => format!("{} {body}", m.name),
            Ok((code, body)) => format!("{} not paused ({code}): {body}", m.name),
            Err(e) => format!("{} not paused: {e}", m.name),
        }
    });
    futures::future::join_all(calls).await
}

/// Ends the switchover's pause of these managers (`POST /resume`).
pub async fn release(managers: &[Manager], token: &str) {
    let calls = managers.iter().map(|m| {
        cnpg_instance::http::post_authorized(
            &m.host,
            m.port,
            "/resume",
            Duration::from_secs(5),
            Some(token),
            String::new(),
        )
    });
    futures::future::join_all(calls).await;
}

/// A Pooler that cannot run as written, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct PoolerError {
    /// The field at fault.
    pub field: String,
    /// What is wrong and what to do.
    pub why: String,
}

/// The pooler manager's configuration for `p`, reaching PostgreSQL at `target`
/// (`host`, `port`: the cluster's `-rw`, `-ro` or `-r` service as `spec.type` says),
/// with the user's Secrets by name (for `authQuerySecret`).
pub fn config(
    p: &Pooler,
    target: (&str, u16),
    user: &BTreeMap<String, Secret>,
) -> Result<Config, PoolerError> {
    let bouncer = &p.spec.pgbouncer;
    let auth_user = match &bouncer.auth_query_secret {
        None => None,
        Some(r) => {
            let field = "spec.pgbouncer.authQuerySecret".to_owned();
            let s = user.get(&r.name).ok_or_else(|| PoolerError {
                field: field.clone(),
                why: format!("Secret {:?} does not exist; create it (type kubernetes.io/basic-auth, with username and password)", r.name),
            })?;
            let key = |k: &str| {
                crate::kube::secrets::value(s, k).map_err(|_| PoolerError {
                    field: field.clone(),
                    why: format!(
                        "Secret {:?} has no {k:?}; a basic-auth Secret holds username and password",
                        r.name
                    ),
                })
            };
            Some((key("username")?, key("password")?))
        }
    };
    Ok(Config {
        name: p.metadata.name.clone().unwrap_or_default(),
        target_host: target.0.to_owned(),
        target_port: target.1,
        pool_mode: match bouncer.pool_mode {
            PgBouncerPoolMode::Session => "session",
            PgBouncerPoolMode::Transaction => "transaction",
        }
        .to_owned(),
        parameters: bouncer.parameters.clone(),
        pg_hba: bouncer.pg_hba.clone(),
        paused: bouncer.paused.unwrap_or(false),
        auth_query: bouncer.auth_query.clone(),
        auth_user,
    })
}

/// Whether PgBouncer authenticates users through `cnpg_pooler_pgbouncer` (no
/// `authQuerySecret` of the user's).
pub fn automatic_auth(p: &Pooler) -> bool {
    p.spec.pgbouncer.auth_query_secret.is_none()
}

/// The cluster service a pooler of this type points at, as its suffix (`rw`, `ro`, `r`).
pub fn service_suffix(t: PoolerType) -> &'static str {
    match t {
        PoolerType::Rw => "rw",
        PoolerType::Ro => "ro",
        PoolerType::R => "r",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn pooler(yaml: &str) -> Pooler {
        serde_json::from_value(crate::manifests::parse_documents(yaml).expect("yaml")[0].clone())
            .expect("pooler")
    }

    #[test]
    fn the_config_follows_the_spec_and_reads_the_auth_query_secret() {
        let p = pooler(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Pooler\nmetadata: {name: p}\nspec:\n  cluster: {name: c}\n  pgbouncer:\n    poolMode: transaction\n    paused: true\n    authQuery: SELECT 1\n    authQuerySecret: {name: finder}\n    parameters: {default_pool_size: \"5\"}\n",
        );
        let err = config(&p, ("127.0.0.1", 5000), &BTreeMap::new()).expect_err("no secret");
        assert_eq!(err.field, "spec.pgbouncer.authQuerySecret");
        assert!(err.why.contains("\"finder\" does not exist"), "{err}");
        let s = Secret {
            data: Some(
                [
                    ("username".to_owned(), ByteString(b"u".to_vec())),
                    ("password".to_owned(), ByteString(b"pw".to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let c =
            config(&p, ("127.0.0.1", 5000), &[("finder".to_owned(), s)].into()).expect("config");
        assert_eq!(c.pool_mode, "transaction");
        assert!(c.paused);
        assert_eq!(c.auth_user, Some(("u".into(), "pw".into())));
        assert_eq!(c.parameters["default_pool_size"], "5");
        assert_eq!((c.target_host.as_str(), c.target_port), ("127.0.0.1", 5000));
    }
}
