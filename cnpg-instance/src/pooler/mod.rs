//! The pooler manager (`cnpg-instance pgbouncer`): one PgBouncer in front of a cluster's
//! service, configured as its `Pooler` says.
//!
//! The operator turns the `Pooler` into a [`Config`] file (so this crate needs none of the
//! Kubernetes types); the manager renders `pgbouncer.ini`, its `pg_hba.conf` and
//! `userlist.txt` from it, runs PgBouncer (as the `postgres` user when we are root:
//! PgBouncer refuses root too), reloads it when the file changes, pauses and resumes it,
//! serves its statistics as `cnpg_pgbouncer_*` metrics, and restarts it if it dies.
//!
//! Users log in with the passwords PostgreSQL holds: PgBouncer asks for them with
//! `auth_query`, connected as `cnpg_pooler_pgbouncer` by client certificate (the role and
//! the `user_search` function the primary's manager creates while a pooler exists), so no
//! password is ever copied into the pooler.

pub mod manager;

use crate::runas::RunAs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The role PgBouncer runs `auth_query` as.
pub const AUTH_USER: &str = crate::config::POOLER_USER;

/// upstream's default `auth_query`: a `SECURITY DEFINER` function returns the password
/// hash of one role, so the pooler's role needs no right to read `pg_authid`.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM public.user_search($1)";

/// The database `auth_query` runs in, where PgBouncer can choose (1.20 and later); older
/// ones run it in the database the client asked for, so the function is in every one.
pub const AUTH_DBNAME: &str = "postgres";

/// What one pooler runs: written by the operator from the `Pooler` and its Cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The Pooler's name.
    pub name: String,
    /// Where PostgreSQL is: the cluster's `-rw`, `-ro` or `-r` service.
    pub target_host: String,
    /// Its port.
    pub target_port: u16,
    /// `session` or `transaction`.
    pub pool_mode: String,
    /// The user's `pgbouncer.ini` parameters (already checked against the allowed list).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The user's `pg_hba` lines, before the final password rules.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// `spec.pgbouncer.paused`.
    #[serde(default)]
    pub paused: bool,
    /// The auth query (upstream's default when unset).
    #[serde(default)]
    pub auth_query: Option<String>,
    /// A user and password for `auth_query` (from `authQuerySecret`); without one, the
    /// pooler logs in as [`AUTH_USER`] with its client certificate.
    #[serde(default)]
    pub auth_user: Option<(String, String)>,
}

/// The files the pooler reads: the cluster's CA, the pooler's client certificate, and
/// the certificate it serves clients with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The CA PostgreSQL's certificate is checked against.
    pub server_ca: PathBuf,
    /// The certificate PgBouncer presents to PostgreSQL (common name [`AUTH_USER`]).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// The certificate PgBouncer presents to its clients.
    pub serve_cert: PathBuf,
    /// Its key.
    pub serve_key: PathBuf,
    /// The CA client certificates must be signed by.
    pub clients_ca: PathBuf,
}

impl Tls {
    /// What a pooler of a cluster reads among the cluster's certificate files:
    /// PostgreSQL's CA, its own client certificate, and the server certificate it shows
    /// its clients.
    pub fn of(files: &crate::tls::Files) -> Tls {
        Tls {
            server_ca: files.server_ca(),
            client_cert: files.pooler_cert(),
            client_key: files.pooler_key(),
            serve_cert: files.server_cert(),
            serve_key: files.server_key(),
            clients_ca: files.client_ca(),
        }
    }
}

/// Where one pooler process keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir(pub PathBuf);

impl Dir {
    /// `pgbouncer.ini`.
    pub fn ini(&self) -> PathBuf {
        self.0.join("pgbouncer.ini")
    }
    /// Its `auth_hba_file`.
    pub fn hba(&self) -> PathBuf {
        self.0.join("pg_hba.conf")
    }
    /// Its `auth_file`.
    pub fn userlist(&self) -> PathBuf {
        self.0.join("userlist.txt")
    }
    /// The Unix socket directory (the admin console is reached there).
    pub fn socket(&self) -> PathBuf {
        self.0.join("run")
    }
    /// PgBouncer's log.
    pub fn log(&self) -> PathBuf {
        self.0.join("pgbouncer.log")
    }
}

/// What [`render`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `pgbouncer.ini`.
    pub ini: String,
    /// `pg_hba.conf`.
    pub hba: String,
    /// `userlist.txt`.
    pub userlist: String,
}

/// PgBouncer's version, as `pgbouncer --version` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

