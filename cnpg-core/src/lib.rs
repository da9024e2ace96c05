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
//!
//! The decisions:
//! * [`election`]: who should be primary, with the reason each candidate lost;
//! * [`sync`]: `synchronous_standby_names`, and whether a failover keeps every
//!   acknowledged commit (R + W > N);
//! * [`reconcile`]: the whole cluster decision, `(policy, observed, now) -> Plan`;
//! * [`instance`]: what an instance manager does with its PostgreSQL;
//! * [`roles`]: the changes that make PostgreSQL's roles match `spec.managed.roles`;
//! * [`rollout`], [`fencing`], [`hibernation`], [`pdb`], [`naming`];
//! * [`sim`]: a deterministic simulator that runs all of the above under faults.
//!
//! ```
//! use cnpg_core::{election, fencing::Fencing, lsn::Lsn, status::InstanceStatus};
//!
//! let cluster = [
//!     InstanceStatus::unreachable("pg-1", "postmaster is down"),
//!     InstanceStatus::replica("pg-2", 1, Lsn(0x3000148)),
//!     InstanceStatus::replica("pg-3", 1, Lsn(0x3000060)),
//! ];
//! let e = election::elect(&cluster, &Fencing::None, Some("pg-1"));
//! assert_eq!(e.elected.as_deref(), Some("pg-2"));
//! assert!(e.reason().contains("pg-3: behind"));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "api")]
pub mod api;
pub mod backup;
#[cfg(feature = "api")]
pub mod databases;
pub mod election;
pub mod fencing;
pub mod hibernation;
pub mod instance;
pub mod lease;
pub mod lsn;
pub mod monitoring;
pub mod naming;
pub mod parameters;
pub mod pdb;
pub mod phase;
pub mod policy;
pub mod quantity;
pub mod reconcile;
pub mod recovery;
pub mod roles;
pub mod rollout;
#[cfg(feature = "api")]
pub mod schedule;
pub mod sim;
pub mod status;
pub mod sync;
pub mod tablespaces;
pub mod time;

/// Sort key for instance names: by prefix, then serial as a number (`pg-2` before
/// `pg-10`), then the whole name. Upstream sorts names as strings; numbers read better and
/// agree with it below ten instances.
pub(crate) fn naming_order(n: &str) -> (&str, u64, &str) {
    match n.rsplit_once('-') {
        Some((prefix, serial))
            if !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (prefix, serial.parse().unwrap_or(u64::MAX), n)
        }
        _ => (n, 0, n),
    }
}
