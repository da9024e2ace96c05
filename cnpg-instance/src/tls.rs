//! The cluster's certificates: issued (ECDSA P-256, rcgen), kept as files beside the
//! passwords, and used by PostgreSQL (`ssl = on`, client certificates for
//! `streaming_replica`) and by everything that connects to it.
//!
//! Who issues them: on Kubernetes the operator (Secrets `<cluster>-ca`, `-server`,
//! `-replication`, or the user's own, e.g. from cert-manager); locally the first program
//! that finds them missing in the cluster's secrets directory — the local operator before
//! it starts any instance, or `cnpg-instance` run by hand — exactly as passwords are made.
//! The CA's key stays where it was made; an instance never needs it.

use crate::runas::{self, RunAs};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How long the certificates we issue last.
pub const VALIDITY_DAYS: i64 = 90;

/// Certificates are renewed this long before they expire (as upstream).
pub const RENEW_BEFORE_DAYS: i64 = 7;

/// When a PEM certificate expires, if it can be read.
pub fn expires(pem: &str) -> Option<jiff::Timestamp> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    jiff::Timestamp::from_second(cert.validity().not_after.timestamp()).ok()
}

/// Whether the certificate in `path` is missing, unreadable, or expires within
/// [`RENEW_BEFORE_DAYS`] of `now_ms`.
fn due(path: &Path, now_ms: i64) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|pem| expires(&pem))
        .is_none_or(|e| e.as_millisecond() < now_ms + RENEW_BEFORE_DAYS * 86_400_000)
}

/// The user standbys authenticate as, by certificate.
pub const REPLICATION_USER: &str = "streaming_replica";

/// A certificate or key could not be issued, read or written.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused.
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key is unusable.
    #[error("{what}: {why}")]
    Invalid {
        /// What (a file, a Secret's key).
        what: String,
        /// Why.
        why: String,
    },
    /// A certificate is missing and there is no CA key here to issue it.
    #[error(
        "{path} is missing and {dir} has no ca.key to issue it: copy the cluster's certificates \
         there (on Kubernetes they come from the Secrets the operator mounts)",
        dir = .path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
}

/// A freshly issued certificate and its key, in PEM.
pub struct Issued {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
    /// When it expires.
    pub expires: jiff::Timestamp,
}

impl std::fmt::Debug for Issued {
    // Never print a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

fn days_from_now(now_ms: i64, days: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(now_ms + days * 86_400_000).unwrap_or(jiff::Timestamp::MAX)
}

fn set_validity(p: &mut CertificateParams, now_ms: i64) -> jiff::Timestamp {
    // A day of slack before now: a node whose clock lags still accepts a new certificate.
    let start = days_from_now(now_ms, -1);
    let end = days_from_now(now_ms, VALIDITY_DAYS);
    let ymd = |t: jiff::Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    p.not_before = ymd(start);
    p.not_after = ymd(end);
    end
}

/// Issues a CA named `common_name`.
pub fn issue_ca(common_name: &str, now_ms: i64) -> Result<Issued, TlsError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.distinguished_name
        .push(DnType::OrganizationalUnitName, "cnpg-rs");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let expires = set_validity(&mut p, now_ms);
    let cert = p.self_signed(&key)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
        expires,
    })
}

/// Issues a certificate signed by the CA: a server certificate for `names` (host names and
/// IP addresses), or a client certificate for the PostgreSQL user `common_name` (PostgreSQL's
/// `cert` authentication matches the user against the common name).
pub fn issue_leaf(
    ca_cert: &str,
    ca_key: &str,
    common_name: &str,
    names: Vec<String>,
    client: bool,
    now_ms: i64,
) -> Result<Issued, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names)?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let expires = set_validity(&mut p, now_ms);
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
        expires,
    })
}

/// The files an instance takes from its mounted volume of certificates: no CA key among
/// them; and the WAL archive's configuration, when the cluster archives, the recovery
/// source's, when it is made from backups, and the managed roles' passwords.
pub const MOUNTED: &[&str] = &[
    "archive.json",
    "archive-ca.crt",
    "recovery-source.json",
    "recovery-source-ca.crt",
    "managed-roles.json",
    "monitoring.json",
    "ca.crt",
    "client-ca.crt",
    "server.crt",
    "server.key",
    "streaming_replica.crt",
    "streaming_replica.key",
    "cnpg_pooler_pgbouncer.crt",
    "cnpg_pooler_pgbouncer.key",
    "operator-ca.crt",
];