/// Parameters whose default here differs from PgBouncer's. `server_login_retry`: after a
/// failed server login PgBouncer waits this long before it tries again, and by default
/// that is 15 s — a failover of half a second would keep new clients out for 15 s.
const DEFAULTS: &[(&str, &str)] = &[
    ("log_stats", "0"),
    ("auth_type", "hba"),
    ("client_tls_sslmode", "prefer"),
    ("server_tls_sslmode", "verify-ca"),
    ("server_login_retry", "0.2"),
    ("ignore_startup_parameters", "extra_float_digits,options"),
];

/// PgBouncer does not allow a line break inside a value.
fn one_line(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// The files of one pooler process listening on `listen` (`addr:port`; several processes
/// share the port through `so_reuseport`).
pub fn render(cfg: &Config, dir: &Dir, tls: &Tls, listen: (&str, u16), v: Version) -> Rendered {
    let mut params: BTreeMap<String, String> = cfg
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), one_line(v)))
        .collect();
    for (k, default) in DEFAULTS {
        match params.get_mut(*k) {
            // libpq clients send these at startup; PgBouncer must ignore them, whatever
            // else the user lists.
            Some(user) if *k == "ignore_startup_parameters" => *user = format!("{default},{user}"),
            Some(_) => {}
            None => {
                params.insert((*k).to_owned(), (*default).to_owned());
            }
        }
    }
    let path = |p: &Path| p.display().to_string();
    let forced = [
        ("listen_addr", listen.0.to_owned()),
        ("listen_port", listen.1.to_string()),
        ("unix_socket_dir", path(&dir.socket())),
        ("so_reuseport", "1".to_owned()),
        ("admin_users", "pgbouncer".to_owned()),
        ("auth_hba_file", path(&dir.hba())),
        ("auth_file", path(&dir.userlist())),
        ("server_tls_ca_file", path(&tls.server_ca)),
        ("client_tls_cert_file", path(&tls.serve_cert)),
        ("client_tls_key_file", path(&tls.serve_key)),
        ("client_tls_ca_file", path(&tls.clients_ca)),
        ("pidfile", String::new()),
        ("logfile", String::new()),
    ];
    for (k, v) in forced {
        params.insert(k.to_owned(), v);
    }
    if cfg.auth_user.is_none() {
        params.insert("server_tls_cert_file".into(), path(&tls.client_cert));
        params.insert("server_tls_key_file".into(), path(&tls.client_key));
    }
    let auth_user = cfg
        .auth_user
        .as_ref()
        .map_or(AUTH_USER, |(u, _)| u.as_str());
    let mut ini = String::from("# Written by cnpg-instance pgbouncer; edits are overwritten.\n");
    let _ = writeln!(
        ini,
        "[databases]\n* = host={} port={}\n\n[pgbouncer]",
        cfg.target_host, cfg.target_port
    );
    let _ = writeln!(ini, "pool_mode = {}", one_line(&cfg.pool_mode));
    let _ = writeln!(ini, "auth_user = {auth_user}");
    let query = cfg.auth_query.as_deref().unwrap_or(DEFAULT_AUTH_QUERY);
    let _ = writeln!(ini, "auth_query = {}", one_line(query));
    if v >= Version(1, 20) {
        let _ = writeln!(ini, "auth_dbname = {AUTH_DBNAME}");
    }
    for (k, v) in &params {
        let _ = writeln!(ini, "{k} = {v}");
    }
    let mut hba = String::from("# Written by cnpg-instance pgbouncer; edits are overwritten.\n");
    // The admin console, on the Unix socket in the manager's private directory only.
    hba.push_str("local pgbouncer pgbouncer trust\n");
    for line in &cfg.pg_hba {
        let _ = writeln!(hba, "{}", one_line(line));
    }
    // `md5` is PgBouncer's "a password, as PostgreSQL stores it": SCRAM when the stored
    // secret is SCRAM (PostgreSQL's default), md5 otherwise.
    hba.push_str("host all all 0.0.0.0/0 md5\nhost all all ::/0 md5\n");
    // A double quote inside a field is written twice.
    let quote = |s: &str| format!("\"{}\"", one_line(s).replace('"', "\"\""));
    let mut userlist = format!("{} \"\"\n", quote("pgbouncer"));
    if let Some((u, p)) = &cfg.auth_user {
        let _ = writeln!(userlist, "{} {}", quote(u), quote(p));
    }
    Rendered { ini, hba, userlist }
}

