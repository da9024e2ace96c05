//! The rules CloudNativePG's admission webhook enforces, as pure functions.
//!
//! Each `validate()` returns **every** problem at once (an empty list means valid), each
//! with the field path and a sentence saying what to do, so a user fixes a manifest in one
//! round instead of one error per `kubectl apply`. Nothing here reads the cluster: rules
//! that need other objects (does the referenced Backup exist?) belong to the reconciler.

use super::backup::{Backup, BackupSpec, ScheduledBackup};
use super::cluster::{
    BootstrapConfiguration, Cluster, ClusterSpec, DataDurability, ImportType, ServiceSelectorType,
    StorageConfiguration, SynchronousReplicaConfiguration,
};
use super::common::{BackupMethod, BackupPluginConfiguration, OnlineConfiguration};
use super::database::{Database, OptionSpec, UsageSpec};
use super::image_catalog::{
    CatalogComponentImage, CatalogImage, ClusterImageCatalog, ImageCatalog,
};
use super::pooler::Pooler;
use crate::quantity::Quantity;
use std::collections::BTreeSet;
use std::fmt;

/// What kind of problem a [`FieldError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// A field the resource does not have.
    UnknownField,
    /// A value of the wrong type (a string where a number belongs, ...).
    WrongType,
    /// A required field is missing.
    Required,
    /// A value the rules forbid.
    Invalid,
}

impl ErrorKind {
    /// A short label for messages.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::UnknownField => "unknown field",
            ErrorKind::WrongType => "wrong type",
            ErrorKind::Required => "required",
            ErrorKind::Invalid => "invalid",
        }
    }
}

/// One problem in a manifest: where it is, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.postgresql.parameters.port` or
    /// `spec.externalClusters[1].name`.
    pub path: String,
    /// The kind of problem.
    pub kind: ErrorKind,
    /// What is wrong and what to do, as a sentence.
    pub message: String,
}

impl FieldError {
    /// A rule violation at `path`.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Invalid, message)
    }

    /// A missing required field at `path`.
    pub fn required(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Required, message)
    }

    /// A problem of any kind at `path`.
    pub fn new(path: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.kind.label(), self.message)
    }
}

/// A resource that can check itself against upstream's admission rules.
pub trait Validate {
    /// Every rule violation, in field order; empty when the resource is valid.
    fn validate(&self) -> Vec<FieldError>;
}

/// The lowest PostgreSQL major version CloudNativePG supports.
pub const MIN_POSTGRES_MAJOR: u32 = 13;

pub use crate::parameters::fixed_parameter;

impl Validate for Cluster {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(name) = &self.metadata.name {
            check_cluster_name(name, &mut errs);
        }
        validate_cluster_spec(&self.spec, &mut errs);
        check_recovery_destination(
            self.metadata.name.as_deref().unwrap_or_default(),
            &self.spec,
            &mut errs,
        );
        errs
    }
}

/// A recovered cluster writes a history of its own: it must not archive where the backups
/// and WAL it recovers from are (upstream refuses the same).
fn check_recovery_destination(cluster_name: &str, spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(rec) = spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) else {
        return;
    };
    // The new cluster archives into its own place, never over the history it came from.
    if let (Some(src), Some(own)) = (
        rec.source.as_ref().and_then(|s| {
            spec.external_clusters
                .iter()
                .find(|e| &e.name == s)
                .and_then(|e| e.barman_object_store.as_ref().map(|b| (b, e.name.clone())))
        }),
        spec.backup
            .as_ref()
            .and_then(|b| b.barman_object_store.as_ref()),
    ) {
        let (store, name) = src;
        let from = (
            store.destination_path.trim_end_matches('/'),
            store.server_name.clone().unwrap_or(name),
        );
        let to = (
            own.destination_path.trim_end_matches('/'),
            own.server_name
                .clone()
                .unwrap_or_else(|| cluster_name.to_owned()),
        );
        if from == to {
            errs.push(FieldError::invalid(
                "spec.backup.barmanObjectStore",
                format!(
                    "archives into {}/{}, where the recovery source's backups and WAL are: \
                     a recovered cluster writes a history of its own; give it another \
                     destinationPath or serverName",
                    to.0, to.1
                ),
            ));
        }
    }
}

/// A Cluster name becomes pod, PVC, Service and Secret names (`<name>-rw`,
/// `<name>-superuser`, `<name>-12`...), so it must be a DNS-1035 label with room to spare.
fn check_cluster_name(name: &str, errs: &mut Vec<FieldError>) {
    const MAX: usize = 50;
    if !is_dns1035_label(name) {
        errs.push(FieldError::invalid(
            "metadata.name",
            format!(
                "{name:?} is not a valid cluster name; use lowercase letters, digits and '-', \
                 starting with a letter and ending with a letter or digit"
            ),
        ));
    } else if name.len() > MAX {
        errs.push(FieldError::invalid(
            "metadata.name",
            format!(
                "{name:?} is {} characters long; use at most {MAX}, as the operator derives \
                 longer object names from it",
                name.len()
            ),
        ));
    }
}

fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

