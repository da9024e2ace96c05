//! `cnpg-operator`: the operator shell of cnpg-rs and the `kubectl-cnpg` plugin.
//!
//! The decisions live in `cnpg-core`; this crate observes the world, hands what it saw to
//! `cnpg_core::reconcile`, and carries out the plan the core returns. It is laid out by
//! where that world is:
//!
//! * [`platform`] — the [`platform::Platform`] trait (what the cluster decision needs done
//!   or seen) and [`platform::reconcile_cluster`], the operator loop written once for every
//!   platform: validate, observe, decide, act, write the status, explain with events.
//! * [`kube`] — the platform on Kubernetes: Pods, PVCs, Services, PDBs, Secrets and
//!   certificates built from a Cluster, the kube-rs controller with its leader Lease, and
//!   the installation manifest with the RBAC the code needs (binary `cnpg-operator`).
//! * [`local`] — the platform without Kubernetes: instances are local `cnpg-instance`
//!   processes, PVCs are directories, Services are TCP listeners of the operator process.
//! * [`plugin`] — the `kubectl-cnpg` command line (binary `kubectl-cnpg`). Each command is
//!   written once against [`plugin::access::ClusterAccess`], which a local cluster and a
//!   Cluster on Kubernetes both implement.
//! * [`manifests`] — reading multi-document YAML, checking documents the way the admission
//!   webhook would, printing the CRDs; shared by the plugin and the local platform.
//!
//! Test support (an in-memory API server for injected faults, a client committing through
//! `-rw`) is in `testkit`, behind the `testkit` cargo feature that only tests and
//! benchmarks turn on: the shipped binaries never link it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backup;
pub mod clock;
pub mod kube;
pub mod local;
pub mod manifests;
pub mod platform;
pub mod plugin;
pub mod pooler;
pub mod recovery;
#[cfg(feature = "testkit")]
pub mod testkit;
