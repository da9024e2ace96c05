//! The instance manager against real PostgreSQL servers: a primary and two streaming
//! replicas, synchronous names applied and reported, a promotion, the old primary demoted
//! through pg_rewind and streaming from the new one. The test plays the operator by
//! writing the cluster status the managers read.

use cnpg_instance::testkit::Harness;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

async fn insert(h: &Harness, on: &str, n: i32) {
    let c = h.connect(on).await;
    c.batch_execute("CREATE TABLE IF NOT EXISTS t (n int)")
        .await
        .expect("create");
    c.execute("INSERT INTO t SELECT generate_series(1, $1)", &[&n])
        .await
        .expect("insert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_two_replicas_sync_names_promotion_and_rewind() {
    let mut h = Harness::new("pg");
    h.view.update(|v| v.target_primary = Some("pg-1".into()));
    h.initdb("pg-1").await;
    h.start("pg-1").await;
    h.wait_until("pg-1 to publish itself as primary", T, async |h| {
        let v = h.view.get();
        if v.current_primary.as_deref() == Some("pg-1") {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    let s = h.status("pg-1").await;
    assert!(s.is_primary && s.error.is_none(), "{s:?}");
    assert_eq!(s.timeline, 1);

    for r in ["pg-2", "pg-3"] {
        h.join(r, "pg-1").await;
        h.start(r).await;
    }
    h.wait_until("both replicas streaming", T, async |h| {
        for r in ["pg-2", "pg-3"] {
            let s = h.status(r).await;
            if !s.is_wal_receiver_active || s.is_primary {
                return Err(format!("{r}: {s:?}"));
            }
        }
        Ok(())
    })
    .await;

    // LSNs advance on the primary and the replicas follow.
    let before = h.status("pg-2").await.received_lsn;
    insert(&h, "pg-1", 1000).await;
    let primary_lsn = h.status("pg-1").await.current_lsn;
    assert!(primary_lsn > before);
    h.wait_until("replicas to receive the new WAL", T, async |h| {
        for r in ["pg-2", "pg-3"] {
            let s = h.status(r).await;
            if s.received_lsn < primary_lsn || s.replay_lsn < primary_lsn {
                return Err(format!(
                    "{r} at {} / {}, primary at {primary_lsn}",
                    s.received_lsn, s.replay_lsn
                ));
            }
        }
        Ok(())
    })
    .await;

    // Synchronous replication: applied with a reload, reported in effect.
    let names = r#"ANY 1 ("pg-2","pg-3")"#;
    h.view
        .update(|v| v.synchronous_standby_names = names.into());
    h.wait_until("synchronous names in effect", T, async |h| {
        let s = h.status("pg-1").await;
        let quorum = s
            .replication_info
            .iter()
            .filter(|r| r.sync_state == "quorum")
            .count();
        if s.synchronous_standby_names.as_deref() == Some(names) && quorum == 2 {
            Ok(())
        } else {
            Err(format!(
                "{:?} {:?}",
                s.synchronous_standby_names, s.replication_info
            ))
        }
    })
    .await;
    insert(&h, "pg-1", 10).await; // commits are acknowledged by a synchronous standby

    // Promote pg-2: pg-1 shuts down, pg-2 waits for its WAL receiver, promotes, publishes.
    h.view.update(|v| v.target_primary = Some("pg-2".into()));
    h.wait_until("pg-2 promoted and published", T, async |h| {
        let s = h.status("pg-2").await;
        let v = h.view.get();
        if s.is_primary && v.current_primary.as_deref() == Some("pg-2") {
            Ok(())
        } else {
            Err(format!("{s:?} {v:?}"))
        }
    })
    .await;
    assert_eq!(h.status("pg-2").await.timeline, 2);
    h.view
        .update(|v| v.synchronous_standby_names = r#"ANY 1 ("pg-1","pg-3")"#.into());

    // The old primary is rewound and streams from pg-2; pg-3 follows pg-2 too.
    h.wait_until("pg-1 and pg-3 streaming from pg-2", Duration::from_secs(90), async |h| {
        let p = h.status("pg-2").await;
        let streaming: Vec<&str> = p.replication_info.iter().filter(|r| r.state == "streaming").map(|r| r.application_name.as_str()).collect();
        for r in ["pg-1", "pg-3"] {
            let s = h.status(r).await;
            if s.is_primary || !s.is_wal_receiver_active || s.timeline != 2 || !streaming.contains(&r) {
                return Err(format!("{r}: primary={} receiver={} tl={} decision={:?}; pg-2 streams to {streaming:?}", s.is_primary, s.is_wal_receiver_active, s.timeline, s.decision));
            }
        }
        Ok(())
    })
    .await;
    // Data written before and after the promotion is on the rewound old primary.
    insert(&h, "pg-2", 5).await;
    let lsn = h.status("pg-2").await.current_lsn;
    h.wait_until("pg-1 to replay pg-2's writes", T, async |h| {
        let s = h.status("pg-1").await;
        if s.replay_lsn >= lsn {
            Ok(())
        } else {
            Err(format!("{} < {lsn}", s.replay_lsn))
        }
    })
    .await;
    let n: i64 = h
        .connect("pg-1")
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1015);
    // With its upstream gone, a standby still reports the timeline it follows (2), not its
    // last restartpoint's (1): the election compares timelines exactly then.
    h.stop("pg-2").await;
    h.wait_until("pg-3's WAL receiver stopped", T, async |h| {
        let s = h.status("pg-3").await;
        if s.is_wal_receiver_active {
            Err("still streaming".into())
        } else {
            Ok(())
        }
    })
    .await;
    let s = h.status("pg-3").await;
    assert_eq!(s.timeline, 2, "{s:?}");
    for name in ["pg-1", "pg-2", "pg-3"] {
        h.stop(name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_stops_postgres_and_keeps_it_stopped() {
    let mut h = Harness::new("pg");
    h.running_primary("pg-1").await;
    h.view.update(|v| v.fenced = vec!["pg-1".into()]);
    h.wait_until("PostgreSQL stopped by fencing", T, async |h| {
        let s = h.status("pg-1").await;
        if s.is_fenced && s.error.is_some() {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    let port = h.instances["pg-1"].status_port;
    let (code, _) = cnpg_instance::testkit::http_get(port, "/readyz")
        .await
        .expect("readyz");
    assert_eq!(code, 500);
    let metrics = cnpg_instance::testkit::http_get(port, "/metrics")
        .await
        .expect("metrics")
        .1;
    assert!(metrics.contains("cnpg_collector_fencing_on 1"), "{metrics}");
    // It stays stopped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = h.status("pg-1").await;
    assert!(
        s.error.as_deref() == Some("fenced: PostgreSQL is stopped"),
        "{s:?}"
    );
    assert!(
        h.instances["pg-1"]
            .shared
            .lock()
            .expect("lock")
            .pid
            .is_none()
    );
    // Unfenced, the same primary resumes.
    h.view.update(|v| v.fenced.clear());
    h.wait_until("pg-1 back after unfencing", T, async |h| {
        if h.status("pg-1").await.is_primary {
            Ok(())
        } else {
            Err("down".into())
        }
    })
    .await;
    h.stop("pg-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postmaster_is_reported_at_once_and_restarted() {
    let mut h = Harness::new("pg");
    h.running_primary("pg-1").await;
    let shared = h.instances["pg-1"].shared.clone();
    let pid = shared.lock().expect("lock").pid.expect("postmaster pid");
    let killed = std::time::SystemTime::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    h.wait_until(
        "the death reported",
        Duration::from_secs(5),
        async |_| match shared.lock().expect("lock").last_exit.clone() {
            Some((why, _)) if why.contains("signal 9") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let (_, at) = shared
        .lock()
        .expect("lock")
        .last_exit
        .clone()
        .expect("exit");
    let after = at.duration_since(killed).unwrap_or_default();
    println!("postmaster death noticed {after:?} after kill -9");
    // Still the target primary: the manager starts it again (crash recovery), and says
    // so meanwhile, so the operator waits for it instead of failing over.
    // (PostgreSQL may answer a status query a few milliseconds before the manager's own
    // start loop sees it up and clears the flag.)
    h.wait_until("pg-1 restarted", T, async |h| {
        let s = h.status("pg-1").await;
        if s.is_primary && !s.restarting_after_crash {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    let s = h.status("pg-1").await;
    assert_eq!(s.recent_crashes, 1, "{s:?}");

    // Killed again, with the target moved elsewhere meanwhile: not started again.
    h.view.update(|v| v.target_primary = Some("pending".into()));
    let pid = shared.lock().expect("lock").pid.expect("postmaster pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    h.wait_until("pg-1 to stay down", T, async |h| {
        let s = h.status("pg-1").await;
        if s.error.is_some() && !s.restarting_after_crash && s.recent_crashes == 2 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = h.status("pg-1").await;
    assert!(s.error.is_some() && !s.is_primary, "{s:?}");
    h.stop("pg-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reload_or_wait_for_an_in_place_restart() {
    let mut h = Harness::new("pg");
    h.running_primary("pg-1").await;
    // A reloadable parameter applies at once; one needing a restart waits for it.
    h.view.update(|v| {
        v.parameters.insert("work_mem".into(), "8MB".into());
        v.parameters.insert("shared_buffers".into(), "32MB".into());
    });
    h.wait_until(
        "work_mem reloaded and shared_buffers pending",
        T,
        async |h| {
            let wm: String = h
                .connect("pg-1")
                .await
                .query_one("SHOW work_mem", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            let s = h.status("pg-1").await;
            if wm == "8MB" && s.pending_restart {
                Ok(())
            } else {
                Err(format!("work_mem {wm}, pending {}", s.pending_restart))
            }
        },
    )
    .await;
    let pid = h.instances["pg-1"].shared.lock().expect("lock").pid;
    h.view
        .update(|v| v.restart = Some("2026-11-26T12:00:00Z".into()));
    h.wait_until("restarted in place, nothing pending", T, async |h| {
        let s = h.status("pg-1").await;
        let now = h.instances["pg-1"].shared.lock().expect("lock").pid;
        if s.is_primary && !s.pending_restart && now.is_some() && now != pid {
            Ok(())
        } else {
            Err(format!("pid {now:?} pending {}", s.pending_restart))
        }
    })
    .await;
    let sb: String = h
        .connect("pg-1")
        .await
        .query_one("SHOW shared_buffers", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(sb, "32MB");
    h.stop("pg-1").await;
}

/// pg-1, a primary, wrote 50 rows pg-2 never received; pg-2 was then promoted while pg-1
/// stayed fenced (stopped): pg-1's history has diverged from the new primary's.
async fn diverged_old_primary() -> Harness {
    let mut h = Harness::new("pg");
    h.view.update(|v| v.target_primary = Some("pg-1".into()));
    h.initdb("pg-1").await;
    h.start("pg-1").await;
    h.wait_until("pg-1 primary", T, async |h| {
        if h.view.get().current_primary.as_deref() == Some("pg-1") {
            Ok(())
        } else {
            Err("no".into())
        }
    })
    .await;
    h.join("pg-2", "pg-1").await;
    h.start("pg-2").await;
    insert(&h, "pg-1", 100).await;
    let lsn = h.status("pg-1").await.current_lsn;
    h.wait_until("pg-2 caught up", T, async |h| {
        if h.status("pg-2").await.replay_lsn >= lsn {
            Ok(())
        } else {
            Err("behind".into())
        }
    })
    .await;

    // pg-2 stops; pg-1 writes what pg-2 will never see, then stops too.
    h.view.update(|v| v.fenced = vec!["pg-2".into()]);
    h.wait_until("pg-2 fenced and stopped", T, async |h| {
        if h.instances["pg-2"]
            .shared
            .lock()
            .expect("lock")
            .pid
            .is_none()
        {
            Ok(())
        } else {
            Err("running".into())
        }
    })
    .await;
    insert(&h, "pg-1", 50).await;
    // Fence both: pg-2 must stay down while pg-1 writes and stops.
    h.view
        .update(|v| v.fenced = vec!["pg-1".into(), "pg-2".into()]);
    h.wait_until("pg-1 fenced and stopped", T, async |h| {
        if h.instances["pg-1"]
            .shared
            .lock()
            .expect("lock")
            .pid
            .is_none()
        {
            Ok(())
        } else {
            Err("running".into())
        }
    })
    .await;

    // pg-2 becomes primary on a new timeline; pg-1's last writes are now a diverged history.
    h.view.update(|v| {
        v.fenced = vec!["pg-1".into()];
        v.target_primary = Some("pg-2".into());
    });
    h.wait_until("pg-2 promoted", T, async |h| {
        if h.view.get().current_primary.as_deref() == Some("pg-2") {
            Ok(())
        } else {
            Err(format!("{:?}", h.status("pg-2").await.decision))
        }
    })
    .await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_old_primary_is_rewound_and_loses_only_unreplicated_writes() {
    let mut h = diverged_old_primary().await;
    h.view.update(|v| v.fenced.clear());
    let label = back_as_standby_of_pg2(&mut h, "rewound").await;
    assert!(label.contains("BACKUP METHOD: pg_rewind"), "{label}");
}

/// Waits until pg-1 streams from pg-2 on its timeline and holds pg-2's 100 rows, then
/// stops both; the backup label PostgreSQL started pg-1 from says what made its data.
async fn back_as_standby_of_pg2(h: &mut Harness, how: &str) -> String {
    h.wait_until(
        &format!("pg-1 {how} and streaming from pg-2"),
        Duration::from_secs(120),
        async |h| {
            let s = h.status("pg-1").await;
            if !s.is_primary && s.is_wal_receiver_active && s.timeline == 2 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    for name in ["pg-2", "pg-1"] {
        let n: i64 = h
            .connect(name)
            .await
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 100, "{name}: only the writes pg-2 never had are gone");
    }
    let label = std::fs::read_to_string(h.instances["pg-1"].pgdata.join("backup_label.old"))
        .expect("the label PostgreSQL started from");
    for name in ["pg-1", "pg-2"] {
        h.stop(name).await;
    }
    label
}

/// When pg_rewind cannot work (here the old primary's WAL since the divergence is gone),
/// the instance manager clones the new primary again instead of staying down for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_that_cannot_be_rewound_is_cloned_again() {
    let mut h = diverged_old_primary().await;
    let wal = h.instances["pg-1"].pgdata.join("pg_wal");
    for e in std::fs::read_dir(&wal).expect("pg_wal").flatten() {
        if e.file_type().expect("type").is_file() {
            std::fs::remove_file(e.path()).expect("remove a WAL segment");
        }
    }
    h.view.update(|v| v.fenced.clear());
    let label = back_as_standby_of_pg2(&mut h, "cloned again").await;
    assert!(label.contains("LABEL: pg_basebackup"), "{label}");
}

/// A primary told to stop (its pod deleted) starts a smart shutdown, which waits for open
/// sessions; once the cluster's target primary is another instance (the operator began a
/// failover), it stops fast instead of keeping those sessions committing for
/// `smartShutdownTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_primary_cuts_its_smart_shutdown_short_when_a_failover_begins() {
    let mut h = Harness::new("pg");
    h.smart_timeout = Duration::from_secs(600);
    h.running_primary("pg-1").await;
    // An open session: a smart shutdown waits for it.
    let session = h.connect("pg-1").await;
    session.batch_execute("SELECT 1").await.expect("session");
    let shared = h.instances["pg-1"].shared.clone();
    let tasks = h.begin_stop("pg-1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        shared.lock().expect("lock").pid.is_some(),
        "the smart shutdown waits for the open session"
    );
    assert!(
        session.batch_execute("SELECT 1").await.is_ok(),
        "the open session still works during a smart shutdown"
    );
    // The operator begins a failover: the target is no longer pg-1.
    h.view.update(|v| v.target_primary = Some("pending".into()));
    let stopped = tokio::time::timeout(T, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    assert!(
        stopped.is_ok(),
        "the manager stopped after the failover began"
    );
    assert!(shared.lock().expect("lock").pid.is_none());
    assert!(
        session.batch_execute("SELECT 1").await.is_err(),
        "the session was cut by the fast shutdown"
    );
}
