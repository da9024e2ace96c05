//! Which object store a `destinationPath` names and how to reach it, reading the manifest's
//! fields as barman-cloud reads them:
//!
//! - `s3://BUCKET[/PATH]`: AWS S3, or with `endpointURL` any S3-compatible store;
//! - `https://ACCOUNT.blob.core.windows.net/CONTAINER[/PATH]`: Azure Blob Storage; any other
//!   `http[s]://HOST[:PORT]/ACCOUNT/CONTAINER[/PATH]` is an Azure-compatible endpoint such as
//!   Azurite, the account first in the path;
//! - `file:///DIR`: a directory, our extension for the local platform.
//!
//! `gs://` (Google Cloud Storage) is refused, saying so: no server speaking its API that
//! object_store's client works with installs here (gcp-storage-emulator answers uploads
//! without an ETag), and an untested client is not one to trust with WAL.
//!
//! Opening makes no request. Credentials come from what the operator resolved out of the
//! Secrets the manifest names, else from the environment (an IAM role, Azure AD workload
//! identity), as upstream's `inheritFrom…` settings ask.

use crate::compression::Compression;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where and how to archive: `spec.backup.barmanObjectStore` with its Secrets resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveConfig {
    /// `destinationPath`: `s3://BUCKET[/PATH]`, an Azure container's URL, or (our
    /// extension, for the local platform) `file:///DIR` ([`crate::store`]).
    pub destination_path: String,
    /// `serverName` (the cluster's name by default).
    pub server_name: String,
    /// `endpointURL`, for S3-compatible stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// `endpointCA`: a PEM file of the CA the endpoint's certificate is signed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ca: Option<PathBuf>,
    /// `wal.compression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// `wal.encryption`: `AES256` or `aws:kms` (server-side encryption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// `wal.maxParallel`: segments uploaded at once (1: only the one asked for).
    #[serde(default = "one")]
    pub max_parallel: usize,
    /// `s3Credentials`; none: the environment's (`AWS_*`, an instance role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Credentials>,
    /// `azureCredentials`, for an Azure destination; none: the environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureCredentials>,
    /// `data`: how base backups are written ([`crate::backup`]).
    #[serde(default)]
    pub data: DataConfig,
    /// `spec.backup.retentionPolicy` (`30d`): enforced after each completed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<String>,
}

/// Base backups' settings (`barmanObjectStore.data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConfig {
    /// `data.compression`: the tarballs are `data.tar.gz` instead of `data.tar`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// `data.encryption`: `AES256` or `aws:kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// `data.jobs`: parts uploaded at once (upstream's default, 2).
    #[serde(default = "two")]
    pub jobs: usize,
    /// `data.immediateCheckpoint`: start with a fast checkpoint instead of a spread one.
    #[serde(default)]
    pub immediate_checkpoint: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            compression: None,
            encryption: None,
            jobs: two(),
            immediate_checkpoint: false,
        }
    }
}

fn one() -> usize {
    1
}

fn two() -> usize {
    2
}

/// Archiving failed; PostgreSQL keeps the segment and retries.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The configuration cannot be used.
    #[error("archive configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store refused or could not be reached.
    #[error("{action} {location}: {}", store_answer(source, location))]
    Store {
        /// What was being done.
        action: &'static str,
        /// Where.
        location: String,
        /// Why (object_store's error: never credentials).
        source: Box<object_store::Error>,
    },
    /// A new cluster's first archive found WAL already there.
    #[error(
        "{location} already holds WAL, from another cluster or an earlier one of this name: \
         archiving there would mix two histories; give this cluster another destinationPath \
         or serverName, or empty that one"
    )]
    NotEmpty {
        /// The WAL folder.
        location: String,
    },
    /// Not a WAL file name PostgreSQL archives.
    #[error("{0:?} is not a WAL segment, history, backup label or partial file name")]
    BadName(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Io { path, source }
}

