//! PostgreSQL parameters the operator manages itself. A user value would break replication,
//! failover, TLS or logging, so upstream's admission webhook refuses them, and the instance
//! manager refuses them on its command line too.

/// PostgreSQL parameters the operator sets itself; a user value would break replication,
/// failover, TLS or logging, so upstream's webhook refuses them.
/// `(name, what to use instead)`.
const FIXED_PARAMETERS: &[(&str, &str)] = &[
    ("allow_system_table_mods", ""),
    ("archive_cleanup_command", ""),
    (
        "archive_command",
        "configure WAL archiving under spec.backup or spec.plugins",
    ),
    (
        "archive_mode",
        "configure WAL archiving under spec.backup or spec.plugins",
    ),
    ("bonjour", ""),
    ("bonjour_name", ""),
    ("cluster_name", ""),
    ("config_file", ""),
    ("data_directory", ""),
    ("data_sync_retry", ""),
    ("event_source", ""),
    ("external_pid_file", ""),
    ("hba_file", "use spec.postgresql.pg_hba"),
    ("hot_standby", ""),
    ("ident_file", "use spec.postgresql.pg_ident"),
    ("jit_provider", ""),
    ("listen_addresses", ""),
    ("log_destination", ""),
    ("log_directory", ""),
    ("log_file_mode", ""),
    ("log_filename", ""),
    ("log_rotation_age", ""),
    ("log_rotation_size", ""),
    ("log_truncate_on_rotation", ""),
    ("logging_collector", ""),
    ("pg_failover_slots.primary_dsn", ""),
    ("pg_failover_slots.standby_slot_names", ""),
    ("port", ""),
    (
        "primary_conninfo",
        "replica clusters are configured with spec.replica",
    ),
    ("primary_slot_name", "use spec.replicationSlots"),
    ("promote_trigger_file", ""),
    ("recovery_end_command", ""),
    ("recovery_min_apply_delay", "use spec.replica.minApplyDelay"),
    (
        "recovery_target",
        "use spec.bootstrap.recovery.recoveryTarget",
    ),
    (
        "recovery_target_action",
        "use spec.bootstrap.recovery.recoveryTarget",
    ),
    (
        "recovery_target_inclusive",
        "use spec.bootstrap.recovery.recoveryTarget.exclusive",
    ),
    (
        "recovery_target_lsn",
        "use spec.bootstrap.recovery.recoveryTarget.targetLSN",
    ),
    (
        "recovery_target_name",
        "use spec.bootstrap.recovery.recoveryTarget.targetName",
    ),
    (
        "recovery_target_time",
        "use spec.bootstrap.recovery.recoveryTarget.targetTime",
    ),
    (
        "recovery_target_timeline",
        "use spec.bootstrap.recovery.recoveryTarget.targetTLI",
    ),
    (
        "recovery_target_xid",
        "use spec.bootstrap.recovery.recoveryTarget.targetXID",
    ),
    ("restart_after_crash", ""),
    ("restore_command", ""),
    (
        "shared_preload_libraries",
        "use spec.postgresql.shared_preload_libraries",
    ),
    ("ssl", "configure certificates under spec.certificates"),
    (
        "ssl_ca_file",
        "configure certificates under spec.certificates",
    ),
    (
        "ssl_cert_file",
        "configure certificates under spec.certificates",
    ),
    ("ssl_crl_file", ""),
    ("ssl_dh_params_file", ""),
    ("ssl_ecdh_curve", ""),
    (
        "ssl_key_file",
        "configure certificates under spec.certificates",
    ),
    ("ssl_passphrase_command", ""),
    ("ssl_passphrase_command_supports_reload", ""),
    ("ssl_prefer_server_ciphers", ""),
    ("stats_temp_directory", ""),
    (
        "synchronized_standby_slots",
        "use spec.replicationSlots.highAvailability",
    ),
    (
        "synchronous_standby_names",
        "use spec.postgresql.synchronous (or minSyncReplicas/maxSyncReplicas)",
    ),
    ("syslog_facility", ""),
    ("syslog_ident", ""),
    ("syslog_sequence_numbers", ""),
    ("syslog_split_messages", ""),
    ("unix_socket_directories", ""),
    ("unix_socket_group", ""),
    ("unix_socket_permissions", ""),
];