fn validate_cluster_spec(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    if spec.instances < 1 {
        errs.push(FieldError::invalid(
            "spec.instances",
            format!(
                "{} is not allowed; a cluster needs at least 1 instance",
                spec.instances
            ),
        ));
    }
    check_legacy_sync(spec, errs);
    if let Some(sync) = spec
        .postgresql
        .as_ref()
        .and_then(|p| p.synchronous.as_ref())
    {
        check_synchronous(spec, sync, errs);
    }
    check_parameters(spec, errs);
    check_bootstrap(spec, errs);
    check_image(spec, errs);
    check_monitoring(spec, errs);
    check_storage_required("spec.storage", spec.storage.as_ref(), errs);
    if let Some(wal) = &spec.wal_storage {
        check_storage_required("spec.walStorage", Some(wal), errs);
    }
    check_tablespaces(spec, errs);
    check_delays(spec, errs);
    check_backup(spec, errs);
    check_replication_slots(spec, errs);
    check_managed(spec, errs);
    check_external_clusters(spec, errs);
    check_replica(spec, errs);
    check_probes(spec, errs);
    check_lease(spec, errs);
    check_certificates(spec, errs);
    check_misc(spec, errs);
}

/// A user's certificate needs the CA that verifies it: clients check the server's with
/// `serverCASecret`, PostgreSQL checks the replication one with `clientCASecret`.
fn check_certificates(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(c) = &spec.certificates else {
        return;
    };
    let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if given(&c.server_tls_secret) && !given(&c.server_ca_secret) {
        errs.push(FieldError::invalid(
            "spec.certificates.serverCASecret",
            "is required with serverTLSSecret: name the Secret holding the CA (ca.crt) that \
             signed the server certificate, so clients and standbys can verify it",
        ));
    }
    if given(&c.replication_tls_secret) && !given(&c.client_ca_secret) {
        errs.push(FieldError::invalid(
            "spec.certificates.clientCASecret",
            "is required with replicationTLSSecret: name the Secret holding the CA (ca.crt) \
             that signed the replication certificate, so PostgreSQL can verify it",
        ));
    }
}

fn check_legacy_sync(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let (min, max) = (spec.min_sync_replicas, spec.max_sync_replicas);
    if min < 0 {
        errs.push(FieldError::invalid(
            "spec.minSyncReplicas",
            format!("{min} is negative; use 0 or more"),
        ));
    }
    if max < 0 {
        errs.push(FieldError::invalid(
            "spec.maxSyncReplicas",
            format!("{max} is negative; use 0 or more"),
        ));
    }
    if min > max {
        errs.push(FieldError::invalid(
            "spec.minSyncReplicas",
            format!(
                "{min} is greater than maxSyncReplicas ({max}); set minSyncReplicas <= maxSyncReplicas"
            ),
        ));
    }
    if max > 0 && max >= spec.instances {
        errs.push(FieldError::invalid(
            "spec.maxSyncReplicas",
            format!(
                "{max} must be less than the number of instances ({}); there are only {} \
                 replicas to wait for",
                spec.instances,
                (spec.instances - 1).max(0)
            ),
        ));
    }
}

fn check_synchronous(
    spec: &ClusterSpec,
    sync: &SynchronousReplicaConfiguration,
    errs: &mut Vec<FieldError>,
) {
    const P: &str = "spec.postgresql.synchronous";
    if spec.min_sync_replicas > 0 || spec.max_sync_replicas > 0 {
        errs.push(FieldError::invalid(
            P,
            "cannot be used together with minSyncReplicas/maxSyncReplicas; remove one of the two",
        ));
    }
    if sync.number < 1 {
        errs.push(FieldError::invalid(
            format!("{P}.number"),
            format!(
                "{} is not allowed; wait for at least 1 synchronous standby",
                sync.number
            ),
        ));
    }
    let external = (sync.standby_names_pre.len() + sync.standby_names_post.len()) as i64;
    if i64::from(sync.number) >= i64::from(spec.instances) + external {
        errs.push(FieldError::invalid(
            format!("{P}.number"),
            format!(
                "{} must be less than the number of instances ({}) plus the external standby \
                 names ({external}), otherwise no commit could ever be acknowledged",
                sync.number, spec.instances
            ),
        ));
    }
    if let Some(cap) = sync.max_standby_names_from_cluster
        && cap < 0
    {
        errs.push(FieldError::invalid(
            format!("{P}.maxStandbyNamesFromCluster"),
            format!("{cap} is negative; use 0 or more"),
        ));
    }
    if sync.data_durability == Some(DataDurability::Preferred) && external > 0 {
        errs.push(FieldError::invalid(
            format!("{P}.dataDurability"),
            "'preferred' cannot be combined with standbyNamesPre/standbyNamesPost; \
             use 'required' or remove the external names",
        ));
    }
    if !sync.pod_failure_domain_keys.is_empty() && !sync.node_failure_domain_keys.is_empty() {
        errs.push(FieldError::invalid(
            format!("{P}.nodeFailureDomainKeys"),
            "podFailureDomainKeys and nodeFailureDomainKeys are mutually exclusive; keep one",
        ));
    }
    if sync.failover_quorum == Some(true) && i64::from(sync.number) <= external {
        errs.push(FieldError::invalid(
            format!("{P}.failoverQuorum"),
            format!(
                "with number {} and {external} external standby names, no replica of this \
                 cluster is ever guaranteed to hold every commit, so failover could never be \
                 allowed; raise number above {external} or disable failoverQuorum",
                sync.number
            ),
        ));
    }
}

fn check_parameters(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(pg) = &spec.postgresql else { return };
    for (name, value) in &pg.parameters {
        let path = format!("spec.postgresql.parameters.{name}");
        if let Some(hint) = fixed_parameter(name) {
            let mut msg = format!("{name} is managed by the operator and cannot be set; remove it");
            if !hint.is_empty() {
                msg.push_str(" (");
                msg.push_str(hint);
                msg.push(')');
            }
            errs.push(FieldError::invalid(path, msg));
        } else if name == "wal_level" {
            let archiving = spec
                .backup
                .as_ref()
                .is_some_and(|b| b.barman_object_store.is_some())
                || spec.plugins.iter().any(|p| p.is_wal_archiver == Some(true));
            match value.as_str() {
                "replica" | "logical" => {}
                "minimal" if spec.instances == 1 && !archiving => {}
                "minimal" => errs.push(FieldError::invalid(
                    path,
                    "'minimal' cannot feed standbys or a WAL archive; use 'replica' or 'logical'",
                )),
                other => errs.push(FieldError::invalid(
                    path,
                    format!("{other:?} is not a wal_level; use 'replica' or 'logical'"),
                )),
            }
        }
    }
}

