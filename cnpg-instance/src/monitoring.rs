//! The query-based metrics of `/metrics`: the default queries and the user's
//! (`spec.monitoring.customQueriesConfigMap`/`customQueriesSecret`), run as `pg_monitor`
//! in read-only transactions, their results cached for `metricsQueriesTTL`.
//!
//! A slow query never holds up a scrape, nor anything else the manager does: each runs
//! with a statement timeout on connections of its own, the queries run in a task of their
//! own, and a scrape waits for them at most [`Monitoring::WAIT`] before it answers with the
//! last complete results. Failures are metrics too (`cnpg_errors_total` by query and
//! database, `cnpg_last_error`), as upstream exports them.

use crate::query::PgClient;
use cnpg_core::monitoring::{self, Family, PgVersion, Queries, Rows, Sample};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// What the operator writes for the instances (`monitoring.json` among their secrets):
/// the monitoring part of the spec, with the custom queries' files read from their
/// ConfigMaps and Secrets. No file: the default queries, cached 30 s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// `spec.monitoring.disableDefaultQueries`.
    #[serde(default)]
    pub disable_default_queries: bool,
    /// `spec.monitoring.metricsQueriesTTL` in seconds (0: run them at every scrape).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Each custom queries file, in the spec's order (ConfigMaps, then Secrets), with
    /// where it came from.
    #[serde(default)]
    pub custom: Vec<QueriesFile>,
}

/// One custom queries file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueriesFile {
    /// Where it came from (`ConfigMap q/queries`).
    pub source: String,
    /// Its YAML.
    pub text: String,
}

/// The cached results.
#[derive(Default)]
struct Cache {
    text: String,
    at: Option<Instant>,
    ttl: Duration,
    hits: u64,
}

/// The query-based metrics of one instance.
pub struct Monitoring {
    client: PgClient,
    config: PathBuf,
    timeout: Duration,
    cache: Mutex<Cache>,
    refreshing: AtomicBool,
    done: tokio::sync::Notify,
    connections: tokio::sync::Mutex<HashMap<String, tokio_postgres::Client>>,
}

/// The database queries run in when they name none.
const DEFAULT_DATABASE: &str = "postgres";

impl Monitoring {
    /// How long a scrape waits for queries under way before it answers with the last
    /// complete results.
    pub const WAIT: Duration = Duration::from_secs(4);