/// object_store's error on one line, with S3's own error code and message in place of the
/// XML body they come in, and what to check when the store at `location` does not take the
/// credentials.
fn store_answer(e: &object_store::Error, location: &str) -> String {
    let text = e.to_string();
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{t}>"))?;
        Some(text[start..start + len].to_owned())
    };
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let field = if location.starts_with("s3://") {
        "s3Credentials"
    } else {
        "azureCredentials"
    };
    let check =
        format!(" (check the credentials in barmanObjectStore.{field} and the Secret they name)");
    let check = check.as_str();
    let refused = matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    );
    match (tag("Code"), text.find("<?xml")) {
        (Some(code), Some(xml)) => {
            let hint = match code.as_str() {
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidToken"
                | "ExpiredToken"
                | "AccessDenied" => check,
                _ if refused => check,
                _ => "",
            };
            format!(
                "{} {code}: {}{hint}",
                one_line(text[..xml].trim_end().trim_end_matches(':')),
                one_line(&tag("Message").unwrap_or_default())
            )
        }
        // A refusal without a body (the answer to a HEAD request).
        _ if refused => format!("{}{check}", one_line(&text)),
        _ => one_line(&text),
    }
}

pub(crate) fn store_err(
    action: &'static str,
    location: impl std::fmt::Display,
) -> impl FnOnce(object_store::Error) -> ArchiveError {
    let location = location.to_string();
    move |e| ArchiveError::Store {
        action,
        location,
        source: Box::new(e),
    }
}

/// S3 credentials (`s3Credentials`), resolved from the Secrets the manifest names.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// `accessKeyId`.
    pub access_key_id: String,
    /// `secretAccessKey`.
    pub secret_access_key: String,
    /// `sessionToken`, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Azure credentials (`azureCredentials`), resolved; none of them set: the environment's
/// (`inheritFromAzureAD`, `useDefaultAzureCredentials`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureCredentials {
    /// `connectionString`: its `AccountKey` or `SharedAccessSignature` signs the requests
    /// (the endpoint is the one `destinationPath` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
    /// `storageAccount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<String>,
    /// `storageKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_key: Option<String>,
    /// `storageSasToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_sas_token: Option<String>,
}

impl std::fmt::Debug for AzureCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureCredentials")
            .field("storage_account", &self.storage_account)
            .finish_non_exhaustive()
    }
}

/// An opened store, the path inside it the destination starts at, and where keys start
/// for messages (`s3://BUCKET`, `https://ACCOUNT.blob.core.windows.net/CONTAINER`, …).
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub base: String,
    pub root: String,
}

/// Opens what `config.destination_path` names (no request is made).
pub(crate) fn open(config: &ArchiveConfig) -> Result<Opened, ArchiveError> {
    let url = config.destination_path.trim_end_matches('/').to_owned();
    let bad = |why: &str| ArchiveError::Config(format!("destinationPath {url:?}: {why}"));
    let elsewhere = |what: &str, hint: &str| {
        ArchiveError::Config(format!(
            "{what} is for S3 and destinationPath {url:?} is not an s3:// one: remove it ({hint})"
        ))
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket: write s3://BUCKET[/PATH]"));
        }
        return Ok(Opened {
            store: Arc::new(s3(config, bucket)?),
            base: path.to_owned(),
            root: format!("s3://{bucket}"),
        });
    }
    if let Some(dir) = url.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(bad("write file:///ABSOLUTE/PATH"));
        }
        std::fs::create_dir_all(dir).map_err(io(Path::new(dir)))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(store_err("opening", &url))?;
        return Ok(Opened {
            store: Arc::new(fs),
            base: String::new(),
            root: url.clone(),
        });
    }
    // What follows is not S3: its settings would be silently ignored.
    if config.endpoint_url.is_some() {
        return Err(elsewhere(
            "endpointURL",
            "an Azure-compatible endpoint goes in destinationPath: \
             http://HOST:PORT/ACCOUNT/CONTAINER/PATH",
        ));
    }
    if config.encryption.is_some() {
        return Err(elsewhere(
            "encryption (wal.encryption, data.encryption)",
            "Azure encrypts what it stores itself",
        ));
    }
    if url.starts_with("gs://") {
        return Err(bad(
            "Google Cloud Storage is not supported yet (no server speaking its API runs \
             here to test against): use s3:// or an Azure container",
        ));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return azure(config, &url);
    }
    Err(bad(
        "write s3://BUCKET/PATH or https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH \
         (or file:///DIR on the local platform)",
    ))
}

