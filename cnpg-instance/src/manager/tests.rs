//! The manager executes the core's decisions: each path with mocked PostgreSQL programs
//! and queries (the postmaster is a real `sleep` process, so exits are real).

use super::*;
use crate::control::MockPgControl;
use crate::query::MockPgQuery;
use crate::view::{MemoryView, MockClusterView};
use std::collections::BTreeMap;

fn pgdata(standby: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("PG_VERSION"), "15\n").expect("write");
    std::fs::create_dir(d.path().join("global")).expect("global");
    std::fs::write(d.path().join("global/pg_control"), "control").expect("write");
    DataDir::new(d.path())
        .mark("pg", "pg-1", None)
        .expect("mark");
    if standby {
        DataDir::new(d.path()).set_standby(None).expect("standby");
    }
    d
}

fn cfg(dir: &std::path::Path) -> ManagerConfig {
    ManagerConfig {
        cluster: "pg".into(),
        instance: "pg-1".into(),
        pgdata: dir.to_owned(),
        settings: Settings {
            cluster: "pg".into(),
            instance: "pg-1".into(),
            listen: "127.0.0.1".into(),
            port: 5432,
            socket_dir: dir.display().to_string(),
            parameters: BTreeMap::new(),
            synchronous_standby_names: String::new(),
            pg_hba: vec![],
            pg_ident: vec![],
            tls: crate::tls::Files {
                dir: dir.to_owned(),
            },
            archive: None,
        },
        log_file: dir.join("log"),
        certificates_from: None,
        superuser_password: dir.join("superuser-password"),
        managed_role_passwords: dir.join("managed-roles.json"),
        run_as: None,
        tick: Duration::from_secs(3600),
        stop_timeout: Duration::from_secs(5),
        smart_timeout: Duration::ZERO,
    }
}

fn sleeper() -> tokio::process::Command {
    let mut c = tokio::process::Command::new("sleep");
    c.arg("30").kill_on_drop(true);
    c
}

fn snapshot(primary: bool, receiver: bool) -> Snapshot {
    Snapshot {
        is_primary: primary,
        wal_receiver_active: receiver,
        ..Default::default()
    }
}

