//! `cnpg-instance`: the instance manager of cnpg-rs. It runs beside one PostgreSQL (in a
//! pod on Kubernetes, or as a local process) and makes it do what `cnpg-core` decides.
//!
//! The logic is `cnpg_core::instance::decide`; this crate executes it against a real
//! PostgreSQL through three small traits, so it is unit-tested with mocks and
//! integration-tested with real servers:
//! * [`control::PgControl`]: initdb, pg_basebackup, start/stop, promote, pg_rewind, reload;
//! * [`query::PgQuery`]: what PostgreSQL reports (LSNs, replication, settings);
//! * [`view::ClusterView`]: what the cluster status says, and publishing `currentPrimary`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bootstrap;
pub mod config;
pub mod control;
pub mod http;
pub mod kube_view;
pub mod lease;
pub mod manager;
pub mod pg_bin;
pub mod pgdata;
pub mod ports;
pub mod query;
pub mod runas;
pub mod server;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod view;
