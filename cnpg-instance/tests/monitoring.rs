//! `/metrics` of real instances: every default family on a primary and on a streaming
//! replica (those for the primary only, or for archiving, only where they apply), a
//! custom query of each usage, a query in every database matching a pattern, a predicate
//! that says not now, a query that PostgreSQL cancels at its timeout while the others
//! and the status endpoint go on, and the default queries turned off.

use cnpg_instance::monitoring::{Config, QueriesFile};
use cnpg_instance::testkit::{Harness, http_get};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// The default families and whether each has samples on a primary and on a replica.
const DEFAULTS: &[(&str, bool, bool)] = &[
    ("cnpg_backends_total", true, true),
    ("cnpg_backends_max_tx_duration_seconds", true, true),
    ("cnpg_backends_waiting_total", true, true),
    ("cnpg_pg_database_size_bytes", true, true),
    ("cnpg_pg_database_xid_age", true, true),
    ("cnpg_pg_database_mxid_age", true, true),
    ("cnpg_pg_postmaster_start_time", true, true),
    ("cnpg_pg_replication_lag", true, true),
    ("cnpg_pg_replication_in_recovery", true, true),
    ("cnpg_pg_replication_is_wal_receiver_up", true, true),
    ("cnpg_pg_replication_streaming_replicas", true, true),
    ("cnpg_pg_replication_slots_active", true, false),
    ("cnpg_pg_replication_slots_pg_wal_lsn_diff", true, false),
    ("cnpg_pg_stat_archiver_archived_count", true, false),
    (
        "cnpg_pg_stat_archiver_last_archived_wal_start_lsn",
        true,
        false,
    ),
    ("cnpg_pg_stat_bgwriter_checkpoints_timed", true, true),
    ("cnpg_pg_stat_bgwriter_buffers_alloc", true, true),
    ("cnpg_pg_stat_database_xact_commit", true, true),
    ("cnpg_pg_stat_database_blk_write_time", true, true),
    ("cnpg_pg_stat_replication_replay_diff_bytes", true, false),
    ("cnpg_pg_stat_replication_backend_start", true, false),
    ("cnpg_pg_settings_setting", true, true),
    ("cnpg_pg_extensions_update_available", true, true),
];

const CUSTOM: &str = r#"
usages:
  query: |
    SELECT 'north' AS region, 'ignored' AS note, 5 AS items, 7 AS done, 'busy' AS mode,
           '1500ms' AS took, ARRAY[1, 5, 10] AS wait, ARRAY[2, 7, 9] AS wait_bucket,
           40.5 AS wait_sum, 10 AS wait_count
  metrics:
    - region: {usage: LABEL, description: Region}
    - note: {usage: DISCARD, description: Not exported}
    - items: {usage: GAUGE, description: Items}
    - done: {usage: COUNTER, description: Done}
    - mode: {usage: MAPPEDMETRIC, description: Mode, metric_mapping: {idle: 0, busy: 1}}
    - took: {usage: DURATION, description: Time taken}
    - wait: {usage: HISTOGRAM, description: Waits}
everywhere:
  target_databases: ["*"]
  query: SELECT pg_catalog.current_database() AS datname, 1 AS up
  metrics:
    - datname: {usage: LABEL, description: Database}
    - up: {usage: GAUGE, description: Reached}
not_now:
  predicate_query: SELECT false
  query: SELECT 1 AS never
  metrics:
    - never: {usage: GAUGE, description: Never collected}
slow:
  query: SELECT pg_catalog.pg_sleep(60) AS slept
  metrics:
    - slept: {usage: GAUGE, description: Slow}
"#;

fn sample(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
}

fn write_config(h: &Harness, config: &Config) {
    std::fs::write(
        h.secrets.monitoring(),
        serde_json::to_string(config).expect("json"),
    )
    .expect("monitoring.json");
}