/// The files of [`MOUNTED`] that come and go with the spec (WAL archiving, a recovery
/// source, managed roles' passwords, a pooler): when the volume no longer has one, our
/// copy goes too, or a stale archive configuration or password would outlive its spec.
const MOUNTED_WHILE_USED: &[&str] = &[
    "archive.json",
    "archive-ca.crt",
    "recovery-source.json",
    "recovery-source-ca.crt",
    "managed-roles.json",
    "monitoring.json",
    "cnpg_pooler_pgbouncer.crt",
    "cnpg_pooler_pgbouncer.key",
];

/// The certificate files of a cluster, in one directory (the instance's secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The directory.
    pub dir: PathBuf,
}

impl Files {
    /// The CA that signed the server certificate: what clients verify the server with.
    pub fn server_ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The CA's key (only where certificates are issued: the local platform).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The CA client certificates must be signed by (`ssl_ca_file`); the server CA when
    /// the user gave no other.
    pub fn client_ca(&self) -> PathBuf {
        let own = self.dir.join("client-ca.crt");
        if own.exists() { own } else { self.server_ca() }
    }
    /// PostgreSQL's certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// Its key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// The `streaming_replica` client certificate.
    pub fn replication_cert(&self) -> PathBuf {
        self.dir.join("streaming_replica.crt")
    }
    /// Its key.
    pub fn replication_key(&self) -> PathBuf {
        self.dir.join("streaming_replica.key")
    }
    /// The client certificate PgBouncer logs in with (common name `cnpg_pooler_pgbouncer`).
    pub fn pooler_cert(&self) -> PathBuf {
        self.dir.join("cnpg_pooler_pgbouncer.crt")
    }
    /// Its key.
    pub fn pooler_key(&self) -> PathBuf {
        self.dir.join("cnpg_pooler_pgbouncer.key")
    }
    /// The CA of the operator's client certificate: the status endpoint over HTTPS
    /// ([`crate::https`]) takes a client it signed for the operator (Kubernetes only).
    pub fn operator_ca(&self) -> PathBuf {
        self.dir.join("operator-ca.crt")
    }

    /// libpq's parameters to connect as `streaming_replica` with its certificate,
    /// verifying the server's certificate and name against the cluster's CA.
    pub fn replication_conninfo(&self) -> String {
        format!(
            "user={REPLICATION_USER} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            self.server_ca().display(),
            self.replication_cert().display(),
            self.replication_key().display()
        )
    }