/// The pooler could not run.
#[derive(Debug, thiserror::Error)]
pub enum PoolerError {
    /// PgBouncer is not installed where we look.
    #[error(
        "pgbouncer was not found ({looked}); install it (Debian/Ubuntu: apt-get install \
         pgbouncer) or name it with --pgbouncer or PGBOUNCER"
    )]
    NotFound {
        /// Where we looked.
        looked: String,
    },
    /// A file could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not what the operator writes.
    #[error("{path}: not a pooler configuration: {why}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// PgBouncer's admin console refused or failed a command.
    #[error("PgBouncer's admin console: {0}")]
    Admin(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PoolerError + '_ {
    move |source| PoolerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The `pgbouncer` program: `flag`, else `PGBOUNCER`, else `PATH`, else Debian's
/// `/usr/sbin/pgbouncer`. A named program that is not there is an error, never replaced.
pub fn find_pgbouncer(flag: Option<&Path>) -> Result<PathBuf, PoolerError> {
    let named = flag
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PGBOUNCER").map(PathBuf::from));
    if let Some(p) = named {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PoolerError::NotFound {
                looked: format!("{} does not exist", p.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("pgbouncer"))
        .chain([PathBuf::from("/usr/sbin/pgbouncer")])
        .find(|p| p.is_file())
        .ok_or_else(|| PoolerError::NotFound {
            looked: "PATH, /usr/sbin".into(),
        })
}

/// `pgbouncer --version`'s major and minor.
pub fn version(bin: &Path) -> Result<Version, PoolerError> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map_err(io(bin))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parse = || {
        let word = text.split_whitespace().nth(1)?;
        let mut it = word.split('.').map(|n| n.parse::<u32>().ok());
        Some(Version(it.next()??, it.next()??))
    };
    parse().ok_or_else(|| PoolerError::Config {
        path: bin.to_owned(),
        why: format!("cannot read its version from {text:?}"),
    })
}

/// Reads the operator's configuration file.
pub fn read_config(path: &Path) -> Result<Config, PoolerError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| PoolerError::Config {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// Writes the rendered files (owned by `run_as`, private) where they differ; whether any did.
pub fn write(dir: &Dir, files: &Rendered, run_as: Option<RunAs>) -> Result<bool, PoolerError> {
    std::fs::create_dir_all(dir.socket()).map_err(io(&dir.socket()))?;
    for d in [&dir.0, &dir.socket()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(io(d))?;
        crate::runas::own(run_as, d).map_err(io(d))?;
    }
    let mut changed = false;
    for (path, text) in [
        (dir.ini(), &files.ini),
        (dir.hba(), &files.hba),
        (dir.userlist(), &files.userlist),
    ] {
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            crate::tls::write_private(&path, text, run_as).map_err(|e| PoolerError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            changed = true;
        }
    }
    Ok(changed)
}

/// A connection to PgBouncer's admin console, over its Unix socket.
pub async fn admin(dir: &Dir, port: u16) -> Result<tokio_postgres::Client, PoolerError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(dir.socket())
        .port(port)
        .user("pgbouncer")
        .dbname("pgbouncer")
        .connect_timeout(std::time::Duration::from_secs(2));
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| PoolerError::Admin(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// One admin command (`PAUSE`, `RESUME`, `RELOAD`, `SHOW ...`): its rows, as text by
/// column name.
pub async fn command(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<BTreeMap<String, String>>, PoolerError> {
    let msgs = client
        .simple_query(sql)
        .await
        .map_err(|e| PoolerError::Admin(format!("{sql}: {e}")))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// `cnpg_pgbouncer_*` metrics from `SHOW LISTS`, `SHOW POOLS` and `SHOW STATS`, named as
/// upstream names them: `cnpg_pgbouncer_lists_<list>`, `cnpg_pgbouncer_pools_<column>`
/// (by database and user) and `cnpg_pgbouncer_stats_<column>` (by database); `up` says
/// whether the admin console answered.
pub fn render_metrics(
    lists: &[BTreeMap<String, String>],
    pools: &[BTreeMap<String, String>],
    stats: &[BTreeMap<String, String>],
    up: bool,
) -> String {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;
    type Labels = Vec<(String, String)>;
    type F = Family<Labels, Gauge<f64, AtomicU64>>;
    let mut reg = Registry::with_prefix("cnpg_pgbouncer");
    let mut families: BTreeMap<String, F> = BTreeMap::new();
    let mut set = |name: String, labels: Labels, v: f64| {
        families
            .entry(name)
            .or_default()
            .get_or_create(&labels)
            .set(v);
    };
    set("up".into(), vec![], if up { 1.0 } else { 0.0 });
    for row in lists {
        if let (Some(list), Some(Ok(n))) = (row.get("list"), row.get("items").map(|v| v.parse())) {
            set(format!("lists_{list}"), vec![], n);
        }
    }
    let by = |rows: &[BTreeMap<String, String>],
              prefix: &str,
              keys: &[&str],
              set: &mut dyn FnMut(String, Labels, f64)| {
        for row in rows {
            let labels: Labels = keys
                .iter()
                .filter_map(|k| row.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect();
            for (col, v) in row {
                if keys.contains(&col.as_str()) {
                    continue;
                }
                if let Ok(n) = v.parse::<f64>() {
                    set(format!("{prefix}_{col}"), labels.clone(), n);
                }
            }
        }
    };
    by(pools, "pools", &["database", "user"], &mut set);
    by(stats, "stats", &["database"], &mut set);
    for (name, family) in families {
        reg.register(name, "from PgBouncer's admin console", family);
    }
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> Tls {
        Tls {
            server_ca: "/s/ca.crt".into(),
            client_cert: "/s/cnpg_pooler_pgbouncer.crt".into(),
            client_key: "/s/cnpg_pooler_pgbouncer.key".into(),
            serve_cert: "/s/server.crt".into(),
            serve_key: "/s/server.key".into(),
            clients_ca: "/s/client-ca.crt".into(),
        }
    }

    #[test]
    fn the_ini_takes_the_users_parameters_and_keeps_what_the_manager_needs() {
        let cfg = Config {
            name: "p".into(),
            target_host: "127.0.0.1".into(),
            target_port: 5000,
            pool_mode: "transaction".into(),
            parameters: [
                ("default_pool_size".to_owned(), "7".to_owned()),
                (
                    "ignore_startup_parameters".to_owned(),
                    "search_path".to_owned(),
                ),
                ("query_timeout".to_owned(), "1\n0".to_owned()),
            ]
            .into(),
            pg_hba: vec!["host all bob 10.0.0.0/8 reject".into()],
            ..Default::default()
        };
        let dir = Dir("/p/p-1".into());
        let r = render(&cfg, &dir, &tls(), ("127.0.0.1", 6432), Version(1, 18));
        for want in [
            "* = host=127.0.0.1 port=5000",
            "pool_mode = transaction",
            "auth_user = cnpg_pooler_pgbouncer",
            "auth_query = SELECT usename, passwd FROM public.user_search($1)",
            "default_pool_size = 7",
            "ignore_startup_parameters = extra_float_digits,options,search_path",
            "query_timeout = 10",
            "listen_port = 6432",
            "so_reuseport = 1",
            "server_tls_cert_file = /s/cnpg_pooler_pgbouncer.crt",
            "server_login_retry = 0.2",
            "unix_socket_dir = /p/p-1/run",
        ] {
            assert!(
                r.ini.lines().any(|l| l == want),
                "{want:?} missing:\n{}",
                r.ini
            );
        }
        assert!(!r.ini.contains("auth_dbname"), "1.18 has no auth_dbname");
        let newer = render(&cfg, &dir, &tls(), ("127.0.0.1", 6432), Version(1, 25));
        assert!(newer.ini.contains("auth_dbname = postgres"));
        let lines: Vec<&str> = r.hba.lines().collect();
        assert_eq!(lines[1], "local pgbouncer pgbouncer trust");
        assert_eq!(lines[2], "host all bob 10.0.0.0/8 reject");
        assert_eq!(lines[3], "host all all 0.0.0.0/0 md5");
        assert_eq!(r.userlist, "\"pgbouncer\" \"\"\n");
    }

    #[test]
    fn an_auth_query_secret_replaces_the_certificate() {
        let cfg = Config {
            pool_mode: "session".into(),
            auth_query: Some("SELECT usename, passwd FROM mine($1)".into()),
            auth_user: Some(("finder".into(), "pa\"ss".into())),
            ..Default::default()
        };
        let r = render(
            &cfg,
            &Dir("/d".into()),
            &tls(),
            ("127.0.0.1", 1),
            Version(1, 18),
        );
        assert!(r.ini.contains("auth_user = finder\n"));
        assert!(
            r.ini
                .contains("auth_query = SELECT usename, passwd FROM mine($1)\n")
        );
        assert!(!r.ini.contains("server_tls_cert_file"));
        assert!(r.userlist.contains("\"finder\" \"pa\"\"ss\"\n"));
    }

    #[test]
    fn metrics_are_named_after_the_show_command_and_column() {
        let row = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
        };
        let text = render_metrics(
            &[row(&[("list", "databases"), ("items", "2")])],
            &[row(&[
                ("database", "app"),
                ("user", "app"),
                ("cl_active", "3"),
                ("pool_mode", "session"),
            ])],
            &[row(&[("database", "app"), ("total_xact_count", "42")])],
            true,
        );
        for want in [
            "cnpg_pgbouncer_up 1",
            "cnpg_pgbouncer_lists_databases 2",
            "cnpg_pgbouncer_pools_cl_active{database=\"app\",user=\"app\"} 3",
            "cnpg_pgbouncer_stats_total_xact_count{database=\"app\"} 42",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(want)),
                "{want:?} missing:\n{text}"
            );
        }
        assert!(!text.contains("pool_mode"), "text columns are not metrics");
    }
}
