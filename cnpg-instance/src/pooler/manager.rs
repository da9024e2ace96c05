//! The pooler manager's loop and its HTTP endpoint.
//!
//! Every 100 ms it reads the configuration file, rewrites PgBouncer's files where they
//! changed (and has PgBouncer `RELOAD` them), starts PgBouncer again if it died, and
//! brings its pause to what `paused` says. The operator holds a pooler paused around a
//! switchover through `POST /pause` and `POST /resume`: `PAUSE` returns once every server
//! connection is released (each running transaction ended), so the primary changes while
//! no query is in flight, and clients wait instead of failing.

use super::{Config, Dir, PoolerError, Tls, Version, admin, command, read_config, render, write};
use crate::runas::RunAs;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// What the manager runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The operator's [`Config`] file.
    pub config: PathBuf,
    /// This process's directory.
    pub dir: Dir,
    /// The certificates.
    pub tls: Tls,
    /// Where PgBouncer listens (shared with the pooler's other processes).
    pub listen: (String, u16),
    /// The `pgbouncer` program and its version.
    pub pgbouncer: (PathBuf, Version),
    /// The token `POST /pause` and `/resume` take (none: anyone may).
    pub token: Option<String>,
}

/// What `GET /status` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The Pooler.
    pub name: String,
    /// PgBouncer's pid while it runs.
    pub pid: Option<u32>,
    /// PgBouncer is paused (`PAUSE` done).
    pub paused: bool,
    /// The operator holds it paused (a switchover).
    pub held: bool,
    /// Until when at most.
    #[serde(skip)]
    pub held_until: Option<Instant>,
    /// How many times PgBouncer was started again after it ended.
    pub restarts: u32,
    /// The last problem, if any.
    pub error: Option<String>,
}

#[derive(Clone)]
struct Shared {
    status: Arc<Mutex<Status>>,
    opts: Arc<Options>,
    /// Counts `/pause` and `/resume` requests: the loop's own command, begun before one
    /// of them, must not record its outcome after it (a late RESUME's answer would mark
    /// a held pooler resumed, and at the hold's end nothing would resume it).
    requests: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("status lock"));
    }
    fn get(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }
    fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn request(&self) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The loop's `PAUSE` or `RESUME` in flight.
struct InFlight {
    pause: bool,
    /// [`Shared::requests`] when it began.
    asked: u64,
    task: tokio::task::JoinHandle<Result<(), PoolerError>>,
}