/// Scrapes `name` until `check` holds; the last text.
async fn scrape_until(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> String {
    let port = h.instances[name].status_port;
    let start = std::time::Instant::now();
    loop {
        let (code, text) = http_get(port, "/metrics").await.expect("metrics");
        assert_eq!(code, 200);
        match check(&text) {
            Ok(()) => return text,
            Err(e) if start.elapsed() > T => panic!("{name}: {what}: {e}\n{text}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_and_custom_queries_become_upstreams_metrics() {
    let mut h = Harness::new("mon");
    h.view
        .update(|v| v.instances = vec!["pg-1".into(), "pg-2".into()]);
    write_config(
        &h,
        &Config {
            ttl_seconds: Some(0),
            custom: vec![QueriesFile {
                source: "ConfigMap custom/queries".into(),
                text: CUSTOM.into(),
            }],
            ..Default::default()
        },
    );
    h.running_primary("pg-1").await;
    h.connect("pg-1")
        .await
        .batch_execute("CREATE DATABASE shop")
        .await
        .expect("create database");
    h.running_replica("pg-2", "pg-1").await;

    let primary = scrape_until(&h, "pg-1", "defaults, custom, the timeout", |t| {
        for (name, on_primary, _) in DEFAULTS {
            if *on_primary && !sample(t, name) {
                return Err(format!("no {name}"));
            }
        }
        if !t.contains("canceling statement due to statement timeout") {
            return Err("the slow query not cancelled yet".into());
        }
        if !sample(t, "cnpg_pg_stat_replication_replay_diff_bytes") {
            return Err("no standby yet".into());
        }
        Ok(())
    })
    .await;
    for line in [
        "# TYPE cnpg_usages_items gauge",
        "cnpg_usages_items{region=\"north\"} 5",
        "# TYPE cnpg_usages_done counter",
        "cnpg_usages_done{region=\"north\"} 7",
        "cnpg_usages_mode{region=\"north\"} 1",
        "cnpg_usages_took_milliseconds{region=\"north\"} 1500",
        "# TYPE cnpg_usages_wait histogram",
        "cnpg_usages_wait_bucket{region=\"north\",le=\"5\"} 7",
        "cnpg_usages_wait_bucket{region=\"north\",le=\"+Inf\"} 10",
        "cnpg_usages_wait_sum{region=\"north\"} 40.5",
        "cnpg_usages_wait_count{region=\"north\"} 10",
        "cnpg_everywhere_up{datname=\"postgres\"} 1",
        "cnpg_everywhere_up{datname=\"app\"} 1",
        "cnpg_everywhere_up{datname=\"shop\"} 1",
        "cnpg_pg_extensions_update_available{datname=\"shop\",extname=\"plpgsql\"",
        "cnpg_pg_replication_in_recovery 0",
        "cnpg_last_error 1",
    ] {
        assert!(primary.contains(line), "{line} in\n{primary}");
    }
    assert!(
        primary.contains(
            "cnpg_errors_total{errorUserQueries=\"slow on db postgres: canceling statement due to statement timeout\"} 1"
        ),
        "{primary}"
    );
    for absent in ["cnpg_usages_note", "cnpg_not_now_never "] {
        assert!(!primary.contains(absent), "{absent} in\n{primary}");
    }
    // The slow query holds up neither the status endpoint nor the manager.
    assert!(h.status("pg-1").await.is_primary);

    let replica = scrape_until(&h, "pg-2", "the defaults on a replica", |t| {
        for (name, _, on_replica) in DEFAULTS {
            if *on_replica && !sample(t, name) {
                return Err(format!("no {name}"));
            }
        }
        Ok(())
    })
    .await;
    assert!(
        replica.contains("cnpg_pg_replication_in_recovery 1"),
        "{replica}"
    );
    assert!(
        replica.contains("cnpg_pg_replication_is_wal_receiver_up 1"),
        "{replica}"
    );
    for (name, _, on_replica) in DEFAULTS {
        if !on_replica {
            assert!(!sample(&replica, name), "{name} on the replica:\n{replica}");
        }
    }

    // Default queries off: only the custom ones (and the collector's own) remain.
    write_config(
        &h,
        &Config {
            disable_default_queries: true,
            ttl_seconds: Some(0),
            custom: vec![QueriesFile {
                source: "Secret custom/queries".into(),
                text: "items:\n  query: SELECT 3 AS n\n  metrics:\n    - n: {usage: GAUGE, description: N}\n"
                    .into(),
            }],
        },
    );
    let text = scrape_until(&h, "pg-1", "the defaults off", |t| {
        if sample(t, "cnpg_pg_database_size_bytes") || !sample(t, "cnpg_items_n") {
            Err("still the defaults".into())
        } else {
            Ok(())
        }
    })
    .await;
    assert!(text.contains("cnpg_collector_up 1"), "{text}");
    assert!(text.contains("cnpg_last_error 0"), "{text}");
    h.stop("pg-2").await;
    h.stop("pg-1").await;
}