/// Whether `name` is a PostgreSQL parameter the operator manages, and the hint if so.
pub fn fixed_parameter(name: &str) -> Option<&'static str> {
    FIXED_PARAMETERS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, hint)| *hint)
}

/// `shared_preload_libraries`: the operator sets it (users list libraries in
/// `spec.postgresql.shared_preload_libraries`).
pub const PRELOAD_LIBRARIES: &str = "shared_preload_libraries";

/// Libraries loaded because their parameters are set, as upstream's managed extensions:
/// any `pgaudit.*` parameter loads `pgaudit`, and so on. `(library, the extension the
/// primary creates in every database, if any)`.
const MANAGED_LIBRARIES: &[(&str, Option<&str>)] = &[
    ("pg_stat_statements", Some("pg_stat_statements")),
    ("auto_explain", None),
    ("pgaudit", Some("pgaudit")),
];

fn set_for(library: &str, parameters: &std::collections::BTreeMap<String, String>) -> bool {
    let prefix = format!("{library}.");
    parameters
        .keys()
        .any(|k| k.to_ascii_lowercase().starts_with(&prefix))
}

/// The parameters PostgreSQL gets: the user's, and [`PRELOAD_LIBRARIES`] when anything is
/// to be loaded — the user's libraries, then each managed one whose parameters are set,
/// none twice. A change to it needs a restart, which the instance reports like any other.
pub fn effective(
    parameters: &std::collections::BTreeMap<String, String>,
    user_libraries: &[String],
) -> std::collections::BTreeMap<String, String> {
    let mut libraries: Vec<&str> = user_libraries.iter().map(String::as_str).collect();
    for (library, _) in MANAGED_LIBRARIES {
        if set_for(library, parameters) && !libraries.contains(library) {
            libraries.push(library);
        }
    }
    let mut out = parameters.clone();
    if !libraries.is_empty() {
        out.insert(PRELOAD_LIBRARIES.to_owned(), libraries.join(","));
    }
    out
}

/// The extensions the primary creates in every database: those of the managed libraries
/// whose parameters are set (an extension is never dropped for a parameter removed: its
/// objects may be in use).
pub fn managed_extensions(
    parameters: &std::collections::BTreeMap<String, String>,
) -> Vec<&'static str> {
    MANAGED_LIBRARIES
        .iter()
        .filter(|(library, _)| set_for(library, parameters))
        .filter_map(|(_, extension)| *extension)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn managed_libraries_follow_their_parameters() {
        let p = BTreeMap::from([
            ("pgaudit.log".to_owned(), "write".to_owned()),
            ("work_mem".to_owned(), "8MB".to_owned()),
        ]);
        let e = effective(&p, &["pg_stat_statements".to_owned()]);
        assert_eq!(e[PRELOAD_LIBRARIES], "pg_stat_statements,pgaudit");
        assert_eq!(e["work_mem"], "8MB");
        assert_eq!(managed_extensions(&p), vec!["pgaudit"]);
        // Listed by the user too: once.
        let e = effective(&p, &["pgaudit".to_owned()]);
        assert_eq!(e[PRELOAD_LIBRARIES], "pgaudit");
        // Nothing to load: not set at all.
        let plain = BTreeMap::from([("work_mem".to_owned(), "8MB".to_owned())]);
        assert!(!effective(&plain, &[]).contains_key(PRELOAD_LIBRARIES));
        let e = effective(
            &BTreeMap::from([("auto_explain.log_min_duration".to_owned(), "1s".to_owned())]),
            &[],
        );
        assert_eq!(e[PRELOAD_LIBRARIES], "auto_explain");
    }
}
