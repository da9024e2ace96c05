//! Statements a primary keeps true in every database that takes connections: the pooler's
//! `auth_query` function, the managed extensions. `template1` is one of them, so databases
//! made later copy the result; the databases are listed again every [`RELIST`] for new ones.
//!
//! One tracker for all of them, so that a step lists the databases once, not once per
//! kind of work, and a statement PostgreSQL refuses (an extension whose library is not
//! loaded until a restart) is tried again every [`RETRY`], not at every step of the loop.

use crate::control::PgError;
use crate::query::PgQuery;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How often the databases are listed again, for ones made since.
pub(super) const RELIST: Duration = Duration::from_secs(30);
/// How long a refused statement waits before it is tried again in that database.
pub(super) const RETRY: Duration = Duration::from_secs(5);

/// One statement to hold in every database, under a key that names it in logs and in the
/// tracker (`pooler auth_query`, `extension pgaudit`).
pub(super) struct Job {
    pub key: String,
    pub sql: String,
}

/// What the jobs are made from. The manager keeps the jobs it formatted with the inputs
/// they came from and formats them again only when these change, not at every step.
#[derive(Clone, PartialEq, Eq, Default)]
pub(super) struct Wanted {
    /// A pooler serves the cluster and its role exists: the `auth_query` function.
    pub pooler_function: bool,
    /// The extensions of the managed libraries the parameters turn on.
    pub extensions: Vec<&'static str>,
}

impl Wanted {
    /// The statements: `SECURITY DEFINER` function for `auth_query` (every database, as
    /// PgBouncer before 1.20 runs the query in the client's database), then one
    /// `CREATE EXTENSION` per managed extension.
    pub(super) fn jobs(&self) -> Vec<Job> {
        const PREAMBLE: &str = "SET synchronous_commit = local; SET statement_timeout = '5s';";
        let mut jobs = Vec::new();
        if self.pooler_function {
            let user = crate::config::POOLER_USER;
            jobs.push(Job {
                key: "pooler auth_query function".into(),
                sql: format!(
                    "{PREAMBLE}\n\
                     CREATE OR REPLACE FUNCTION public.user_search(uname text) \
                     RETURNS TABLE (usename name, passwd text) LANGUAGE sql \
                     SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS \
                     'SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1';\n\
                     REVOKE ALL ON FUNCTION public.user_search(text) FROM public;\n\
                     GRANT EXECUTE ON FUNCTION public.user_search(text) TO {user};"
                ),
            });
        }
        for ext in &self.extensions {
            jobs.push(Job {
                key: format!("extension {ext}"),
                sql: format!(
                    "{PREAMBLE}\nCREATE EXTENSION IF NOT EXISTS {}",
                    cnpg_core::roles::ident(ext)
                ),
            });
        }
        jobs
    }
}

/// What one database made of one job this pass.
pub(super) enum Outcome {
    Done {
        database: String,
        key: String,
    },
    Refused {
        database: String,
        key: String,
        error: PgError,
    },
}

/// The databases as last listed, and which jobs hold in which of them.
#[derive(Default)]
pub(super) struct EveryDatabase {
    listed: Option<(Instant, Vec<String>)>,
    done: BTreeSet<(String, String)>,
    refused: BTreeMap<(String, String), Instant>,
    /// The keys of the jobs that held in every listed database after the last pass: until
    /// the list is stale or the jobs change, a step returns at once, without allocating.
    settled: Option<Vec<String>>,
}

