//! The Secrets of a cluster: the application owner's and the superuser's credentials (with
//! connection URIs, as upstream), the CA, the server certificate, the `streaming_replica`
//! client certificate (standbys authenticate with it: that role has no password), and the
//! passwords the instance managers read.
//!
//! Secrets are made once and then left alone (regenerating a password would lock clients
//! out), so unlike the other objects they are created, not applied, and only when missing.
//! Certificates are ECDSA P-256 (rcgen); their expirations go to the Cluster status.

use cnpg_core::api::Cluster;
use cnpg_core::naming;
pub use cnpg_instance::tls::{Issued, RENEW_BEFORE_DAYS, VALIDITY_DAYS, issue_ca, issue_leaf};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::path::Path;

use super::meta::{cluster_labels, owner};

/// Annotation on certificate Secrets: when the certificate expires (RFC 3339).
pub const ANNOTATION_EXPIRATION: &str = "cnpg.io/certificateExpiration";

/// The Secret the instance managers read their passwords from.
pub fn passwords_secret(cluster: &str) -> String {
    format!("{cluster}-instance-passwords")
}

/// The Secret of the operator's client certificate for one cluster (`tls.crt`, `tls.key`)
/// and of the CA that signed it (`ca.crt`; its key is dropped once the certificate is
/// issued, so no other certificate can ever pass). The instance managers get only
/// `ca.crt`, and take a client it signed for the operator (`cnpg_instance::https`).
/// After a renewal the previous pair stays as `previous.crt`/`previous.key`: pods see a
/// changed Secret only when their kubelet refreshes the volume, and until then the
/// operator still proves itself with the old one.
pub fn operator_client_secret(cluster: &str) -> String {
    format!("{cluster}-operator-client")
}

/// The Secret of the client certificate poolers log in to PostgreSQL with
/// (`cnpg_pooler_pgbouncer`, signed by the client CA), as upstream names it.
pub fn pooler_secret(cluster: &str) -> String {
    format!("{cluster}-pooler")
}

/// The poolers' client certificate when it is missing, expiring, or `renewed_ca` (the
/// client CA just issued again) signs it anew; `existing` holds the cluster's Secrets and
/// the user's certificate Secrets.
pub fn pooler_certificate(
    c: &Cluster,
    existing: &BTreeMap<String, Secret>,
    now_ms: i64,
    renewed_ca: Option<&Secret>,
) -> Result<Option<Secret>, SecretError> {
    let name = pooler_secret(&c.metadata.name.clone().unwrap_or_default());
    if renewed_ca.is_none() && existing.get(&name).is_some_and(|s| !expiring(s, now_ms)) {
        return Ok(None);
    }
    let names = CertificateSecrets::of(c);
    let ca = renewed_ca
        .or_else(|| existing.get(&names.client_ca))
        .ok_or_else(|| SecretError::Missing {
            secret: names.client_ca.clone(),
            key: "ca.crt".into(),
        })?;
    let key = value(ca, "ca.key").map_err(|_| match names.is_user(&names.client_ca) {
        Some(field) => SecretError::UserSecret {
            field,
            secret: names.client_ca.clone(),
            why: "it has no ca.key, and the operator needs it to issue the poolers' client \
                  certificate (cnpg_pooler_pgbouncer); give each Pooler its own \
                  spec.pgbouncer.serverTLSSecret, or the CA's key"
                .into(),
        },
        None => SecretError::Missing {
            secret: names.client_ca.clone(),
            key: "ca.key".into(),
        },
    })?;
    let issued = issue_leaf(
        &value(ca, "ca.crt")?,
        &key,
        cnpg_instance::config::POOLER_USER,
        vec![],
        true,
        now_ms,
    )?;
    Ok(Some(tls_secret(c, &name, &issued, None)))
}

/// The common name of the operator's client certificate.
pub const OPERATOR_CLIENT_NAME: &str = "cnpg-operator";

/// A secret could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A certificate could not be issued.
    #[error(transparent)]
    Certificate(#[from] cnpg_instance::tls::TlsError),
    /// No randomness.
    #[error("no randomness for a password: {0}")]
    Random(String),
    /// A Secret named in `spec.certificates` cannot be used.
    #[error("spec.certificates.{field}: secret {secret:?} cannot be used: {why}")]
    UserSecret {
        /// The field naming it.
        field: &'static str,
        /// The Secret.
        secret: String,
        /// Why.
        why: String,
    },
    /// A field asks for what cannot be done yet.
    #[error("spec.{field}: {why}")]
    Unsupported {
        /// The field.
        field: String,
        /// Why, and what to do.
        why: String,
    },
    /// A Secret lacks a key.
    #[error("secret {secret} has no {key:?}")]
    Missing {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
}

fn password() -> Result<String, SecretError> {
    cnpg_instance::bootstrap::random_password().map_err(|e| SecretError::Random(e.to_string()))
}

fn secret(
    c: &Cluster,
    name: &str,
    type_: &str,
    data: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: c.metadata.namespace.clone(),
            labels: Some(cluster_labels(c)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner(c)]),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A key of a Secret, as text.
pub fn value(s: &Secret, key: &str) -> Result<String, SecretError> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or_else(|| SecretError::Missing {
            secret: s.metadata.name.clone().unwrap_or_default(),
            key: key.to_owned(),
        })
}

/// The DNS names of the server certificate: every Service, short and qualified.
pub fn server_names(c: &Cluster) -> Vec<String> {
    let name = c.metadata.name.clone().unwrap_or_default();
    let ns = c
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut out = Vec::new();
    for svc in [
        naming::service_rw(&name),
        naming::service_r(&name),
        naming::service_ro(&name),
    ] {
        out.push(svc.clone());
        out.push(format!("{svc}.{ns}"));
        out.push(format!("{svc}.{ns}.svc"));
        out.push(format!("{svc}.{ns}.svc.cluster.local"));
    }
    if let Some(extra) = c
        .spec
        .certificates
        .as_ref()
        .map(|x| x.server_alt_dns_names.clone())
    {
        out.extend(extra);
    }
    out
}

fn tls_secret(c: &Cluster, name: &str, issued: &Issued, ca: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([
        ("tls.crt".to_owned(), issued.cert.clone()),
        ("tls.key".to_owned(), issued.key.clone()),
    ]);
    if let Some(ca) = ca {
        data.insert("ca.crt".into(), ca.to_owned());
    }
    secret(
        c,
        name,
        "kubernetes.io/tls",
        data,
        BTreeMap::from([(ANNOTATION_EXPIRATION.to_owned(), issued.expires.to_string())]),
    )
}