/// Timeouts, and the CA `endpointCA` names.
fn client_options(config: &ArchiveConfig) -> Result<object_store::ClientOptions, ArchiveError> {
    let mut client =
        object_store::ClientOptions::new().with_connect_timeout(std::time::Duration::from_secs(5));
    if let Some(ca) = &config.endpoint_ca {
        let pem = std::fs::read(ca).map_err(io(ca))?;
        let cert = object_store::Certificate::from_pem(&pem)
            .map_err(|e| ArchiveError::Config(format!("endpointCA {}: {e}", ca.display())))?;
        client = client.with_root_certificate(cert);
    }
    Ok(client)
}

fn s3(config: &ArchiveConfig, bucket: &str) -> Result<object_store::aws::AmazonS3, ArchiveError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    // The environment first (AWS_* variables, as barman-cloud's boto3 reads them), then
    // what the manifest gives.
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry())
        // Client options first: setting them replaces any set before (allow_http included).
        .with_client_options(client_options(config)?);
    if let Some(creds) = &config.s3 {
        b = b
            .with_access_key_id(&creds.access_key_id)
            .with_secret_access_key(&creds.secret_access_key);
        if let Some(t) = &creds.session_token {
            b = b.with_token(t);
        }
        if let Some(r) = &creds.region {
            b = b.with_region(r);
        }
    }
    if let Some(endpoint) = &config.endpoint_url {
        b = b
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    match config.encryption.as_deref() {
        None => {}
        // barman-cloud's `--encryption` values, which are S3's header values.
        Some(kind @ ("AES256" | "aws:kms")) => {
            let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                .parse()
                .map_err(|e| ArchiveError::Config(format!("wal.encryption: {e}")))?;
            b = b.with_config(key, kind);
        }
        Some(other) => {
            return Err(ArchiveError::Config(format!(
                "wal.encryption {other:?}: give AES256 or aws:kms"
            )));
        }
    }
    b.build()
        .map_err(|e| ArchiveError::Config(format!("destinationPath s3://{bucket}: {e}")))
}

/// The `KEY=VALUE;…` pairs of an Azure connection string.
fn connection_string(s: &str) -> Vec<(&str, &str)> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn azure(config: &ArchiveConfig, url: &str) -> Result<Opened, ArchiveError> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let bad = |why: &str| ArchiveError::Config(format!("destinationPath {url:?}: {why}"));
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let hostname = host.split(':').next().unwrap_or(host);
    // Azure's own endpoint names the account in the host; any other endpoint (Azurite, a
    // compatible store) in the path, before the container.
    let (account, endpoint) = match hostname.strip_suffix(".blob.core.windows.net") {
        Some(account) => (account.to_owned(), None),
        None => {
            let account = parts.next().ok_or_else(|| {
                bad(
                    "no account: write http[s]://HOST[:PORT]/ACCOUNT/CONTAINER[/PATH] \
                     (or https://ACCOUNT.blob.core.windows.net/CONTAINER[/PATH])",
                )
            })?;
            (
                account.to_owned(),
                Some(format!("{scheme}://{host}/{account}")),
            )
        }
    };
    let container = parts.next().ok_or_else(|| {
        bad("no container: write https://ACCOUNT.blob.core.windows.net/CONTAINER[/PATH]")
    })?;
    let base = parts.collect::<Vec<_>>().join("/");
    let mut client = client_options(config)?;
    if scheme == "http" {
        client = client.with_allow_http(true);
    }
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_account(&account)
        .with_container_name(container)
        .with_retry(retry())
        .with_client_options(client);
    if let Some(e) = &endpoint {
        b = b.with_endpoint(e.clone());
    }
    let creds = config.azure.clone().unwrap_or_default();
    let mut key = creds.storage_key.clone();
    let mut sas = creds.storage_sas_token.clone();
    if let Some(cs) = &creds.connection_string {
        for (k, v) in connection_string(cs) {
            match k {
                "AccountKey" => key = Some(v.to_owned()),
                "SharedAccessSignature" => sas = Some(v.to_owned()),
                _ => {}
            }
        }
        if key.is_none() && sas.is_none() {
            return Err(ArchiveError::Config(
                "azureCredentials.connectionString: it has neither AccountKey nor \
                 SharedAccessSignature"
                    .into(),
            ));
        }
    }
    if let Some(k) = key {
        b = b.with_access_key(k);
    } else if let Some(t) = sas {
        b = b.with_config(AzureConfigKey::SasKey, t.trim_start_matches('?'));
    }
    let store = b.build().map_err(|e| bad(&e.to_string()))?;
    let root = match &endpoint {
        Some(e) => format!("{e}/{container}"),
        None => format!("https://{account}.blob.core.windows.net/{container}"),
    };
    Ok(Opened {
        store: Arc::new(store),
        base,
        root,
    })
}