    /// The metrics of the instance `client` reaches, configured by the file `config`;
    /// each query gives up after `timeout`.
    pub fn new(client: PgClient, config: PathBuf, timeout: Duration) -> Arc<Monitoring> {
        Arc::new(Monitoring {
            client,
            config,
            timeout,
            cache: Mutex::new(Cache {
                ttl: Duration::from_secs(30),
                ..Default::default()
            }),
            refreshing: AtomicBool::new(false),
            done: tokio::sync::Notify::new(),
            connections: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The metrics text: fresh results, or the last complete ones while queries run.
    pub async fn metrics(self: &Arc<Self>, is_primary: bool) -> String {
        let done = self.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let stale = {
            let mut c = self.cache.lock().expect("monitoring cache lock");
            let stale = c.at.is_none_or(|at| at.elapsed() >= c.ttl);
            if !stale {
                c.hits += 1;
            }
            stale
        };
        if stale {
            if !self.refreshing.swap(true, Ordering::AcqRel) {
                let this = self.clone();
                tokio::spawn(async move {
                    let (text, ttl) = this.run(is_primary).await;
                    {
                        let mut c = this.cache.lock().expect("monitoring cache lock");
                        *c = Cache {
                            text,
                            at: Some(Instant::now()),
                            ttl,
                            hits: 0,
                        };
                    }
                    this.refreshing.store(false, Ordering::Release);
                    this.done.notify_waiters();
                });
            }
            let _ = tokio::time::timeout(Self::WAIT, done).await;
        }
        let c = self.cache.lock().expect("monitoring cache lock");
        let mut text = c.text.clone();
        text.push_str(&monitoring::render(&[
            gauge("cnpg_cache_hits", "Scrapes answered from the cached results since the queries last ran", c.hits as f64),
            gauge("cnpg_cache_miss", "1 when this scrape waited for the queries to run again, 0 when it used cached results", f64::from(u8::from(stale))),
        ]));
        text
    }

    fn read_config(&self) -> Result<Config, String> {
        match std::fs::read_to_string(&self.config) {
            Ok(t) => {
                serde_json::from_str(&t).map_err(|e| format!("{}: {e}", self.config.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(format!("{}: {e}", self.config.display())),
        }
    }

    /// Runs every query that applies; the metrics text and how long it stays current.
    async fn run(&self, is_primary: bool) -> (String, Duration) {
        let mut errors: Vec<String> = Vec::new();
        let config = self.read_config().unwrap_or_else(|e| {
            errors.push(e);
            Config::default()
        });
        // Parsed once: a scrape with no cache runs this every time.
        static DEFAULTS: std::sync::OnceLock<Queries> = std::sync::OnceLock::new();
        let mut queries: Queries = if config.disable_default_queries {
            Queries::new()
        } else {
            DEFAULTS
                .get_or_init(|| {
                    monitoring::parse(monitoring::DEFAULT_QUERIES)
                        .expect("the default queries parse (a unit test checks them)")
                })
                .clone()
        };
        for f in &config.custom {
            match monitoring::parse(&f.text) {
                Ok(q) => queries.extend(q),
                Err(e) => errors.push(format!("{}: {e}", f.source)),
            }
        }
        let mut families: Vec<Family> = Vec::new();
        let mut connections = self.connections.lock().await;
        let version = match self.version(&mut connections).await {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("connecting: {e}"));
                queries.clear();
                PgVersion::default()
            }
        };
        let accessible = if queries.values().any(|q| q.needs_database_list()) {
            self.accessible(&mut connections).await.unwrap_or_else(|e| {
                errors.push(format!("listing databases: {e}"));
                vec![]
            })
        } else {
            vec![]
        };
        for (key, q) in &queries {
            match q.runs_on(is_primary, version) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    errors.push(format!("{key}: {e}"));
                    continue;
                }
            }
            for db in q.databases(DEFAULT_DATABASE, &accessible) {
                match self.query(&mut connections, &db, q).await {
                    Ok(None) => {}
                    Ok(Some(rows)) => match q.families(key, &rows) {
                        Ok(f) => families.extend(f),
                        Err(e) => errors.push(format!("{key} on db {db}: {e}")),
                    },
                    Err(e) => errors.push(format!("{key} on db {db}: {e}")),
                }
            }
        }
        // Only the default database's connection outlives the run: one held open in
        // every database would stop a `DROP DATABASE` (a Database resource reclaimed).
        connections.retain(|db, _| db == DEFAULT_DATABASE);
        drop(connections);
        for e in &errors {
            tracing::warn!("monitoring query: {e}");
        }
        let mut error_family = Family {
            name: "cnpg_errors_total".into(),
            help: "Errors of the last run of the monitoring queries, by query and database".into(),
            kind: "counter",
            samples: vec![],
        };
        for e in &errors {
            error_family.samples.push(Sample::new(
                "",
                vec![("errorUserQueries".into(), e.clone())],
                1.0,
            ));
        }
        families.push(error_family);
        families.push(gauge(
            "cnpg_last_error",
            "1 if the last run of the monitoring queries had an error, 0 otherwise",
            f64::from(u8::from(!errors.is_empty())),
        ));
        families.push(gauge(
            "cnpg_last_update_timestamp",
            "When the monitoring queries last ran (Unix time)",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs() as f64),
        ));
        let ttl = Duration::from_secs(config.ttl_seconds.unwrap_or(30));
        (monitoring::render(&families), ttl)
    }

    /// A connection to `db`, opened when there is none (or it broke).
    async fn connection<'a>(
        &self,
        connections: &'a mut HashMap<String, tokio_postgres::Client>,
        db: &str,
    ) -> Result<&'a tokio_postgres::Client, String> {
        if connections.get(db).is_none_or(|c| c.is_closed()) {
            let client = self
                .client
                .connect_as(db, "cnpg-monitoring")
                .await
                .map_err(|e| e.to_string())?;
            connections.insert(db.to_owned(), client);
        }
        Ok(&connections[db])
    }

    async fn version(
        &self,
        connections: &mut HashMap<String, tokio_postgres::Client>,
    ) -> Result<PgVersion, String> {
        let c = self.connection(connections, DEFAULT_DATABASE).await?;
        let rows = c
            .simple_query("SHOW server_version_num")
            .await
            .map_err(|e| e.to_string())?;
        first_value(&rows)
            .and_then(|v| v.parse().ok())
            .map(PgVersion::from_num)
            .ok_or_else(|| "no server_version_num".to_owned())
    }

    async fn accessible(
        &self,
        connections: &mut HashMap<String, tokio_postgres::Client>,
    ) -> Result<Vec<String>, String> {
        let c = self.connection(connections, DEFAULT_DATABASE).await?;
        let rows = c
            .simple_query(
                "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate \
                 AND pg_catalog.has_database_privilege('pg_monitor', datname, 'CONNECT')",
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(to_rows(&rows)
            .rows
            .into_iter()
            .filter_map(|mut r| r.remove(0))
            .collect())
    }

    /// One query in `db`, in a read-only transaction as `pg_monitor`: its rows, or `None`
    /// when its predicate says not now. A connection that does not answer in time is
    /// dropped (its query was cancelled by the server, or the server is gone).
    async fn query(
        &self,
        connections: &mut HashMap<String, tokio_postgres::Client>,
        db: &str,
        q: &monitoring::UserQuery,
    ) -> Result<Option<Rows>, String> {
        let timeout = self.timeout;
        let c = self.connection(connections, db).await?;
        let run = async {
            c.batch_execute(&format!(
                "BEGIN READ ONLY; SET LOCAL ROLE pg_monitor; \
                 SET LOCAL search_path = pg_catalog, public, pg_temp; \
                 SET LOCAL statement_timeout = {}",
                timeout.as_millis()
            ))
            .await?;
            let result = async {
                if let Some(p) = &q.predicate_query {
                    let answer = c.simple_query(p).await?;
                    if first_value(&answer).as_deref() != Some("t") {
                        return Ok(None);
                    }
                }
                Ok(Some(to_rows(&c.simple_query(&q.query).await?)))
            }
            .await;
            c.batch_execute("ROLLBACK").await?;
            result
        };
        match tokio::time::timeout(timeout + Duration::from_secs(1), run).await {
            Ok(r) => r.map_err(|e: tokio_postgres::Error| match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            }),
            Err(_) => {
                connections.remove(db);
                Err(format!("no answer in {} ms", timeout.as_millis()))
            }
        }
    }
}

fn gauge(name: &str, help: &str, value: f64) -> Family {
    Family {
        name: name.into(),
        help: help.into(),
        kind: "gauge",
        samples: vec![Sample::new("", vec![], value)],
    }
}

fn to_rows(messages: &[SimpleQueryMessage]) -> Rows {
    let mut out = Rows::default();
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m {
            if out.columns.is_empty() {
                out.columns = r.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            out.rows
                .push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    out
}

fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    to_rows(messages)
        .rows
        .into_iter()
        .next()?
        .into_iter()
        .next()?
}
