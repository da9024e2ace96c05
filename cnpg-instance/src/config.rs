//! The files the instance manager owns in PGDATA, rendered from plain values (pure, so
//! they are unit-tested without PostgreSQL):
//! * `custom.conf`: defaults, then the user's parameters, then what the operator forces;
//! * `override.conf`: how a standby follows its primary;
//! * `pg_hba.conf` / `pg_ident.conf`: upstream's rules — `streaming_replica` only by client
//!   certificate over TLS, then the user's lines, then scram-sha-256; never `trust`.
//!
//! `postgresql.conf` only includes the two `.conf` files.

use crate::tls;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything the configuration depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Cluster name.
    pub cluster: String,
    /// Instance name (the standby's `application_name`).
    pub instance: String,
    /// Address PostgreSQL listens on.
    pub listen: String,
    /// Its TCP port.
    pub port: u16,
    /// Directory of its Unix socket.
    pub socket_dir: String,
    /// The user's `postgresql.parameters`.
    pub parameters: BTreeMap<String, String>,
    /// `synchronous_standby_names`, as the operator decided.
    pub synchronous_standby_names: String,
    /// Extra `pg_hba.conf` lines from the user.
    pub pg_hba: Vec<String>,
    /// Extra `pg_ident.conf` lines from the user.
    pub pg_ident: Vec<String>,
    /// The certificate files PostgreSQL serves and verifies clients with.
    pub tls: tls::Files,
    /// WAL archiving, when the cluster has an object store (`archive_mode` stays off
    /// otherwise).
    pub archive: Option<Archive>,
}

/// How PostgreSQL archives WAL: `archive_command` runs `program wal-archive --config config %p`
/// (`cnpg-cloud`, [`crate::archive`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// `cnpg-cloud`, as the postgres user can run it.
    pub program: std::path::PathBuf,
    /// The archive configuration file.
    pub config: std::path::PathBuf,
}

/// Operator defaults the user may change (reference §7.6).
const DEFAULTS: &[(&str, &str)] = &[
    ("dynamic_shared_memory_type", "posix"),
    ("full_page_writes", "on"),
    ("max_parallel_workers", "32"),
    ("max_replication_slots", "32"),
    ("max_worker_processes", "32"),
    ("shared_memory_type", "mmap"),
    ("wal_keep_size", "512MB"),
    ("wal_level", "logical"),
    ("wal_log_hints", "on"),
    ("wal_receiver_timeout", "5s"),
    ("wal_sender_timeout", "5s"),
];

/// A word for `sh` (PostgreSQL runs `archive_command` through it).
fn shell_word(w: &str) -> String {
    if w.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b))
    {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// `custom.conf`.
pub fn custom_conf(s: &Settings) -> String {
    let mut params: BTreeMap<&str, String> = DEFAULTS
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    for (k, v) in &s.parameters {
        params.insert(k.as_str(), v.clone());
    }
    // Forced: these make failover, replication and the local layout work.
    for (k, v) in [
        ("cluster_name", s.cluster.clone()),
        ("hot_standby", "on".to_owned()),
        ("listen_addresses", s.listen.clone()),
        ("port", s.port.to_string()),
        ("restart_after_crash", "off".to_owned()),
        ("unix_socket_directories", s.socket_dir.clone()),
        (
            "synchronous_standby_names",
            s.synchronous_standby_names.clone(),
        ),
        ("recovery_target_timeline", "latest".to_owned()),
        // TLS as upstream: always on, TLS 1.3 only.
        ("ssl", "on".to_owned()),
        ("ssl_cert_file", s.tls.server_cert().display().to_string()),
        ("ssl_key_file", s.tls.server_key().display().to_string()),
        ("ssl_ca_file", s.tls.client_ca().display().to_string()),
        ("ssl_min_protocol_version", "TLSv1.3".to_owned()),
        ("ssl_max_protocol_version", "TLSv1.3".to_owned()),
    ] {
        params.insert(k, v);
    }
    if let Some(a) = &s.archive {
        // Upstream's default bound on how old the newest archived WAL may be.
        params
            .entry("archive_timeout")
            .or_insert_with(|| "5min".to_owned());
        params.insert("archive_mode", "on".to_owned());
        params.insert(
            "archive_command",
            format!(
                "{} wal-archive --config {} %p",
                shell_word(&a.program.display().to_string()),
                shell_word(&a.config.display().to_string())
            ),
        );
    }
    let mut out = String::from("# Written by cnpg-instance; edits are overwritten.\n");
    for (k, v) in params {
        let _ = writeln!(out, "{k} = {}", quote(&v));
    }
    out
}

/// Where a standby streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host of the primary (or of the `-rw` endpoint): a name its certificate holds.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The certificates to stream with (as `streaming_replica`, verifying the server).
    pub tls: tls::Files,
}

/// `override.conf`: empty for a primary, `primary_conninfo` and friends for a standby.
pub fn override_conf(instance: &str, upstream: Option<&Upstream>) -> String {
    let mut out = String::from("# Written by cnpg-instance; edits are overwritten.\n");
    if let Some(u) = upstream {
        let conninfo = format!(
            "host={} port={} {} application_name={} dbname=postgres connect_timeout=2 tcp_user_timeout=5000",
            u.host,
            u.port,
            u.tls.replication_conninfo(),
            instance
        );
        let _ = writeln!(out, "primary_conninfo = {}", quote(&conninfo));
        let _ = writeln!(out, "recovery_target_timeline = 'latest'");
    }
    out
}

/// The role PgBouncer authenticates as (by certificate), as upstream.
pub const POOLER_USER: &str = "cnpg_pooler_pgbouncer";