fn view(current: Option<&str>, target: &str) -> ViewData {
    ViewData {
        current_primary: current.map(String::from),
        target_primary: Some(target.into()),
        instances: vec!["pg-1".into(), "pg-2".into()],
        primary_endpoint: Some(Endpoint {
            host: "127.0.0.1".into(),
            port: 6000,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn first_primary_starts_then_publishes_itself() {
    let dir = pgdata(false);
    let mut ctl = MockPgControl::new();
    ctl.expect_postmaster().times(1).returning(sleeper);
    let mut query = MockPgQuery::new();
    query
        .expect_snapshot()
        .returning(|| Ok(snapshot(true, false)));
    query.expect_execute().returning(|_| Ok(()));
    let mut v = MockClusterView::new();
    v.expect_read().returning(|| Ok(view(None, "pg-1")));
    v.expect_acquire_primary_lease()
        .withf(|n| n == "pg-1")
        .returning(|_| Ok(true));
    v.expect_publish_current_primary()
        .withf(|n| n == "pg-1")
        .times(1)
        .returning(|_| Ok(()));
    let mut m = Manager::new(cfg(dir.path()), Arc::new(ctl), Arc::new(query), Arc::new(v));
    m.step().await; // Start
    assert!(m.shared().lock().expect("lock").up);
    let conf =
        std::fs::read_to_string(dir.path().join("custom.conf")).expect("custom.conf written");
    assert!(conf.contains("port = '5432'"));
    assert!(
        conf.contains("recovery_init_sync_method = 'syncfs'"),
        "a crash recovery starts without an fsync of every file: {conf}"
    );
    assert!(
        std::fs::read_to_string(dir.path().join("postgresql.conf"))
            .expect("conf")
            .contains("include 'custom.conf'")
    );
    m.step().await; // Publish
}

#[tokio::test]
async fn no_promotion_without_the_primary_lease() {
    let dir = pgdata(true);
    let mut ctl = MockPgControl::new();
    ctl.expect_postmaster().times(1).returning(sleeper);
    ctl.expect_promote().times(0);
    let mut query = MockPgQuery::new();
    query
        .expect_snapshot()
        .returning(|| Ok(snapshot(false, false)));
    query.expect_execute().returning(|_| Ok(()));
    let mut v = MockClusterView::new();
    v.expect_read().returning(|| Ok(view(Some("pg-2"), "pg-1")));
    v.expect_acquire_primary_lease()
        .withf(|n| n == "pg-1")
        .returning(|_| Ok(false));
    v.expect_publish_current_primary().times(0);
    let mut m = Manager::new(cfg(dir.path()), Arc::new(ctl), Arc::new(query), Arc::new(v));
    for _ in 0..4 {
        m.step().await;
    }
    let decision = m.shared().lock().expect("lock").decision.clone();
    assert!(
        decision.contains("waiting for the primary lease"),
        "{decision}"
    );
}

#[tokio::test]
async fn target_standby_waits_for_its_receiver_then_promotes() {
    let dir = pgdata(true);
    let mut ctl = MockPgControl::new();
    ctl.expect_postmaster().times(1).returning(sleeper);
    ctl.expect_promote().times(1).returning(|| Ok(()));
    let mut query = MockPgQuery::new();
    let mut calls = 0;
    query.expect_snapshot().returning(move || {
        calls += 1;
        Ok(snapshot(false, calls < 3)) // streaming at first, then the receiver stops
    });
    query
        .expect_execute()
        .withf(|sql| sql == "CHECKPOINT")
        .times(1)
        .returning(|_| Ok(()));
    query.expect_execute().returning(|_| Ok(())); // replication slots
    let mem = MemoryView::new(view(Some("pg-2"), "pg-1"));
    let mut m = Manager::new(
        cfg(dir.path()),
        Arc::new(ctl),
        Arc::new(query),
        Arc::new(mem),
    );
    m.step().await; // Start (as a standby)
    let over = std::fs::read_to_string(dir.path().join("override.conf")).expect("override");
    assert!(
        over.contains("port=6000") && over.contains("primary_slot_name = '_cnpg_pg_1'"),
        "{over}"
    );
    m.step().await; // receiver active: wait
    assert!(
        m.shared()
            .lock()
            .expect("lock")
            .decision
            .contains("waiting for the WAL receiver")
    );
    m.step().await; // receiver gone: promote
}

#[tokio::test]
async fn fencing_stops_postgres_and_keeps_it_stopped() {
    let dir = pgdata(false);
    let mut ctl = MockPgControl::new();
    ctl.expect_postmaster().times(1).returning(sleeper);
    let mut query = MockPgQuery::new();
    query
        .expect_snapshot()
        .returning(|| Ok(snapshot(true, false)));
    query.expect_execute().returning(|_| Ok(()));
    let mem = MemoryView::new(view(Some("pg-1"), "pg-1"));
    let mut m = Manager::new(
        cfg(dir.path()),
        Arc::new(ctl),
        Arc::new(query),
        Arc::new(mem.clone()),
    );
    m.step().await;
    assert!(m.shared().lock().expect("lock").up);
    mem.update(|d| d.fenced = vec!["pg-1".into()]);
    m.step().await;
    assert!(!m.shared().lock().expect("lock").up);
    for _ in 0..3 {
        m.step().await; // postmaster() is expected once: a restart would fail the mock
    }
    assert!(m.shared().lock().expect("lock").fenced);
}

#[tokio::test]
async fn old_primary_rewinds_after_a_crash_and_becomes_a_standby() {
    let dir = pgdata(false);
    let mut ctl = MockPgControl::new();
    ctl.expect_shut_down_cleanly()
        .times(1)
        .returning(|| Ok(false));
    ctl.expect_single_user_recovery()
        .times(1)
        .returning(|| Ok(()));
    let d = dir.path().to_owned();
    ctl.expect_rewind()
        .withf(|c| {
            c.contains("host=127.0.0.1 port=6000 user=streaming_replica sslmode=verify-full")
        })
        .times(1)
        .returning(move |_| {
            // pg_rewind copies the source's marker: the manager must put ours back.
            std::fs::write(d.join(MARKER), r#"{"cluster":"pg","instance":"pg-2"}"#).expect("write");
            Ok(())
        });
    let query = MockPgQuery::new();
    let mem = MemoryView::new(view(Some("pg-2"), "pg-2"));
    let mut m = Manager::new(
        cfg(dir.path()),
        Arc::new(ctl),
        Arc::new(query),
        Arc::new(mem),
    );
    m.step().await;
    let data = DataDir::new(dir.path());
    assert_eq!(data.role(), PgData::Standby);
    assert!(data.verify("pg", "pg-1").is_ok(), "our marker is restored");
}

/// pg_rewind that cannot work (here: no common ancestor) leaves the old data to a new
/// clone of the primary; a clone cut off by a crash of the manager is finished by the next
/// one, and never started or taken for data in between.
#[tokio::test]
async fn a_failed_rewind_is_replaced_by_a_new_clone_even_across_a_crash() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("pgdata");
    std::fs::create_dir(&dir).expect("pgdata");
    std::fs::write(dir.join("PG_VERSION"), "15\n").expect("write");
    std::fs::create_dir(dir.join("global")).expect("global");
    std::fs::write(dir.join("global/pg_control"), "control").expect("write");
    DataDir::new(&dir).mark("pg", "pg-1", None).expect("mark");
    let mut ctl = MockPgControl::new();
    ctl.expect_shut_down_cleanly().returning(|| Ok(true));
    ctl.expect_rewind().times(1).returning(|_| {
        Err(PgError::Failed {
            program: "pg_rewind".into(),
            status: "exit 1".into(),
            stderr: "could not find common ancestor".into(),
        })
    });
    // The first clone is cut off (its copy half made), the second completes.
    let pgdata = dir.clone();
    let mut clones = 0;
    ctl.expect_basebackup()
        .withf(|c| c.contains("host=127.0.0.1") && c.contains("application_name=pg-1"))
        .times(4)
        .returning(move |_| {
            clones += 1;
            std::fs::write(pgdata.join("PG_VERSION"), "15\n").expect("write");
            if clones < 4 {
                Err(PgError::Failed {
                    program: "pg_basebackup".into(),
                    status: "exit 1".into(),
                    stderr: "connection to the primary lost".into(),
                })
            } else {
                Ok(())
            }
        });
    ctl.expect_postmaster().never();
    let ctl = Arc::new(ctl);
    let mem = MemoryView::new(view(Some("pg-2"), "pg-2"));
    let mut m = Manager::new(
        cfg(&dir),
        ctl.clone(),
        Arc::new(MockPgQuery::new()),
        Arc::new(mem.clone()),
    );
    m.step().await; // the rewind fails
    assert_eq!(DataDir::new(&dir).role(), PgData::Primary, "data as it was");
    m.step().await; // the clone fails three times
    let data = DataDir::new(&dir);
    assert!(data.reclone_pending().is_some(), "recorded beside PGDATA");
    assert_eq!(data.role(), PgData::Missing, "no half copy left to start");
    let why = m.shared().lock().expect("lock").decision.clone();
    assert!(why.contains("cloning pg-2 again"), "{why}");
    drop(m);
    // A new manager (after a crash) finishes the re-clone before anything else.
    let mut m = Manager::new(cfg(&dir), ctl, Arc::new(MockPgQuery::new()), Arc::new(mem));
    m.step().await;
    assert_eq!(data.role(), PgData::Standby);
    assert!(data.verify("pg", "pg-1").is_ok(), "marked as this instance");
    assert!(data.reclone_pending().is_none(), "done");
    assert!(dir.join("custom.conf").exists(), "configured as a standby");
}

#[tokio::test]
async fn postmaster_death_is_noticed_at_once_not_at_the_next_tick() {
    let dir = pgdata(false);
    let mut ctl = MockPgControl::new();
    ctl.expect_postmaster().times(1).returning(sleeper);
    let mut query = MockPgQuery::new();
    query
        .expect_snapshot()
        .returning(|| Ok(snapshot(true, false)));
    query.expect_execute().returning(|_| Ok(()));
    let mem = MemoryView::new(view(Some("pg-1"), "pg-1"));
    let mut m = Manager::new(
        cfg(dir.path()),
        Arc::new(ctl),
        Arc::new(query),
        Arc::new(mem.clone()),
    );
    m.step().await;
    let shared = m.shared();
    let pid = shared.lock().expect("lock").pid.expect("pid");
    // Fence it after the death, so the manager does not restart it (one postmaster() call).
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(m.run(rx));
    tokio::time::sleep(Duration::from_millis(50)).await;
    mem.update(|d| d.fenced = vec!["pg-1".into()]);
    let killed = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
    while shared.lock().expect("lock").last_exit.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "death not noticed (tick is an hour)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exit = shared
        .lock()
        .expect("lock")
        .last_exit
        .clone()
        .expect("exit");
    assert!(exit.0.contains("killed by signal 9"), "{exit:?}");
    tx.send(true).expect("shutdown");
    task.await.expect("manager ends");
}

#[test]
fn the_archivers_last_error_and_the_wal_receivers_come_from_the_log() {
    let d = tempfile::tempdir().expect("tempdir");
    let log = d.path().join("postgres.log");
    std::fs::write(
        &log,
        "LOG:  archive command failed with exit code 1\n\
         error: cnpg-cloud wal-archive pg_wal/000000010000000000000001: bucket gone\n\
         error: cnpg-cloud wal-archive pg_wal/000000010000000000000002: store unreachable\n\
         FATAL:  could not connect to the primary server: connection refused\n\
         LOG:  waiting for WAL to become available\n",
    )
    .expect("log");
    assert_eq!(
        last_archive_error(&log).as_deref(),
        Some("pg_wal/000000010000000000000002: store unreachable")
    );
    assert_eq!(
        last_wal_receiver_error(&log).as_deref(),
        Some("could not connect to the primary server: connection refused")
    );
    assert_eq!(last_archive_error(&d.path().join("missing")), None);
}