fn credentials(c: &Cluster, name: &str, user: &str, password: &str, dbname: &str) -> Secret {
    let cluster = c.metadata.name.clone().unwrap_or_default();
    let ns = c
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let host = format!("{}.{ns}", naming::service_rw(&cluster));
    let data = BTreeMap::from([
        ("username".to_owned(), user.to_owned()),
        ("user".to_owned(), user.to_owned()),
        ("password".to_owned(), password.to_owned()),
        ("dbname".to_owned(), dbname.to_owned()),
        ("host".to_owned(), naming::service_rw(&cluster)),
        ("port".to_owned(), "5432".to_owned()),
        (
            "uri".to_owned(),
            format!("postgresql://{user}:{password}@{host}:5432/{dbname}"),
        ),
        (
            "jdbc-uri".to_owned(),
            format!("jdbc:postgresql://{host}:5432/{dbname}?password={password}&user={user}"),
        ),
        (
            "pgpass".to_owned(),
            format!("{host}:5432:{dbname}:{user}:{password}\n"),
        ),
    ]);
    secret(c, name, "kubernetes.io/basic-auth", data, BTreeMap::new())
}

/// The application database and owner (`bootstrap.initdb.database`/`owner`, default `app`).
pub fn app_names(c: &Cluster) -> (String, String) {
    let initdb = c.spec.bootstrap.as_ref().and_then(|b| b.initdb.as_ref());
    let db = initdb
        .and_then(|i| i.database.clone())
        .unwrap_or_else(|| "app".into());
    let owner = initdb
        .and_then(|i| i.owner.clone())
        .unwrap_or_else(|| db.clone());
    (db, owner)
}

/// The Secrets to write, given the ones that already exist (by name): the missing ones
/// (passwords already issued are reused) and the certificates due for renewal. The caller
/// creates those that do not exist and replaces the others.
pub fn due(
    c: &Cluster,
    existing: &BTreeMap<String, Secret>,
    now_ms: i64,
) -> Result<Vec<Secret>, SecretError> {
    let cluster = c.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    let passwords_name = passwords_secret(&cluster);
    let passwords = match existing.get(&passwords_name) {
        Some(s) => s.clone(),
        None => {
            let s = secret(
                c,
                &passwords_name,
                "Opaque",
                BTreeMap::from([
                    ("superuser-password".to_owned(), password()?),
                    ("app-password".to_owned(), password()?),
                    ("status-token".to_owned(), password()?),
                ]),
                BTreeMap::new(),
            );
            out.push(s.clone());
            s
        }
    };
    // A cluster made before instance managers took a status token: add one (the
    // passwords are kept as they are).
    if value(&passwords, "status-token").is_err() {
        let mut with_token = passwords.clone();
        with_token
            .data
            .get_or_insert_default()
            .insert("status-token".into(), ByteString(password()?.into_bytes()));
        if !out
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(&passwords_name))
        {
            out.push(with_token);
        }
    }
    let (db, owner) = app_names(c);
    let app = naming::secret_app(&cluster);
    if !existing.contains_key(&app) {
        out.push(credentials(
            c,
            &app,
            &owner,
            &value(&passwords, "app-password")?,
            &db,
        ));
    }
    let su = naming::secret_superuser(&cluster);
    if c.spec.enable_superuser_access == Some(true) && !existing.contains_key(&su) {
        out.push(credentials(
            c,
            &su,
            "postgres",
            &value(&passwords, "superuser-password")?,
            "*",
        ));
    }
    out.extend(certificates(c, existing, now_ms)?);
    Ok(out)
}

fn expiring(s: &Secret, now_ms: i64) -> bool {
    let exp = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_EXPIRATION))
        .and_then(|e| e.parse::<jiff::Timestamp>().ok());
    // No readable expiration: we cannot tell, so renew (it costs one certificate).
    exp.is_none_or(|e| e.as_millisecond() < now_ms + RENEW_BEFORE_DAYS * 86_400_000)
}

/// Which Secret holds each part of the cluster's TLS: the user's (`spec.certificates`, e.g.
/// from cert-manager) or the operator's (`<cluster>-ca`, `-server`, `-replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSecrets {
    /// The CA clients verify the server with (`ca.crt`; `ca.key` too when we issue the
    /// server certificate with it).
    pub server_ca: String,
    /// The server certificate (`tls.crt`, `tls.key`).
    pub server_tls: String,
    /// The CA PostgreSQL verifies client certificates with (`ca.crt`; `ca.key` too when we
    /// issue the replication certificate with it).
    pub client_ca: String,
    /// The `streaming_replica` client certificate (`tls.crt`, `tls.key`).
    pub replication_tls: String,
    /// The Secrets the user gave, by the field that names them.
    pub user: Vec<(&'static str, String)>,
}

impl CertificateSecrets {
    /// The Secrets of `c`.
    pub fn of(c: &Cluster) -> Self {
        let cluster = c.metadata.name.clone().unwrap_or_default();
        let spec = c.spec.certificates.clone().unwrap_or_default();
        let mut user = Vec::new();
        let mut pick = |field: &'static str, given: Option<String>, ours: String| match given {
            Some(g) if !g.is_empty() => {
                user.push((field, g.clone()));
                g
            }
            _ => ours,
        };
        let server_ca = pick(
            "serverCASecret",
            spec.server_ca_secret,
            naming::secret_ca(&cluster),
        );
        let server_tls = pick(
            "serverTLSSecret",
            spec.server_tls_secret,
            naming::secret_server(&cluster),
        );
        let client_ca = pick(
            "clientCASecret",
            spec.client_ca_secret,
            naming::secret_ca(&cluster),
        );
        let replication_tls = pick(
            "replicationTLSSecret",
            spec.replication_tls_secret,
            naming::secret_replication(&cluster),
        );
        CertificateSecrets {
            server_ca,
            server_tls,
            client_ca,
            replication_tls,
            user,
        }
    }

    fn is_user(&self, name: &str) -> Option<&'static str> {
        self.user.iter().find(|(_, n)| n == name).map(|(f, _)| *f)
    }
}