/// `PAUSE` or `RESUME`, where being in that state already is no error.
async fn set_paused(opts: &Options, pause: bool) -> Result<(), PoolerError> {
    let c = admin(&opts.dir, opts.listen.1).await?;
    match command(&c, if pause { "PAUSE" } else { "RESUME" }).await {
        Ok(_) => Ok(()),
        Err(PoolerError::Admin(e)) if e.contains("already") || e.contains("not paused") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs PgBouncer until `stop` fires, serving `/status`, `/metrics`, `/pause` and
/// `/resume` on `http`.
pub async fn run(
    opts: Options,
    http: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), PoolerError> {
    let run_as = RunAs::detect().map_err(|e| PoolerError::Admin(e.to_string()))?;
    let first = read_config(&opts.config)?;
    let shared = Shared {
        status: Arc::new(Mutex::new(Status {
            name: first.name.clone(),
            ..Default::default()
        })),
        opts: Arc::new(opts),
        requests: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(shared.clone());
    tokio::spawn(async move {
        let _ = axum::serve(http, app).await;
    });
    let opts = shared.opts.clone();
    let mut cfg: Config = first;
    let mut child: Option<Child> = None;
    let mut started = Instant::now();
    let mut problem: Option<String> = None;
    let mut inflight: Option<InFlight> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        match read_config(&opts.config) {
            Ok(c) => cfg = c,
            Err(e) => {
                let text = e.to_string();
                if problem.as_ref() != Some(&text) {
                    tracing::warn!("{text}; keeping the last good configuration");
                    problem = Some(text);
                }
            }
        }
        let files = render(
            &cfg,
            &opts.dir,
            &opts.tls,
            (&opts.listen.0, opts.listen.1),
            opts.pgbouncer.1,
        );
        let changed = match write(&opts.dir, &files, run_as) {
            Ok(c) => c,
            Err(e) => {
                shared.update(|s| s.error = Some(e.to_string()));
                continue;
            }
        };
        let ended = match child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(code))) => Some(code.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        if let Some(why) = ended {
            tracing::warn!(pooler = %cfg.name, "PgBouncer ended ({why}); starting it again");
            child = None;
            if let Some(c) = inflight.take() {
                c.task.abort();
            }
            shared.update(|s| {
                s.pid = None;
                s.paused = false;
                s.restarts += 1;
                s.error = Some(format!(
                    "PgBouncer ended ({why}); see {}",
                    opts.dir.log().display()
                ));
            });
            // A PgBouncer that cannot start (a port taken, a bad file) is not retried in a
            // tight loop.
            if started.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if child.is_none() {
            match spawn(&opts, run_as) {
                Ok(c) => {
                    tracing::info!(pooler = %cfg.name, pid = ?c.id(), "PgBouncer started");
                    shared.update(|s| s.pid = c.id());
                    child = Some(c);
                    started = Instant::now();
                }
                Err(e) => {
                    shared.update(|s| s.error = Some(e.to_string()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        if changed {
            match admin(&opts.dir, opts.listen.1).await {
                Ok(c) => match command(&c, "RELOAD").await {
                    Ok(_) => tracing::info!(pooler = %cfg.name, "configuration reloaded"),
                    Err(e) => shared.update(|s| s.error = Some(e.to_string())),
                },
                Err(e) => shared.update(|s| s.error = Some(e.to_string())),
            }
        }
        // A hold nobody ended: the pooler resumes by itself (as the Pooler says).
        let st = shared.get();
        if st.held && st.held_until.is_some_and(|t| Instant::now() > t) {
            tracing::warn!(pooler = %cfg.name, "held paused past its bound and never resumed: resuming");
            shared.update(|s| {
                s.held = false;
                s.held_until = None;
            });
        }
        // The Pooler's `paused`, one command at a time: `paused` changes only when PgBouncer
        // said it did. PAUSE waits for running transactions, so it runs beside the loop; a
        // PAUSE the spec no longer wants is dropped before RESUME (PgBouncer never answers
        // a PAUSE resumed under it, and a late answer must not mark it paused again).
        if let Some(done) = inflight.take_if(|c| c.task.is_finished()) {
            match done.task.await {
                Ok(_) if done.asked != shared.requests() => {}
                Ok(Ok(())) => shared.update(|s| {
                    s.paused = done.pause;
                    s.error = None;
                }),
                Ok(Err(e)) => shared.update(|s| s.error = Some(e.to_string())),
                Err(_) => {}
            }
        }
        // While the operator holds the pause, `/pause` and `/resume` drive it.
        let st = shared.get();
        let want = cfg.paused;
        if st.held {
            continue;
        }
        let mut paused = st.paused;
        if let Some(dropped) = inflight.take_if(|c| c.pause != want) {
            // It may have taken effect: the opposite command follows either way (both
            // are no error in the state they ask for).
            dropped.task.abort();
            paused = dropped.pause;
            shared.update(|s| s.paused = dropped.pause);
        }
        if inflight.is_none() && want != paused && started.elapsed() > Duration::from_millis(300) {
            let o = opts.clone();
            inflight = Some(InFlight {
                pause: want,
                asked: shared.requests(),
                task: tokio::spawn(async move { set_paused(&o, want).await }),
            });
        }
    }
    if let Some(mut c) = child {
        if let Some(pid) = c.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
    }
    Ok(())
}

fn spawn(opts: &Options, run_as: Option<RunAs>) -> Result<Child, PoolerError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.dir.log())
        .map_err(super::io(&opts.dir.log()))?;
    let mut cmd = Command::new(&opts.pgbouncer.0);
    cmd.arg(opts.dir.ini())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(super::io(&opts.dir.log()))?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(u) = run_as {
        u.apply(&mut cmd);
    }
    cmd.spawn().map_err(super::io(&opts.pgbouncer.0))
}

/// Ready once PgBouncer answers on its console: what a pod's readiness probe asks before
/// the pooler's Service sends it clients.
async fn readyz(State(sh): State<Shared>) -> Response {
    match admin(&sh.opts.dir, sh.opts.listen.1).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn status(State(sh): State<Shared>) -> Response {
    axum::Json(sh.get()).into_response()
}

async fn metrics(State(sh): State<Shared>) -> Response {
    let got = async {
        let c = admin(&sh.opts.dir, sh.opts.listen.1).await?;
        Ok::<_, PoolerError>((
            command(&c, "SHOW LISTS").await?,
            command(&c, "SHOW POOLS").await?,
            command(&c, "SHOW STATS").await?,
        ))
    }
    .await;
    let text = match got {
        Ok((l, p, s)) => super::render_metrics(&l, &p, &s, true),
        Err(_) => super::render_metrics(&[], &[], &[], false),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// `POST /pause?timeoutMs=N`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PauseQuery {
    timeout_ms: Option<u64>,
    /// How long the hold lasts at most (default [`HOLD_DEFAULT`]): past it the pooler
    /// resumes by itself, should the operator that paused it be gone.
    hold_ms: Option<u64>,
}

/// The longest a `/pause` holds the pooler when it does not say.
const HOLD_DEFAULT: Duration = Duration::from_secs(60);

fn refused(sh: &Shared, headers: &axum::http::HeaderMap) -> Option<Response> {
    let token = sh.opts.token.as_deref()?;
    if crate::server::bearer_is(headers, token) {
        None
    } else {
        Some((StatusCode::UNAUTHORIZED, "a bearer token is required").into_response())
    }
}

/// Holds PgBouncer paused for the operator: answers once `PAUSE` is done (every server
/// connection released), or, past the timeout (a transaction still running; in session
/// mode, a client still connected), resumes and says so with 409.
async fn pause(
    State(sh): State<Shared>,
    headers: axum::http::HeaderMap,
    Query(q): Query<PauseQuery>,
) -> Response {
    if let Some(r) = refused(&sh, &headers) {
        return r;
    }
    sh.request();
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(5_000));
    let begun = Instant::now();
    let until = begun + q.hold_ms.map_or(HOLD_DEFAULT, Duration::from_millis);
    sh.update(|s| {
        s.held = true;
        s.held_until = Some(until);
    });
    match tokio::time::timeout(timeout, set_paused(&sh.opts, true)).await {
        Ok(Ok(())) => {
            sh.update(|s| s.paused = true);
            (
                StatusCode::OK,
                format!("paused in {} ms", begun.elapsed().as_millis()),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            sh.update(|s| s.held = false);
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        Err(_) => {
            sh.update(|s| s.held = false);
            let _ = set_paused(&sh.opts, false).await;
            (
                StatusCode::CONFLICT,
                format!(
                    "not paused within {} ms: server connections still in use (running \
                     transactions, or session-mode clients); resumed",
                    timeout.as_millis()
                ),
            )
                .into_response()
        }
    }
}

/// Ends the operator's hold: `RESUME`, unless the Pooler itself says `paused`.
async fn resume(State(sh): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    if let Some(r) = refused(&sh, &headers) {
        return r;
    }
    sh.request();
    sh.update(|s| s.held = false);
    let keep = read_config(&sh.opts.config).is_ok_and(|c| c.paused);
    if keep {
        return (StatusCode::OK, "kept paused: the Pooler says paused").into_response();
    }
    match set_paused(&sh.opts, false).await {
        Ok(()) => {
            sh.update(|s| s.paused = false);
            (StatusCode::OK, "resumed").into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
