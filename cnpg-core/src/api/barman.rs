//! Barman Cloud object-store settings (`barmanObjectStore`), used for WAL archiving and base
//! backups (deprecated in-tree upstream, still accepted) and as a recovery source.

use super::common::SecretKeySelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where and how Barman Cloud stores backups and WAL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BarmanObjectStoreConfiguration {
    /// The path where to store the backup (e.g. `s3://bucket/path/to/folder`).
    pub destination_path: String,
    /// Endpoint to upload data to the cloud provider, when not the provider's default.
    #[serde(
        default,
        rename = "endpointURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_url: Option<String>,
    /// CA bundle used to verify the endpoint's certificate.
    #[serde(
        default,
        rename = "endpointCA",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ca: Option<SecretKeySelector>,
    /// The server name in the object store (defaults to the cluster name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Credentials for AWS S3 and compatible stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_credentials: Option<S3Credentials>,
    /// Credentials for Azure Blob Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_credentials: Option<AzureCredentials>,
    /// Credentials for Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_credentials: Option<GoogleCredentials>,
    /// How WAL files are archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalBackupConfiguration>,
    /// How base backups are taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataBackupConfiguration>,
    /// Tags added to every object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Tags added to history files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history_tags: BTreeMap<String, String>,
}

/// S3 credentials: either keys from Secrets or the pod's IAM role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// The access key id.
    #[serde(
        default,
        rename = "accessKeyId",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_key_id: Option<SecretKeySelector>,
    /// The secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretKeySelector>,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<SecretKeySelector>,
    /// The session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretKeySelector>,
    /// Use the IAM role of the pod instead of keys.
    #[serde(
        default,
        rename = "inheritFromIAMRole",
        skip_serializing_if = "Option::is_none"
    )]
    pub inherit_from_iam_role: Option<bool>,
}

/// Azure Blob Storage credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureCredentials {
    /// The connection string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<SecretKeySelector>,
    /// The storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<SecretKeySelector>,
    /// The storage account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_key: Option<SecretKeySelector>,
    /// A shared access signature token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_sas_token: Option<SecretKeySelector>,
    /// Use Azure AD workload identity.
    #[serde(
        default,
        rename = "inheritFromAzureAD",
        skip_serializing_if = "Option::is_none"
    )]
    pub inherit_from_azure_ad: Option<bool>,
    /// Use the default Azure credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_default_azure_credentials: Option<bool>,
}

/// Google Cloud Storage credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleCredentials {
    /// The service account JSON key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credentials: Option<SecretKeySelector>,
    /// Use the GKE workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gke_environment: Option<bool>,
}

/// Compression applied by Barman Cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    /// bzip2
    Bzip2,
    /// gzip
    Gzip,
    /// lz4
    Lz4,
    /// snappy
    Snappy,
    /// xz
    Xz,
    /// zstd
    Zstd,
}

/// Server-side encryption applied by the object store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EncryptionType {
    /// AES-256.
    #[serde(rename = "AES256")]
    Aes256,
    /// AWS KMS.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// WAL archiving settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalBackupConfiguration {
    /// Compression of WAL files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionType>,
    /// Encryption of WAL files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionType>,
    /// How many WAL files are archived or restored in parallel (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_parallel: Option<i32>,
    /// Extra arguments for `barman-cloud-wal-archive`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archive_additional_command_args: Vec<String>,
    /// Extra arguments for `barman-cloud-wal-restore`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_additional_command_args: Vec<String>,
}

/// Base backup settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataBackupConfiguration {
    /// Compression of backup files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionType>,
    /// Encryption of backup files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionType>,
    /// Parallel upload jobs (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub jobs: Option<i32>,
    /// Request an immediate checkpoint at backup start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_checkpoint: Option<bool>,
    /// Extra arguments for `barman-cloud-backup`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_command_args: Vec<String>,
}
