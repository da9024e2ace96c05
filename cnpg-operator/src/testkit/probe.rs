//! A probe that asks every instance, directly and over and over, whether it is a primary
//! (`NOT pg_is_in_recovery()`: it accepts writes), and counts the rounds in which two
//! instances said yes: the split brain the fault suite must never see. Behind the
//! `testkit` feature.

use crate::testkit::writer::Target;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the probe saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Rounds in which two or more instances accepted writes.
    pub split_rounds: u64,
    /// Rounds so far.
    pub rounds: u64,
    /// The first such round: when, and who.
    pub first: Option<(Instant, Vec<String>)>,
    /// Every change of an instance's answer: when, which instance, and what it now says
    /// (`Some(true)` accepts writes, `Some(false)` is a standby, `None` no answer).
    pub changes: Vec<(Instant, String, Option<bool>)>,
}

/// The probing thread.
pub struct Probe {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// The instances of a local cluster, each at its own PostgreSQL port, connected to as
/// `base` is (user, password).
pub fn local_targets(ports: &crate::local::Ports, base: &Target) -> Vec<(String, Target)> {
    ports
        .instances
        .iter()
        .map(|(name, (pg, _))| {
            let mut t = base.clone();
            t.port = *pg;
            (name.clone(), t)
        })
        .collect()
}

/// How long one question may take: a hung instance must not stall the rounds.
const ANSWER: Duration = Duration::from_millis(300);

impl Probe {
    /// Probes `targets` (instance name, its own PostgreSQL address) every `every`.
    pub fn start(targets: Vec<(String, Target)>, every: Duration) -> Probe {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let mut clients: Vec<Option<tokio_postgres::Client>> =
                    targets.iter().map(|_| None).collect();
                let mut last: Vec<Option<Option<bool>>> = targets.iter().map(|_| None).collect();
                while !st.load(Ordering::Relaxed) {
                    // Every instance at once, so one round is one instant.
                    let asks =
                        targets
                            .iter()
                            .zip(clients.iter_mut())
                            .map(|((_, t), c)| async move {
                                if c.as_ref().is_none_or(|c| c.is_closed()) {
                                    *c = tokio::time::timeout(ANSWER, t.connect())
                                        .await
                                        .ok()
                                        .and_then(Result::ok);
                                }
                                let client = c.as_ref()?;
                                let q = client.query_one("SELECT NOT pg_is_in_recovery()", &[]);
                                match tokio::time::timeout(ANSWER, q).await {
                                    Ok(Ok(row)) => Some(row.get::<_, bool>(0)),
                                    _ => {
                                        *c = None;
                                        None
                                    }
                                }
                            });
                    let answers = futures::future::join_all(asks).await;
                    let writable: Vec<String> = targets
                        .iter()
                        .zip(&answers)
                        .filter(|(_, a)| **a == Some(true))
                        .map(|((n, _), _)| n.clone())
                        .collect();
                    {
                        let mut seen = s.lock().expect("probe lock");
                        seen.rounds += 1;
                        let now = Instant::now();
                        for (((name, _), answer), before) in
                            targets.iter().zip(&answers).zip(last.iter_mut())
                        {
                            if *before != Some(*answer) {
                                *before = Some(*answer);
                                seen.changes.push((now, name.clone(), *answer));
                            }
                        }
                        if writable.len() > 1 {
                            seen.split_rounds += 1;
                            if seen.first.is_none() {
                                seen.first = Some((Instant::now(), writable));
                            }
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            });
        });
        Probe {
            seen,
            stop,
            handle: Some(handle),
        }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("probe lock").clone()
    }

    /// Stops probing; returns what it saw.
    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.seen()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