impl EveryDatabase {
    /// Runs each job in every database where it does not hold yet (and was not refused in
    /// the last [`RETRY`]). Cheap when there is nothing to do: no query at all until the
    /// list is [`RELIST`] old or a new job appears. Fails only when the databases cannot
    /// be listed.
    pub(super) async fn ensure(
        &mut self,
        query: &dyn PgQuery,
        jobs: &[Job],
        now: Instant,
    ) -> Result<Vec<Outcome>, PgError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let stale = self
            .listed
            .as_ref()
            .is_none_or(|(at, _)| now.duration_since(*at) >= RELIST);
        let same_jobs = |keys: &Vec<String>| keys.iter().eq(jobs.iter().map(|j| &j.key));
        if !stale && self.settled.as_ref().is_some_and(same_jobs) {
            return Ok(Vec::new());
        }
        self.settled = None;
        if stale {
            self.listed = Some((now, query.databases().await?));
        }
        let databases = self.listed.as_ref().map_or(&[][..], |(_, d)| &d[..]);
        let mut outcomes = Vec::new();
        let mut all_hold = true;
        for database in databases {
            for job in jobs {
                let id = (database.clone(), job.key.clone());
                if self.done.contains(&id) {
                    continue;
                }
                if self
                    .refused
                    .get(&id)
                    .is_some_and(|at| now.duration_since(*at) < RETRY)
                {
                    all_hold = false;
                    continue;
                }
                match query.execute_in(database, &job.sql).await {
                    Ok(()) => {
                        self.refused.remove(&id);
                        self.done.insert(id);
                        outcomes.push(Outcome::Done {
                            database: database.clone(),
                            key: job.key.clone(),
                        });
                    }
                    Err(error) => {
                        all_hold = false;
                        self.refused.insert(id, now);
                        outcomes.push(Outcome::Refused {
                            database: database.clone(),
                            key: job.key.clone(),
                            error,
                        });
                    }
                }
            }
        }
        if all_hold {
            self.settled = Some(jobs.iter().map(|j| j.key.clone()).collect());
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::MockPgQuery;
    use std::sync::{Arc, Mutex};

    fn job(key: &str) -> Job {
        Job {
            key: key.into(),
            sql: format!("-- {key}"),
        }
    }

    /// Lists `dbs` and records every statement; `refuse` says which (database, sql) fail.
    fn mock(
        dbs: &'static [&'static str],
        refuse: fn(&str, &str) -> bool,
    ) -> (MockPgQuery, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut q = MockPgQuery::new();
        let l = log.clone();
        q.expect_databases().returning(move || {
            l.lock().expect("log").push("list".into());
            Ok(dbs.iter().map(|d| d.to_string()).collect())
        });
        let l = log.clone();
        q.expect_execute_in().returning(move |db, sql| {
            l.lock().expect("log").push(format!("{db}: {sql}"));
            if refuse(db, sql) {
                Err(PgError::Query("library not loaded".into()))
            } else {
                Ok(())
            }
        });
        (q, log)
    }

    #[tokio::test]
    async fn each_job_runs_once_per_database_and_the_list_is_shared() {
        let (q, log) = mock(&["app", "template1"], |_, _| false);
        let mut every = EveryDatabase::default();
        let t = Instant::now();
        let jobs = [job("a"), job("b")];
        let out = every.ensure(&q, &jobs, t).await.expect("listed");
        assert_eq!(out.len(), 4);
        assert!(
            every.settled.is_some(),
            "every pair holds: steps return at once"
        );
        assert_eq!(
            every
                .ensure(&q, &jobs, t + RETRY)
                .await
                .expect("listed")
                .len(),
            0
        );
        assert_eq!(
            *log.lock().expect("log"),
            [
                "list",
                "app: -- a",
                "app: -- b",
                "template1: -- a",
                "template1: -- b"
            ]
        );
        // A new job runs at once, on the list it already has.
        every
            .ensure(&q, &[job("c")], t + RETRY)
            .await
            .expect("listed");
        assert_eq!(log.lock().expect("log").len(), 7);
        // Listed again after RELIST, for databases made since; nothing runs twice.
        every.ensure(&q, &jobs, t + RELIST).await.expect("listed");
        assert_eq!(log.lock().expect("log").len(), 8);
    }

    #[tokio::test]
    async fn a_refused_statement_waits_before_it_is_tried_again() {
        let (q, log) = mock(&["app"], |_, sql| sql.contains("pgaudit"));
        let mut every = EveryDatabase::default();
        let t = Instant::now();
        let jobs = [job("pgaudit"), job("pooler")];
        let out = every.ensure(&q, &jobs, t).await.expect("listed");
        assert!(matches!(&out[0], Outcome::Refused { key, .. } if key == "pgaudit"));
        assert!(matches!(&out[1], Outcome::Done { key, .. } if key == "pooler"));
        assert!(every.settled.is_none(), "a refused pair is still waiting");
        // Every step of the loop (200 ms) within RETRY: nothing is tried.
        for ms in (200..5000).step_by(200) {
            let out = every.ensure(&q, &jobs, t + Duration::from_millis(ms)).await;
            assert!(out.expect("listed").is_empty());
        }
        assert_eq!(log.lock().expect("log").len(), 3);
        every.ensure(&q, &jobs, t + RETRY).await.expect("listed");
        assert_eq!(
            log.lock().expect("log").last().expect("a statement"),
            "app: -- pgaudit"
        );
    }
}
