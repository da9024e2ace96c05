//! `cnpg-instance`: the instance manager of cnpg-rs. It runs beside one PostgreSQL (in a
//! pod on Kubernetes, or as a local process) and makes it do what `cnpg-core` decides.
//!
//! The logic is `cnpg_core::instance::decide`; this crate executes it against a real
//! PostgreSQL through three small traits, so it is unit-tested with mocks and
//! integration-tested with real servers:
//! * [`control::PgControl`]: initdb, pg_basebackup, start/stop, promote, pg_rewind, reload;
//! * [`query::PgQuery`]: what PostgreSQL reports (LSNs, replication, settings);
//! * [`view::ClusterView`]: what the cluster status says, and publishing `currentPrimary`.
//!
//! Where it sits: the operator (`cnpg-operator`) decides which instance should be primary
//! and publishes it in the cluster status; [`manager::Manager`] reads that status through
//! its [`view::ClusterView`], asks `cnpg_core::instance::decide` what its own PostgreSQL
//! must do, does it, and serves what PostgreSQL reports ([`server`]: `/pg/status`, probes,
//! metrics) for the operator's next decision.
//!
//! The cluster status comes from a file the local operator writes ([`view::FileView`]), or
//! — with the `kubernetes` cargo feature, on by default — from the Cluster on the API
//! server (`kube_view`, holding the primary Lease of `lease` before promoting). A
//! local-only build (`--no-default-features`) leaves kube-rs out: a third of the size on
//! disk and less memory at rest.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod archive;
pub mod backup;
pub mod backup_job;
pub mod bootstrap;
pub mod compression;
pub mod config;
pub mod control;
pub mod databases;
pub mod http;
pub mod https;
#[cfg(feature = "kubernetes")]
pub mod kube_databases;
#[cfg(feature = "kubernetes")]
pub mod kube_view;
#[cfg(feature = "kubernetes")]
pub mod lease;
pub mod manager;
pub mod monitoring;
pub mod pg_bin;
pub mod pgdata;
pub mod pooler;
pub mod ports;
pub mod proc;
pub mod query;
pub mod recovery;
pub mod restore;
pub mod roles;
pub mod runas;
pub mod server;
pub mod store;
pub mod tablespaces;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod view;
