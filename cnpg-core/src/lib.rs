//! `cnpg-core`: CloudNativePG's API and the high-availability decisions of cnpg-rs.
//!
//! The crate has two layers:
//!
//! * [`api`] (cargo feature `api`, on by default): the `postgresql.cnpg.io/v1` custom
//!   resources — `Cluster`, `Pooler`, `Backup`, `ScheduledBackup` — field-compatible with
//!   CloudNativePG, their CustomResourceDefinitions, and the validation rules upstream's
//!   admission webhook enforces, returning every error at once.
//! * the decisions, on small domain types of their own ([`quantity`], [`phase`]), so they
//!   compile without kube and can be embedded by any controller.
//!
//! Nothing in this crate performs I/O, reads a clock or draws random numbers: the same
//! inputs always give the same outputs, which is what lets the operator, the instance
//! manager, the simulator and third-party controllers share one source of truth.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "api")]
pub mod api;
pub mod lsn;
pub mod phase;
pub mod quantity;