    /// Copies the certificate files `source` holds (a mounted Secret volume, named as
    /// [`MOUNTED`]) over ours where they differ, private and owned by `run_as`; whether
    /// any changed. A Secret volume is refreshed in place when its Secret changes (a
    /// renewal, a user's rotation): copied here, the change reaches PostgreSQL by reload.
    pub fn sync_from(&self, source: &Path, run_as: Option<RunAs>) -> Result<bool, TlsError> {
        let mut changed = false;
        for name in MOUNTED {
            let from = source.join(name);
            let Ok(text) = std::fs::read_to_string(&from) else {
                continue;
            };
            let to = self.dir.join(name);
            if std::fs::read_to_string(&to).ok().as_deref() != Some(text.as_str()) {
                write_private(&to, &text, run_as)?;
                changed = true;
            }
        }
        // Only a volume that is there (its CA always is) says a file is gone.
        if source.join("ca.crt").exists() {
            for name in MOUNTED_WHILE_USED {
                let ours = self.dir.join(name);
                if !source.join(name).exists() && ours.exists() {
                    std::fs::remove_file(&ours).map_err(|e| TlsError::Io {
                        path: ours.clone(),
                        source: e,
                    })?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// A digest of every certificate file: it changes when one is replaced (a renewal, a
    /// rotated Secret), and then PostgreSQL must reload.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in [
            self.server_ca(),
            self.client_ca(),
            self.server_cert(),
            self.server_key(),
            self.replication_cert(),
            self.replication_key(),
            self.operator_ca(),
        ] {
            std::fs::read(&p).unwrap_or_default().hash(&mut h);
        }
        h.finish()
    }

    /// Issues what is missing, when the CA's key is here (or there is no CA yet): the CA,
    /// a server certificate for `names`, the `streaming_replica` certificate. Keys are
    /// 0600 and, like the certificates, owned by PostgreSQL's user (PostgreSQL refuses a
    /// key others can read). Without the CA's key, a missing file is an error that says
    /// where it should come from.
    pub fn ensure(
        &self,
        cluster: &str,
        names: &[String],
        run_as: Option<RunAs>,
    ) -> Result<(), TlsError> {
        self.renew(
            cluster,
            names,
            run_as,
            jiff::Timestamp::now().as_millisecond(),
            false,
        )
        .map(|_| ())
    }

    /// [`Files::ensure`], and — where the CA's key is (the local platform, its own issuer)
    /// — renews what expires within [`RENEW_BEFORE_DAYS`] of `now_ms`: the CA and then
    /// everything it signs, or a certificate alone. The names of what was issued; running
    /// instances load them by reload when they see the files change.
    pub fn renew(
        &self,
        cluster: &str,
        names: &[String],
        run_as: Option<RunAs>,
        now_ms: i64,
        expiring_too: bool,
    ) -> Result<Vec<&'static str>, TlsError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut issued = Vec::new();
        let (ca_crt, ca_key) = (self.server_ca(), self.ca_key());
        let new_ca = (!ca_crt.exists() && !ca_key.exists())
            || (expiring_too && ca_key.exists() && due(&ca_crt, now_ms));
        if new_ca {
            let ca = issue_ca(cluster, now_ms)?;
            write_private(&ca_key, &ca.key, None)?;
            write_private(&ca_crt, &ca.cert, run_as)?;
            issued.push("ca.crt");
        }
        let leaves = [
            (self.server_cert(), self.server_key(), false, "server.crt"),
            (
                self.replication_cert(),
                self.replication_key(),
                true,
                "streaming_replica.crt",
            ),
            (
                self.pooler_cert(),
                self.pooler_key(),
                true,
                "cnpg_pooler_pgbouncer.crt",
            ),
        ];
        for (crt, key, client, name) in leaves {
            let present = crt.exists() && key.exists();
            let renew = new_ca || (expiring_too && ca_key.exists() && due(&crt, now_ms));
            if present && !renew {
                continue;
            }
            if !ca_key.exists() || !ca_crt.exists() {
                // Only poolers use theirs: an instance given certificates without it
                // (a Kubernetes pod) does not need it.
                if crt == self.pooler_cert() {
                    continue;
                }
                return Err(TlsError::Missing {
                    path: if crt.exists() { key } else { crt },
                });
            }
            let ca_cert = std::fs::read_to_string(&ca_crt).map_err(io(&ca_crt))?;
            let ca_secret = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
            let leaf = if client {
                let user = name.trim_end_matches(".crt");
                issue_leaf(&ca_cert, &ca_secret, user, vec![], true, now_ms)?
            } else {
                issue_leaf(&ca_cert, &ca_secret, cluster, names.to_vec(), false, now_ms)?
            };
            write_private(&key, &leaf.key, run_as)?;
            write_private(&crt, &leaf.cert, run_as)?;
            issued.push(name);
        }
        Ok(issued)
    }
}

/// The names a locally issued server certificate holds: the loopback names and addresses
/// every local instance and proxy listens on, and `extra` (an instance's own address).
pub fn local_names(extra: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    // `listen_addresses` style: a comma-separated list.
    for e in extra.iter().flat_map(|e| e.split(',')).map(str::trim) {
        if !e.is_empty() && e != "*" && !names.iter().any(|n| n == e) {
            names.push(e.to_owned());
        }
    }
    names
}

/// Writes a file only its owner can read (0600 from the start: no window where others can),
/// owned by `run_as` when given.
pub fn write_private(path: &Path, text: &str, run_as: Option<RunAs>) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    // A name of this process and call: instance managers starting together write the
    // same shared files, and one fixed temporary name let one rename away another's.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    drop(f);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    runas::own(run_as, &tmp).map_err(err)?;
    // Renamed into place: PostgreSQL reloading at that moment sees the old file or the new.
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_set_is_issued_once_and_keys_are_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = Files {
            dir: dir.path().join("s"),
        };
        files
            .ensure("pg", &local_names(&["127.0.0.5"]), None)
            .expect("issued");
        let digest = files.digest();
        for p in [files.ca_key(), files.server_key(), files.replication_key()] {
            let mode = std::fs::metadata(&p).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
        files.ensure("pg", &local_names(&[]), None).expect("again");
        assert_eq!(files.digest(), digest, "nothing is reissued");
        assert_eq!(files.client_ca(), files.server_ca());
        // A mounted volume's files replace ours, once.
        let mounted = dir.path().join("mounted");
        std::fs::create_dir_all(&mounted).expect("dir");
        std::fs::write(mounted.join("client-ca.crt"), "other CA").expect("write");
        assert!(files.sync_from(&mounted, None).expect("sync"));
        assert!(!files.sync_from(&mounted, None).expect("again"));
        assert_eq!(files.client_ca(), files.dir.join("client-ca.crt"));
        // A file that only comes while the spec uses it goes with it from the volume.
        std::fs::write(mounted.join("ca.crt"), "the CA").expect("write");
        std::fs::write(mounted.join("managed-roles.json"), "{}").expect("write");
        assert!(files.sync_from(&mounted, None).expect("sync"));
        assert!(files.dir.join("managed-roles.json").exists());
        std::fs::remove_file(mounted.join("managed-roles.json")).expect("rm");
        assert!(files.sync_from(&mounted, None).expect("sync"));
        assert!(!files.dir.join("managed-roles.json").exists());
        assert!(files.dir.join("client-ca.crt").exists(), "the rest stays");
        assert_ne!(files.digest(), digest);
        let conn = files.replication_conninfo();
        assert!(
            conn.contains("sslmode=verify-full") && conn.contains("streaming_replica.key"),
            "{conn}"
        );
    }