/// The certificate Secrets to write (given every Secret of the cluster and the user's
/// certificate Secrets, by name): our CA when it is missing or expires within
/// [`RENEW_BEFORE_DAYS`], and then every certificate it signs; a server or replication
/// certificate alone when it is missing or expiring. The user's Secrets are never written:
/// their certificates are theirs to renew (we reload them when they change); a missing one
/// is an error naming its field. Passwords never change.
fn certificates(
    c: &Cluster,
    existing: &BTreeMap<String, Secret>,
    now_ms: i64,
) -> Result<Vec<Secret>, SecretError> {
    let cluster = c.metadata.name.clone().unwrap_or_default();
    let names = CertificateSecrets::of(c);
    for (field, name) in &names.user {
        if !existing.contains_key(name) {
            return Err(SecretError::UserSecret {
                field,
                secret: name.clone(),
                why: "it does not exist".into(),
            });
        }
    }
    let due = |name: &str| existing.get(name).is_none_or(|s| expiring(s, now_ms));
    let mut out = Vec::new();
    let ca_name = naming::secret_ca(&cluster);
    let mut issued_ca: Option<(String, String)> = None;
    let ours_needed = names.server_ca == ca_name || names.client_ca == ca_name;
    if ours_needed && due(&ca_name) {
        let ca = issue_ca(&cluster, now_ms)?;
        out.push(secret(
            c,
            &ca_name,
            "Opaque",
            BTreeMap::from([
                ("ca.crt".to_owned(), ca.cert.clone()),
                ("ca.key".to_owned(), ca.key.clone()),
            ]),
            BTreeMap::from([(ANNOTATION_EXPIRATION.to_owned(), ca.expires.to_string())]),
        ));
        issued_ca = Some((ca.cert, ca.key));
    }
    // A CA's certificate and key: the one just issued, or one that exists (the user's must
    // hold `ca.key` when we are to sign with it).
    let ca_pair = |name: &str, for_what: &str| -> Result<(String, String), SecretError> {
        if name == ca_name
            && let Some(pair) = &issued_ca
        {
            return Ok(pair.clone());
        }
        let s = existing.get(name).ok_or_else(|| SecretError::Missing {
            secret: name.to_owned(),
            key: "ca.crt".into(),
        })?;
        let key = value(s, "ca.key").map_err(|_| match names.is_user(name) {
            Some(field) => SecretError::UserSecret {
                field,
                secret: name.to_owned(),
                why: format!(
                    "it has no ca.key, and the operator needs it to issue {for_what}; give that                      certificate too, or the CA's key"
                ),
            },
            None => SecretError::Missing {
                secret: name.to_owned(),
                key: "ca.key".into(),
            },
        })?;
        Ok((value(s, "ca.crt")?, key))
    };
    let new_ca = issued_ca.is_some();
    let server = &names.server_tls;
    if names.is_user(server).is_none() && (due(server) || (new_ca && names.server_ca == ca_name)) {
        let (ca_cert, ca_key) = ca_pair(&names.server_ca, "the server certificate")?;
        let issued = issue_leaf(
            &ca_cert,
            &ca_key,
            &naming::service_rw(&cluster),
            server_names(c),
            false,
            now_ms,
        )?;
        out.push(tls_secret(c, server, &issued, Some(&ca_cert)));
    }
    let replication = &names.replication_tls;
    if names.is_user(replication).is_none()
        && (due(replication) || (new_ca && names.client_ca == ca_name))
    {
        let (ca_cert, ca_key) = ca_pair(&names.client_ca, "the replication certificate")?;
        let issued = issue_leaf(&ca_cert, &ca_key, "streaming_replica", vec![], true, now_ms)?;
        out.push(tls_secret(c, replication, &issued, None));
    }
    let operator = operator_client_secret(&cluster);
    if due(&operator) {
        out.push(operator_client(c, existing.get(&operator), now_ms)?);
    }
    Ok(out)
}

/// A new operator client certificate and the CA that signed it, keeping the one it
/// replaces (see [`operator_client_secret`]).
fn operator_client(c: &Cluster, old: Option<&Secret>, now_ms: i64) -> Result<Secret, SecretError> {
    let cluster = c.metadata.name.clone().unwrap_or_default();
    let ca = issue_ca(&format!("{cluster}-operator"), now_ms)?;
    let leaf = issue_leaf(
        &ca.cert,
        &ca.key,
        OPERATOR_CLIENT_NAME,
        vec![],
        true,
        now_ms,
    )?;
    let mut s = tls_secret(c, &operator_client_secret(&cluster), &leaf, Some(&ca.cert));
    if let Some(old) = old
        && let (Ok(cert), Ok(key)) = (value(old, "tls.crt"), value(old, "tls.key"))
    {
        let data = s.data.get_or_insert_default();
        data.insert("previous.crt".into(), ByteString(cert.into_bytes()));
        data.insert("previous.key".into(), ByteString(key.into_bytes()));
    }
    Ok(s)
}

/// The Secret of a cluster's WAL archive configuration: `archive.json` (what
/// `cnpg-cloud` reads: `spec.backup.barmanObjectStore` with the S3
/// credentials copied from the Secrets it names) and `archive-ca.crt` (its `endpointCA`).
/// Pods mount it with their certificates; it is rewritten whenever its content changes.
pub fn archive_secret(cluster: &str) -> String {
    format!("{cluster}-archive")
}

/// The Secret of a cluster's managed roles' passwords: `managed-roles.json`, each role's
/// password and its Secret's version ([`role_passwords`]). Pods mount it with their
/// certificates (optional: it exists only while a role takes its password from a Secret),
/// and the primary's manager reads it on every change.
pub fn managed_roles_secret(cluster: &str) -> String {
    format!("{cluster}-managed-roles")
}

/// The Secrets `spec.managed.roles` take their passwords from.
pub fn managed_roles_sources(c: &Cluster) -> Vec<String> {
    c.spec
        .managed
        .iter()
        .flat_map(|m| m.roles.iter())
        .filter_map(|r| r.password_secret.as_ref().map(|s| s.name.clone()))
        .collect()
}