/// Retries of a failed request: a few, within 20 s. object_store's default (ten, within
/// three minutes) held an `archive_command` for minutes when the store was unreachable:
/// PostgreSQL retries a failed segment itself, and a failure must show at once.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dest: &str) -> ArchiveConfig {
        serde_json::from_value(serde_json::json!({
            "destinationPath": dest,
            "serverName": "pg",
        }))
        .expect("config")
    }

    #[test]
    fn each_kind_of_destination_opens_where_barman_cloud_would_write() {
        let root = |dest: &str| open(&config(dest)).map(|o| (o.root, o.base));
        assert_eq!(
            root("s3://b/some/path").expect("s3"),
            ("s3://b".to_owned(), "some/path".to_owned())
        );
        assert_eq!(
            root("https://acct.blob.core.windows.net/c/p/q").expect("azure"),
            (
                "https://acct.blob.core.windows.net/c".to_owned(),
                "p/q".to_owned()
            )
        );
        assert_eq!(
            root("http://127.0.0.1:10000/devstoreaccount1/c/p").expect("azurite"),
            (
                "http://127.0.0.1:10000/devstoreaccount1/c".to_owned(),
                "p".to_owned()
            )
        );
    }

    #[test]
    fn what_cannot_be_reached_says_what_to_write() {
        let err = |cfg: ArchiveConfig| match open(&cfg) {
            Ok(_) => panic!("{} opened", cfg.destination_path),
            Err(e) => e.to_string(),
        };
        let e = err(config("https://acct.blob.core.windows.net"));
        assert!(e.contains("no container"), "{e}");
        let e = err(config("http://127.0.0.1:10000"));
        assert!(e.contains("no account"), "{e}");
        let e = err(config("ftp://x/y"));
        assert!(e.contains("write s3://BUCKET/PATH"), "{e}");
        let e = err(config("gs://b/p"));
        assert!(
            e.contains("Google Cloud Storage is not supported yet"),
            "{e}"
        );
        let e = err(ArchiveConfig {
            endpoint_url: Some("http://127.0.0.1:9000".into()),
            ..config("https://acct.blob.core.windows.net/c")
        });
        assert!(e.contains("endpointURL is for S3"), "{e}");
        let e = err(ArchiveConfig {
            encryption: Some("AES256".into()),
            ..config("https://acct.blob.core.windows.net/c")
        });
        assert!(e.contains("encryption"), "{e}");
        let e = err(ArchiveConfig {
            azure: Some(AzureCredentials {
                connection_string: Some("AccountName=a;BlobEndpoint=http://x".into()),
                ..Default::default()
            }),
            ..config("https://a.blob.core.windows.net/c")
        });
        assert!(e.contains("neither AccountKey"), "{e}");
    }

    #[test]
    fn connection_strings_are_read_by_key() {
        assert_eq!(
            connection_string(
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k==;BlobEndpoint=http://h:1/a;"
            ),
            [
                ("DefaultEndpointsProtocol", "http"),
                ("AccountName", "a"),
                ("AccountKey", "k=="),
                ("BlobEndpoint", "http://h:1/a")
            ]
        );
    }
}