    #[test]
    fn without_the_ca_key_a_missing_certificate_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = Files {
            dir: dir.path().to_owned(),
        };
        files.ensure("pg", &local_names(&[]), None).expect("issued");
        std::fs::remove_file(files.ca_key()).expect("rm");
        std::fs::remove_file(files.server_cert()).expect("rm");
        let e = files
            .ensure("pg", &local_names(&[]), None)
            .expect_err("cannot issue")
            .to_string();
        assert!(e.contains("server.crt is missing"), "{e}");
    }

    #[test]
    fn the_local_issuer_renews_a_week_before_expiry() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = Files {
            dir: dir.path().to_owned(),
        };
        let day = 86_400_000;
        let now = jiff::Timestamp::now().as_millisecond();
        // Issued 80 days ago: ten days left, nothing to do.
        let names = local_names(&[]);
        files
            .renew("pg", &names, None, now - 80 * day, true)
            .expect("issued");
        let left = |p: PathBuf| {
            let pem = std::fs::read_to_string(p).expect("pem");
            (expires(&pem).expect("readable").as_millisecond() - now) / day
        };
        assert_eq!(
            left(files.server_cert()),
            9,
            "90 days from then, to the day"
        );
        assert!(
            files
                .renew("pg", &names, None, now, true)
                .expect("none")
                .is_empty()
        );
        // Five days later only five are left: the CA and what it signs are renewed.
        let renewed = files
            .renew("pg", &names, None, now + 5 * day, true)
            .expect("renewed");
        assert_eq!(
            renewed,
            vec![
                "ca.crt",
                "server.crt",
                "streaming_replica.crt",
                "cnpg_pooler_pgbouncer.crt"
            ]
        );
        assert!(left(files.replication_cert()) > 90);
        // Without the CA's key (certificates from the operator) nothing is touched.
        std::fs::remove_file(files.ca_key()).expect("rm");
        assert!(
            files
                .renew("pg", &names, None, now + 200 * day, true)
                .expect("left alone")
                .is_empty()
        );
    }

    #[test]
    fn the_debug_form_never_shows_a_key() {
        let ca = issue_ca("pg", 1_780_000_000_000).expect("ca");
        let shown = format!("{ca:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }
}