/// Each managed role's password from its `kubernetes.io/basic-auth` Secret (`password`;
/// `username`, when given, must be the role's, as upstream asks). The version is the
/// Secret's `resourceVersion` (the local platform's Secrets have none: a digest of the
/// password). A Secret missing or not fit is left out: the primary reports that role as
/// not reconciled, and why.
pub fn role_passwords(
    c: &Cluster,
    user: &BTreeMap<String, Secret>,
) -> BTreeMap<String, cnpg_core::roles::Secret> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    for r in c.spec.managed.iter().flat_map(|m| m.roles.iter()) {
        let Some(s) = r.password_secret.as_ref().and_then(|s| user.get(&s.name)) else {
            continue;
        };
        let data = s.data.clone().unwrap_or_default();
        let Some(password) = data.get("password") else {
            continue;
        };
        if data
            .get("username")
            .is_some_and(|u| u.0 != r.name.as_bytes())
        {
            continue;
        }
        let version = s.metadata.resource_version.clone().unwrap_or_else(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            password.0.hash(&mut h);
            format!("local-{:016x}", h.finish())
        });
        out.insert(
            r.name.clone(),
            cnpg_core::roles::Secret {
                password: String::from_utf8_lossy(&password.0).into_owned(),
                version,
            },
        );
    }
    out
}

/// The managed roles' Secret as it should be: none while no role has a password.
pub fn managed_roles(
    c: &Cluster,
    user: &BTreeMap<String, Secret>,
) -> Result<Option<Secret>, SecretError> {
    let passwords = role_passwords(c, user);
    if passwords.is_empty() {
        return Ok(None);
    }
    let text = serde_json::to_string(&passwords).map_err(|e| SecretError::Unsupported {
        field: "spec.managed.roles".into(),
        why: e.to_string(),
    })?;
    Ok(Some(secret(
        c,
        &managed_roles_secret(&c.metadata.name.clone().unwrap_or_default()),
        "Opaque",
        BTreeMap::from([("managed-roles.json".to_owned(), text)]),
        BTreeMap::new(),
    )))
}

/// The operator's Secret with the instances' monitoring configuration
/// (`monitoring.json`, [`cnpg_instance::monitoring::Config`]).
pub fn monitoring_secret(cluster: &str) -> String {
    format!("{cluster}-monitoring")
}

/// The Secrets `spec.monitoring.customQueriesSecret` names.
pub fn monitoring_sources(c: &Cluster) -> Vec<String> {
    c.spec
        .monitoring
        .iter()
        .flat_map(|m| m.custom_queries_secret.iter())
        .map(|s| s.name.clone())
        .collect()
}

/// The ConfigMaps `spec.monitoring.customQueriesConfigMap` names.
pub fn monitoring_config_maps(c: &Cluster) -> Vec<String> {
    c.spec
        .monitoring
        .iter()
        .flat_map(|m| m.custom_queries_config_map.iter())
        .map(|s| s.name.clone())
        .collect()
}

/// The instances' monitoring configuration: `spec.monitoring` with the custom queries
/// read from the ConfigMaps and Secrets it names (`None` without `spec.monitoring`: the
/// instances' defaults). A file that is missing, or whose queries do not parse, is an
/// error naming it; nothing is half applied.
pub fn monitoring_config(
    c: &Cluster,
    config_maps: &BTreeMap<String, k8s_openapi::api::core::v1::ConfigMap>,
    user: &BTreeMap<String, Secret>,
) -> Result<Option<cnpg_instance::monitoring::Config>, SecretError> {
    use cnpg_instance::monitoring::{Config, QueriesFile};
    let Some(m) = &c.spec.monitoring else {
        return Ok(None);
    };
    let invalid = |field: String, why: String| SecretError::Unsupported { field, why };
    let mut custom = Vec::new();
    for (i, r) in m.custom_queries_config_map.iter().enumerate() {
        let field = format!("monitoring.customQueriesConfigMap[{i}]");
        let text = config_maps
            .get(&r.name)
            .and_then(|cm| cm.data.as_ref()?.get(&r.key).cloned())
            .ok_or_else(|| {
                invalid(
                    field.clone(),
                    format!(
                        "ConfigMap {:?} has no key {:?}; create it, or name another",
                        r.name, r.key
                    ),
                )
            })?;
        custom.push((field, format!("ConfigMap {}/{}", r.name, r.key), text));
    }
    for (i, r) in m.custom_queries_secret.iter().enumerate() {
        let field = format!("monitoring.customQueriesSecret[{i}]");
        let text = user
            .get(&r.name)
            .and_then(|s| s.data.as_ref()?.get(&r.key).cloned())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| {
                invalid(
                    field.clone(),
                    format!(
                        "Secret {:?} has no key {:?}; create it, or name another",
                        r.name, r.key
                    ),
                )
            })?;
        custom.push((field, format!("Secret {}/{}", r.name, r.key), text));
    }
    let mut files = Vec::new();
    for (field, source, text) in custom {
        cnpg_core::monitoring::parse(&text)
            .map_err(|e| invalid(field, format!("{source}: {e}")))?;
        files.push(QueriesFile { source, text });
    }
    let ttl_seconds = match &m.metrics_queries_ttl {
        None => None,
        Some(t) => Some(
            cnpg_core::monitoring::milliseconds(t)
                .filter(|ms| *ms >= 0.0)
                .map(|ms| (ms / 1000.0).ceil() as u64)
                .ok_or_else(|| {
                    invalid(
                        "monitoring.metricsQueriesTTL".into(),
                        format!("{t:?} is not a duration such as 30s or 1m"),
                    )
                })?,
        ),
    };
    Ok(Some(Config {
        disable_default_queries: m.disable_default_queries.unwrap_or(false),
        ttl_seconds,
        custom: files,
    }))
}

/// The monitoring configuration's Secret as it should be ([`monitoring_config`]).
pub fn monitoring(
    c: &Cluster,
    config_maps: &BTreeMap<String, k8s_openapi::api::core::v1::ConfigMap>,
    user: &BTreeMap<String, Secret>,
) -> Result<Option<Secret>, SecretError> {
    let Some(config) = monitoring_config(c, config_maps, user)? else {
        return Ok(None);
    };
    let text = serde_json::to_string(&config).map_err(|e| SecretError::Unsupported {
        field: "monitoring".into(),
        why: e.to_string(),
    })?;
    Ok(Some(secret(
        c,
        &monitoring_secret(&c.metadata.name.clone().unwrap_or_default()),
        "Opaque",
        BTreeMap::from([("monitoring.json".to_owned(), text)]),
        BTreeMap::new(),
    )))
}

/// Where an instance pod keeps its copy of `archive-ca.crt` (the manager copies the
/// mounted files into its private directory).
const ARCHIVE_CA_IN_POD: &str = "/controller/secrets/archive-ca.crt";

/// The Secret with the store a cluster made from backups recovers from
/// (`recovery-source.json`, and its endpoint's CA).
pub fn recovery_secret(cluster: &str) -> String {
    format!("{cluster}-recovery-source")
}