/// `pg_hba.conf`, in upstream's order: local peer through the `local` map;
/// `streaming_replica` (and the pooler's role) only over TLS with a client certificate whose
/// common name is the user; the user's lines; then scram-sha-256 passwords for everything
/// else — never `trust` over TCP. Replication without TLS matches no line (`all` does not
/// cover the `replication` database), so it is refused.
pub fn pg_hba(s: &Settings) -> String {
    let mut out = String::from("# Written by cnpg-instance; edits are overwritten.\n");
    out.push_str("local all all peer map=local\n");
    let repl = tls::REPLICATION_USER;
    let _ = writeln!(
        out,
        "hostssl postgres {repl} all cert map=cnpg_streaming_replica"
    );
    let _ = writeln!(
        out,
        "hostssl replication {repl} all cert map=cnpg_streaming_replica"
    );
    let _ = writeln!(
        out,
        "hostssl all {POOLER_USER} all cert map=cnpg_pooler_pgbouncer"
    );
    for line in &s.pg_hba {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("host all all all scram-sha-256\n");
    out
}

/// `pg_ident.conf`: the OS users that may connect locally as `postgres`, and the maps that
/// tie a certificate's common name to its role.
pub fn pg_ident(s: &Settings, os_users: &[&str]) -> String {
    let mut out = String::from("# Written by cnpg-instance; edits are overwritten.\n");
    for u in os_users {
        let _ = writeln!(out, "local {u} postgres");
    }
    let repl = tls::REPLICATION_USER;
    let _ = writeln!(out, "cnpg_streaming_replica {repl} {repl}");
    let _ = writeln!(out, "cnpg_pooler_pgbouncer {POOLER_USER} {POOLER_USER}");
    for line in &s.pg_ident {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The lines `postgresql.conf` needs to load ours.
pub const INCLUDES: &str = "\n# cnpg-instance\ninclude 'custom.conf'\ninclude 'override.conf'\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            cluster: "pg".into(),
            instance: "pg-2".into(),
            listen: "127.0.0.1".into(),
            port: 5433,
            socket_dir: "/tmp/pg-2".into(),
            parameters: BTreeMap::from([
                ("max_connections".into(), "200".into()),
                ("wal_keep_size".into(), "1GB".into()),
                ("port".into(), "9999".into()),
                ("application_name".into(), "it's".into()),
            ]),
            synchronous_standby_names: r#"ANY 1 ("pg-2","pg-3")"#.into(),
            pg_hba: vec!["host all app 10.0.0.0/8 scram-sha-256".into()],
            pg_ident: vec![],
            tls: tls::Files { dir: "/s".into() },
            archive: None,
        }
    }

    #[test]
    fn archiving_runs_our_archiver_through_the_shell() {
        let mut s = settings();
        assert!(!custom_conf(&s).contains("archive_command"));
        s.archive = Some(Archive {
            program: "/controller/cnpg-cloud".into(),
            config: "/controller/secrets/it's archive.json".into(),
        });
        let c = custom_conf(&s);
        assert!(c.contains("archive_mode = 'on'"), "{c}");
        assert!(c.contains("archive_timeout = '5min'"), "{c}");
        // The conf's quotes (doubled) around the shell's (escaped).
        assert!(
            c.contains(
                r#"archive_command = '/controller/cnpg-cloud wal-archive --config ''/controller/secrets/it''\''''s archive.json'' %p'"#
            ),
            "{c}"
        );
    }

    #[test]
    fn custom_conf_layers_defaults_user_and_forced() {
        let c = custom_conf(&settings());
        assert!(c.contains("max_connections = '200'"));
        assert!(
            c.contains("wal_keep_size = '1GB'"),
            "the user overrides a default"
        );
        assert!(
            c.contains("port = '5433'") && !c.contains("9999"),
            "forced beats the user"
        );
        assert!(c.contains(r#"synchronous_standby_names = 'ANY 1 ("pg-2","pg-3")'"#));
        assert!(
            c.contains("application_name = 'it''s'"),
            "quotes are escaped"
        );
        assert!(c.contains("restart_after_crash = 'off'"));
        assert!(c.contains("ssl = 'on'") && c.contains("ssl_key_file = '/s/server.key'"));
        assert!(c.contains("ssl_min_protocol_version = 'TLSv1.3'"));
    }

    #[test]
    fn override_conf_follows_the_upstream() {
        assert!(!override_conf("pg-2", None).contains("primary_conninfo"));
        let o = override_conf(
            "pg-2",
            Some(&Upstream {
                host: "127.0.0.1".into(),
                port: 5432,
                tls: tls::Files { dir: "/s".into() },
            }),
        );
        assert!(
            o.contains("host=127.0.0.1 port=5432 user=streaming_replica sslmode=verify-full sslrootcert=/s/ca.crt sslcert=/s/streaming_replica.crt sslkey=/s/streaming_replica.key application_name=pg-2"),
            "{o}"
        );
        assert!(!o.contains("pass"), "no password: {o}");
    }

    #[test]
    fn hba_never_trusts_tcp() {
        let h = pg_hba(&settings());
        assert!(!h.contains("trust"));
        assert!(
            h.lines()
                .last()
                .is_some_and(|l| l == "host all all all scram-sha-256")
        );
        assert!(h.contains("host all app 10.0.0.0/8 scram-sha-256"));
        let lines: Vec<&str> = h.lines().skip(1).collect();
        assert_eq!(lines[0], "local all all peer map=local");
        assert!(lines[1].starts_with("hostssl postgres streaming_replica all cert"));
        assert!(lines[2].starts_with("hostssl replication streaming_replica all cert"));
        assert!(
            !h.contains("host replication"),
            "replication only by certificate"
        );
        assert!(pg_ident(&settings(), &["root", "postgres"]).contains("local root postgres"));
    }
}
