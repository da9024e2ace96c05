use super::*;
use crate::api::cluster::*;
use crate::api::common::LocalObjectReference;
use std::collections::BTreeMap;

fn base() -> Cluster {
    Cluster::new(
        "pg",
        ClusterSpec {
            instances: 3,
            storage: Some(StorageConfiguration {
                size: Some("1Gi".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn errs(c: &Cluster) -> Vec<String> {
    c.validate().iter().map(ToString::to_string).collect()
}

fn has(c: &Cluster, path: &str, needle: &str) {
    let all = errs(c);
    assert!(
        all.iter()
            .any(|e| e.starts_with(path) && e.contains(needle)),
        "expected an error at {path} containing {needle:?}, got {all:#?}"
    );
}

#[test]
fn base_cluster_is_valid() {
    assert_eq!(errs(&base()), Vec::<String>::new());
}

#[test]
fn instances_at_least_one() {
    let mut c = base();
    c.spec.instances = 0;
    has(&c, "spec.instances", "at least 1 instance");
}

#[test]
fn legacy_sync_bounds() {
    let mut c = base();
    c.spec.min_sync_replicas = 2;
    c.spec.max_sync_replicas = 1;
    has(&c, "spec.minSyncReplicas", "greater than maxSyncReplicas");
    c.spec.min_sync_replicas = 1;
    c.spec.max_sync_replicas = 3;
    has(
        &c,
        "spec.maxSyncReplicas",
        "less than the number of instances (3)",
    );
    c.spec.max_sync_replicas = 2;
    assert_eq!(errs(&c), Vec::<String>::new());
    c.spec.min_sync_replicas = -1;
    has(&c, "spec.minSyncReplicas", "negative");
}

fn sync(number: i32) -> SynchronousReplicaConfiguration {
    SynchronousReplicaConfiguration {
        method: SynchronousMethod::Any,
        number,
        max_standby_names_from_cluster: None,
        standby_names_pre: vec![],
        standby_names_post: vec![],
        data_durability: None,
        failover_quorum: None,
        pod_failure_domain_keys: vec![],
        node_failure_domain_keys: vec![],
    }
}

fn with_sync(s: SynchronousReplicaConfiguration) -> Cluster {
    let mut c = base();
    c.spec.postgresql = Some(PostgresConfiguration {
        synchronous: Some(s),
        ..Default::default()
    });
    c
}

#[test]
fn synchronous_stanza_rules() {
    assert_eq!(errs(&with_sync(sync(1))), Vec::<String>::new());
    has(
        &with_sync(sync(0)),
        "spec.postgresql.synchronous.number",
        "at least 1",
    );
    has(
        &with_sync(sync(3)),
        "spec.postgresql.synchronous.number",
        "less than the number of instances (3)",
    );

    let mut c = with_sync(sync(1));
    c.spec.max_sync_replicas = 1;
    has(
        &c,
        "spec.postgresql.synchronous",
        "minSyncReplicas/maxSyncReplicas",
    );

    let mut s = sync(1);
    s.data_durability = Some(DataDurability::Preferred);
    s.standby_names_pre = vec!["remote".into()];
    has(
        &with_sync(s),
        "spec.postgresql.synchronous.dataDurability",
        "standbyNamesPre",
    );

    let mut s = sync(1);
    s.pod_failure_domain_keys = vec!["zone".into()];
    s.node_failure_domain_keys = vec!["rack".into()];
    has(
        &with_sync(s),
        "spec.postgresql.synchronous.nodeFailureDomainKeys",
        "mutually exclusive",
    );

    let mut s = sync(1);
    s.failover_quorum = Some(true);
    s.standby_names_post = vec!["dr".into()];
    has(
        &with_sync(s.clone()),
        "spec.postgresql.synchronous.failoverQuorum",
        "could never be allowed",
    );
    s.number = 2;
    assert_eq!(errs(&with_sync(s)), Vec::<String>::new());
}

#[test]
fn fixed_parameters_are_refused_with_a_hint() {
    let mut c = base();
    c.spec.postgresql = Some(PostgresConfiguration {
        parameters: BTreeMap::from([
            ("synchronous_standby_names".to_owned(), "*".to_owned()),
            (
                "shared_preload_libraries".to_owned(),
                "pg_stat_statements".to_owned(),
            ),
            ("max_connections".to_owned(), "200".to_owned()),
            ("wal_level".to_owned(), "minimal".to_owned()),
        ]),
        ..Default::default()
    });
    has(
        &c,
        "spec.postgresql.parameters.synchronous_standby_names",
        "use spec.postgresql.synchronous",
    );
    has(
        &c,
        "spec.postgresql.parameters.shared_preload_libraries",
        "spec.postgresql.shared_preload_libraries",
    );
    has(
        &c,
        "spec.postgresql.parameters.wal_level",
        "'replica' or 'logical'",
    );
    assert_eq!(
        errs(&c).len(),
        3,
        "max_connections is the user's: {:#?}",
        errs(&c)
    );
}

#[test]
fn exactly_one_bootstrap_method_and_known_sources() {
    let mut c = base();
    c.spec.bootstrap = Some(BootstrapConfiguration {
        initdb: Some(BootstrapInitDb::default()),
        recovery: Some(BootstrapRecovery {
            source: Some("origin".into()),
            ..Default::default()
        }),
        pg_basebackup: None,
    });
    has(
        &c,
        "spec.bootstrap",
        "2 bootstrap methods are given (initdb, recovery)",
    );
    has(
        &c,
        "spec.bootstrap.recovery.source",
        "\"origin\" is not an entry of spec.externalClusters",
    );
    c.spec.external_clusters = vec![ExternalCluster {
        name: "origin".into(),
        ..Default::default()
    }];
    if let Some(b) = c.spec.bootstrap.as_mut() {
        b.initdb = None;
    }
    assert_eq!(errs(&c), Vec::<String>::new());
}

#[test]
fn recovery_target_rules() {
    let mut c = base();
    c.spec.bootstrap = Some(BootstrapConfiguration {
        recovery: Some(BootstrapRecovery {
            backup: Some(crate::api::cluster::BackupSource {
                name: "b".into(),
                endpoint_ca: None,
            }),
            recovery_target: Some(RecoveryTarget {
                target_lsn: Some("nope".into()),
                target_time: Some("2026-01-01T00:00:00Z".into()),
                target_tli: Some("0".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    has(
        &c,
        "spec.bootstrap.recovery.recoveryTarget",
        "targetTime, targetLSN are alternatives",
    );
    has(
        &c,
        "spec.bootstrap.recovery.recoveryTarget.targetLSN",
        "not a valid LSN",
    );
    has(
        &c,
        "spec.bootstrap.recovery.recoveryTarget.targetTLI",
        "not a timeline",
    );
    c.spec.bootstrap = Some(BootstrapConfiguration {
        recovery: Some(BootstrapRecovery {
            source: Some("origin".into()),
            recovery_target: Some(RecoveryTarget {
                target_time: Some("yesterday".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let store = |path: &str| crate::api::barman::BarmanObjectStoreConfiguration {
        destination_path: path.into(),
        ..Default::default()
    };
    c.spec.external_clusters = vec![crate::api::cluster::ExternalCluster {
        name: "origin".into(),
        barman_object_store: Some(store("s3://b/p")),
        ..Default::default()
    }];
    has(
        &c,
        "spec.bootstrap.recovery.recoveryTarget.targetTime",
        "not a time",
    );
    // Its own archive where the source's is (serverName defaulting to each one's name).
    c.metadata.name = Some("origin".into());
    c.spec.backup = Some(crate::api::cluster::BackupConfiguration {
        barman_object_store: Some(store("s3://b/p/")),
        ..Default::default()
    });
    has(
        &c,
        "spec.backup.barmanObjectStore",
        "a recovered cluster writes a history of its own",
    );
}

#[test]
fn initdb_rules() {
    let mut c = base();
    c.spec.bootstrap = Some(BootstrapConfiguration {
        initdb: Some(BootstrapInitDb {
            owner: Some("app".into()),
            wal_segment_size: Some(3),
            import: Some(Import {
                source: ImportSource {
                    external_cluster: "old".into(),
                },
                type_: ImportType::Microservice,
                databases: vec!["a".into(), "b".into()],
                roles: vec!["r".into()],
                post_import_application_sql: vec![],
                schema_only: None,
                pg_dump_extra_options: vec![],
                pg_restore_extra_options: vec![],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    has(&c, "spec.bootstrap.initdb.walSegmentSize", "power of 2");
    has(
        &c,
        "spec.bootstrap.initdb.database",
        "owner is given without a database",
    );
    has(
        &c,
        "spec.bootstrap.initdb.import.databases",
        "exactly one database",
    );
    has(&c, "spec.bootstrap.initdb.import.roles", "monolith");
    has(
        &c,
        "spec.bootstrap.initdb.import.source.externalCluster",
        "not an entry",
    );
}

#[test]
fn storage_size_must_parse_and_exist() {
    let mut c = base();
    c.spec.storage = None;
    has(&c, "spec.storage.size", "no size is configured");
    c.spec.storage = Some(StorageConfiguration {
        size: Some("ten gigs".into()),
        ..Default::default()
    });
    has(&c, "spec.storage.size", "not a valid quantity");
    c.spec.storage = Some(StorageConfiguration {
        size: Some("1Gi".into()),
        ..Default::default()
    });
    c.spec.wal_storage = Some(StorageConfiguration {
        size: Some("0".into()),
        ..Default::default()
    });
    has(&c, "spec.walStorage.size", "size 0");
}

#[test]
fn image_rules() {
    let mut c = base();
    c.spec.image_name = Some("ghcr.io/cloudnative-pg/postgresql:latest".into());
    has(&c, "spec.imageName", "'latest' tag");
    c.spec.image_name = Some("ghcr.io/cloudnative-pg/postgresql".into());
    has(&c, "spec.imageName", "has no tag");
    c.spec.image_name = Some("ghcr.io/cloudnative-pg/postgresql:12.4".into());
    has(&c, "spec.imageName", "PostgreSQL 12 is not supported");
    c.spec.image_name = Some("localhost:5000/postgresql:18.6-system-trixie".into());
    assert_eq!(errs(&c), Vec::<String>::new());
    c.spec.image_catalog_ref = Some(crate::api::common::ImageCatalogRef {
        api_group: None,
        kind: "Catalog".into(),
        name: "c".into(),
        major: 17,
    });
    has(&c, "spec.imageCatalogRef", "mutually exclusive");
    has(
        &c,
        "spec.imageCatalogRef.kind",
        "ImageCatalog or ClusterImageCatalog",
    );
    assert_eq!(major_from_image_tag("postgres:16@sha256:abc"), Some(16));
}

#[test]
fn backup_and_plugin_rules() {
    let mut c = base();
    c.spec.backup = Some(BackupConfiguration {
        retention_policy: Some("30 days".into()),
        barman_object_store: Some(crate::api::barman::BarmanObjectStoreConfiguration {
            data: Some(crate::api::barman::DataBackupConfiguration {
                compression: Some(crate::api::barman::CompressionType::Zstd),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c.spec.plugins = vec![
        PluginConfiguration {
            name: "a".into(),
            is_wal_archiver: Some(true),
            ..Default::default()
        },
        PluginConfiguration {
            name: "b".into(),
            is_wal_archiver: Some(true),
            ..Default::default()
        },
    ];
    has(&c, "spec.backup.retentionPolicy", "30d, 4w or 6m");
    has(
        &c,
        "spec.backup.barmanObjectStore",
        "both here and by a plugin",
    );
    has(
        &c,
        "spec.backup.barmanObjectStore.destinationPath",
        "where backups go",
    );
    has(&c, "spec.plugins[1].isWALArchiver", "only one plugin");
    has(
        &c,
        "spec.backup.barmanObjectStore.data.compression",
        "zstd is for WAL only",
    );
}

#[test]
fn names_roles_services_tablespaces() {
    let mut c = base();
    c.metadata.name = Some("Bad_Name".into());
    has(&c, "metadata.name", "not a valid cluster name");
    c.metadata.name = Some("a".repeat(51));
    has(&c, "metadata.name", "at most 50");
    c.metadata.name = Some("pg".into());
    c.spec.managed = Some(ManagedConfiguration {
        roles: vec![
            RoleConfiguration {
                name: "postgres".into(),
                ..Default::default()
            },
            RoleConfiguration {
                name: "app".into(),
                ..Default::default()
            },
            RoleConfiguration {
                name: "app".into(),
                ..Default::default()
            },
        ],
        services: Some(ManagedServices {
            disabled_default_services: vec![ServiceSelectorType::Rw],
            additional: vec![],
        }),
    });
    c.spec.tablespaces = vec![TablespaceConfiguration {
        name: "pg_data".into(),
        storage: StorageConfiguration {
            size: Some("1Gi".into()),
            ..Default::default()
        },
        temporary: false,
        owner: None,
    }];
    has(&c, "spec.managed.roles[0].name", "reserved");
    has(&c, "spec.managed.roles[2].name", "defined twice");
    has(
        &c,
        "spec.managed.services.disabledDefaultServices[0]",
        "cannot be disabled",
    );
    has(&c, "spec.tablespaces[0].name", "'pg_'");
}

#[test]
fn lease_delays_and_probes() {
    let mut c = base();
    c.spec.primary_lease = Some(PrimaryLeaseConfiguration {
        lease_duration_seconds: Some(10),
        renew_deadline_seconds: Some(10),
        retry_period_seconds: Some(9),
        released_lease_duration_seconds: None,
    });
    c.spec.start_delay = 0;
    c.spec.probes = Some(ProbesConfiguration {
        readiness: Some(ProbeWithStrategy {
            maximum_lag: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "16Mi".into(),
            )),
            ..Default::default()
        }),
        ..Default::default()
    });
    has(
        &c,
        "spec.primaryLease.leaseDurationSeconds",
        "greater than renewDeadlineSeconds",
    );
    has(
        &c,
        "spec.primaryLease.renewDeadlineSeconds",
        "1.2 × retryPeriodSeconds",
    );
    has(&c, "spec.startDelay", "use 1 or more");
    has(&c, "spec.probes.readiness.maximumLag", "streaming");
}

#[test]
fn every_error_is_reported_at_once() {
    let mut c = base();
    c.spec.instances = 0;
    c.spec.min_sync_replicas = 2;
    c.spec.storage = None;
    c.spec.image_name = Some("postgres:latest".into());
    let all = c.validate();
    assert!(all.len() >= 4, "{all:#?}");
    assert!(
        all.iter()
            .all(|e| !e.message.is_empty() && e.path.contains('.'))
    );
}

#[test]
fn pooler_rules() {
    use crate::api::pooler::*;
    let mut p = Pooler::new(
        "pg-rw",
        PoolerSpec {
            cluster: LocalObjectReference { name: "pg".into() },
            type_: PoolerType::Rw,
            instances: Some(-1),
            template: None,
            pgbouncer: PgBouncerSpec {
                parameters: BTreeMap::from([
                    ("max_client_conn".into(), "1000".into()),
                    ("listen_port".into(), "6432".into()),
                ]),
                auth_query_secret: Some(LocalObjectReference { name: "s".into() }),
                ..Default::default()
            },
            deployment_strategy: None,
            monitoring: None,
            service_template: None,
            service_account_name: None,
        },
    );
    let all: Vec<String> = p.validate().iter().map(ToString::to_string).collect();
    let text = all.join("\n");
    assert!(
        text.contains("metadata.name") && text.contains("collides"),
        "{text}"
    );
    assert!(text.contains("spec.instances"), "{text}");
    assert!(
        text.contains("spec.pgbouncer.parameters.listen_port"),
        "{text}"
    );
    assert!(
        text.contains("spec.pgbouncer.authQuery: required"),
        "{text}"
    );
    assert_eq!(all.len(), 4, "{text}");
    p.metadata.name = Some("pooler".into());
    p.spec.instances = Some(2);
    p.spec.pgbouncer.parameters.remove("listen_port");
    p.spec.pgbouncer.auth_query = Some("SELECT 1".into());
    assert!(p.validate().is_empty());
}

#[test]
fn backup_and_schedule_rules() {
    use crate::api::backup::*;
    use crate::api::common::BackupMethod;
    let mut b = Backup::new(
        "b",
        BackupSpec {
            cluster: LocalObjectReference { name: "pg".into() },
            target: None,
            method: BackupMethod::Plugin,
            plugin_configuration: None,
            online: Some(true),
            online_configuration: None,
        },
    );
    let text: Vec<String> = b.validate().iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.starts_with("spec.pluginConfiguration: required")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|e| e.starts_with("spec.online: invalid")),
        "{text:?}"
    );
    b.spec.method = BackupMethod::VolumeSnapshot;
    assert!(b.validate().is_empty());

    assert!(check_schedule("0 0 0 * * *").is_ok());
    assert!(check_schedule("@daily").is_ok());
    let five = check_schedule("0 0 * * *").expect_err("five fields");
    assert!(five.contains("prepend the seconds"), "{five}");
    assert!(check_schedule("0 0 99 * * *").is_err());
    let s = ScheduledBackup::new(
        "s",
        ScheduledBackupSpec {
            suspend: None,
            immediate: None,
            schedule: "not a schedule".into(),
            cluster: LocalObjectReference { name: "pg".into() },
            backup_owner_reference: BackupOwnerReference::SelfRef,
            target: None,
            method: BackupMethod::BarmanObjectStore,
            plugin_configuration: None,
            online: None,
            online_configuration: None,
        },
    );
    assert!(s.validate().iter().any(|e| e.path == "spec.schedule"));
}

#[test]
fn a_users_certificate_needs_its_ca() {
    let mut c = base();
    c.spec.certificates = Some(CertificatesConfiguration {
        server_tls_secret: Some("pg-cert-manager".into()),
        replication_tls_secret: Some("pg-repl".into()),
        ..Default::default()
    });
    has(
        &c,
        "spec.certificates.serverCASecret",
        "required with serverTLSSecret",
    );
    has(
        &c,
        "spec.certificates.clientCASecret",
        "required with replicationTLSSecret",
    );
    c.spec.certificates = Some(CertificatesConfiguration {
        server_tls_secret: Some("pg-cert-manager".into()),
        server_ca_secret: Some("pg-issuer".into()),
        ..Default::default()
    });
    assert_eq!(errs(&c), Vec::<String>::new());
}

#[test]
fn database_rules_as_upstream_admission() {
    use crate::api::database::*;
    use crate::roles::EnsureOption;
    let db = |spec: DatabaseSpec| {
        Database::new("db", spec)
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let good = DatabaseSpec {
        cluster: LocalObjectReference { name: "pg".into() },
        name: "shop".into(),
        owner: "app".into(),
        ..Default::default()
    };
    assert_eq!(db(good.clone()), Vec::<String>::new());
    let all = db(DatabaseSpec::default()).join("\n");
    for path in ["spec.cluster.name", "spec.name", "spec.owner"] {
        assert!(all.contains(path), "{all}");
    }
    for reserved in ["postgres", "template0", "template1"] {
        let all = db(DatabaseSpec {
            name: reserved.into(),
            ..good.clone()
        });
        assert!(all[0].contains("is reserved"), "{all:?}");
    }
    let all = db(DatabaseSpec {
        icu_locale: Some("en".into()),
        builtin_locale: Some("C.UTF-8".into()),
        locale_provider: Some("icu".into()),
        connection_limit: Some(-2),
        ..good.clone()
    })
    .join("\n");
    assert!(
        !all.contains("spec.icuLocale") && all.contains("spec.builtinLocale"),
        "{all}"
    );
    assert!(all.contains("spec.connectionLimit"), "{all}");
    let ext = |name: &str| ExtensionSpec {
        name: name.into(),
        ..Default::default()
    };
    let opt = |name: &str| OptionSpec {
        name: name.into(),
        value: "v".into(),
        ..Default::default()
    };
    let all = db(DatabaseSpec {
        extensions: vec![ext("postgis"), ext("postgis")],
        fdws: vec![FdwSpec {
            name: "postgres_fdw".into(),
            options: vec![opt("a"), opt("a")],
            ..Default::default()
        }],
        servers: vec![
            ServerSpec {
                name: "remote".into(),
                fdw: "mysql_fdw".into(),
                ..Default::default()
            },
            ServerSpec {
                name: "gone".into(),
                fdw: "mysql_fdw".into(),
                ensure: EnsureOption::Absent,
                ..Default::default()
            },
        ],
        ..good
    })
    .join("\n");
    assert!(all.contains("spec.extensions[1].name"), "{all}");
    assert!(all.contains("spec.fdws[0].options[1].name"), "{all}");
    assert!(all.contains("spec.servers[0].fdw"), "{all}");
    assert!(!all.contains("spec.servers[1]"), "{all}");
}