/// Where a pod finds the recovery source's configuration (its certificates volume, copied
/// among the instance's secrets).
pub const RECOVERY_CONFIG_IN_POD: &str = "/controller/secrets/recovery-source.json";
const RECOVERY_CA_IN_POD: &str = "/controller/secrets/recovery-source-ca.crt";

/// Every Secret of the user's that `c` reads: its certificates, the object store's
/// credentials, the managed roles' passwords, the recovery source's. A change to one of
/// them wakes the Cluster's reconcile (a rotated password is applied at once, not at the
/// next periodic pass).
pub fn referenced(c: &Cluster) -> std::collections::BTreeSet<String> {
    CertificateSecrets::of(c)
        .user
        .into_iter()
        .map(|(_, name)| name)
        .chain(archive_sources(c))
        .chain(managed_roles_sources(c))
        .chain(monitoring_sources(c))
        .chain(recovery_sources(c, None))
        .collect()
}

/// The Secrets the recovery source names (credentials, endpoint CA): the
/// `externalClusters` entry's store, or the one `backup` (the `Backup` that
/// `bootstrap.recovery.backup` names) recorded.
pub fn recovery_sources(
    c: &Cluster,
    backup: Option<&cnpg_core::api::backup::Backup>,
) -> Vec<String> {
    let Some(rec) = c.spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) else {
        return vec![];
    };
    let from_store = rec.source.as_ref().and_then(|s| {
        c.spec
            .external_clusters
            .iter()
            .find(|e| &e.name == s)
            .and_then(|e| e.barman_object_store.as_ref())
            .map(|b| {
                (
                    b.s3_credentials.clone(),
                    b.azure_credentials.clone(),
                    b.endpoint_ca.clone(),
                )
            })
    });
    let from_backup = backup.and_then(|b| b.status.as_ref()).map(|st| {
        (
            st.s3_credentials.clone(),
            st.azure_credentials.clone(),
            rec.backup
                .as_ref()
                .and_then(|b| b.endpoint_ca.clone())
                .or(st.endpoint_ca.clone()),
        )
    });
    let Some((s3, azure, ca)) = from_store.or(from_backup) else {
        return vec![];
    };
    secret_names(s3.as_ref(), azure.as_ref(), ca.as_ref())
}

/// The names of the Secrets a store's credentials and endpoint CA point at, each once.
fn secret_names(
    s3: Option<&cnpg_core::api::barman::S3Credentials>,
    azure: Option<&cnpg_core::api::barman::AzureCredentials>,
    ca: Option<&cnpg_core::api::common::SecretKeySelector>,
) -> Vec<String> {
    let mut names: Vec<String> = [
        s3.and_then(|s| s.access_key_id.as_ref()),
        s3.and_then(|s| s.secret_access_key.as_ref()),
        s3.and_then(|s| s.session_token.as_ref()),
        s3.and_then(|s| s.region.as_ref()),
        azure.and_then(|a| a.connection_string.as_ref()),
        azure.and_then(|a| a.storage_account.as_ref()),
        azure.and_then(|a| a.storage_key.as_ref()),
        azure.and_then(|a| a.storage_sas_token.as_ref()),
        ca,
    ]
    .into_iter()
    .flatten()
    .map(|k| k.name.clone())
    .collect();
    names.sort();
    names.dedup();
    names
}

/// The recovery source's Secret (none when `c` is not made from backups) and the backup
/// id a `Backup` named, from the user's Secrets by name. Errors name the field.
pub fn recovery(
    c: &Cluster,
    backup: Option<&cnpg_core::api::backup::Backup>,
    user: &BTreeMap<String, Secret>,
) -> Result<Option<(Secret, Option<String>)>, SecretError> {
    let Some((config, ca, backup_id)) =
        recovery_config(c, backup, user, Path::new(RECOVERY_CA_IN_POD))?
    else {
        return Ok(None);
    };
    let mut data = BTreeMap::new();
    if let Some(ca) = ca {
        data.insert("recovery-source-ca.crt".to_owned(), ca);
    }
    data.insert(
        "recovery-source.json".to_owned(),
        serde_json::to_string(&config).map_err(|e| SecretError::Unsupported {
            field: "bootstrap.recovery".into(),
            why: e.to_string(),
        })?,
    );
    let cluster = c.metadata.name.clone().unwrap_or_default();
    Ok(Some((
        secret(
            c,
            &recovery_secret(&cluster),
            "Opaque",
            data,
            BTreeMap::new(),
        ),
        backup_id,
    )))
}

/// `spec.backup.barmanObjectStore`, when there is one.
fn object_store(c: &Cluster) -> Option<&cnpg_core::api::barman::BarmanObjectStoreConfiguration> {
    c.spec.backup.as_ref()?.barman_object_store.as_ref()
}

/// The Secrets `spec.backup.barmanObjectStore` names (credentials, endpoint CA).
pub fn archive_sources(c: &Cluster) -> Vec<String> {
    let Some(store) = object_store(c) else {
        return vec![];
    };
    secret_names(
        store.s3_credentials.as_ref(),
        store.azure_credentials.as_ref(),
        store.endpoint_ca.as_ref(),
    )
}

/// The archive Secret as it should be (none without an object store), from the user's
/// Secrets by name. What cannot be archived to yet is an error naming the field.
pub fn archive(
    c: &Cluster,
    user: &BTreeMap<String, Secret>,
) -> Result<Option<Secret>, SecretError> {
    let cluster = c.metadata.name.clone().unwrap_or_default();
    let Some((config, ca)) = archive_config(c, user, Path::new(ARCHIVE_CA_IN_POD))? else {
        return Ok(None);
    };
    let mut data = BTreeMap::new();
    if let Some(ca) = ca {
        data.insert("archive-ca.crt".to_owned(), ca);
    }
    data.insert(
        "archive.json".to_owned(),
        serde_json::to_string(&config).map_err(|e| SecretError::Unsupported {
            field: "backup".into(),
            why: e.to_string(),
        })?,
    );
    Ok(Some(secret(
        c,
        &archive_secret(&cluster),
        "Opaque",
        data,
        BTreeMap::new(),
    )))
}