fn check_bootstrap(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(BootstrapConfiguration {
        initdb,
        recovery,
        pg_basebackup,
    }) = &spec.bootstrap
    else {
        return;
    };
    let chosen: Vec<&str> = [
        initdb.as_ref().map(|_| "initdb"),
        recovery.as_ref().map(|_| "recovery"),
        pg_basebackup.as_ref().map(|_| "pg_basebackup"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if chosen.len() > 1 {
        errs.push(FieldError::invalid(
            "spec.bootstrap",
            format!(
                "{} bootstrap methods are given ({}); keep exactly one",
                chosen.len(),
                chosen.join(", ")
            ),
        ));
    }
    if let Some(init) = initdb {
        const P: &str = "spec.bootstrap.initdb";
        if let Some(size) = init.wal_segment_size
            && (!(1..=1024).contains(&size) || size.count_ones() != 1)
        {
            errs.push(FieldError::invalid(
                format!("{P}.walSegmentSize"),
                format!("{size} MB is not allowed; use a power of 2 between 1 and 1024"),
            ));
        }
        if init.owner.is_some() && init.database.is_none() {
            errs.push(FieldError::required(
                format!("{P}.database"),
                "an owner is given without a database; name the database it owns",
            ));
        }
        if let Some(import) = &init.import {
            let ip = format!("{P}.import");
            if import.databases.is_empty() {
                errs.push(FieldError::required(
                    format!("{ip}.databases"),
                    "list the databases to import",
                ));
            }
            if import.type_ == ImportType::Microservice {
                if import.databases.len() > 1 {
                    errs.push(FieldError::invalid(
                        format!("{ip}.databases"),
                        "a microservice import takes exactly one database; use type monolith for several",
                    ));
                }
                if !import.roles.is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{ip}.roles"),
                        "roles can only be imported with type monolith",
                    ));
                }
            } else if import.databases.iter().any(|d| d == "*") && import.databases.len() > 1 {
                errs.push(FieldError::invalid(
                    format!("{ip}.databases"),
                    "'*' imports every database and cannot be combined with names",
                ));
            }
            check_external_ref(
                spec,
                &format!("{ip}.source.externalCluster"),
                &import.source.external_cluster,
                errs,
            );
        }
    }
    if let Some(rec) = recovery {
        const P: &str = "spec.bootstrap.recovery";
        let sources = [
            rec.backup.is_some(),
            rec.source.is_some(),
            rec.volume_snapshots.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources == 0 {
            errs.push(FieldError::required(
                P,
                "say what to recover from: backup, source or volumeSnapshots",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                P,
                "backup, source and volumeSnapshots are alternatives; keep exactly one",
            ));
        }
        if let Some(src) = &rec.source {
            check_external_ref(spec, &format!("{P}.source"), src, errs);
        }
        if let Some(t) = &rec.recovery_target {
            let target = crate::recovery::Target {
                time: t.target_time.clone(),
                lsn: t.target_lsn.clone(),
                xid: t.target_xid.clone(),
                name: t.target_name.clone(),
                immediate: t.target_immediate == Some(true),
                timeline: t.target_tli.clone(),
                exclusive: t.exclusive == Some(true),
            };
            for e in target.errors() {
                let field = if e.field == "recoveryTarget" {
                    format!("{P}.recoveryTarget")
                } else {
                    format!("{P}.recoveryTarget.{}", e.field)
                };
                errs.push(FieldError::invalid(field, e.why));
            }
        }
    }
    if let Some(pgb) = pg_basebackup {
        check_external_ref(
            spec,
            "spec.bootstrap.pg_basebackup.source",
            &pgb.source,
            errs,
        );
    }
}

fn check_external_ref(spec: &ClusterSpec, path: &str, name: &str, errs: &mut Vec<FieldError>) {
    if !spec.external_clusters.iter().any(|e| e.name == name) {
        let known: Vec<&str> = spec
            .external_clusters
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let listed = if known.is_empty() {
            "none is defined".to_owned()
        } else {
            format!("defined: {}", known.join(", "))
        };
        errs.push(FieldError::invalid(
            path,
            format!("{name:?} is not an entry of spec.externalClusters ({listed}); add it or fix the name"),
        ));
    }
}

/// The PostgreSQL major version an image tag names (`16`, `17.2`, `18.6-system-trixie`).
pub fn major_from_image_tag(image: &str) -> Option<u32> {
    let tag = image_tag(image)?;
    let digits: String = tag.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, t)| t)
}

fn check_monitoring(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(m) = &spec.monitoring else { return };
    if let Some(ttl) = &m.metrics_queries_ttl
        && crate::monitoring::milliseconds(ttl).is_none_or(|ms| ms < 0.0)
    {
        errs.push(FieldError::invalid(
            "spec.monitoring.metricsQueriesTTL",
            format!("{ttl:?} is not a duration; write one such as 30s, 1m or 0 (no caching)"),
        ));
    }
}

