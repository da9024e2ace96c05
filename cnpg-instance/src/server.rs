//! The instance manager's HTTP endpoints: `/pg/status` (the JSON the operator reads, with
//! upstream's field names, from `cnpg_core::status::InstanceStatus`), the probes
//! `/healthz`, `/readyz`, `/startupz`, and `/metrics` in Prometheus text.

use crate::https::Peer;
use crate::manager::SharedState;
use crate::query::{PgQuery, Snapshot};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use cnpg_core::status::InstanceStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Instance name.
    pub instance: String,
    /// The manager's shared state.
    pub shared: SharedState,
    /// Live queries.
    pub query: Arc<dyn PgQuery>,
    /// The token `/pg/status` takes (the cluster's `status-token`: the local operator
    /// sends it, and `kubectl cnpg status` through the API server's pod proxy).
    pub token: Option<String>,
    /// Served over HTTPS with the operator's CA ([`crate::https`]): `/pg/status` takes a
    /// connection whose client certificate the operator's CA signed, or the token.
    /// Neither a token nor this: `/pg/status` answers anyone who reaches it. The probes
    /// and `/metrics` never need either.
    pub operator_tls: bool,
    /// Base backups, when the cluster has an object store (`POST /pg/backup`, `GET
    /// /pg/backup/{name}`, authorized as `/pg/status`).
    pub backups: Option<Arc<crate::backup_job::BackupJobs>>,
    /// The query-based metrics (default and custom queries) `/metrics` adds.
    pub monitoring: Option<Arc<crate::monitoring::Monitoring>>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/pg/status", get(status))
        .route("/pg/backup", axum::routing::post(start_backup))
        .route("/pg/backup/{name}", get(backup_status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/startupz", get(startupz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The metrics port's router: `/metrics` and nothing else (Prometheus scrapes it; the
/// status and backups stay on the status port).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Builds the status report from the manager's state and a live snapshot (or why there is
/// none: PostgreSQL is down, or the query's error).
pub fn report(state: &AppState, snapshot: Result<&Snapshot, &str>) -> InstanceStatus {
    let shared = state.shared.lock().expect("shared state lock").clone();
    let mut s = InstanceStatus {
        name: state.instance.clone(),
        is_fenced: shared.fenced,
        is_pg_rewind_running: shared.rewinding,
        session_id: shared.session_id.clone(),
        instance_manager_version: env!("CARGO_PKG_VERSION").to_owned(),
        decision: shared.decision.clone(),
        might_be_unavailable: shared.planned_start || (shared.fenced && shared.pid.is_none()),
        wal_disk_full: shared.wal_disk_full,
        restarting_after_crash: shared.restarting_after_crash && !shared.fenced,
        recent_crashes: shared.recent_crashes(),
        ..Default::default()
    };
    match snapshot {
        Ok(p) if shared.pid.is_some() => {
            s.is_pod_ready = true;
            s.is_primary = p.is_primary;
            s.timeline = p.timeline;
            s.current_lsn = p.current_lsn;
            s.received_lsn = p.received_lsn;
            s.replay_lsn = p.replay_lsn;
            s.is_wal_receiver_active = p.wal_receiver_active;
            s.wal_receiver_error = shared.wal_receiver_error.clone();
            s.pending_restart = p.pending_restart;
            s.system_id = p.system_id.clone();
            s.synchronous_standby_names = Some(p.synchronous_standby_names.clone());
            s.replication_info = p.replication.clone();
            s.archiving = p.archiving.clone();
            if p.is_primary {
                s.managed_roles = shared.managed_roles.clone();
                s.tablespaces = shared.tablespaces.clone();
                s.databases = shared.databases.clone();
            }
            if !s.archiving.is_archiving_wal {
                s.archiving.archive_error = shared.archive_error.clone().unwrap_or_default();
            }
        }
        _ => {
            let why = snapshot.err().unwrap_or("no postmaster");
            // The postmaster died a moment ago and the manager's loop has not seen it yet:
            // it is about to restart it in place; say so now, or the operator would take
            // a restart of a few hundred milliseconds for a failure and fail over.
            let died = shared.pid.is_some_and(|p| crate::proc::exited(p as i32));
            if died && !shared.fenced {
                s.restarting_after_crash = true;
            }
            s.error = Some(match (&shared.last_exit, shared.fenced, shared.pid) {
                (_, true, _) => "fenced: PostgreSQL is stopped".to_owned(),
                (Some((why, _)), _, None) => why.clone(),
                (_, _, Some(_)) if died => "the postmaster exited".to_owned(),
                (_, _, Some(_)) => format!("PostgreSQL does not answer: {why}"),
                _ => "PostgreSQL is not running".to_owned(),
            });
        }
    }
    s
}

/// A snapshot of the running PostgreSQL, or why there is none.
async fn live(state: &AppState) -> Result<Snapshot, String> {
    let running = state
        .shared
        .lock()
        .expect("shared state lock")
        .pid
        .is_some();
    if !running {
        return Err("PostgreSQL is not running".into());
    }
    state.query.snapshot().await.map_err(|e| e.to_string())
}

/// How long a status request gives a postmaster whose query just failed to be seen dead.
/// One killed a moment ago may still be exiting — its connections already refused, its
/// /proc entry not yet a zombie — and reported as "does not answer" it would be failed
/// over instead of restarted in place (seen on a loaded machine). A postmaster that is
/// alive and does not answer costs each status request this much more.
const DEATH_SETTLE: Duration = Duration::from_millis(100);

/// Waits up to [`DEATH_SETTLE`] for the postmaster that was queried (`pid`) to be seen
/// dead (gone or a zombie).
async fn settle_death(pid: Option<u32>) {
    let Some(pid) = pid else {
        return;
    };
    let start = std::time::Instant::now();
    while start.elapsed() < DEATH_SETTLE {
        if crate::proc::exited(pid as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a request may read `/pg/status`: see [`AppState::token`] and
/// [`AppState::operator_tls`].
fn authorized(state: &AppState, headers: &axum::http::HeaderMap, peer: Peer) -> bool {
    if state.token.is_none() && !state.operator_tls {
        return true;
    }
    if state.operator_tls && peer.operator {
        return true;
    }
    let Some(token) = &state.token else {
        return false;
    };
    bearer_is(headers, token)
}

/// Whether the request carries `token` (`Authorization: Bearer`, or the header the
/// API server's pod proxy lets through).
pub(crate) fn bearer_is(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| {
            headers
                .get(crate::https::TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
        });
    // Compared in full whatever it holds: the time taken says nothing of the token.
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// The refusal of a request [`authorized`] does not let through.
fn unauthorized(state: &AppState) -> Response {
    let how = match (state.operator_tls, state.token.is_some()) {
        (true, true) => {
            "the operator's client certificate or the cluster's status token is required"
        }
        (true, false) => "the operator's client certificate is required",
        _ => {
            "a bearer token is required: the status-token file in the cluster's secrets \
             directory (the local operator sends it)"
        }
    };
    (StatusCode::UNAUTHORIZED, how).into_response()
}

/// Starts a base backup here (or reports the one of that name already started).
async fn start_backup(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    use crate::backup_job::JobError;
    if !authorized(
        &state,
        &headers,
        peer.map(|Extension(p)| p).unwrap_or_default(),
    ) {
        return unauthorized(&state);
    }
    let Some(jobs) = &state.backups else {
        return (
            StatusCode::CONFLICT,
            "this cluster has no object store (spec.backup.barmanObjectStore): nothing to back up to",
        )
            .into_response();
    };
    let req: crate::backup_job::StartBackup = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("the request: {e}")).into_response(),
    };
    match jobs.start(&req) {
        Ok(info) => (StatusCode::ACCEPTED, axum::Json(info)).into_response(),
        Err(e @ JobError::Invalid(_)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(e @ JobError::Busy(_)) => (StatusCode::CONFLICT, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// How the base backup `name` started here is going.
async fn backup_status(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    if !authorized(
        &state,
        &headers,
        peer.map(|Extension(p)| p).unwrap_or_default(),
    ) {
        return unauthorized(&state);
    }
    let Some(jobs) = &state.backups else {
        return (StatusCode::NOT_FOUND, "no backups here").into_response();
    };
    match jobs.get(&name) {
        Ok(Some(info)) => axum::Json(info).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no backup {name} here")).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn status(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    if !authorized(&state, &headers, peer) {
        return unauthorized(&state);
    }
    // What the manager was doing when the query began: a restart (in place after a crash,
    // or asked for) may end while the query fails, and a report built from the state after
    // it would show a failed query and no restart, which the operator takes for a dead
    // primary and fails over from (seen on a loaded machine).
    let (mut restarting, planned, deaths, pid) = {
        let s = state.shared.lock().expect("shared state lock");
        (s.restarting_after_crash, s.planned_start, s.deaths, s.pid)
    };
    let mut snap = live(&state).await;
    if snap.is_err() {
        settle_death(pid).await;
        // The postmaster died while it was being queried, and the manager may already
        // have restarted it — even finished its crash recovery — before this report is
        // built: the failure describes the crash, not the instance now. Ask again, and if
        // that fails too the instance is restarting (CI saw the operator fail over from
        // a primary whose restart in place had ended while its status request failed).
        let crashed = state.shared.lock().expect("shared state lock").deaths != deaths;
        if crashed {
            restarting = true;
            snap = live(&state).await;
        }
    }
    let mut report = report(&state, snap.as_ref().map_err(String::as_str));
    if snap.is_err() && !report.is_fenced {
        report.restarting_after_crash |= restarting;
        report.might_be_unavailable |= planned;
    }
    let code = if report.error.is_some() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    (code, axum::Json(report)).into_response()
}

async fn healthz() -> &'static str {
    "OK"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match live(&state).await {
        Ok(_) => (StatusCode::OK, "OK").into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "PostgreSQL is not accepting connections",
        )
            .into_response(),
    }
}

async fn startupz(State(state): State<AppState>) -> Response {
    let rewinding = state.shared.lock().expect("shared state lock").rewinding;
    if rewinding || live(&state).await.is_ok() {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "starting").into_response()
    }
}

/// The Prometheus text exposition of an instance.
pub fn render_metrics(report: &InstanceStatus, backups: &cnpg_core::backup::Summary) -> String {
    let mut reg = Registry::with_prefix("cnpg");
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge<i64, AtomicI64Wrapper> = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    gauge(
        &mut reg,
        "collector_up",
        "1 if PostgreSQL is up and answers",
        i64::from(report.error.is_none()),
    );
    gauge(
        &mut reg,
        "collector_fencing_on",
        "1 if the instance is fenced",
        i64::from(report.is_fenced),
    );
    gauge(
        &mut reg,
        "collector_is_primary",
        "1 if the instance is a primary",
        i64::from(report.is_primary),
    );
    gauge(
        &mut reg,
        "collector_timeline",
        "timeline of the instance",
        i64::from(report.timeline),
    );
    gauge(
        &mut reg,
        "collector_current_lsn_bytes",
        "pg_current_wal_lsn() in bytes (primary)",
        report.current_lsn.0 as i64,
    );
    gauge(
        &mut reg,
        "collector_received_lsn_bytes",
        "pg_last_wal_receive_lsn() in bytes (standby)",
        report.received_lsn.0 as i64,
    );
    gauge(
        &mut reg,
        "collector_replay_lsn_bytes",
        "pg_last_wal_replay_lsn() in bytes (standby)",
        report.replay_lsn.0 as i64,
    );
    let a = &report.archiving;
    // Upstream's backup gauges: Unix times, 0 while there is none (so an alert on the age
    // of the last backup fires for a cluster that never had one).
    let unix = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_second())
    };
    for (name, help, at) in [
        (
            "collector_first_recoverability_point",
            "the earliest time the cluster can be recovered to (Unix time; 0: none)",
            &backups.first_recoverability_point,
        ),
        (
            "collector_last_available_backup_timestamp",
            "when the newest completed backup ended (Unix time; 0: none)",
            &backups.last_successful_backup,
        ),
        (
            "collector_last_failed_backup_timestamp",
            "when the newest failed backup ended (Unix time; 0: none)",
            &backups.last_failed_backup,
        ),
    ] {
        gauge(&mut reg, name, help, unix(at));
    }
    let status: Family<Vec<(String, String)>, Gauge<i64, AtomicI64Wrapper>> = Family::default();
    status
        .get_or_create(&vec![("value".to_owned(), "ready".to_owned())])
        .set(i64::from(a.ready_wal_files));
    reg.register(
        "collector_pg_wal_archive_status",
        "WAL files in pg_wal/archive_status by state (ready: waiting to be archived)",
        status,
    );
    let lag: Family<Vec<(String, String)>, Gauge<i64, AtomicI64Wrapper>> = Family::default();
    let sync: Family<Vec<(String, String)>, Gauge<i64, AtomicI64Wrapper>> = Family::default();
    for r in &report.replication_info {
        let labels = vec![("application_name".to_owned(), r.application_name.clone())];
        lag.get_or_create(&labels)
            .set(report.current_lsn.0.saturating_sub(r.replay_lsn.0) as i64);
        let mut sl = labels.clone();
        sl.push(("sync_state".to_owned(), r.sync_state.clone()));
        sync.get_or_create(&sl).set(1);
    }
    reg.register(
        "pg_replication_lag_bytes",
        "bytes the standby's replay is behind this primary",
        lag,
    );
    reg.register(
        "pg_replication_sync_state",
        "1 per standby, labelled with its sync state",
        sync,
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    // Served as Prometheus' text format with the query-based families after these: no
    // OpenMetrics end marker in the middle.
    if out.ends_with("# EOF\n") {
        out.truncate(out.len() - "# EOF\n".len());
    }
    out
}

/// prometheus-client's i64 gauges are backed by `AtomicI64`.
type AtomicI64Wrapper = std::sync::atomic::AtomicI64;

async fn metrics(State(state): State<AppState>) -> Response {
    let snap = live(&state).await;
    let report = report(&state, snap.as_ref().map_err(String::as_str));
    let backups = state
        .shared
        .lock()
        .map(|s| s.backups.clone())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = render_metrics(&report, &backups);
            if let Some(m) = &state.monitoring {
                text.push_str(&m.metrics(report.is_primary).await);
            }
            text
        },
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_carries_the_managers_state_and_metrics_follow() {
        let shared: SharedState = Arc::default();
        {
            let mut s = shared.lock().expect("lock");
            s.wal_disk_full = true;
            s.fenced = true;
            s.last_exit = Some((
                "postmaster killed by signal 9".into(),
                std::time::SystemTime::now(),
            ));
        }
        let state = AppState {
            token: None,
            operator_tls: false,
            backups: None,
            instance: "pg-1".into(),
            shared,
            query: Arc::new(crate::query::MockPgQuery::new()),
            monitoring: None,
        };
        let r = report(&state, Err("PostgreSQL is not running"));
        assert!(r.wal_disk_full && r.is_fenced && r.might_be_unavailable);
        assert_eq!(r.error.as_deref(), Some("fenced: PostgreSQL is stopped"));
        let json = serde_json::to_string(&r).expect("json");
        assert!(
            json.contains("\"walDiskFull\":true") && json.contains("\"isFenced\":true"),
            "{json}"
        );
        let mut r = r;
        r.archiving.ready_wal_files = 3;
        let backups = cnpg_core::backup::Summary {
            last_successful_backup: Some("2026-12-01T10:00:00Z".into()),
            ..Default::default()
        };
        let m = render_metrics(&r, &backups);
        for line in [
            "cnpg_collector_up 0",
            "cnpg_collector_fencing_on 1",
            "cnpg_collector_pg_wal_archive_status{value=\"ready\"} 3",
            "cnpg_collector_last_available_backup_timestamp 1796119200",
            "cnpg_collector_last_failed_backup_timestamp 0",
            "cnpg_collector_first_recoverability_point 0",
        ] {
            assert!(m.contains(line), "{line} missing in\n{m}");
        }
    }
}