/// What `cnpg-cloud` is to read for `c` (none without an object store), and
/// the endpoint's CA (PEM) to put at `ca_path`, from the user's Secrets by name.
pub fn archive_config(
    c: &Cluster,
    user: &BTreeMap<String, Secret>,
    ca_path: &Path,
) -> Result<Option<(cnpg_instance::archive::ArchiveConfig, Option<String>)>, SecretError> {
    let Some(store) = object_store(c) else {
        return Ok(None);
    };
    let cluster = c.metadata.name.clone().unwrap_or_default();
    store_config(
        store,
        "backup.barmanObjectStore",
        store.server_name.clone().unwrap_or(cluster),
        user,
        ca_path,
        c.spec
            .backup
            .as_ref()
            .and_then(|b| b.retention_policy.clone()),
    )
    .map(Some)
}

/// The store a `bootstrap.recovery` reads (none without one): the `externalClusters`
/// entry `source` names (its `serverName` defaults to the entry's name, as upstream), or
/// the store the `Backup` that `backup` names was written to — found by the platform and
/// passed as `backup` — with that backup's id. Errors name the field.
#[allow(clippy::type_complexity)]
pub fn recovery_config(
    c: &Cluster,
    backup: Option<&cnpg_core::api::backup::Backup>,
    user: &BTreeMap<String, Secret>,
    ca_path: &Path,
) -> Result<
    Option<(
        cnpg_instance::archive::ArchiveConfig,
        Option<String>,
        Option<String>,
    )>,
    SecretError,
> {
    let Some(rec) = c.spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) else {
        return Ok(None);
    };
    if let Some(source) = &rec.source {
        let at = format!("externalClusters[{source}].barmanObjectStore");
        let ext = c
            .spec
            .external_clusters
            .iter()
            .find(|e| &e.name == source)
            .ok_or_else(|| SecretError::Unsupported {
                field: "bootstrap.recovery.source".into(),
                why: format!("no externalClusters entry is named {source:?}"),
            })?;
        let store = ext
            .barman_object_store
            .as_ref()
            .ok_or_else(|| SecretError::Unsupported {
                field: at.clone(),
                why: format!(
                    "{source} has no barmanObjectStore: recovery reads the backups and WAL from it \
                 (plugins are not supported yet)"
                ),
            })?;
        let (config, ca) = store_config(
            store,
            &at,
            store.server_name.clone().unwrap_or_else(|| source.clone()),
            user,
            ca_path,
            None,
        )?;
        return Ok(Some((config, ca, None)));
    }
    let Some(named) = &rec.backup else {
        return Ok(None);
    };
    let b = backup.ok_or_else(|| SecretError::Unsupported {
        field: "bootstrap.recovery.backup.name".into(),
        why: format!("there is no Backup named {:?}", named.name),
    })?;
    let st = b.status.clone().unwrap_or_default();
    let done = st.phase.as_deref() == Some("completed");
    let (Some(path), Some(id), true) = (st.destination_path.clone(), st.backup_id.clone(), done)
    else {
        return Err(SecretError::Unsupported {
            field: "bootstrap.recovery.backup.name".into(),
            why: format!(
                "Backup {} has not completed (phase {}): recover from a completed one",
                named.name,
                st.phase.as_deref().unwrap_or("none")
            ),
        });
    };
    let store = cnpg_core::api::barman::BarmanObjectStoreConfiguration {
        destination_path: path,
        endpoint_url: st.endpoint_url.clone(),
        endpoint_ca: named.endpoint_ca.clone().or(st.endpoint_ca.clone()),
        server_name: st.server_name.clone(),
        s3_credentials: st.s3_credentials.clone(),
        azure_credentials: st.azure_credentials.clone(),
        google_credentials: st.google_credentials.clone(),
        ..Default::default()
    };
    let (config, ca) = store_config(
        &store,
        &format!("Backup {}'s store", named.name),
        st.server_name
            .clone()
            .unwrap_or_else(|| b.spec.cluster.name.clone()),
        user,
        ca_path,
        None,
    )?;
    Ok(Some((config, ca, Some(id))))
}