fn check_image(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    if spec.image_name.is_some() && spec.image_catalog_ref.is_some() {
        errs.push(FieldError::invalid(
            "spec.imageCatalogRef",
            "imageName and imageCatalogRef are mutually exclusive; keep one",
        ));
    }
    if let Some(image) = &spec.image_name {
        const P: &str = "spec.imageName";
        let has_digest = image.contains('@');
        match image_tag(image) {
            _ if image.trim().is_empty() || image.contains(char::is_whitespace) => errs.push(
                FieldError::invalid(P, format!("{image:?} is not an image reference")),
            ),
            Some("latest") => errs.push(FieldError::invalid(
                P,
                "the 'latest' tag cannot be used, as upgrades could not be detected; \
                 name a version tag such as 17.2 or a digest",
            )),
            None if !has_digest => errs.push(FieldError::invalid(
                P,
                format!(
                    "{image:?} has no tag, so it means 'latest' and upgrades could not be \
                     detected; name a version tag such as {image}:17.2"
                ),
            )),
            Some(_) if !has_digest => match major_from_image_tag(image) {
                Some(major) if major < MIN_POSTGRES_MAJOR => errs.push(FieldError::invalid(
                    P,
                    format!(
                        "PostgreSQL {major} is not supported; use {MIN_POSTGRES_MAJOR} or later"
                    ),
                )),
                Some(_) => {}
                None => errs.push(FieldError::invalid(
                    P,
                    format!(
                        "cannot read a PostgreSQL version from the tag of {image:?}; use a tag \
                         that starts with the version (e.g. 17.2-bookworm) or add a digest"
                    ),
                )),
            },
            _ => {}
        }
    }
    if let Some(cat) = &spec.image_catalog_ref {
        const P: &str = "spec.imageCatalogRef";
        if cat.kind != "ImageCatalog" && cat.kind != "ClusterImageCatalog" {
            errs.push(FieldError::invalid(
                format!("{P}.kind"),
                format!(
                    "{:?} is not a catalog kind; use ImageCatalog or ClusterImageCatalog",
                    cat.kind
                ),
            ));
        }
        if let Some(group) = &cat.api_group
            && group != super::common::GROUP
        {
            errs.push(FieldError::invalid(
                format!("{P}.apiGroup"),
                format!(
                    "{group:?} is not the catalog API group; use {}",
                    super::common::GROUP
                ),
            ));
        }
        if cat.major < MIN_POSTGRES_MAJOR as i32 {
            errs.push(FieldError::invalid(
                format!("{P}.major"),
                format!(
                    "PostgreSQL {} is not supported; use {MIN_POSTGRES_MAJOR} or later",
                    cat.major
                ),
            ));
        }
    }
}

fn check_storage_required(
    path: &str,
    storage: Option<&StorageConfiguration>,
    errs: &mut Vec<FieldError>,
) {
    let template_request = storage
        .and_then(|s| s.pvc_template.as_ref())
        .and_then(|t| t.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    match storage.and_then(|s| s.size.as_ref()) {
        Some(size) => match Quantity::parse(size) {
            Ok(q) if q.bytes() == 0 => errs.push(FieldError::invalid(
                format!("{path}.size"),
                "a volume of size 0 cannot hold data; give a size such as 1Gi",
            )),
            Ok(_) => {}
            Err(e) => errs.push(FieldError::invalid(
                format!("{path}.size"),
                format!("{e}; write a Kubernetes quantity such as 10Gi or 500Mi"),
            )),
        },
        None => match template_request {
            Some(req) => {
                if let Err(e) = Quantity::parse(&req) {
                    errs.push(FieldError::invalid(
                        format!("{path}.pvcTemplate.resources.requests.storage"),
                        format!("{e}; write a Kubernetes quantity such as 10Gi"),
                    ));
                }
            }
            None => errs.push(FieldError::required(
                format!("{path}.size"),
                "no size is configured; add size (e.g. 1Gi) or a storage request in pvcTemplate",
            )),
        },
    }
}

fn check_tablespaces(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (i, t) in spec.tablespaces.iter().enumerate() {
        let p = format!("spec.tablespaces[{i}]");
        if !seen.insert(t.name.as_str()) {
            errs.push(FieldError::invalid(
                format!("{p}.name"),
                format!(
                    "tablespace {:?} is defined twice; names must be unique",
                    t.name
                ),
            ));
        }
        let valid = !t.name.is_empty()
            && t.name.len() <= 63
            && t.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !t.name.as_bytes()[0].is_ascii_digit();
        if !valid {
            errs.push(FieldError::invalid(
                format!("{p}.name"),
                format!(
                    "{:?} is not a valid tablespace name; use lowercase letters, digits and '_' \
                     (not starting with a digit), at most 63 characters",
                    t.name
                ),
            ));
        } else if t.name.starts_with("pg_") {
            errs.push(FieldError::invalid(
                format!("{p}.name"),
                format!(
                    "{:?} starts with 'pg_', which PostgreSQL reserves; rename it",
                    t.name
                ),
            ));
        }
        check_storage_required(&format!("{p}.storage"), Some(&t.storage), errs);
    }
}

fn check_delays(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    for (name, v, min) in [
        ("startDelay", spec.start_delay, 1),
        ("stopDelay", spec.stop_delay, 1),
        ("switchoverDelay", spec.switchover_delay, 1),
        ("smartShutdownTimeout", spec.smart_shutdown_timeout, 0),
        ("failoverDelay", spec.failover_delay, 0),
    ] {
        if v < min {
            errs.push(FieldError::invalid(
                format!("spec.{name}"),
                format!("{v} seconds is not allowed; use {min} or more"),
            ));
        }
    }
    if let Some(t) = spec.liveness_probe_timeout
        && t < 1
    {
        errs.push(FieldError::invalid(
            "spec.livenessProbeTimeout",
            format!("{t} seconds is not allowed; use 1 or more"),
        ));
    }
}

fn check_backup(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let archivers: Vec<usize> = spec
        .plugins
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_wal_archiver == Some(true))
        .map(|(i, _)| i)
        .collect();
    if archivers.len() > 1 {
        errs.push(FieldError::invalid(
            format!("spec.plugins[{}].isWALArchiver", archivers[1]),
            "only one plugin can archive WAL; set isWALArchiver on a single plugin",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, p) in spec.plugins.iter().enumerate() {
        if p.name.is_empty() {
            errs.push(FieldError::required(
                format!("spec.plugins[{i}].name"),
                "name the plugin",
            ));
        } else if !seen.insert(p.name.as_str()) {
            errs.push(FieldError::invalid(
                format!("spec.plugins[{i}].name"),
                format!("plugin {:?} is listed twice; list each plugin once", p.name),
            ));
        }
    }
    let Some(backup) = &spec.backup else { return };
    if let Some(store) = &backup.barman_object_store {
        if !archivers.is_empty() {
            errs.push(FieldError::invalid(
                "spec.backup.barmanObjectStore",
                "WAL archiving is configured both here and by a plugin (isWALArchiver); keep one",
            ));
        }
        if store.destination_path.trim().is_empty() {
            errs.push(FieldError::required(
                "spec.backup.barmanObjectStore.destinationPath",
                "say where backups go, e.g. s3://bucket/path",
            ));
        }
        use super::barman::CompressionType;
        let wal_only = match store.data.as_ref().and_then(|d| d.compression) {
            Some(CompressionType::Lz4) => Some("lz4"),
            Some(CompressionType::Xz) => Some("xz"),
            Some(CompressionType::Zstd) => Some("zstd"),
            _ => None,
        };
        if let Some(c) = wal_only {
            errs.push(FieldError::invalid(
                "spec.backup.barmanObjectStore.data.compression",
                format!(
                    "{c} is for WAL only: barman-cloud writes and restores base backups with gzip, bzip2 or snappy; use one of those, or none"
                ),
            ));
        }
    }
    if let Some(policy) = &backup.retention_policy {
        let b = policy.as_bytes();
        let ok = b.len() >= 2
            && matches!(b[b.len() - 1], b'd' | b'w' | b'm')
            && b[0] != b'0'
            && b[..b.len() - 1].iter().all(u8::is_ascii_digit);
        if !ok {
            errs.push(FieldError::invalid(
                "spec.backup.retentionPolicy",
                format!("{policy:?} is not a retention policy; write a number of days, weeks or months such as 30d, 4w or 6m"),
            ));
        }
    }
}

fn check_replication_slots(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(slots) = &spec.replication_slots else {
        return;
    };
    if let Some(prefix) = slots
        .high_availability
        .as_ref()
        .and_then(|h| h.slot_prefix.as_ref())
        && !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        errs.push(FieldError::invalid(
            "spec.replicationSlots.highAvailability.slotPrefix",
            format!("{prefix:?} may only contain lowercase letters, digits and '_'"),
        ));
    }
    if let Some(i) = slots.update_interval
        && i < 1
    {
        errs.push(FieldError::invalid(
            "spec.replicationSlots.updateInterval",
            format!("{i} seconds is not allowed; use 1 or more"),
        ));
    }
}

fn check_managed(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(managed) = &spec.managed else { return };
    let mut seen = BTreeSet::new();
    for (i, role) in managed.roles.iter().enumerate() {
        let p = format!("spec.managed.roles[{i}].name");
        if role.name.is_empty() {
            errs.push(FieldError::required(p, "name the role"));
        } else if crate::roles::is_reserved(&role.name) {
            errs.push(FieldError::invalid(
                p,
                format!(
                    "{:?} is reserved (by the operator, or PostgreSQL's pg_ prefix); choose another role name",
                    role.name
                ),
            ));
        } else if !seen.insert(role.name.as_str()) {
            errs.push(FieldError::invalid(
                p,
                format!(
                    "role {:?} is defined twice; define each role once",
                    role.name
                ),
            ));
        }
        if role.password_secret.is_some() && role.disable_password == Some(true) {
            errs.push(FieldError::invalid(
                format!("spec.managed.roles[{i}].disablePassword"),
                "set either passwordSecret or disablePassword, not both",
            ));
        }
        if let Some(t) = &role.valid_until
            && t.parse::<jiff::Timestamp>().is_err()
        {
            errs.push(FieldError::invalid(
                format!("spec.managed.roles[{i}].validUntil"),
                format!("{t:?} is not a time; use RFC 3339, e.g. 2030-01-01T00:00:00Z"),
            ));
        }
        if role.connection_limit.is_some_and(|l| l < -1) {
            errs.push(FieldError::invalid(
                format!("spec.managed.roles[{i}].connectionLimit"),
                "use -1 for no limit, or 0 or more",
            ));
        }
    }
    if let Some(services) = &managed.services {
        for (i, s) in services.disabled_default_services.iter().enumerate() {
            if *s == ServiceSelectorType::Rw {
                errs.push(FieldError::invalid(
                    format!("spec.managed.services.disabledDefaultServices[{i}]"),
                    "the rw Service cannot be disabled: applications and standbys reach the primary through it",
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, s) in services.additional.iter().enumerate() {
            let name = s
                .service_template
                .metadata
                .as_ref()
                .and_then(|m| m.name.as_deref());
            match name {
                None | Some("") => errs.push(FieldError::required(
                    format!("spec.managed.services.additional[{i}].serviceTemplate.metadata.name"),
                    "name the Service",
                )),
                Some(n) if !names.insert(n.to_owned()) => errs.push(FieldError::invalid(
                    format!("spec.managed.services.additional[{i}].serviceTemplate.metadata.name"),
                    format!("Service {n:?} is defined twice"),
                )),
                _ => {}
            }
        }
    }
}

fn check_external_clusters(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (i, e) in spec.external_clusters.iter().enumerate() {
        let p = format!("spec.externalClusters[{i}].name");
        if e.name.is_empty() {
            errs.push(FieldError::required(p, "name the external cluster"));
        } else if !seen.insert(e.name.as_str()) {
            errs.push(FieldError::invalid(
                p,
                format!("{:?} is defined twice; names must be unique", e.name),
            ));
        }
    }
}

fn check_replica(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(replica) = &spec.replica else { return };
    check_external_ref(spec, "spec.replica.source", &replica.source, errs);
    if replica.enabled.is_some() && replica.primary.is_some() {
        errs.push(FieldError::invalid(
            "spec.replica.enabled",
            "enabled and primary are alternative ways to choose the primary cluster; keep one",
        ));
    }
}

fn check_probes(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(probes) = &spec.probes else { return };
    for (name, probe) in [
        ("startup", &probes.startup),
        ("readiness", &probes.readiness),
    ] {
        let Some(probe) = probe else { continue };
        if let Some(lag) = &probe.maximum_lag {
            let p = format!("spec.probes.{name}.maximumLag");
            if probe.type_ != Some(super::cluster::ProbeStrategyType::Streaming) {
                errs.push(FieldError::invalid(
                    p.clone(),
                    "maximumLag only applies to the 'streaming' probe type; set type: streaming or remove it",
                ));
            }
            if let Err(e) = Quantity::parse(&lag.0) {
                errs.push(FieldError::invalid(p, e.to_string()));
            }
        }
    }
}

fn check_lease(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    let Some(lease) = &spec.primary_lease else {
        return;
    };
    let (duration, renew, retry, released) = lease.effective();
    const P: &str = "spec.primaryLease";
    for (name, v) in [
        ("leaseDurationSeconds", duration),
        ("renewDeadlineSeconds", renew),
        ("retryPeriodSeconds", retry),
        ("releasedLeaseDurationSeconds", released),
    ] {
        if v < 1 {
            errs.push(FieldError::invalid(
                format!("{P}.{name}"),
                format!("{v} is not allowed; use 1 or more"),
            ));
        }
    }
    if duration <= renew {
        errs.push(FieldError::invalid(
            format!("{P}.leaseDurationSeconds"),
            format!("{duration} must be greater than renewDeadlineSeconds ({renew})"),
        ));
    }
    // renewDeadline > 1.2 × retryPeriod, in integers.
    if i64::from(renew) * 10 <= i64::from(retry) * 12 {
        errs.push(FieldError::invalid(
            format!("{P}.renewDeadlineSeconds"),
            format!("{renew} must be greater than 1.2 × retryPeriodSeconds ({retry})"),
        ));
    }
}

fn check_misc(spec: &ClusterSpec, errs: &mut Vec<FieldError>) {
    if let Some(limits) = &spec.ephemeral_volumes_size_limit {
        for (name, q) in [
            ("shm", &limits.shm),
            ("temporaryData", &limits.temporary_data),
        ] {
            if let Some(q) = q
                && let Err(e) = Quantity::parse(&q.0)
            {
                errs.push(FieldError::invalid(
                    format!("spec.ephemeralVolumesSizeLimit.{name}"),
                    e.to_string(),
                ));
            }
        }
    }
    if let Some(policy) = &spec.image_pull_policy
        && !matches!(policy.as_str(), "Always" | "Never" | "IfNotPresent")
    {
        errs.push(FieldError::invalid(
            "spec.imagePullPolicy",
            format!("{policy:?} is not a pull policy; use Always, Never or IfNotPresent"),
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Pooler, Backup, ScheduledBackup
// ---------------------------------------------------------------------------------------

/// `pgbouncer.ini` parameters a Pooler may set (the rest is the operator's).
const PGBOUNCER_PARAMETERS: &[&str] = &[
    "application_name_add_host",
    "autodb_idle_timeout",
    "cancel_wait_timeout",
    "client_idle_timeout",
    "client_login_timeout",
    "client_tls_ciphers",
    "client_tls_ecdhcurve",
    "client_tls_protocols",
    "client_tls_sslmode",
    "default_pool_size",
    "disable_pqexec",
    "dns_max_ttl",
    "dns_nxdomain_ttl",
    "idle_transaction_timeout",
    "ignore_startup_parameters",
    "listen_backlog",
    "log_connections",
    "log_disconnections",
    "log_pooler_errors",
    "log_stats",
    "max_client_conn",
    "max_db_client_connections",
    "max_db_connections",
    "max_packet_size",
    "max_prepared_statements",
    "max_user_client_connections",
    "max_user_connections",
    "min_pool_size",
    "pkt_buf",
    "query_timeout",
    "query_wait_timeout",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "sbuf_loopcnt",
    "server_check_delay",
    "server_check_query",
    "server_connect_timeout",
    "server_fast_close",
    "server_idle_timeout",
    "server_lifetime",
    "server_login_retry",
    "server_reset_query",
    "server_reset_query_always",
    "server_round_robin",
    "server_tls_ciphers",
    "server_tls_protocols",
    "stats_period",
    "suspend_timeout",
    "tcp_defer_accept",
    "tcp_keepalive",
    "tcp_keepcnt",
    "tcp_keepidle",
    "tcp_keepintvl",
    "tcp_socket_buffer",
    "tcp_user_timeout",
    "track_extra_parameters",
    "verbose",
];

impl Validate for Pooler {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &self.spec;
        let cluster = spec.cluster.name.as_str();
        if cluster.is_empty() {
            errs.push(FieldError::required(
                "spec.cluster.name",
                "name the Cluster this pooler serves",
            ));
        }
        if let Some(name) = &self.metadata.name
            && !cluster.is_empty()
            && [
                cluster.to_owned(),
                format!("{cluster}-rw"),
                format!("{cluster}-ro"),
                format!("{cluster}-r"),
            ]
            .contains(name)
        {
            errs.push(FieldError::invalid(
                "metadata.name",
                format!("{name:?} collides with a Service of cluster {cluster:?}; choose another pooler name"),
            ));
        }
        if let Some(n) = spec.instances
            && n < 0
        {
            errs.push(FieldError::invalid(
                "spec.instances",
                format!("{n} is negative; use 0 or more"),
            ));
        }
        for key in spec.pgbouncer.parameters.keys() {
            if !PGBOUNCER_PARAMETERS.contains(&key.as_str()) {
                errs.push(FieldError::invalid(
                    format!("spec.pgbouncer.parameters.{key}"),
                    format!("{key} cannot be set in a Pooler: it is unknown to PgBouncer or managed by the operator"),
                ));
            }
        }
        if spec.pgbouncer.image.is_some() && spec.pgbouncer.image_catalog_ref.is_some() {
            errs.push(FieldError::invalid(
                "spec.pgbouncer.image",
                "image and imageCatalogRef are exclusive; keep one",
            ));
        }
        if spec.pgbouncer.auth_query_secret.is_some() && spec.pgbouncer.auth_query.is_none() {
            errs.push(FieldError::required(
                "spec.pgbouncer.authQuery",
                "an authQuerySecret is given without an authQuery; add the query that uses it",
            ));
        }
        errs
    }
}

fn check_backup_method(
    method: BackupMethod,
    plugin: Option<&BackupPluginConfiguration>,
    online: Option<bool>,
    online_cfg: Option<&OnlineConfiguration>,
    errs: &mut Vec<FieldError>,
) {
    match (method, plugin) {
        (BackupMethod::Plugin, None) => errs.push(FieldError::required(
            "spec.pluginConfiguration",
            "method plugin needs pluginConfiguration with the plugin's name",
        )),
        (BackupMethod::Plugin, Some(p)) if p.name.is_empty() => errs.push(FieldError::required(
            "spec.pluginConfiguration.name",
            "name the plugin that takes the backup",
        )),
        (m, Some(_)) if m != BackupMethod::Plugin => errs.push(FieldError::invalid(
            "spec.pluginConfiguration",
            "only applies to method plugin; set method: plugin or remove it",
        )),
        _ => {}
    }
    if method != BackupMethod::VolumeSnapshot {
        if online.is_some() {
            errs.push(FieldError::invalid(
                "spec.online",
                "only applies to method volumeSnapshot; remove it or set method: volumeSnapshot",
            ));
        }
        if online_cfg.is_some() {
            errs.push(FieldError::invalid(
                "spec.onlineConfiguration",
                "only applies to method volumeSnapshot; remove it or set method: volumeSnapshot",
            ));
        }
    }
}

fn check_backup_spec(spec: &BackupSpec, errs: &mut Vec<FieldError>) {
    if spec.cluster.name.is_empty() {
        errs.push(FieldError::required(
            "spec.cluster.name",
            "name the Cluster to back up",
        ));
    }
    check_backup_method(
        spec.method,
        spec.plugin_configuration.as_ref(),
        spec.online,
        spec.online_configuration.as_ref(),
        errs,
    );
}

impl Validate for Backup {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        check_backup_spec(&self.spec, &mut errs);
        errs
    }
}

impl Validate for ScheduledBackup {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &self.spec;
        if spec.cluster.name.is_empty() {
            errs.push(FieldError::required(
                "spec.cluster.name",
                "name the Cluster to back up",
            ));
        }
        if let Err(why) = check_schedule(&spec.schedule) {
            errs.push(FieldError::invalid("spec.schedule", why));
        }
        check_backup_method(
            spec.method,
            spec.plugin_configuration.as_ref(),
            spec.online,
            spec.online_configuration.as_ref(),
            &mut errs,
        );
        errs
    }
}

/// Upstream schedules are six-field cron expressions with seconds first
/// (`0 0 0 * * *` is every midnight), or descriptors such as `@daily`.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    let fields = schedule.split_whitespace().count();
    let trimmed = schedule.trim();
    if !trimmed.starts_with('@') && fields != 6 {
        let hint = if fields == 5 {
            format!(
                "; it looks like a five-field cron expression: prepend the seconds, as in \"0 {trimmed}\""
            )
        } else {
            String::new()
        };
        return Err(format!(
            "{schedule:?} has {fields} fields; a schedule has six, seconds first (e.g. \"0 0 0 * * *\"){hint}"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(trimmed)
        .map(|_| ())
        .map_err(|e| format!("{schedule:?} is not a valid cron expression: {e}"))
}

#[cfg(test)]
mod tests;

/// The database names a `Database` may not take: the cluster's own.
const RESERVED_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

impl Validate for Database {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &self.spec;
        if spec.cluster.name.is_empty() {
            errs.push(FieldError::required(
                "spec.cluster.name",
                "name the Cluster that hosts the database",
            ));
        }
        if spec.name.is_empty() {
            errs.push(FieldError::required(
                "spec.name",
                "name the database to make in PostgreSQL",
            ));
        } else if RESERVED_DATABASES.contains(&spec.name.as_str()) {
            errs.push(FieldError::invalid(
                "spec.name",
                format!(
                    "the name {} is reserved: the cluster has that database already; pick another",
                    spec.name
                ),
            ));
        }
        if spec.owner.is_empty() {
            errs.push(FieldError::required(
                "spec.owner",
                "name the role that owns the database (it must exist, e.g. a managed role)",
            ));
        }
        let provider = spec.locale_provider.as_deref();
        for (field, value, needs) in [
            ("icuLocale", &spec.icu_locale, "icu"),
            ("icuRules", &spec.icu_rules, "icu"),
            ("builtinLocale", &spec.builtin_locale, "builtin"),
        ] {
            if value.is_some() && provider != Some(needs) {
                errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    format!("{field} is only available when localeProvider is set to `{needs}`"),
                ));
            }
        }
        if let Some(limit) = spec.connection_limit
            && limit < -1
        {
            errs.push(FieldError::invalid(
                "spec.connectionLimit",
                format!("{limit} is not a connection limit: use -1 (no limit) or a count"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, s) in spec.schemas.iter().enumerate() {
            check_object_name("schemas", i, &s.name, &mut seen, &mut errs);
        }
        let mut seen = BTreeSet::new();
        for (i, e) in spec.extensions.iter().enumerate() {
            check_object_name("extensions", i, &e.name, &mut seen, &mut errs);
        }
        let mut fdws = BTreeSet::new();
        for (i, f) in spec.fdws.iter().enumerate() {
            check_object_name("fdws", i, &f.name, &mut fdws, &mut errs);
            check_options_usages("fdws", i, &f.options, &f.usages, &mut errs);
        }
        let mut seen = BTreeSet::new();
        for (i, s) in spec.servers.iter().enumerate() {
            check_object_name("servers", i, &s.name, &mut seen, &mut errs);
            check_options_usages("servers", i, &s.options, &s.usages, &mut errs);
            if s.ensure != crate::roles::EnsureOption::Absent && !fdws.contains(s.fdw.as_str()) {
                errs.push(FieldError::invalid(
                    format!("spec.servers[{i}].fdw"),
                    format!(
                        "{:?} is not in spec.fdws; add the foreign data wrapper there",
                        s.fdw
                    ),
                ));
            }
        }
        errs
    }
}

/// An object of a `Database` list (`schemas`, `extensions`, ...) has a name, once.
fn check_object_name<'a>(
    list: &str,
    i: usize,
    name: &'a str,
    seen: &mut BTreeSet<&'a str>,
    errs: &mut Vec<FieldError>,
) {
    if name.is_empty() {
        errs.push(FieldError::required(
            format!("spec.{list}[{i}].name"),
            "give the object a name",
        ));
    } else if !seen.insert(name) {
        errs.push(FieldError::invalid(
            format!("spec.{list}[{i}].name"),
            format!("{name:?} is listed twice in spec.{list}; keep one"),
        ));
    }
}

/// The options and usages of a foreign data wrapper or server name each option and role
/// once.
fn check_options_usages(
    list: &str,
    i: usize,
    options: &[OptionSpec],
    usages: &[UsageSpec],
    errs: &mut Vec<FieldError>,
) {
    let mut seen = BTreeSet::new();
    for (j, o) in options.iter().enumerate() {
        if !seen.insert(o.name.as_str()) {
            errs.push(FieldError::invalid(
                format!("spec.{list}[{i}].options[{j}].name"),
                format!("option {:?} is listed twice; keep one", o.name),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (j, u) in usages.iter().enumerate() {
        if !seen.insert(u.name.as_str()) {
            errs.push(FieldError::invalid(
                format!("spec.{list}[{i}].usage[{j}].name"),
                format!("role {:?} is listed twice; keep one", u.name),
            ));
        }
    }
}

impl Validate for ImageCatalog {
    fn validate(&self) -> Vec<FieldError> {
        check_catalog(&self.spec.images, &self.spec.component_images)
    }
}

impl Validate for ClusterImageCatalog {
    fn validate(&self) -> Vec<FieldError> {
        check_catalog(&self.spec.images, &self.spec.component_images)
    }
}

/// A catalog lists 1 to 8 images, one per major version, each naming an image, and its
/// component images under unique keys.
fn check_catalog(images: &[CatalogImage], components: &[CatalogComponentImage]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut keys = BTreeSet::new();
    for (i, c) in components.iter().enumerate() {
        if !keys.insert(c.key.as_str()) {
            errs.push(FieldError::invalid(
                format!("spec.componentImages[{i}].key"),
                format!(
                    "key {:?} is listed twice: keys are unique in a catalog",
                    c.key
                ),
            ));
        }
    }
    if images.is_empty() || images.len() > 8 {
        errs.push(FieldError::invalid(
            "spec.images",
            format!(
                "a catalog lists 1 to 8 images, one per major version; this one lists {}",
                images.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, img) in images.iter().enumerate() {
        if img.image.trim().is_empty() {
            errs.push(FieldError::required(
                format!("spec.images[{i}].image"),
                "name the image for this major version",
            ));
        }
        if img.major < 10 {
            errs.push(FieldError::invalid(
                format!("spec.images[{i}].major"),
                format!(
                    "{} is not a PostgreSQL major version: use 10 or later",
                    img.major
                ),
            ));
        }
        if !seen.insert(img.major) {
            errs.push(FieldError::invalid(
                format!("spec.images[{i}].major"),
                format!(
                    "major {} is listed twice: a catalog has one image per major version",
                    img.major
                ),
            ));
        }
    }
    errs
}