/// What `cnpg-cloud` is to read for `store` (described at `at` in the manifest, which
/// errors name), and the endpoint's CA (PEM) to put at `ca_path`, from the user's Secrets
/// by name.
pub fn store_config(
    store: &cnpg_core::api::barman::BarmanObjectStoreConfiguration,
    at: &str,
    server_name: String,
    user: &BTreeMap<String, Secret>,
    ca_path: &Path,
    retention_policy: Option<String>,
) -> Result<(cnpg_instance::archive::ArchiveConfig, Option<String>), SecretError> {
    use cnpg_core::api::barman::{CompressionType, EncryptionType};
    use cnpg_instance::archive::{
        ArchiveConfig, AzureCredentials, Compression, DataConfig, S3Credentials,
    };
    let field = |f: &str, why: String| SecretError::Unsupported {
        field: if f.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{f}")
        },
        why,
    };
    let pick = |sel: &cnpg_core::api::common::SecretKeySelector| -> Result<String, SecretError> {
        let s = user.get(&sel.name).ok_or_else(|| SecretError::Missing {
            secret: sel.name.clone(),
            key: sel.key.clone(),
        })?;
        value(s, &sel.key)
    };
    let azure = match &store.azure_credentials {
        Some(cr)
            if cr.inherit_from_azure_ad != Some(true)
                && cr.use_default_azure_credentials != Some(true) =>
        {
            let made = AzureCredentials {
                connection_string: cr.connection_string.as_ref().map(pick).transpose()?,
                storage_account: cr.storage_account.as_ref().map(pick).transpose()?,
                storage_key: cr.storage_key.as_ref().map(pick).transpose()?,
                storage_sas_token: cr.storage_sas_token.as_ref().map(pick).transpose()?,
            };
            if made.connection_string.is_none()
                && made.storage_key.is_none()
                && made.storage_sas_token.is_none()
            {
                return Err(field(
                    "azureCredentials",
                    "give connectionString, storageAccount with storageKey or storageSasToken, \
                     or set inheritFromAzureAD or useDefaultAzureCredentials"
                        .into(),
                ));
            }
            Some(made)
        }
        _ => None,
    };
    if store.google_credentials.is_some() {
        return Err(field(
            "googleCredentials",
            "Google Cloud Storage is not supported yet: use S3 (or an S3-compatible store) \
             or Azure Blob Storage"
                .into(),
        ));
    }
    let s3 = match &store.s3_credentials {
        Some(cr) if cr.inherit_from_iam_role != Some(true) => {
            let need = |sel: Option<&cnpg_core::api::common::SecretKeySelector>,
                        name: &'static str|
             -> Result<String, SecretError> {
                sel.ok_or_else(|| {
                    field(
                        "s3Credentials",
                        format!("{name} is required unless inheritFromIAMRole is true"),
                    )
                })
                .and_then(pick)
            };
            Some(S3Credentials {
                access_key_id: need(cr.access_key_id.as_ref(), "accessKeyId")?,
                secret_access_key: need(cr.secret_access_key.as_ref(), "secretAccessKey")?,
                session_token: cr.session_token.as_ref().map(pick).transpose()?,
                region: cr.region.as_ref().map(pick).transpose()?,
            })
        }
        _ => None,
    };
    let codec = |c: CompressionType| match c {
        CompressionType::Bzip2 => Compression::Bzip2,
        CompressionType::Gzip => Compression::Gzip,
        CompressionType::Lz4 => Compression::Lz4,
        CompressionType::Snappy => Compression::Snappy,
        CompressionType::Xz => Compression::Xz,
        CompressionType::Zstd => Compression::Zstd,
    };
    let wal = store.wal.clone().unwrap_or_default();
    let compression = wal.compression.map(codec);
    let data = store.data.clone().unwrap_or_default();
    let data_compression = match data.compression.map(codec) {
        Some(c) if !c.for_data() => {
            return Err(field(
                "data.compression",
                format!(
                    "{c} is for WAL only (barman-cloud writes and restores base backups \
                     with gzip, bzip2 or snappy): use one of those, or none"
                ),
            ));
        }
        c => c,
    };
    let sse = |e: EncryptionType| match e {
        EncryptionType::Aes256 => "AES256".to_owned(),
        EncryptionType::AwsKms => "aws:kms".to_owned(),
    };
    let ca = store.endpoint_ca.as_ref().map(pick).transpose()?;
    let config = ArchiveConfig {
        destination_path: store.destination_path.clone(),
        server_name,
        endpoint_url: store.endpoint_url.clone(),
        endpoint_ca: ca.as_ref().map(|_| ca_path.to_owned()),
        compression,
        encryption: wal.encryption.map(sse),
        max_parallel: wal.max_parallel.unwrap_or(1).max(1) as usize,
        s3,
        azure,
        data: DataConfig {
            compression: data_compression,
            encryption: data.encryption.map(sse),
            jobs: data.jobs.unwrap_or(2).max(1) as usize,
            immediate_checkpoint: data.immediate_checkpoint.unwrap_or(false),
        },
        retention_policy,
    };
    // Checked here, where the user sees the error, not first in an archive_command.
    cnpg_instance::archive::Destination::check(&config).map_err(|e| field("", e.to_string()))?;
    Ok((config, ca))
}

/// How the operator reaches the instance managers of a cluster over HTTPS: verifying them
/// against the server CA (`<cluster>-rw` is in every server certificate, the operator's
/// or the user's) and presenting its client certificate — then, when that one is refused
/// (a pod that has not seen a renewal yet), the previous one.
pub fn status_access(
    c: &Cluster,
    server_ca: &Secret,
    operator: &Secret,
) -> Result<Vec<cnpg_instance::https::ClientTls>, SecretError> {
    let cluster = c.metadata.name.clone().unwrap_or_default();
    let ca = value(server_ca, "ca.crt")?;
    let name = naming::service_rw(&cluster);
    let mut out = Vec::new();
    for (cert, key) in [("tls.crt", "tls.key"), ("previous.crt", "previous.key")] {
        let (Ok(cert), Ok(key)) = (value(operator, cert), value(operator, key)) else {
            continue;
        };
        out.push(cnpg_instance::https::ClientTls::new(
            &ca,
            Some((&cert, &key)),
            &name,
        )?);
    }
    if out.is_empty() {
        return Err(SecretError::Missing {
            secret: operator.metadata.name.clone().unwrap_or_default(),
            key: "tls.crt".into(),
        });
    }
    Ok(out)
}

/// A client certificate Secret for `user`, signed by the cluster's CA
/// (`kubectl cnpg certificate`).
pub fn client_certificate(
    c: &Cluster,
    ca: &Secret,
    secret_name: &str,
    user: &str,
    now_ms: i64,
) -> Result<Secret, SecretError> {
    let issued = issue_leaf(
        &value(ca, "ca.crt")?,
        &value(ca, "ca.key")?,
        user,
        vec![],
        true,
        now_ms,
    )?;
    let mut s = tls_secret(c, secret_name, &issued, None);
    s.metadata.owner_references = None;
    Ok(s)
}

/// Expiration of each certificate Secret (for `status.certificates.expirations`).
pub fn expirations<'a>(secrets: impl Iterator<Item = &'a Secret>) -> BTreeMap<String, String> {
    secrets
        .filter_map(|s| {
            let exp = s
                .metadata
                .annotations
                .as_ref()?
                .get(ANNOTATION_EXPIRATION)?;
            Some((s.metadata.name.clone()?, exp.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cluster_gets_every_secret_once() {
        let mut c: Cluster = serde_saphyr::from_str(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec: {instances: 3, enableSuperuserAccess: true}\n",
        )
        .expect("parses");
        c.metadata.uid = Some("u".into());
        let made = due(&c, &BTreeMap::new(), 1_780_000_000_000).expect("secrets");
        let names: Vec<String> = made
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            vec![
                "pg-instance-passwords",
                "pg-app",
                "pg-superuser",
                "pg-ca",
                "pg-server",
                "pg-replication",
                "pg-operator-client"
            ]
        );
        let app = &made[1];
        assert!(
            value(app, "uri")
                .expect("uri")
                .starts_with("postgresql://app:")
        );
        assert!(
            value(app, "uri")
                .expect("uri")
                .contains("@pg-rw.db:5432/app")
        );
        let existing: BTreeMap<String, Secret> = made
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), s.clone()))
            .collect();
        assert!(
            due(&c, &existing, 1_780_000_000_000)
                .expect("none")
                .is_empty()
        );
        let exp = expirations(made.iter());
        assert_eq!(exp.len(), 4, "{exp:?}");
        assert!(exp["pg-server"].starts_with("2026-"), "{exp:?}");
        // 85 days later the leaves and the CA are within a week of expiring.
        let later = 1_780_000_000_000 + 85 * 86_400_000;
        let renewals = due(&c, &existing, later).expect("renewals");
        let renewed: Vec<String> = renewals
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(
            renewed,
            vec!["pg-ca", "pg-server", "pg-replication", "pg-operator-client"]
        );
        // The operator reaches instances with its certificate, then (a pod that has not
        // seen the renewal yet) with the one it replaced.
        let operator = &existing["pg-operator-client"];
        assert_eq!(
            status_access(&c, &existing["pg-ca"], operator)
                .expect("access")
                .len(),
            1
        );
        let renewed_operator = &renewals[3];
        assert_eq!(
            value(renewed_operator, "previous.crt").expect("previous"),
            value(operator, "tls.crt").expect("old")
        );
        assert_ne!(
            value(renewed_operator, "ca.crt").expect("new CA"),
            value(operator, "ca.crt").expect("old CA")
        );
        assert_eq!(
            status_access(&c, &existing["pg-ca"], renewed_operator)
                .expect("access")
                .len(),
            2
        );
        // A cluster made before status tokens gets one; its passwords stay.
        let mut old = existing.clone();
        let passwords = old.get_mut("pg-instance-passwords").expect("passwords");
        passwords
            .data
            .as_mut()
            .expect("data")
            .remove("status-token");
        let upgraded = due(&c, &old, 1_780_000_000_000).expect("upgrade");
        assert_eq!(upgraded.len(), 1);
        assert!(value(&upgraded[0], "status-token").is_ok());
        assert_eq!(
            value(&upgraded[0], "app-password").expect("kept"),
            value(&existing["pg-instance-passwords"], "app-password").expect("app")
        );
        let client = client_certificate(
            &c,
            &existing["pg-ca"],
            "pg-alice",
            "alice",
            1_780_000_000_000,
        )
        .expect("client cert");
        assert!(
            value(&client, "tls.crt")
                .expect("crt")
                .contains("BEGIN CERTIFICATE")
        );
    }

    #[test]
    fn azure_credentials_come_from_their_secret_and_google_is_refused_saying_so() {
        let c: Cluster = serde_saphyr::from_str(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec:\n  instances: 1\n  backup:\n    barmanObjectStore:\n      destinationPath: https://acct.blob.core.windows.net/backups/pg\n      azureCredentials:\n        connectionString: {name: azure, key: CS}\n",
        )
        .expect("parses");
        assert_eq!(archive_sources(&c), vec!["azure".to_owned()]);
        let azure = secret(
            &c,
            "azure",
            "Opaque",
            BTreeMap::from([(
                "CS".to_owned(),
                "AccountName=acct;AccountKey=a2V5".to_owned(),
            )]),
            BTreeMap::new(),
        );
        let user = BTreeMap::from([("azure".to_owned(), azure)]);
        let made = archive(&c, &user).expect("made").expect("archives");
        let config: cnpg_instance::archive::ArchiveConfig =
            serde_json::from_str(&value(&made, "archive.json").expect("json")).expect("config");
        assert_eq!(
            config.azure.and_then(|a| a.connection_string).as_deref(),
            Some("AccountName=acct;AccountKey=a2V5")
        );
        let mut google = c.clone();
        if let Some(store) = google
            .spec
            .backup
            .as_mut()
            .and_then(|b| b.barman_object_store.as_mut())
        {
            store.azure_credentials = None;
            store.destination_path = "gs://bucket/pg".into();
            store.google_credentials = Some(Default::default());
        }
        let e = archive(&google, &user).expect_err("not yet").to_string();
        assert!(
            e.contains("googleCredentials") && e.contains("not supported yet"),
            "{e}"
        );
    }

    #[test]
    fn the_archive_configuration_comes_from_the_spec_and_the_secrets_it_names() {
        let c: Cluster = serde_saphyr::from_str(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec:\n  instances: 3\n  backup:\n    barmanObjectStore:\n      destinationPath: s3://bucket/path\n      endpointURL: http://127.0.0.1:9000\n      s3Credentials:\n        accessKeyId: {name: creds, key: ID}\n        secretAccessKey: {name: creds, key: SECRET}\n      wal: {compression: gzip, maxParallel: 4}\n",
        )
        .expect("parses");
        assert_eq!(archive_sources(&c), vec!["creds".to_owned()]);
        let missing = archive(&c, &BTreeMap::new())
            .expect_err("no credentials")
            .to_string();
        assert!(
            missing.contains("creds") && missing.contains("ID"),
            "{missing}"
        );
        let creds = secret(
            &c,
            "creds",
            "Opaque",
            BTreeMap::from([
                ("ID".to_owned(), "key-id".to_owned()),
                ("SECRET".to_owned(), "key-secret".to_owned()),
            ]),
            BTreeMap::new(),
        );
        let user = BTreeMap::from([("creds".to_owned(), creds)]);
        let made = archive(&c, &user).expect("made").expect("archives");
        assert_eq!(made.metadata.name.as_deref(), Some("pg-archive"));
        let config: cnpg_instance::archive::ArchiveConfig =
            serde_json::from_str(&value(&made, "archive.json").expect("json")).expect("config");
        assert_eq!(config.server_name, "pg");
        assert_eq!(config.max_parallel, 4);
        assert_eq!(
            config.s3.as_ref().map(|s| s.secret_access_key.as_str()),
            Some("key-secret")
        );
        // zstd is one of barman-cloud's WAL compressions, not one of its backups'.
        let mut zstd = c.clone();
        fn store(c: &mut Cluster) -> &mut cnpg_core::api::barman::BarmanObjectStoreConfiguration {
            c.spec
                .backup
                .as_mut()
                .and_then(|b| b.barman_object_store.as_mut())
                .expect("store")
        }
        if let Some(w) = store(&mut zstd).wal.as_mut() {
            w.compression = Some(cnpg_core::api::barman::CompressionType::Zstd);
        }
        let made = archive(&zstd, &user).expect("made").expect("archives");
        let config: cnpg_instance::archive::ArchiveConfig =
            serde_json::from_str(&value(&made, "archive.json").expect("json")).expect("config");
        assert_eq!(
            config.compression,
            Some(cnpg_instance::archive::Compression::Zstd)
        );
        store(&mut zstd).data = Some(cnpg_core::api::barman::DataBackupConfiguration {
            compression: Some(cnpg_core::api::barman::CompressionType::Zstd),
            ..Default::default()
        });
        let e = archive(&zstd, &user).expect_err("WAL only").to_string();
        assert!(
            e.contains("data.compression") && e.contains("gzip, bzip2 or snappy"),
            "{e}"
        );
    }
}
